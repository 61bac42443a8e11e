//! `RemoteDevice` against udm's own server in-process: I/O passes through, an outage
//! shorter than the limit costs time but no data, a longer one fails held and new I/O
//! with EIO, a restart brings I/O back, and a server that stops answering is cut off.

mod common;

use common::TestExports;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_io::sync::{read_at, write_at};
use udm_io::{Bio, BlockDevice, DevId, IoError, MemDevice, Sectors};
use udm_nbd::{NbdServer, RemoteDevice, ServerHandle};

fn serve(exports: &Arc<TestExports>, sock: &Path) -> ServerHandle {
    NbdServer::new(exports.clone()).serve_unix(sock).unwrap()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn outage_waits_then_fails_then_recovers() {
    let mem = Arc::new(MemDevice::new("m", Sectors(2048)));
    let exports = Arc::new(TestExports::default());
    exports
        .devs
        .lock()
        .insert("m".into(), (mem.clone() as Arc<dyn BlockDevice>, false));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let srv = serve(&exports, &sock);
    let uri = format!("nbd+unix:///m?socket={}&outage=1", sock.display());
    let dev = RemoteDevice::open(&uri, false).unwrap();
    assert_eq!(dev.size(), Sectors(2048));
    assert_eq!(dev.id(), DevId::Path(uri.clone()));
    // Shared by URI, as files are.
    assert!(Arc::ptr_eq(&dev, &RemoteDevice::open(&uri, false).unwrap()));
    let a = pattern(1, 32 << 10);
    write_at(&*dev, Sectors(0), &a).unwrap();
    assert!(mem.snapshot()[..a.len()] == a[..]);

    // A short outage: the write waits and lands once the server is back.
    srv.shutdown();
    let b = pattern(2, 8192);
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (dev, b) = (dev.clone(), b.clone());
        std::thread::spawn(move || tx.send(write_at(&*dev, Sectors(100), &b)).unwrap());
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "I/O did not wait"
    );
    let srv = serve(&exports, &sock);
    rx.recv_timeout(Duration::from_secs(3)).unwrap().unwrap();
    assert!(mem.snapshot()[51200..51200 + b.len()] == b[..]);
    assert!(dev.reconnects() >= 1);

    // A long outage: held I/O fails with EIO after the limit, later I/O at once.
    srv.shutdown();
    let t = Instant::now();
    assert_eq!(read_at(&*dev, Sectors(0), 4096).unwrap_err(), IoError::Io);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let t = Instant::now();
    assert_eq!(read_at(&*dev, Sectors(0), 4096).unwrap_err(), IoError::Io);
    assert!(t.elapsed() < Duration::from_millis(200));

    // Back: I/O resumes with the data intact.
    let _srv = serve(&exports, &sock);
    let t = Instant::now();
    let got = loop {
        match read_at(&*dev, Sectors(0), a.len()) {
            Ok(b) => break b,
            Err(_) if t.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    };
    assert!(got[..] == a[..], "data changed across the outage");
}

/// A device that never completes anything (a hung server's disk).
struct BlackHole(Mutex<Vec<Bio>>);
impl BlockDevice for BlackHole {
    fn submit(&self, bio: Bio) {
        self.0.lock().push(bio);
    }
    fn size(&self) -> Sectors {
        Sectors(2048)
    }
    fn id(&self) -> DevId {
        DevId::Path("blackhole".into())
    }
}

#[test]
fn a_server_that_stops_answering_is_cut_off() {
    let exports = Arc::new(TestExports::default());
    let hole = Arc::new(BlackHole(Mutex::new(Vec::new())));
    exports
        .devs
        .lock()
        .insert("h".into(), (hole.clone() as Arc<dyn BlockDevice>, false));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let srv = serve(&exports, &sock);
    let uri = format!("nbd+unix:///h?socket={}&outage=0.5", sock.display());
    let dev = RemoteDevice::connect(&uri, false).unwrap();
    let t = Instant::now();
    assert_eq!(read_at(&dev, Sectors(0), 512).unwrap_err(), IoError::Io);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(dev);
    hole.0.lock().clear();
    srv.shutdown_with_grace(Duration::from_millis(100));
}
