//! Copy-on-write btrees in the kernel's node format: lookup, insert, remove (keeping
//! every non-root node at least a third full), range walks, whole-tree deletion, and
//! value reference counting through [`RefCounter`] hooks.
//!
//! Every modification shadows the path it touches through the transaction manager;
//! shadowing a shared node adds a reference to everything the copy points to.

pub mod nested;
pub mod node;

pub use nested::{insert_nested, lookup_nested, remove_nested, SubtreeRefs};
pub use node::{max_entries, Node};

use crate::checksum::BlockKind;
use crate::error::{PdataError, Result};
use crate::le64;
use crate::tm::{BlockReader, TransactionManager};
use std::collections::HashMap;

/// Deepest tree accepted; deeper means a corrupt (probably cyclic) tree.
pub const MAX_DEPTH: usize = 32;

fn too_deep(b: u64) -> PdataError {
    PdataError::corrupt(
        BlockKind::Node,
        b,
        format!("btree deeper than {MAX_DEPTH} levels (cycle?)"),
    )
}

/// Reference counting of the values a tree holds (block numbers, subtree roots …).
pub trait RefCounter {
    /// A new reference to `value` was made (a node holding it was copied).
    fn inc(&mut self, tm: &mut TransactionManager, value: &[u8]) -> Result<()>;
    /// A reference to `value` went away (removed, overwritten, or its node freed).
    fn dec(&mut self, tm: &mut TransactionManager, value: &[u8]) -> Result<()>;
}

/// Values that refer to nothing.
pub struct NoRefs;

