//! `verity` target: reads verify against trees built by udm-formats and by real veritysetup;
//! flipped bytes in data, hash blocks or the superblock are detected (EIO, status `C`) or
//! corrected by FEC; corruption modes; table round trip; constructor errors.

mod common;
mod verity_img;
use common::*;
use proptest::prelude::*;
use std::process::Command;
use udm_core::StatusType;
use udm_formats::verity::{Geometry, HashAlg, HashType};
use verity_img::*;

#[test]
fn reads_verify_and_table_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), 4096, 300, &[], None);
    let reg = registry();
    let t = img.table("");
    create_ro(&reg, "v", &t).unwrap();
    let (dev, _g) = open(&reg, "v");
    assert!(read(dev.as_ref(), 0, img.content.len()) == img.content);
    assert_eq!(info(&reg, "v"), "V");
    let table = reg.status(&sel("v"), false, StatusType::Table).unwrap().1[0]
        .params
        .clone();
    assert_eq!(format!("0 2400 verity {table}"), t);
    // Writes fail; unaligned and out-of-range reads fail.
    assert!(udm_io::sync::write_at(dev.as_ref(), udm_io::Sectors(0), &[0u8; 4096]).is_err());
    assert!(udm_io::sync::read_at(dev.as_ref(), udm_io::Sectors(1), 4096).is_err());
    assert_eq!(dev.limits().logical_block_size, 4096);
}

#[test]
fn writable_table_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), 4096, 8, &[], None);
    let reg = registry();
    let e = create(&reg, "v", &img.table("")).unwrap_err();
    assert!(e.to_string().contains("Device must be readonly"), "{e}");
}

#[test]
fn constructor_errors_as_kernel() {
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), 4096, 16, &[], None);
    let reg = registry();
    let base = img.table("");
    let cases = [
        (
            base.replace(" 16 1 sha256", " 16 300 sha256"),
            "Hash device is too small",
        ),
        (
            base.replace("sha256", "md5"),
            "Cannot initialize hash function (-ENOENT)",
        ),
        (
            base.replace("sha256", "sha512"),
            "Invalid root digest (-EINVAL)",
        ),
        (
            base.replace(" 16 1 ", " 15 1 "),
            "Data device is too small (-EINVAL)",
        ),
        (
            format!("{base} 2 root_hash_sig_key_desc k"),
            "DM Verity Sig Verification Invalid key specified",
        ),
        (
            format!(
                "{base} 4 use_fec_from_device {} fec_roots 2",
                img.hash.display()
            ),
            "Missing fec_blocks (-EINVAL)",
        ),
        (
            format!(
                "{base} 6 use_fec_from_device {} fec_roots 2 fec_blocks 3",
                img.hash.display()
            ),
            "Invalid fec_blocks (-EINVAL)",
        ),
    ];
    for (t, want) in cases {
        let e = create_ro(&reg, "bad", &t).unwrap_err().to_string();
        assert!(e.contains(want), "{t}\n=> {e}");
    }
}

#[test]
fn corrupt_data_gives_eio_and_status_c() {
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), 1024, 200, &[], None);
    flip(&img.data, 5 * 1024 + 17, 0x01);
    flip(&img.data, 150 * 1024 + 1023, 0x80);
    let reg = registry();
    create_ro(&reg, "v", &img.table("")).unwrap();
    let (dev, _g) = open(&reg, "v");
    assert_eq!(info(&reg, "v"), "V");
    assert_eq!(failing_blocks(dev.as_ref(), 1024, 200), vec![5, 150]);
    assert_eq!(info(&reg, "v"), "C");
}

