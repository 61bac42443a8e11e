//! LVM2 metadata against real lvm2, both ways: VGs lvm2 made (linear, striped, multi-segment,
//! tagged LVs) read by udm match lvm2's own JSON reports and print back byte-identical; VGs
//! udm made (including a wrapped metadata buffer) pass `pvck`/`vgck` and show in `vgs`/`lvs`
//! as udm describes them, and lvm2 and udm keep taking turns on the same VG. Then damaged
//! copies, uncommitted writes, conflicting seqnos, size limits, and a seeded fuzz.

use proptest::prelude::*;
use serde_json::Value as J;
use std::path::PathBuf;
use udm_formats::lvm::mda::MdaHeader;
use udm_formats::lvm::ops::{read_label, stage_vg, ImageFile, MemDisk};
use udm_formats::lvm::{
    pvcreate, read_vg, write_vg, Disk, Document, LvmError, Metadata, PvcreateOptions, Vg,
};
use udm_testkit::loopdev::LoopDev;
use udm_testkit::lvm2::Lvm2;

const MIB: u64 = 1 << 20;

/// Image files, their loop devices (detached first on drop) and lvm2 limited to them.
struct Rig {
    loops: Vec<LoopDev>,
    lvm: Lvm2,
    imgs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

/// `n` sparse images of `mib` MiB; `prepare` runs on the files before they are attached.
fn rig(n: usize, mib: u64, prepare: impl FnOnce(&[PathBuf])) -> Option<Rig> {
    if !udm_testkit::require_tool("lvm") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let imgs: Vec<PathBuf> = (0..n)
        .map(|i| udm_testkit::image(dir.path(), &format!("pv{i}.img"), mib * MIB))
        .collect();
    prepare(&imgs);
    let mut loops = Vec::new();
    for i in &imgs {
        loops.push(LoopDev::attach(i)?);
    }
    let devs: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    let lvm = Lvm2::new(&devs)?;
    Some(Rig {
        loops,
        lvm,
        imgs,
        _dir: dir,
    })
}

impl Rig {
    fn dev(&self, i: usize) -> &str {
        self.loops[i].path()
    }
    /// `report[0][key]` of an lvm2 JSON report.
    fn report(&self, cmd: &str, key: &str, args: &[&str]) -> Vec<J> {
        let mut a = vec!["--reportformat", "json", "--units", "s"];
        a.extend_from_slice(args);
        let out = self.lvm.ok(cmd, &a);
        let j: J = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        j["report"][0][key].as_array().cloned().unwrap_or_default()
    }
    fn read(&self) -> udm_formats::lvm::ReadVg {
        let files: Vec<ImageFile> = self
            .imgs
            .iter()
            .map(|p| ImageFile::open(p, false).unwrap())
            .collect();
        let disks: Vec<&dyn Disk> = files.iter().map(|f| f as &dyn Disk).collect();
        read_vg(&disks, None).unwrap()
    }
    /// Loop device of the VG's PV named `pv`.
    fn pv_dev(&self, vg: &Vg, pv: &str) -> String {
        let id = vg.pv(pv).unwrap().id;
        let i = self
            .imgs
            .iter()
            .position(|p| {
                read_label(&ImageFile::open(p, false).unwrap())
                    .unwrap()
                    .pv_uuid
                    == id
            })
            .unwrap();
        self.dev(i).to_string()
    }
}

fn s(j: &J, k: &str) -> String {
    j[k].as_str()
        .unwrap_or_else(|| panic!("no {k} in {j}"))
        .to_string()
}

/// Compare udm's model with lvm2's vgs/pvs/lvs reports of the same VG.
fn check_reports(r: &Rig, vg: &Vg) {
    let vgs = r.report(
        "vgs",
        "vg",
        &["-o", "vg_name,vg_uuid,vg_extent_size,vg_extent_count,vg_free_count,pv_count,lv_count,vg_seqno,vg_tags"],
    );
    assert_eq!(vgs.len(), 1, "{vgs:?}");
    let v = &vgs[0];
    assert_eq!(s(v, "vg_name"), vg.name);
    assert_eq!(s(v, "vg_uuid"), vg.id.to_string());
    assert_eq!(s(v, "vg_extent_size"), format!("{}S", vg.extent_size));
    let total: u64 = vg.pvs.iter().map(|p| p.pe_count).sum();
    assert_eq!(s(v, "vg_extent_count"), total.to_string());
    assert_eq!(s(v, "vg_free_count"), vg.free_extents().to_string());
    assert_eq!(s(v, "pv_count"), vg.pvs.len().to_string());
    assert_eq!(s(v, "lv_count"), vg.lvs.len().to_string());
    assert_eq!(s(v, "vg_seqno"), vg.seqno.to_string());
    assert_eq!(s(v, "vg_tags"), vg.tags.join(","));

    let pvs = r.report(
        "pvs",
        "pv",
        &[
            "-o",
            "pv_name,pv_uuid,pe_start,dev_size,pv_pe_count,pv_pe_alloc_count",
        ],
    );
    assert_eq!(pvs.len(), vg.pvs.len());
    for pv in &vg.pvs {
        let row = pvs
            .iter()
            .find(|p| s(p, "pv_uuid") == pv.id.to_string())
            .unwrap();
        assert_eq!(s(row, "pv_name"), r.pv_dev(vg, &pv.name));
        assert_eq!(s(row, "pe_start"), format!("{}S", pv.pe_start));
        assert_eq!(s(row, "dev_size"), format!("{}S", pv.dev_size));
        assert_eq!(s(row, "pv_pe_count"), pv.pe_count.to_string());
        let free: u64 = vg.free_runs(&pv.name).iter().map(|r| r.1).sum();
        assert_eq!(
            s(row, "pv_pe_alloc_count"),
            (pv.pe_count - free).to_string()
        );
    }

    let segs = r.report(
        "lvs",
        "seg",
        &["--segments", "-o", "lv_name,lv_uuid,lv_tags,seg_start_pe,seg_size_pe,segtype,stripes,stripe_size,seg_pe_ranges"],
    );
    assert_eq!(
        segs.len(),
        vg.lvs.iter().map(|l| l.segments.len()).sum::<usize>()
    );
    for row in &segs {
        let lv = vg.lv(&s(row, "lv_name")).unwrap();
        assert_eq!(s(row, "lv_uuid"), lv.id.to_string());
        assert_eq!(s(row, "lv_tags"), lv.tags.join(","));
        let start: u64 = s(row, "seg_start_pe").parse().unwrap();
        let seg = lv
            .segments
            .iter()
            .find(|g| g.start_extent == start)
            .unwrap();
        assert_eq!(s(row, "seg_size_pe"), seg.extent_count.to_string());
        let stripes = seg.stripes().unwrap();
        let ty = if stripes.len() == 1 {
            "linear"
        } else {
            "striped"
        };
        assert_eq!(s(row, "segtype"), ty);
        assert_eq!(s(row, "stripes"), stripes.len().to_string());
        assert_eq!(
            s(row, "stripe_size"),
            format!("{}S", seg.stripe_size().unwrap_or(0))
        );
        let per = seg.extent_count / stripes.len() as u64;
        let ranges: Vec<String> = stripes
            .iter()
            .map(|(pv, pe)| format!("{}:{}-{}", r.pv_dev(vg, pv), pe, pe + per - 1))
            .collect();
        assert_eq!(s(row, "seg_pe_ranges"), ranges.join(" "));
    }
}

#[test]
fn lvm2_made_vg_reads_in_udm() {
    let Some(r) = rig(3, 64, |_| {}) else { return };
    let (d0, d1, d2) = (r.dev(0), r.dev(1), r.dev(2));
    r.lvm.ok("pvcreate", &[d0, d1, d2]);
    r.lvm
        .ok("vgcreate", &["--addtag", "vgtag", "vg_a", d0, d1, d2]);
    r.lvm.ok(
        "lvcreate",
        &["-n", "lin", "-L", "8M", "--addtag", "t1", "vg_a"],
    );
    r.lvm.ok(
        "lvcreate",
        &["-n", "str", "-L", "24M", "-i", "3", "-I", "64K", "vg_a"],
    );
    r.lvm.ok(
        "lvcreate",
        &["-n", "str2", "-l", "4", "-i", "2", "-I", "128K", "vg_a"],
    );
    r.lvm.ok("lvextend", &["-l", "+3", "vg_a/lin"]);
    let got = r.read();
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    let vg = &got.metadata.vg;
    assert_eq!(vg.seqno, 5, "vgcreate, 3 lvcreate, lvextend");
    assert_eq!(
        vg.lv("lin").unwrap().segments.len(),
        2,
        "lvextend made a second segment"
    );
    assert!(got.pv_disks.iter().all(Option::is_some));
    check_reports(&r, vg);
    // lvm2's own text prints back byte-identical, from the tree and from the typed model.
    let mut tree = Document::parse(&got.text)
        .unwrap()
        .print(false)
        .into_bytes();
    tree.push(0);
    assert_eq!(tree, got.text);
    assert_eq!(
        String::from_utf8_lossy(&got.metadata.to_bytes()),
        String::from_utf8_lossy(&got.text)
    );
}

#[test]
fn lvm2_second_metadata_area_is_a_fallback() {
    let Some(r) = rig(2, 64, |_| {}) else { return };
    let (d0, d1) = (r.dev(0), r.dev(1));
    r.lvm.ok("pvcreate", &["--metadatacopies", "2", d0, d1]);
    r.lvm.ok("vgcreate", &["vg_2", d0, d1]);
    r.lvm.ok("lvcreate", &["-n", "lin", "-l", "3", "vg_2"]);
    let good = r.read();
    assert!(good.warnings.is_empty(), "{:?}", good.warnings);
    check_reports(&r, &good.metadata.vg);
    // Damage the first area's text on the first PV, then its second area's header.
    let hdr = read_label(&ImageFile::open(&r.imgs[0], false).unwrap()).unwrap();
    assert_eq!(hdr.metadata_areas.len(), 2);
    let mut f = ImageFile::open(&r.imgs[0], true).unwrap();
    let mut hb = [0u8; 512];
    f.read_at(4096, &mut hb).unwrap();
    let h = MdaHeader::decode(4096, &hb).unwrap();
    f.write_at(4096 + h.raw_locns[0].offset + 10, b"#").unwrap();
    let got = r.read();
    assert_eq!(got.metadata, good.metadata);
    assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
    assert!(got.warnings[0].contains("mda1") && got.warnings[0].contains("checksum"));
    f.write_at(hdr.metadata_areas[1].offset + 8, b"XXXX")
        .unwrap();
    let got = r.read();
    assert_eq!(got.metadata, good.metadata);
    assert!(got
        .warnings
        .iter()
        .any(|w| w.contains("mda2") && w.contains("metadata area header")));
}

/// udm makes PVs (the third with a small metadata area, the second with two areas) and a VG with linear, striped and
/// multi-PV LVs, rewriting until the small area's text wraps around its end.
fn udm_vg(imgs: &[PathBuf]) {
    let mut files: Vec<ImageFile> = imgs
        .iter()
        .map(|p| ImageFile::open(p, true).unwrap())
        .collect();
    let mut hdrs = Vec::new();
    for (i, f) in files.iter_mut().enumerate() {
        let opts = PvcreateOptions {
            data_offset: if i == 2 { 12288 } else { MIB },
            metadata_copies: if i == 1 { 2 } else { 1 },
            ..Default::default()
        };
        hdrs.push((
            pvcreate(f, &opts).unwrap(),
            Some(imgs[i].display().to_string()),
        ));
    }
    let mut vg = Vg::create("vg_u", 8192, &hdrs).unwrap();
    vg.create_lv("lin", 3, 1, 0, "udmhost", 1_700_000_000)
        .unwrap();
    vg.create_lv("str", 6, 3, 128, "udmhost", 1_700_000_000)
        .unwrap();
    vg.create_lv("str2", 4, 2, 256, "udmhost", 1_700_000_000)
        .unwrap();
    vg.create_lv("big", 20, 1, 0, "udmhost", 1_700_000_000)
        .unwrap();
    assert!(vg.lv("big").unwrap().segments.len() >= 2, "spans PVs");
    let mut wrapped = false;
    for i in 0..8 {
        let desc = format!("udm test {}", "x".repeat(i * 211));
        let m = Metadata::new(vg.clone(), &desc, "udmhost", "Linux udmhost", 1_700_000_000);
        let mut disks: Vec<&mut dyn Disk> = files.iter_mut().map(|f| f as &mut dyn Disk).collect();
        write_vg(&m, &mut disks).unwrap();
        let mut hb = [0u8; 512];
        files[2].read_at(4096, &mut hb).unwrap();
        let h = MdaHeader::decode(4096, &hb).unwrap();
        if h.raw_locns[0].offset + h.raw_locns[0].size > h.size {
            wrapped = true;
            break;
        }
        vg.seqno += 1;
    }
    assert!(wrapped, "the small metadata area never wrapped");
}

#[test]
fn udm_made_vg_passes_lvm2() {
    let Some(r) = rig(3, 64, udm_vg) else { return };
    let vg = r.read().metadata.vg;
    for i in 0..3 {
        let out = r.lvm.ok("pvck", &["--dump", "headers", r.dev(i)]);
        assert!(!out.contains("CHECK"), "pvck {}:\n{out}", r.dev(i));
        // Every metadata area (two on the second PV) holds the current copy.
        let copies = out.matches(&format!("seqno {}", vg.seqno)).count();
        assert_eq!(copies, if i == 1 { 2 } else { 1 }, "{out}");
    }
    check_reports(&r, &vg);
    // lvm2 says nothing about udm's metadata beyond its own activation notice.
    for (cmd, args) in [
        (
            "lvs",
            &["-a", "-o+devices,seg_type,stripes,stripe_size"][..],
        ),
        ("pvck", &[r.dev(2)][..]),
        ("vgck", &["vg_u"][..]),
    ] {
        let o = r.lvm.cmd(cmd, args);
        assert!(o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.lines()
                .all(|l| l.trim().is_empty() || l.contains("Activation disabled")),
            "{cmd}: {err}"
        );
    }
    // The view: lvs -a -o+devices,seg_type,stripes,stripe_size.
    let rows = r.report(
        "lvs",
        "lv",
        &["-a", "-o+devices,seg_type,stripes,stripe_size"],
    );
    let str_row = rows.iter().find(|x| s(x, "lv_name") == "str").unwrap();
    let devs: Vec<String> = vg.lv("str").unwrap().segments[0]
        .stripes()
        .unwrap()
        .iter()
        .map(|(pv, pe)| format!("{}({pe})", r.pv_dev(&vg, pv)))
        .collect();
    assert_eq!(s(str_row, "devices"), devs.join(","));
    assert_eq!(s(str_row, "segtype"), "striped");
    assert_eq!(s(str_row, "stripes"), "3");
    assert_eq!(s(str_row, "stripe_size"), "128S");
    assert_eq!(s(str_row, "lv_size"), format!("{}S", 6 * 8192));

    // Turns: lvm2 changes the udm-made VG, udm reads and changes it, lvm2 checks again.
    r.lvm.ok("lvcreate", &["-n", "by_lvm", "-l", "2", "vg_u"]);
    r.lvm.ok("lvremove", &["-y", "vg_u/str2"]);
    let got = r.read();
    let mut vg2 = got.metadata.vg;
    assert_eq!(vg2.seqno, vg.seqno + 2);
    assert!(vg2.lv("by_lvm").is_some() && vg2.lv("str2").is_none());
    vg2.seqno += 1;
    vg2.create_lv("again", 2, 2, 128, "udmhost", 1_700_000_100)
        .unwrap();
    {
        let mut files: Vec<ImageFile> = r
            .imgs
            .iter()
            .map(|p| ImageFile::open(p, true).unwrap())
            .collect();
        let mut disks: Vec<&mut dyn Disk> = files.iter_mut().map(|f| f as &mut dyn Disk).collect();
        let m = Metadata::new(
            vg2.clone(),
            "udm again",
            "udmhost",
            "Linux udmhost",
            1_700_000_100,
        );
        write_vg(&m, &mut disks).unwrap();
    }
    assert!(r.lvm.cmd("vgck", &["vg_u"]).status.success());
    check_reports(&r, &vg2);
}

/// Two in-memory PVs of `mib` MiB holding a VG with one linear and one striped LV.
fn mem_vg(mib: u64, data_offset: u64) -> (Vec<MemDisk>, Vg) {
    let mut disks = vec![
        MemDisk(vec![0; (mib * MIB) as usize]),
        MemDisk(vec![0; (mib * MIB) as usize]),
    ];
    let opts = PvcreateOptions {
        data_offset,
        ..Default::default()
    };
    let hdrs: Vec<_> = disks
        .iter_mut()
        .map(|d| (pvcreate(d, &opts).unwrap(), None))
        .collect();
    let mut vg = Vg::create("vg_m", 128, &hdrs).unwrap();
    vg.create_lv("lin", 2, 1, 0, "h", 1).unwrap();
    vg.create_lv("str", 4, 2, 128, "h", 1).unwrap();
    (disks, vg)
}

fn write_mem(disks: &mut [MemDisk], vg: &Vg) -> Result<(), LvmError> {
    // The description's length varies with the seqno so copies do not fall into step.
    let desc = "d".repeat((vg.seqno as usize * 157) % 700);
    let m = Metadata::new(vg.clone(), &desc, "h", "Linux h", 1);
    let mut d: Vec<&mut dyn Disk> = disks.iter_mut().map(|d| d as &mut dyn Disk).collect();
    write_vg(&m, &mut d)
}

fn read_mem(disks: &[MemDisk]) -> Result<udm_formats::lvm::ReadVg, LvmError> {
    let d: Vec<&dyn Disk> = disks.iter().map(|d| d as &dyn Disk).collect();
    read_vg(&d, Some("vg_m"))
}

/// Absolute offset of the committed text of `disk`'s first metadata area.
fn text_at(disk: &MemDisk) -> usize {
    let h = MdaHeader::decode(4096, &disk.0[4096..4608]).unwrap();
    (4096 + h.raw_locns[0].offset) as usize
}

#[test]
fn damaged_copy_falls_back_to_another_pv() {
    let (mut disks, mut vg) = mem_vg(8, MIB);
    write_mem(&mut disks, &vg).unwrap();
    vg.seqno = 2;
    write_mem(&mut disks, &vg).unwrap();
    let t = text_at(&disks[0]);
    disks[0].0[t + 20] ^= 0x55;
    let got = read_mem(&disks).unwrap();
    assert_eq!(got.metadata.vg.seqno, 2);
    assert!(
        got.warnings.iter().any(|w| w.contains("checksum")),
        "{:?}",
        got.warnings
    );
    disks[1].0[4096 + 100] ^= 0x01;
    match read_mem(&disks) {
        Err(LvmError::NoValidMetadata { reasons, .. }) => {
            assert!(
                reasons.contains("checksum") && reasons.contains("metadata area header"),
                "{reasons}"
            )
        }
        other => panic!("expected NoValidMetadata, got {other:?}"),
    }
}

#[test]
fn old_copy_readable_until_commit() {
    let (mut disks, mut vg) = mem_vg(8, MIB);
    write_mem(&mut disks, &vg).unwrap();
    vg.seqno = 2;
    vg.create_lv("late", 1, 1, 0, "h", 2).unwrap();
    let m = Metadata::new(vg.clone(), "t", "h", "Linux h", 2);
    let staged = {
        let mut d: Vec<&mut dyn Disk> = disks.iter_mut().map(|d| d as &mut dyn Disk).collect();
        stage_vg(&m, &mut d).unwrap()
    };
    let before = read_mem(&disks).unwrap();
    assert_eq!(before.metadata.vg.seqno, 1);
    assert!(before.metadata.vg.lv("late").is_none());
    let h = MdaHeader::decode(4096, &disks[0].0[4096..4608]).unwrap();
    assert!(!h.raw_locns[1].is_empty(), "precommit slot set");
    let mut d: Vec<&mut dyn Disk> = disks.iter_mut().map(|d| d as &mut dyn Disk).collect();
    staged.commit(&mut d).unwrap();
    let after = read_mem(&disks).unwrap();
    assert_eq!(after.metadata.vg.seqno, 2);
    assert!(after.metadata.vg.lv("late").is_some());
    assert!(
        read_label(&disks[0]).unwrap().ext_flags & 1 == 1,
        "PV marked in use"
    );
}

#[test]
fn same_seqno_different_text_is_inconsistent() {
    let (mut disks, mut vg) = mem_vg(8, MIB);
    write_mem(&mut disks, &vg).unwrap();
    let first_pv0 = disks[0].0.clone();
    vg.create_lv("other", 1, 1, 0, "h", 1).unwrap();
    write_mem(&mut disks, &vg).unwrap(); // still seqno 1
    disks[0].0 = first_pv0;
    match read_mem(&disks) {
        Err(LvmError::Inconsistent(m)) => assert!(m.contains("seqno 1"), "{m}"),
        other => panic!("expected Inconsistent, got {other:?}"),
    }
}

#[test]
fn circular_buffer_wraps_and_reads_back() {
    let (mut disks, mut vg) = mem_vg(4, 4096 + 8192);
    let mut wraps = 0;
    for seq in 1..=12 {
        vg.seqno = seq;
        write_mem(&mut disks, &vg).unwrap();
        let got = read_mem(&disks).unwrap();
        assert_eq!(got.metadata.vg, vg);
        let h = MdaHeader::decode(4096, &disks[1].0[4096..4608]).unwrap();
        if h.raw_locns[0].offset + h.raw_locns[0].size > h.size {
            wraps += 1;
        }
    }
    assert!(wraps > 0, "never wrapped");
}

#[test]
fn too_large_metadata_and_too_small_pvs_are_refused() {
    let (mut disks, mut vg) = mem_vg(4, 4096 + 4096);
    let before: Vec<Vec<u8>> = disks.iter().map(|d| d.0.clone()).collect();
    for i in 0..20 {
        vg.create_lv(&format!("lv{i}"), 1, 1, 0, "h", 1).unwrap();
    }
    match write_mem(&mut disks, &vg) {
        Err(e @ LvmError::MetadataTooLarge { .. }) => assert_eq!(e.errno(), libc::ENOSPC),
        other => panic!("expected MetadataTooLarge, got {other:?}"),
    }
    assert!(
        disks.iter().zip(&before).all(|(d, b)| &d.0 == b),
        "nothing written"
    );
    let mut small = MemDisk(vec![0; MIB as usize]);
    assert!(matches!(
        pvcreate(&mut small, &PvcreateOptions::default()),
        Err(LvmError::TooSmall { .. })
    ));
    assert!(small.0.iter().all(|&b| b == 0));
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(400))]

    /// Corrupted labels, headers and texts give a VG or a clear error, never a panic.
    #[test]
    fn corrupted_pvs_never_panic(
        edits in prop::collection::vec((0usize..3, 0usize..1536, any::<u8>()), 1..12),
    ) {
        let (mut disks, vg) = mem_vg(2, 4096 + 8192);
        write_mem(&mut disks, &vg).unwrap();
        let t = text_at(&disks[0]);
        for (region, off, val) in edits {
            let at = match region { 0 => off % 2048, 1 => 4096 + off % 512, _ => t + off };
            disks[0].0[at] = val;
        }
        match read_mem(&disks) {
            Ok(got) => prop_assert_eq!(got.metadata.vg, vg),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let d: &dyn Disk = &disks[0];
        let _ = read_vg(&[d], None).map_err(|e| e.errno());
    }

    /// Mutated metadata text parses into a model or a clear error; whatever parses prints
    /// back to a document that parses to the same tree.
    #[test]
    fn mutated_text_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8)) {
        let (_, vg) = mem_vg(2, MIB);
        let mut text = Metadata::new(vg, "t", "h", "Linux h", 1).to_bytes();
        for (i, b) in edits {
            let n = text.len();
            text[i.index(n)] = b;
        }
        let _ = Metadata::parse(&text).map_err(|e| e.errno());
        if let Ok(doc) = Document::parse(&text) {
            let again = Document::parse(doc.print(false).as_bytes()).unwrap();
            prop_assert_eq!(again, doc);
        }
    }
}

