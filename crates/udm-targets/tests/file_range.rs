//! `BlockDevice::read_file_range` through mapped devices (the NBD server's zero-copy reads):
//! linear passes it down to the file with its offset, stacked or not; a range crossing
//! targets, a target that transforms data (crypt), or a suspended device says no, so the
//! caller falls back to a bio (which a suspended device holds); the call counts as a read.
//! `BlockDevice::read_mapped` (crypt's reads from the mapped page cache) follows the same rules.

mod common;
use common::*;
use std::os::unix::fs::FileExt;
use udm_io::{BlockDevice, Sectors};

/// `d`: 1024 sectors of linear over a file from its sector 100, then 1024 of crypt over it
/// from 0; `up`: linear over `d` from 256. Returns the directory, the file's bytes and the
/// registry.
fn linear_then_crypt() -> (tempfile::TempDir, Vec<u8>, udm_core::Registry) {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let data: Vec<u8> = (0..4096 * 512u32).map(|i| (i / 512 % 251) as u8).collect();
    std::fs::write(&a, &data).unwrap();
    let reg = registry();
    let key = "0".repeat(64);
    let table = format!(
        "0 1024 linear {a} 100\n1024 1024 crypt aes-xts-plain64 {key} 0 {a} 0\n",
        a = a.display()
    );
    create(&reg, "d", &table).unwrap();
    create(&reg, "up", "0 512 linear /dev/mapper/d 256").unwrap();
    (dir, data, reg)
}

/// Read through `read_file_range` with pread, as the NBD server would with splice.
fn via_file(dev: &dyn BlockDevice, sector: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    let r = dev.read_file_range(Sectors(sector), Sectors(len as u64 / 512), &mut |f, off| {
        f.read_at(&mut out, off)
    })?;
    assert_eq!(r.expect("pread"), len);
    Some(out)
}

/// The rules both calls follow, checked through `via`: linear gives the file at the
/// target's offset (the bytes a bio reads too), stacked linear adds the offsets up; across
/// targets, inside crypt or past the end: no; the call counts as a read of the device
/// (diskstats); suspended: no (the caller's bio is then held until resume), and yes again
/// after the resume. Returns what `linear_then_crypt` made.
fn follows_the_table(
    via: fn(&dyn BlockDevice, u64, usize) -> Option<Vec<u8>>,
) -> (tempfile::TempDir, Vec<u8>, udm_core::Registry) {
    let (dir, data, reg) = linear_then_crypt();
    let (dev, _g) = open(&reg, "d");
    let (up, _g2) = open(&reg, "up");
    let got = via(dev.as_ref(), 8, 64 << 10).expect("linear over a cached file");
    assert!(got == data[(108 * 512)..(108 * 512 + (64 << 10))]);
    assert!(got == read(dev.as_ref(), 8, 64 << 10));
    let got = via(up.as_ref(), 0, 4096).expect("stacked linear");
    assert!(got == data[(356 * 512)..(356 * 512 + 4096)]);
    assert!(via(dev.as_ref(), 1000, 64 << 10).is_none());
    assert!(via(dev.as_ref(), 1100, 4096).is_none());
    assert!(via(dev.as_ref(), 2040, 8192).is_none());
    let st = reg
        .message(&sel("d"), 0, &["@diskstats".to_string()])
        .unwrap()
        .unwrap_or_default();
    let f: Vec<u64> = st.split_whitespace().map(|w| w.parse().unwrap()).collect();
    assert!(f[0] >= 3 && f[2] >= 128 + 8 + 128, "{st}");
    reg.suspend(&sel("d"), false, false).unwrap();
    assert!(via(dev.as_ref(), 8, 4096).is_none());
    assert!(via(up.as_ref(), 0, 4096).is_none());
    reg.resume(&sel("d")).unwrap();
    assert!(via(dev.as_ref(), 8, 4096).is_some());
    (dir, data, reg)
}

#[test]
fn file_ranges_follow_the_table() {
    follows_the_table(via_file);
}

/// Read through `read_mapped` (page-cache bytes in memory, as crypt reads its file).
fn via_map(dev: &dyn BlockDevice, sector: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = None;
    dev.read_mapped(Sectors(sector), Sectors(len as u64 / 512), &mut |b| {
        out = Some(b.to_vec())
    })
    .then(|| out.expect("read_mapped said yes without calling the reader"))
}

/// `BlockDevice::read_mapped` follows the table as `read_file_range` does, and a crypt
/// device's large reads, which use it below, decrypt to the same bytes as its small ones,
/// which do not.
#[test]
fn mapped_ranges_follow_the_table() {
    let (_dir, data, reg) = follows_the_table(via_map);
    let (dev, _g) = open(&reg, "d");
    // The crypt part: one 512 KiB read (decrypted from the mapped file) against 4 KiB reads
    // (read into their buffer, decrypted there), over the same ciphertext.
    let big = read(dev.as_ref(), 1024, 512 << 10);
    let mut small = Vec::new();
    for s in (1024..2048).step_by(8) {
        small.extend(read(dev.as_ref(), s, 4096));
    }
    assert!(big == small, "crypt: mapped and buffered reads differ");
    assert!(
        big != data[..512 << 10],
        "crypt read returned the ciphertext"
    );
}
