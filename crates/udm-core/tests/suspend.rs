//! Suspend contracts, with bios held at a gate device below the table: drain waits for
//! in-flight I/O, noflush lets a target requeue what it holds (resubmitted after resume,
//! never failed), an abandoned suspend calls `presuspend_undo`, PREFLUSH reaches the devices
//! before the data, and `submit` returns without waiting for any of it.

use crossbeam_channel::{unbounded, Receiver};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use udm_core::registry::OpenGuard;
use udm_core::{
    parse_table_text, DeviceState, MapResult, Registry, Requeuer, SuspendOpts, Target, TargetCtx,
    TargetError, TargetType, TargetTypes,
};
use udm_io::{Bio, BioFlags, BlockDevice, IoBuf, IoError, MemDevice, Op, Sectors};
use udm_testkit::gate::{GateDevice, RemapType};
use udm_testkit::registry::{create, sel};

/// Failure guard for waits that must end (never the pass condition).
const GUARD: Duration = Duration::from_secs(20);

fn setup(extra: impl FnOnce(&TargetTypes)) -> (Registry, RemapType) {
    let types = TargetTypes::new();
    let remap = RemapType::new();
    types.register(Arc::new(remap.clone()));
    extra(&types);
    (Registry::new(types), remap)
}

/// A registry, a device opened in it, and the guard that keeps it open.
type Opened = (Registry, Arc<dyn BlockDevice>, OpenGuard);

/// A registry with `testdev` (and what `extra` registers) where `testdev <key>` reaches
/// `below`, and device `d` made from `table`, opened.
fn device(
    extra: impl FnOnce(&TargetTypes),
    key: &str,
    below: Arc<dyn BlockDevice>,
    table: &str,
) -> Opened {
    let (reg, remap) = setup(extra);
    remap.insert(key, below);
    create(&reg, "d", table).unwrap();
    let (dev, guard) = reg.open(&sel("d")).unwrap();
    (reg, dev, guard)
}

type Done = Receiver<(u64, Result<(), IoError>)>;

/// The next `n` completions, by sector.
fn completions(rx: &Done, n: usize) -> Vec<(u64, Result<(), IoError>)> {
    let mut done: Vec<_> = (0..n).map(|_| rx.recv_timeout(GUARD).unwrap()).collect();
    done.sort_by_key(|d| d.0);
    done
}

fn write(
    dev: &dyn BlockDevice,
    sector: u64,
    byte: u8,
    tx: &crossbeam_channel::Sender<(u64, Result<(), IoError>)>,
) {
    let tx = tx.clone();
    dev.submit(Bio::write(
        Sectors(sector),
        IoBuf::from_slice(&[byte; 512]),
        Box::new(move |r, _| {
            let _ = tx.send((sector, r));
        }),
    ));
}

fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Receiver<T> {
    let (tx, rx) = unbounded();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

#[test]
fn suspend_drain_waits_for_io_held_below() {
    let mem = Arc::new(MemDevice::new("m", Sectors(64)));
    let gate = GateDevice::new(mem.clone());
    let (reg, dev, _g) = device(|_| {}, "g", gate.clone(), "0 64 testdev g");
    let (tx, rx): (_, Done) = unbounded();
    for s in 0..4 {
        write(dev.as_ref(), s, 7, &tx);
    }
    assert!(gate.wait_held(4, GUARD));
    let (r2, m2) = (reg.clone(), mem.clone());
    let suspended = in_thread(move || {
        r2.suspend(&sel("d"), false, false).unwrap();
        // What the device below holds the moment the suspend returns.
        m2.snapshot()
    });
    // The suspend cannot end while the gate holds the writes.
    assert!(suspended.recv_timeout(Duration::from_millis(300)).is_err());
    assert!(reg.info(&sel("d"), false).unwrap().suspended);
    assert_eq!(gate.release_all(), 4);
    let data = suspended
        .recv_timeout(GUARD)
        .expect("suspend returns after the drain");
    assert!(
        data[..4 * 512].iter().all(|&b| b == 7),
        "drained before the writes landed"
    );
    for _ in 0..4 {
        assert!(rx.recv_timeout(GUARD).unwrap().1.is_ok());
    }
    reg.resume(&sel("d")).unwrap();
}

/// A target that keeps bios (as multipath with no path and `queue_if_no_path`, or a thin
/// pool out of space): on a noflush suspend it hands them back, and requeues new ones.
struct HolderType {
    held: Held,
}

struct Holder {
    held: Held,
    state: DeviceState,
    requeuer: Requeuer,
}

impl Target for Holder {
    fn map(&self, bio: Bio) -> MapResult {
        if self.state.noflush_suspending() {
            return MapResult::Requeue(bio);
        }
        self.held.lock().push(bio);
        MapResult::Submitted
    }
    fn presuspend(&self) {
        if self.state.noflush_suspending() {
            for b in self.held.lock().drain(..) {
                self.requeuer.requeue(b);
            }
        }
    }
}

impl TargetType for HolderType {
    fn name(&self) -> &'static str {
        "holder"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        _args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(Holder {
            held: self.held.clone(),
            state: ctx.device_state(),
            requeuer: ctx.requeuer(),
        }))
    }
}