impl RefCounter for NoRefs {
    fn inc(&mut self, _: &mut TransactionManager, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn dec(&mut self, _: &mut TransactionManager, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// Read and decode node `b` of a tree whose leaves hold `value_size`-byte values.
pub fn read_node<R: BlockReader + ?Sized>(r: &mut R, b: u64, value_size: u32) -> Result<Node> {
    let buf = r.read_block(b, BlockKind::Node)?;
    Node::decode(&buf, b, Some(value_size))
}

/// Create an empty tree (one empty leaf); returns its root.
pub fn empty(tm: &mut TransactionManager, value_size: u32) -> Result<u64> {
    let b = tm.alloc()?;
    tm.write_unsealed(
        b,
        Node::new(b, true, value_size).encode_unsealed(),
        BlockKind::Node,
    )?;
    Ok(b)
}

fn shadow_node<H: RefCounter + ?Sized>(
    tm: &mut TransactionManager,
    b: u64,
    value_size: u32,
    hooks: &mut H,
) -> Result<Node> {
    let (nb, data, shared) = tm.shadow(b, BlockKind::Node)?;
    let mut node = Node::decode(&data, b, Some(value_size))?;
    node.blocknr = nb;
    if shared {
        for i in 0..node.len() {
            if node.leaf {
                hooks.inc(tm, node.value(i))?;
            } else {
                tm.inc(node.child(i))?;
            }
        }
    }
    Ok(node)
}

/// Look `key` up.
pub fn lookup<R: BlockReader + ?Sized>(
    r: &mut R,
    root: u64,
    key: u64,
    value_size: u32,
) -> Result<Option<Vec<u8>>> {
    let mut b = root;
    for _ in 0..MAX_DEPTH {
        let buf = r.read_block(b, BlockKind::Node)?;
        let node = node::NodeView::new(&buf, b, Some(value_size))?;
        if node.leaf {
            return Ok(node.search(key).ok().map(|i| node.value(i).to_vec()));
        }
        let i = match node.search(key) {
            Ok(i) => i,
            Err(0) => return Ok(None),
            Err(i) => i - 1,
        };
        b = le64(node.value(i), 0);
    }
    Err(too_deep(b))
}

/// Insert or overwrite `key`; the caller's reference to `value` passes to the tree and an
/// overwritten different value is dec'ed. Returns the new root.
pub fn insert<H: RefCounter + ?Sized>(
    tm: &mut TransactionManager,
    root: u64,
    key: u64,
    value: &[u8],
    hooks: &mut H,
) -> Result<u64> {
    Ok(insert_full(tm, root, key, value, hooks, true)?.0)
}

/// [`insert`] returning the overwritten value too; `dec_old` says whether an overwritten
/// value loses its reference (false when the caller already moved it, as nested trees do).
pub fn insert_full<H: RefCounter + ?Sized>(
    tm: &mut TransactionManager,
    root: u64,
    key: u64,
    value: &[u8],
    hooks: &mut H,
    dec_old: bool,
) -> Result<(u64, Option<Vec<u8>>)> {
    let vs = value.len() as u32;
    let mut node = shadow_node(tm, root, vs, hooks)?;
    if node.is_full() {
        node = split_beneath(tm, node)?;
    }
    let new_root = node.blocknr;
    for _ in 0..MAX_DEPTH {
        if node.leaf {
            let old = match node.search(key) {
                Ok(i) => {
                    let old = node.value(i).to_vec();
                    node.set_value(i, value);
                    Some(old)
                }
                Err(i) => {
                    node.insert_at(i, key, value);
                    None
                }
            };
            tm.write_unsealed(node.blocknr, node.encode_unsealed(), BlockKind::Node)?;
            if let Some(o) = &old {
                if dec_old && o.as_slice() != value {
                    hooks.dec(tm, o)?;
                }
            }
            return Ok((new_root, old));
        }
        if node.is_empty() {
            return Err(PdataError::corrupt(
                BlockKind::Node,
                node.blocknr,
                "empty internal node",
            ));
        }
        let mut i = node.child_index(key);
        if key < node.keys[i] {
            node.keys[i] = key;
        }
        let mut child = shadow_node(tm, node.child(i), vs, hooks)?;
        node.set_value(i, &child.blocknr.to_le_bytes());
        if child.is_full() {
            let right_b = tm.alloc()?;
            let right = child.split_off(child.len() / 2, right_b);
            node.insert_at(i + 1, right.keys[0], &right_b.to_le_bytes());
            if key >= right.keys[0] {
                tm.write_unsealed(child.blocknr, child.encode_unsealed(), BlockKind::Node)?;
                child = right;
                i += 1;
            } else {
                tm.write_unsealed(right_b, right.encode_unsealed(), BlockKind::Node)?;
            }
        }
        debug_assert_eq!(node.child(i), child.blocknr);
        tm.write_unsealed(node.blocknr, node.encode_unsealed(), BlockKind::Node)?;
        node = child;
    }
    Err(too_deep(node.blocknr))
}

/// Move a full root's entries into two new children; the root becomes internal.
fn split_beneath(tm: &mut TransactionManager, mut node: Node) -> Result<Node> {
    let left_b = tm.alloc()?;
    let right_b = tm.alloc()?;
    let root_b = node.blocknr;
    node.blocknr = left_b;
    let right = node.split_off(node.len() / 2, right_b);
    tm.write_unsealed(left_b, node.encode_unsealed(), BlockKind::Node)?;
    tm.write_unsealed(right_b, right.encode_unsealed(), BlockKind::Node)?;
    let mut root = Node::new(root_b, false, 8);
    root.insert_at(0, node.keys[0], &left_b.to_le_bytes());
    root.insert_at(1, right.keys[0], &right_b.to_le_bytes());
    Ok(root)
}

/// Remove `key`; its value is dec'ed and returned. Returns the new root (the old one
/// when the key is absent: nothing is shadowed then).
pub fn remove<H: RefCounter + ?Sized>(
    tm: &mut TransactionManager,
    root: u64,
    key: u64,
    value_size: u32,
    hooks: &mut H,
) -> Result<(u64, Option<Vec<u8>>)> {
    if lookup(tm, root, key, value_size)?.is_none() {
        return Ok((root, None));
    }
    let (mut node, removed) = remove_rec(tm, root, key, value_size, hooks, 0)?;
    while !node.leaf && node.len() == 1 {
        let child = node.child(0);
        tm.dec(node.blocknr)?;
        node = read_node(tm, child, value_size)?;
    }
    hooks.dec(tm, &removed)?;
    Ok((node.blocknr, Some(removed)))
}

fn remove_rec<H: RefCounter + ?Sized>(
    tm: &mut TransactionManager,
    b: u64,
    key: u64,
    vs: u32,
    hooks: &mut H,
    depth: usize,
) -> Result<(Node, Vec<u8>)> {
    if depth >= MAX_DEPTH {
        return Err(too_deep(b));
    }
    let mut node = shadow_node(tm, b, vs, hooks)?;
    if node.leaf {
        let i = node.search(key).map_err(|_| {
            PdataError::Inconsistent(format!("key {key} vanished from leaf {b} during remove"))
        })?;
        let v = node.remove_at(i);
        tm.write_unsealed(node.blocknr, node.encode_unsealed(), BlockKind::Node)?;
        return Ok((node, v));
    }
    let i = node.child_index(key);
    let (child, v) = remove_rec(tm, node.child(i), key, vs, hooks, depth + 1)?;
    node.set_value(i, &child.blocknr.to_le_bytes());
    if child.len() < child.min_entries() && node.len() > 1 {
        rebalance(tm, &mut node, i, child, vs, hooks)?;
    }
    tm.write_unsealed(node.blocknr, node.encode_unsealed(), BlockKind::Node)?;
    Ok((node, v))
}

/// Merge the underfull child `i` of `node` with a sibling, or share entries with it.
fn rebalance<H: RefCounter + ?Sized>(
    tm: &mut TransactionManager,
    node: &mut Node,
    i: usize,
    child: Node,
    vs: u32,
    hooks: &mut H,
) -> Result<()> {
    let (li, mut left, mut right) = if i + 1 < node.len() {
        let r = shadow_node(tm, node.child(i + 1), vs, hooks)?;
        (i, child, r)
    } else {
        let l = shadow_node(tm, node.child(i - 1), vs, hooks)?;
        (i - 1, l, child)
    };
    let total = left.len() + right.len();
    if total <= left.max_entries as usize {
        left.keys.append(&mut right.keys);
        left.values.append(&mut right.values);
        tm.dec(right.blocknr)?;
        node.remove_at(li + 1);
        node.set_value(li, &left.blocknr.to_le_bytes());
        tm.write_unsealed(left.blocknr, left.encode_unsealed(), BlockKind::Node)?;
        return Ok(());
    }
    let target = total / 2;
    let vsz = left.value_size as usize;
    if left.len() > target {
        let mut moved = left.split_off(target, right.blocknr);
        moved.keys.append(&mut right.keys);
        moved.values.append(&mut right.values);
        right = moved;
    } else {
        let n = target - left.len();
        left.keys.extend(right.keys.drain(..n));
        left.values.extend(right.values.drain(..n * vsz));
    }
    node.keys[li + 1] = right.keys[0];
    node.set_value(li, &left.blocknr.to_le_bytes());
    node.set_value(li + 1, &right.blocknr.to_le_bytes());
    tm.write_unsealed(left.blocknr, left.encode_unsealed(), BlockKind::Node)?;
    tm.write_unsealed(right.blocknr, right.encode_unsealed(), BlockKind::Node)?;
    Ok(())
}

/// Drop one reference to the tree at `root`; nodes whose count reaches zero are freed
/// and their children and values dec'ed.
pub fn del<H: RefCounter + ?Sized>(
    tm: &mut TransactionManager,
    root: u64,
    value_size: u32,
    hooks: &mut H,
) -> Result<()> {
    del_rec(tm, root, value_size, hooks, 0)
}

fn del_rec<H: RefCounter + ?Sized>(
    tm: &mut TransactionManager,
    root: u64,
    value_size: u32,
    hooks: &mut H,
    depth: usize,
) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(too_deep(root));
    }
    let node = read_node(tm, root, value_size)?;
    if tm.dec(root)? > 0 {
        return Ok(());
    }
    for i in 0..node.len() {
        if node.leaf {
            hooks.dec(tm, node.value(i))?;
        } else {
            del_rec(tm, node.child(i), value_size, hooks, depth + 1)?;
        }
    }
    Ok(())
}

/// Visit entries with keys `>= from` in order until `f` returns false. Returns false when
/// stopped early.
pub fn walk_from<R, F>(r: &mut R, root: u64, value_size: u32, from: u64, f: &mut F) -> Result<bool>
where
    R: BlockReader + ?Sized,
    F: FnMut(u64, &[u8]) -> Result<bool>,
{
    walk_rec(r, root, value_size, from, f, 0)
}

fn walk_rec<R, F>(
    r: &mut R,
    root: u64,
    value_size: u32,
    from: u64,
    f: &mut F,
    depth: usize,
) -> Result<bool>
where
    R: BlockReader + ?Sized,
    F: FnMut(u64, &[u8]) -> Result<bool>,
{
    if depth >= MAX_DEPTH {
        return Err(too_deep(root));
    }
    let node = read_node(r, root, value_size)?;
    if node.leaf {
        let start = node.search(from).unwrap_or_else(|i| i);
        for i in start..node.len() {
            if !f(node.keys[i], node.value(i))? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    for i in node.child_index(from)..node.len() {
        if !walk_rec(r, node.child(i), value_size, from, f, depth + 1)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every entry, in key order.
pub fn collect<R: BlockReader + ?Sized>(
    r: &mut R,
    root: u64,
    value_size: u32,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    walk_from(r, root, value_size, 0, &mut |k, v| {
        out.push((k, v.to_vec()));
        Ok(true)
    })?;
    Ok(out)
}

/// Every entry of a tree of le32 values (space map overflow counts).
pub fn collect_u32<R: BlockReader + ?Sized>(r: &mut R, root: u64) -> Result<HashMap<u64, u32>> {
    Ok(collect(r, root, 4)?
        .into_iter()
        .map(|(k, v)| (k, crate::le32(&v, 0)))
        .collect())
}

/// Decode a le64 value.
pub fn value_u64(v: &[u8]) -> u64 {
    le64(v, 0)
}
