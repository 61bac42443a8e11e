//! Snapshots on an in-process registry: an origin with two snapshots against a model, the
//! COW format after reopening, status accounting, a full COW, bad headers, and merging.

use std::path::Path;
use udm_io::{sync, Sectors};
use udm_targets::snapshot::{Store, StoreKind};
use udm_testkit::dm::{create, open, read, reg, sel, status, table, write, zero_image};
use udm_testkit::rng::XorShift;

const SECTORS: u64 = 8192; // 4 MiB origin

fn origin_image(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("origin.img");
    std::fs::write(&p, udm_testkit::rng::pseudo((SECTORS * 512) as usize, 7)).unwrap();
    p
}

/// A registry with snapshot `s` (chunk `chunk`, on a zeroed COW of `cow_sectors`) of a fresh
/// origin image and its `snapshot-origin` `orig`; the origin image's path and the COW's.
fn origin_and_snapshot(
    dir: &Path,
    chunk: u64,
    cow_sectors: u64,
) -> (udm_core::Registry, std::path::PathBuf, std::path::PathBuf) {
    let o = origin_image(dir);
    let c = zero_image(dir, "cow.img", cow_sectors);
    let reg = reg();
    let (od, cd) = (o.display(), c.display());
    create(
        &reg,
        "s",
        &format!("0 {SECTORS} snapshot {od} {cd} P {chunk}"),
    )
    .unwrap();
    create(&reg, "orig", &format!("0 {SECTORS} snapshot-origin {od}")).unwrap();
    (reg, o, c)
}

