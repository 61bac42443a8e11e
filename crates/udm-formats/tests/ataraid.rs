//! Intel Matrix (isw) decoding, dmraid's names and the tables it builds, from MPBs encoded
//! here field by field; fuzzed MPBs never panic.

use proptest::prelude::*;
use udm_formats::ataraid::{self, isw, AtaraidError, Isw, IswMember, SetKind};

struct Vol {
    name: &'static str,
    level: u8,
    members: Vec<u32>,
    pba: u32,
    per_member: u32,
    strip: u16,
    migr: u8,
    map_state: u8,
}

/// An MPB with `serials` in the disk table and `vols`, its checksum set.
fn mpb(family: u32, serials: &[&str], vols: &[Vol]) -> Vec<u8> {
    let mut b = vec![0u8; 0xd8];
    b[..isw::SIGNATURE.len()].copy_from_slice(isw::SIGNATURE);
    b[isw::SIGNATURE.len()..isw::SIGNATURE.len() + 6].copy_from_slice(b"1.3.00");
    b[0x28..0x2c].copy_from_slice(&family.to_le_bytes());
    b[0x2c..0x30].copy_from_slice(&7u32.to_le_bytes());
    b[0x38] = serials.len() as u8;
    b[0x39] = vols.len() as u8;
    for s in serials {
        let mut d = [0u8; 48];
        d[..s.len()].copy_from_slice(s.as_bytes());
        d[16..20].copy_from_slice(&65536u32.to_le_bytes());
        d[24..28].copy_from_slice(&(0x02u32 | 0x08 | 0x100).to_le_bytes());
        b.extend_from_slice(&d);
    }
    for v in vols {
        let mut d = vec![0u8; 112];
        d[..v.name.len()].copy_from_slice(v.name.as_bytes());
        let size = u64::from(v.per_member) * v.members.len() as u64;
        d[16..20].copy_from_slice(&(size as u32).to_le_bytes());
        d[88] = v.migr;
        let mut map = vec![0u8; 48];
        map[0..4].copy_from_slice(&v.pba.to_le_bytes());
        map[4..8].copy_from_slice(&v.per_member.to_le_bytes());
        map[12..14].copy_from_slice(&v.strip.to_le_bytes());
        map[14] = v.map_state;
        map[15] = v.level;
        map[16] = v.members.len() as u8;
        map[18] = 255;
        for m in &v.members {
            map.extend_from_slice(&m.to_le_bytes());
        }
        d.extend_from_slice(&map);
        if v.migr != 0 {
            d.extend_from_slice(&map);
        }
        b.extend_from_slice(&d);
    }
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
    let size = b.len() as u32;
    b[0x24..0x28].copy_from_slice(&size.to_le_bytes());
    let sum = isw::checksum(&b);
    b[0x20..0x24].copy_from_slice(&sum.to_le_bytes());
    b
}

/// A disk image of `sectors` with `mpb` where dmraid looks for it.
fn disk_with(mpb: &[u8], sectors: u64) -> Vec<u8> {
    let mut d = vec![0u8; (sectors * 512) as usize];
    let first = ((sectors - 2) * 512) as usize;
    d[first..first + 512.min(mpb.len())].copy_from_slice(&mpb[..512.min(mpb.len())]);
    if mpb.len() > 512 {
        let ext = &mpb[512..];
        let blocks = ext.len().div_ceil(512);
        let at = first - blocks * 512;
        d[at..at + ext.len()].copy_from_slice(ext);
    }
    d
}

fn two_vols() -> Vec<Vol> {
    vec![
        Vol {
            name: "vol0",
            level: 0,
            members: vec![2, 0, 1],
            pba: 0,
            per_member: 8192,
            strip: 128,
            migr: 0,
            map_state: 0,
        },
        Vol {
            name: "my vol!",
            level: 1,
            members: vec![0, 1],
            pba: 8192 + 264,
            per_member: 4096,
            strip: 128,
            migr: 1,
            map_state: 0,
        },
    ]
}

#[test]
fn decodes_disks_volumes_and_a_migrating_map() {
    let serials = ["8000", "10000", "ABCDEFGHIJKLMNOP"];
    let b = mpb(1_234_567, &serials, &two_vols());
    let m = Isw::parse(&b, 0).unwrap();
    assert_eq!(m.version, "1.3.00");
    assert_eq!(m.family_num, 1_234_567);
    assert_eq!(m.disks.len(), 3);
    assert_eq!(m.disks[1].serial, "10000");
    assert!(m.disks[0].ok());
    assert_eq!(m.devs.len(), 2);
    assert_eq!(m.devs[0].map.members, vec![2, 0, 1]);
    assert_eq!(m.devs[1].volume, "my vol!");
    assert_eq!(m.devs[1].map.pba_of_lba0, 8456);
    assert_eq!(m.devs[1].migr_state, 1);
    assert_eq!(m.group_name(), "isw_bcdefgh");
    assert_eq!(m.volume_name(&m.devs[1]), "isw_bcdefgh_my_vol_");
    // dmraid's serial rule: whitespace dropped, the last 16 characters kept.
    assert_eq!(m.disk_index(" 10000 "), Some(1));
    assert_eq!(m.disk_index("XXABCDEFGHIJKLMNOP"), Some(2));
    assert_eq!(m.disk_index("9999"), None);
}

