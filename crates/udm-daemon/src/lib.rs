//! udm-daemon: the udm daemon as a library. It owns a `Registry` (with the built-in targets
//! and the remote-NBD device provider), serves the control socket, exports every device over
//! NBD (unix socket, optional TCP/TLS), FUSE and (feature `ublk`) ublk, keeps the crypt key
//! store, and shuts down cleanly (drain, flush, close exports).
//!
//! An embedder fills a [`DaemonConfig`] and either calls [`run`] (block until SIGTERM/SIGINT/
//! SIGHUP, as `udm daemon` does) or [`Daemon::start`] and later [`Daemon::shutdown`].

pub mod client;
mod error;
pub mod exports;
pub mod multipathd;
pub mod opened;
mod quickstart;
mod serve;
pub mod state;
#[cfg(feature = "ublk")]
pub mod ublk;
mod wire;

pub use error::DaemonError;
pub use exports::{FuseWhere, NbdPolicy, NbdProvider};

use serve::DaemonInfo;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use udm_core::{DevSel, Registry};

/// Daemon settings (what `udm daemon`'s options set). Start from `DaemonConfig::default()`.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct DaemonConfig {
    /// Control socket (default: `udm_proto::default_socket()`).
    pub socket: Option<PathBuf>,
    /// NBD unix socket (default: `nbd.sock` beside the control socket).
    pub nbd_socket: Option<PathBuf>,
    /// Also serve NBD over TCP on `HOST:PORT` (needs `tls`, or `nbd_insecure`).
    pub nbd_listen: Option<String>,
    /// Allow plaintext NBD over TCP (every local user can then read every device).
    pub nbd_insecure: bool,
    /// Group that may use the NBD unix socket (mode 0660 then; 0600 otherwise).
    pub nbd_group: Option<String>,
    /// Where the state file lives (default: `state::default_state_dir()`).
    pub state_dir: Option<PathBuf>,
    /// Do not restore the saved devices on start.
    pub no_restore: bool,
    /// FUSE directory (default: `mapper` beside the control socket, when FUSE is usable).
    pub fuse: Option<PathBuf>,
    pub no_fuse: bool,
    /// Page cache in front of the FUSE files instead of direct I/O.
    pub fuse_buffered: bool,
    /// How long I/O to an unreachable `nbd://` device waits.
    pub nbd_outage_limit: Option<Duration>,
    /// Which devices NBD clients may see, and which only read-only.
    pub nbd_policy: NbdPolicy,
    /// NBD over TLS: a directory with `server-cert.pem`, `server-key.pem`, `ca-cert.pem`.
    pub tls: Option<PathBuf>,
    /// Accept plaintext clients too.
    pub tls_optional: bool,
    pub tls_verify_peer: bool,
    /// Every device also as `/dev/ublkbN` (cargo feature `ublk`).
    pub ublk: bool,
    /// Directories of X.509 certificates trusted for verity root hash signatures.
    pub verity_trusted_certs: Vec<PathBuf>,
    /// Create the demo device `udm0` (an image in the state directory) after starting.
    pub quickstart: bool,
    /// The multipathd role: path checkers for multipath devices.
    pub multipathd: multipathd::MultipathdConfig,
}

impl DaemonConfig {
    /// The control socket this configuration uses.
    pub fn control_socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(udm_proto::default_socket)
    }
    /// The NBD unix socket this configuration uses.
    pub fn nbd_unix_socket(&self) -> PathBuf {
        self.nbd_socket.clone().unwrap_or_else(|| {
            (self.control_socket().parent())
                .unwrap_or(Path::new("."))
                .join("nbd.sock")
        })
    }
}

/// A running daemon.
pub struct Daemon {
    registry: Registry,
    socket: PathBuf,
    nbd_socket: PathBuf,
    info: Arc<DaemonInfo>,
    exports: exports::Exports,
    #[cfg(feature = "ublk")]
    ublk: Option<ublk::UblkExports>,
    stop: Arc<AtomicBool>,
    /// Wakes the state saver (`false`: save; `true`: quit).
    saver: crossbeam_channel::Sender<bool>,
    multipathd: Option<multipathd::Multipathd>,
}

