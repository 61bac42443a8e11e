//! Differential test against the kernel's dm-thin (refvm), both directions on one pool:
//! 1. the kernel formats the metadata, writes a thin device and a snapshot of it (breaking
//!    sharing); udm opens that metadata, finds its reference counts consistent, and each
//!    mapping points at the data block holding what the kernel wrote there;
//! 2. udm then deletes the snapshot, adds a device with mappings of its own and commits;
//!    the kernel activates the pool on udm's metadata, reports the used data blocks udm
//!    counted, reads udm's device mappings back (the data blocks udm chose) and writes a
//!    new device; udm opens the result consistent again.
//!
//! Skips without refvm, fails then under `UDM_REQUIRE_TOOLS=1`.

mod common;

use common::mappings;
use std::path::Path;
use std::sync::Arc;
use udm_pdata::check::check_thin;
use udm_pdata::io::FileIo;
use udm_pdata::thin::ThinMetadata;
use udm_testkit::rng::XorShift;

const BLOCK: usize = 64 << 10; // data block: 128 sectors
const DATA_BLOCKS: u64 = 1024;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = XorShift::new(seed);
    (0..len).map(|_| (x.next_u64() >> 24) as u8).collect()
}

fn data_block(data: &[u8], b: u64) -> &[u8] {
    &data[b as usize * BLOCK..(b as usize + 1) * BLOCK]
}

fn vm(run: &Path, disks: &[&Path], share: &Path, script: &str) -> String {
    let (out, err, code) = udm_testkit::refvm_run(run, disks, Some(share), script);
    assert_eq!(
        code, 0,
        "refvm script failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

#[test]
fn kernel_thin_metadata_round_trip() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path();
    let meta = udm_testkit::image(share, "meta.img", 16 << 20);
    let data = udm_testkit::image(share, "data.img", DATA_BLOCKS * BLOCK as u64);
    // Thin 1 gets blocks 0..40 from pattern A; snapshot 2 then gets blocks 10..20 from B.
    std::fs::write(share.join("a.bin"), pattern(0xa, 40 * BLOCK)).unwrap();
    std::fs::write(share.join("b.bin"), pattern(0xb, 10 * BLOCK)).unwrap();
    let pool = format!("0 {} thin-pool /dev/vda /dev/vdb 128 0", DATA_BLOCKS * 128);
    let script = format!(
        r#"set -e
modprobe dm-thin-pool
dmsetup create pool --table "{pool}"
dmsetup message pool 0 "create_thin 1"
dmsetup create thin1 --table "0 8192 thin /dev/mapper/pool 1"
dd if=a.bin of=/dev/mapper/thin1 bs=64k oflag=direct status=none
dmsetup suspend thin1
dmsetup message pool 0 "create_snap 2 1"
dmsetup resume thin1
dmsetup create thin2 --table "0 8192 thin /dev/mapper/pool 2"
dd if=b.bin of=/dev/mapper/thin2 bs=64k seek=10 oflag=direct status=none
dmsetup remove thin2
dmsetup remove thin1
dmsetup remove pool
"#
    );
    vm(&run, &[&meta, &data], share, &script);

    // 1. kernel → udm.
    let io = Arc::new(FileIo::open(&meta).unwrap());
    let report = check_thin(io.clone()).unwrap();
    assert_eq!((report.devices, report.data_used), (2, 50));
    let mut md = ThinMetadata::open(io.clone()).unwrap();
    let disk = std::fs::read(&data).unwrap();
    let (a, b) = (pattern(0xa, 40 * BLOCK), pattern(0xb, 10 * BLOCK));
    let m1 = mappings(&mut md, 1);
    let m2 = mappings(&mut md, 2);
    assert_eq!(m1.len(), 40);
    assert_eq!(m2.len(), 40);
    for v in 0..40u64 {
        let want = &a[v as usize * BLOCK..(v as usize + 1) * BLOCK];
        assert!(data_block(&disk, m1[&v]) == want, "thin 1 block {v}");
        let want2 = if (10..20).contains(&v) {
            &b[(v as usize - 10) * BLOCK..(v as usize - 9) * BLOCK]
        } else {
            want
        };
        assert!(data_block(&disk, m2[&v]) == want2, "thin 2 block {v}");
        assert_eq!(
            m1[&v] == m2[&v],
            !(10..20).contains(&v),
            "sharing of block {v}"
        );
    }

    // 2. udm → kernel: drop the snapshot, add device 7 mapping 0..5 to data blocks whose
    // contents we write here, so the kernel reading device 7 proves it used udm's tree.
    md.delete(2).unwrap();
    let mut disk = disk;
    let c = pattern(0xc, 5 * BLOCK);
    md.create_thin(7).unwrap();
    for v in 0..5u64 {
        let blk = md.alloc_data_block().unwrap();
        md.insert(7, v, blk).unwrap();
        disk[blk as usize * BLOCK..(blk as usize + 1) * BLOCK]
            .copy_from_slice(&c[v as usize * BLOCK..(v as usize + 1) * BLOCK]);
    }
    md.set_transaction_id(5);
    md.commit().unwrap();
    drop(md);
    std::fs::write(&data, &disk).unwrap();
    std::fs::write(share.join("c.bin"), &c).unwrap();
    let used = check_thin(io.clone()).unwrap().data_used;
    assert_eq!(used, 45);
    let script = format!(
        r#"set -e
modprobe dm-thin-pool
dmsetup create pool --table "{pool}"
dmsetup status pool
dmsetup create thin7 --table "0 8192 thin /dev/mapper/pool 7"
dd if=/dev/mapper/thin7 of=got7.bin bs=64k count=5 iflag=direct status=none
cmp got7.bin c.bin && echo SAME7
dmsetup message pool 0 "create_thin 8"
dmsetup create thin8 --table "0 8192 thin /dev/mapper/pool 8"
dd if=a.bin of=/dev/mapper/thin8 bs=64k count=3 oflag=direct status=none
dmsetup remove thin8
dmsetup remove thin7
dmsetup remove pool
"#
    );
    let out = vm(&run, &[&meta, &data], share, &script);
    assert!(
        out.contains("SAME7"),
        "kernel read udm's mappings wrongly:\n{out}"
    );
    // status: <transaction id> <used meta>/<total meta> <used data>/<total data> ...
    let status = out
        .lines()
        .find(|l| l.contains("thin-pool"))
        .expect("pool status");
    let f: Vec<&str> = status.split_whitespace().collect();
    assert_eq!(f[3], "5", "transaction id: {status}");
    assert_eq!(f[5], format!("{used}/{DATA_BLOCKS}"), "{status}");

    let report = check_thin(io.clone()).unwrap();
    assert_eq!((report.devices, report.data_used), (3, 48));
    let mut md = ThinMetadata::open(io).unwrap();
    assert_eq!(mappings(&mut md, 8).len(), 3);
    assert_eq!(mappings(&mut md, 7).len(), 5);
}
