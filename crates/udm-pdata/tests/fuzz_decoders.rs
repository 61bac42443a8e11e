//! Fuzz-style tests: random and corrupted blocks fed to the node, bitmap, index and
//! superblock decoders, and whole pools with random damage to re-checksummed blocks
//! opened, checked and written. Errors are fine; panics fail the test.

mod common;

use proptest::prelude::*;
use std::sync::Arc;
use udm_pdata::btree::Node;
use udm_pdata::check::check_thin;
use udm_pdata::checksum::{identify, seal, verify, BlockKind};
use udm_pdata::io::MemIo;
use udm_pdata::space_map::{
    decode_bitmap, decode_metadata_index, encode_bitmap, encode_metadata_index, IndexEntry,
    ENTRIES_PER_BITMAP,
};
use udm_pdata::thin::{ThinMetadata, ThinSuperblock};
use udm_pdata::{BlockBuf, BLOCK_SIZE};

fn block_from(bytes: &[u8]) -> BlockBuf {
    let mut b = [0u8; BLOCK_SIZE];
    for (i, x) in bytes.iter().enumerate() {
        b[i % BLOCK_SIZE] ^= *x;
    }
    b
}

/// A node header with plausible-to-absurd fields over random contents.
fn node_block() -> impl Strategy<Value = BlockBuf> {
    (
        prop::collection::vec(any::<u8>(), 0..512),
        0u32..5,
        0u32..400,
        prop_oneof![0u32..400, any::<u32>()],
        prop_oneof![Just(8u32), Just(4), Just(16), Just(24), any::<u32>()],
        any::<u64>(),
    )
        .prop_map(|(noise, flags, nr, max, vs, keyseed)| {
            let mut b = block_from(&noise);
            b[4..8].copy_from_slice(&flags.to_le_bytes());
            b[8..16].copy_from_slice(&9u64.to_le_bytes());
            b[16..20].copy_from_slice(&nr.to_le_bytes());
            b[20..24].copy_from_slice(&max.to_le_bytes());
            b[24..28].copy_from_slice(&vs.to_le_bytes());
            if keyseed & 1 == 0 {
                for i in 0..(nr.min(500) as usize) {
                    let off = 32 + 8 * i;
                    if off + 8 <= BLOCK_SIZE {
                        b[off..off + 8]
                            .copy_from_slice(&((i as u64) * (keyseed >> 60 | 1)).to_le_bytes());
                    }
                }
            }
            seal(&mut b, BlockKind::Node);
            b
        })
}

proptest! {
    #![proptest_config(common::config(256))]

    #[test]
    fn node_decoder_never_panics(b in node_block(), want in prop_oneof![Just(None), Just(Some(8u32)), Just(Some(24))]) {
        verify(&b, BlockKind::Node, 9).unwrap();
        if let Ok(n) = Node::decode(&b, 9, want) {
            // Whatever decodes re-encodes to a block that decodes the same.
            prop_assert!(n.len() <= n.max_entries as usize);
            let again = Node::decode(&n.encode(), 9, want).unwrap();
            prop_assert_eq!(again, n);
        }
    }

    #[test]
    fn random_blocks_fail_validation(bytes in prop::collection::vec(any::<u8>(), 1..4096), at in 0u64..100) {
        let b = block_from(&bytes);
        for kind in [BlockKind::Node, BlockKind::Bitmap, BlockKind::Index, BlockKind::ThinSuperblock] {
            prop_assert!(verify(&b, kind, at).is_err() || identify(&b) == Some(kind));
        }
        prop_assert!(ThinSuperblock::decode(&b, 0).is_err());
    }

    #[test]
    fn bitmap_round_trips(counts in prop::collection::vec(0u8..4, 0..ENTRIES_PER_BITMAP as usize), at in 1u64..1000) {
        let b = encode_bitmap(at, &counts);
        verify(&b, BlockKind::Bitmap, at).unwrap();
        let back = decode_bitmap(&b);
        prop_assert_eq!(back.len(), ENTRIES_PER_BITMAP as usize);
        prop_assert_eq!(&back[..counts.len()], &counts[..]);
        prop_assert!(back[counts.len()..].iter().all(|&c| c == 0));
    }

    #[test]
    fn index_decoder_bounds(noise in prop::collection::vec(any::<u8>(), 0..4096), n in 0usize..300) {
        let mut b = block_from(&noise);
        seal(&mut b, BlockKind::Index);
        match decode_metadata_index(&b, 3, n) {
            Ok(v) => prop_assert!(n <= 255 && v.len() == n),
            Err(e) => prop_assert!(n > 255, "{}", e),
        }
        let entries: Vec<IndexEntry> = (0..n.min(255) as u64)
            .map(|i| IndexEntry { blocknr: i + 10, nr_free: i as u32, none_free_before: 7 })
            .collect();
        let enc = encode_metadata_index(3, &entries).unwrap();
        prop_assert_eq!(decode_metadata_index(&enc, 3, entries.len()).unwrap(), entries);
    }

    #[test]
    fn superblock_decoder_never_panics(noise in prop::collection::vec(any::<u8>(), 0..4096), magic in any::<bool>(), version in 0u32..4) {
        let mut b = block_from(&noise);
        b[8..16].fill(0);
        if magic {
            b[32..40].copy_from_slice(&27022010u64.to_le_bytes());
        }
        b[40..44].copy_from_slice(&version.to_le_bytes());
        seal(&mut b, BlockKind::ThinSuperblock);
        let r = ThinSuperblock::decode(&b, 0);
        prop_assert_eq!(r.is_ok(), magic && (1..=2).contains(&version));
        if let Ok(sb) = r {
            prop_assert_eq!(ThinSuperblock::decode(&sb.encode(), 0).unwrap(), sb);
        }
    }
}

fn damaged_pool_base() -> &'static [u8] {
    static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BASE.get_or_init(build_pool)
}

fn build_pool() -> Vec<u8> {
    let io = MemIo::new(1024);
    let mut md = ThinMetadata::format(Arc::new(io.clone()), 128, 20_000).unwrap();
    md.create_thin(1).unwrap();
    for v in 0..1500 {
        let b = md.alloc_data_block().unwrap();
        md.insert(1, v * 3, b).unwrap();
    }
    md.create_snap(2, 1).unwrap();
    for v in 0..300 {
        let b = md.alloc_data_block().unwrap();
        md.insert(2, v * 5, b).unwrap();
    }
    md.commit().unwrap();
    io.to_bytes()
}

proptest! {
    #![proptest_config(common::config(48))]

    /// Damage live blocks but keep their checksums valid, so the structural checks are
    /// what must catch it; then open, check, read and write.
    #[test]
    fn damaged_pool_never_panics(hits in prop::collection::vec((0usize..40, 0usize..BLOCK_SIZE, 1u8..=255), 1..6)) {
        let io = MemIo::from_bytes(damaged_pool_base());
        common::damage_resealed(&io, &hits);
        let _ = check_thin(Arc::new(io.clone()));
        if let Ok(mut md) = ThinMetadata::open(Arc::new(io.clone())) {
            let _ = md.mappings(1);
            let _ = md.mappings(2);
            let _ = md.remove(1, 3);
            if let Ok(b) = md.alloc_data_block() {
                let _ = md.insert(2, 7, b);
            }
            let _ = md.delete(1);
            let _ = md.commit();
        }
    }
}
