//! The `raid` target against a byte-array model (fixed, printed seed) over mapped-device
//! legs: random writes and reads at every level, legs failed under it (an `error` table
//! loaded below) up to what the level tolerates and one more (then EIO or the right data,
//! never wrong data), rebuild of a replaced leg, resync limited to the bitmap's dirty
//! regions after an unclean stop, check/repair with mismatch counts, the on-disk
//! superblock and bitmap fields, and decoders that never panic on garbage; `parallel`:
//! split raid1 reads, concurrent mirrored writes and parity sync with many rows in flight.

mod common;
use common::*;
use udm_io::Sectors;
use udm_targets::raid::meta::*;
use udm_testkit::rng::XorShift;

const LEG: u64 = 2048;
const META: u64 = 64;
const CHUNK: u64 = 64;

struct Set {
    reg: udm_core::Registry,
    dir: tempfile::TempDir,
    n: usize,
    leg: u64,
}

impl Set {
    fn new(n: usize) -> Set {
        Set::sized(n, LEG)
    }
    /// `n` legs of `leg` sectors each.
    fn sized(n: usize, leg: u64) -> Set {
        let reg = registry();
        let dir = tempfile::tempdir().unwrap();
        for i in 0..n {
            let m = image(dir.path(), &format!("m{i}"), META, 0);
            let d = image(dir.path(), &format!("d{i}"), leg, 0);
            create(
                &reg,
                &format!("m{i}"),
                &format!("0 {META} linear {} 0", m.display()),
            )
            .unwrap();
            create(
                &reg,
                &format!("d{i}"),
                &format!("0 {leg} linear {} 0", d.display()),
            )
            .unwrap();
        }
        Set { reg, dir, n, leg }
    }
    fn devs(&self) -> String {
        let mut s = format!("{}", self.n);
        for i in 0..self.n {
            s.push_str(&format!(" /dev/mapper/m{i} /dev/mapper/d{i}"));
        }
        s
    }
    fn table(&self, len: u64, ty: &str, params: &[&str]) -> String {
        format!(
            "0 {len} raid {ty} {} {}{} {}",
            params.len() + 1,
            CHUNK,
            params.iter().map(|p| format!(" {p}")).collect::<String>(),
            self.devs()
        )
    }
    fn reload(&self, name: &str, table: &str) {
        self.reg.suspend(&sel(name), false, false).unwrap();
        self.reg.load(&sel(name), &lines(table), false).unwrap();
        self.reg.resume(&sel(name)).unwrap();
    }
    /// Fail leg `i`'s data device: every I/O to it errors from now on.
    fn fail(&self, i: usize) {
        self.reload(&format!("d{i}"), &format!("0 {} error", self.leg));
    }
    fn leg_path(&self, what: &str, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("{what}{i}"))
    }
}

/// (type, legs, array length, params, failures tolerated)
fn kinds() -> Vec<(&'static str, usize, u64, Vec<&'static str>, usize)> {
    vec![
        ("raid1", 3, LEG, vec!["region_size", "256"], 2),
        ("raid0", 3, 3 * LEG, vec![], 0),
        ("raid10", 4, 2 * LEG, vec!["region_size", "256"], 1),
        (
            "raid10",
            4,
            2 * LEG,
            vec!["raid10_format", "far", "region_size", "256"],
            1,
        ),
        (
            "raid10",
            4,
            2 * LEG,
            vec!["raid10_format", "offset", "region_size", "256"],
            1,
        ),
        ("raid4", 4, 3 * LEG, vec!["region_size", "256"], 1),
        ("raid5_la", 4, 3 * LEG, vec!["region_size", "256"], 1),
        ("raid5_ra", 4, 3 * LEG, vec!["region_size", "256"], 1),
        ("raid5_ls", 4, 3 * LEG, vec!["region_size", "256"], 1),
        ("raid5_rs", 4, 3 * LEG, vec!["region_size", "256"], 1),
        ("raid5_n", 4, 3 * LEG, vec!["region_size", "256"], 1),
        ("raid6_zr", 5, 3 * LEG, vec!["region_size", "256"], 2),
        ("raid6_nr", 5, 3 * LEG, vec!["region_size", "256"], 2),
        ("raid6_nc", 5, 3 * LEG, vec!["region_size", "256"], 2),
        ("raid6_n_6", 5, 3 * LEG, vec!["region_size", "256"], 2),
        ("raid6_ls_6", 5, 3 * LEG, vec!["region_size", "256"], 2),
        ("raid6_ra_6", 5, 3 * LEG, vec!["region_size", "256"], 2),
    ]
}

