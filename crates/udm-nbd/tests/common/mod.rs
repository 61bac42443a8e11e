//! Test support: an in-memory `Exports` table and a server on a Unix socket in a tempdir.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_io::{BlockDevice, FileDevice, MemDevice, PatternDevice, Sectors};
use udm_nbd::{ExportHandle, Exports, NbdServer, ServerHandle};

/// Export name -> (device, read-only).
pub type ExportMap = BTreeMap<String, (Arc<dyn BlockDevice>, bool)>;

/// Exports from a fixed map; counts opens that are still held.
#[derive(Default)]
pub struct TestExports {
    pub devs: parking_lot::Mutex<ExportMap>,
    pub open: Arc<AtomicUsize>,
}

struct OpenGuard(Arc<AtomicUsize>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Exports for TestExports {
    fn list(&self) -> Vec<String> {
        self.devs.lock().keys().cloned().collect()
    }
    fn open(&self, name: &str) -> Option<ExportHandle> {
        let (dev, ro) = self.devs.lock().get(name).cloned()?;
        self.open.fetch_add(1, Ordering::SeqCst);
        Some(ExportHandle {
            dev,
            read_only: ro,
            guard: Box::new(OpenGuard(self.open.clone())),
        })
    }
}

/// A running server and the temp dir holding its socket and images.
pub struct Served {
    pub handle: ServerHandle,
    pub exports: Arc<TestExports>,
    pub sock: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Served {
    pub fn uri(&self, name: &str) -> String {
        format!("nbd+unix:///{name}?socket={}", self.sock.display())
    }
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
    pub fn add(&self, name: &str, dev: Arc<dyn BlockDevice>, ro: bool) {
        self.exports.devs.lock().insert(name.to_string(), (dev, ro));
    }
}

/// Start a server with no exports yet.
pub fn serve() -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("nbd.sock");
    let exports = Arc::new(TestExports::default());
    let handle = NbdServer::new(exports.clone())
        .serve_unix(&sock)
        .expect("serve_unix");
    Served {
        handle,
        exports,
        sock,
        dir,
    }
}

/// The usual set: `mem` (RAM, 4 MiB), `pattern` (read-only, 4 MiB) and `file` (sparse
/// 8 MiB file, returned with its path).
pub fn serve_standard() -> (Served, Arc<MemDevice>, PathBuf) {
    let s = serve();
    let mem = Arc::new(MemDevice::new("mem", Sectors(8192)));
    s.add("mem", mem.clone(), false);
    s.add(
        "pattern",
        Arc::new(PatternDevice::new(Sectors(8192))),
        false,
    );
    let img = udm_testkit::image(s.dir.path(), "disk.img", 8 << 20);
    s.add(
        "file",
        Arc::new(FileDevice::open(&img, false).expect("open image")),
        false,
    );
    (s, mem, img)
}

/// Deterministic pseudo-random bytes (the testkit's shared generator).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    udm_testkit::rng::noise(len, seed)
}

/// Run a tool and return its output whatever the exit status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// `nbdsh` is a Python program: make sure the system python (which has the nbd module) is
/// the one it finds.
pub fn nbdsh() -> Command {
    let mut c = Command::new("nbdsh");
    let path = std::env::var("PATH").unwrap_or_default();
    c.env("PATH", format!("/usr/bin:{path}"));
    c
}

pub fn read_file(p: &Path) -> Vec<u8> {
    std::fs::read(p).expect("read file")
}

/// An `nbdkit -f -U SOCK ARGS…` server, killed when dropped.
pub struct Nbdkit {
    child: Child,
    _dir: tempfile::TempDir,
    pub sock: std::path::PathBuf,
}

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start nbdkit on a unix socket in a temp dir and wait until it accepts.
pub fn nbdkit(args: &[&str]) -> Nbdkit {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nbdkit.sock");
    let child = Command::new("nbdkit")
        .arg("-f")
        .arg("-U")
        .arg(&sock)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nbdkit");
    // The socket file appears at bind(), a moment before nbdkit listens.
    wait_for(|| std::os::unix::net::UnixStream::connect(&sock).is_ok());
    Nbdkit {
        child,
        _dir: dir,
        sock,
    }
}

/// Wait (up to 5 s) for `f` to hold.
pub fn wait_for(mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "condition not reached in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
