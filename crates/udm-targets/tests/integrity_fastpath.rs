//! The `integrity` target's inline path: a bio submitted on a thread that may block (an NBD
//! request thread, marked with `udm_io::with_blocking_submit`) is served on that thread (data
//! read straight from the page cache into the bio's buffer, tags from the tag cache, checked,
//! completed) instead of hopping to the target's pool. Checked against the pool path:
//! - completion runs on the submitting thread exactly when it is marked;
//! - the same bytes for J, B and D modes, for reads spanning journal and home blocks and
//!   interleave areas, and large reads split across threads;
//! - a flipped data or tag byte fails exactly the reads covering it, with EILSEQ, counted
//!   once per failing request (as the kernel counts), on both paths;
//! - a read racing writes of the same blocks returns old or new contents, never an error;
//! - a B/D-mode write sends the bio's own buffer down (cut per interleave area, no copy) and
//!   hands it back whole, on both paths; data and tags land where a reopened device reads
//!   them back checked.

mod common;
use common::integrity::create_formatted;
use common::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use udm_core::Registry;
use udm_formats::integrity::{Geometry, Superblock};
use udm_io::{Bio, BlockDevice, IoBuf, IoError, Sectors};
use udm_testkit::rng::XorShift;

const SECTORS: u64 = 32768;
const EILSEQ: IoError = IoError::Os(libc::EILSEQ);

/// Read `len` bytes at `s`, on the inline path (`inline`: the thread is marked) or not;
/// also says whether the completion ran on this thread.
fn read_on(
    dev: &dyn BlockDevice,
    s: u64,
    len: usize,
    inline: bool,
) -> (Result<Vec<u8>, IoError>, bool) {
    let (tx, rx) = channel();
    let me = std::thread::current().id();
    let bio = Bio::read(
        Sectors(s),
        IoBuf::zeroed(len),
        Box::new(move |r, buf: IoBuf| {
            let _ = tx.send((r.map(|_| buf.into_vec()), std::thread::current().id() == me));
        }),
    );
    if inline {
        udm_io::with_blocking_submit(|| dev.submit(bio));
    } else {
        dev.submit(bio);
    }
    rx.recv().unwrap()
}

fn write_on(dev: &dyn BlockDevice, s: u64, data: &[u8], inline: bool) -> Result<(), IoError> {
    let (tx, rx) = channel();
    let bio = Bio::write(
        Sectors(s),
        IoBuf::from_slice(data),
        Box::new(move |r, _| {
            let _ = tx.send(r);
        }),
    );
    if inline {
        udm_io::with_blocking_submit(|| dev.submit(bio));
    } else {
        dev.submit(bio);
    }
    rx.recv().unwrap()
}

const MODES: [&str; 3] = [
    "4 J 2 interleave_sectors:4096 internal_hash:crc32c",
    "4 B 2 block_size:4096 internal_hash:crc32c",
    "32 D 2 interleave_sectors:2048 internal_hash:sha256",
];

#[test]
fn integrity_inline_reads_return_the_pool_paths_bytes() {
    for rest in MODES {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "d", SECTORS, 0);
        let reg = registry();
        let p = create_formatted(&reg, "i", &img, &format!("{rest} commit_time:100000"));
        let bs = if rest.contains("block_size:4096") {
            8
        } else {
            1
        };
        let (dev, _g) = open(&reg, "i");
        let mut model = XorShift::mixed(11).bytes((p * 512) as usize);
        // The first fill on the pool path, then seeded writes on both paths; in J mode the
        // later ones stay in the journal (commit_time is long), so reads mix both sources.
        assert_eq!(write_on(&*dev, 0, &model, false), Ok(()));
        udm_io::sync::flush(&*dev).unwrap();
        let mut rng = XorShift::mixed(12);
        let blocks = p / bs;
        for i in 0..60 {
            let b = rng.below(blocks - 32);
            let n = 1 + rng.below(32);
            let data = rng.bytes((n * bs * 512) as usize);
            assert_eq!(write_on(&*dev, b * bs, &data, i % 2 == 0), Ok(()), "{rest}");
            let o = (b * bs * 512) as usize;
            model[o..o + data.len()].copy_from_slice(&data);
        }
        for inline in [false, true] {
            let (all, here) = read_on(&*dev, 0, model.len(), inline);
            assert_eq!(here, inline, "{rest}: completion thread, inline {inline}");
            assert!(
                all.unwrap() == model,
                "{rest}: whole device, inline {inline}"
            );
        }
        for _ in 0..40 {
            let b = rng.below(blocks - 1);
            let n = 1 + rng.below((blocks - b).min(2048));
            let (s, len) = (b * bs, (n * bs * 512) as usize);
            let want = &model[(s * 512) as usize..(s * 512) as usize + len];
            for inline in [false, true] {
                let (r, here) = read_on(&*dev, s, len, inline);
                assert_eq!(here, inline, "{rest}");
                assert!(
                    r.unwrap() == want,
                    "{rest}: {n} blocks at {s}, inline {inline}"
                );
            }
        }
        assert_eq!(status_fields(&reg, "i")[0], "0", "{rest}");
    }
}

