//! Nested (multi-level) trees, as dm-thin's mapping tree: every level but the last maps a
//! key to the root of the next level's tree.

use super::{empty, insert_full, lookup, RefCounter};
use crate::error::{PdataError, Result};
use crate::le64;
use crate::tm::{BlockReader, TransactionManager};

/// Hooks for values that are roots of subtrees whose leaves use `inner`: a copied
/// reference adds one to the subtree root, a dropped one releases the subtree.
pub struct SubtreeRefs<'a> {
    /// Value size of the subtree's leaves.
    pub leaf_value_size: u32,
    /// Hooks of the subtree's values.
    pub inner: &'a mut dyn RefCounter,
}

impl RefCounter for SubtreeRefs<'_> {
    fn inc(&mut self, tm: &mut TransactionManager, value: &[u8]) -> Result<()> {
        tm.inc(le64(value, 0)).map(|_| ())
    }
    fn dec(&mut self, tm: &mut TransactionManager, value: &[u8]) -> Result<()> {
        super::del(tm, le64(value, 0), self.leaf_value_size, &mut *self.inner)
    }
}

/// Upper-level hooks while a path is rewritten: copies add a reference; nothing is
/// released (the shadowing below already moved the reference).
struct RootMove;

impl RefCounter for RootMove {
    fn inc(&mut self, tm: &mut TransactionManager, value: &[u8]) -> Result<()> {
        tm.inc(le64(value, 0)).map(|_| ())
    }
    fn dec(&mut self, _: &mut TransactionManager, value: &[u8]) -> Result<()> {
        Err(PdataError::Invalid(format!(
            "subtree root {} released while rewriting a path",
            le64(value, 0)
        )))
    }
}

fn check_keys(keys: &[u64]) -> Result<()> {
    if keys.is_empty() {
        return Err(PdataError::Invalid(
            "nested tree operation without keys".into(),
        ));
    }
    Ok(())
}

/// Look up `keys` (one per level); leaves of the last level hold `leaf_value_size` bytes.
pub fn lookup_nested<R: BlockReader + ?Sized>(
    r: &mut R,
    root: u64,
    keys: &[u64],
    leaf_value_size: u32,
) -> Result<Option<Vec<u8>>> {
    check_keys(keys)?;
    let mut b = root;
    for (lvl, &k) in keys.iter().enumerate() {
        let last = lvl + 1 == keys.len();
        let vs = if last { leaf_value_size } else { 8 };
        match lookup(r, b, k, vs)? {
            None => return Ok(None),
            Some(v) if last => return Ok(Some(v)),
            Some(v) => b = le64(&v, 0),
        }
    }
    unreachable!("the loop returns at the last level")
}

/// Insert `value` under `keys`, creating missing subtrees. Returns the new root and the
/// overwritten value (which `leaf_hooks` dec'ed if it differed).
pub fn insert_nested(
    tm: &mut TransactionManager,
    root: u64,
    keys: &[u64],
    value: &[u8],
    leaf_hooks: &mut dyn RefCounter,
) -> Result<(u64, Option<Vec<u8>>)> {
    check_keys(keys)?;
    if keys.len() == 1 {
        return insert_full(tm, root, keys[0], value, leaf_hooks, true);
    }
    let sub_vs = if keys.len() == 2 {
        value.len() as u32
    } else {
        8
    };
    let (root, sub) = shadow_upper(tm, root, keys[0], Some(sub_vs))?;
    let sub = sub.expect("created when missing");
    let (new_sub, old) = insert_nested(tm, sub, &keys[1..], value, leaf_hooks)?;
    let (new_root, _) = insert_full(
        tm,
        root,
        keys[0],
        &new_sub.to_le_bytes(),
        &mut RootMove,
        false,
    )?;
    Ok((new_root, old))
}

/// Shadow the path to `key` in an upper-level tree before its subtree is touched, so a
/// shared upper node hands its extra reference down to the subtree root first (top-down,
/// as the subtree's own shadowing then sees it shared). Returns the new root and the
/// subtree root (created empty with `create` value size when missing).
fn shadow_upper(
    tm: &mut TransactionManager,
    root: u64,
    key: u64,
    create: Option<u32>,
) -> Result<(u64, Option<u64>)> {
    let sub = match (lookup(tm, root, key, 8)?, create) {
        (Some(v), _) => le64(&v, 0),
        (None, Some(vs)) => empty(tm, vs)?,
        (None, None) => return Ok((root, None)),
    };
    let (root, _) = insert_full(tm, root, key, &sub.to_le_bytes(), &mut RootMove, false)?;
    Ok((root, Some(sub)))
}

/// Remove the value under `keys` (dec'ed through `leaf_hooks`). Emptied subtrees stay.
pub fn remove_nested(
    tm: &mut TransactionManager,
    root: u64,
    keys: &[u64],
    leaf_value_size: u32,
    leaf_hooks: &mut dyn RefCounter,
) -> Result<(u64, Option<Vec<u8>>)> {
    check_keys(keys)?;
    if keys.len() == 1 {
        return super::remove(tm, root, keys[0], leaf_value_size, leaf_hooks);
    }
    if lookup_nested(tm, root, keys, leaf_value_size)?.is_none() {
        return Ok((root, None));
    }
    let (root, sub) = shadow_upper(tm, root, keys[0], None)?;
    let sub = sub.expect("the key exists");
    let (new_sub, removed) = remove_nested(tm, sub, &keys[1..], leaf_value_size, leaf_hooks)?;
    let (new_root, _) = insert_full(
        tm,
        root,
        keys[0],
        &new_sub.to_le_bytes(),
        &mut RootMove,
        false,
    )?;
    Ok((new_root, removed))
}
