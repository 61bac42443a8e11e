//! Writes done on the connection's request thread (the file device writes synchronously
//! there, `udm_io::with_blocking_submit`) against writes through the I/O pool (inline path
//! off): the same bytes land for every size, alignment and flag; FUA reaches the device;
//! an error in the middle of a pipelined stream fails only its own write.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use udm_io::{Bio, BioFlags, BlockDevice, DevId, FileDevice, Limits, Op, Sectors};
use udm_nbd::{Cmd, NbdClient};

const SIZE: u64 = 8 << 20;

/// A file device that counts its writes: those that completed on the submitting thread
/// before `submit` returned, and those that carried FUA. A write at `fail_at` is sent
/// past the end of the file device, which fails it there (EIO).
struct Watch {
    inner: FileDevice,
    writes: AtomicUsize,
    synchronous: AtomicUsize,
    fua: AtomicUsize,
    fail_at: Option<Sectors>,
}

impl Watch {
    fn new(inner: FileDevice, fail_at: Option<Sectors>) -> Arc<Watch> {
        Arc::new(Watch {
            inner,
            writes: AtomicUsize::new(0),
            synchronous: AtomicUsize::new(0),
            fua: AtomicUsize::new(0),
            fail_at,
        })
    }
}

impl BlockDevice for Watch {
    fn submit(&self, mut bio: Bio) {
        if bio.op != Op::Write {
            return self.inner.submit(bio);
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        if bio.flags.contains(BioFlags::FUA) {
            self.fua.fetch_add(1, Ordering::SeqCst);
        }
        if Some(bio.sector) == self.fail_at {
            bio.sector = self.inner.size();
        }
        let ended_here = Arc::new(AtomicBool::new(false));
        let (e, me) = (ended_here.clone(), std::thread::current().id());
        let bio = bio.on_end(move |r, _| {
            e.store(std::thread::current().id() == me, Ordering::SeqCst);
            r
        });
        self.inner.submit(bio);
        if ended_here.load(Ordering::SeqCst) {
            self.synchronous.fetch_add(1, Ordering::SeqCst);
        }
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

/// Two 8 MiB files of the same noise, exported as `direct` (the request thread writes) and
/// `pool` (every bio on the I/O pool).
struct Two {
    s: Served,
    direct: Arc<Watch>,
    pool: Arc<Watch>,
}

fn two(fail_at: Option<Sectors>) -> Two {
    let s = serve();
    let data = noise(SIZE as usize, 23);
    std::fs::write(s.path("direct.img"), &data).unwrap();
    std::fs::write(s.path("pool.img"), &data).unwrap();
    let direct = Watch::new(
        FileDevice::open(&s.path("direct.img"), false).unwrap(),
        fail_at,
    );
    let pool_dev = FileDevice::open(&s.path("pool.img"), false).unwrap();
    pool_dev.set_inline(false);
    let pool = Watch::new(pool_dev, fail_at);
    s.add("direct", direct.clone(), false);
    s.add("pool", pool.clone(), false);
    Two { s, direct, pool }
}

/// Writes of every kind: 4 KiB aligned, sub-page and unaligned, 1 MiB, with and without FUA.
fn writes() -> Vec<(u64, Vec<u8>, bool)> {
    let shapes: [(u64, usize, bool); 8] = [
        (0, 4096, false),
        (4096 * 7, 4096, true),
        (512 * 19, 1536, false),
        (1 << 20, 1 << 20, false),
        ((3 << 20) + 512, (1 << 20) - 512, true),
        (SIZE - 4096, 4096, false),
        (5 << 20, 256 << 10, false),
        (12288, 512, true),
    ];
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(off, len, fua))| (off, noise(len, 200 + i as u64), fua))
        .collect()
}

/// Send every write at once on one connection (pipelined) and collect the results.
fn pipelined(c: &Arc<NbdClient>, ws: &[(u64, Vec<u8>, bool)]) -> Vec<Result<(), i32>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    for (i, (off, data, fua)) in ws.iter().enumerate() {
        let tx = tx.clone();
        c.submit(
            Cmd::Write {
                offset: *off,
                data,
                fua: *fua,
            },
            move |r| tx.send((i, r.map(|_| ()).map_err(|e| e.errno()))).unwrap(),
        );
    }
    let mut out = vec![Ok(()); ws.len()];
    for _ in 0..ws.len() {
        let (i, r) = rx.recv().unwrap();
        out[i] = r;
    }
    out
}

