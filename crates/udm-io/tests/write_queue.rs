//! A file's pool writes go through its write queue (at most a few pool threads write one
//! file; the rest wait in order of arrival): every queued write lands and completes once,
//! overlapping writes leave the last one's bytes (queued together: with the default single
//! writer per file; one after another's completion: always), a flush after them
//! makes them all durable, a completion may queue more writes to the same file (no
//! deadlock), errors are per write, and a completion that panics does not cost the file its
//! writer.

mod common;

use std::sync::mpsc;
use udm_io::sync::flush;
use udm_io::{Bio, BlockDevice, FileDevice, IoBuf, IoError, Sectors};

const SIZE: usize = 16 << 20;
/// Longer than the longest write done inline, so every write here is a pool write.
const BIG: usize = 256 << 10;

fn device(read_only: bool) -> (tempfile::TempDir, std::path::PathBuf, FileDevice) {
    common::zero_file_device(SIZE, read_only)
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) as u8)
        .collect()
}

type Results = mpsc::Receiver<(usize, Result<(), IoError>)>;

/// Submit every `(sector, data)` write without waiting; results arrive tagged with the index.
fn submit_all(dev: &FileDevice, writes: &[(u64, Vec<u8>)]) -> Results {
    let (tx, rx) = mpsc::channel();
    for (i, (sector, data)) in writes.iter().enumerate() {
        let tx = tx.clone();
        dev.submit(Bio::write(
            Sectors(*sector),
            IoBuf::from_slice(data),
            Box::new(move |r, _| tx.send((i, r)).unwrap()),
        ));
    }
    rx
}

/// Wait for `n` results; each index exactly once.
fn results(rx: &Results, n: usize) -> Vec<Result<(), IoError>> {
    let mut out: Vec<Option<Result<(), IoError>>> = vec![None; n];
    for _ in 0..n {
        let (i, r) = rx.recv().unwrap();
        assert!(out[i].replace(r).is_none(), "write {i} completed twice");
    }
    out.into_iter().map(Option::unwrap).collect()
}

#[test]
fn queued_writes_all_land_and_a_flush_after_them_succeeds() {
    let (_d, path, dev) = device(false);
    let mut model = vec![0u8; SIZE];
    let writes: Vec<(u64, Vec<u8>)> = (0..48)
        .map(|i| {
            // Scattered, some sharing pages with their neighbours' ends (odd sectors).
            let at = (i * 331 * 1024 + (i % 3) * 512) % (SIZE - BIG);
            (at as u64 / 512, pattern(BIG - (i % 2) * 512, i as u32))
        })
        .collect();
    // Later writes that overlap earlier ones are only compared where nothing overlaps:
    // queued at once, two writers may run two of them side by side.
    let rx = submit_all(&dev, &writes);
    assert!(results(&rx, writes.len()).iter().all(Result::is_ok));
    for (sector, data) in &writes {
        let at = *sector as usize * 512;
        model[at..at + data.len()].copy_from_slice(data);
    }
    flush(&dev).unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    let mut owners = vec![usize::MAX; SIZE];
    let mut overlapped = vec![false; SIZE];
    for (i, (sector, data)) in writes.iter().enumerate() {
        let at = *sector as usize * 512;
        for b in at..at + data.len() {
            overlapped[b] |= owners[b] != usize::MAX;
            owners[b] = i;
        }
    }
    for b in 0..SIZE {
        if !overlapped[b] {
            assert_eq!(
                on_disk[b], model[b],
                "byte {b} (write {})",
                owners[b] as isize
            );
        }
    }
}

#[test]
fn overlapping_writes_queued_one_after_another_leave_the_last_ones_bytes() {
    let (_d, path, dev) = device(false);
    // Each write waits for the one before it to complete: the next starts after it.
    let n = 12;
    let mut last = Vec::new();
    for i in 0..n {
        let data = pattern(BIG, 1000 + i);
        let rx = submit_all(&dev, &[(8, data.clone())]);
        assert!(results(&rx, 1)[0].is_ok());
        last = data;
    }
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(&on_disk[8 * 512..8 * 512 + BIG], &last[..]);
}

