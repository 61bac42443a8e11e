//! `verity`'s zero-copy path (`BlockDevice::read_file_range`, what NBD replies splice from):
//! verified data blocks kept in a memfd give the same bytes as reads through bios, including
//! ranges partly cached and at the end of the device; a reply still in a pipe keeps its bytes
//! when its blocks are evicted; an evicted block corrupted on disk fails verification again;
//! nothing that failed, was corrected by FEC, passed in logging mode or was skipped by
//! `check_at_most_once` is served from the memfd, nor anything once a device died. A read's
//! verified blocks are kept in runs (one write per run): a large read split across threads
//! keeps every block, and a corrupted block inside a run splits it without entering. In a
//! process of its own: the budget is process-wide and read once (`UDM_VERITY_CACHE_MB`).

mod common;
mod verity_img;
use common::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use udm_io::{BlockDevice, IoError, Sectors};
use verity_img::*;

const BS: u64 = 4096;

/// Whether this host keeps blocks in memfds; without it every zero-copy read must say `None`.
fn avail() -> bool {
    udm_targets::verity::zero_copy_available(BS as u32)
}

/// Blocks `first..first+n` through the zero-copy path, copied out of the file it offers.
fn zc(dev: &dyn BlockDevice, first: u64, n: u64) -> Option<Vec<u8>> {
    let mut out = vec![0u8; (n * BS) as usize];
    let r = dev.read_file_range(
        Sectors(first * BS / 512),
        Sectors(n * BS / 512),
        &mut |file, off| file.read_exact_at(&mut out, off).map(|_| out.len()),
    )?;
    assert_eq!(r.expect("zero-copy read"), out.len());
    Some(out)
}

/// What `zc` must give for blocks `first..first+n` of `content` when they are all kept.
fn want(content: &[u8], first: u64, n: u64) -> Option<Vec<u8>> {
    avail().then(|| content[(first * BS) as usize..][..(n * BS) as usize].to_vec())
}

fn block(dev: &dyn BlockDevice, b: u64, n: u64) -> Result<Vec<u8>, IoError> {
    udm_io::sync::read_at(dev, Sectors(b * BS / 512), (n * BS) as usize).map(|v| v.into_vec())
}

/// A pipe big enough for `bytes`: (read end, write end).
fn pipe(bytes: usize) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are new and owned here only.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ on a valid pipe descriptor.
    let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int) };
    assert!(got as usize >= bytes, "pipe size {got}");
    (r, w)
}

/// Splice blocks `first..first+n` into a new pipe through the zero-copy path (as an NBD
/// reply does); the pipe's read end, or `None` when the path declined.
fn zc_splice(dev: &dyn BlockDevice, first: u64, n: u64) -> Option<OwnedFd> {
    let len = (n * BS) as usize;
    let (r, w) = pipe(len);
    let res = dev.read_file_range(
        Sectors(first * BS / 512),
        Sectors(n * BS / 512),
        &mut |file, off| {
            let mut pos = off as libc::loff_t;
            let mut done = 0;
            while done < len {
                // SAFETY: two valid descriptors and a pointer to a local offset.
                let k = unsafe {
                    libc::splice(
                        file.as_raw_fd(),
                        &mut pos,
                        w.as_raw_fd(),
                        std::ptr::null_mut(),
                        len - done,
                        libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                    )
                };
                assert!(k > 0, "splice: {}", std::io::Error::last_os_error());
                done += k as usize;
            }
            Ok(done)
        },
    )?;
    assert_eq!(res.unwrap(), len);
    Some(r)
}

fn drain(r: &OwnedFd, len: usize) -> Vec<u8> {
    let f = std::fs::File::from(r.try_clone().unwrap());
    let mut v = vec![0u8; len];
    std::io::Read::read_exact(&mut &f, &mut v).unwrap();
    v
}