#[test]
fn origin_and_two_snapshots_follow_a_model() {
    let seed = udm_testkit::prop::seed();
    eprintln!("snapshot model: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let dir = tempfile::tempdir().unwrap();
    let o = origin_image(dir.path());
    let c1 = zero_image(dir.path(), "cow1.img", 8192);
    let c2 = zero_image(dir.path(), "cow2.img", 8192);
    let reg = reg();
    let (o, c1, c2) = (o.display(), c1.display(), c2.display());
    create(&reg, "s1", &format!("0 {SECTORS} snapshot {o} {c1} P 8")).unwrap();
    create(&reg, "s2", &format!("0 {SECTORS} snapshot {o} {c2} N 16")).unwrap();
    create(&reg, "orig", &format!("0 {SECTORS} snapshot-origin {o}")).unwrap();
    assert_eq!(
        table(&reg, "s1"),
        format!("0 {SECTORS} snapshot {o} {c1} P 8\n")
    );
    assert_eq!(
        table(&reg, "orig"),
        format!("0 {SECTORS} snapshot-origin {o}\n")
    );
    assert_eq!(
        status(&reg, "s1"),
        format!("0 {SECTORS} snapshot 16/8192 16\n")
    );
    assert_eq!(
        status(&reg, "s2"),
        format!("0 {SECTORS} snapshot 0/8192 0\n")
    );

    let base = std::fs::read(dir.path().join("origin.img")).unwrap();
    let mut model = [base.clone(), base.clone(), base];
    let names = ["orig", "s1", "s2"];
    let devs: Vec<_> = names.iter().map(|n| open(&reg, n)).collect();
    let mut rng = XorShift::new(seed);
    for step in 0..400 {
        let which = rng.below(3) as usize;
        let sector = rng.below(SECTORS - 40);
        let len = 1 + rng.below(40) as usize;
        if rng.below(3) == 0 {
            let got = read(&*devs[which].0, sector, len * 512).unwrap();
            let off = sector as usize * 512;
            assert!(
                got == model[which][off..off + len * 512],
                "step {step}: read {} @{sector}+{len} differs from the model",
                names[which]
            );
        } else {
            let data = rng.bytes(len * 512);
            write(&*devs[which].0, sector, &data).unwrap();
            let off = sector as usize * 512;
            model[which][off..off + len * 512].copy_from_slice(&data);
        }
    }
    for (i, n) in names.iter().enumerate() {
        let got = read(&*devs[i].0, 0, (SECTORS * 512) as usize).unwrap();
        assert!(got == model[i], "{n} differs from the model at the end");
    }
    // The persistent COW reopens with the same contents after the snapshot is torn down.
    let s1_status = status(&reg, "s1");
    drop(devs);
    reg.remove(&sel("s1"), false).unwrap();
    create(&reg, "s1", &format!("0 {SECTORS} snapshot {o} {c1} P 8")).unwrap();
    assert_eq!(status(&reg, "s1"), s1_status);
    let (d, _g) = open(&reg, "s1");
    let got = read(&*d, 0, (SECTORS * 512) as usize).unwrap();
    assert!(got == model[1], "reopened s1 differs from the model");
}

#[test]
fn status_counts_chunks_and_metadata_areas_as_the_kernel() {
    // chunk 1 sector: 32 exceptions per area, so 40 copied chunks need two areas:
    // allocated = header + 2 areas + 40 data chunks, metadata = header + 2 areas.
    let dir = tempfile::tempdir().unwrap();
    let (reg, _, c) = origin_and_snapshot(dir.path(), 1, 1024);
    let c = c.display();
    let (d, _g) = open(&reg, "orig");
    for i in 0..40u64 {
        write(&*d, i * 3, &[0xAB; 512]).unwrap();
    }
    assert_eq!(
        status(&reg, "s"),
        format!("0 {SECTORS} snapshot 43/1024 3\n")
    );
    // The on-disk table (committed by the time a flush of the origin returns: plain origin
    // writes are acknowledged before their commit): pairs in copy order, area 0 full,
    // area 1 with the rest.
    sync::flush(&*d).unwrap();
    let cow = udm_io::FileDevice::open(Path::new(&c.to_string()), false).unwrap();
    let area0 = sync::read_at(&cow, Sectors(1), 512).unwrap().into_vec();
    let e = udm_targets::snapshot::cow::area_entry(&area0, 0);
    assert_eq!(e, (0, 2));
    let e = udm_targets::snapshot::cow::area_entry(&area0, 31);
    assert_eq!(e, (93, 33));
    let area1 = sync::read_at(&cow, Sectors(34), 512).unwrap().into_vec();
    assert_eq!(udm_targets::snapshot::cow::area_entry(&area1, 0), (96, 35));
    assert_eq!(udm_targets::snapshot::cow::area_entry(&area1, 8), (0, 0));
    let hdr = sync::read_at(&cow, Sectors(0), 512).unwrap().into_vec();
    assert_eq!(
        &hdr[..16],
        &[0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    );
}

#[test]
fn a_full_cow_invalidates_the_snapshot_and_spares_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let o = origin_image(dir.path());
    let c = zero_image(dir.path(), "cow.img", 64); // header + area + 6 data chunks of 8
    let reg = reg();
    let (o, c) = (o.display(), c.display());
    create(&reg, "s", &format!("0 {SECTORS} snapshot {o} {c} P 8")).unwrap();
    create(&reg, "orig", &format!("0 {SECTORS} snapshot-origin {o}")).unwrap();
    let (d, _g) = open(&reg, "orig");
    for i in 0..6u64 {
        write(&*d, i * 8, &[1; 4096]).unwrap();
    }
    assert_eq!(
        status(&reg, "s"),
        format!("0 {SECTORS} snapshot 64/64 16\n")
    );
    write(&*d, 6 * 8, &[2; 4096]).unwrap();
    assert_eq!(status(&reg, "s"), format!("0 {SECTORS} snapshot Invalid\n"));
    assert_eq!(read(&*d, 48, 4096).unwrap(), vec![2; 4096]);
    let (s, g2) = open(&reg, "s");
    assert!(
        read(&*s, 0, 512).is_err(),
        "an invalid snapshot fails reads"
    );
    // The header on disk says invalid; reopening keeps it invalid.
    let hdr = std::fs::read(c.to_string()).unwrap();
    assert_eq!(&hdr[4..8], &[0, 0, 0, 0]);
    drop((s, g2));
    reg.remove(&sel("s"), false).unwrap();
    create(&reg, "s", &format!("0 {SECTORS} snapshot {o} {c} P 8")).unwrap();
    assert_eq!(status(&reg, "s"), format!("0 {SECTORS} snapshot Invalid\n"));
}

#[test]
fn po_snapshot_overflows_on_its_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let o = origin_image(dir.path());
    let c = zero_image(dir.path(), "cow.img", 24); // header + area + 1 data chunk
    let reg = reg();
    let (o, c) = (o.display(), c.display());
    create(&reg, "s", &format!("0 {SECTORS} snapshot {o} {c} PO 8")).unwrap();
    let (s, _g) = open(&reg, "s");
    write(&*s, 0, &[5; 512]).unwrap();
    assert!(write(&*s, 8, &[6; 512]).is_err());
    assert_eq!(
        status(&reg, "s"),
        format!("0 {SECTORS} snapshot Overflow\n")
    );
    assert_eq!(read(&*s, 0, 512).unwrap(), vec![5; 512]);
}

