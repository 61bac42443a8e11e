//! dm-array: a resizable array of fixed-size values stored in array blocks (24-byte
//! header: csum, max_entries, nr_entries, value_size, blocknr; then the values), indexed
//! by a btree from block index to array block. Every block but the last is full. The
//! array's length is kept by its user (the cache or era superblock), not on disk here.
//! [`bitset`] stores bits in an array of little-endian u64 words.

pub mod bitset;

use crate::btree::{self, RefCounter};
use crate::checksum::{seal, BlockKind};
use crate::error::{PdataError, Result};
use crate::tm::{BlockReader, TransactionManager};
use crate::{le32, le64, put32, put64, BlockBuf, BLOCK_SIZE};

/// Bytes of an array block header.
pub const ARRAY_HEADER_SIZE: usize = 24;

/// Values an array block holds for `value_size`-byte values.
pub const fn max_entries(value_size: u32) -> u32 {
    (BLOCK_SIZE - ARRAY_HEADER_SIZE) as u32 / value_size
}

/// Array blocks (leaves only) an array of `len` `value_size`-byte values takes: a lower
/// bound on the metadata blocks it needs, for refusing lengths that cannot fit.
pub fn leaf_blocks(len: u64, value_size: u32) -> u64 {
    len.div_ceil(max_entries(value_size) as u64)
}

/// Refuse an array of `len` values (`what` names it) whose leaves alone would not fit
/// the `meta_blocks` metadata blocks — before anything is allocated for it.
pub fn ensure_fits(what: &str, len: u64, value_size: u32, meta_blocks: u64) -> Result<()> {
    let need = leaf_blocks(len, value_size);
    if need > meta_blocks {
        return Err(PdataError::Invalid(format!(
            "{len} {what} need at least {need} metadata blocks; the metadata device has {meta_blocks}"
        )));
    }
    Ok(())
}

/// A decoded array block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayBlock {
    pub blocknr: u64,
    pub max_entries: u32,
    pub value_size: u32,
    /// `nr_entries * value_size` bytes.
    pub values: Vec<u8>,
}

impl ArrayBlock {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len() / self.value_size as usize
    }

    /// Whether the block holds no value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Value `i`.
    pub fn value(&self, i: usize) -> &[u8] {
        let vs = self.value_size as usize;
        &self.values[i * vs..(i + 1) * vs]
    }

    /// Decode a verified block read from `block`, expecting `value_size`.
    pub fn decode(buf: &BlockBuf, block: u64, value_size: u32) -> Result<ArrayBlock> {
        let bad = |r: String| PdataError::corrupt(BlockKind::Array, block, r);
        let max = le32(buf, 4);
        let nr = le32(buf, 8);
        let vs = le32(buf, 12);
        let blocknr = le64(buf, 16);
        if blocknr != block {
            return Err(PdataError::BlockNr {
                kind: BlockKind::Array,
                block,
                found: blocknr,
            });
        }
        if vs != value_size {
            return Err(bad(format!("value size {vs}, expected {value_size}")));
        }
        if max != max_entries(vs) {
            return Err(bad(format!(
                "max_entries {max}, expected {}",
                max_entries(vs)
            )));
        }
        if nr > max {
            return Err(bad(format!("nr_entries {nr} > max_entries {max}")));
        }
        let n = nr as usize * vs as usize;
        Ok(ArrayBlock {
            blocknr,
            max_entries: max,
            value_size: vs,
            values: buf[ARRAY_HEADER_SIZE..ARRAY_HEADER_SIZE + n].to_vec(),
        })
    }

    /// Encode and seal.
    pub fn encode(&self) -> BlockBuf {
        let mut b = self.encode_unsealed();
        seal(&mut b, BlockKind::Array);
        b
    }

    /// Encode without the checksum (the block manager seals dirty blocks at write-back).
    pub fn encode_unsealed(&self) -> BlockBuf {
        let mut b = [0u8; BLOCK_SIZE];
        put32(&mut b, 4, self.max_entries);
        put32(&mut b, 8, self.len() as u32);
        put32(&mut b, 12, self.value_size);
        put64(&mut b, 16, self.blocknr);
        b[ARRAY_HEADER_SIZE..ARRAY_HEADER_SIZE + self.values.len()].copy_from_slice(&self.values);
        b
    }
}