/// The layout of the formatted image `bytes` (`sectors` long; a metadata device when
/// `meta`) providing `p` sectors.
fn geometry_of(bytes: &[u8], p: u64, sectors: u64, meta: bool) -> Geometry {
    let sb = Superblock::decode(bytes).unwrap();
    let mut geo = Geometry::new(
        0,
        sb.integrity_tag_size as u32,
        sb.log2_interleave_sectors,
        sb.log2_sectors_per_block,
        sb.flags,
        sb.journal_sections,
        meta,
        7,
    );
    assert!(geo.fits(p, sectors));
    geo
}

/// Format `img` as device "i" with `rest`, write seeded data over all of it (inline path),
/// flush, and remove the device; returns the provided sectors and the data.
fn formatted_and_filled(reg: &Registry, img: &Path, rest: &str, seed: u64) -> (u64, Vec<u8>) {
    let p = create_formatted(reg, "i", img, rest);
    let data = XorShift::mixed(seed).bytes((p * 512) as usize);
    {
        let (dev, _g) = open(reg, "i");
        assert_eq!(write_on(&*dev, 0, &data, true), Ok(()));
        udm_io::sync::flush(&*dev).unwrap();
    }
    reg.remove(&sel("i"), false).unwrap();
    (p, data)
}

/// A tag-cache miss reads the whole metadata buffer around the tags it needs (the kernel's
/// dm-bufio block, `buffer_sectors`; here an interleave area's tags, 32 sectors), so reads
/// nearby find their tags cached: seen from a tag changed behind the device's back after
/// the first read, which only a block outside that buffer notices (its tags come from the
/// device), while one inside it reads back its data unchanged.
#[test]
fn integrity_tag_miss_reads_its_metadata_buffer_once() {
    let rest = "4 D 2 interleave_sectors:4096 internal_hash:crc32c";
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "d", SECTORS, 0);
    let reg = registry();
    let (p, data) = formatted_and_filled(&reg, &img, rest, 5);
    let geo = geometry_of(&std::fs::read(&img).unwrap(), p, SECTORS, false);
    create(
        &reg,
        "i",
        &format!("0 {p} integrity {} 0 {rest}", img.display()),
    )
    .unwrap();
    let (dev, _g) = open(&reg, "i");
    let at = |s: u64| &data[(s * 512) as usize..((s + 8) * 512) as usize];
    assert_eq!(read_on(&*dev, 0, 4096, true).0.unwrap(), at(0));
    // Flip the tags of sectors 3000 (area 0, cached by the read above) and 5000 (area 1).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    for s in [3000, 5000] {
        use std::os::unix::fs::FileExt;
        let (_, t) = geo.locate(s);
        let mut b = [0u8; 1];
        f.read_at(&mut b, t).unwrap();
        f.write_at(&[b[0] ^ 1], t).unwrap();
    }
    assert_eq!(read_on(&*dev, 3000, 4096, true).0.unwrap(), at(3000));
    assert_eq!(read_on(&*dev, 5000, 4096, true).0.unwrap_err(), EILSEQ);
    assert_eq!(status_fields(&reg, "i")[0], "1");
}

