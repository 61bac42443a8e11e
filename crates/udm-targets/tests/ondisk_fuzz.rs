//! Mutation fuzzing of on-disk formats a target reads at construction: the mirror's disk
//! log (header magic, version, region count; the clean bitmap), writecache's superblock
//! and entries, and the dm-raid superblock and bitmap superblock (raid1 and raid5). A valid image written by the target itself is mutated (bit flips, fields set
//! to 0 / all ones / random, truncation) and the target reloaded over it: it loads and
//! serves reads, or fails with an errno — never a panic — and the registry keeps working.

mod common;
use common::*;
use proptest::prelude::*;
use udm_io::Sectors;
use udm_testkit::mutate::{mutated, mutations};

const SECTORS: u64 = 4096;

/// Load `table` as `name`: on success the device reads back its first blocks and reports
/// one status line; on failure the error carries an errno.
fn load_or_fail(reg: &udm_core::Registry, name: &str, table: &str) -> Result<bool, TestCaseError> {
    match create(reg, name, table) {
        Ok(_) => {
            {
                let (dev, _g) = open(reg, name);
                let r = udm_io::sync::read_at(dev.as_ref(), Sectors(0), 8192);
                prop_assert!(r.is_ok(), "{} loaded but fails reads: {:?}", name, r.err());
                let _ = udm_io::sync::write_at(dev.as_ref(), Sectors(16), &[9u8; 4096]);
                let _ = udm_io::sync::flush(dev.as_ref());
            }
            let (_, st) = reg
                .status(&sel(name), false, udm_core::StatusType::Info)
                .unwrap();
            prop_assert_eq!(st.len(), 1);
            reg.remove(&sel(name), false).unwrap();
            Ok(true)
        }
        Err(e) => {
            prop_assert!(e.errno() > 0, "{}: {}", name, e);
            let _ = reg.remove(&sel(name), false);
            Ok(false)
        }
    }
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(150))]

    #[test]
    fn mutated_mirror_disk_logs_load_or_fail_cleanly(
        muts in mutations(vec![0, 4, 8, 12, 1024, 1028], 1, 5),
        sync in prop_oneof![Just(""), Just(" nosync")],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (image(dir.path(), "a", SECTORS, 1), image(dir.path(), "b", SECTORS, 1));
        let log = image(dir.path(), "log", 8, 0);
        let table = if sync.is_empty() {
            format!("0 {SECTORS} mirror disk 2 {} 1024 2 {} 0 {} 0", log.display(), a.display(), b.display())
        } else {
            format!("0 {SECTORS} mirror disk 3 {} 1024 nosync 2 {} 0 {} 0", log.display(), a.display(), b.display())
        };
        let reg = registry();
        prop_assert!(load_or_fail(&reg, "m", &table)?, "the valid mirror must load: {}", table);
        let valid = std::fs::read(&log).unwrap();
        prop_assert_eq!(u32::from_le_bytes(valid[0..4].try_into().unwrap()), 0x4D69_5272);
        std::fs::write(&log, mutated(&valid, &muts)).unwrap();
        load_or_fail(&reg, "m", &table)?;
        create(&reg, "z", "0 8 zero").unwrap();
        let (dev, _g) = open(&reg, "z");
        prop_assert_eq!(read(dev.as_ref(), 0, 512), vec![0u8; 512]);
    }

    #[test]
    fn mutated_writecache_metadata_loads_or_fails_cleanly(
        muts in mutations(vec![0, 4, 8, 16, 20, 24, 28, 64, 72, 80, 88], 1, 6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let origin = image(dir.path(), "origin", SECTORS, 3);
        let cache = zero_file(dir.path(), "cache", 40 * 4096);
        let table = format!("0 {SECTORS} writecache s {} {} 4096 2 pause_writeback 0",
            origin.display(), cache.display());
        let reg = registry();
        // Write once through the cache so entries are committed, then take its image.
        create(&reg, "w", &table).unwrap();
        {
            let (dev, _g) = open(&reg, "w");
            write(dev.as_ref(), 8, &[5u8; 8192]);
            udm_io::sync::flush(dev.as_ref()).unwrap();
        }
        reg.remove(&sel("w"), false).unwrap();
        let valid = std::fs::read(&cache).unwrap();
        std::fs::write(&cache, mutated(&valid, &muts)).unwrap();
        load_or_fail(&reg, "w", &table)?;
    }
}

/// Byte offsets of the dm-raid superblock's fields (the first 256 bytes, every 4) and of the
/// bitmap superblock's (at 4096).
fn raid_fields() -> Vec<usize> {
    (0..256).step_by(4).chain((4096..4352).step_by(4)).collect()
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(60))]

    #[test]
    fn mutated_raid_superblocks_load_or_fail_cleanly(
        muts in mutations(raid_fields(), 1, 5),
        raid5 in any::<bool>(),
        both in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let legs = if raid5 { 3 } else { 2 };
        let mut devs = String::new();
        for i in 0..legs {
            let m = image(dir.path(), &format!("m{i}"), 64, 0);
            let d = image(dir.path(), &format!("d{i}"), SECTORS, 0);
            devs.push_str(&format!(" {} {}", m.display(), d.display()));
        }
        let table = if raid5 {
            format!("0 {} raid raid5_ls 1 64 3{devs}", 2 * SECTORS)
        } else {
            format!("0 {SECTORS} raid raid1 3 64 region_size 256 2{devs}")
        };
        let reg = registry();
        prop_assert!(load_or_fail(&reg, "r", &table)?, "the valid set must load: {}", table);
        for i in 0..if both { legs } else { 1 } {
            let m = dir.path().join(format!("m{i}"));
            let valid = std::fs::read(&m).unwrap();
            let magic = u32::from_le_bytes(valid[0..4].try_into().unwrap());
            prop_assert_eq!(magic, udm_targets::raid::meta::DM_RAID_MAGIC);
            std::fs::write(&m, mutated(&valid, &muts)).unwrap();
        }
        load_or_fail(&reg, "r", &table)?;
    }
}