/// With one writer per file (the default, `UDM_FILE_WRITERS` unset), pool writes queued
/// together are done in the order they were submitted: the last one's bytes stay.
#[test]
fn overlapping_writes_queued_together_are_done_in_order() {
    if std::env::var_os("UDM_FILE_WRITERS").is_some() {
        return;
    }
    let (_d, path, dev) = device(false);
    // Each overlaps the one before it by half, shifted by one sector.
    let writes: Vec<(u64, Vec<u8>)> = (0..40u64)
        .map(|i| {
            (
                i * (BIG as u64 / 1024) + i % 2,
                pattern(BIG, 2000 + i as u32),
            )
        })
        .collect();
    let rx = submit_all(&dev, &writes);
    assert!(results(&rx, writes.len()).iter().all(Result::is_ok));
    let mut model = vec![0u8; SIZE];
    for (sector, data) in &writes {
        let at = *sector as usize * 512;
        model[at..at + data.len()].copy_from_slice(data);
    }
    assert!(
        std::fs::read(&path).unwrap() == model,
        "pool writes out of order"
    );
}

#[test]
fn a_completion_may_queue_more_writes_to_the_same_file() {
    let (_d, path, dev) = device(false);
    let (tx, rx) = mpsc::channel();
    // Write k's completion submits write k+1 (the next 256 KiB), to the end of the file.
    fn chain(dev: FileDevice, k: usize, tx: mpsc::Sender<Result<(), IoError>>) {
        if k == SIZE / BIG {
            return tx.send(Ok(())).unwrap();
        }
        let next = dev.clone();
        dev.submit(Bio::write(
            Sectors((k * BIG / 512) as u64),
            IoBuf::from_slice(&pattern(BIG, k as u32)),
            Box::new(move |r, _| match r {
                Ok(()) => chain(next, k + 1, tx),
                Err(e) => tx.send(Err(e)).unwrap(),
            }),
        ));
    }
    chain(dev.clone(), 0, tx);
    rx.recv().unwrap().unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    for k in 0..SIZE / BIG {
        assert_eq!(
            &on_disk[k * BIG..(k + 1) * BIG],
            &pattern(BIG, k as u32)[..],
            "write {k}"
        );
    }
}

#[test]
fn errors_stay_with_their_writes() {
    let (_d, path, dev) = device(false);
    let end = (SIZE / 512) as u64;
    let writes = vec![
        (0, pattern(BIG, 1)),
        (end - 8, pattern(BIG, 2)), // reaches past the end
        (1024, pattern(BIG, 3)),
        (end, pattern(BIG, 4)), // starts at the end
        (2048, pattern(BIG, 5)),
    ];
    let rx = submit_all(&dev, &writes);
    let r = results(&rx, writes.len());
    assert_eq!(
        r,
        vec![Ok(()), Err(IoError::Io), Ok(()), Err(IoError::Io), Ok(())]
    );
    let on_disk = std::fs::read(&path).unwrap();
    for i in [0, 2, 4] {
        let at = writes[i].0 as usize * 512;
        assert_eq!(&on_disk[at..at + BIG], &writes[i].1[..], "write {i}");
    }
    // Nothing of the failed writes reached the file.
    assert!(on_disk[SIZE - 8 * 512..].iter().all(|&b| b == 0));

    let (_d2, _p2, ro) = device(true);
    let rx = submit_all(&ro, &writes[..1]);
    assert_eq!(results(&rx, 1), vec![Err(IoError::ReadOnly)]);
}

#[test]
fn a_panicking_completion_does_not_cost_the_file_its_writers() {
    let (_d, path, dev) = device(false);
    // More panicking completions than a file has writers (any sane UDM_FILE_WRITERS).
    for i in 0..80u64 {
        dev.submit(Bio::write(
            Sectors(i * 8),
            IoBuf::from_slice(&pattern(BIG, 7)),
            Box::new(|_, _| panic!("a completion that panics (expected by this test)")),
        ));
    }
    let writes: Vec<(u64, Vec<u8>)> = (0..8)
        .map(|i| (2048 + i * 1024, pattern(BIG, 100 + i as u32)))
        .collect();
    let rx = submit_all(&dev, &writes);
    assert!(results(&rx, writes.len()).iter().all(Result::is_ok));
    let on_disk = std::fs::read(&path).unwrap();
    for (sector, data) in &writes {
        let at = *sector as usize * 512;
        assert_eq!(&on_disk[at..at + data.len()], &data[..]);
    }
}
