//! `with_blocking_submit`: on a thread marked as one that may block, the file device does
//! writes up to 128 KiB with any flags or alignment synchronously (completed before `submit` returns,
//! on the submitting thread); unmarked threads, and a device with the inline path turned
//! off, still hand them to the I/O pool. Both ways write the same bytes and fail the same.

mod common;

use std::sync::mpsc;
use std::thread::{self, ThreadId};
use udm_io::{
    blocking_submit_allowed, with_blocking_submit, Bio, BioFlags, BlockDevice, FileDevice, IoBuf,
    IoError, Sectors,
};

const SIZE: usize = 4 << 20;

fn device(read_only: bool) -> (tempfile::TempDir, std::path::PathBuf, FileDevice) {
    common::zero_file_device(SIZE, read_only)
}

/// How one submitted bio ended: its result, whether it had completed by the time `submit`
/// returned, and the thread that completed it.
struct Ended {
    res: Result<(), IoError>,
    before_return: bool,
    on: ThreadId,
}

fn submit(dev: &FileDevice, make: impl FnOnce(udm_io::Completion) -> Bio) -> Ended {
    let (tx, rx) = mpsc::channel();
    dev.submit(make(Box::new(move |res, _buf| {
        tx.send((res, thread::current().id())).unwrap();
    })));
    let early = rx.try_recv().ok();
    let before_return = early.is_some();
    let (res, on) = early.unwrap_or_else(|| rx.recv().unwrap());
    Ended {
        res,
        before_return,
        on,
    }
}

fn write(dev: &FileDevice, sector: u64, data: &[u8], flags: BioFlags) -> Ended {
    submit(dev, |d| {
        Bio::write(Sectors(sector), IoBuf::from_slice(data), d).with_flags(flags)
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn marked_threads_write_synchronously_whatever_the_flags_or_alignment() {
    let (_d, path, dev) = device(false);
    let me = thread::current().id();
    let mut model = vec![0u8; SIZE];
    let cases: [(u64, usize, BioFlags); 4] = [
        // 128 KiB: the largest done synchronously.
        (2048, 128 << 10, BioFlags::NONE),
        (8, 4096, BioFlags::FUA),
        // Not page aligned: the timed inline path would refuse it.
        (3, 1536, BioFlags::NONE),
        (4096, 64 << 10, BioFlags::PREFLUSH.with(BioFlags::FUA)),
    ];
    with_blocking_submit(|| {
        for (i, &(sector, len, flags)) in cases.iter().enumerate() {
            let data = pattern(len, i as u8 + 1);
            let e = write(&dev, sector, &data, flags);
            assert_eq!(e.res, Ok(()), "write {i}");
            assert!(e.before_return, "write {i} not done inside submit");
            assert_eq!(e.on, me, "write {i} completed on another thread");
            let off = sector as usize * 512;
            model[off..off + len].copy_from_slice(&data);
        }
    });
    assert!(std::fs::read(&path).unwrap() == model);
}

#[test]
fn marked_threads_flush_synchronously_unmarked_ones_use_the_pool() {
    let (_d, _path, dev) = device(false);
    let me = thread::current().id();
    let e = with_blocking_submit(|| submit(&dev, Bio::flush));
    assert_eq!(e.res, Ok(()));
    assert!(
        e.before_return,
        "a flush on a marked thread not done inside submit"
    );
    assert_eq!(
        e.on, me,
        "a flush on a marked thread completed on another thread"
    );
    let e = submit(&dev, Bio::flush);
    assert_eq!(e.res, Ok(()));
    assert_ne!(e.on, me, "a flush ran on an unmarked submitter");
}

#[test]
fn unmarked_threads_and_pool_only_devices_use_the_pool() {
    let (_d, path, dev) = device(false);
    let me = thread::current().id();
    let big = pattern(1 << 20, 9);
    let e = write(&dev, 0, &big, BioFlags::NONE);
    assert_eq!(e.res, Ok(()));
    assert_ne!(e.on, me, "a 1 MiB write ran on an unmarked submitter");
    let fua = pattern(4096, 10);
    let e = write(&dev, 4096, &fua, BioFlags::FUA);
    assert_eq!(e.res, Ok(()));
    assert_ne!(e.on, me, "a FUA write ran on an unmarked submitter");
    // Over 128 KiB: the pool even on a marked thread.
    let e = with_blocking_submit(|| write(&dev, 2048, &big, BioFlags::NONE));
    assert_eq!(e.res, Ok(()));
    assert_ne!(e.on, me, "a 1 MiB write ran on a marked submitter");
    // `set_inline(false)` wins over the mark.
    dev.set_inline(false);
    let small = pattern(4096, 11);
    let e = with_blocking_submit(|| write(&dev, 6000, &small, BioFlags::NONE));
    assert_eq!(e.res, Ok(()));
    assert_ne!(e.on, me, "the mark bypassed set_inline(false)");
    let file = std::fs::read(&path).unwrap();
    assert!(file[..1 << 20] == big[..]);
    assert!(file[1 << 20..2 << 20] == big[..]);
    assert!(file[4096 * 512..4096 * 512 + 4096] == fua[..]);
    assert!(file[6000 * 512..6000 * 512 + 4096] == small[..]);
}

#[test]
fn synchronous_writes_fail_like_pool_writes() {
    let (_d, _p, dev) = device(false);
    let end = (SIZE / 512) as u64;
    let data = pattern(8192, 3);
    // Crossing the end of the device: EIO both ways, nothing written past it.
    let fast = with_blocking_submit(|| write(&dev, end - 8, &data, BioFlags::NONE));
    assert!(fast.before_return);
    let slow = write(&dev, end - 8, &data, BioFlags::FUA);
    assert_eq!(fast.res, Err(IoError::Io));
    assert_eq!(slow.res, Err(IoError::Io));
    assert_eq!(dev.size(), Sectors(end));
    // A read-only device refuses both ways.
    let (_d2, path2, ro) = device(true);
    let fast = with_blocking_submit(|| write(&ro, 0, &data, BioFlags::NONE));
    let slow = write(&ro, 0, &data, BioFlags::NONE);
    assert_eq!(fast.res, Err(IoError::ReadOnly));
    assert_eq!(slow.res, Err(IoError::ReadOnly));
    assert!(std::fs::read(&path2).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn the_mark_nests_and_is_restored_after_a_panic() {
    assert!(!blocking_submit_allowed());
    with_blocking_submit(|| {
        assert!(blocking_submit_allowed());
        with_blocking_submit(|| assert!(blocking_submit_allowed()));
        // Still marked after the inner scope ends.
        assert!(blocking_submit_allowed());
    });
    assert!(!blocking_submit_allowed());
    let r = std::panic::catch_unwind(|| with_blocking_submit(|| panic!("inside")));
    assert!(r.is_err());
    assert!(!blocking_submit_allowed(), "the mark outlived a panic");
    // Other threads never see this thread's mark.
    with_blocking_submit(|| {
        let other = thread::spawn(blocking_submit_allowed).join().unwrap();
        assert!(!other);
    });
}
