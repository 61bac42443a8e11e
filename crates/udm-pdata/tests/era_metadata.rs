//! The era metadata front end against the real tools: metadata udm writes (writesets
//! archived and current, a digested era array, a held metadata snapshot) passes `era_check`,
//! and `era_dump` lists udm's writesets and era array; udm reopens it with the same state.
//! Skips without the tools, fails then under `UDM_REQUIRE_TOOLS=1`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use udm_pdata::era::EraMetadata;
use udm_pdata::io::{FileIo, MetaIo};
use udm_pdata::BLOCK_SIZE;
use udm_testkit::require_tool;

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn attr(line: &str, name: &str) -> Option<u64> {
    let pat = format!(" {name}=\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    line[start..end].parse().ok()
}

/// (writesets: era → marked blocks, era array: block → era) from `era_dump`.
fn dumped(path: &Path) -> (BTreeMap<u64, Vec<u64>>, BTreeMap<u64, u64>) {
    let xml = run_ok(Command::new("era_dump").arg(path));
    let (mut ws, mut arr) = (BTreeMap::new(), BTreeMap::new());
    let mut cur = None;
    for l in xml.lines().map(str::trim) {
        if l.starts_with("<writeset ") {
            let e = attr(l, "era").unwrap();
            ws.insert(e, Vec::new());
            cur = Some(e);
        } else if l.starts_with("<bit ") {
            if attr(l, "value").is_none() && l.contains("value=\"true\"") {
                ws.get_mut(&cur.unwrap())
                    .unwrap()
                    .push(attr(l, "block").unwrap());
            }
        } else if l.starts_with("<era ") {
            arr.insert(attr(l, "block").unwrap(), attr(l, "era").unwrap());
        }
    }
    (ws, arr)
}

#[test]
fn udm_era_metadata_passes_era_check_and_dumps() {
    if !["era_check", "era_dump"].iter().all(|t| require_tool(t)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(512 * BLOCK_SIZE as u64)
        .unwrap();
    let io: Arc<dyn MetaIo> = Arc::new(FileIo::open(&meta).unwrap());
    let mut md = EraMetadata::format(io.clone(), 128).unwrap();
    md.resize(1000).unwrap();
    md.rollover().unwrap(); // era 1
    for b in (0..1000).step_by(7) {
        assert!(md.mark(b).unwrap());
    }
    assert!(!md.mark(0).unwrap(), "already marked");
    md.rollover().unwrap(); // era 2; era 1 archived
    for b in (0..1000).step_by(11) {
        md.mark(b).unwrap();
    }
    md.rollover().unwrap(); // era 3; era 2 archived
    assert!(md.digest_one().unwrap(), "era 1 digested");
    for b in [5u64, 6, 999] {
        md.mark(b).unwrap();
    }
    md.commit().unwrap();
    run_ok(Command::new("era_check").arg(&meta));
    let (ws, arr) = dumped(&meta);
    let era2: Vec<u64> = (0..1000).step_by(11).collect();
    assert_eq!(ws.get(&2), Some(&era2), "archived writeset of era 2");
    assert!(!ws.contains_key(&1), "era 1 was digested");
    assert_eq!(arr.len(), 1000);
    for (b, e) in &arr {
        assert_eq!(*e, if b % 7 == 0 { 1 } else { 0 }, "era of block {b}");
    }
    // A held snapshot: era_check still passes, udm drops it again.
    let snap = md.take_snap().unwrap();
    md.commit().unwrap();
    assert_eq!(md.current_era(), 4);
    run_ok(Command::new("era_check").arg(&meta));
    drop(md);
    let mut md = EraMetadata::open(io.clone(), 128).unwrap();
    assert_eq!(md.superblock().metadata_snap, snap);
    let sets: Vec<u32> = md.writesets().unwrap().iter().map(|w| w.0).collect();
    assert_eq!(sets, vec![2, 3]);
    while md.digest_one().unwrap() {}
    let arr = md.era_array().unwrap();
    assert_eq!(arr[5], 3);
    assert_eq!(arr[11], 2);
    assert_eq!(arr[7], 1);
    assert_eq!(arr[77], 2);
    md.drop_snap().unwrap();
    md.commit().unwrap();
    run_ok(Command::new("era_check").arg(&meta));
    let (ws, arr2) = dumped(&meta);
    assert!(ws.is_empty(), "{ws:?}");
    assert_eq!(arr2.values().map(|&e| e as u32).collect::<Vec<_>>(), arr);
}