#[test]
fn zero_copy_reads() {
    // SAFETY: the only test of this binary sets the variable before any thread starts.
    unsafe { std::env::set_var("UDM_VERITY_CACHE_MB", "1") };
    eprintln!("zero-copy verity path available here: {}", avail());
    let d = tempfile::tempdir().unwrap();
    let reg = registry();
    same_bytes(&reg, d.path());
    evicted_under_a_pipe(&reg, d.path());
    concurrent_eviction(&reg, d.path());
    security_rules(&reg, d.path());
    batched_inserts(&reg, d.path());
    let (n, b, budget) = udm_targets::verity::cache_usage();
    assert!(b <= budget, "{n} blocks, {b} bytes over {budget}");
}

fn dir(root: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = root.join(name);
    std::fs::create_dir(&p).unwrap();
    p
}

/// Same bytes as bios: whole, partly cached, at the end of the device, past it, unaligned.
fn same_bytes(reg: &udm_core::Registry, root: &std::path::Path) {
    let img = make(&dir(root, "a"), BS as u32, 200, &[], None);
    create_ro(reg, "a", &img.table("")).unwrap();
    let (dev, g) = open(reg, "a");
    let dev = dev.as_ref();
    assert_eq!(zc(dev, 0, 8), None, "nothing verified yet");
    assert!(block(dev, 0, 4).unwrap() == img.content[..4 * BS as usize]);
    assert_eq!(zc(dev, 0, 8), None, "blocks 4..8 not verified yet");
    assert_eq!(zc(dev, 0, 4), want(&img.content, 0, 4));
    // A bio over a range partly cached: the cached part from memory, the rest verified.
    assert!(block(dev, 2, 6).unwrap() == img.content[2 * BS as usize..8 * BS as usize]);
    assert_eq!(zc(dev, 0, 8), want(&img.content, 0, 8));
    assert!(block(dev, 0, 200).unwrap() == img.content);
    for (first, n) in [(0, 200), (190, 10), (199, 1), (37, 64), (100, 3)] {
        assert_eq!(
            zc(dev, first, n),
            want(&img.content, first, n),
            "{first}+{n}"
        );
        assert!(
            block(dev, first, n).unwrap()
                == img.content[(first * BS) as usize..][..(n * BS) as usize]
        );
    }
    // Past the end: the zero-copy path declines and the bio fails.
    assert_eq!(zc(dev, 195, 10), None);
    assert_eq!(block(dev, 195, 10), Err(IoError::Io));
    // Not block-aligned: declined (the bio path fails it as the kernel does).
    let unaligned = dev.read_file_range(Sectors(1), Sectors(8), &mut |_, _| Ok(0));
    assert!(unaligned.is_none());
    if avail() {
        let r = zc_splice(dev, 10, 16).unwrap();
        assert!(drain(&r, 16 * BS as usize) == img.content[10 * BS as usize..26 * BS as usize]);
    }
    drop(g);
    reg.remove(&sel("a"), false).unwrap();
}

/// A reply still in a pipe keeps its bytes when its blocks are evicted (their pages punched
/// out of the memfd); an evicted block corrupted on disk is verified again and fails.
fn evicted_under_a_pipe(reg: &udm_core::Registry, root: &std::path::Path) {
    // 2 MiB of data against a 1 MiB budget.
    let img = make(&dir(root, "b"), BS as u32, 512, &[], None);
    create_ro(reg, "b", &img.table("")).unwrap();
    let (dev, g) = open(reg, "b");
    let dev = dev.as_ref();
    assert!(block(dev, 0, 64).unwrap() == img.content[..64 * BS as usize]);
    let in_pipe = zc_splice(dev, 0, 64);
    assert_eq!(in_pipe.is_some(), avail());
    // Stream the rest (not touching blocks 0..64, which would mark them hit): CLOCK evicts
    // them on the hand's second round.
    for _ in 0..4 {
        for c in 1..8 {
            assert!(
                block(dev, c * 64, 64).unwrap()
                    == img.content[(c * 64 * BS) as usize..][..64 * BS as usize]
            );
        }
    }
    assert!(zc(dev, 0, 1).is_none(), "block 0 evicted");
    // Refill the evicted pages with other blocks' bytes as far as the budget goes.
    for c in 4..8 {
        block(dev, c * 64, 64).unwrap();
    }
    if let Some(r) = in_pipe {
        assert!(drain(&r, 64 * BS as usize) == img.content[..64 * BS as usize]);
    }
    flip(&img.data, 100, 0x04);
    assert_eq!(
        block(dev, 0, 1),
        Err(IoError::Io),
        "evicted block is verified again"
    );
    assert_eq!(block(dev, 0, 4), Err(IoError::Io));
    assert_eq!(zc(dev, 0, 1), None, "a failed block is never kept");
    assert_eq!(info(reg, "b"), "C");
    // Another evicted block read again is verified, kept and served zero-copy again.
    assert!(block(dev, 1, 1).unwrap() == img.content[BS as usize..2 * BS as usize]);
    assert_eq!(zc(dev, 1, 1), want(&img.content, 1, 1));
    drop(g);
    reg.remove(&sel("b"), false).unwrap();
}

