//! `verity`'s verified-block cache, in a process of its own (the cache is process-wide and
//! its budget is read once, from `UDM_VERITY_CACHE_MB`): cached reads return the verified
//! bytes even after the device changes underneath (as the page cache above a kernel
//! dm-verity device does); a block corrupted before its first read fails with EIO, is
//! counted (status `C`) and is never cached; the cache stays within its budget; reloading
//! or removing the table frees its blocks; a restarted (dead) device fails cached reads too.

mod common;
mod verity_img;
use common::*;
use std::time::{Duration, Instant};
use verity_img::*;

const BUDGET_MB: usize = 4;

fn usage() -> (usize, usize) {
    let (n, b, _) = udm_targets::verity::cache_usage();
    (n, b)
}

/// The blocks of a table that just went are freed when the last I/O holding the target ends
/// (a completion thread may still hold it for a moment after the read returned).
fn wait_until_empty() {
    let t0 = Instant::now();
    while usage() != (0, 0) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "cache kept {:?}",
            usage()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn block(dev: &dyn udm_io::BlockDevice, bs: u32, b: u64) -> Result<Vec<u8>, udm_io::IoError> {
    udm_io::sync::read_at(dev, udm_io::Sectors(b * bs as u64 / 512), bs as usize)
        .map(|v| v.into_vec())
}

#[test]
fn verified_block_cache() {
    // SAFETY: the only test of this binary sets the variable before any thread starts.
    unsafe { std::env::set_var("UDM_VERITY_CACHE_MB", BUDGET_MB.to_string()) };
    assert_eq!(udm_targets::verity::cache_usage().2, BUDGET_MB << 20);
    let d = tempfile::tempdir().unwrap();
    let reg = registry();

    // A small image (64 blocks of 512 bytes) that fits: cached reads return the same bytes.
    let sdir = d.path().join("small");
    std::fs::create_dir(&sdir).unwrap();
    let img = make(&sdir, 512, 64, &[], None);
    flip(&img.data, 50 * 512 + 7, 0x20); // corrupt before any read
    create_ro(&reg, "v", &img.table("")).unwrap();
    let (dev, g) = open(&reg, "v");
    for round in 0..3 {
        for b in 0..32u64 {
            let got = block(dev.as_ref(), 512, b).unwrap();
            assert!(
                got == img.content[(b * 512) as usize..][..512],
                "round {round} block {b}"
            );
        }
        // A multi-block read served whole from the cache.
        let got = read(dev.as_ref(), 0, 32 * 512);
        assert!(got == img.content[..32 * 512], "round {round}");
    }
    assert!(usage().0 >= 32, "{:?}", usage());
    assert_eq!(info(&reg, "v"), "V");
    // Blocks 0..32 were verified and cached: changed on disk now, they still read as
    // verified, and nothing is reported. Block 40 was never read: its corruption is found.
    flip(&img.data, 5 * 512 + 100, 0x01);
    flip(&img.data, 40 * 512, 0x80);
    assert!(block(dev.as_ref(), 512, 5).unwrap() == img.content[5 * 512..6 * 512]);
    assert!(read(dev.as_ref(), 0, 32 * 512) == img.content[..32 * 512]);
    assert_eq!(info(&reg, "v"), "V");
    assert_eq!(block(dev.as_ref(), 512, 40), Err(udm_io::IoError::Io));
    assert_eq!(block(dev.as_ref(), 512, 50), Err(udm_io::IoError::Io));
    assert_eq!(info(&reg, "v"), "C");
    // A failed block is never cached: it fails again, alone or inside a larger read.
    assert_eq!(block(dev.as_ref(), 512, 40), Err(udm_io::IoError::Io));
    assert!(udm_io::sync::read_at(dev.as_ref(), udm_io::Sectors(32), 16 * 512).is_err());
    // A block of the second half read for the first time is fine and then cached.
    assert!(block(dev.as_ref(), 512, 60).unwrap() == img.content[60 * 512..61 * 512]);

    // Reload (the same table): the old table's blocks go; block 5's corruption is now seen.
    drop(g);
    drop(dev);
    reg.load(&sel("v"), &lines(&img.table("")), true).unwrap();
    reg.resume(&sel("v")).unwrap();
    wait_until_empty();
    let (dev, g) = open(&reg, "v");
    assert_eq!(block(dev.as_ref(), 512, 5), Err(udm_io::IoError::Io));
    assert!(block(dev.as_ref(), 512, 6).unwrap() == img.content[6 * 512..7 * 512]);
    assert!(usage().0 > 0);

    // restart_on_corruption: once the device is dead, cached blocks fail too.
    create_ro(&reg, "rs", &img.table("restart_on_corruption")).unwrap();
    let (rs, g2) = open(&reg, "rs");
    assert!(block(rs.as_ref(), 512, 0).unwrap() == img.content[..512]);
    assert!(block(rs.as_ref(), 512, 0).unwrap() == img.content[..512]);
    assert_eq!(block(rs.as_ref(), 512, 40), Err(udm_io::IoError::Io));
    assert_eq!(block(rs.as_ref(), 512, 0), Err(udm_io::IoError::Io));
    drop((rs, g2, dev, g));
    reg.remove(&sel("rs"), false).unwrap();
    reg.remove(&sel("v"), false).unwrap();
    wait_until_empty();

    // A larger image (16 MiB of 4 KiB blocks) than the budget: every read is right, the
    // cache never holds more than its budget, and removing the device empties it.
    let bdir = d.path().join("big");
    std::fs::create_dir(&bdir).unwrap();
    let big = make(&bdir, 4096, 4096, &[], None);
    create_ro(&reg, "b", &big.table("")).unwrap();
    let (dev, g) = open(&reg, "b");
    for _ in 0..2 {
        for chunk in 0..64u64 {
            let off = chunk * 64 * 4096;
            let got = read(dev.as_ref(), off / 512, 64 * 4096);
            assert!(
                got == big.content[off as usize..][..64 * 4096],
                "chunk {chunk}"
            );
            assert!(usage().1 <= BUDGET_MB << 20, "{:?}", usage());
        }
    }
    assert!(usage().1 > (BUDGET_MB << 20) / 4, "{:?}", usage());
    drop((dev, g));
    reg.remove(&sel("b"), false).unwrap();
    wait_until_empty();
}
