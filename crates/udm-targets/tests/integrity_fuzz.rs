//! Fuzzing dm-integrity's decoders (fixed, printed seed): random superblocks decode without
//! panicking and re-encode to themselves; random journals give a replay plan inside the
//! journal or an error; a formatted device whose superblock fields and journal bytes are
//! overwritten with random values is either refused or opens and serves reads and writes
//! (possibly failing them), never panicking and never returning data that fails its check.

mod common;
use common::*;
use proptest::prelude::*;
use udm_formats::integrity::{JournalGeometry, Superblock};
use udm_io::{sync, Sectors};

proptest! {
    #![proptest_config(udm_testkit::prop::config(400))]
    #[test]
    fn superblocks_decode_and_round_trip(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut b = b"integrt\0".to_vec();
        b.extend_from_slice(&tail);
        if let Ok(sb) = Superblock::decode(&b) {
            let again = Superblock::decode(&sb.encode()).unwrap();
            prop_assert_eq!(again, sb);
        }
    }

    #[test]
    fn journals_plan_inside_the_ring(
        tag in 1u32..64, l2 in 0u8..4, mac in any::<bool>(), sections in 1u32..5,
        seed in any::<u64>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..40),
    ) {
        let g = JournalGeometry::new(tag, l2, mac, sections);
        prop_assume!(g.section_entries > 0);
        let mut j = vec![0u8; g.bytes()];
        for i in 0..sections {
            g.init_section(&mut j, i, (seed % 4) as usize);
        }
        for (at, v) in flips {
            let n = j.len();
            j[at % n] = v;
        }
        if let Ok(p) = g.plan_replay(&j) {
            prop_assert!(p.write_start < sections);
            prop_assert!(p.write_sections <= sections);
            prop_assert!(p.want_seq < 4 && p.last_used < 4);
        }
    }
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(40))]
    #[test]
    fn corrupted_devices_are_refused_or_served(
        mode in prop_oneof![Just("J"), Just("B"), Just("D")],
        sb_flips in proptest::collection::vec((8usize..64, any::<u8>()), 0..4),
        j_flips in proptest::collection::vec((0usize..90112, any::<u8>()), 0..16),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "d", 8192, 0);
        let rest = format!("4 {mode} 1 internal_hash:crc32c");
        let reg = registry();
        create(&reg, "f", &format!("0 8 integrity {} 0 {rest}", img.display())).unwrap();
        let p: u64 = status_fields(&reg, "f")[1].parse().unwrap();
        reg.remove(&sel("f"), false).unwrap();
        create(&reg, "i", &format!("0 {p} integrity {} 0 {rest}", img.display())).unwrap();
        let data = udm_testkit::rng::pseudo(64 * 512, 3);
        {
            let (dev, _g) = open(&reg, "i");
            write(&*dev, 0, &data);
            sync::flush(&*dev).unwrap();
        }
        reg.remove(&sel("i"), false).unwrap();
        let mut bytes = std::fs::read(&img).unwrap();
        for (at, v) in &sb_flips {
            bytes[*at] = *v;
        }
        let jlen = bytes.len() - 4096;
        for (at, v) in &j_flips {
            bytes[4096 + at % jlen.min(90112)] = *v;
        }
        std::fs::write(&img, &bytes).unwrap();
        if create(&reg, "i", &format!("0 8 integrity {} 0 {rest}", img.display())).is_ok() {
            let (dev, _g) = open(&reg, "i");
            // Reads either fail or return the data as written (tags still match it).
            if let Ok(b) = sync::read_at(&*dev, Sectors(0), 8 * 512) {
                prop_assert_eq!(b.as_slice(), &data[..8 * 512]);
            }
            let _ = sync::write_at(&*dev, Sectors(0), &data[..4096]);
            let _ = sync::flush(&*dev);
        }
    }
}