#[test]
fn bad_headers_are_refused_and_the_header_chunk_size_wins() {
    let dir = tempfile::tempdir().unwrap();
    let o = origin_image(dir.path());
    let c = zero_image(dir.path(), "cow.img", 1024);
    let cow = udm_io::FileDevice::open(&c, false).unwrap();
    let opened = Store::open(&cow, StoreKind::Persistent { overflow: false }, 16).unwrap();
    assert!(opened.valid && opened.overridden.is_none());
    let reg = reg();
    let (od, cd) = (o.display(), c.display());
    create(&reg, "s", &format!("0 {SECTORS} snapshot {od} {cd} P 8")).unwrap();
    assert_eq!(
        table(&reg, "s"),
        format!("0 {SECTORS} snapshot {od} {cd} P 16\n")
    );
    reg.remove(&sel("s"), false).unwrap();
    let mut img = std::fs::read(&c).unwrap();
    img[8] = 2; // version 2
    std::fs::write(&c, &img).unwrap();
    let e = create(&reg, "s", &format!("0 {SECTORS} snapshot {od} {cd} P 16")).unwrap_err();
    assert!(
        e.to_string().contains("Failed to read snapshot metadata"),
        "{e}"
    );
    img[0] = 0x99; // wrong magic
    std::fs::write(&c, &img).unwrap();
    let e = create(&reg, "s", &format!("0 {SECTORS} snapshot {od} {cd} P 16")).unwrap_err();
    assert!(
        e.to_string().contains("Failed to read snapshot metadata"),
        "{e}"
    );
    for (args, msg) in [
        ("P 8 1 bogus", "Unrecognised feature requested"),
        (
            "P 8 1 discard_passdown_origin",
            "depends on discard_zeroes_cow",
        ),
        ("P 12", "Chunk size is not a power of 2"),
        ("X 8", "Exception store type is not P or N"),
    ] {
        let e = create(&reg, "t", &format!("0 {SECTORS} snapshot {od} {cd} {args}")).unwrap_err();
        assert!(e.to_string().contains(msg), "{args}: {e}");
    }
}

#[test]
fn merge_copies_the_cow_back_and_counts_down() {
    let dir = tempfile::tempdir().unwrap();
    let o = origin_image(dir.path());
    let c = zero_image(dir.path(), "cow.img", 4096);
    let reg = reg();
    let (od, cd) = (o.display(), c.display());
    create(&reg, "s", &format!("0 {SECTORS} snapshot {od} {cd} P 8")).unwrap();
    create(&reg, "orig", &format!("0 {SECTORS} snapshot-origin {od}")).unwrap();
    let mut rng = XorShift::new(udm_testkit::prop::seed());
    {
        let (d, _g) = open(&reg, "orig");
        let (s, _g2) = open(&reg, "s");
        for i in 0..50u64 {
            write(&*d, rng.below(SECTORS - 8), &rng.bytes(4096)).unwrap();
            write(&*s, (i * 37) % SECTORS, &rng.bytes(512)).unwrap();
        }
    }
    let want = read(&*open(&reg, "s").0, 0, (SECTORS * 512) as usize).unwrap();
    reg.remove(&sel("s"), false).unwrap();
    reg.remove(&sel("orig"), false).unwrap();
    create(
        &reg,
        "m",
        &format!("0 {SECTORS} snapshot-merge {od} {cd} P 8"),
    )
    .unwrap();
    let (m, _g) = open(&reg, "m");
    // Readable (the snapshot's view) while merging.
    assert!(read(&*m, 0, (SECTORS * 512) as usize).unwrap() == want);
    let done = format!("0 {SECTORS} snapshot-merge 16/4096 16\n");
    for _ in 0..500 {
        if status(&reg, "m") == done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(status(&reg, "m"), done);
    assert!(
        std::fs::read(&o).unwrap() == want,
        "origin holds the snapshot after merge"
    );
    let s = Store::open(
        &udm_io::FileDevice::open(&c, false).unwrap(),
        StoreKind::Persistent { overflow: false },
        8,
    )
    .unwrap();
    assert!(s.store.is_empty(), "the merged COW holds no exceptions");
}

#[test]
fn discard_zeroes_cow_and_passes_down_to_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let o = origin_image(dir.path());
    let c = zero_image(dir.path(), "cow.img", 1024);
    let reg = reg();
    let (od, cd) = (o.display(), c.display());
    let t =
        format!("0 {SECTORS} snapshot {od} {cd} P 8 2 discard_zeroes_cow discard_passdown_origin");
    create(&reg, "s", &t).unwrap();
    assert_eq!(table(&reg, "s"), format!("{t}\n"));
    let (s, _g) = open(&reg, "s");
    write(&*s, 16, &[7; 4096]).unwrap();
    sync::discard(&*s, Sectors(16), Sectors(8)).unwrap();
    assert_eq!(
        read(&*s, 16, 4096).unwrap(),
        vec![0; 4096],
        "a discarded exception reads zeroes"
    );
    // The second copy of the discard went to the origin (a file: the range is punched out).
    let orig = std::fs::read(&o).unwrap();
    assert!(
        orig[16 * 512..24 * 512].iter().all(|&b| b == 0),
        "origin not discarded"
    );
    // Without the feature the snapshot takes no discards.
    create(
        &reg,
        "p",
        &format!(
            "0 {SECTORS} snapshot {od} {} N 8",
            zero_image(dir.path(), "c2.img", 1024).display()
        ),
    )
    .unwrap();
    let (p, _g2) = open(&reg, "p");
    assert!(sync::discard(&*p, Sectors(0), Sectors(8)).is_err());
}

