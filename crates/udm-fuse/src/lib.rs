//! udm-fuse: the FUSE export — a directory with one regular file per mapped device that has
//! a live table (the `/dev/mapper` of udm). `losetup` on a file gives a real kernel block
//! device; reads, writes, fsync and fallocate become bios on the mapped device.
//!
//! Files appear and disappear with their devices (registry events), are sized to the live
//! table and are read-only for read-only devices. Opening a file counts as an open of the
//! device (like an NBD connection), so `remove` says EBUSY while it is open. Requests are
//! answered from bio completions, so many are in flight at once; a suspended device holds
//! them like it holds NBD I/O.

mod fs;
mod io;

use crossbeam_channel::{unbounded, Receiver};
use fuser::{Config, INodeNo, MountOption, Notifier, SessionACL, SessionUnmounter};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use udm_core::{Registry, RegistryEvent};

/// Errors from mounting or running the FUSE export.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("FUSE is not usable here: {0}")]
    Unavailable(String),
    #[error("mount FUSE export on {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("FUSE export: {0}")]
    Io(#[from] std::io::Error),
}

impl FuseError {
    /// The errno this error stands for.
    pub fn errno(&self) -> i32 {
        match self {
            FuseError::Unavailable(_) => libc::ENODEV,
            FuseError::Mount { source, .. } | FuseError::Io(source) => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
        }
    }
}

/// How the export behaves.
#[derive(Debug, Clone)]
pub struct FuseOpts {
    /// FOPEN_DIRECT_IO (+ parallel direct writes): no page cache in front of the device.
    pub direct_io: bool,
    /// Threads reading requests from /dev/fuse (replies come from bio completions).
    pub threads: usize,
    /// Largest single read or write the kernel sends.
    pub max_io: u32,
}

impl Default for FuseOpts {
    fn default() -> FuseOpts {
        FuseOpts {
            direct_io: true,
            threads: 2,
            max_io: 1 << 20,
        }
    }
}

/// True when this process can mount FUSE: /dev/fuse opens read-write and we are root (a
/// direct mount) or a `fusermount3`/`fusermount` helper is installed.
pub fn usable() -> bool {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    dev && (root || ["fusermount3", "fusermount"].iter().any(|t| on_path(t)))
}

fn on_path(tool: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| Path::new(d).join(tool).is_file())
}

/// A mounted export. `shutdown` (or drop) unmounts it.
pub struct FuseExport {
    dir: PathBuf,
    unmounter: Option<SessionUnmounter>,
    session: Option<JoinHandle<std::io::Result<()>>>,
    /// FUSE connection number (the mount's device minor), for aborting it.
    conn: Option<u32>,
    state: Arc<fs::State>,
    /// Unmounts if this process dies without `shutdown` (SIGKILL): a shell blocked reading
    /// a pipe only we write to; when we are gone it reads EOF and detaches the mount.
    watcher: Option<std::process::Child>,
}

/// How long shutdown waits for files still open (a loop device) before aborting the
/// connection, which fails their I/O instead of hanging.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