/// Reads of several blocks verify them two at a time (sha256 with the SHA extensions): a
/// corrupt block fails every read that holds it, whether it comes first or second in a pair
/// or next to another corrupt one, and nothing else; in logging mode a whole-device read
/// returns the blocks as stored; an expected-zero block inside a pair reads as zeroes.
#[test]
fn corrupt_blocks_inside_multi_block_reads() {
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), 1024, 64, &[20], None);
    let bad = [6u64, 9, 10, 31];
    for b in bad {
        flip(&img.data, b * 1024 + 100, 0x04);
    }
    flip(&img.data, 20 * 1024 + 5, 0x01);
    let reg = registry();
    create_ro(&reg, "v", &img.table("ignore_zero_blocks")).unwrap();
    let (dev, _g) = open(&reg, "v");
    for len in [2u64, 3, 5, 8] {
        for s in 0..=64 - len {
            let r =
                udm_io::sync::read_at(dev.as_ref(), udm_io::Sectors(s * 2), len as usize * 1024);
            let hit = bad.iter().any(|b| (s..s + len).contains(b));
            assert_eq!(r.is_err(), hit, "blocks {s}..{}", s + len);
            if let Ok(got) = r {
                let mut want = img.content[(s * 1024) as usize..][..len as usize * 1024].to_vec();
                if (s..s + len).contains(&20) {
                    want[((20 - s) * 1024) as usize..][..1024].fill(0);
                }
                assert!(got.as_slice() == want.as_slice(), "blocks {s}..{}", s + len);
            }
        }
    }
    assert_eq!(info(&reg, "v"), "C");
    create_ro(&reg, "log", &img.table("ignore_corruption")).unwrap();
    let (dev, _g2) = open(&reg, "log");
    let mut stored = std::fs::read(&img.data).unwrap();
    stored.truncate(64 * 1024);
    assert!(read(dev.as_ref(), 0, 64 * 1024) == stored);
    assert_eq!(info(&reg, "log"), "C");
}

#[test]
fn corrupt_hash_block_fails_the_blocks_it_covers() {
    let d = tempfile::tempdir().unwrap();
    // 1024-byte hash blocks hold 32 sha256 digests: 100 blocks -> level 0 of 4 blocks.
    let img = make(d.path(), 1024, 100, &[], None);
    let geo = Geometry::new(HashType::Normal, HashAlg::Sha256, 1024, 1024, 100, 1).unwrap();
    let (hb, _) = geo.position(40, 0);
    flip(&img.hash, hb * 1024 + 3, 0x10);
    let reg = registry();
    create_ro(&reg, "v", &img.table("")).unwrap();
    let (dev, _g) = open(&reg, "v");
    assert_eq!(
        failing_blocks(dev.as_ref(), 1024, 100),
        (32..64).collect::<Vec<_>>()
    );
    assert_eq!(info(&reg, "v"), "C");
}

#[test]
fn modes_logging_restart_zero_blocks_at_most_once() {
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), 4096, 32, &[3], None);
    flip(&img.data, 7 * 4096, 0xff);
    let reg = registry();
    create_ro(&reg, "log", &img.table("ignore_corruption")).unwrap();
    let (dev, _g) = open(&reg, "log");
    assert!(failing_blocks(dev.as_ref(), 4096, 32).is_empty());
    assert_eq!(info(&reg, "log"), "C");

    create_ro(&reg, "rs", &img.table("restart_on_corruption")).unwrap();
    let (dev, _g2) = open(&reg, "rs");
    assert!(udm_io::sync::read_at(dev.as_ref(), udm_io::Sectors(0), 4096).is_ok());
    assert!(udm_io::sync::read_at(dev.as_ref(), udm_io::Sectors(7 * 8), 4096).is_err());
    // After the corruption the device errors out entirely, and that is a visible dm event.
    assert!(udm_io::sync::read_at(dev.as_ref(), udm_io::Sectors(0), 4096).is_err());
    assert_eq!(reg.info(&sel("rs"), false).unwrap().event_nr, 1);

    // ignore_zero_blocks: a block expected to be zero reads as zeroes without being read.
    flip(&img.data, 3 * 4096 + 9, 0x42);
    create_ro(
        &reg,
        "z",
        &img.table("ignore_zero_blocks check_at_most_once"),
    )
    .unwrap();
    let (dev, _g3) = open(&reg, "z");
    assert_eq!(read(dev.as_ref(), 3 * 8, 4096), vec![0u8; 4096]);
    assert!(udm_io::sync::read_at(dev.as_ref(), udm_io::Sectors(7 * 8), 4096).is_err());
    let table = reg.status(&sel("z"), false, StatusType::Table).unwrap().1[0]
        .params
        .clone();
    assert!(
        table.ends_with(" 2 ignore_zero_blocks check_at_most_once"),
        "{table}"
    );
}

