//! `udm thin shrink` end to end: a pool written through the thin target (a device, a
//! snapshot that broke sharing, discards that left holes low in the data device) is
//! shrunk by the binary; the real `thin_check` passes, the real `thin_dump` maps nothing
//! past the new end and keeps shared blocks shared, the data file is truncated, and the
//! thin devices read back what was written, through a pool of the new size. A shrink the
//! mapped blocks do not fit into is refused with both files left as they were.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use udm_io::Sectors;
use udm_testkit::dm::{create, message, open, read, reg, sel, write};
use udm_testkit::require_tool;
use udm_testkit::thin::{thin_check, thin_dump, PoolFiles};

const BS: u64 = 128;
const BLOCK: usize = (BS * 512) as usize;
const DATA_BLOCKS: u64 = 64;
const THIN_BLOCKS: u64 = 64;

fn fill(dev: u64, v: u64) -> Vec<u8> {
    udm_testkit::rng::pseudo(BLOCK, (dev << 32) | v)
}

fn thin_table(id: u64) -> String {
    format!("0 {} thin /dev/mapper/pool {id}", THIN_BLOCKS * BS)
}

fn shrink(files: &PoolFiles, nr: u64) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_udm"))
        .args(["thin", "shrink", "--metadata"])
        .arg(&files.meta)
        .arg("--data")
        .arg(&files.data)
        .args(["--nr-blocks", &nr.to_string()])
        .output()
        .unwrap()
}

/// Every block of each device, as read through the thin target.
fn contents(files: &PoolFiles, data_blocks: u64) -> BTreeMap<u64, Vec<Vec<u8>>> {
    let reg = reg();
    let table = format!(
        "0 {} thin-pool {} {} {BS} 0",
        data_blocks * BS,
        files.meta.display(),
        files.data.display()
    );
    create(&reg, "pool", &table).unwrap();
    let mut out = BTreeMap::new();
    for id in 0..2u64 {
        create(&reg, &format!("t{id}"), &thin_table(id)).unwrap();
        let (dev, _g) = open(&reg, &format!("t{id}"));
        let blocks = (0..THIN_BLOCKS)
            .map(|v| read(dev.as_ref(), v * BS, BLOCK).unwrap())
            .collect();
        out.insert(id, blocks);
    }
    out
}

fn digest(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn shrink_moves_blocks_down_and_refuses_what_does_not_fit() {
    if !["thin_check", "thin_dump"].iter().all(|t| require_tool(t)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, DATA_BLOCKS);
    {
        let reg = reg();
        create(&reg, "pool", &files.table("0")).unwrap();
        message(&reg, "pool", "create_thin 0").unwrap();
        create(&reg, "t0", &thin_table(0)).unwrap();
        let (t0, _g0) = open(&reg, "t0");
        // Device 0 maps virtual 0..48 onto data 0..48.
        for v in 0..48 {
            write(t0.as_ref(), v * BS, &fill(0, v)).unwrap();
        }
        reg.suspend(&sel("t0"), false, false).unwrap();
        message(&reg, "pool", "create_snap 1 0").unwrap();
        reg.resume(&sel("t0")).unwrap();
        create(&reg, "t1", &thin_table(1)).unwrap();
        let (t1, _g1) = open(&reg, "t1");
        // The snapshot breaks sharing of virtual 0..8 (data 48..56).
        for v in 0..8 {
            write(t1.as_ref(), v * BS, &fill(1, v)).unwrap();
        }
        // Device 0 lets go of virtual 0..30: data 0..8 become free, 8..30 stay the
        // snapshot's.
        udm_io::sync::discard(t0.as_ref(), Sectors(0), Sectors(30 * BS)).unwrap();
        udm_io::sync::flush(t0.as_ref()).unwrap();
        udm_io::sync::flush(t1.as_ref()).unwrap();
    }
    let before = contents(&files, DATA_BLOCKS);
    let (_, dump_before) = thin_dump(&files.meta);
    assert!(dump_before
        .values()
        .flat_map(|m| m.values())
        .any(|&b| b >= 50));

    // 48 blocks are mapped: 40 cannot hold them.
    let (meta0, data0) = (digest(&files.meta), digest(&files.data));
    let o = shrink(&files, 40);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot shrink the data device to 40 blocks") && err.contains("only"),
        "{err}"
    );
    assert!(digest(&files.meta) == meta0 && digest(&files.data) == data0);

    let o = shrink(&files, 50);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "moved 6 blocks; data device shrunk from 64 to 50 blocks (6400 sectors)\n"
    );
    thin_check(&files.meta).unwrap();
    let (xml, dump_after) = thin_dump(&files.meta);
    assert!(xml.contains("nr_data_blocks=\"50\""), "{xml}");
    assert!(dump_after
        .values()
        .flat_map(|m| m.values())
        .all(|&b| b < 50));
    // Same virtual blocks mapped, and blocks shared before are shared after.
    for (dev, m) in &dump_before {
        assert_eq!(
            m.keys().collect::<Vec<_>>(),
            dump_after[dev].keys().collect::<Vec<_>>()
        );
        for (v, b) in m {
            let shared_before = dump_before[&(1 - dev)].get(v) == Some(b);
            let shared_after = dump_after[&(1 - dev)].get(v) == Some(&dump_after[dev][v]);
            assert_eq!(shared_before, shared_after, "dev {dev} block {v}");
        }
    }
    assert_eq!(
        std::fs::metadata(&files.data).unwrap().len(),
        50 * BLOCK as u64
    );
    let after = contents(&files, 50);
    assert!(before == after, "contents changed by the shrink");
    assert_eq!(after[&1][3], fill(1, 3));
    assert_eq!(after[&0][40], fill(0, 40));
    assert_eq!(after[&0][3], vec![0; BLOCK]);
}
