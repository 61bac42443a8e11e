//! Corrupt metadata is reported, never used: a flipped byte in the superblock, the
//! metadata space map index, a bitmap or a btree node gives a checksum error (errno
//! EILSEQ) naming the block kind, and a block moved to the wrong place is caught by its
//! self-reported location.

mod common;

use std::sync::Arc;
use udm_pdata::btree::Node;
use udm_pdata::check::{blocks_of_kind, check_thin};
use udm_pdata::checksum::BlockKind;
use udm_pdata::io::MemIo;
use udm_pdata::space_map::SmRoot;
use udm_pdata::thin::ThinMetadata;
use udm_pdata::PdataError;

fn pool() -> MemIo {
    let io = MemIo::new(2048);
    let mut md = ThinMetadata::format(Arc::new(io.clone()), 128, 50_000).unwrap();
    md.create_thin(1).unwrap();
    common::fill(&mut md, 1, 0..3000);
    md.commit().unwrap();
    io
}

/// The root node of device 1's mapping tree.
fn dev1_root(io: &MemIo) -> Node {
    let mut md = ThinMetadata::open(Arc::new(io.clone())).unwrap();
    let top = md.superblock().data_mapping_root;
    let sub = udm_pdata::btree::lookup(md.tm(), top, 1, 8)
        .unwrap()
        .unwrap();
    let sub = u64::from_le_bytes(sub[..8].try_into().unwrap());
    udm_pdata::btree::read_node(md.tm(), sub, 8).unwrap()
}

fn assert_checksum(r: Result<impl std::fmt::Debug, PdataError>, want: BlockKind) {
    match r {
        Err(e @ PdataError::Checksum { kind, .. }) => {
            assert_eq!(kind, want, "{e}");
            assert_eq!(e.errno(), libc::EILSEQ);
            assert!(e.to_string().contains("checksum"), "{e}");
        }
        other => panic!("expected a {want} checksum error, got {other:?}"),
    }
}

/// Open the pool and read every mapping.
fn open_and_read(io: &MemIo) -> Result<usize, PdataError> {
    let mut md = ThinMetadata::open(Arc::new(io.clone()))?;
    Ok(md.mappings(1)?.len())
}

#[test]
fn intact_pool_reads() {
    assert_eq!(open_and_read(&pool()).unwrap(), 3000);
}

#[test]
fn corrupt_superblock_is_detected() {
    let io = pool();
    io.corrupt(0, 100, 0x01);
    assert_checksum(open_and_read(&io).map(|_| ()), BlockKind::ThinSuperblock);
}

#[test]
fn corrupt_metadata_index_is_detected() {
    let io = pool();
    let sb = ThinMetadata::open(Arc::new(io.clone()))
        .unwrap()
        .superblock()
        .clone();
    let root = SmRoot::unpack(&sb.metadata_sm_root).unwrap();
    io.corrupt(root.bitmap_root, 40, 0x80);
    assert_checksum(open_and_read(&io).map(|_| ()), BlockKind::Index);
}

#[test]
fn corrupt_bitmap_is_detected() {
    let io = pool();
    let bitmaps = blocks_of_kind(&io, BlockKind::Bitmap);
    assert!(!bitmaps.is_empty());
    // Every live bitmap (metadata and data space maps) is read at open.
    let sb = ThinMetadata::open(Arc::new(io.clone()))
        .unwrap()
        .superblock()
        .clone();
    let data_root = SmRoot::unpack(&sb.data_sm_root).unwrap();
    let mut md = ThinMetadata::open(Arc::new(io.clone())).unwrap();
    let idx = udm_pdata::btree::collect(md.tm(), data_root.bitmap_root, 16).unwrap();
    let live = u64::from_le_bytes(idx[0].1[..8].try_into().unwrap());
    io.corrupt(live, 2000, 0x10);
    assert_checksum(open_and_read(&io).map(|_| ()), BlockKind::Bitmap);
}

#[test]
fn corrupt_mapping_leaf_is_detected_on_read() {
    let io = pool();
    let root = dev1_root(&io);
    assert!(!root.leaf, "3000 mappings need an internal node");
    let leaf = root.child(1);
    io.corrupt(leaf, 3000, 0x04);
    assert_checksum(open_and_read(&io).map(|_| ()), BlockKind::Node);
    // Lookups outside the bad leaf still work; the checker reports the damage.
    let mut md = ThinMetadata::open(Arc::new(io.clone())).unwrap();
    assert!(md.lookup(1, 0).unwrap().is_some());
    assert!(check_thin(Arc::new(io)).is_err());
}

#[test]
fn misplaced_block_is_detected() {
    let io = pool();
    let root = dev1_root(&io);
    let (a, b) = (root.child(0), root.child(1));
    // Copy leaf `a` over leaf `b`: checksums are fine, the location is not.
    let copy = io.block(a);
    for (i, (&x, &y)) in copy.iter().zip(io.block(b).iter()).enumerate() {
        if x != y {
            io.corrupt(b, i, x ^ y);
        }
    }
    match open_and_read(&io) {
        Err(PdataError::BlockNr { block, found, .. }) => assert_eq!((block, found), (b, a)),
        other => panic!("expected a location error, got {other:?}"),
    }
}