#[test]
fn fec_corrects_data_and_hash_blocks() {
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), 4096, 600, &[], Some(2));
    // 606 protected blocks in 3 rounds: block 1 alone in round 1, blocks 17 and 599 both in
    // round 2 (two errors per codeword: corrected only with erasures), and the top hash block
    // (virtual block 600) in round 0.
    let mut v = std::fs::read(&img.data).unwrap();
    for b in [1usize, 17, 599] {
        v[b * 4096..(b + 1) * 4096]
            .iter_mut()
            .for_each(|x| *x ^= 0x5a);
    }
    std::fs::write(&img.data, v).unwrap();
    flip(&img.hash, 4096 + 100, 0x01); // the top hash block
    let reg = registry();
    create_ro(&reg, "v", &img.table("")).unwrap();
    let (dev, _g) = open(&reg, "v");
    assert!(read(dev.as_ref(), 0, img.content.len()) == img.content);
    assert_eq!(info(&reg, "v"), "V");
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(24))]
    /// Any single flipped byte in the data or the tree is detected: exactly the blocks whose
    /// verification depends on it fail, and every other block reads back unchanged.
    #[test]
    fn any_flip_is_detected(in_data in any::<bool>(), pos in any::<u64>(), mask in 1u8..=255) {
        let d = tempfile::tempdir().unwrap();
        let img = make(d.path(), 512, 64, &[], None);
        let geo = Geometry::new(HashType::Normal, HashAlg::Sha256, 512, 512, 64, 1).unwrap();
        let reg = registry();
        let expected: Vec<u64> = if in_data {
            let off = pos % img.content.len() as u64;
            flip(&img.data, off, mask);
            vec![off / 512]
        } else {
            let tree = geo.tree_blocks() * 512;
            let off = 512 + pos % tree;
            flip(&img.hash, off, mask);
            let hb = off / 512;
            (0..64u64).filter(|&b| (0..geo.levels()).any(|l| geo.position(b, l).0 == hb)).collect()
        };
        create_ro(&reg, "v", &img.table("")).unwrap();
        let (dev, _g) = open(&reg, "v");
        let bad = failing_blocks(dev.as_ref(), 512, 64);
        // A flip in a digest slot's padding or unused tail of a hash block still fails the
        // whole hash block, as in the kernel.
        prop_assert_eq!(&bad, &expected);
        prop_assert_eq!(info(&reg, "v"), if expected.is_empty() { "V" } else { "C" });
        for b in 0..64u64 {
            if !bad.contains(&b) {
                let got = read(dev.as_ref(), b, 512);
                prop_assert!(got == img.content[(b * 512) as usize..][..512]);
            }
        }
    }
}

// ---- with real veritysetup ----

fn veritysetup(args: &[&str]) -> String {
    udm_testkit::run(Command::new("veritysetup").args(args))
}

