//! The `integrity` target in-process: formatting an empty device, J/B/D round trips through a
//! clean stop, journal replay from a crash image (a copy of the files taken after a flush,
//! before the journal was written back), and the corruption drill (a flipped data or tag byte
//! fails exactly its block with EILSEQ and counts once; never wrong data).

mod common;
use common::integrity::{format, tagged_random_writes};
use common::*;
use std::path::Path;
use udm_formats::integrity::{Geometry, FLAG_FIXED_PADDING};
use udm_io::{sync, IoError, Sectors};
use udm_testkit::rng::XorShift;

const SECTORS: u64 = 32768;
const EILSEQ: IoError = IoError::Os(libc::EILSEQ);

fn fresh(dir: &Path, name: &str) -> std::path::PathBuf {
    image(dir, name, SECTORS, 0)
}

fn table(img: &Path, p: u64, rest: &str) -> String {
    format!("0 {p} integrity {} 0 {rest}", img.display())
}

fn table_line(reg: &udm_core::Registry, name: &str) -> String {
    let (_, st) = reg
        .status(&sel(name), false, udm_core::StatusType::Table)
        .unwrap();
    st[0].params.clone()
}

/// Write `n` random runs (fixed seed) to `dev`, mirroring them in `model`.
fn scribble(dev: &dyn udm_io::BlockDevice, model: &mut [u8], seed: u64, n: usize, bs: u64) {
    let mut rng = XorShift::mixed(seed);
    let blocks = model.len() as u64 / (bs * 512);
    for _ in 0..n {
        let b = rng.below(blocks - 16);
        let len = 1 + rng.below(16);
        let data = rng.bytes((len * bs * 512) as usize);
        write(dev, b * bs, &data);
        let o = (b * bs * 512) as usize;
        model[o..o + data.len()].copy_from_slice(&data);
    }
}

fn read_all(dev: &dyn udm_io::BlockDevice, len: usize) -> Vec<u8> {
    read(dev, 0, len)
}

fn round_trip(rest: &str, bs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let img = fresh(dir.path(), "d");
    let reg = registry();
    let p = format(&reg, &img, rest);
    assert!(p > SECTORS / 2, "provided {p}");
    create(&reg, "i", &table(&img, p, rest)).unwrap();
    let mut model = vec![0u8; (p * 512) as usize];
    {
        let (dev, _g) = open(&reg, "i");
        // A fresh device was never written: its tags are zeros, so reads fail their check.
        assert_eq!(
            sync::read_at(&*dev, Sectors(0), 512 * bs as usize).unwrap_err(),
            EILSEQ
        );
        // Write everything once so every block has a tag.
        write(&*dev, 0, &model);
        scribble(&*dev, &mut model, 1, 200, bs);
        sync::flush(&*dev).unwrap();
        assert_eq!(read_all(&*dev, model.len()), model);
    }
    assert_eq!(status_fields(&reg, "i"), ["1", &p.to_string(), "-"]);
    reg.remove(&sel("i"), false).unwrap();
    create(&reg, "i", &table(&img, p, rest)).unwrap();
    let (dev, _g) = open(&reg, "i");
    assert_eq!(read_all(&*dev, model.len()), model);
    assert_eq!(status_fields(&reg, "i"), ["0", &p.to_string(), "-"]);
}

#[test]
fn integrity_j_mode_round_trip() {
    round_trip("4 J 1 internal_hash:crc32c", 1);
}

#[test]
fn integrity_d_mode_round_trip_sha256() {
    round_trip("32 D 1 internal_hash:sha256", 1);
}

#[test]
fn integrity_b_mode_round_trip_4k_blocks() {
    round_trip("4 B 2 block_size:4096 internal_hash:crc32c", 8);
}

#[test]
fn integrity_hmac_journal_mac_round_trip() {
    round_trip(
        "32 J 4 fix_padding fix_hmac internal_hash:hmac(sha256):00112233445566778899aabbccddeeff journal_mac:hmac(sha256):0102030405060708",
        1,
    );
}

#[test]
fn integrity_table_line_is_the_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let img = fresh(dir.path(), "d");
    let reg = registry();
    // The figures of a real `integritysetup format` of a 16 MiB device (kernel 6.1).
    let p = format(&reg, &img, "4 J 2 fix_padding internal_hash:crc32c");
    assert_eq!(p, 32328);
    create(
        &reg,
        "i",
        &table(&img, p, "4 J 2 fix_padding internal_hash:crc32c"),
    )
    .unwrap();
    assert_eq!(
        table_line(&reg, "i"),
        format!(
            "{} 0 4 J 7 journal_sectors:176 interleave_sectors:32768 buffer_sectors:128 journal_watermark:50 commit_time:10000 fix_padding internal_hash:crc32c",
            img.display()
        )
    );
    reg.remove(&sel("i"), false).unwrap();
    let img = fresh(dir.path(), "b");
    let rest = "32 B 3 fix_padding fix_hmac internal_hash:sha256";
    let p = format(&reg, &img, rest);
    assert_eq!(p, 30536);
    create(&reg, "i", &table(&img, p, rest)).unwrap();
    assert_eq!(
        table_line(&reg, "i"),
        format!(
            "{} 0 32 B 8 journal_sectors:176 interleave_sectors:32768 buffer_sectors:128 sectors_per_bit:32768 bitmap_flush_interval:10000 fix_padding fix_hmac internal_hash:sha256",
            img.display()
        )
    );
}

