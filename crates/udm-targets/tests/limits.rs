//! Limits and flush fan-out through a real target: `striped` over two devices with different
//! limits stacks them as the kernel does (its chunk is io_min, a full stripe io_opt), and a
//! flush reaches every stripe once.

mod common;
use common::*;
use std::sync::Arc;
use std::time::Duration;
use udm_io::{sync, Bio, Limits, MemDevice, Op, Sectors};
use udm_testkit::gate::{GateDevice, Limited, RemapType};

#[test]
fn striped_stacks_limits_and_flushes_every_stripe() {
    let reg = registry();
    let remap = RemapType::new();
    reg.target_types().register(Arc::new(remap.clone()));
    let a = GateDevice::new(Arc::new(Limited(
        MemDevice::new("a", Sectors(4096)),
        Limits {
            logical_block_size: 512,
            physical_block_size: 4096,
            io_min: 4096,
            io_opt: 0,
            max_sectors: Sectors(1024),
            discard_granularity: 4096,
            max_discard_sectors: Sectors(2048),
        },
    )));
    let b = GateDevice::new(Arc::new(Limited(
        MemDevice::new("b", Sectors(4096)),
        Limits {
            logical_block_size: 4096,
            physical_block_size: 4096,
            io_min: 4096,
            io_opt: 0,
            max_sectors: Sectors(512),
            discard_granularity: 65536,
            max_discard_sectors: Sectors(0),
        },
    )));
    remap.insert("a", a.clone());
    remap.insert("b", b.clone());
    create(&reg, "a", "0 4096 testdev a").unwrap();
    create(&reg, "b", "0 4096 testdev b").unwrap();
    let (ma, mb) = (
        reg.info(&sel("a"), false).unwrap().minor,
        reg.info(&sel("b"), false).unwrap().minor,
    );
    create(
        &reg,
        "s",
        &format!("0 8192 striped 2 128 253:{ma} 0 253:{mb} 0"),
    )
    .unwrap();
    let (dev, _g) = open(&reg, "s");
    assert_eq!(
        dev.limits(),
        Limits {
            logical_block_size: 4096,
            physical_block_size: 4096,
            io_min: 65536,
            io_opt: 131072,
            max_sectors: Sectors(512),
            discard_granularity: 65536,
            max_discard_sectors: Sectors(2048),
        }
    );

    // One flush on the striped device: each stripe's device sees exactly one.
    let (tx, rx) = crossbeam_channel::unbounded();
    dev.submit(Bio::flush(Box::new(move |r, _| {
        let _ = tx.send(r);
    })));
    assert!(a.wait_held(1, Duration::from_secs(20)));
    assert!(b.wait_held(1, Duration::from_secs(20)));
    assert!(rx.try_recv().is_err(), "the flush waits for both stripes");
    a.open();
    b.open();
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), Ok(()));
    for g in [&a, &b] {
        let ops: Vec<Op> = g.log().iter().map(|r| r.op).collect();
        assert_eq!(ops, vec![Op::Flush]);
    }
    // Data still goes to the right stripe.
    write(dev.as_ref(), 128, &[9; 4096]);
    assert_eq!(
        b.log().last().map(|r| (r.op, r.sector)),
        Some((Op::Write, Sectors(0)))
    );
    assert_eq!(
        sync::read_at(dev.as_ref(), Sectors(128), 4096).unwrap()[..],
        [9; 4096]
    );
}