#[test]
fn bad_references_are_refused_and_unknown_segments_survive() {
    let (_, vg) = mem_vg(4, MIB);
    let text =
        String::from_utf8(Metadata::new(vg.clone(), "t", "h", "Linux h", 1).to_bytes()).unwrap();
    let cases = [
        (
            text.replacen("\"pv1\", 0", "\"pv9\", 0", 1),
            "unknown PV pv9",
        ),
        (
            text.replacen("segment_count = 1", "segment_count = 2", 1),
            "segment_count 2 but 1",
        ),
        (
            text.replacen("seqno = 1", "seqno = \"one\"", 1),
            "seqno must be a non-negative integer",
        ),
        (
            text.replacen("extent_size = 128", "extent_size = 0", 1),
            "extent_size is 0",
        ),
        (
            text.replacen(
                "contents = \"Text Format Volume Group\"",
                "contents = \"x\"",
                1,
            ),
            "unknown contents",
        ),
    ];
    for (bad, want) in cases {
        assert_ne!(bad, text, "{want}: the edit applied");
        let e = Metadata::parse(bad.as_bytes()).unwrap_err();
        assert!(e.to_string().contains(want), "{e} lacks {want}");
        assert_eq!(e.errno(), libc::EINVAL);
    }
    let mut overlap = vg.clone();
    overlap.lvs[1].segments[0] =
        udm_formats::lvm::Segment::striped(0, 4, 128, &[("pv0", 1), ("pv1", 0)]);
    let e = overlap.validate().unwrap_err();
    assert!(
        e.to_string()
            .contains("extent 1 of pv0 used by both lin and str"),
        "{e}"
    );

    // A thin pool written the way lvm2 writes one: the typed model keeps its keys.
    let thin = text.replacen(
        "type = \"striped\"\nstripe_count = 1\n\nstripes = [\n\"pv0\", 0\n]\n",
        "type = \"thin-pool\"\nmetadata = \"pool_tmeta\"\npool = \"pool_tdata\"\ntransaction_id = 3\nchunk_size = 128\ndiscards = \"passdown\"\nzero_new_blocks = 1\nfuture_key = [1, 2.5, \"x\"]\n",
        1,
    );
    assert_ne!(thin, text);
    let m = Metadata::parse(thin.as_bytes()).unwrap();
    let seg = &m.vg.lv("lin").unwrap().segments[0];
    assert_eq!(seg.seg_type, "thin-pool");
    assert_eq!(seg.get("transaction_id").and_then(|v| v.as_int()), Some(3));
    assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), thin);
}

