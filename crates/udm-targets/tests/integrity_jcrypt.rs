//! `journal_crypt` in-process: for stream ciphers (ctr(aes), chacha20) and block ciphers
//! (cbc(aes), xts(aes)), a J device's journal taken after a flush, before write-back (what a
//! crash leaves), is encrypted on disk (no clear data, no clear commit ids) and replays to
//! every flushed write with the right key; with another key the replay finds no valid
//! commit id and the device fails with EIO, never returning wrong data. The table line
//! carries the cipher and key, and bad ciphers/keys fail as the kernel's constructor.

mod common;
use common::integrity::{create_formatted, format, tagged_random_writes};
use common::*;
use std::path::Path;
use udm_formats::integrity::JournalGeometry;
use udm_io::{sync, IoError, Sectors};
use udm_testkit::rng::XorShift;

const SECTORS: u64 = 32768;
const KEY32: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY64: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
                     202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

fn rest(alg: &str, key: &str) -> String {
    format!(
        "4 J 4 journal_watermark:100 commit_time:100000 internal_hash:crc32c journal_crypt:{alg}:{key}"
    )
}

/// Write, flush and copy the image while live; returns (crash image, model, provided).
fn crash_image(dir: &Path, rest: &str) -> (std::path::PathBuf, Vec<u8>, u64) {
    let img = image(dir, "d", SECTORS, 0);
    let crash = dir.join("crash");
    let reg = registry();
    let p = create_formatted(&reg, "i", &img, rest);
    let (dev, g) = open(&reg, "i");
    let model = tagged_random_writes(&reg, "i", &*dev, p, 9);
    std::fs::copy(&img, &crash).unwrap();
    drop((dev, g));
    reg.remove(&sel("i"), false).unwrap();
    (crash, model, p)
}

#[test]
fn integrity_journal_crypt_replays_with_its_key_only() {
    for (alg, key) in [
        ("ctr(aes)", KEY32),
        ("chacha20", KEY32),
        ("cbc(aes)", KEY32),
        ("xts(aes)", KEY64),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let r = rest(alg, key);
        let (crash, model, p) = crash_image(dir.path(), &r);
        let bytes = std::fs::read(&crash).unwrap();
        let sections = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
        let jg = JournalGeometry::new(4, 0, false, sections);
        let journal = &bytes[4096..4096 + jg.bytes()];
        // Encrypted: the clear commit ids are not there, nor any written sector's data.
        assert!(jg.plan_replay(journal).is_err(), "{alg}: clear commit ids");
        let probe = &model[(8 * 512)..(8 * 512) + 64];
        let found = journal.windows(64).any(|w| w == probe) && probe.iter().any(|&b| b != 0);
        assert!(!found, "{alg}: clear data in the journal");

        let reg = registry();
        let t = format!("0 {p} integrity {} 0 {r}", crash.display());
        create(&reg, "c", &t).unwrap();
        {
            let (dev, _g) = open(&reg, "c");
            assert!(read(&*dev, 0, model.len()) == model, "{alg}: replayed data");
        }
        assert_eq!(
            status_fields(&reg, "c"),
            ["0", &p.to_string(), "-"],
            "{alg}"
        );
        let (_, st) = reg
            .status(&sel("c"), false, udm_core::StatusType::Table)
            .unwrap();
        assert!(
            st[0]
                .params
                .ends_with(&format!("journal_crypt:{alg}:{key}")),
            "{alg}: {}",
            st[0].params
        );
        reg.remove(&sel("c"), false).unwrap();

        // Another key: no commit id matches, the device fails with EIO.
        let (crash2, _, _) = {
            let d2 = dir.path().join("again");
            std::fs::create_dir(&d2).unwrap();
            crash_image(&d2, &r)
        };
        let other = key.replace("00", "ff");
        let t = format!(
            "0 {p} integrity {} 0 {}",
            crash2.display(),
            rest(alg, &other)
        );
        create(&reg, "w", &t).unwrap();
        {
            let (dev, _g) = open(&reg, "w");
            let e = sync::read_at(&*dev, Sectors(0), 4096).unwrap_err();
            assert_eq!(e, IoError::Io, "{alg}");
        }
        reg.remove(&sel("w"), false).unwrap();
    }
}

#[test]
fn integrity_journal_crypt_clean_stop_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "d", SECTORS, 0);
    let r = rest("ctr(aes)", KEY32);
    let reg = registry();
    let p = format(&reg, &img, &r);
    let t = format!("0 {p} integrity {} 0 {r}", img.display());
    let data = XorShift::mixed(4).bytes((p * 512) as usize);
    create(&reg, "i", &t).unwrap();
    {
        let (dev, _g) = open(&reg, "i");
        write(&*dev, 0, &data);
    }
    reg.remove(&sel("i"), false).unwrap();
    create(&reg, "i", &t).unwrap();
    let (dev, _g) = open(&reg, "i");
    assert!(read(&*dev, 0, data.len()) == data);
    assert_eq!(status_fields(&reg, "i")[0], "0");
}

#[test]
fn integrity_journal_crypt_rejects_what_the_kernel_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "d", SECTORS, 0);
    let reg = registry();
    for (opt, msg, errno) in [
        (
            "journal_crypt:ofb(aes):00",
            "Invalid journal cipher",
            libc::ENOENT,
        ),
        (
            "journal_crypt:ctr(aes):0011",
            "Error setting encryption key",
            libc::EINVAL,
        ),
        (
            "journal_crypt:ctr(aes)",
            "Unable to encrypt journal",
            libc::ENOKEY,
        ),
        (
            "journal_crypt:cbc(aes)",
            "Unable to generate iv",
            libc::ENOKEY,
        ),
        (
            "journal_crypt:ctr(aes):0g",
            "Invalid journal_crypt argument",
            libc::EINVAL,
        ),
    ] {
        let t = format!(
            "0 8 integrity {} 0 4 J 2 internal_hash:crc32c {opt}",
            img.display()
        );
        let e = create(&reg, "x", &t).unwrap_err();
        assert!(e.to_string().contains(msg), "{opt}: {e}");
        assert_eq!(e.errno(), errno, "{opt}");
        let _ = reg.remove(&sel("x"), false);
    }
}
