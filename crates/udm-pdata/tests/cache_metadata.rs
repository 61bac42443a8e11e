//! The cache metadata front end against the real tools: metadata udm writes (v1 and v2,
//! mappings, dirty bits, hints, discards) passes `cache_check` and `cache_dump` lists exactly
//! udm's mappings and dirty bits; `cache_restore` XML opens in udm with the same mappings and
//! dirty bits; an unclean reopen reports every mapping dirty. Skips without the tools, fails
//! then under `UDM_REQUIRE_TOOLS=1`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use udm_pdata::cache::{CacheMetadata, PolicyId, CLEAN_SHUTDOWN};
use udm_pdata::io::{FileIo, MetaIo};
use udm_pdata::BLOCK_SIZE;
use udm_testkit::require_tool;

fn tools() -> bool {
    ["cache_check", "cache_dump", "cache_restore"]
        .iter()
        .all(|t| require_tool(t))
}

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

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    Some(&line[start..end])
}

/// What `cache_dump` can show of `m` for metadata `version`: thin-provisioning-tools 0.9's
/// `cache_dump` prints `dirty="false"` for every mapping of version-2 metadata (it does not
/// read the dirty bitset, even for metadata its own `cache_restore` wrote with dirty blocks),
/// so for v2 the dirty bits are checked through udm's reader instead.
fn as_dumped(m: &BTreeMap<u64, (u64, bool)>, version: u32) -> BTreeMap<u64, (u64, bool)> {
    m.iter()
        .map(|(&c, &(o, d))| (c, (o, d && version == 1)))
        .collect()
}

/// cache block → (origin block, dirty) as `cache_dump` lists them.
fn dumped(path: &Path) -> BTreeMap<u64, (u64, bool)> {
    run_ok(Command::new("cache_dump").arg(path))
        .lines()
        .filter(|l| l.trim_start().starts_with("<mapping "))
        .map(|l| {
            (
                attr(l, "cache_block").unwrap().parse().unwrap(),
                (
                    attr(l, "origin_block").unwrap().parse().unwrap(),
                    attr(l, "dirty").unwrap() == "true",
                ),
            )
        })
        .collect()
}

fn file(path: &Path, blocks: u64) -> Arc<dyn MetaIo> {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(blocks * BLOCK_SIZE as u64).unwrap();
    Arc::new(FileIo::open(path).unwrap())
}

fn smq() -> PolicyId {
    PolicyId {
        name: "smq".into(),
        version: [2, 0, 0],
        hint_size: 4,
    }
}

fn loaded(md: &mut CacheMetadata) -> BTreeMap<u64, (u64, bool)> {
    md.mappings(Some(&smq()))
        .unwrap()
        .into_iter()
        .map(|m| (m.cblock, (m.oblock, m.dirty)))
        .collect()
}

fn write_and_check(version: u32) {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    let io = file(&meta, 1024);
    let nr = 2500u64;
    let mut md = CacheMetadata::format(io.clone(), 128, version).unwrap();
    md.resize(nr).unwrap();
    md.resize_discards(128, 700).unwrap();
    let mut expect = BTreeMap::new();
    for cb in (0..nr).filter(|cb| cb % 5 != 2) {
        let ob = 90_000 - cb * 11;
        md.insert(cb, ob).unwrap();
        let dirty = cb % 3 == 0;
        md.set_dirty(cb, dirty).unwrap();
        expect.insert(cb, (ob, dirty));
    }
    md.commit(false).unwrap();
    // A second transaction: unmap some, clean some, dirty others, discards.
    for cb in (0..nr).step_by(17) {
        md.remove(cb).unwrap();
        expect.remove(&cb);
    }
    for cb in (1..nr).step_by(13) {
        if let Some(e) = expect.get_mut(&cb) {
            e.1 = !e.1;
            md.set_dirty(cb, e.1).unwrap();
        }
    }
    for b in (0..700).step_by(9) {
        md.set_discard(b, true).unwrap();
    }
    let hints: Vec<u32> = (0..nr as u32).map(|i| i * 7 + 1).collect();
    md.write_hints(&smq(), &hints).unwrap();
    md.commit(true).unwrap();
    drop(md);

    run_ok(Command::new("cache_check").arg(&meta));
    assert_eq!(
        dumped(&meta),
        as_dumped(&expect, version),
        "cache_dump lists what udm wrote"
    );
    let xml = run_ok(Command::new("cache_dump").arg(&meta));
    let sbline = xml.lines().next().unwrap();
    assert_eq!(attr(sbline, "block_size"), Some("128"), "{sbline}");
    assert_eq!(attr(sbline, "nr_cache_blocks"), Some("2500"), "{sbline}");
    assert_eq!(attr(sbline, "policy"), Some("smq"), "{sbline}");
    assert!(xml.contains(&format!(
        "<hint cache_block=\"1\" data=\"{}\"/>",
        b64(&8u32.to_le_bytes())
    )));

    // Reopen in udm: clean, so the dirty bits and hints are trusted.
    let mut md = CacheMetadata::open(io.clone(), 128).unwrap();
    assert!(md.clean_when_opened());
    assert_eq!(loaded(&mut md), expect);
    let with_hints = md.mappings(Some(&smq())).unwrap();
    assert!(with_hints
        .iter()
        .all(|m| m.hint == Some(m.cblock as u32 * 7 + 1)));
    let discards = md.discards().unwrap();
    assert_eq!(discards.len(), 700);
    assert!(discards.iter().enumerate().all(|(i, &d)| d == (i % 9 == 0)));
    // Opening cleared the clean flag on disk already.
    assert_eq!(
        CacheMetadata::read_superblock(&*io).unwrap().flags & CLEAN_SHUTDOWN,
        0
    );
    drop(md);
    run_ok(Command::new("cache_check").arg(&meta));

    // Unclean now: every mapping loads dirty, hints are not used.
    let mut md = CacheMetadata::open(io, 128).unwrap();
    assert!(!md.clean_when_opened());
    let all_dirty: BTreeMap<_, _> = expect.iter().map(|(&c, &(o, _))| (c, (o, true))).collect();
    assert_eq!(loaded(&mut md), all_dirty);
    assert!(md
        .mappings(Some(&smq()))
        .unwrap()
        .iter()
        .all(|m| m.hint.is_none()));
}