#[test]
fn ignored_metadata_area_is_left_alone() {
    let Some(r) = rig(2, 64, |_| {}) else { return };
    let (d0, d1) = (r.dev(0), r.dev(1));
    r.lvm.ok("pvcreate", &[d0, d1]);
    r.lvm.ok("vgcreate", &["vg_i", d0, d1]);
    r.lvm.ok("pvchange", &["--metadataignore", "y", d1]);
    r.lvm.ok("lvcreate", &["-n", "a", "-l", "2", "vg_i"]);
    let area = |i: usize| {
        let mut b = vec![0u8; 8192];
        ImageFile::open(&r.imgs[i], false)
            .unwrap()
            .read_at(4096, &mut b)
            .unwrap();
        b
    };
    let before = area(1);
    let got = r.read();
    assert!(
        got.pv_disks.iter().all(Option::is_some),
        "the ignored PV is still found"
    );
    let mut vg = got.metadata.vg;
    vg.seqno += 1;
    vg.create_lv("b", 3, 2, 128, "h", 1).unwrap();
    {
        let mut files: Vec<ImageFile> = r
            .imgs
            .iter()
            .map(|p| ImageFile::open(p, true).unwrap())
            .collect();
        let mut disks: Vec<&mut dyn Disk> = files.iter_mut().map(|f| f as &mut dyn Disk).collect();
        write_vg(
            &Metadata::new(vg.clone(), "t", "h", "Linux h", 1),
            &mut disks,
        )
        .unwrap();
    }
    assert_eq!(area(1), before, "the ignored area is untouched");
    let out = r.lvm.ok("pvck", &["--dump", "headers", d1]);
    assert!(
        out.contains("RAW_LOCN_IGNORED") && !out.contains("CHECK"),
        "{out}"
    );
    assert!(r.lvm.cmd("vgck", &["vg_i"]).status.success());
    check_reports(&r, &vg);
}