fn root_of(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn veritysetup_trees_and_fec_open_in_udm() {
    if !udm_testkit::require_tool("veritysetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let bs = 4096u64;
    let blocks = 700u64;
    let content = pseudo((bs * blocks) as usize, 99);
    let data = d.path().join("data.img");
    let hash = d.path().join("hash.img");
    let fec = d.path().join("fec.img");
    std::fs::write(&data, &content).unwrap();
    let out = veritysetup(&[
        "format",
        data.to_str().unwrap(),
        hash.to_str().unwrap(),
        "--fec-device",
        fec.to_str().unwrap(),
        "--fec-roots",
        "4",
        "--salt",
        "0123",
    ]);
    let root = root_of(&out);
    let hash_blocks = std::fs::metadata(&hash).unwrap().len() / bs;
    let fec_blocks = blocks + hash_blocks - 1;
    let table = format!(
        "0 {} verity 1 {} {} 4096 4096 {blocks} 1 sha256 {root} 0123 8 use_fec_from_device {} fec_roots 4 fec_blocks {fec_blocks} fec_start 0",
        blocks * 8,
        data.display(),
        hash.display(),
        fec.display()
    );
    // Corrupt 2 whole blocks in the same FEC round (roots 4 corrects 2 errors per codeword
    // without erasures) and one hash block.
    let rounds = fec_blocks.div_ceil(251);
    let mut v = std::fs::read(&data).unwrap();
    for b in [5u64, 5 + rounds] {
        for k in (0..bs).step_by(7) {
            v[(b * bs + k) as usize] ^= 0xa5;
        }
    }
    std::fs::write(&data, v).unwrap();
    flip(&hash, bs + 9, 0x01);
    let reg = registry();
    create_ro(&reg, "v", &table).unwrap();
    let (dev, _g) = open(&reg, "v");
    assert!(read(dev.as_ref(), 0, content.len()) == content);
    assert_eq!(info(&reg, "v"), "V");
    drop(dev);

    // Without FEC the same image fails exactly in the corrupted places.
    let plain = table.split(" 8 use_fec").next().unwrap().to_string();
    create_ro(&reg, "p", &plain).unwrap();
    let (dev, _g2) = open(&reg, "p");
    let bad = failing_blocks(dev.as_ref(), 4096, blocks);
    assert!(!bad.is_empty() && bad.contains(&5), "{bad:?}");
    assert_eq!(info(&reg, "p"), "C");
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(16))]
    /// FEC up to its limit: with `roots` parity bytes, a round survives as many bad data
    /// blocks as `roots` (they are located as erasures by their hashes). Past the limit the
    /// Reed-Solomon decoder miscorrects; the hash check rejects what it got wrong, but a block
    /// the miscorrection happens to restore reads back — the kernel does the same (pinned in
    /// `kernel_verity_same_failures_and_status`: block 123 of the "beyond" case). So: rounds
    /// within the limit read completely, only bad blocks of rounds past it fail, at least one
    /// of them does (no decoder gets every codeword right past its radius), and every block
    /// that reads has its original content.
    #[test]
    fn fec_corrects_up_to_its_limit(bad in proptest::collection::btree_set(0u64..300, 0..14)) {
        let d = tempfile::tempdir().unwrap();
        let roots = 4u32;
        let img = make(d.path(), 512, 300, &[], Some(roots));
        let mut v = std::fs::read(&img.data).unwrap();
        for &b in &bad {
            v[(b * 512) as usize..][..512].iter_mut().for_each(|x| *x = !*x);
        }
        std::fs::write(&img.data, v).unwrap();
        let fec_blocks = img.fec.as_ref().unwrap().1;
        let rounds = fec_blocks.div_ceil(255 - roots as u64);
        let per_round = |r: u64| bad.iter().filter(|&&b| b % rounds == r).count();
        let past_limit: Vec<u64> = bad
            .iter()
            .copied()
            .filter(|&b| per_round(b % rounds) > roots as usize)
            .collect();
        let reg = registry();
        let t = img.table("").replace("fec_roots 2", &format!("fec_roots {roots}"));
        create_ro(&reg, "v", &t).unwrap();
        let (dev, _g) = open(&reg, "v");
        let fails = failing_blocks(dev.as_ref(), 512, 300);
        prop_assert!(fails.iter().all(|b| past_limit.contains(b)), "{:?} not within {:?}", fails, past_limit);
        for r in 0..rounds {
            let in_round = |b: &u64| b % rounds == r;
            if past_limit.iter().any(in_round) {
                prop_assert!(fails.iter().any(in_round), "round {} past the limit fully corrected", r);
            }
        }
        for b in (0..300u64).filter(|b| !fails.contains(b)) {
            prop_assert!(read(dev.as_ref(), b, 512) == img.content[(b * 512) as usize..][..512]);
        }
    }

    /// Random words after the ten positional arguments never panic the constructor.
    #[test]
    fn absurd_tables_are_errors_not_panics(
        dbs in prop_oneof![Just(512u64), Just(4096), any::<u64>()],
        hbs in prop_oneof![Just(512u64), Just(4096), any::<u64>()],
        blocks in prop_oneof![Just(8u64), any::<u64>()],
        start in prop_oneof![Just(1u64), any::<u64>()],
        opts in proptest::collection::vec(prop_oneof![
            Just("ignore_corruption".to_string()), Just("check_at_most_once".to_string()),
            Just("use_fec_from_device".to_string()), Just("fec_roots".to_string()),
            Just("fec_blocks".to_string()), Just("fec_start".to_string()),
            Just("ignore_zero_blocks".to_string()), any::<u64>().prop_map(|n| n.to_string()),
        ], 0..8),
    ) {
        let d = tempfile::tempdir().unwrap();
        let img = make(d.path(), 4096, 8, &[], None);
        let h = img.hash.display().to_string();
        let opts: Vec<String> = opts.into_iter().map(|o| if o == "use_fec_from_device" { format!("{o} {h}") } else { o }).collect();
        let t = format!(
            "0 64 verity 1 {} {h} {dbs} {hbs} {blocks} {start} sha256 {} - {} {}",
            img.data.display(), img.root, opts.len(), opts.join(" ")
        );
        let reg = registry();
        let _ = create_ro(&reg, "v", &t);
    }
}

