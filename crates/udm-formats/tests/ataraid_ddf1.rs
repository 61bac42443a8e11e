//! DDF1 decoding from images encoded here section by section (big- and little-endian), the
//! sets and tables dmraid makes of them, and fuzzed metadata that never panics.

use proptest::prelude::*;
use udm_formats::ataraid::ddf1::{block_crc, ddf1_sets, Ddf1, GROUP};
use udm_formats::ataraid::{AtaraidError, SetKind};

const SECTORS: u64 = 4096;
const PRIMARY: u64 = 2048;
const MPPE: usize = 8;

struct W {
    be: bool,
}

impl W {
    fn u16(&self, b: &mut [u8], o: usize, v: u16) {
        b[o..o + 2].copy_from_slice(&if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    fn u32(&self, b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    fn u64(&self, b: &mut [u8], o: usize, v: u64) {
        let (hi, lo) = ((v >> 32) as u32, v as u32);
        if self.be {
            self.u32(b, o, hi);
            self.u32(b, o + 4, lo);
        } else {
            self.u32(b, o, lo);
            self.u32(b, o + 4, hi);
        }
    }
    fn seal(&self, b: &mut [u8]) {
        let c = block_crc(b);
        self.u32(b, 4, c);
    }
}

fn g(tag: u8) -> [u8; 24] {
    [tag; 24]
}

/// A virtual disk: name, RAID level, level qualifier, member refs in element order, start
/// LBA, sectors per member.
type Vd = (&'static [u8], u8, u8, &'static [u32], u64, u64);

/// Disk `me` (0..3) of a DDF set: raid0 "r0" over refs 10, 11, 12 (element order 12, 10,
/// 11) at LBA 0, and raid1 "r1 " over 10, 11 at LBA 512.
fn image(me: usize, be: bool) -> Vec<u8> {
    image_with(
        me,
        be,
        [
            (b"r0", 0, 0, &[12, 10, 11], 0, 500),
            (b"r1 ", 1, 0, &[10, 11], 512, 256),
        ],
    )
}

/// Disk `me` (0..3) with two virtual disks `vds` over refs 10, 11, 12.
fn image_with(me: usize, be: bool, vds: [Vd; 2]) -> Vec<u8> {
    let w = W { be };
    let mut d = vec![0u8; (SECTORS * 512) as usize];
    let mut h = vec![0u8; 512];
    w.u32(&mut h, 0, 0xDE11_DE11);
    w.u64(&mut h, 96, PRIMARY);
    w.u64(&mut h, 104, u64::MAX);
    w.u16(&mut h, 128, 8);
    w.u16(&mut h, 130, 4);
    w.u16(&mut h, 134, 2);
    w.u16(&mut h, 136, MPPE as u16);
    for (at, off, len) in [(200, 1, 2), (208, 3, 1), (216, 4, 4), (224, 8, 1)] {
        w.u32(&mut h, at, off);
        w.u32(&mut h, at + 4, len);
    }
    let mut anchor = h.clone();
    w.seal(&mut anchor);
    h[112] = 1;
    w.seal(&mut h);
    let sec = |d: &mut Vec<u8>, lba: u64, b: &[u8]| {
        let o = (lba * 512) as usize;
        d[o..o + b.len()].copy_from_slice(b);
    };
    sec(&mut d, SECTORS - 1, &anchor);
    sec(&mut d, PRIMARY, &h);
    let mut pd = vec![0u8; 1024];
    w.u32(&mut pd, 0, 0x2222_2222);
    w.u16(&mut pd, 8, 3);
    for i in 0..3 {
        let o = 64 + 64 * i;
        pd[o..o + 24].copy_from_slice(&g(i as u8));
        w.u32(&mut pd, o + 24, 10 + i as u32);
        w.u16(&mut pd, o + 30, 1);
        w.u64(&mut pd, o + 32, 2000);
    }
    w.seal(&mut pd);
    sec(&mut d, PRIMARY + 1, &pd);
    let mut vd = vec![0u8; 512];
    w.u32(&mut vd, 0, 0xDDDD_DDDD);
    w.u16(&mut vd, 8, 2);
    for (i, name) in vds.iter().map(|v| v.0).enumerate() {
        let o = 64 + 64 * i;
        vd[o..o + 24].copy_from_slice(&g(0xa0 + i as u8));
        vd[o + 33] = 2;
        vd[o + 48..o + 48 + name.len()].copy_from_slice(name);
    }
    w.seal(&mut vd);
    sec(&mut d, PRIMARY + 3, &vd);
    for (k, (_, level, rlq, refs, lba, sectors)) in vds.iter().enumerate() {
        let vg = 0xa0 + k as u8;
        let mut cr = vec![0u8; 1024];
        w.u32(&mut cr, 0, 0xEEEE_EEEE);
        cr[8..32].copy_from_slice(&g(vg));
        w.u16(&mut cr, 64, refs.len() as u16);
        cr[66] = 7;
        cr[67] = *level;
        cr[68] = *rlq;
        w.u64(&mut cr, 72, *sectors);
        for i in 0..MPPE {
            w.u32(
                &mut cr,
                512 + 4 * i,
                refs.get(i).copied().unwrap_or(u32::MAX),
            );
            w.u64(&mut cr, 512 + 4 * MPPE + 8 * i, *lba);
        }
        w.seal(&mut cr);
        sec(&mut d, PRIMARY + 4 + 2 * k as u64, &cr);
    }
    let mut dd = vec![0u8; 512];
    w.u32(&mut dd, 0, 0x3333_3333);
    w.u32(&mut dd, 32, 10 + me as u32);
    w.seal(&mut dd);
    sec(&mut d, PRIMARY + 8, &dd);
    d
}

#[test]
fn decodes_both_byte_orders_and_builds_dmraids_tables() {
    for be in [true, false] {
        let disks: Vec<(String, Ddf1)> = (0..3)
            .map(|i| (format!("/d{i}"), Ddf1::read(&mut image(i, be)).unwrap()))
            .collect();
        let m = &disks[1].1;
        assert_eq!(m.big_endian, be);
        assert_eq!(
            (m.primary_lba, m.reference, m.pds.len(), m.vds.len()),
            (PRIMARY, 11, 3, 2)
        );
        assert_eq!(
            m.raid_dev_line("/d1"),
            format!("/d1: ddf1, \"{GROUP}\", GROUP, ok, 2000 sectors, data@ 0")
        );
        let sets = ddf1_sets(&disks).unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(
            (sets[0].name.as_str(), sets[0].kind, sets[0].stride),
            ("ddf1_r0", SetKind::Stripe, 128)
        );
        // raid0 members clamped to whole stripes (500 → 384), in element order.
        assert_eq!(
            sets[0].table().unwrap(),
            vec!["0 1152 striped 3 128 /d2 0 /d0 0 /d1 0".to_string()]
        );
        assert_eq!(sets[1].name, "ddf1_r1");
        assert_eq!(
            sets[1].table().unwrap(),
            vec!["0 256 mirror core 2 64 nosync 2 /d0 512 /d1 512 1 handle_errors".to_string()]
        );
        // One disk short: no table.
        let e = ddf1_sets(&disks[..2]).unwrap()[0].table().unwrap_err();
        assert_eq!(
            e.to_string(),
            "ddf1: wrong # of devices in RAID set \"ddf1_r0\" [2/3]"
        );
    }
}

fn raid5_disks(rlq: u8, lba: u64) -> Vec<(String, Ddf1)> {
    (0..3)
        .map(|i| {
            let d = image_with(
                i,
                i == 1,
                [
                    (b"d5", 5, rlq, &[10, 12, 11], lba, 1000),
                    (b"d6", 6, 3, &[10, 11, 12], 1024, 256),
                ],
            );
            (format!("/d{i}"), Ddf1::read(&mut { d }).unwrap())
        })
        .collect()
}

#[test]
fn raid5_maps_its_qualifier_to_mds_layout_on_the_raid_target() {
    for (rlq, kind, word) in [
        (3, SetKind::Raid5Ls, "raid5_ls"),
        (2, SetKind::Raid5La, "raid5_la"),
        (0, SetKind::Raid5Ra, "raid5_ra"),
    ] {
        let sets = ddf1_sets(&raid5_disks(rlq, 0)).unwrap();
        let s = &sets[0];
        assert_eq!((s.name.as_str(), s.kind, s.stride), ("ddf1_d5", kind, 128));
        // 1000 sectors per member clamped to 7 chunks, two data members.
        assert_eq!((s.size(), s.status), (1792, "ok"));
        assert_eq!(
            s.table().unwrap(),
            vec![format!(
                "0 1792 raid {word} 4 128 nosync region_size 128 3 - /d0 - /d2 - /d1"
            )]
        );
    }
    // raid6 (and other levels dmraid cannot map) listed as `unknown`, refused.
    let sets = ddf1_sets(&raid5_disks(3, 0)).unwrap();
    assert_eq!(
        (sets[1].kind.to_string().as_str(), sets[1].size()),
        ("unknown", 768)
    );
    let e = sets[1].table().unwrap_err();
    assert!(matches!(e, AtaraidError::NoMapping { .. }), "{e}");
}

#[test]
fn a_raid5_set_runs_degraded_with_one_disk_missing_and_not_two() {
    let disks = raid5_disks(3, 0);
    // /d2 (element 1) missing.
    let sets = ddf1_sets(&[disks[0].clone(), disks[1].clone()]).unwrap();
    let s = &sets[0];
    assert_eq!((s.status, s.size(), s.devs.len()), ("inconsistent", 896, 2));
    assert_eq!(
        s.table().unwrap(),
        vec!["0 1792 raid raid5_ls 4 128 nosync region_size 128 3 - /d0 - - - /d1"]
    );
    // The unknown-level set with a member missing is `broken`, as dmraid says.
    assert_eq!(sets[1].status, "broken");
    let sets = ddf1_sets(&disks[1..2]).unwrap();
    let e = sets[0].table().unwrap_err();
    assert_eq!(
        e.to_string(),
        "ddf1: wrong # of devices in RAID set \"ddf1_d5\" [1/3]"
    );
    assert_eq!(e.errno(), libc::ENXIO);
    // A set not at LBA 0 of its members cannot go on the raid target.
    let e = ddf1_sets(&raid5_disks(3, 2048)).unwrap()[0]
        .table()
        .unwrap_err();
    assert!(matches!(e, AtaraidError::NoMapping { .. }), "{e}");
}

#[test]
fn bad_crcs_and_missing_anchors_are_refused() {
    let mut d = image(0, true);
    let o = ((PRIMARY + 8) * 512 + 40) as usize;
    d[o] ^= 1;
    let e = Ddf1::read(&mut d).unwrap_err();
    assert_eq!(e.to_string(), "ddf1: disk data: CRC mismatch");
    assert_eq!(e.errno(), libc::EINVAL);
    let mut blank = vec![0u8; 8192];
    assert!(matches!(
        Ddf1::read(&mut blank),
        Err(AtaraidError::NotFound("ddf1"))
    ));
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(256))]

    #[test]
    fn fuzzed_ddf1_never_panics(
        flips in proptest::collection::vec((0usize..(9 * 512), any::<u8>()), 1..16),
        anchor_flips in proptest::collection::vec((0usize..512, any::<u8>()), 0..4),
        reseal in any::<bool>(),
    ) {
        let mut d = image(0, true);
        let base = (PRIMARY * 512) as usize;
        for (at, v) in flips {
            d[base + at] = v;
        }
        let anchor = ((SECTORS - 1) * 512) as usize;
        for (at, v) in anchor_flips {
            d[anchor + at] = v;
        }
        if reseal {
            // Recompute every block's CRC so the decoder goes past the checks.
            let w = W { be: true };
            for (lba, len) in [(PRIMARY, 1), (PRIMARY + 1, 2), (PRIMARY + 3, 1), (PRIMARY + 4, 2), (PRIMARY + 6, 2), (PRIMARY + 8, 1), (SECTORS - 1, 1)] {
                let o = (lba * 512) as usize;
                w.seal(&mut d[o..o + len * 512]);
            }
        }
        if let Ok(m) = Ddf1::read(&mut d) {
            let _ = m.raid_dev_line("/f");
            if let Ok(sets) = ddf1_sets(&[("/f".into(), m)]) {
                for s in sets {
                    let _ = (s.size(), s.table());
                }
            }
        }
    }
}