fn random_io(
    dev: &dyn udm_io::BlockDevice,
    model: &mut [u8],
    rng: &mut XorShift,
    rounds: usize,
    len: u64,
    ctx: &str,
) {
    for _ in 0..rounds {
        let s = rng.below(len);
        let n = (1 + rng.below(3 * CHUNK)).min(len - s);
        let (a, b) = ((s * 512) as usize, ((s + n) * 512) as usize);
        if rng.below(3) > 0 {
            let data = rng.bytes(b - a);
            write(dev, s, &data);
            model[a..b].copy_from_slice(&data);
        } else {
            assert!(read(dev, s, b - a) == model[a..b], "{ctx}: read at {s}+{n}");
        }
    }
}

#[test]
fn raid_levels_match_the_model_through_leg_failures() {
    let seed = udm_testkit::prop::seed();
    eprintln!("raid: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed);
    for (ty, n, len, params, tolerated) in kinds() {
        let set = Set::new(n);
        let table = set.table(len, ty, &params);
        create(&set.reg, "r", &table).unwrap_or_else(|e| panic!("{table}: {e:?}"));
        wait_idle(&set.reg, "r");
        let mut model = vec![0u8; (len * 512) as usize];
        let (dev, _g) = open(&set.reg, "r");
        random_io(&*dev, &mut model, &mut rng, 150, len, ty);
        // Fail as many legs as tolerated, one at a time, with I/O in between.
        let mut failed = Vec::new();
        for k in 0..tolerated {
            let i = (rng.below(n as u64) as usize + k) % n;
            let i = (0..n)
                .map(|x| (i + x) % n)
                .find(|x| !failed.contains(x))
                .unwrap();
            // raid10: keep each mirror pair alive.
            if ty == "raid10" && failed.iter().any(|&f: &usize| f / 2 == i / 2) {
                continue;
            }
            set.fail(i);
            failed.push(i);
            random_io(
                &*dev,
                &mut model,
                &mut rng,
                100,
                len,
                &format!("{ty} -{failed:?}"),
            );
            // Every byte still reads back right.
            let all = read(&*dev, 0, model.len());
            assert!(all == model, "{ty}: full read with {failed:?} failed");
        }
        let f = status_fields(&set.reg, "r");
        for &i in &failed {
            assert_eq!(f[2].as_bytes()[i], b'D', "{ty}: {f:?}");
        }
        // One failure more than tolerated: reads fail or are right, never wrong.
        if ty != "raid10" {
            let i = (0..n).find(|x| !failed.contains(x)).unwrap();
            set.fail(i);
            for _ in 0..40 {
                let s = rng.below(len);
                let cnt = (1 + rng.below(2 * CHUNK)).min(len - s);
                let (a, b) = ((s * 512) as usize, ((s + cnt) * 512) as usize);
                if let Ok(buf) = udm_io::sync::read_at(&*dev, Sectors(s), b - a) {
                    assert!(buf.as_slice() == &model[a..b], "{ty}: wrong data at {s}");
                }
            }
        }
        drop(_g);
    }
}

fn sb_of(path: &std::path::Path) -> (Superblock, BitmapSuper, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    (
        Superblock::decode(&b[..512]),
        BitmapSuper::decode(&b[4096..4096 + 256]),
        b[4096 + 256..].to_vec(),
    )
}

#[test]
fn superblocks_and_bitmap_hold_the_kernel_fields() {
    let set = Set::new(4);
    let len = 3 * LEG;
    create(
        &set.reg,
        "r",
        &set.table(len, "raid5_ls", &["region_size", "256"]),
    )
    .unwrap();
    let f = wait_idle(&set.reg, "r");
    assert_eq!(
        f.join(" "),
        format!("raid5_ls 4 AAAA {LEG}/{LEG} idle 0 0 -")
    );
    for i in 0..4 {
        let (sb, bm, _) = sb_of(&set.leg_path("m", i));
        assert!(sb.valid_magic());
        assert_eq!(sb.compat_features, FEATURE_SUPPORTS_V190);
        assert_eq!((sb.num_devices, sb.array_position), (4, i as u32));
        assert_eq!(
            (sb.level, sb.layout, sb.stripe_sectors),
            (5, 2, CHUNK as u32)
        );
        assert_eq!((sb.sectors, sb.array_sectors), (LEG, len));
        assert_eq!(sb.array_resync_offset, u64::MAX);
        assert_eq!(sb.disk_recovery_offset, u64::MAX);
        assert_eq!(sb.reshape_position, u64::MAX);
        assert_eq!(sb.failed_devices, [0; 4]);
        assert_eq!((bm.magic, bm.version), (BITMAP_MAGIC, 4));
        assert_eq!(
            (bm.chunksize, bm.sync_size, bm.daemon_sleep),
            (256 * 512, LEG, 5)
        );
        assert_eq!(bm.validate(), Ok(()));
        // md's dirty page: 0xff past the 8 region bits, to the end of the written block.
        let bits = sb_of(&set.leg_path("m", i)).2;
        assert_eq!(bits[0], 0, "leg {i}");
        assert!(
            bits[1..256].iter().all(|&b| b == 0xff),
            "leg {i}: {:02x?}",
            &bits[..8]
        );
    }
    let ev0 = sb_of(&set.leg_path("m", 0)).0.events;
    set.fail(2);
    let (dev, _g) = open(&set.reg, "r");
    write(&*dev, 0, &vec![7u8; 512 * CHUNK as usize * 3]);
    let (sb, _, bits) = sb_of(&set.leg_path("m", 0));
    assert!(sb.is_failed(2) && !sb.is_failed(0), "{sb:?}");
    assert!(sb.events > ev0);
    // The bitmap marks the written region while degraded.
    assert!(test_bit(&bits, 0));
    assert_eq!(status_fields(&set.reg, "r")[2], "AADA");
}

#[test]
fn rebuild_of_a_replaced_leg_restores_every_leg() {
    let seed = udm_testkit::prop::seed();
    let mut rng = XorShift::mixed(seed ^ 0x5eed);
    for (ty, n, len) in [
        ("raid1", 2, LEG),
        ("raid5_ls", 4, 3 * LEG),
        ("raid6_zr", 5, 3 * LEG),
        ("raid10", 4, 2 * LEG),
    ] {
        let set = Set::new(n);
        create(&set.reg, "r", &set.table(len, ty, &["region_size", "256"])).unwrap();
        wait_idle(&set.reg, "r");
        let mut model = vec![0u8; (len * 512) as usize];
        let (dev, g) = open(&set.reg, "r");
        random_io(&*dev, &mut model, &mut rng, 100, len, ty);
        set.fail(1);
        random_io(&*dev, &mut model, &mut rng, 60, len, ty);
        drop(g);
        // Replace leg 1 with a fresh device, rebuild it.
        let fresh = image(set.dir.path(), "new1", LEG, 0xee);
        set.reload("d1", &format!("0 {LEG} linear {} 0", fresh.display()));
        std::fs::write(set.leg_path("m", 1), vec![0u8; (META * 512) as usize]).unwrap();
        let t = set.table(len, ty, &["rebuild", "1", "region_size", "256"]);
        set.reload("r", &t);
        let f = wait_idle(&set.reg, "r");
        assert!(f[2].bytes().all(|c| c == b'A'), "{ty}: {f:?}");
        let (dev, _g) = open(&set.reg, "r");
        assert!(
            read(&*dev, 0, model.len()) == model,
            "{ty}: data after rebuild"
        );
        // Every leg checks out: a scrub finds no mismatch.
        set.reg
            .message(&sel("r"), 0, &["check".to_string()])
            .unwrap();
        let f = wait_idle(&set.reg, "r");
        assert_eq!(f[5], "0", "{ty}: {f:?}");
        // And with the other legs failed the rebuilt one alone serves the data.
        if ty == "raid1" {
            set.fail(0);
            assert!(
                read(&*dev, 0, model.len()) == model,
                "raid1 from the rebuilt leg"
            );
        }
    }
}

#[test]
fn check_counts_mismatches_and_repair_fixes_them() {
    let set = Set::new(2);
    create(
        &set.reg,
        "r",
        &set.table(LEG, "raid1", &["region_size", "256"]),
    )
    .unwrap();
    wait_idle(&set.reg, "r");
    // Corrupt leg 1 underneath, 8 KiB at sector 512.
    set.reg.suspend(&sel("r"), false, false).unwrap();
    {
        let (d1, _g) = open(&set.reg, "d1");
        write(&*d1, 512, &vec![0x55u8; 8192]);
    }
    set.reg.resume(&sel("r")).unwrap();
    set.reg
        .message(&sel("r"), 0, &["check".to_string()])
        .unwrap();
    let f = wait_idle(&set.reg, "r");
    assert_eq!((f[4].as_str(), f[5].as_str()), ("idle", "16"), "{f:?}");
    set.reg
        .message(&sel("r"), 0, &["repair".to_string()])
        .unwrap();
    wait_idle(&set.reg, "r");
    set.reg
        .message(&sel("r"), 0, &["check".to_string()])
        .unwrap();
    let f = wait_idle(&set.reg, "r");
    assert_eq!(f[5], "0", "{f:?}");
    assert!(set
        .reg
        .message(&sel("r"), 0, &["bogus".to_string()])
        .is_err());
}

#[test]
fn unclean_stop_resyncs_only_the_dirty_regions() {
    let set = Set::new(2);
    let t = set.table(LEG, "raid1", &["region_size", "256"]);
    create(&set.reg, "r", &t).unwrap();
    wait_idle(&set.reg, "r");
    {
        let (dev, _g) = open(&set.reg, "r");
        write(&*dev, 300, &vec![1u8; 4096]); // region 1
    }
    // The metadata as a crash would leave it: bits still set (the daemon clears after 5 s).
    let crash: Vec<Vec<u8>> = (0..2)
        .map(|i| std::fs::read(set.leg_path("m", i)).unwrap())
        .collect();
    assert!(test_bit(&sb_of(&set.leg_path("m", 0)).2, 1));
    set.reg.remove(&sel("r"), false).unwrap();
    for (i, c) in crash.iter().enumerate() {
        std::fs::write(set.leg_path("m", i), c).unwrap();
    }
    // The legs differ in region 1 (torn write) and in region 5 (not in the bitmap).
    for s in [300u64, 5 * 256] {
        let (d1, _g) = open(&set.reg, "d1");
        write(&*d1, s, &vec![9u8; 512]);
    }
    create(&set.reg, "r", &t).unwrap();
    wait_idle(&set.reg, "r");
    let (d0, _a) = open(&set.reg, "d0");
    let (d1, _b) = open(&set.reg, "d1");
    assert_eq!(
        read(&*d0, 300, 512),
        read(&*d1, 300, 512),
        "dirty region resynced"
    );
    assert_ne!(
        read(&*d0, 1280, 512),
        read(&*d1, 1280, 512),
        "clean region untouched"
    );
}

#[test]
fn table_errors_are_the_kernels() {
    let set = Set::new(4);
    let bad = [
        ("raid7", "Unrecognised raid_type"),
        ("raid5_ls 1 63", "Chunk size must be a power of 2"),
        ("raid5_ls 1 4", "Chunk size value is too small"),
        (
            "raid5_ls 3 64 sync nosync",
            "sync and nosync are mutually exclusive",
        ),
        (
            "raid5_ls 3 64 write_mostly 1",
            "write_mostly option is only valid for RAID1",
        ),
        (
            "raid1 3 0 region_size 100",
            "Region size is not a power of 2",
        ),
        (
            "raid10 3 64 raid10_format wide",
            "Invalid 'raid10_format' value given",
        ),
        ("raid5_ls 3 64 rebuild 9", "Invalid rebuild index given"),
        (
            "raid5_ls 2 64 frob",
            "Wrong number of raid parameters given",
        ),
        ("raid5_ls 3 64 frob 1", "Unable to parse RAID parameter"),
        (
            "raid1 3 0 stripe_cache 8",
            "Inappropriate argument: stripe_cache",
        ),
    ];
    for (head, msg) in bad {
        let (ty, rest) = head.split_once(' ').unwrap_or((head, "1 64"));
        let t = format!("0 {} raid {ty} {rest} {}", 3 * LEG, set.devs());
        let e = create(&set.reg, "x", &t).unwrap_err();
        assert!(e.to_string().contains(msg), "{t}: {e}");
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(udm_testkit::prop::config(256))]
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..700)) {
            let s = Superblock::decode(&b);
            let _ = s.is_failed(255);
            let bm = BitmapSuper::decode(&b);
            let _ = bm.validate();
            prop_assert_eq!(Superblock::decode(&s.encode(512)), s);
        }

        #[test]
        fn garbage_metadata_never_panics(
            noise in proptest::collection::vec(any::<u8>(), 4096 + 512),
            magic in any::<bool>(),
        ) {
            let set = Set::new(2);
            for i in 0..2 {
                let mut m = vec![0u8; (META * 512) as usize];
                m[..noise.len()].copy_from_slice(&noise);
                if magic {
                    m[..4].copy_from_slice(&DM_RAID_MAGIC.to_le_bytes());
                    m[4096..4100].copy_from_slice(&BITMAP_MAGIC.to_le_bytes());
                }
                std::fs::write(set.leg_path("m", i), m).unwrap();
            }
            let _ = create(&set.reg, "r", &set.table(LEG, "raid1", &[]));
        }
    }
}