type Held = Arc<Mutex<Vec<Bio>>>;

/// Device `d` from `table` over `holder` lines and `testdev m`, a RAM device of `sectors`;
/// returns what the holders keep, the RAM device, and the opened device.
fn holding(sectors: u64, table: &str) -> (Held, Arc<MemDevice>, Opened) {
    let held = Held::default();
    let mem = Arc::new(MemDevice::new("m", Sectors(sectors)));
    let h2 = held.clone();
    let holder = move |t: &TargetTypes| t.register(Arc::new(HolderType { held: h2 }));
    let opened = device(holder, "m", mem.clone(), table);
    (held, mem, opened)
}

#[test]
fn noflush_suspend_requeues_held_io_and_resubmits_it_after_resume() {
    // The holder sits at sectors 8..16, after a plain line, so requeued sectors must be
    // made device-relative again.
    let (held, mem, (reg, dev, _g)) = holding(64, "0 8 testdev m\n8 8 holder");
    let (tx, rx): (_, Done) = unbounded();
    for s in 8..12 {
        write(dev.as_ref(), s, s as u8, &tx);
    }
    assert_eq!(held.lock().len(), 4);
    assert_eq!(dev.size(), Sectors(16));

    let r2 = reg.clone();
    let sus = in_thread(move || r2.suspend(&sel("d"), true, false));
    sus.recv_timeout(GUARD)
        .expect("a noflush suspend does not wait for I/O the target gave back")
        .unwrap();
    assert!(held.lock().is_empty());
    assert!(
        rx.try_recv().is_err(),
        "requeued I/O must not complete or fail"
    );
    // New I/O while suspended is held by the core.
    write(dev.as_ref(), 12, 12, &tx);

    // Swap in a table that can do the I/O: everything lands there after resume.
    reg.load(
        &sel("d"),
        &parse_table_text("0 16 testdev m").unwrap(),
        false,
    )
    .unwrap();
    reg.resume(&sel("d")).unwrap();
    assert_eq!(
        completions(&rx, 5),
        (8..13).map(|s| (s, Ok(()))).collect::<Vec<_>>()
    );
    let data = mem.snapshot();
    for s in 8..13usize {
        assert!(
            data[s * 512..(s + 1) * 512].iter().all(|&b| b == s as u8),
            "sector {s}"
        );
    }
}

#[test]
fn noflush_resume_swaps_tables_under_held_io() {
    let (held, mem, (reg, dev, _g)) = holding(16, "0 16 holder");
    let (tx, rx): (_, Done) = unbounded();
    for s in 0..3 {
        write(dev.as_ref(), s, 0x30 + s as u8, &tx);
    }
    assert_eq!(held.lock().len(), 3);
    // Reload and resume a live device with noflush: the swap's suspend takes the held bios
    // back instead of waiting for them, and the new table does them.
    reg.load(
        &sel("d"),
        &parse_table_text("0 16 testdev m").unwrap(),
        false,
    )
    .unwrap();
    let r2 = reg.clone();
    let opts = SuspendOpts {
        noflush: true,
        ..Default::default()
    };
    in_thread(move || r2.resume_with(&sel("d"), opts))
        .recv_timeout(GUARD)
        .expect("a noflush resume does not wait for held I/O")
        .unwrap();
    assert_eq!(
        completions(&rx, 3),
        (0..3).map(|s| (s, Ok(()))).collect::<Vec<_>>()
    );
    assert_eq!(mem.snapshot()[2 * 512], 0x32);
}

/// Counts suspend hooks and passes bios to a device.
struct ProbeType {
    dev: Arc<dyn BlockDevice>,
    counts: Arc<[AtomicUsize; 3]>,
}

struct Probe {
    dev: Arc<dyn BlockDevice>,
    counts: Arc<[AtomicUsize; 3]>,
}

impl Target for Probe {
    fn map(&self, bio: Bio) -> MapResult {
        MapResult::Remap(self.dev.clone(), bio)
    }
    fn presuspend(&self) {
        self.counts[0].fetch_add(1, SeqCst);
    }
    fn presuspend_undo(&self) {
        self.counts[1].fetch_add(1, SeqCst);
    }
    fn postsuspend(&self) {
        self.counts[2].fetch_add(1, SeqCst);
    }
}

impl TargetType for ProbeType {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        _ctx: &mut TargetCtx<'_>,
        _args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(Probe {
            dev: self.dev.clone(),
            counts: self.counts.clone(),
        }))
    }
}

