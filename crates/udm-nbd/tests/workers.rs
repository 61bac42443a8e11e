//! A connection's requests are served by several threads in turn: a request that blocks
//! inside the device (its `submit` does not return) does not hold up the requests after it
//! on the same connection, at most `MAX_WORKERS` (4) requests are inside the device at once,
//! every reply still carries its own request's data, and a disconnect waits for the blocked
//! request's reply.

mod common;

use common::*;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use udm_io::{Bio, BlockDevice, DevId, Limits, MemDevice, Op, Sectors};
use udm_nbd::{Cmd, NbdClient};

/// Sectors below this are "slow": reading them blocks the submitting thread until released.
const SLOW: u64 = 64;

/// A RAM device whose `submit` of a read below sector `SLOW` blocks the caller until
/// `release` (as a device doing synchronous work on the submitter's thread would).
struct Blocking {
    inner: Arc<MemDevice>,
    open: Mutex<bool>,
    cv: Condvar,
    inside: AtomicUsize,
    most: AtomicUsize,
}

impl Blocking {
    fn new() -> Arc<Blocking> {
        Arc::new(Blocking {
            inner: Arc::new(MemDevice::new("mem", Sectors(8192))),
            open: Mutex::new(false),
            cv: Condvar::new(),
            inside: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        })
    }
    fn release(&self) {
        *self.open.lock() = true;
        self.cv.notify_all();
    }
}

impl BlockDevice for Blocking {
    fn submit(&self, bio: Bio) {
        if bio.op == Op::Read && bio.sector.0 < SLOW {
            let n = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            let mut open = self.open.lock();
            while !*open {
                self.cv.wait(&mut open);
            }
            drop(open);
            self.inside.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.submit(bio)
    }
    fn size(&self) -> Sectors {
        self.inner.size()
    }
    fn id(&self) -> DevId {
        self.inner.id()
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
}

/// Releases the blocked submits when dropped, also when a test fails (else the blocked
/// server threads would hold the test process forever).
struct Release(Arc<Blocking>);
impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

fn setup() -> (Served, Arc<Blocking>, NbdClient, Vec<u8>) {
    let s = serve();
    let dev = Blocking::new();
    s.add("dev", dev.clone(), false);
    let c = NbdClient::connect_unix(&s.sock, "dev").unwrap();
    let data = noise(4 << 20, 29);
    c.write(0, &data, false).unwrap();
    (s, dev, c, data)
}

type Replies = crossbeam_channel::Receiver<(u64, Result<Vec<u8>, udm_nbd::NbdError>)>;

/// Submit reads of `len` bytes at `offs` (tagged with their index); replies come on the
/// returned channel.
fn reads(c: &NbdClient, offs: &[u64], len: u32) -> Replies {
    let (tx, rx) = crossbeam_channel::unbounded();
    for (i, &off) in offs.iter().enumerate() {
        let tx = tx.clone();
        c.submit(Cmd::Read { offset: off, len }, move |r| {
            let _ = tx.send((i as u64, r));
        });
    }
    rx
}

#[test]
fn a_request_blocked_in_the_device_does_not_hold_up_the_next_ones() {
    let (_s, dev, c, data) = setup();
    let _r = Release(dev.clone());
    let slow = reads(&c, &[0], 4096);
    wait_for(|| dev.inside.load(Ordering::SeqCst) == 1);
    // Later requests on the same connection are read and answered meanwhile (a lone thread
    // serving the connection would still be inside the first one's submit).
    let offs: Vec<u64> = (0..32).map(|i| (1 << 20) + i * 8192).collect();
    let fast = reads(&c, &offs, 4096);
    for _ in 0..offs.len() {
        let (i, r) = fast
            .recv_timeout(Duration::from_secs(30))
            .expect("a reply behind the blocked request");
        let off = offs[i as usize] as usize;
        assert!(r.unwrap() == data[off..off + 4096], "read {i}");
    }
    // A write behind it too, read back.
    c.write(2 << 20, &[7u8; 4096], false).unwrap();
    let mut back = vec![0u8; 4096];
    c.read(2 << 20, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 7));
    assert!(slow.try_recv().is_err(), "the blocked read answered early");
    dev.release();
    let (_, r) = slow.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(r.unwrap() == data[..4096]);
}

#[test]
fn at_most_four_requests_of_a_connection_are_inside_the_device() {
    let (_s, dev, c, data) = setup();
    let _r = Release(dev.clone());
    let offs: Vec<u64> = (0..8).map(|i| i * 4096).collect();
    let rx = reads(&c, &offs, 4096);
    wait_for(|| dev.inside.load(Ordering::SeqCst) == 4);
    dev.release();
    for _ in 0..offs.len() {
        let (i, r) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let off = offs[i as usize] as usize;
        assert!(r.unwrap() == data[off..off + 4096], "read {i}");
    }
    assert_eq!(dev.most.load(Ordering::SeqCst), 4);
}

#[test]
fn disconnect_waits_for_the_blocked_reply_and_closes() {
    let (s, dev, c, data) = setup();
    let _r = Release(dev.clone());
    let slow = reads(&c, &[512], 4096);
    wait_for(|| dev.inside.load(Ordering::SeqCst) == 1);
    let opened = s.exports.open.load(Ordering::SeqCst);
    assert_eq!(opened, 1);
    let t = std::thread::spawn(move || c.disconnect());
    // The export stays open while the blocked request is in flight.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.exports.open.load(Ordering::SeqCst), 1);
    dev.release();
    let (_, r) = slow.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(r.unwrap() == data[512..512 + 4096]);
    t.join().unwrap().unwrap();
    wait_for(|| s.exports.open.load(Ordering::SeqCst) == 0);
}