/// The parallel paths: raid1 reads cut over every copy (same bytes as one leg holds; a
/// leg failing under a piece is reported and the piece read elsewhere), mirrored writes
/// in flight together (each on every leg when it is acknowledged), and parity resync and
/// rebuild running many multi-row jobs at once (identical legs afterwards).
mod parallel {

    use super::*;
    use std::os::unix::fs::FileExt;
    use udm_io::{Bio, IoBuf};

    /// 16 MiB legs: more rows than one window of sync jobs covers.
    const BIG: u64 = 32768;

    /// The same pseudo-random contents on every data leg (a mirror in sync); returns them.
    fn fill_same(set: &Set, seed: u64) -> Vec<u8> {
        let data = udm_testkit::rng::noise((set.leg * 512) as usize, seed);
        for i in 0..set.n {
            std::fs::write(set.leg_path("d", i), &data).unwrap();
        }
        data
    }

    fn health(set: &Set) -> String {
        status_fields(&set.reg, "r")[2].clone()
    }

    #[test]
    fn split_raid1_reads_return_what_one_leg_holds() {
        let seed = udm_testkit::prop::seed();
        eprintln!("seed {seed}");
        let mut rng = XorShift::mixed(seed ^ 0x5b11);
        for n in [2usize, 3, 4] {
            let set = Set::sized(n, BIG);
            let data = fill_same(&set, seed + n as u64);
            create(&set.reg, "r", &set.table(BIG, "raid1", &["nosync"])).unwrap();
            let (dev, _g) = open(&set.reg, "r");
            for _ in 0..60 {
                let len = 8 * (1 + rng.below(400));
                let s = rng.below(BIG - len);
                let (a, b) = ((s * 512) as usize, ((s + len) * 512) as usize);
                assert!(
                    read(&*dev, s, b - a) == data[a..b],
                    "raid1 x{n}: read at {s}+{len}"
                );
            }
            assert_eq!(health(&set), "A".repeat(n), "raid1 x{n}");
        }
    }

