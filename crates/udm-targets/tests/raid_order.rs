//! Ordering of the raid target's write-intent bitmap against the data it covers, on a gated
//! RAM disk whose log orders every bio of the metadata and data legs: the first write to a
//! clean region sets its bit on every leg's metadata device and makes it durable (a flush,
//! as md's PREFLUSH|FUA bitmap writes) before any data write of the region goes out; a
//! second write to the now dirty region does no bitmap I/O.

mod common;

use common::lines;
use std::sync::Arc;
use udm_core::Registry;
use udm_io::{sync, MemDevice, Op, Sectors};
use udm_testkit::dm::{create, open, reg, sel};
use udm_testkit::gate::{GateDevice, Record, RemapType};

/// Sectors of each metadata device and of each data leg.
const META: u64 = 2048;
const LEG: u64 = 16384;
/// Where the bitmap's bits start on a metadata device (bitmap superblock at 4 KiB, 256 bytes).
const BITS_OFFSET: u64 = 4096 + 256;

/// Two metadata devices then two data legs, all on one gated RAM disk.
fn gated_legs(reg: &Registry) -> Arc<GateDevice> {
    let total = 2 * META + 2 * LEG;
    let mem = Arc::new(MemDevice::new("m", Sectors(total)));
    let gate = GateDevice::new(mem);
    gate.open();
    let remap = RemapType::new();
    reg.target_types().register(Arc::new(remap.clone()));
    remap.insert("g", gate.clone());
    create(reg, "g", &format!("0 {total} testdev g")).unwrap();
    let g = reg.info(&sel("g"), false).unwrap().minor;
    for i in 0..2u64 {
        create(
            reg,
            &format!("m{i}"),
            &format!("0 {META} linear 253:{g} {}", i * META),
        )
        .unwrap();
        let off = 2 * META + i * LEG;
        create(
            reg,
            &format!("d{i}"),
            &format!("0 {LEG} linear 253:{g} {off}"),
        )
        .unwrap();
    }
    gate
}

fn minor(reg: &Registry, name: &str) -> u32 {
    reg.info(&sel(name), false).unwrap().minor
}

fn is_meta_write(r: &Record) -> bool {
    r.op == Op::Write && r.sector.0 < 2 * META
}

fn is_data_write(r: &Record) -> bool {
    r.op == Op::Write && r.sector.0 >= 2 * META
}

#[test]
fn first_write_to_a_clean_region_waits_for_its_durable_bit() {
    let reg = reg();
    let gate = gated_legs(&reg);
    let (m0, d0, m1, d1) = (
        minor(&reg, "m0"),
        minor(&reg, "d0"),
        minor(&reg, "m1"),
        minor(&reg, "d1"),
    );
    let table = |sleep_ms: u32| {
        format!(
            "0 {LEG} raid raid1 6 0 nosync region_size 256 daemon_sleep {sleep_ms} \
             2 253:{m0} 253:{d0} 253:{m1} 253:{d1}"
        )
    };
    // A fresh bitmap starts with every bit set (as md's); a quick bitmap daemon clears
    // them, then a reload with a slow one keeps the bits of the writes below set.
    create(&reg, "r", &table(1000)).unwrap();
    let (m, _gm) = open(&reg, "m0");
    let bits_at = BITS_OFFSET as usize;
    let clean = (0..800).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(25));
        let b = udm_testkit::dm::read(&*m, 0, 8192).unwrap();
        b[bits_at..bits_at + (LEG / 256 / 8) as usize]
            .iter()
            .all(|&x| x == 0)
    });
    assert!(clean, "the bitmap daemon never cleared the fresh bitmap");
    reg.suspend(&sel("r"), false, false).unwrap();
    reg.load(&sel("r"), &lines(&table(300_000)), false).unwrap();
    reg.resume(&sel("r")).unwrap();
    let (r, _g) = open(&reg, "r");
    // A region well inside the array (region 8: sectors 2048..2304).
    let start = gate.log().len();
    sync::write_at(&*r, Sectors(2048), &[0xa5; 4096]).unwrap();
    let log = gate.log()[start..].to_vec();
    let first_data = log
        .iter()
        .position(is_data_write)
        .expect("the write reached the legs");
    let before = &log[..first_data];
    let last_meta = before
        .iter()
        .rposition(is_meta_write)
        .expect("the region's bit was written before its data");
    // Both legs' metadata devices got the bit.
    let metas: Vec<u64> = before
        .iter()
        .filter(|r| is_meta_write(r))
        .map(|r| r.sector.0 / META)
        .collect();
    assert!(
        metas.contains(&0) && metas.contains(&1),
        "bitmap writes: {metas:?}"
    );
    // And it was made durable before the data went out.
    assert!(
        before[last_meta..].iter().any(|r| r.op == Op::Flush),
        "no flush between the bitmap write and the data write: {log:?}"
    );

    // The region is dirty now: a second write to it goes out with no bitmap I/O.
    let start = gate.log().len();
    sync::write_at(&*r, Sectors(2056), &[0x5a; 4096]).unwrap();
    let log = gate.log()[start..].to_vec();
    assert!(log.iter().any(is_data_write));
    assert!(
        !log.iter().any(is_meta_write),
        "dirty region rewrote its bit: {log:?}"
    );
    let back = udm_testkit::dm::read(&*r, 2048, 8192).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0xa5) && back[4096..].iter().all(|&b| b == 0x5a));
}