/// Readers on the zero-copy and copy paths while another thread's reads keep evicting:
/// every read returns the verified bytes (a block is never punched under a pinned read).
fn concurrent_eviction(reg: &udm_core::Registry, root: &std::path::Path) {
    let img = make(&dir(root, "c"), BS as u32, 768, &[], None);
    create_ro(reg, "c", &img.table("")).unwrap();
    let (dev, g) = open(reg, "c");
    let content = &img.content;
    let served = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let dev2 = dev.clone();
        s.spawn(move || {
            for _ in 0..6 {
                for c in 0..12 {
                    let got = block(dev2.as_ref(), c * 64, 64).unwrap();
                    assert!(got == content[(c * 64 * BS) as usize..][..64 * BS as usize]);
                }
            }
        });
        // A fixed sequence of ranges (no randomness): bio read, then zero-copy (splice and
        // copy) right after, racing the streamer's evictions.
        for i in 0..400u64 {
            let first = (i * 97) % 700;
            let n = 1 + (i * 13) % 64;
            let at = (first * BS) as usize;
            let w = &content[at..at + (n * BS) as usize];
            assert!(
                block(dev.as_ref(), first, n).unwrap() == w,
                "bio {first}+{n}"
            );
            if let Some(v) = zc(dev.as_ref(), first, n) {
                assert!(v == w, "copy {first}+{n}");
                served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(r) = zc_splice(dev.as_ref(), first, n) {
                assert!(drain(&r, w.len()) == w, "splice {first}+{n}");
            }
        }
    });
    eprintln!(
        "zero-copy reads served during eviction: {}",
        served.into_inner()
    );
    drop(g);
    reg.remove(&sel("c"), false).unwrap();
}

