//! The btree node format: a 32-byte header (csum, flags, blocknr, nr_entries,
//! max_entries, value_size, padding), then `max_entries` little-endian u64 keys, then
//! `max_entries` values of `value_size` bytes.

use crate::checksum::{seal, BlockKind};
use crate::error::{PdataError, Result};
use crate::{le32, le64, put32, put64, BlockBuf, BLOCK_SIZE};

/// Bytes of the node header.
pub const NODE_HEADER_SIZE: usize = 32;
/// `flags` bit of an internal node.
pub const INTERNAL_NODE: u32 = 1;
/// `flags` bit of a leaf node.
pub const LEAF_NODE: u32 = 2;

/// Entries a node holds for values of `value_size` bytes (a multiple of 3).
pub const fn max_entries(value_size: u32) -> u32 {
    let total = (BLOCK_SIZE - NODE_HEADER_SIZE) as u32 / (8 + value_size);
    total / 3 * 3
}

/// A decoded btree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's own location.
    pub blocknr: u64,
    /// Leaf (values are the tree's values) or internal (values are child blocks).
    pub leaf: bool,
    /// Capacity.
    pub max_entries: u32,
    /// Bytes per value.
    pub value_size: u32,
    /// Keys, strictly increasing.
    pub keys: Vec<u64>,
    /// `keys.len() * value_size` bytes of values.
    pub values: Vec<u8>,
}

impl Node {
    /// An empty node at `blocknr`.
    pub fn new(blocknr: u64, leaf: bool, value_size: u32) -> Node {
        Node {
            blocknr,
            leaf,
            max_entries: max_entries(value_size),
            value_size,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Decode a node read from `block` whose checksum was verified. `value_size`, when
    /// given, is what a leaf of this tree must hold.
    pub fn decode(buf: &BlockBuf, block: u64, value_size: Option<u32>) -> Result<Node> {
        let view = NodeView::new(buf, block, value_size)?;
        let keys: Vec<u64> = (0..view.len()).map(|i| view.key(i)).collect();
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err(PdataError::corrupt(
                BlockKind::Node,
                block,
                "keys out of order",
            ));
        }
        let vs = view.value_size as usize;
        let voff = view.values_offset();
        Ok(Node {
            blocknr: block,
            leaf: view.leaf,
            max_entries: view.max_entries,
            value_size: view.value_size,
            keys,
            values: buf[voff..voff + view.len() * vs].to_vec(),
        })
    }
}

/// A validated, zero-copy view of a node block (header checked; keys not checked for
/// order, which lookups do not need).
pub struct NodeView<'a> {
    buf: &'a BlockBuf,
    /// Leaf or internal.
    pub leaf: bool,
    nr: usize,
    /// Capacity.
    pub max_entries: u32,
    /// Bytes per value.
    pub value_size: u32,
}

impl<'a> NodeView<'a> {
    /// Check the header of a node read from `block` (see [`Node::decode`]).
    pub fn new(buf: &'a BlockBuf, block: u64, value_size: Option<u32>) -> Result<NodeView<'a>> {
        let bad = |r: String| PdataError::corrupt(BlockKind::Node, block, r);
        let flags = le32(buf, 4);
        let blocknr = le64(buf, 8);
        let nr = le32(buf, 16);
        let max = le32(buf, 20);
        let vs = le32(buf, 24);
        let leaf = match flags {
            INTERNAL_NODE => false,
            LEAF_NODE => true,
            f => return Err(bad(format!("flags {f:#x} are neither internal nor leaf"))),
        };
        if blocknr != block {
            return Err(PdataError::BlockNr {
                kind: BlockKind::Node,
                block,
                found: blocknr,
            });
        }
        if !leaf && vs != 8 {
            return Err(bad(format!("internal node with value size {vs}")));
        }
        if let (true, Some(want)) = (leaf, value_size) {
            if vs != want {
                return Err(bad(format!("value size {vs}, expected {want}")));
            }
        }
        if vs == 0 || (8 + vs as u64) * max as u64 + NODE_HEADER_SIZE as u64 > BLOCK_SIZE as u64 {
            return Err(bad(format!(
                "max_entries {max} with value size {vs} overflow the block"
            )));
        }
        if nr > max {
            return Err(bad(format!("nr_entries {nr} > max_entries {max}")));
        }
        if !leaf && nr == 0 {
            return Err(bad("internal node without entries".into()));
        }
        Ok(NodeView {
            buf,
            leaf,
            nr: nr as usize,
            max_entries: max,
            value_size: vs,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.nr
    }

    /// Whether the node has no entries.
    pub fn is_empty(&self) -> bool {
        self.nr == 0
    }

    /// Key `i`.
    pub fn key(&self, i: usize) -> u64 {
        le64(self.buf, NODE_HEADER_SIZE + 8 * i)
    }

    fn values_offset(&self) -> usize {
        NODE_HEADER_SIZE + 8 * self.max_entries as usize
    }

    /// Value bytes of entry `i`.
    pub fn value(&self, i: usize) -> &'a [u8] {
        let vs = self.value_size as usize;
        let off = self.values_offset() + i * vs;
        &self.buf[off..off + vs]
    }

    /// Position of `key` (Ok) or where it would go (Err), by binary search.
    pub fn search(&self, key: u64) -> std::result::Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.nr);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }
}