#[test]
fn direct_and_pool_writes_land_the_same_bytes() {
    let t = two(None);
    let ws = writes();
    for name in ["direct", "pool"] {
        // One write at a time, then the same set pipelined on another connection in reverse
        // order of sizes over it (later ones overwrite: nothing overlaps within a set).
        let c = NbdClient::connect_unix(&t.s.sock, name).unwrap();
        for (off, data, fua) in &ws {
            c.write(*off, data, *fua).unwrap();
        }
        let c = Arc::new(NbdClient::connect_unix(&t.s.sock, name).unwrap());
        let again: Vec<_> = ws
            .iter()
            .map(|(off, d, fua)| (*off, d.iter().map(|b| !b).collect::<Vec<u8>>(), *fua))
            .collect();
        assert!(pipelined(&c, &again).iter().all(|r| r.is_ok()));
        c.flush().unwrap();
    }
    let a = std::fs::read(t.s.path("direct.img")).unwrap();
    let b = std::fs::read(t.s.path("pool.img")).unwrap();
    assert!(a == b, "the direct and pool exports differ");
    let (off, data, _) = &ws[3];
    let inv: Vec<u8> = data.iter().map(|b| !b).collect();
    assert!(a[*off as usize..*off as usize + data.len()] == inv[..]);
    // Every write up to 128 KiB of the direct export was done on the request thread (larger
    // ones on the pool), none of the pool export's; FUA reached both devices alike.
    let n = 2 * ws.len();
    let small = 2 * ws.iter().filter(|w| w.1.len() <= 128 << 10).count();
    assert_eq!(small, n - 6);
    assert_eq!(t.direct.writes.load(Ordering::SeqCst), n);
    assert_eq!(t.direct.synchronous.load(Ordering::SeqCst), small);
    assert_eq!(t.pool.writes.load(Ordering::SeqCst), n);
    assert_eq!(t.pool.synchronous.load(Ordering::SeqCst), 0);
    let fua = 2 * ws.iter().filter(|w| w.2).count();
    assert_eq!(t.direct.fua.load(Ordering::SeqCst), fua);
    assert_eq!(t.pool.fua.load(Ordering::SeqCst), fua);
}

#[test]
fn an_error_in_the_middle_of_pipelined_writes_fails_only_that_write() {
    let bad = 1 << 20;
    let t = two(Some(Sectors(bad / 512)));
    let ws = writes();
    assert_eq!(ws[3].0, bad);
    for name in ["direct", "pool"] {
        let c = Arc::new(NbdClient::connect_unix(&t.s.sock, name).unwrap());
        let res = pipelined(&c, &ws);
        for (i, r) in res.iter().enumerate() {
            if i == 3 {
                assert_eq!(*r, Err(libc::EIO), "{name}: the failed write");
            } else {
                assert_eq!(*r, Ok(()), "{name}: write {i}");
            }
        }
        // The connection goes on: a write and a read after the failure.
        let d = noise(4096, 99);
        c.write(6 << 20, &d, false).unwrap();
        let mut back = vec![0u8; 4096];
        c.read(6 << 20, &mut back).unwrap();
        assert!(back == d, "{name}: read after the failed write");
    }
    let a = std::fs::read(t.s.path("direct.img")).unwrap();
    let b = std::fs::read(t.s.path("pool.img")).unwrap();
    assert!(a == b);
    // The failed range kept its old bytes, the file did not grow.
    let old = noise(SIZE as usize, 23);
    assert!(
        a[bad as usize..bad as usize + (1 << 20)] == old[bad as usize..bad as usize + (1 << 20)]
    );
    assert_eq!(a.len() as u64, SIZE);
}
