//! Both directions against thin-provisioning-tools: metadata udm writes passes the real
//! `thin_check` at every commit of a random workload and `thin_dump` lists exactly udm's
//! mappings; metadata `thin_restore` makes from XML (thousands of mappings, shared blocks,
//! several devices) opens in udm, reads back as the XML says, passes udm's checker, and
//! after udm modifies it still passes `thin_check`.
//! Skips when the tools are missing, fails then under `UDM_REQUIRE_TOOLS=1`.

mod common;

use common::{attr, devices, fill, Devs};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tempfile::TempDir;
use udm_pdata::check::check_thin;
use udm_pdata::io::FileIo;
use udm_pdata::thin::ThinMetadata;
use udm_pdata::BLOCK_SIZE;
use udm_testkit::require_tool;
use udm_testkit::rng::XorShift;

fn tools() -> bool {
    ["thin_check", "thin_dump", "thin_restore"]
        .iter()
        .all(|t| require_tool(t))
}

fn thin_check(path: &Path) {
    udm_testkit::run(Command::new("thin_check").arg(path));
}

/// Parse `thin_dump` XML into devices → (vblock → data block).
fn thin_dump(path: &Path) -> Devs {
    thin_dump_args(path, &[])
}

fn thin_dump_args(path: &Path, args: &[&str]) -> Devs {
    let out = Command::new("thin_dump")
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "thin_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut devs = Devs::new();
    let mut cur = None;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("<device ") {
            let d = attr(l, "dev_id").unwrap();
            devs.insert(d, BTreeMap::new());
            cur = Some(d);
        } else if l.starts_with("<single_mapping ") {
            let m = devs.get_mut(&cur.unwrap()).unwrap();
            m.insert(
                attr(l, "origin_block").unwrap(),
                attr(l, "data_block").unwrap(),
            );
        } else if l.starts_with("<range_mapping ") {
            let m = devs.get_mut(&cur.unwrap()).unwrap();
            let (o, d, n) = (
                attr(l, "origin_begin").unwrap(),
                attr(l, "data_begin").unwrap(),
                attr(l, "length").unwrap(),
            );
            for i in 0..n {
                m.insert(o + i, d + i);
            }
        }
    }
    devs
}

/// A fresh pool with `data_blocks` data blocks, its metadata on a sparse file of
/// `meta_blocks` blocks in a new temp dir: the dir, the file, its io, the metadata.
fn pool(meta_blocks: u64, data_blocks: u64) -> (TempDir, PathBuf, Arc<FileIo>, ThinMetadata) {
    let dir = tempfile::tempdir().unwrap();
    let path = udm_testkit::image(dir.path(), "meta", meta_blocks * BLOCK_SIZE as u64);
    let io = Arc::new(FileIo::open(&path).unwrap());
    let md = ThinMetadata::format(io.clone(), 128, data_blocks).unwrap();
    (dir, path, io, md)
}

#[test]
fn udm_metadata_passes_thin_check_and_dumps_exactly() {
    if !tools() {
        return;
    }
    let seed = 0x5eed_0f17_u64;
    eprintln!("workload seed {seed}");
    let mut rng = XorShift::new(seed);
    let (_dir, path, io, mut md) = pool(8192, 100_000);
    thin_check(&path);
    let mut model = Devs::new();
    for round in 0..12 {
        for _ in 0..6 {
            let dev = rng.below(5);
            match rng.below(10) {
                0 if !model.contains_key(&dev) => {
                    md.create_thin(dev).unwrap();
                    model.insert(dev, BTreeMap::new());
                }
                1 if !model.contains_key(&dev) && !model.is_empty() => {
                    let origin = *model
                        .keys()
                        .nth(rng.below(model.len() as u64) as usize)
                        .unwrap();
                    md.create_snap(dev, origin).unwrap();
                    let m = model[&origin].clone();
                    model.insert(dev, m);
                }
                2 if model.contains_key(&dev) && rng.below(3) == 0 => {
                    md.delete(dev).unwrap();
                    model.remove(&dev);
                }
                3..=6 if model.contains_key(&dev) => {
                    let start = rng.below(20_000);
                    let new = fill(&mut md, dev, start..start + rng.below(700));
                    model.get_mut(&dev).unwrap().extend(new);
                }
                7..=9 if model.contains_key(&dev) => {
                    let start = rng.below(20_000);
                    for v in (start..start + rng.below(700)).step_by(1 + rng.below(3) as usize) {
                        let had = model.get_mut(&dev).unwrap().remove(&v).is_some();
                        assert_eq!(md.remove(dev, v).unwrap(), had);
                    }
                }
                _ => {}
            }
        }
        md.set_transaction_id(round + 1);
        md.commit().unwrap();
        thin_check(&path);
        assert_eq!(thin_dump(&path), model, "thin_dump after commit {round}");
        check_thin(io.clone()).unwrap();
    }
    assert!(
        model.values().map(|m| m.len()).sum::<usize>() > 1000,
        "workload too small"
    );
}