/// Read array block `b`.
pub fn read_block<R: BlockReader + ?Sized>(
    r: &mut R,
    b: u64,
    value_size: u32,
) -> Result<ArrayBlock> {
    ArrayBlock::decode(&*r.read_block(b, BlockKind::Array)?, b, value_size)
}

/// Btree hooks for values that are array blocks holding values counted by `inner`.
pub struct BlockRefs<'a> {
    pub value_size: u32,
    pub inner: &'a mut dyn RefCounter,
}

impl RefCounter for BlockRefs<'_> {
    fn inc(&mut self, tm: &mut TransactionManager, v: &[u8]) -> Result<()> {
        tm.inc(le64(v, 0)).map(|_| ())
    }
    fn dec(&mut self, tm: &mut TransactionManager, v: &[u8]) -> Result<()> {
        let b = le64(v, 0);
        let block = read_block(tm, b, self.value_size)?;
        if tm.dec(b)? == 0 {
            for i in 0..block.len() {
                self.inner.dec(tm, block.value(i))?;
            }
        }
        Ok(())
    }
}

/// Btree hooks while an array block's new location replaces its old one.
struct Relocate;

impl RefCounter for Relocate {
    fn inc(&mut self, tm: &mut TransactionManager, v: &[u8]) -> Result<()> {
        tm.inc(le64(v, 0)).map(|_| ())
    }
    fn dec(&mut self, _: &mut TransactionManager, v: &[u8]) -> Result<()> {
        Err(PdataError::Invalid(format!(
            "array block {} released while relocating",
            le64(v, 0)
        )))
    }
}

/// An empty array; returns its root.
pub fn empty(tm: &mut TransactionManager) -> Result<u64> {
    btree::empty(tm, 8)
}

fn block_of(index: u64, value_size: u32) -> (u64, usize) {
    let per = max_entries(value_size) as u64;
    (index / per, (index % per) as usize)
}

/// Value `index` (None beyond the stored blocks).
pub fn get<R: BlockReader + ?Sized>(
    r: &mut R,
    root: u64,
    value_size: u32,
    index: u64,
) -> Result<Option<Vec<u8>>> {
    let (bi, off) = block_of(index, value_size);
    let Some(v) = btree::lookup(r, root, bi, 8)? else {
        return Ok(None);
    };
    let block = read_block(r, le64(&v, 0), value_size)?;
    Ok((off < block.len()).then(|| block.value(off).to_vec()))
}

/// Get a writable copy of array block `bi`, returning it with the new root.
fn shadow_block(
    tm: &mut TransactionManager,
    root: u64,
    value_size: u32,
    bi: u64,
    inner: &mut dyn RefCounter,
) -> Result<(u64, ArrayBlock)> {
    let v = btree::lookup(tm, root, bi, 8)?
        .ok_or_else(|| PdataError::Invalid(format!("array block {bi} does not exist")))?;
    let old = le64(&v, 0);
    // Shadow the btree path first, so a shared leaf adds its reference to `old`.
    let (root, _) = btree::insert_full(tm, root, bi, &v, &mut Relocate, false)?;
    let (nb, data, shared) = tm.shadow(old, BlockKind::Array)?;
    let mut block = ArrayBlock::decode(&data, old, value_size)?;
    block.blocknr = nb;
    if shared {
        for i in 0..block.len() {
            inner.inc(tm, block.value(i))?;
        }
    }
    let (root, _) = btree::insert_full(tm, root, bi, &nb.to_le_bytes(), &mut Relocate, false)?;
    Ok((root, block))
}

