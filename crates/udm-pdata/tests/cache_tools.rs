//! dm-array and bitset against the real cache tools, both ways: `cache_restore` builds
//! cache metadata (mapping array, hint array, dirty and discard bitsets) that udm reads
//! back value for value with consistent reference counts; and arrays udm writes under a
//! cache superblock pass `cache_check` and `cache_dump` lists exactly udm's mappings.
//! Skips when the tools are missing, fails then under `UDM_REQUIRE_TOOLS=1`.

mod common;

use common::attr;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use udm_pdata::array::{self, bitset};
use udm_pdata::btree::NoRefs;
use udm_pdata::check::Leaves;
use udm_pdata::checksum::{seal, verify, BlockKind};
use udm_pdata::io::{FileIo, MetaIo};
use udm_pdata::tm::{TransactionManager, SUPERBLOCK};
use udm_pdata::BLOCK_SIZE;
use udm_testkit::{require_tool, run};

/// The cache superblock magic (an octal literal in the kernel).
const CACHE_MAGIC: u64 = 0o6142003;
const VALID: u64 = 1;

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

struct CacheRoots {
    sm_root: Vec<u8>,
    mapping: u64,
    hint: u64,
    discard: u64,
    dirty: u64,
    cache_blocks: u32,
    hint_size: u32,
}

fn read_cache_sb(io: &dyn MetaIo) -> CacheRoots {
    let mut b = [0u8; BLOCK_SIZE];
    io.read_block(SUPERBLOCK, &mut b).unwrap();
    verify(&b, BlockKind::CacheSuperblock, SUPERBLOCK).unwrap();
    assert_eq!(u64_at(&b, 32), CACHE_MAGIC);
    assert_eq!(u32_at(&b, 40), 2, "metadata version");
    CacheRoots {
        sm_root: b[64..192].to_vec(),
        mapping: u64_at(&b, 192),
        hint: u64_at(&b, 200),
        discard: u64_at(&b, 208),
        dirty: u64_at(&b, 284),
        cache_blocks: u32_at(&b, 240),
        hint_size: u32_at(&b, 60),
    }
}

fn tools() -> bool {
    ["cache_check", "cache_dump", "cache_restore"]
        .iter()
        .all(|t| require_tool(t))
}

fn dumped_mappings(path: &Path) -> BTreeMap<u64, u64> {
    run(Command::new("cache_dump").arg(path))
        .lines()
        .filter(|l| l.trim_start().starts_with("<mapping "))
        .map(|l| {
            (
                attr(l, "cache_block").unwrap(),
                attr(l, "origin_block").unwrap(),
            )
        })
        .collect()
}

/// A sparse metadata file of 2048 blocks in `dir`.
fn meta_file(dir: &Path) -> std::path::PathBuf {
    udm_testkit::image(dir, "meta", 2048 * BLOCK_SIZE as u64)
}