fn b64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, &b)| a | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[test]
fn udm_cache_metadata_v1_passes_cache_check_and_dumps() {
    if tools() {
        write_and_check(1);
    }
}

#[test]
fn udm_cache_metadata_v2_passes_cache_check_and_dumps() {
    if tools() {
        write_and_check(2);
    }
}

#[test]
fn cache_restore_xml_opens_in_udm_with_dirty_bits() {
    if !tools() {
        return;
    }
    for version in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let (xml, meta) = (dir.path().join("c.xml"), dir.path().join("meta"));
        let nr = 1200u64;
        let mut expect = BTreeMap::new();
        let mut text = format!(
            "<superblock uuid=\"\" block_size=\"256\" nr_cache_blocks=\"{nr}\" policy=\"smq\" hint_width=\"4\">\n  <mappings>\n"
        );
        for cb in (0..nr).filter(|cb| cb % 4 != 3) {
            let ob = 7 + cb * 5;
            let dirty = cb % 7 < 3;
            text.push_str(&format!(
                "    <mapping cache_block=\"{cb}\" origin_block=\"{ob}\" dirty=\"{dirty}\"/>\n"
            ));
            expect.insert(cb, (ob, dirty));
        }
        text.push_str("  </mappings>\n</superblock>\n");
        std::fs::write(&xml, text).unwrap();
        let io = file(&meta, 1024);
        run_ok(
            Command::new("cache_restore")
                .arg("-i")
                .arg(&xml)
                .arg("-o")
                .arg(&meta)
                .args(["--metadata-version", &version.to_string()]),
        );
        let mut md = CacheMetadata::open(io, 256).unwrap();
        assert_eq!(md.version(), version);
        assert_eq!(md.cache_blocks(), nr);
        assert!(
            md.clean_when_opened(),
            "cache_restore marks the metadata clean"
        );
        assert_eq!(loaded(&mut md), expect, "metadata v{version}");
        // udm changes it and the tools agree.
        md.remove(0).unwrap();
        expect.remove(&0);
        md.insert(3, 424242).unwrap();
        md.set_dirty(3, true).unwrap();
        expect.insert(3, (424242, true));
        md.commit(true).unwrap();
        drop(md);
        run_ok(Command::new("cache_check").arg(&meta));
        assert_eq!(dumped(&meta), as_dumped(&expect, version));
        let io: Arc<dyn MetaIo> = Arc::new(FileIo::open(&meta).unwrap());
        let mut md = CacheMetadata::open(io, 256).unwrap();
        assert_eq!(
            loaded(&mut md),
            expect,
            "udm reads back its own v{version} dirty bits"
        );
    }
}

#[test]
fn data_block_size_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let io = file(&dir.path().join("meta"), 64);
    drop(CacheMetadata::format(io.clone(), 128, 2).unwrap());
    let e = CacheMetadata::open(io.clone(), 256).err().expect("refused");
    assert!(
        e.to_string().contains("changing the data block size"),
        "{e}"
    );
    assert!(CacheMetadata::open(io, 128).is_ok());
}
