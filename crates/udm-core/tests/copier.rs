//! The block copier (kcopyd): copies match a model, zeroing works (with and without device
//! write-zeroes), a failing destination is reported alone, every job completes once, and no
//! more than the buffer budget is ever in flight.

use crossbeam_channel::unbounded;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use udm_core::{Copier, CopyOutcome, Loc};
use udm_io::{Bio, BlockDevice, DevId, IoError, MemDevice, Op, Sectors, WorkerPool};
use udm_testkit::gate::GateDevice;
use udm_testkit::rng::{pseudo, XorShift};

const GUARD: Duration = Duration::from_secs(20);

/// Completes on the I/O pool instead of inline, so jobs really overlap.
struct Async(Arc<MemDevice>);

impl BlockDevice for Async {
    fn submit(&self, bio: Bio) {
        let d = self.0.clone();
        WorkerPool::io().spawn(move || d.submit(bio));
    }
    fn size(&self) -> Sectors {
        self.0.size()
    }
    fn id(&self) -> DevId {
        self.0.id()
    }
}

/// Fails writes (and optionally write-zeroes) at or after `from`; can refuse write-zeroes.
struct Faulty {
    mem: Arc<MemDevice>,
    fail_from: Option<Sectors>,
    no_write_zeroes: bool,
}

impl BlockDevice for Faulty {
    fn submit(&self, bio: Bio) {
        if self.no_write_zeroes && bio.op == Op::WriteZeroes {
            return bio.complete(Err(IoError::NotSupported));
        }
        if bio.op.is_write() && self.fail_from.is_some_and(|f| bio.end() > f) {
            return bio.complete(Err(IoError::Io));
        }
        self.mem.submit(bio)
    }
    fn size(&self) -> Sectors {
        self.mem.size()
    }
    fn id(&self) -> DevId {
        self.mem.id()
    }
}

fn filled(name: &str, sectors: u64, seed: u64) -> Arc<MemDevice> {
    let m = Arc::new(MemDevice::new(name, Sectors(sectors)));
    let data = pseudo(sectors as usize * 512, seed);
    udm_io::sync::write_at(m.as_ref(), Sectors(0), &data).unwrap();
    m
}

#[test]
fn copies_match_a_model() {
    let seed = udm_testkit::rng::seed("UDM_TEST_SEED", 0x5eed_c0b1);
    let mut rng = XorShift::new(seed);
    const N: u64 = 2048;
    let src = filled("src", N, seed);
    let model_src = src.snapshot();
    let dsts: Vec<Arc<MemDevice>> = (0..3)
        .map(|i| Arc::new(MemDevice::new(&format!("d{i}"), Sectors(N))))
        .collect();
    let mut model: Vec<Vec<u8>> = dsts.iter().map(|d| d.snapshot()).collect();
    let copier = Copier::new(Sectors(16), 4);
    let (tx, rx) = unbounded();
    // Jobs write disjoint destination ranges, so the model does not depend on their order.
    let mut next_dst = 0u64;
    let mut jobs = 0;
    while next_dst < N {
        let len = (1 + rng.below(100)).min(N - next_dst);
        let from = rng.below(N - len + 1);
        let which: Vec<usize> = (0..3).filter(|_| rng.below(2) == 0).collect();
        let which = if which.is_empty() { vec![0] } else { which };
        for &w in &which {
            let (a, b) = ((next_dst * 512) as usize, ((next_dst + len) * 512) as usize);
            model[w][a..b]
                .copy_from_slice(&model_src[(from * 512) as usize..((from + len) * 512) as usize]);
        }
        let dests = which
            .iter()
            .map(|&w| Loc::new(Arc::new(Async(dsts[w].clone())), Sectors(next_dst)))
            .collect();
        let tx = tx.clone();
        copier.copy(
            Loc::new(Arc::new(Async(src.clone())), Sectors(from)),
            dests,
            Sectors(len),
            Box::new(move |o| {
                let _ = tx.send(o);
            }),
        );
        jobs += 1;
        next_dst += len;
    }
    let outcomes: Vec<CopyOutcome> = (0..jobs).map(|_| rx.recv_timeout(GUARD).unwrap()).collect();
    assert!(outcomes.iter().all(|o| o.is_ok()));
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "one completion per job"
    );
    for (d, m) in dsts.iter().zip(&model) {
        assert!(
            d.snapshot() == *m,
            "destination {} differs from the model",
            d.id()
        );
    }
    assert!(copier.buffers_allocated() <= 4);
    assert!(copier.peak_in_flight() <= 4);
}

