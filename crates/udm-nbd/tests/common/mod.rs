//! Test support: an in-memory `Exports` table and a server on a Unix socket in a tempdir.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_io::{BlockDevice, FileDevice, MemDevice, PatternDevice, Sectors};
use udm_nbd::proto::*;
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

// Raw clients (for tests that must control every byte on the socket).

pub fn connect(s: &Served) -> UnixStream {
    let c = UnixStream::connect(&s.sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c
}

/// Read until the server closes; true if it did (rather than timing out).
pub fn closed_by_server(c: &mut UnixStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

pub fn greeting(c: &mut UnixStream) {
    let mut g = [0u8; 18];
    c.read_exact(&mut g).unwrap();
    assert_eq!(be64(&g[0..8]), NBDMAGIC);
    assert_eq!(be64(&g[8..16]), IHAVEOPT);
    c.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
}

pub fn option(c: &mut UnixStream, opt: u32, data: &[u8]) {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    c.write_all(&v).unwrap();
}

/// Read one option reply: (option, type, data).
pub fn opt_reply(c: &mut UnixStream) -> (u32, u32, Vec<u8>) {
    let mut h = [0u8; 20];
    c.read_exact(&mut h).unwrap();
    assert_eq!(be64(&h[0..8]), REPLY_MAGIC);
    let mut d = vec![0; be32(&h[16..20]) as usize];
    c.read_exact(&mut d).unwrap();
    (be32(&h[8..12]), be32(&h[12..16]), d)
}

/// Handshake to transmission on export `name`, with structured replies if asked.
pub fn go_to(s: &Served, name: &str, structured: bool) -> UnixStream {
    let mut c = connect(s);
    greeting(&mut c);
    if structured {
        option(&mut c, OPT_STRUCTURED_REPLY, &[]);
        assert_eq!(opt_reply(&mut c).1, REP_ACK);
    }
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&0u16.to_be_bytes());
    option(&mut c, OPT_GO, &d);
    loop {
        let (_, t, _) = opt_reply(&mut c);
        if t == REP_ACK {
            return c;
        }
        assert_eq!(t, REP_INFO);
    }
}

pub fn request(c: &mut UnixStream, cmd: u16, flags: u16, handle: u64, offset: u64, len: u32) {
    c.write_all(
        &Request {
            flags,
            cmd,
            handle,
            offset,
            len,
        }
        .encode(),
    )
    .unwrap();
}

/// Read a simple reply: (error, handle).
pub fn simple(c: &mut UnixStream) -> (u32, u64) {
    let mut h = [0u8; 16];
    c.read_exact(&mut h).unwrap();
    assert_eq!(be32(&h[0..4]), SIMPLE_REPLY_MAGIC);
    (be32(&h[4..8]), be64(&h[8..16]))
}
