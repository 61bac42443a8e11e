//! `FileDevice::read_mapped` (page-cache bytes mapped in memory, for crypt's reads): the
//! bytes are the file's, at any sector offset and length, up to a last sector that ends in
//! the middle of a page; ranges past the end, a device with its inline paths off, and pages
//! the file no longer has (truncated under the device) are refused, never faulted in.

mod common;

use udm_io::sync::{read_at, write_at};
use udm_io::{BlockDevice, FileDevice, Sectors};

/// 4 MiB and one sector: the last page is partly past the end of the file.
const SIZE: usize = (4 << 20) + 512;

/// `Some(bytes)` when the device handed the range out mapped.
fn mapped(dev: &FileDevice, sector: u64, sectors: u64) -> Option<Vec<u8>> {
    let mut got = None;
    dev.read_mapped(Sectors(sector), Sectors(sectors), &mut |b| {
        got = Some(b.to_vec())
    })
    .then(|| got.expect("read_mapped said yes without calling the reader"))
}

#[test]
fn mapped_reads_are_the_files_bytes_and_refuse_what_is_not_there() {
    let (_dir, path, dev) = common::zero_file_device(SIZE, false);
    let data = udm_testkit::rng::noise(SIZE, 0x9e37);
    // Written through the device: its pages are in the page cache now.
    write_at(&dev, Sectors(0), &data).unwrap();
    let total = (SIZE / 512) as u64;
    for (at, len) in [
        (0, 1),
        (1, 3),
        (7, 9),
        (0, 2048),
        (123, 2048),
        (total - 1, 1),
        (total - 9, 9),
        (0, total),
    ] {
        let got = mapped(&dev, at, len).unwrap_or_else(|| panic!("{len} sectors at {at} refused"));
        let want = &data[at as usize * 512..][..len as usize * 512];
        assert!(got == want, "{len} sectors at {at}");
        assert!(
            read_at(&dev, Sectors(at), len as usize * 512)
                .unwrap()
                .as_slice()
                == want
        );
    }
    assert!(mapped(&dev, total - 1, 2).is_none(), "past the end");
    assert!(mapped(&dev, total, 1).is_none(), "at the end");

    let pool_only = FileDevice::open(&path, false).unwrap();
    pool_only.set_inline(false);
    assert!(mapped(&pool_only, 0, 8).is_none(), "inline paths off");

    // Cut the file under the device: the cut pages are gone from the page cache, and a
    // mapped access there would fault (SIGBUS); the device must say no instead.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(2 << 20).unwrap();
    let half = (2 << 20) / 512;
    assert!(mapped(&dev, half + 8, 8).is_none(), "range past the cut");
    assert!(mapped(&dev, half - 8, 16).is_none(), "range across the cut");
    assert_eq!(mapped(&dev, 0, 8).as_deref(), Some(&data[..4096]));
    // Bios still read there: zeroes where the file ends.
    let r = read_at(&dev, Sectors(half + 8), 4096).unwrap();
    assert!(r.as_slice().iter().all(|&b| b == 0));
}