/// With a metadata device (all tags in one run after its journal; a tag miss reads a
/// buffer of them, within that device): reads back what was written, checked, and a
/// flipped tag byte fails exactly the request covering its block, counted once.
#[test]
fn integrity_meta_device_reads_back_checked_and_fails_the_flipped_tag() {
    const META: u64 = 2048;
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "d", SECTORS, 0);
    let meta = image(dir.path(), "m", META, 0);
    let rest = format!("4 D 2 meta_device:{} internal_hash:crc32c", meta.display());
    let reg = registry();
    let (p, data) = formatted_and_filled(&reg, &img, &rest, 9);
    let mut bytes = std::fs::read(&meta).unwrap();
    let geo = geometry_of(&bytes, p, META, true);
    let (_, t) = geo.locate(700);
    bytes[t as usize] ^= 0x80;
    std::fs::write(&meta, &bytes).unwrap();
    let line = format!("0 {p} integrity {} 0 {rest}", img.display());
    create(&reg, "i", &line).unwrap();
    let (dev, _g) = open(&reg, "i");
    let mut failed = Vec::new();
    for s in (0..p).step_by(64) {
        let n = 64.min(p - s);
        match read_on(&*dev, s, (n * 512) as usize, true).0 {
            Ok(b) => assert!(b == data[(s * 512) as usize..((s + n) * 512) as usize]),
            Err(e) => {
                assert_eq!(e, EILSEQ);
                failed.push(s);
            }
        }
    }
    assert_eq!(failed, [640]);
    assert_eq!(status_fields(&reg, "i")[0], "1");
}

#[test]
fn integrity_inline_reads_fail_exactly_the_corrupted_blocks_and_count_per_request() {
    for rest in MODES {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "d", SECTORS, 0);
        let reg = registry();
        let (p, data) = formatted_and_filled(&reg, &img, rest, 3);
        // Where sector 100's data byte and sector 3000's tag live, from the superblock.
        let mut bytes = std::fs::read(&img).unwrap();
        let geo = geometry_of(&bytes, p, SECTORS, false);
        let (d100, _) = geo.locate(100);
        bytes[(d100 * 512 + 17) as usize] ^= 0x40;
        let (_, t3000) = geo.locate(3000);
        bytes[t3000 as usize] ^= 0x01;
        std::fs::write(&img, &bytes).unwrap();
        create(
            &reg,
            "i",
            &format!("0 {p} integrity {} 0 {rest}", img.display()),
        )
        .unwrap();
        let (dev, _g) = open(&reg, "i");
        let mut count = 0;
        for inline in [true, false, true] {
            let mut failed = Vec::new();
            for s in (0..p).step_by(64) {
                let n = 64.min(p - s);
                let (r, here) = read_on(&*dev, s, (n * 512) as usize, inline);
                assert_eq!(here, inline, "{rest}");
                match r {
                    Ok(b) => assert!(b == data[(s * 512) as usize..((s + n) * 512) as usize]),
                    Err(e) => {
                        assert_eq!(e, EILSEQ, "{rest} at {s}");
                        failed.push(s);
                    }
                }
            }
            count += 2;
            assert_eq!(failed, [64, 2944], "{rest}, inline {inline}");
            // A request over both bad blocks (cut in two pieces for two threads, one bad
            // block in each) fails once and counts once; where the device splits it at an
            // interleave area (2048 sectors in D mode), once per part, as the kernel's.
            let (r, _) = read_on(&*dev, 0, (4096 * 512) as usize, inline);
            assert_eq!(r.unwrap_err(), EILSEQ);
            count += if rest.contains("interleave_sectors:2048") {
                2
            } else {
                1
            };
            let bs = if rest.contains("block_size:4096") {
                8
            } else {
                1
            };
            for s in (64..128).step_by(bs) {
                let (r, _) = read_on(&*dev, s, bs * 512, inline);
                assert_eq!(
                    r.is_err(),
                    s <= 100 && 100 < s + bs as u64,
                    "{rest} sector {s}"
                );
            }
            count += 1;
            assert_eq!(status_fields(&reg, "i")[0], count.to_string(), "{rest}");
        }
    }
}