proptest::proptest! {
    #![proptest_config(udm_testkit::prop::config(48))]
    /// A damaged COW (random header fields and exception areas) opens or is refused, and a
    /// snapshot, origin writes and a merge over it never panic or hang.
    #[test]
    fn damaged_cow_never_panics(
        chunk_pow in 0u32..5,
        good_magic in proptest::bool::ANY,
        version in 0u32..3,
        areas in proptest::collection::vec(proptest::num::u64::ANY, 0..64),
        small in proptest::collection::vec(0u64..40, 0..64),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let o = origin_image(dir.path());
        let chunk = 1u64 << chunk_pow;
        let mut img = vec![0u8; 128 * 512];
        let magic = if good_magic { 0x7041_6e53u32 } else { 0x1234_5678 };
        for (i, v) in [magic, 1, version, chunk as u32].into_iter().enumerate() {
            img[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        let area = (chunk * 512) as usize;
        for (i, (big, sm)) in areas.iter().zip(small.iter().chain(std::iter::repeat(&3))).enumerate() {
            let v = if i % 3 == 0 { *big } else { *sm };
            let at = area + i * 8;
            img[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let c = dir.path().join("cow.img");
        std::fs::write(&c, &img).unwrap();
        let reg = reg();
        let (od, cd) = (o.display(), c.display());
        if create(&reg, "s", &format!("0 {SECTORS} snapshot {od} {cd} P {chunk}")).is_ok() {
            create(&reg, "o", &format!("0 {SECTORS} snapshot-origin {od}")).unwrap();
            let _ = status(&reg, "s");
            {
                let (d, _g) = open(&reg, "o");
                let (s, _g2) = open(&reg, "s");
                for i in 0..4u64 {
                    write(&*d, i * 40, &[1; 512]).unwrap();
                    let _ = read(&*s, i * 8, 4096);
                    let _ = write(&*s, i * 16 + 3, &[2; 512]);
                }
            }
            reg.remove(&sel("o"), false).unwrap();
            reg.remove(&sel("s"), false).unwrap();
            if create(&reg, "m", &format!("0 {SECTORS} snapshot-merge {od} {cd} P {chunk}")).is_ok() {
                let _ = read(&*open(&reg, "m").0, 0, 4096);
                let _ = status(&reg, "m");
                reg.remove(&sel("m"), false).unwrap();
            }
        }
    }
}

#[test]
fn a_merge_that_cannot_write_the_origin_reports_merge_failed() {
    let dir = tempfile::tempdir().unwrap();
    let o = origin_image(dir.path());
    let c = zero_image(dir.path(), "cow.img", 1024);
    let reg = reg();
    let (od, cd) = (o.display(), c.display());
    let half = SECTORS / 2;
    create(&reg, "od", &format!("0 {SECTORS} linear {od} 0")).unwrap();
    create(
        &reg,
        "s",
        &format!("0 {SECTORS} snapshot /dev/mapper/od {cd} P 8"),
    )
    .unwrap();
    write(&*open(&reg, "s").0, half + 8, &[3; 4096]).unwrap();
    reg.remove(&sel("s"), false).unwrap();
    // The origin's upper half now fails: merging the exception there cannot succeed.
    let broken = format!("0 {half} linear {od} 0\n{half} {half} error");
    reg.suspend(&sel("od"), false, false).unwrap();
    reg.load(
        &sel("od"),
        &udm_core::parse_table_text(&broken).unwrap(),
        false,
    )
    .unwrap();
    reg.resume(&sel("od")).unwrap();
    create(
        &reg,
        "m",
        &format!("0 {SECTORS} snapshot-merge /dev/mapper/od {cd} P 8"),
    )
    .unwrap();
    let want = format!("0 {SECTORS} snapshot-merge Merge failed\n");
    for _ in 0..500 {
        if status(&reg, "m") == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(status(&reg, "m"), want);
    // The exception stays in the COW: the data is still readable through the merge target.
    assert_eq!(
        read(&*open(&reg, "m").0, half + 8, 4096).unwrap(),
        vec![3; 4096]
    );
}

#[test]
fn racing_origin_writes_never_overtake_the_copy_of_their_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let o = origin_image(dir.path());
    let base = std::fs::read(&o).unwrap();
    let c1 = zero_image(dir.path(), "c1.img", 8192);
    let c2 = zero_image(dir.path(), "c2.img", 8192);
    let reg = reg();
    let (od, c1d, c2d) = (o.display(), c1.display(), c2.display());
    create(&reg, "s1", &format!("0 {SECTORS} snapshot {od} {c1d} P 8")).unwrap();
    create(&reg, "s2", &format!("0 {SECTORS} snapshot {od} {c2d} P 32")).unwrap();
    create(&reg, "o", &format!("0 {SECTORS} snapshot-origin {od}")).unwrap();
    let seed = udm_testkit::prop::seed();
    eprintln!("racing writes: seed {seed:#x}");
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let reg = &reg;
            sc.spawn(move || {
                let (d, _g) = open(reg, "o");
                let mut rng = XorShift::new(seed ^ t);
                for _ in 0..150 {
                    let sector = rng.below(256);
                    let n = 1 + rng.below(16) as usize;
                    write(&*d, sector, &rng.bytes(512 * n)).unwrap();
                }
            });
        }
        for name in ["s1", "s2"] {
            let (reg, base) = (&reg, &base);
            sc.spawn(move || {
                let (s, _g) = open(reg, name);
                for i in 0..100u64 {
                    let at = (i * 8) % 256;
                    let got = read(&*s, at, 4096).unwrap();
                    let off = at as usize * 512;
                    assert!(
                        got == base[off..off + 4096],
                        "{name} saw a new write at {at}"
                    );
                }
            });
        }
    });
    for name in ["s1", "s2"] {
        let got = read(&*open(&reg, name).0, 0, (SECTORS * 512) as usize).unwrap();
        assert!(got == base, "{name} lost its point-in-time image");
    }
}

#[test]
fn snapshot_of_a_crypt_origin_with_its_cow_on_crypt_too() {
    let dir = tempfile::tempdir().unwrap();
    let o = zero_image(dir.path(), "o.img", SECTORS);
    let c = zero_image(dir.path(), "c.img", 4096);
    let key = udm_testkit::rng::hex_key(64, 9);
    let reg = reg();
    for (name, file, len) in [("co", &o, SECTORS), ("cc", &c, 4096)] {
        let t = format!("0 {len} crypt aes-xts-plain64 {key} 0 {} 0", file.display());
        create(&reg, name, &t).unwrap();
    }
    let (co, _g) = open(&reg, "co");
    let before = udm_testkit::rng::pseudo(64 * 512, 3);
    write(&*co, 0, &before).unwrap();
    drop((co, _g));
    // A zero file reads as noise through crypt: clear the COW's header through it, as
    // lvcreate wipes the start of a new COW volume.
    write(&*open(&reg, "cc").0, 0, &[0; 8192]).unwrap();
    create(
        &reg,
        "s",
        &format!("0 {SECTORS} snapshot /dev/mapper/co /dev/mapper/cc P 16"),
    )
    .unwrap();
    create(
        &reg,
        "o",
        &format!("0 {SECTORS} snapshot-origin /dev/mapper/co"),
    )
    .unwrap();
    let (d, _g) = open(&reg, "o");
    let after = udm_testkit::rng::pseudo(64 * 512, 4);
    write(&*d, 0, &after).unwrap();
    assert_eq!(read(&*d, 0, 64 * 512).unwrap(), after);
    let (s, _g2) = open(&reg, "s");
    assert_eq!(read(&*s, 0, 64 * 512).unwrap(), before);
    assert_eq!(
        status(&reg, "s"),
        format!("0 {SECTORS} snapshot 96/4096 32\n")
    );
    // The COW's header is only visible through the crypt layer.
    let raw = std::fs::read(&c).unwrap();
    assert_ne!(&raw[..4], &0x7041_6e53u32.to_le_bytes());
    let cc = read(&*open(&reg, "cc").0, 0, 512).unwrap();
    assert_eq!(&cc[..4], &0x7041_6e53u32.to_le_bytes());
}

#[test]
fn table_params_round_trip() {
    use udm_targets::snapshot::SnapshotParams;
    for t in [
        "253:1 253:2 P 8",
        "/a /b PO 16",
        "253:1 253:2 N 32",
        "253:1 253:2 P 8 1 discard_zeroes_cow",
        "253:1 253:2 P 8 2 discard_zeroes_cow discard_passdown_origin",
    ] {
        let p: SnapshotParams = t.parse().unwrap();
        assert_eq!(p.to_string(), t);
    }
    assert!("253:1 253:2 P".parse::<SnapshotParams>().is_err());
    assert!("253:1 253:2 P 8 3 a b c".parse::<SnapshotParams>().is_err());
}

#[test]
fn the_module_registers_three_types_in_the_kernels_order() {
    // 6.1's `modprobe dm-snapshot; dmsetup targets` lists, newest first:
    // snapshot-merge v1.5.0, snapshot-origin v1.9.0, snapshot v1.16.0.
    let reg = reg();
    assert!(reg.load_module("dm-snapshot"));
    let v = reg.list_versions();
    let want = [
        ("snapshot-merge", [1, 5, 0]),
        ("snapshot-origin", [1, 9, 0]),
        ("snapshot", [1, 16, 0]),
    ];
    let got: Vec<_> = v
        .iter()
        .take(3)
        .map(|(n, ver)| (n.as_str(), *ver))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn held_origin_writes_read_back_and_are_in_the_origin_after_a_flush_or_suspend() {
    // Plain origin writes are acknowledged once copied, held until their commit: reads see
    // them at once, a flush or a suspend leaves them in the origin file (a held write's
    // failure: `snapshot_order`).
    let dir = tempfile::tempdir().unwrap();
    let (reg, op, _) = origin_and_snapshot(dir.path(), 8, 8192);
    let before = std::fs::read(&op).unwrap();
    let mut want = before.clone();
    let (d, g) = open(&reg, "orig");
    for i in 0..64u64 {
        let b = vec![i as u8 + 1; 4096];
        write(&*d, i * 24, &b).unwrap();
        assert_eq!(read(&*d, i * 24, 4096).unwrap(), b, "read after write {i}");
        want[(i * 24 * 512) as usize..][..4096].copy_from_slice(&b);
    }
    sync::flush(&*d).unwrap();
    assert!(std::fs::read(&op).unwrap() == want, "flushed origin");
    let (s, gs) = open(&reg, "s");
    assert!(read(&*s, 0, (SECTORS * 512) as usize).unwrap() == before);
    for i in 0..32u64 {
        let b = vec![0xc0 | i as u8; 4096];
        write(&*d, i * 24 + 8, &b).unwrap();
        want[((i * 24 + 8) * 512) as usize..][..4096].copy_from_slice(&b);
    }
    drop((d, g, s, gs));
    reg.suspend(&sel("orig"), false, false).unwrap();
    assert!(std::fs::read(&op).unwrap() == want, "suspended origin");
    reg.remove(&sel("orig"), false).unwrap();
    reg.remove(&sel("s"), false).unwrap();
}

#[test]
fn a_held_write_hands_its_buffer_back_as_it_went_unless_the_submitter_spares_it() {
    // The block copier writes a buffer that comes back to its next destination: a held
    // origin write copies its data. An NBD or FUSE write spares its buffer: the held write
    // keeps it and hands back another, and the data still lands.
    let dir = tempfile::tempdir().unwrap();
    let (reg, op, _) = origin_and_snapshot(dir.path(), 8, 8192);
    let before = std::fs::read(&op).unwrap();
    let (d, g) = open(&reg, "orig");
    let submit = |sector: u64, data: &[u8], spare: bool| {
        let (tx, rx) = std::sync::mpsc::channel();
        let buf = udm_io::IoBuf::from_slice(data);
        let ptr = buf.as_ptr() as usize;
        let bio = udm_io::Bio::write(
            Sectors(sector),
            buf,
            Box::new(move |r, b| tx.send((r, b)).unwrap()),
        );
        d.submit(if spare { bio.with_spare_buf() } else { bio });
        let (r, b) = rx.recv().unwrap();
        r.unwrap();
        (b, ptr)
    };
    let (kept, spared) = (vec![0x5a; 65536], vec![0xa5; 65536]);
    let (b, ptr) = submit(0, &kept, false);
    assert!(b.as_slice() == &kept[..] && b.as_ptr() as usize == ptr);
    let (b, ptr) = submit(256, &spared, true);
    assert_eq!(b.len(), spared.len());
    assert_ne!(
        b.as_ptr() as usize,
        ptr,
        "a spared buffer is kept, not copied"
    );
    assert!(read(&*d, 0, 65536).unwrap() == kept);
    assert!(read(&*d, 256, 65536).unwrap() == spared);
    sync::flush(&*d).unwrap();
    let file = std::fs::read(&op).unwrap();
    assert!(file[..65536] == kept[..] && file[256 * 512..][..65536] == spared[..]);
    let (s, gs) = open(&reg, "s");
    assert!(read(&*s, 0, (SECTORS * 512) as usize).unwrap() == before);
    drop((d, g, s, gs));
}

/// Reads of neighbouring chunks that land next to each other in the COW (and in memory) are
/// read in one piece; when a damaged COW points one of them past its end, only the reads of
/// that chunk fail, even when a read of its neighbour was gathered with it.
#[test]
fn a_read_of_an_exception_past_the_cow_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let o = origin_image(dir.path());
    // Four chunks of 8 sectors: header, one exception area, two data chunks. Chunk 0 is in
    // the last data chunk (3), chunk 1 in chunk 4, one past the end.
    let mut img = vec![0u8; 4 * 4096];
    for (i, v) in [0x7041_6e53u32, 1, 1, 8].into_iter().enumerate() {
        img[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    for (i, v) in [0u64, 3, 1, 4].into_iter().enumerate() {
        img[4096 + i * 8..4096 + i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    img[3 * 4096..].fill(0xab);
    let c = dir.path().join("cow.img");
    std::fs::write(&c, &img).unwrap();
    let reg = reg();
    let (od, cd) = (o.display(), c.display());
    create(&reg, "s", &format!("0 {SECTORS} snapshot {od} {cd} P 8")).unwrap();
    let (s, _g) = open(&reg, "s");
    // Both chunks in one read: it fails.
    assert!(read(&*s, 0, 8192).is_err());
    assert_eq!(
        read(&*s, 16, 8192).unwrap(),
        std::fs::read(&o).unwrap()[16 * 512..32 * 512]
    );
    // Two reads, one per chunk, into the two halves of one buffer, submitted together so
    // that they often share a batch and are gathered into one run.
    for _ in 0..200 {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut first = udm_io::IoBuf::zeroed(8192);
        let second = first.split_off(4096);
        for (i, (sector, buf)) in [(0, first), (8, second)].into_iter().enumerate() {
            let tx = tx.clone();
            let done = Box::new(move |r, b| drop(tx.send((i, r, b))));
            s.submit(udm_io::Bio::read(Sectors(sector), buf, done));
        }
        let mut got: Vec<_> = rx.iter().take(2).collect();
        got.sort_by_key(|g| g.0);
        let (_, r0, b0) = &got[0];
        assert!(
            r0.is_ok() && b0.as_slice() == [0xab; 4096],
            "chunk 0 failed with 1"
        );
        assert!(got[1].1.is_err(), "chunk 1 read past the COW");
    }
}