#[test]
fn cache_restore_arrays_read_back_in_udm() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (xml, meta) = (dir.path().join("c.xml"), meta_file(dir.path()));
    let nr = 5000u64;
    let mut expect = BTreeMap::new();
    let mut text = format!(
        "<superblock uuid=\"\" block_size=\"128\" nr_cache_blocks=\"{nr}\" policy=\"smq\" hint_width=\"4\">\n  <mappings>\n"
    );
    for cb in (0..nr).filter(|cb| cb % 3 != 1) {
        let ob = 1_000_000 - cb * 7;
        text.push_str(&format!(
            "    <mapping cache_block=\"{cb}\" origin_block=\"{ob}\" dirty=\"false\"/>\n"
        ));
        expect.insert(cb, ob);
    }
    text.push_str("  </mappings>\n  <hints>\n    <hint cache_block=\"3\" data=\"AQIDBA==\"/>\n  </hints>\n</superblock>\n");
    std::fs::write(&xml, text).unwrap();
    run(Command::new("cache_restore")
        .arg("-i")
        .arg(&xml)
        .arg("-o")
        .arg(&meta)
        .args(["--metadata-version", "2"]));
    run(Command::new("cache_check").arg(&meta));

    let io: Arc<dyn MetaIo> = Arc::new(FileIo::open(&meta).unwrap());
    let roots = read_cache_sb(&*io);
    assert_eq!(roots.cache_blocks as u64, nr);
    // cache_restore 0.9 leaves policy_hint_size 0; the hint array's blocks say 4.
    assert!(roots.hint_size == 0 || roots.hint_size == 4);
    let mut tm = TransactionManager::open(io.clone(), &roots.sm_root).unwrap();
    let mut got = BTreeMap::new();
    let mut len = 0;
    array::walk(&mut tm, roots.mapping, 8, &mut |cb, v| {
        let m = u64_at(v, 0);
        if m & VALID != 0 {
            got.insert(cb, m >> 16);
        }
        len += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(len, nr);
    assert_eq!(got, expect);
    assert_eq!(
        array::get(&mut tm, roots.hint, 4, 3).unwrap(),
        Some(vec![1, 2, 3, 4])
    );
    assert_eq!(
        bitset::collect(&mut tm, roots.dirty, nr).unwrap().len(),
        nr as usize
    );

    check_counts(&io, &roots);
}

/// Reference counts: superblock, metadata space map, every array's btree and blocks.
fn check_counts(io: &Arc<dyn MetaIo>, roots: &CacheRoots) {
    let trees = [roots.mapping, roots.hint, roots.discard, roots.dirty];
    common::check_counts(io.clone(), &roots.sm_root, &trees, &Leaves::ArrayBlocks);
}

#[test]
fn udm_arrays_pass_cache_check() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let meta = meta_file(dir.path());
    let io: Arc<dyn MetaIo> = Arc::new(FileIo::open(&meta).unwrap());
    let mut tm = TransactionManager::format(io.clone()).unwrap();
    let nr = 3000u64;
    let mut mapping = array::empty(&mut tm).unwrap();
    mapping = array::resize(&mut tm, mapping, 8, 0, nr, &0u64.to_le_bytes(), &mut NoRefs).unwrap();
    let mut hint = array::empty(&mut tm).unwrap();
    hint = array::resize(&mut tm, hint, 4, 0, nr, &[0; 4], &mut NoRefs).unwrap();
    let mut dirty = bitset::empty(&mut tm).unwrap();
    dirty = bitset::resize(&mut tm, dirty, 0, nr, false).unwrap();
    let discard = bitset::empty(&mut tm).unwrap();
    let mut expect = BTreeMap::new();
    for cb in (0..nr).step_by(7) {
        let ob = 50_000 + cb * 3;
        mapping = array::set(
            &mut tm,
            mapping,
            8,
            cb,
            &((ob << 16) | VALID).to_le_bytes(),
            &mut NoRefs,
        )
        .unwrap();
        hint = array::set(
            &mut tm,
            hint,
            4,
            cb,
            &(cb as u32).to_le_bytes(),
            &mut NoRefs,
        )
        .unwrap();
        expect.insert(cb, ob);
    }
    let sm = tm.pre_commit().unwrap();
    let mut b = [0u8; BLOCK_SIZE];
    b[32..40].copy_from_slice(&CACHE_MAGIC.to_le_bytes());
    b[40..44].copy_from_slice(&2u32.to_le_bytes());
    b[44..47].copy_from_slice(b"smq");
    b[60..64].copy_from_slice(&4u32.to_le_bytes());
    b[64..192].copy_from_slice(&sm.pack());
    b[192..200].copy_from_slice(&mapping.to_le_bytes());
    b[200..208].copy_from_slice(&hint.to_le_bytes());
    b[208..216].copy_from_slice(&discard.to_le_bytes());
    b[232..236].copy_from_slice(&128u32.to_le_bytes());
    b[236..240].copy_from_slice(&8u32.to_le_bytes());
    b[240..244].copy_from_slice(&(nr as u32).to_le_bytes());
    b[272..276].copy_from_slice(&2u32.to_le_bytes());
    b[284..292].copy_from_slice(&dirty.to_le_bytes());
    seal(&mut b, BlockKind::CacheSuperblock);
    tm.commit(b).unwrap();
    run(Command::new("cache_check").arg(&meta));
    assert_eq!(dumped_mappings(&meta), expect);
    let roots = read_cache_sb(&*io);
    check_counts(&io, &roots);
}