/// Set value `index` (which must be below the array's length); the caller's reference
/// to `value` passes to the array and a different old value is dec'ed.
pub fn set(
    tm: &mut TransactionManager,
    root: u64,
    value_size: u32,
    index: u64,
    value: &[u8],
    inner: &mut dyn RefCounter,
) -> Result<u64> {
    let (bi, off) = block_of(index, value_size);
    let (root, mut block) = shadow_block(tm, root, value_size, bi, inner)?;
    if off >= block.len() {
        return Err(PdataError::Invalid(format!(
            "array index {index} beyond the end"
        )));
    }
    let vs = value_size as usize;
    let old = block.value(off).to_vec();
    block.values[off * vs..(off + 1) * vs].copy_from_slice(value);
    tm.write_unsealed(block.blocknr, block.encode_unsealed(), BlockKind::Array)?;
    if old != value {
        inner.dec(tm, &old)?;
    }
    Ok(root)
}

/// Change the length from `old_len` to `new_len`; new values are `default` (one
/// reference added per copy), dropped values are dec'ed.
pub fn resize(
    tm: &mut TransactionManager,
    mut root: u64,
    value_size: u32,
    old_len: u64,
    new_len: u64,
    default: &[u8],
    inner: &mut dyn RefCounter,
) -> Result<u64> {
    let per = max_entries(value_size) as u64;
    let vs = value_size as usize;
    let old_blocks = old_len.div_ceil(per);
    let new_blocks = new_len.div_ceil(per);
    if new_len < old_len {
        for bi in (new_blocks..old_blocks).rev() {
            let mut hooks = BlockRefs {
                value_size,
                inner: &mut *inner,
            };
            root = btree::remove(tm, root, bi, 8, &mut hooks)?.0;
        }
        let keep = (new_len - (new_blocks.saturating_sub(1)) * per) as usize;
        if new_blocks > 0 && keep < per as usize {
            let (r, mut block) = shadow_block(tm, root, value_size, new_blocks - 1, inner)?;
            root = r;
            let dropped: Vec<u8> = block.values.split_off(keep * vs);
            tm.write_unsealed(block.blocknr, block.encode_unsealed(), BlockKind::Array)?;
            for v in dropped.chunks(vs) {
                inner.dec(tm, v)?;
            }
        }
        return Ok(root);
    }
    let mut len = old_len;
    if !old_len.is_multiple_of(per) && new_len > old_len {
        let (r, mut block) = shadow_block(tm, root, value_size, old_blocks - 1, inner)?;
        root = r;
        while (block.len() as u64) < per && len < new_len {
            block.values.extend_from_slice(default);
            inner.inc(tm, default)?;
            len += 1;
        }
        tm.write_unsealed(block.blocknr, block.encode_unsealed(), BlockKind::Array)?;
    }
    while len < new_len {
        let bi = len / per;
        let n = (new_len - len).min(per);
        let b = tm.alloc()?;
        let mut block = ArrayBlock {
            blocknr: b,
            max_entries: per as u32,
            value_size,
            values: Vec::with_capacity(n as usize * vs),
        };
        for _ in 0..n {
            block.values.extend_from_slice(default);
            inner.inc(tm, default)?;
        }
        tm.write_unsealed(b, block.encode_unsealed(), BlockKind::Array)?;
        root = btree::insert(tm, root, bi, &b.to_le_bytes(), &mut btree::NoRefs)?;
        len += n;
    }
    Ok(root)
}

/// Visit every stored value in index order.
pub fn walk<R, F>(r: &mut R, root: u64, value_size: u32, f: &mut F) -> Result<()>
where
    R: BlockReader + ?Sized,
    F: FnMut(u64, &[u8]) -> Result<()>,
{
    let per = max_entries(value_size) as u64;
    let blocks = btree::collect(r, root, 8)?;
    for (bi, v) in blocks {
        let block = read_block(r, le64(&v, 0), value_size)?;
        for i in 0..block.len() {
            f(bi * per + i as u64, block.value(i))?;
        }
    }
    Ok(())
}

/// Drop one reference to the whole array.
pub fn del(
    tm: &mut TransactionManager,
    root: u64,
    value_size: u32,
    inner: &mut dyn RefCounter,
) -> Result<()> {
    let mut hooks = BlockRefs { value_size, inner };
    btree::del(tm, root, 8, &mut hooks)
}