#[test]
fn integrity_inline_read_racing_writes_of_its_blocks_sees_old_or_new() {
    for rest in MODES {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "d", SECTORS, 0);
        let reg = registry();
        let p = create_formatted(&reg, "i", &img, rest);
        let (dev, _g) = open(&reg, "i");
        assert_eq!(
            write_on(&*dev, 0, &vec![0x5a; (p * 512) as usize], false),
            Ok(())
        );
        // Two 64 KiB versions of the same blocks, across an interleave-area boundary in the
        // modes that have one at 2048 or 4096.
        let s = 4096 - 64;
        let a = XorShift::mixed(21).bytes(64 << 10);
        let b = XorShift::mixed(22).bytes(64 << 10);
        assert_eq!(write_on(&*dev, s, &a, false), Ok(()));
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU32::new(0));
        let writer = {
            let (dev, stop, a, b) = (dev.clone(), stop.clone(), a.clone(), b.clone());
            let written = written.clone();
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let v = if i.is_multiple_of(2) { &b } else { &a };
                    assert_eq!(write_on(&*dev, s, v, i.is_multiple_of(3)), Ok(()));
                    i += 1;
                    written.store(i, Ordering::SeqCst);
                }
                i
            })
        };
        // At least 400 reads, and on until the writer has rewritten the blocks a few times
        // (on a loaded machine it may not get a turn during the first 400).
        let since = std::time::Instant::now();
        let mut i = 0usize;
        while i < 400 || written.load(Ordering::SeqCst) < 4 {
            assert!(
                since.elapsed() < std::time::Duration::from_secs(120),
                "{rest}: the writer made no progress"
            );
            // Reads of the whole range and of single 4 KiB pieces of it.
            let (off, len) = if i.is_multiple_of(2) {
                (0, 64 << 10)
            } else {
                ((i % 16) * 4096, 4096)
            };
            let (r, _) = read_on(&*dev, s + off as u64 / 512, len, true);
            let got = r.unwrap_or_else(|e| panic!("{rest}: read {i} failed: {e:?}"));
            for (k, blk) in got.chunks(4096).enumerate() {
                let o = off + k * 4096;
                assert!(
                    blk == &a[o..o + 4096] || blk == &b[o..o + 4096],
                    "{rest}: read {i} block {k} is neither version"
                );
            }
            i += 1;
        }
        stop.store(true, Ordering::SeqCst);
        assert!(writer.join().unwrap() >= 4);
        assert_eq!(status_fields(&reg, "i")[0], "0", "{rest}");
    }
}

/// Write `data` at `s` and return the buffer the completion hands back (and the result).
fn write_back_buf(dev: &dyn BlockDevice, s: u64, data: &[u8], inline: bool) -> (IoBuf, *const u8) {
    let (tx, rx) = channel();
    let buf = IoBuf::from_slice(data);
    let ptr = buf.as_ptr();
    let bio = Bio::write(
        Sectors(s),
        buf,
        Box::new(move |r, b| {
            let _ = tx.send((r, b));
        }),
    );
    if inline {
        udm_io::with_blocking_submit(|| dev.submit(bio));
    } else {
        dev.submit(bio);
    }
    let (r, b) = rx.recv().unwrap();
    assert_eq!(r, Ok(()));
    (b, ptr)
}

#[test]
fn integrity_direct_writes_hand_their_buffer_back_whole_and_read_back_checked() {
    for rest in [
        "32 D 2 interleave_sectors:2048 internal_hash:sha256",
        "4 B 2 interleave_sectors:2048 internal_hash:crc32c",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "d", SECTORS, 0);
        let reg = registry();
        let p = create_formatted(&reg, "i", &img, rest);
        let mut model = vec![0u8; (p * 512) as usize];
        {
            let (dev, _g) = open(&reg, "i");
            let mut rng = XorShift::mixed(31);
            // The whole device, then writes inside one area, across one boundary and across
            // several (5000 sectors from 1000: pieces of 1048, 2048, 1904), on both paths.
            for (i, (s, n)) in [(0, p), (10u64, 8u64), (2000, 100), (1000, 5000)]
                .into_iter()
                .enumerate()
            {
                let data = rng.bytes((n * 512) as usize);
                for inline in [false, true] {
                    let (back, ptr) = write_back_buf(&*dev, s, &data, inline);
                    assert_eq!(back.len(), data.len(), "{rest}: write {i}, inline {inline}");
                    assert!(back.as_slice() == data, "{rest}: write {i} buffer changed");
                    // The same memory came back (it went down itself, not a copy).
                    assert_eq!(back.as_ptr(), ptr, "{rest}: write {i}, inline {inline}");
                }
                let o = (s * 512) as usize;
                model[o..o + data.len()].copy_from_slice(&data);
            }
            udm_io::sync::flush(&*dev).unwrap();
        }
        // A fresh table reads every tag from the device.
        reg.remove(&sel("i"), false).unwrap();
        create(
            &reg,
            "i",
            &format!("0 {p} integrity {} 0 {rest}", img.display()),
        )
        .unwrap();
        let (dev, _g) = open(&reg, "i");
        for inline in [false, true] {
            let (all, _) = read_on(&*dev, 0, model.len(), inline);
            assert!(all.unwrap() == model, "{rest}: read back, inline {inline}");
        }
        assert_eq!(status_fields(&reg, "i")[0], "0", "{rest}");
    }
}