#[test]
fn formats_algorithms_and_block_sizes() {
    use udm_formats::verity::BlockHasher;
    let combos = [
        (HashType::ChromeOs, HashAlg::Sha1, 4096u32, 1024u32),
        (HashType::Normal, HashAlg::Sha512, 1024, 4096),
        (HashType::Normal, HashAlg::Sha1, 512, 512),
        (HashType::ChromeOs, HashAlg::Sha256, 4096, 512),
        (HashType::Normal, HashAlg::Sha384, 2048, 2048),
    ];
    for (ty, alg, dbs, hbs) in combos {
        let d = tempfile::tempdir().unwrap();
        let blocks = 300u64;
        let content = pseudo((blocks * dbs as u64) as usize, dbs as u64 ^ hbs as u64);
        let salt = [9u8, 8, 7];
        let hasher = BlockHasher::new(alg, ty, &salt);
        let geo = Geometry::new(ty, alg, dbs, hbs, blocks, 2).unwrap();
        let leaves: Vec<_> = content
            .chunks(dbs as usize)
            .map(|c| hasher.digest(c))
            .collect();
        let (tree, root) = geo.build_from_leaves(&hasher, &leaves);
        let mut hash_img = vec![0u8; 2 * hbs as usize];
        hash_img.extend_from_slice(&tree);
        let (dp, hp) = (d.path().join("d"), d.path().join("h"));
        std::fs::write(&dp, &content).unwrap();
        std::fs::write(&hp, &hash_img).unwrap();
        let t = format!(
            "0 {} verity {} {} {} {dbs} {hbs} {blocks} 2 {} {} 090807",
            blocks * dbs as u64 / 512,
            ty.as_u32(),
            dp.display(),
            hp.display(),
            alg.name(),
            root.hex()
        );
        let reg = registry();
        create_ro(&reg, "v", &t).unwrap();
        let (dev, _g) = open(&reg, "v");
        assert!(read(dev.as_ref(), 0, content.len()) == content, "{t}");
        drop(dev);
        // One flipped byte in the last data block fails exactly that block.
        flip(&dp, content.len() as u64 - 1, 1);
        create_ro(&reg, "w", &t).unwrap();
        let (dev, _g) = open(&reg, "w");
        assert_eq!(
            failing_blocks(dev.as_ref(), dbs, blocks),
            vec![blocks - 1],
            "{t}"
        );
    }
}