#[test]
fn zeroing_uses_write_zeroes_or_falls_back_to_writing_zeroes() {
    let a = filled("a", 256, 3);
    let b = filled("b", 256, 4);
    let b_dev = Arc::new(Faulty {
        mem: b.clone(),
        fail_from: None,
        no_write_zeroes: true,
    });
    let copier = Copier::new(Sectors(8), 2);
    let before_a = a.snapshot();
    let o = copier.zero_wait(
        vec![
            Loc::new(a.clone(), Sectors(10)),
            Loc::new(b_dev, Sectors(100)),
        ],
        Sectors(37),
    );
    assert_eq!(
        o,
        CopyOutcome {
            read: Ok(()),
            writes: vec![Ok(()), Ok(())]
        }
    );
    let (sa, sb) = (a.snapshot(), b.snapshot());
    assert!(sa[10 * 512..47 * 512].iter().all(|&x| x == 0));
    assert_eq!(&sa[..10 * 512], &before_a[..10 * 512]);
    assert_eq!(&sa[47 * 512..], &before_a[47 * 512..]);
    assert!(sb[100 * 512..137 * 512].iter().all(|&x| x == 0));
    assert!(sb[137 * 512..138 * 512].iter().any(|&x| x != 0));
}

#[test]
fn a_failing_destination_is_reported_alone() {
    let src = filled("s", 128, 9);
    let good1 = Arc::new(MemDevice::new("g1", Sectors(128)));
    let good2 = Arc::new(MemDevice::new("g2", Sectors(128)));
    let bad = Arc::new(Faulty {
        mem: Arc::new(MemDevice::new("bad", Sectors(128))),
        fail_from: Some(Sectors(40)),
        no_write_zeroes: false,
    });
    let copier = Copier::new(Sectors(8), 3);
    let o = copier.copy_wait(
        Loc::new(src.clone(), Sectors(0)),
        vec![
            Loc::new(good1.clone(), Sectors(0)),
            Loc::new(bad, Sectors(0)),
            Loc::new(good2.clone(), Sectors(0)),
        ],
        Sectors(64),
    );
    assert_eq!(o.read, Ok(()));
    assert_eq!(o.writes, vec![Ok(()), Err(IoError::Io), Ok(())]);
    let s = src.snapshot();
    assert_eq!(&good1.snapshot()[..64 * 512], &s[..64 * 512]);
    assert_eq!(&good2.snapshot()[..64 * 512], &s[..64 * 512]);
    // A failing source fails the read and writes nothing.
    let short = Arc::new(MemDevice::new("short", Sectors(16)));
    let dst = Arc::new(MemDevice::new("d", Sectors(64)));
    let o = copier.copy_wait(
        Loc::new(short, Sectors(8)),
        vec![Loc::new(dst.clone(), Sectors(0))],
        Sectors(16),
    );
    assert_eq!(o.read, Err(IoError::Io));
}

#[test]
fn memory_stays_within_the_buffer_budget() {
    const BUFS: usize = 4;
    let mem = filled("s", 1024, 5);
    let gate = GateDevice::new(mem.clone());
    let dst = Arc::new(MemDevice::new("d", Sectors(1024)));
    let copier = Copier::new(Sectors(8), BUFS);
    let done = Arc::new(Mutex::new(0usize));
    for j in 0..10u64 {
        let done = done.clone();
        copier.copy(
            Loc::new(gate.clone(), Sectors(j * 64)),
            vec![Loc::new(dst.clone(), Sectors(j * 64))],
            Sectors(64),
            Box::new(move |o| {
                assert!(o.is_ok());
                *done.lock() += 1;
            }),
        );
    }
    // 80 chunks queued; exactly the budget's worth of reads were started.
    assert_eq!(gate.held(), BUFS);
    let mut released = 0;
    while *done.lock() < 10 {
        let held = gate.held();
        assert!(held <= BUFS, "{held} reads in flight with {BUFS} buffers");
        assert!(held > 0, "queued chunks must start as buffers come back");
        released += gate.release(1);
    }
    assert_eq!(released, 80);
    assert_eq!(gate.held(), 0);
    assert_eq!(copier.buffers_allocated(), BUFS);
    assert_eq!(copier.peak_in_flight(), BUFS);
    assert_eq!(dst.snapshot()[..640 * 512], mem.snapshot()[..640 * 512]);
}