#[test]
fn integrity_rejects_what_the_kernel_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let img = fresh(dir.path(), "d");
    let reg = registry();
    for (rest, msg) in [
        ("4 X 0", "Invalid mode (expecting J, B, D, R)"),
        ("0 J 0", "Invalid tag size"),
        ("- J 0", "Unknown tag size"),
        ("4 B 0", "Bitmap mode can be only used with internal hash"),
        (
            "4 J 1 allow_discards",
            "Discard can be only used with internal hash",
        ),
        ("4 J 1 block_size:1000", "Invalid block_size argument"),
        ("4 J 1 bogus", "Invalid argument"),
        ("4 J 1 internal_hash:md9", "Invalid internal hash"),
        (
            "4 J 1 internal_hash:hmac(sha256)",
            "Error setting internal hash key",
        ),
    ] {
        let e = create(&reg, "x", &table(&img, 8, rest)).unwrap_err();
        assert!(e.to_string().contains(msg), "{rest}: {e}");
        let _ = reg.remove(&sel("x"), false);
    }
    // Garbage where the superblock would be.
    std::fs::write(&img, vec![1u8; (SECTORS * 512) as usize]).unwrap();
    let e = create(&reg, "x", &table(&img, 8, "4 J 0")).unwrap_err();
    assert!(
        e.to_string().contains("The device is not initialized"),
        "{e}"
    );
}

/// Copy of the image taken while the device is live: what a crash would leave.
fn snapshot(img: &Path, to: &Path) {
    std::fs::copy(img, to).unwrap();
}

#[test]
fn integrity_journal_replays_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let img = fresh(dir.path(), "d");
    let crash = dir.path().join("crash");
    let reg = registry();
    // Watermark 100 and a long commit time: flushes commit; write-back only when full.
    let rest = "4 J 3 journal_watermark:100 commit_time:100000 internal_hash:crc32c";
    let p = format(&reg, &img, rest);
    create(&reg, "i", &table(&img, p, rest)).unwrap();
    let (dev, g) = open(&reg, "i");
    let model = tagged_random_writes(&reg, "i", &*dev, p, 7);
    // An unflushed write after the flush may or may not survive: it is not in the model.
    snapshot(&img, &crash);
    drop((dev, g));
    // The crash image's journal holds committed entries not yet copied home.
    let bytes = std::fs::read(&crash).unwrap();
    let jg = udm_formats::integrity::JournalGeometry::new(
        4,
        0,
        false,
        u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
    );
    let plan = jg.plan_replay(&bytes[4096..4096 + jg.bytes()]).unwrap();
    assert!(!plan.empty, "{plan:?}");
    let reg2 = registry();
    create(&reg2, "c", &table(&crash, p, rest)).unwrap();
    let (dev2, _g2) = open(&reg2, "c");
    assert_eq!(read_all(&*dev2, model.len()), model);
    assert_eq!(status_fields(&reg2, "c"), ["0", &p.to_string(), "-"]);
}

#[test]
fn integrity_corruption_fails_exactly_the_flipped_blocks() {
    for rest in [
        "4 J 1 internal_hash:crc32c",
        "32 D 1 internal_hash:sha256",
        "4 B 1 internal_hash:crc32c",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let img = fresh(dir.path(), "d");
        let reg = registry();
        let p = format(&reg, &img, rest);
        create(&reg, "i", &table(&img, p, rest)).unwrap();
        let data = XorShift::mixed(3).bytes((p * 512) as usize);
        {
            let (dev, _g) = open(&reg, "i");
            write(&*dev, 0, &data);
        }
        reg.remove(&sel("i"), false).unwrap();
        let tag: u64 = rest.split(' ').next().unwrap().parse().unwrap();
        let fixed = rest.contains("fix_padding");
        let mut geo = Geometry::new(
            0,
            tag as u32,
            15,
            0,
            if fixed { FLAG_FIXED_PADDING } else { 0 },
            0,
            false,
            7,
        );
        let sb = std::fs::read(&img).unwrap();
        geo.journal.sections = u32::from_le_bytes(sb[12..16].try_into().unwrap());
        assert!(geo.fits(p, SECTORS));
        let mut bytes = std::fs::read(&img).unwrap();
        let (d100, _) = geo.locate(100);
        bytes[(d100 * 512 + 17) as usize] ^= 0x40;
        let (_, t2000) = geo.locate(2000);
        bytes[t2000 as usize] ^= 0x01;
        std::fs::write(&img, &bytes).unwrap();
        create(&reg, "i", &table(&img, p, rest)).unwrap();
        let (dev, _g) = open(&reg, "i");
        let mut failed = Vec::new();
        for s in (0..p).step_by(64) {
            let n = 64.min(p - s);
            match sync::read_at(&*dev, Sectors(s), (n * 512) as usize) {
                Ok(b) => assert_eq!(
                    b.as_slice(),
                    &data[(s * 512) as usize..((s + n) * 512) as usize]
                ),
                Err(e) => {
                    assert_eq!(e, EILSEQ, "{rest} at {s}: {:?}", udm_core::klog::lines());
                    failed.push(s);
                }
            }
        }
        assert_eq!(failed, [64, 1984], "{rest}");
        for s in 64..128 {
            let r = sync::read_at(&*dev, Sectors(s), 512);
            assert_eq!(r.is_err(), s == 100, "{rest} sector {s}");
        }
        assert_eq!(status_fields(&reg, "i")[0], "3", "{rest}");
    }
}
