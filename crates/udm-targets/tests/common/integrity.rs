//! Helpers of the integrity tests against the kernel: a seeded write plan in 4 KiB blocks,
//! the same plan as `dd` commands for the refvm guest and through a udm device, and a
//! kernel table line pointed at a host image; formatting an image through a first table.

use super::{create, sel, status_fields};
use std::path::Path;
use udm_io::sync;
use udm_testkit::rng::XorShift;

/// A write plan: 24 runs of (first 4 KiB block, 1..=4 blocks) below `blocks - 8`.
pub fn plan(seed: u64, blocks: u64) -> Vec<(u64, u64)> {
    let mut rng = XorShift::mixed(seed);
    (0..24)
        .map(|_| (rng.below(blocks - 8), 1 + rng.below(4)))
        .collect()
}

/// The kernel table of `dmsetup table` with its device replaced by `img`.
pub fn with_image(line: &str, img: &Path) -> String {
    let mut f: Vec<String> = line.split_whitespace().map(String::from).collect();
    f[3] = img.display().to_string();
    f.join(" ")
}

/// Write the plan's blocks of `data` one 4 KiB block at a time, each flushed.
pub fn udm_write_plan(dev: &dyn udm_io::BlockDevice, data: &[u8], plan: &[(u64, u64)]) {
    for &(b, n) in plan {
        for k in b..b + n {
            let o = (k * 4096) as usize;
            super::write(dev, k * 8, &data[o..o + 4096]);
            sync::flush(dev).unwrap();
        }
    }
}

/// The plan as guest `dd` commands from `data.bin` (4 KiB, direct and synced writes).
pub fn kernel_write_plan(dev: &str, plan: &[(u64, u64)]) -> String {
    plan.iter()
        .map(|(b, n)| {
            format!(
                "dd if=data.bin of={dev} bs=4096 skip={b} seek={b} count={n} oflag=direct,sync conv=notrunc status=none\n"
            )
        })
        .collect()
}

/// Format `img` through a first table of 8 sectors (`integrity IMG 0 REST`) and return the
/// provided size the kernel's status reports.
pub fn format(reg: &udm_core::Registry, img: &Path, rest: &str) -> u64 {
    create(
        reg,
        "fmt",
        &format!("0 8 integrity {} 0 {rest}", img.display()),
    )
    .unwrap();
    let p: u64 = status_fields(reg, "fmt")[1].parse().unwrap();
    reg.remove(&sel("fmt"), false).unwrap();
    p
}

/// Format `img` and create device `name` over its whole provided size; returns that size.
pub fn create_formatted(reg: &udm_core::Registry, name: &str, img: &Path, rest: &str) -> u64 {
    let p = format(reg, img, rest);
    create(
        reg,
        name,
        &format!("0 {p} integrity {} 0 {rest}", img.display()),
    )
    .unwrap();
    p
}

/// The 32-byte key of the kernel integrity tests, in hex.
pub const KEY_HEX: &str = "00112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f";

/// [`KEY_HEX`] as bytes.
pub fn key_bytes() -> Vec<u8> {
    (0..32)
        .map(|i| u8::from_str_radix(&KEY_HEX[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The refvm share of a kernel integrity test: `DIR/share` holding `data.bin` (`blocks` 4 KiB
/// blocks of `XorShift::mixed(seed)`) and `key.bin` ([`key_bytes`]). Returns (DIR, the
/// share, the data).
pub fn kernel_share(seed: u64, blocks: u64) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let data = XorShift::mixed(seed).bytes((blocks * 4096) as usize);
    std::fs::write(share.join("data.bin"), &data).unwrap();
    std::fs::write(share.join("key.bin"), key_bytes()).unwrap();
    (dir, share, data)
}

/// Tag every block of integrity device `name` (written zeroes, flushed, sent home by a
/// suspend, as integritysetup's wipe leaves it), then make 40 random flushed writes of 1-8
/// sectors; the model of the `p`-sector device afterwards.
pub fn tagged_random_writes(
    reg: &udm_core::Registry,
    name: &str,
    dev: &dyn udm_io::BlockDevice,
    p: u64,
    seed: u64,
) -> Vec<u8> {
    let mut model = vec![0u8; (p * 512) as usize];
    super::write(dev, 0, &model);
    sync::flush(dev).unwrap();
    reg.suspend(&sel(name), false, false).unwrap();
    reg.resume(&sel(name)).unwrap();
    let mut rng = XorShift::mixed(seed);
    for _ in 0..40 {
        let s = rng.below(p - 8);
        let n = 512 * (1 + rng.below(8)) as usize;
        let d = rng.bytes(n);
        super::write(dev, s, &d);
        model[(s * 512) as usize..(s * 512) as usize + d.len()].copy_from_slice(&d);
    }
    sync::flush(dev).unwrap();
    model
}