#[test]
fn a_bad_checksum_or_size_is_refused() {
    let mut b = mpb(5, &["1", "2"], &two_vols()[..1]);
    b[0x30] ^= 1;
    assert!(matches!(
        Isw::parse(&b, 0),
        Err(AtaraidError::Corrupt { .. })
    ));
    let mut c = mpb(5, &["1", "2"], &[]);
    c[0x24..0x28].copy_from_slice(&100_000u32.to_le_bytes());
    let e = Isw::parse(&c, 0).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(matches!(
        Isw::parse(&[0u8; 600], 0),
        Err(AtaraidError::NotFound("isw"))
    ));
}

#[test]
fn reads_an_extended_mpb_from_the_end_of_a_disk() {
    // 12 disks push the MPB past one sector: the extension sits just before it.
    let serials: Vec<String> = (0..12).map(|i| format!("SER{i:05}")).collect();
    let refs: Vec<&str> = serials.iter().map(|s| s.as_str()).collect();
    let b = mpb(42, &refs, &two_vols());
    assert!(b.len() > 512);
    let mut d = disk_with(&b, 4096);
    let m = Isw::read(&mut d).unwrap();
    assert_eq!(m.disks.len(), 12);
    assert_eq!(m.offset, 4094 * 512);
    let member = IswMember::read("/x", &mut d, "SER00011").unwrap();
    assert_eq!(member.index, 11);
    assert_eq!(
        member.raid_dev_line(),
        "/x: isw, \"isw_ec\", GROUP, ok, 4094 sectors, data@ 0"
    );
    let e = IswMember::read("/x", &mut d, "nope").unwrap_err();
    assert_eq!(e.to_string(), "isw: Could not find disk /x in the metadata");
}

#[test]
fn sets_and_tables_follow_the_ord_table() {
    let serials = ["s0", "s1", "s2"];
    let b = mpb(7, &serials, &two_vols());
    let members: Vec<IswMember> = ["/d/a", "/d/b", "/d/c"]
        .iter()
        .zip(serials)
        .map(|(p, s)| IswMember::read(p, &mut disk_with(&b, 65536), s).unwrap())
        .collect();
    let sets = ataraid::isw_sets(&members).unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0].name, "isw_h_vol0");
    assert_eq!(sets[0].kind, SetKind::Stripe);
    assert_eq!(
        sets[0].table().unwrap(),
        vec!["0 24576 striped 3 128 /d/c 0 /d/a 0 /d/b 0".to_string()]
    );
    assert_eq!(sets[1].status, "nosync");
    assert_eq!(
        sets[1].table().unwrap(),
        vec!["0 4096 mirror core 2 64 sync 2 /d/a 8456 /d/b 8456 1 handle_errors".to_string()]
    );
    // A member missing: no table, the set inconsistent, dmraid's words.
    let two = ataraid::isw_sets(&members[..2]).unwrap();
    assert_eq!(two[0].devs.len(), 2);
    assert_eq!(two[0].status, "inconsistent");
    let e = two[0].table().unwrap_err();
    assert_eq!(
        e.to_string(),
        "isw: wrong number of devices in RAID set \"isw_h_vol0\" [2/3]"
    );
}

fn raid5_vol(name: &'static str, pba: u32, per_member: u32) -> Vol {
    Vol {
        name,
        level: 5,
        members: vec![1, 2, 0],
        pba,
        per_member,
        strip: 128,
        migr: 0,
        map_state: 0,
    }
}

fn raid5_members(vols: &[Vol]) -> Vec<IswMember> {
    let serials = ["s0", "s1", "s2"];
    let b = mpb(7, &serials, vols);
    ["/d/a", "/d/b", "/d/c"]
        .iter()
        .zip(serials)
        .map(|(p, s)| IswMember::read(p, &mut disk_with(&b, 65536), s).unwrap())
        .collect()
}

