//! FUA writes and write-back hints on a file device: a FUA write (RWF_DSYNC, only its own
//! range) lands exactly like a plain write, on the pool and on a blocking-submit thread,
//! and fails the same way past the end or on a read-only file; `start_writeback` changes no
//! byte and is harmless anywhere, even out of range.

mod common;

use udm_io::Sectors;
use udm_io::{sync, with_blocking_submit, Bio, BioFlags, BlockDevice, FileDevice, IoBuf, IoError};

const SIZE: usize = 1 << 20;

fn device(read_only: bool) -> (tempfile::TempDir, std::path::PathBuf, FileDevice) {
    common::zero_file_device(SIZE, read_only)
}

fn fua_write(dev: &FileDevice, sector: u64, data: &[u8]) -> Result<(), IoError> {
    sync::submit_wait(dev, |d| {
        Bio::write(Sectors(sector), IoBuf::from_slice(data), d).with_flags(BioFlags::FUA)
    })
    .0
}

#[test]
fn fua_writes_land_like_plain_writes_on_every_path() {
    let (_d, path, dev) = device(false);
    let a: Vec<u8> = (0..12288u32).map(|i| (i * 7 + 1) as u8).collect();
    fua_write(&dev, 3, &a).unwrap();
    let b = vec![0xc3u8; 512];
    with_blocking_submit(|| fua_write(&dev, 100, &b)).unwrap();
    // A plain write elsewhere, not flushed, is still there too.
    sync::write_at(&dev, Sectors(1000), &[0x77; 4096]).unwrap();
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[3 * 512..3 * 512 + a.len()], &a[..]);
    assert_eq!(&file[100 * 512..101 * 512], &b[..]);
    assert_eq!(&file[1000 * 512..1000 * 512 + 4096], &[0x77; 4096][..]);
    assert!(file[..3 * 512].iter().all(|&x| x == 0));
    assert_eq!(
        sync::read_at(&dev, Sectors(3), a.len()).unwrap().as_slice(),
        &a[..]
    );
}

#[test]
fn fua_writes_fail_like_plain_writes() {
    let (_d, path, dev) = device(false);
    let end = (SIZE / 512) as u64;
    assert_eq!(fua_write(&dev, end - 1, &[1; 1024]), Err(IoError::Io));
    let (_d2, path2, ro) = device(true);
    assert_eq!(fua_write(&ro, 0, &[1; 512]), Err(IoError::ReadOnly));
    assert!(std::fs::read(&path).unwrap().iter().all(|&x| x == 0));
    assert!(std::fs::read(&path2).unwrap().iter().all(|&x| x == 0));
}

#[test]
fn start_writeback_changes_nothing() {
    let (_d, path, dev) = device(false);
    sync::write_at(&dev, Sectors(8), &[0x5a; 8192]).unwrap();
    dev.start_writeback(Sectors(8), Sectors(16));
    dev.start_writeback(Sectors(0), Sectors(u64::MAX));
    dev.start_writeback(Sectors(u64::MAX), Sectors(8));
    sync::flush(&dev).unwrap();
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[4096..4096 + 8192], &[0x5a; 8192][..]);
    assert_eq!(file.len(), SIZE);
    let (_d2, _p2, ro) = device(true);
    ro.start_writeback(Sectors(0), Sectors(8));
}