/// What never reaches the memfd: failed, FEC-corrected, logging-mode and
/// `check_at_most_once`-skipped blocks, and nothing is served once a device died.
fn security_rules(reg: &udm_core::Registry, root: &std::path::Path) {
    // Corrupted before its first read: fails, is not kept, fails again.
    let img = make(&dir(root, "e"), BS as u32, 64, &[], None);
    flip(&img.data, 7 * BS + 9, 0x01);
    create_ro(reg, "e", &img.table("")).unwrap();
    let (dev, g) = open(reg, "e");
    assert_eq!(block(dev.as_ref(), 7, 1), Err(IoError::Io));
    assert_eq!(zc(dev.as_ref(), 7, 1), None);
    assert_eq!(block(dev.as_ref(), 6, 2), Err(IoError::Io));
    assert_eq!(zc(dev.as_ref(), 6, 1), want(&img.content, 6, 1));
    drop(g);
    reg.remove(&sel("e"), false).unwrap();

    // Logging mode: the corrupted block is read as it is, but never kept as verified.
    create_ro(reg, "l", &img.table("ignore_corruption")).unwrap();
    let (dev, g) = open(reg, "l");
    let bad = block(dev.as_ref(), 7, 1).unwrap();
    assert!(bad != img.content[7 * BS as usize..8 * BS as usize]);
    assert_eq!(zc(dev.as_ref(), 7, 1), None);
    assert!(block(dev.as_ref(), 0, 7).unwrap() == img.content[..7 * BS as usize]);
    assert_eq!(zc(dev.as_ref(), 0, 7), want(&img.content, 0, 7));
    drop(g);
    reg.remove(&sel("l"), false).unwrap();

    // restart_on_corruption: once dead, kept blocks are not served by either path.
    create_ro(reg, "r", &img.table("restart_on_corruption")).unwrap();
    let (dev, g) = open(reg, "r");
    assert!(block(dev.as_ref(), 0, 4).unwrap() == img.content[..4 * BS as usize]);
    assert_eq!(zc(dev.as_ref(), 0, 4), want(&img.content, 0, 4));
    assert_eq!(block(dev.as_ref(), 7, 1), Err(IoError::Io));
    assert_eq!(zc(dev.as_ref(), 0, 4), None);
    assert_eq!(block(dev.as_ref(), 0, 4), Err(IoError::Io));
    drop(g);
    reg.remove(&sel("r"), false).unwrap();

    // FEC: a corrected block is returned right but not kept.
    let f = make(&dir(root, "f"), BS as u32, 64, &[], Some(2));
    flip(&f.data, BS + 5, 0x10);
    create_ro(reg, "f", &f.table("")).unwrap();
    let (dev, g) = open(reg, "f");
    assert!(block(dev.as_ref(), 0, 64).unwrap() == f.content);
    assert_eq!(zc(dev.as_ref(), 1, 1), None, "FEC-corrected block kept");
    assert_eq!(zc(dev.as_ref(), 0, 1), want(&f.content, 0, 1));
    assert_eq!(zc(dev.as_ref(), 2, 62), want(&f.content, 2, 62));
    drop(g);
    reg.remove(&sel("f"), false).unwrap();

    // check_at_most_once: after eviction a block is no longer verified (as in the kernel),
    // so what is read then is not kept.
    let m = make(&dir(root, "m"), BS as u32, 512, &[], None);
    create_ro(reg, "m", &m.table("check_at_most_once")).unwrap();
    let (dev, g) = open(reg, "m");
    assert!(block(dev.as_ref(), 0, 512).unwrap() == m.content);
    // Another device over the same blocks (verified every time) fills the budget: the
    // larger store gives way, block 0 (first under the CLOCK hand, never hit) with it.
    create_ro(reg, "m2", &m.table("")).unwrap();
    let (dev2, g2) = open(reg, "m2");
    for _ in 0..3 {
        assert!(block(dev2.as_ref(), 0, 512).unwrap() == m.content);
    }
    assert!(zc(dev.as_ref(), 0, 1).is_none(), "block 0 evicted");
    drop(g2);
    reg.remove(&sel("m2"), false).unwrap();
    flip(&m.data, 3, 0x40);
    let got = block(dev.as_ref(), 0, 1).unwrap();
    assert!(
        got != m.content[..BS as usize],
        "validated once, not checked again"
    );
    assert_eq!(zc(dev.as_ref(), 0, 1), None, "an unchecked block was kept");
    drop(g);
    reg.remove(&sel("m"), false).unwrap();

    // 512-byte blocks keep using the sharded cache: no zero-copy path.
    let s = make(&dir(root, "s"), 512, 64, &[], None);
    create_ro(reg, "s", &s.table("")).unwrap();
    let (dev, g) = open(reg, "s");
    assert!(udm_io::sync::read_at(dev.as_ref(), Sectors(0), 8 * 512).is_ok());
    assert!(dev
        .read_file_range(Sectors(0), Sectors(8), &mut |_, _| Ok(0))
        .is_none());
    drop(g);
    reg.remove(&sel("s"), false).unwrap();
}