/// Save the state file after every registry event too (a deferred remove finishing when
/// its last user closes, …), on a thread of its own: events come from inside the registry.
fn start_saver(
    registry: &Registry,
    state: Arc<state::State>,
) -> std::io::Result<crossbeam_channel::Sender<bool>> {
    let (tx, rx) = crossbeam_channel::unbounded::<bool>();
    let reg = registry.clone();
    std::thread::Builder::new()
        .name("udm-state".into())
        .spawn(move || {
            while let Ok(quit) = rx.recv() {
                // One save for a burst of events.
                if quit || rx.try_iter().any(|q| q) {
                    return;
                }
                state.save(&reg);
            }
        })?;
    let events = tx.clone();
    registry.subscribe(move |_| {
        let _ = events.send(false);
    });
    Ok(tx)
}

/// A directory only its owner (this user) may change: refuse anything else, since whoever
/// can write there can put their own socket where clients look for ours.
fn check_private_dir(dir: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).map_err(DaemonError::io(format!(
        "socket directory {}",
        dir.display()
    )))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !m.is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(DaemonError::Config(format!(
            "socket directory {} must be a directory owned by uid {me} that no one else may \
             write to (it is owned by uid {}, mode {:o}); remove it or pass --socket",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Refuse to replace anything at a socket path but a stale socket: not a file, not a
/// socket another daemon listens on.
pub(crate) fn clear_stale_socket(path: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !m.file_type().is_socket() {
        return Err(DaemonError::Config(format!(
            "{} exists and is not a socket: not replacing it",
            path.display()
        )));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
    }
    std::fs::remove_file(path).map_err(DaemonError::io(format!(
        "remove stale socket {}",
        path.display()
    )))
}

/// Bind the control socket: parent dir 0700, socket 0600, stale sockets replaced. `private`
/// (the default per-user directory) also refuses a directory others own or may write.
fn bind_socket(path: &Path, private: bool) -> Result<UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(DaemonError::io(format!("create {}", dir.display())))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        if private {
            check_private_dir(dir)?;
        }
    }
    clear_stale_socket(path)?;
    let l =
        UnixListener::bind(path).map_err(DaemonError::io(format!("bind {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

impl Daemon {
    /// Build the Registry, bind the control socket, start the exports and serve requests on
    /// a background thread. Prints where everything is on stderr.
    pub fn start(cfg: &DaemonConfig) -> Result<Daemon, DaemonError> {
        for dir in &cfg.verity_trusted_certs {
            let subjects = udm_targets::verity::sig::load_trusted_dir(dir)
                .map_err(DaemonError::ctx("--verity-trusted-certs"))?;
            tracing::info!("verity: trusting {subjects:?} from {}", dir.display());
        }
        let socket = cfg.control_socket();
        let nbd_socket = cfg.nbd_unix_socket();
        if let Some(d) = cfg.nbd_outage_limit {
            udm_nbd::remote::set_default_outage_limit(d);
        }
        let registry = Registry::new(udm_targets::builtin());
        registry.register_provider(Arc::new(NbdProvider));
        if cfg.nbd_listen.is_some() && (cfg.tls.is_none() || cfg.tls_optional) && !cfg.nbd_insecure
        {
            return Err(DaemonError::Config(
                "--nbd-listen without TLS lets anyone who can reach the port read and write \
                 every device: give --tls DIR, or --nbd-insecure to accept that"
                    .into(),
            ));
        }
        let listener = bind_socket(&socket, cfg.socket.is_none() && default_is_per_user())?;
        clear_stale_socket(&nbd_socket)?;
        let tls = match &cfg.tls {
            Some(dir) => Some(
                udm_nbd::TlsServer::from_dir(dir, cfg.tls_verify_peer, !cfg.tls_optional)
                    .map_err(DaemonError::ctx(format!("--tls {}", dir.display())))?,
            ),
            None => None,
        };
        let fuse = exports::fuse_where(cfg.fuse.clone(), cfg.no_fuse, &socket);
        let fuse_opts = udm_fuse::FuseOpts {
            direct_io: !cfg.fuse_buffered,
            ..Default::default()
        };
        let exports = exports::Exports::start(
            &registry,
            exports::NbdUnix {
                path: &nbd_socket,
                gid: nbd_gid(cfg.nbd_group.as_deref())?,
            },
            cfg.nbd_listen.as_deref(),
            fuse,
            fuse_opts,
            cfg.nbd_policy.clone(),
            tls,
        )?;
        #[cfg(feature = "ublk")]
        let ublk = match cfg.ublk {
            true if !udm_ublk::available() => {
                return Err(DaemonError::Config(
                    "--ublk: the kernel has no ublk (/dev/ublk-control; modprobe ublk_drv)".into(),
                ))
            }
            true => Some(ublk::UblkExports::start(&registry)),
            false => None,
        };
        #[cfg(not(feature = "ublk"))]
        if cfg.ublk {
            return Err(DaemonError::Config(
                "--ublk: this udm was built without the `ublk` feature".into(),
            ));
        }
        let state_dir = cfg
            .state_dir
            .clone()
            .unwrap_or_else(state::default_state_dir);
        let state = Arc::new(state::State::new(
            state::state_file(&state_dir, &socket),
            &socket,
        ));
        if cfg.no_restore {
            tracing::info!("--no-restore: saved devices are not restored");
        } else {
            state.restore(&registry);
        }
        let saver = start_saver(&registry, state.clone())?;
        let info = Arc::new(DaemonInfo {
            nbd_socket: Some(nbd_socket.display().to_string()),
            nbd_tcp: exports.tcp_addr(),
            fuse_dir: exports.fuse_dir().map(|d| d.display().to_string()),
            state,
            stop: std::sync::OnceLock::new(),
        });
        eprintln!("udm daemon: control socket {}", socket.display());
        eprintln!(
            "udm daemon: NBD exports on nbd+unix:///NAME?socket={}",
            nbd_socket.display()
        );
        if let Some(a) = &info.nbd_tcp {
            eprintln!("udm daemon: NBD exports on nbd://{a}/NAME");
        }
        if let Some(d) = &info.fuse_dir {
            eprintln!("udm daemon: devices as files in {d}/NAME");
        }
        tracing::info!(pid = std::process::id(), "udm daemon started");

        let stop = Arc::new(AtomicBool::new(false));
        {
            let (registry, info, stop) = (registry.clone(), info.clone(), stop.clone());
            std::thread::Builder::new()
                .name("udm-control".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        match conn {
                            Ok(c) => {
                                let (r, i) = (registry.clone(), info.clone());
                                let _ = std::thread::Builder::new()
                                    .name("udm-client".into())
                                    .spawn(move || serve::serve_client(c, &r, &i));
                            }
                            Err(e) => tracing::warn!("control accept: {e}"),
                        }
                    }
                })?;
        }
        let d = Daemon {
            registry,
            socket,
            nbd_socket,
            info,
            exports,
            #[cfg(feature = "ublk")]
            ublk,
            stop,
            saver,
            multipathd: None,
        };
        let mut d = d;
        d.multipathd = multipathd::Multipathd::start(&d.registry, &cfg.multipathd);
        if cfg.quickstart
            && d.registry
                .info(&DevSel::Name("udm0".into()), false)
                .is_err()
        {
            quickstart::device(&d.registry, &d.nbd_socket, &state_dir)?;
            d.info.state.save(&d.registry);
        }
        Ok(d)
    }

    /// The daemon's Registry (the same one its clients change).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
    /// The control socket it serves.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
    /// The NBD unix socket it serves.
    pub fn nbd_socket(&self) -> &Path {
        &self.nbd_socket
    }
    /// The TCP address NBD is served on, if any.
    pub fn nbd_tcp(&self) -> Option<&str> {
        self.info.nbd_tcp.as_deref()
    }
    /// The FUSE directory, when mounted.
    pub fn fuse_dir(&self) -> Option<&str> {
        self.info.fuse_dir.as_deref()
    }

    /// Stop serving: close the exports (failing I/O held by suspended devices meanwhile),
    /// flush what every live table writes to, remove the sockets.
    pub fn shutdown(self) {
        let Daemon {
            registry,
            socket,
            nbd_socket,
            exports,
            stop,
            #[cfg(feature = "ublk")]
            ublk,
            saver,
            info,
            multipathd,
        } = self;
        if let Some(m) = multipathd {
            m.stop();
        }
        stop.store(true, Ordering::SeqCst);
        for d in registry.list().iter().filter(|d| d.open_count > 0) {
            tracing::warn!(
                device = %d.name,
                open_count = d.open_count,
                "closing an open device: its NBD, FUSE and ublk users lose it"
            );
        }
        // Wake the accept loop so it sees `stop`.
        let _ = UnixStream::connect(&socket);
        #[cfg(feature = "ublk")]
        if let Some(u) = ublk {
            u.shutdown();
        }
        // Closing exports waits for their in-flight bios; bios held by a suspended device
        // would wait forever, so keep failing those until the exports are closed.
        let closing = std::thread::spawn(move || exports.shutdown());
        while !closing.is_finished() {
            for d in registry.list().iter().filter(|d| d.suspended) {
                if let Ok(dev) = registry.get(&DevSel::Name(d.name.clone())) {
                    let n = dev.abort_held();
                    if n > 0 {
                        tracing::warn!(device = %d.name, held = n, "suspended at shutdown: failing held I/O");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = closing.join();
        // Flush what every live table writes to, underneath the devices (a suspended device
        // would hold a flush submitted to it).
        for d in registry.list() {
            let Ok(dev) = registry.get(&DevSel::Name(d.name.clone())) else {
                continue;
            };
            // Mapped devices underneath are flushed by their own turn of this loop.
            let deps = dev.live_table().map(|t| t.deps()).unwrap_or_default();
            for h in deps.iter().filter(|h| h.dm_name.is_none()) {
                if let Err(e) = udm_io::sync::flush(h.dev.as_ref()) {
                    tracing::warn!(device = %d.name, backing = %h.id, "flush at shutdown failed: {e}");
                }
            }
        }
        info.state.save(&registry);
        let _ = saver.send(true);
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(&nbd_socket);
        tracing::info!("udm daemon stopped");
    }
}

/// True when the default control socket is in the per-user fallback directory (not
/// `UDM_SOCKET`, `$XDG_RUNTIME_DIR` or root's `/run/udm`).
fn default_is_per_user() -> bool {
    let set = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
    // SAFETY: geteuid has no preconditions and cannot fail.
    !set("UDM_SOCKET") && !set("XDG_RUNTIME_DIR") && unsafe { libc::geteuid() } != 0
}

/// The group id for `--nbd-group`.
fn nbd_gid(group: Option<&str>) -> Result<Option<u32>, DaemonError> {
    let Some(g) = group else { return Ok(None) };
    if let Ok(n) = g.parse::<u32>() {
        return Ok(Some(n));
    }
    let c = std::ffi::CString::new(g)
        .map_err(|_| DaemonError::Config(format!("--nbd-group {g:?}: bad name")))?;
    // SAFETY: `c` is a valid NUL-terminated string; getgrnam returns NULL or a pointer to a
    // static record that we read at once (the daemon does not call getgr* elsewhere).
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(DaemonError::Config(format!(
            "--nbd-group {g}: no such group"
        )));
    }
    // SAFETY: non-null result of getgrnam, read immediately.
    Ok(Some(unsafe { (*gr).gr_gid }))
}

/// Block the shutdown signals in every thread, so one thread can `sigwait` for them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it before use, and
    // pthread_sigmask only reads the set we pass.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` was initialised by block_signals and `sig` is a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Run a daemon in the foreground until SIGTERM, SIGINT or SIGHUP, then shut it down. Call
/// it before starting other threads: it blocks those signals in the calling thread (and so
/// in every thread started afterwards).
pub fn run(cfg: &DaemonConfig) -> Result<(), DaemonError> {
    let sigs = block_signals();
    let d = Daemon::start(cfg)?;
    let _ = d.info.stop.set(Box::new(|| {
        // SAFETY: raising a signal at our own process has no memory-safety preconditions;
        // it is blocked in every thread and picked up by the sigwait below.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    }));
    let sig = wait_signal(&sigs);
    tracing::info!(
        signal = sig,
        "shutting down: closing exports, draining and flushing devices"
    );
    d.shutdown();
    Ok(())
}