impl FuseExport {
    /// Mount the export on `dir` (created if missing; a stale FUSE mount left there by a
    /// killed daemon is detached first).
    pub fn mount(reg: &Registry, dir: &Path, opts: FuseOpts) -> Result<FuseExport, FuseError> {
        if !Path::new("/dev/fuse").exists() {
            return Err(FuseError::Unavailable("/dev/fuse is missing".into()));
        }
        detach_stale(dir);
        std::fs::create_dir_all(dir).map_err(|source| FuseError::Mount {
            path: dir.to_path_buf(),
            source,
        })?;
        let parent_dev = std::fs::metadata(dir)?.dev();
        let (tx, rx) = unbounded::<RegistryEvent>();
        reg.subscribe(move |ev| {
            let _ = tx.send(ev.clone());
        });
        let state = Arc::new(fs::State::new(reg.clone(), opts.clone()));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("udm".into()),
            MountOption::Subtype("udm".into()),
            MountOption::DefaultPermissions,
            MountOption::NoExec,
            MountOption::NoSuid,
        ];
        config.acl = SessionACL::Owner;
        config.n_threads = Some(opts.threads.max(1));
        config.clone_fd = opts.threads > 1;
        let mut session =
            fuser::Session::new(fs::UdmFs(state.clone()), dir, &config).map_err(|source| {
                FuseError::Mount {
                    path: dir.to_path_buf(),
                    source,
                }
            })?;
        let unmounter = session.unmount_callable();
        let notifier = session.notifier();
        let thread = std::thread::Builder::new()
            .name("udm-fuse".into())
            .spawn(move || session.run())?;
        // Served by the session thread, so only now.
        let conn = std::fs::metadata(dir)
            .ok()
            .filter(|m| m.dev() != parent_dev)
            .map(|m| minor(m.dev()));
        std::thread::Builder::new()
            .name("udm-fuse-events".into())
            .spawn({
                let state = state.clone();
                move || events(state, notifier, rx)
            })?;
        tracing::info!("fuse: devices exported as files in {}", dir.display());
        Ok(FuseExport {
            dir: dir.to_path_buf(),
            unmounter: Some(unmounter),
            session: Some(thread),
            conn,
            state,
            watcher: watch(dir),
        })
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmount. Files still open (a loop device over one) keep the connection alive after
    /// the detach; after a short grace the connection is aborted so their I/O fails.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(mut u) = self.unmounter.take() else {
            return;
        };
        self.state.stop();
        if let Some(mut w) = self.watcher.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Err(e) = u.unmount() {
            // EBUSY with a file open (a loop device): detach the mount from the tree; the
            // connection lives on until the files close or it is aborted below.
            tracing::info!("fuse: unmount {}: {e}; detaching", self.dir.display());
            if let Err(e) = detach(&self.dir) {
                tracing::warn!("fuse: detach {}: {e}", self.dir.display());
            }
        }
        let Some(t) = self.session.take() else { return };
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !t.is_finished() {
            if let Some(c) = self.conn {
                tracing::warn!("fuse: files still open at shutdown; aborting connection {c}");
                let _ = std::fs::write(format!("/sys/fs/fuse/connections/{c}/abort"), "1");
            }
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            tracing::warn!("fuse: session thread did not stop; leaving it");
        }
    }
}

impl Drop for FuseExport {
    fn drop(&mut self) {
        self.stop();
    }
}

fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

/// Start the watcher that detaches `dir` once this process has died.
fn watch(dir: &Path) -> Option<std::process::Child> {
    use std::process::{Command, Stdio};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let script = if unsafe { libc::geteuid() } == 0 {
        r#"read _ ; exec umount -l "$0""#
    } else {
        r#"read _ ; fusermount3 -uz "$0" || exec fusermount -uz "$0""#
    };
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("fuse: no unmount watcher for {}: {e}", dir.display());
            None
        }
    }
}

/// `umount -l DIR`.
fn detach(dir: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Detach a dead FUSE mount on `dir` (ENOTCONN on stat) left by a daemon that was killed.
fn detach_stale(dir: &Path) {
    if let Err(e) = std::fs::metadata(dir) {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            let r = detach(dir);
            tracing::info!("fuse: detached stale mount {}: {r:?}", dir.display());
        }
    }
}

/// Turn registry events into kernel cache invalidations (off the registry's locks).
fn events(state: Arc<fs::State>, notifier: Notifier, rx: Receiver<RegistryEvent>) {
    let root = INodeNo(fs::ROOT);
    let inval_name = |name: &str| {
        let _ = notifier.inval_entry(root, OsStr::new(name));
    };
    while !state.stopped() {
        let Ok(ev) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        match &ev {
            RegistryEvent::Created(n) => inval_name(n),
            RegistryEvent::Resumed(n) => {
                if let Some(ino) = state.ino_of(n) {
                    let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
                }
                inval_name(n);
            }
            RegistryEvent::Renamed { old, new } => {
                state.renamed(old, new);
                inval_name(old);
                inval_name(new);
            }
            RegistryEvent::Removed(n) => {
                if let Some(ino) = state.forget_name(n) {
                    let _ = notifier.delete(root, INodeNo(ino), OsStr::new(n));
                }
                inval_name(n);
            }
        }
        let _ = notifier.inval_inode(root, 0, 0);
    }
}