    #[test]
    fn a_leg_failing_under_a_split_read_is_reported_and_the_piece_read_elsewhere() {
        let seed = udm_testkit::prop::seed();
        for n in [2usize, 3, 4] {
            for k in 0..n {
                let set = Set::sized(n, BIG);
                let data = fill_same(&set, seed ^ (n * 10 + k) as u64);
                create(&set.reg, "r", &set.table(BIG, "raid1", &["nosync"])).unwrap();
                set.fail(k);
                let (dev, _g) = open(&set.reg, "r");
                // One 512 KiB read: every copy gets a piece of it, so leg k's error shows.
                let (s, len) = (2048u64, 1024u64);
                let (a, b) = ((s * 512) as usize, ((s + len) * 512) as usize);
                assert!(read(&*dev, s, b - a) == data[a..b], "x{n} leg {k} failed");
                let want: String = (0..n).map(|i| if i == k { 'D' } else { 'A' }).collect();
                assert_eq!(health(&set), want, "x{n}: the failed leg is reported");
                assert!(
                    read(&*dev, 0, data.len()) == data,
                    "x{n} leg {k}: whole device"
                );
            }
        }
    }

    #[test]
    fn concurrent_mirrored_writes_are_on_every_leg_when_acknowledged() {
        let seed = udm_testkit::prop::seed();
        let mut rng = XorShift::mixed(seed ^ 0xc0c0);
        // raid10 over 2 legs keeps both copies at the same offset, as raid1 does.
        for (ty, n) in [("raid1", 3usize), ("raid10", 2)] {
            let set = Set::sized(n, BIG);
            let t = set.table(BIG, ty, &["nosync", "region_size", "1024"]);
            create(&set.reg, "r", &t).unwrap();
            let (dev, _g) = open(&set.reg, "r");
            // Dirty every region first (bitmap bits set), so the writes below need no
            // bitmap write and go to the legs straight from the submitter.
            for r in 0..BIG / 1024 {
                write(&*dev, r * 1024, &[0x11u8; 4096]);
            }
            let legs: Vec<std::sync::Arc<std::fs::File>> = (0..n)
                .map(|i| std::sync::Arc::new(std::fs::File::open(set.leg_path("d", i)).unwrap()))
                .collect();
            let (tx, rx) = crossbeam_channel::unbounded();
            // 64 writes in flight at once, each inside its own 256 KiB slot.
            let writes = 64u64;
            for w in 0..writes {
                let slot = BIG / writes;
                let len = 8 * (1 + rng.below(slot / 8 - 1));
                let s = w * slot + rng.below(slot - len);
                let data = rng.bytes((len * 512) as usize);
                let (legs, tx, expect) = (legs.clone(), tx.clone(), data.clone());
                let bio = Bio::write(
                    Sectors(s),
                    IoBuf::from_vec(data),
                    Box::new(move |r, _| {
                        // At the acknowledgement every leg already holds the data.
                        let on_all = legs.iter().all(|f| {
                            let mut b = vec![0u8; expect.len()];
                            f.read_exact_at(&mut b, s * 512).is_ok() && b == expect
                        });
                        let _ = tx.send((s, r.is_ok(), on_all));
                    }),
                );
                dev.submit(bio);
            }
            drop(tx);
            let got: Vec<(u64, bool, bool)> = rx.iter().collect();
            assert_eq!(got.len() as u64, writes, "{ty}");
            for (s, ok, on_all) in got {
                assert!(
                    ok && on_all,
                    "{ty}: write at {s}: ok {ok}, on every leg {on_all}"
                );
            }
            assert_eq!(health(&set), "A".repeat(n), "{ty}");
        }
    }