#[test]
fn thin_restore_metadata_opens_and_reads_back_in_udm() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let xml_path = dir.path().join("in.xml");
    // Three devices; 2 is a snapshot-like copy sharing device 1's first half.
    let mut expect = Devs::new();
    let mut xml = String::from(
        "<superblock uuid=\"\" time=\"2\" transaction=\"7\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"60000\">\n",
    );
    let mut dev1 = BTreeMap::new();
    for v in 0..6000u64 {
        dev1.insert(v * 2, 10_000 + v);
    }
    let mut dev2: BTreeMap<u64, u64> = dev1
        .iter()
        .filter(|(v, _)| **v < 6000)
        .map(|(a, b)| (*a, *b))
        .collect();
    for v in 0..3000u64 {
        dev2.insert(20_000 + v, 30_000 + v);
    }
    let dev5: BTreeMap<u64, u64> = (0..40u64).map(|v| (v * 1000, 50_000 + v)).collect();
    for (id, m) in [(1u64, &dev1), (2, &dev2), (5, &dev5)] {
        xml.push_str(&format!(
            "  <device dev_id=\"{id}\" mapped_blocks=\"{}\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">\n",
            m.len()
        ));
        for (v, b) in m {
            xml.push_str(&format!(
                "    <single_mapping origin_block=\"{v}\" data_block=\"{b}\" time=\"1\"/>\n"
            ));
        }
        xml.push_str("  </device>\n");
        expect.insert(id, m.clone());
    }
    xml.push_str("</superblock>\n");
    std::fs::write(&xml_path, xml).unwrap();
    let meta = udm_testkit::image(dir.path(), "meta", 4096 * BLOCK_SIZE as u64);
    udm_testkit::run(
        Command::new("thin_restore")
            .arg("-i")
            .arg(&xml_path)
            .arg("-o")
            .arg(&meta),
    );
    thin_check(&meta);

    let io = Arc::new(FileIo::open(&meta).unwrap());
    let report = check_thin(io.clone()).unwrap();
    assert_eq!(report.devices, 3);
    let shared = dev1.keys().filter(|v| **v < 6000).count() as u64;
    assert_eq!(
        report.data_used,
        (dev1.len() + dev2.len() + dev5.len()) as u64 - shared
    );
    let mut md = ThinMetadata::open(io.clone()).unwrap();
    assert_eq!(md.superblock().trans_id, 7);
    assert_eq!(md.superblock().data_block_size, 128);
    assert_eq!(devices(&mut md), expect);
    assert_eq!(
        md.details(2).unwrap().unwrap().mapped_blocks,
        dev2.len() as u64
    );
    assert_eq!(
        md.data_sm().get(10_000),
        2,
        "block shared by devices 1 and 2"
    );

    // udm changes the restored pool; the real tools still accept it and agree.
    md.remove(1, 0).unwrap();
    expect.get_mut(&1).unwrap().remove(&0);
    let b = md.alloc_data_block().unwrap();
    md.insert(2, 2, b).unwrap();
    expect.get_mut(&2).unwrap().insert(2, b);
    md.delete(5).unwrap();
    expect.remove(&5);
    md.commit().unwrap();
    thin_check(&meta);
    assert_eq!(thin_dump(&meta), expect);
    assert_eq!(md.data_sm().get(10_000), 1);
}

/// Snapshots of snapshots: data blocks and subtree roots referenced more than twice, so
/// both space maps' overflow trees are on disk; thin_check accepts the counts and
/// thin_dump shows each device's view.
#[test]
fn snapshots_of_snapshots_pass_thin_check() {
    if !tools() {
        return;
    }
    let (_dir, path, io, mut md) = pool(4096, 50_000);
    md.create_thin(0).unwrap();
    let mut model = Devs::new();
    model.insert(0, fill(&mut md, 0, 0..2000));
    md.commit().unwrap();
    // A chain of snapshots, each taken from the previous and then written a little,
    // plus untouched snapshots of the origin sharing its whole tree.
    for dev in 1..6u64 {
        md.create_snap(dev, dev - 1).unwrap();
        let mut m = model[&(dev - 1)].clone();
        m.extend(fill(&mut md, dev, [dev, dev * 300]));
        model.insert(dev, m);
    }
    for dev in 10..14u64 {
        md.create_snap(dev, 0).unwrap();
        let m = model[&0].clone();
        model.insert(dev, m);
    }
    md.commit().unwrap();
    let first = model[&0][&0];
    assert!(
        md.data_sm().get(first) > 2,
        "data block shared by more than two leaves"
    );
    thin_check(&path);
    assert_eq!(thin_dump(&path), model);
    // Delete the middle of the chain: counts drop back, still consistent.
    md.delete(3).unwrap();
    md.delete(0).unwrap();
    model.remove(&3);
    model.remove(&0);
    md.commit().unwrap();
    thin_check(&path);
    assert_eq!(thin_dump(&path), model);
    check_thin(io).unwrap();
}