/// A read's verified blocks enter in runs: a read split across threads (two 256 KiB
/// pieces), a run that meets resident blocks, and runs split by a corrupted block, in EIO
/// mode (blocks verified before it are kept, the rest of its piece is not verified) and in
/// logging mode (the read succeeds; every block but the corrupted one is kept). Each device
/// starts with the budget empty, so nothing here is evicted.
fn batched_inserts(reg: &udm_core::Registry, root: &std::path::Path) {
    let img = make(&dir(root, "batch"), BS as u32, 256, &[], None);
    let part = |a: u64, b: u64| &img.content[(a * BS) as usize..(b * BS) as usize];
    let (dev, g) = open_fresh(reg, &img, "batch", "");
    let dev = dev.as_ref();
    assert!(block(dev, 0, 128).unwrap() == part(0, 128));
    assert_eq!(zc(dev, 0, 128), want(&img.content, 0, 128));
    // Blocks 140..150 first, then one read over them: resident ones stay, the rest fill.
    assert!(block(dev, 140, 10).unwrap() == part(140, 150));
    assert!(block(dev, 128, 64).unwrap() == part(128, 192));
    assert_eq!(zc(dev, 0, 192), want(&img.content, 0, 192));
    assert_eq!(zc(dev, 192, 1), None);
    if let Some(r) = zc_splice(dev, 96, 64) {
        assert!(drain(&r, 64 * BS as usize) == part(96, 160));
    }
    drop(g);
    reg.remove(&sel("batch"), false).unwrap();

    flip(&img.data, 40 * BS + 1, 0x80);
    let (dev, g) = open_fresh(reg, &img, "beio", "");
    assert_eq!(block(dev.as_ref(), 0, 64), Err(IoError::Io));
    assert_eq!(zc(dev.as_ref(), 0, 40), want(&img.content, 0, 40));
    assert_eq!(zc(dev.as_ref(), 40, 1), None, "the corrupted block");
    assert_eq!(
        zc(dev.as_ref(), 41, 1),
        None,
        "not verified after the failure"
    );
    assert!(block(dev.as_ref(), 41, 23).unwrap() == part(41, 64));
    assert_eq!(zc(dev.as_ref(), 41, 23), want(&img.content, 41, 23));
    assert_eq!(zc(dev.as_ref(), 0, 64), None);
    assert_eq!(block(dev.as_ref(), 32, 16), Err(IoError::Io));
    drop(g);
    reg.remove(&sel("beio"), false).unwrap();

    let (dev, g) = open_fresh(reg, &img, "blog", "ignore_corruption");
    let got = block(dev.as_ref(), 0, 64).unwrap();
    let bs = BS as usize;
    assert!(got[..40 * bs] == *part(0, 40));
    assert!(got[40 * bs..41 * bs] != *part(40, 41));
    assert!(got[41 * bs..] == *part(41, 64));
    assert_eq!(zc(dev.as_ref(), 0, 40), want(&img.content, 0, 40));
    assert_eq!(zc(dev.as_ref(), 40, 1), None, "a corrupted block was kept");
    assert_eq!(zc(dev.as_ref(), 39, 2), None);
    assert_eq!(zc(dev.as_ref(), 41, 23), want(&img.content, 41, 23));
    // Read again: the device's (corrupted) bytes for block 40 again, kept ones from memory.
    assert!(block(dev.as_ref(), 0, 64).unwrap() == got);
    drop(g);
    reg.remove(&sel("blog"), false).unwrap();
}

/// A new read-only `verity` device `name` over `img` with `opts`, opened.
fn open_fresh(
    reg: &udm_core::Registry,
    img: &Img,
    name: &str,
    opts: &str,
) -> (
    std::sync::Arc<dyn BlockDevice>,
    udm_core::registry::OpenGuard,
) {
    let t0 = std::time::Instant::now();
    // A removed table's blocks go when the last completion holding it ends.
    while udm_targets::verity::cache_usage().0 != 0 {
        assert!(
            t0.elapsed().as_secs() < 10,
            "{:?} kept",
            udm_targets::verity::cache_usage()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    create_ro(reg, name, &img.table(opts)).unwrap();
    open(reg, name)
}