    /// The data legs' bytes.
    fn legs_of(set: &Set, names: &[String]) -> Vec<Vec<u8>> {
        names
            .iter()
            .map(|p| std::fs::read(set.dir.path().join(p)).unwrap())
            .collect()
    }

    #[test]
    fn parity_resync_and_rebuild_with_many_rows_in_flight_give_identical_legs() {
        let seed = udm_testkit::prop::seed();
        let mut rng = XorShift::mixed(seed ^ 0xeb11d);
        for (ty, n, parity) in [
            ("raid5_ls", 4usize, 1u64),
            ("raid4", 4, 1),
            ("raid6_zr", 5, 2),
            ("raid6_ls_6", 5, 2),
        ] {
            let set = Set::sized(n, BIG);
            // Junk on every leg: the initial resync must make every row's parity consistent.
            for i in 0..n {
                let junk = udm_testkit::rng::noise((BIG * 512) as usize, seed ^ i as u64);
                std::fs::write(set.leg_path("d", i), junk).unwrap();
            }
            let len = (n as u64 - parity) * BIG;
            create(&set.reg, "r", &set.table(len, ty, &[])).unwrap();
            wait_idle(&set.reg, "r");
            set.reg.message(&sel("r"), 0, &["check".into()]).unwrap();
            let f = wait_idle(&set.reg, "r");
            assert_eq!(f[5], "0", "{ty}: parity after the resync: {f:?}");
            {
                let (dev, _g) = open(&set.reg, "r");
                for _ in 0..40 {
                    let l = 8 * (1 + rng.below(256));
                    let s = rng.below(len - l);
                    write(&*dev, s, &rng.bytes((l * 512) as usize));
                }
            }
            let mut names: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
            let before = legs_of(&set, &names);
            // Replace leg 1 (then, raid6, legs 0 and 3 together) with junk and rebuild.
            let mut rounds = vec![vec![1usize]];
            if parity == 2 {
                rounds.push(vec![0, 3]);
            }
            for (r, lost) in rounds.iter().enumerate() {
                for &i in lost {
                    let fresh = format!("new{r}_{i}");
                    image(set.dir.path(), &fresh, BIG, 0xee);
                    set.reload(
                        &format!("d{i}"),
                        &format!("0 {BIG} linear {} 0", set.dir.path().join(&fresh).display()),
                    );
                    std::fs::write(set.leg_path("m", i), vec![0u8; (META * 512) as usize]).unwrap();
                    names[i] = fresh;
                }
                let list = lost.iter().map(|i| i.to_string()).collect::<Vec<_>>();
                let mut params: Vec<&str> = Vec::new();
                for i in &list {
                    params.extend(["rebuild", i.as_str()]);
                }
                set.reload("r", &set.table(len, ty, &params));
                let f = wait_idle(&set.reg, "r");
                assert!(f[2].bytes().all(|c| c == b'A'), "{ty}: {f:?}");
                let after = legs_of(&set, &names);
                for i in 0..n {
                    assert!(
                        after[i] == before[i],
                        "{ty}: leg {i} after rebuilding {lost:?}"
                    );
                }
            }
        }
    }
}