#[test]
fn abandoned_suspend_calls_presuspend_undo_and_stays_live() {
    let mem = Arc::new(MemDevice::new("m", Sectors(64)));
    let gate = GateDevice::new(mem.clone());
    let counts: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let (g2, c2) = (gate.clone(), counts.clone());
    let (reg, _) = setup(move |t| {
        t.register(Arc::new(ProbeType {
            dev: g2,
            counts: c2,
        }))
    });
    create(&reg, "d", "0 64 probe").unwrap();
    let (dev, _g) = reg.open(&sel("d")).unwrap();
    let (tx, rx): (_, Done) = unbounded();
    write(dev.as_ref(), 1, 1, &tx);
    assert!(gate.wait_held(1, GUARD));
    // The gate never lets the write go, so the drain cannot finish: the suspend is abandoned.
    let e = reg
        .suspend_with(
            &sel("d"),
            SuspendOpts {
                noflush: false,
                drain_timeout: Some(Duration::from_millis(20)),
            },
        )
        .unwrap_err();
    assert_eq!(e.errno(), libc::EINTR);
    let c = |i: usize| counts[i].load(SeqCst);
    assert_eq!(
        (c(0), c(1), c(2)),
        (1, 1, 0),
        "presuspend, presuspend_undo, postsuspend"
    );
    assert!(!reg.info(&sel("d"), false).unwrap().suspended);
    // The device is live: new I/O goes straight down, behind the first.
    write(dev.as_ref(), 2, 2, &tx);
    assert!(gate.wait_held(2, GUARD));
    gate.open();
    assert_eq!(completions(&rx, 2), vec![(1, Ok(())), (2, Ok(()))]);
    // A suspend that drains runs the normal hooks.
    reg.suspend(&sel("d"), false, false).unwrap();
    assert_eq!((c(0), c(1), c(2)), (2, 1, 1));
    reg.resume(&sel("d")).unwrap();
}

#[test]
fn preflush_reaches_the_device_before_the_data() {
    let gate = GateDevice::new(Arc::new(MemDevice::new("m", Sectors(64))));
    let (_reg, dev, _g) = device(|_| {}, "g", gate.clone(), "0 64 testdev g");
    let (tx, rx) = unbounded();
    dev.submit(
        Bio::write(
            Sectors(3),
            IoBuf::from_slice(&[5; 1024]),
            Box::new(move |r, _| {
                let _ = tx.send(r);
            }),
        )
        .with_flags(BioFlags::PREFLUSH.with(BioFlags::FUA)),
    );
    // Only the flush has arrived; the data waits for it.
    assert!(gate.wait_held(1, GUARD));
    let held = gate.held_records();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].op, Op::Flush);
    assert_eq!(gate.release(1), 1);
    assert!(gate.wait_held(1, GUARD));
    let data = gate.held_records()[0];
    assert_eq!(
        (data.op, data.sector, data.len),
        (Op::Write, Sectors(3), Sectors(2))
    );
    assert!(data.flags.contains(BioFlags::FUA) && !data.flags.contains(BioFlags::PREFLUSH));
    assert!(rx.try_recv().is_err());
    gate.release_all();
    assert_eq!(rx.recv_timeout(GUARD).unwrap(), Ok(()));
    assert_eq!(gate.log().len(), 2);
}

#[test]
fn submit_returns_without_waiting_for_held_io() {
    let gate = GateDevice::new(Arc::new(MemDevice::new("m", Sectors(256))));
    let table = "0 128 testdev g\n128 128 testdev g";
    let (reg, dev, _g) = device(|_| {}, "g", gate.clone(), table);
    let (tx, rx): (_, Done) = unbounded();
    // Below: the gate holds everything (plain writes, a write crossing the two targets, a
    // flush, and a PREFLUSH write whose data waits for its flush).
    let (d2, tx2) = (dev.clone(), tx.clone());
    let returned = in_thread(move || {
        for s in 0..100 {
            write(d2.as_ref(), s, 1, &tx2);
        }
        let t = tx2.clone();
        d2.submit(Bio::write(
            Sectors(120),
            IoBuf::from_slice(&[2; 8192]),
            Box::new(move |r, _| {
                let _ = t.send((120, r));
            }),
        ));
        let t = tx2.clone();
        d2.submit(Bio::flush(Box::new(move |r, _| {
            let _ = t.send((1000, r));
        })));
        let t = tx2.clone();
        d2.submit(
            Bio::write(
                Sectors(200),
                IoBuf::from_slice(&[3; 512]),
                Box::new(move |r, _| {
                    let _ = t.send((200, r));
                }),
            )
            .with_flags(BioFlags::PREFLUSH),
        );
    });
    returned
        .recv_timeout(GUARD)
        .expect("submit returned while the device below held every bio");
    assert!(rx.try_recv().is_err());
    // Above: a suspended device holds new I/O in the core; submit returns all the same.
    let r2 = reg.clone();
    let sus = in_thread(move || r2.suspend(&sel("d"), false, false));
    let (d2, tx2) = (dev.clone(), tx.clone());
    // Wait for the suspend to have blocked new I/O before submitting.
    while !reg.info(&sel("d"), false).unwrap().suspended {
        std::thread::yield_now();
    }
    let returned = in_thread(move || write(d2.as_ref(), 250, 4, &tx2));
    returned
        .recv_timeout(GUARD)
        .expect("submit returned on a suspended device");
    gate.open();
    sus.recv_timeout(GUARD).unwrap().unwrap();
    reg.resume(&sel("d")).unwrap();
    let n = (0..104)
        .map(|_| rx.recv_timeout(GUARD).unwrap())
        .filter(|(_, r)| r.is_ok())
        .count();
    assert_eq!(n, 104);
}
