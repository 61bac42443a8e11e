//! A bitset stored as a dm-array of little-endian u64 words; bit `i` is bit `i % 64` of
//! word `i / 64`. The number of bits is kept by the user.

use crate::btree::NoRefs;
use crate::error::{PdataError, Result};
use crate::le64;
use crate::tm::{BlockReader, TransactionManager};

/// An empty bitset; returns its root.
pub fn empty(tm: &mut TransactionManager) -> Result<u64> {
    super::empty(tm)
}

/// Resize from `old_bits` to `new_bits`; new bits are `default`.
pub fn resize(
    tm: &mut TransactionManager,
    root: u64,
    old_bits: u64,
    new_bits: u64,
    default: bool,
) -> Result<u64> {
    let old_words = old_bits.div_ceil(64);
    let new_words = new_bits.div_ceil(64);
    let fill = if default { u64::MAX } else { 0 };
    let mut root = super::resize(
        tm,
        root,
        8,
        old_words,
        new_words,
        &fill.to_le_bytes(),
        &mut NoRefs,
    )?;
    // Bits of a partial word gained or lost take the default / are cleared.
    if new_bits > old_bits && !old_bits.is_multiple_of(64) {
        let w = old_bits / 64;
        let mut word = get_word(tm, root, w)?;
        let end = ((w + 1) * 64).min(new_bits);
        for bit in old_bits..end {
            word = with_bit(word, bit % 64, default);
        }
        root = super::set(tm, root, 8, w, &word.to_le_bytes(), &mut NoRefs)?;
    }
    if new_bits < old_bits && !new_bits.is_multiple_of(64) {
        let w = new_bits / 64;
        let word = get_word(tm, root, w)? & ((1u64 << (new_bits % 64)) - 1);
        root = super::set(tm, root, 8, w, &word.to_le_bytes(), &mut NoRefs)?;
    }
    Ok(root)
}

fn with_bit(word: u64, bit: u64, v: bool) -> u64 {
    if v {
        word | (1 << bit)
    } else {
        word & !(1 << bit)
    }
}

fn get_word<R: BlockReader + ?Sized>(r: &mut R, root: u64, w: u64) -> Result<u64> {
    super::get(r, root, 8, w)?
        .map(|v| le64(&v, 0))
        .ok_or_else(|| PdataError::Invalid(format!("bitset word {w} does not exist")))
}

/// Bit `bit`.
pub fn test<R: BlockReader + ?Sized>(r: &mut R, root: u64, bit: u64) -> Result<bool> {
    Ok(get_word(r, root, bit / 64)? >> (bit % 64) & 1 == 1)
}

/// Set bit `bit` to `v`.
pub fn set(tm: &mut TransactionManager, root: u64, bit: u64, v: bool) -> Result<u64> {
    let word = get_word(tm, root, bit / 64)?;
    let new = with_bit(word, bit % 64, v);
    if new == word {
        return Ok(root);
    }
    super::set(tm, root, 8, bit / 64, &new.to_le_bytes(), &mut NoRefs)
}

/// The first `nr_bits` bits.
pub fn collect<R: BlockReader + ?Sized>(r: &mut R, root: u64, nr_bits: u64) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(nr_bits as usize);
    super::walk(r, root, 8, &mut |_, v| {
        let word = le64(v, 0);
        for b in 0..64 {
            if (out.len() as u64) < nr_bits {
                out.push(word >> b & 1 == 1);
            }
        }
        Ok(())
    })?;
    if (out.len() as u64) < nr_bits {
        return Err(PdataError::Inconsistent(format!(
            "bitset holds {} bits, {nr_bits} expected",
            out.len()
        )));
    }
    Ok(out)
}