impl Node {
    /// Encode and seal.
    pub fn encode(&self) -> BlockBuf {
        let mut buf = self.encode_unsealed();
        seal(&mut buf, BlockKind::Node);
        buf
    }

    /// Encode without the checksum (the block manager seals dirty blocks at write-back).
    pub fn encode_unsealed(&self) -> BlockBuf {
        let mut buf = [0u8; BLOCK_SIZE];
        put32(
            &mut buf,
            4,
            if self.leaf { LEAF_NODE } else { INTERNAL_NODE },
        );
        put64(&mut buf, 8, self.blocknr);
        put32(&mut buf, 16, self.keys.len() as u32);
        put32(&mut buf, 20, self.max_entries);
        put32(&mut buf, 24, self.value_size);
        for (i, k) in self.keys.iter().enumerate() {
            put64(&mut buf, NODE_HEADER_SIZE + 8 * i, *k);
        }
        let voff = NODE_HEADER_SIZE + 8 * self.max_entries as usize;
        buf[voff..voff + self.values.len()].copy_from_slice(&self.values);
        buf
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the node has no entries.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether no entry can be added.
    pub fn is_full(&self) -> bool {
        self.keys.len() >= self.max_entries as usize
    }

    /// Fewest entries a non-root node may hold.
    pub fn min_entries(&self) -> usize {
        self.max_entries as usize / 3
    }

    /// Value bytes of entry `i`.
    pub fn value(&self, i: usize) -> &[u8] {
        let vs = self.value_size as usize;
        &self.values[i * vs..(i + 1) * vs]
    }

    /// Child block of entry `i` of an internal node.
    pub fn child(&self, i: usize) -> u64 {
        le64(self.value(i), 0)
    }

    /// Replace the value of entry `i`.
    pub fn set_value(&mut self, i: usize, v: &[u8]) {
        let vs = self.value_size as usize;
        self.values[i * vs..(i + 1) * vs].copy_from_slice(v);
    }

    /// Insert an entry at position `i`.
    pub fn insert_at(&mut self, i: usize, key: u64, v: &[u8]) {
        let vs = self.value_size as usize;
        self.keys.insert(i, key);
        self.values.splice(i * vs..i * vs, v.iter().copied());
    }

    /// Remove entry `i`, returning its value.
    pub fn remove_at(&mut self, i: usize) -> Vec<u8> {
        let vs = self.value_size as usize;
        self.keys.remove(i);
        self.values.drain(i * vs..(i + 1) * vs).collect()
    }

    /// Move entries `at..` into a new node (same kind) at `blocknr`.
    pub fn split_off(&mut self, at: usize, blocknr: u64) -> Node {
        let vs = self.value_size as usize;
        Node {
            blocknr,
            leaf: self.leaf,
            max_entries: self.max_entries,
            value_size: self.value_size,
            keys: self.keys.split_off(at),
            values: self.values.split_off(at * vs),
        }
    }

    /// Position of `key` (Ok) or where it would go (Err).
    pub fn search(&self, key: u64) -> std::result::Result<usize, usize> {
        self.keys.binary_search(&key)
    }

    /// Index of the child of an internal node whose range holds `key` (0 when `key` is
    /// below every key).
    pub fn child_index(&self, key: u64) -> usize {
        match self.keys.binary_search(&key) {
            Ok(i) => i,
            Err(0) => 0,
            Err(i) => i - 1,
        }
    }
}