#[test]
fn raid5_volumes_map_onto_the_raid_target_left_asymmetric() {
    let members = raid5_members(&[raid5_vol("r5", 0, 10240)]);
    let sets = ataraid::isw_sets(&members).unwrap();
    let s = &sets[0];
    assert_eq!(
        (s.kind, s.kind.to_string().as_str()),
        (SetKind::Raid5La, "raid5_la")
    );
    assert_eq!((s.size(), s.stride, s.status), (20480, 128, "ok"));
    // Slots in the ord table's order; dmraid's region (64 here) raised to the chunk size.
    assert_eq!(
        s.table().unwrap(),
        vec!["0 20480 raid raid5_la 4 128 nosync region_size 128 3 - /d/b - /d/c - /d/a"]
    );
    // A big set keeps dmraid's region once it passes the chunk (len / 3 sectors → 2048).
    let big = ataraid::isw_sets(&raid5_members(&[raid5_vol("big", 0, 4 << 20)])).unwrap();
    assert_eq!(
        big[0].table().unwrap(),
        vec!["0 8388608 raid raid5_la 4 128 nosync region_size 2048 3 - /d/b - /d/c - /d/a"]
    );
    // Members clamped to whole chunks.
    let odd = ataraid::isw_sets(&raid5_members(&[raid5_vol("odd", 0, 10300)])).unwrap();
    assert!(odd[0].table().unwrap()[0].starts_with("0 20480 raid raid5_la "));
}

#[test]
fn a_raid5_volume_runs_degraded_with_one_member_missing_and_not_two() {
    let members = raid5_members(&[raid5_vol("r5", 0, 10240)]);
    // /d/c (slot 1) missing: `- -` in its slot, nosync, dmraid's degraded listing size.
    let sets = ataraid::isw_sets(&[members[0].clone(), members[1].clone()]).unwrap();
    let s = &sets[0];
    assert_eq!(
        (s.status, s.size(), s.devs.len()),
        ("inconsistent", 10240, 2)
    );
    assert_eq!(
        s.table().unwrap(),
        vec!["0 20480 raid raid5_la 4 128 nosync region_size 128 3 - /d/b - - - /d/a"]
    );
    // The first slot missing.
    let sets = ataraid::isw_sets(&[members[0].clone(), members[2].clone()]).unwrap();
    assert_eq!(
        sets[0].table().unwrap(),
        vec!["0 20480 raid raid5_la 4 128 nosync region_size 128 3 - - - /d/c - /d/a"]
    );
    let sets = ataraid::isw_sets(&members[..1]).unwrap();
    let e = sets[0].table().unwrap_err();
    assert_eq!(e.errno(), libc::ENXIO);
    assert_eq!(
        e.to_string(),
        "isw: wrong number of devices in RAID set \"isw_h_r5\" [1/3]"
    );
}

#[test]
fn a_raid5_volume_past_the_first_is_refused_for_its_offset() {
    let members = raid5_members(&[raid5_vol("r5", 0, 10240), raid5_vol("r5b", 10240, 6144)]);
    let sets = ataraid::isw_sets(&members).unwrap();
    assert_eq!(sets.len(), 2);
    assert!(sets[0].table().is_ok());
    let e = sets[1].table().unwrap_err();
    assert!(matches!(e, AtaraidError::NoMapping { .. }), "{e}");
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(
        e.to_string()
            .starts_with("no mapping possible for RAID set isw_h_r5b (/d/b starts at sector 10240"),
        "{e}"
    );
    // dmraid still lists it.
    assert_eq!((sets[1].size(), sets[1].stride), (12288, 128));
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(512))]

    #[test]
    fn fuzzed_mpbs_never_panic(
        flips in proptest::collection::vec((0usize..1200, any::<u8>()), 0..24),
        fix_sum in any::<bool>(),
        cut in 0usize..1300,
    ) {
        let serials: Vec<String> = (0..10).map(|i| format!("S{i}")).collect();
        let refs: Vec<&str> = serials.iter().map(|s| s.as_str()).collect();
        let mut b = mpb(9, &refs, &two_vols());
        for (at, v) in flips {
            if at >= isw::SIGNATURE.len() && at < b.len() {
                b[at] = v;
            }
        }
        if fix_sum && b.len() >= 0x28 {
            let size = (u32::from_le_bytes(b[0x24..0x28].try_into().unwrap()) as usize).min(b.len()) & !3;
            let sum = isw::checksum(&b[..size]);
            b[0x20..0x24].copy_from_slice(&sum.to_le_bytes());
        }
        let _ = Isw::parse(&b, 0);
        let _ = Isw::parse(&b[..cut.min(b.len())], 0);
        let mut d = disk_with(&b, 64);
        if let Ok(m) = IswMember::read("/f", &mut d, "S3") {
            let _ = m.raid_dev_line();
            if let Ok(sets) = ataraid::isw_sets(&[m]) {
                for s in sets {
                    let _ = (s.size(), s.table());
                }
            }
        }
    }
}