/// A held metadata snapshot: `thin_dump -m` shows the pool as it was when reserved while
/// the live metadata moves on, `thin_check` counts the shared trees, and releasing it
/// frees what only it used.
#[test]
fn metadata_snapshot_is_dumped_and_released() {
    if !tools() {
        return;
    }
    let (_dir, path, io, mut md) = pool(4096, 50_000);
    md.create_thin(4).unwrap();
    let before = fill(&mut md, 4, 0..1500);
    let held = md.reserve_metadata_snap().unwrap();
    let mut after = before.clone();
    for v in (0..1500).step_by(2) {
        md.remove(4, v).unwrap();
        after.remove(&v);
    }
    md.create_thin(5).unwrap();
    md.commit().unwrap();
    assert_eq!(md.superblock().metadata_snap, held);
    thin_check(&path);
    check_thin(io.clone()).unwrap();
    assert_eq!(
        thin_dump(&path),
        Devs::from([(4, after.clone()), (5, BTreeMap::new())])
    );
    assert_eq!(thin_dump_args(&path, &["-m"]), Devs::from([(4, before)]));
    let used_with_snap = check_thin(io.clone()).unwrap();
    md.release_metadata_snap().unwrap();
    md.commit().unwrap();
    thin_check(&path);
    let used = check_thin(io.clone()).unwrap();
    assert_eq!(used.data_used, after.len() as u64);
    assert!(used.metadata_used < used_with_snap.metadata_used);
    assert_eq!(used_with_snap.data_used, 1500);
}

/// Growing the data and metadata devices (across space map bitmap boundaries) gives
/// metadata the tools accept, with the new sizes and the new blocks usable.
#[test]
fn grown_pool_passes_thin_check() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta");
    let small = Arc::new(udm_pdata::io::MemIo::new(1000));
    // Format on a 1000-block view, then reopen on the whole 20000-block file.
    let mut md = ThinMetadata::format(small.clone(), 128, 16_000).unwrap();
    md.create_thin(1).unwrap();
    fill(&mut md, 1, 0..16_000);
    assert!(md.alloc_data_block().is_err(), "data device full");
    md.commit().unwrap();
    let bytes = small.to_bytes();
    std::fs::write(&path, &bytes).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(20_000 * 4096)
        .unwrap();
    thin_check(&path);
    let io = Arc::new(FileIo::open(&path).unwrap());
    let mut md = ThinMetadata::open(io.clone()).unwrap();
    md.resize_data(40_000).unwrap();
    md.resize_metadata(20_000).unwrap();
    fill(&mut md, 1, 16_000..30_000);
    md.commit().unwrap();
    thin_check(&path);
    let dump = thin_dump(&path);
    assert_eq!(dump[&1].len(), 30_000);
    let report = check_thin(io).unwrap();
    assert_eq!(report.data_used, 30_000);
    let out = Command::new("thin_dump").arg(&path).output().unwrap();
    let head = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    assert!(head.contains("nr_data_blocks=\"40000\""), "{head}");
}

/// Removing most mappings merges and rebalances nodes; the shrunken trees still satisfy
/// thin_check (node fill, key order) and the dump matches.
#[test]
fn drained_device_passes_thin_check() {
    if !tools() {
        return;
    }
    let (_dir, path, io, mut md) = pool(4096, 50_000);
    md.create_thin(3).unwrap();
    let mut model = fill(&mut md, 3, 0..12_000);
    md.commit().unwrap();
    let mut rng = XorShift::new(0xd7a1_0bad);
    for _ in 0..11_000 {
        let v = rng.below(12_000);
        assert_eq!(md.remove(3, v).unwrap(), model.remove(&v).is_some());
    }
    md.commit().unwrap();
    thin_check(&path);
    assert_eq!(thin_dump(&path), Devs::from([(3, model)]));
    check_thin(io).unwrap();
}
