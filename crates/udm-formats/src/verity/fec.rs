//! The FEC layout of veritysetup (`--fec-device`) and dm-verity (`use_fec_from_device`).
//!
//! FEC protects a virtual device of `fec_blocks` blocks (block size = the data block size, which
//! must equal the hash block size): the data blocks, then the hash device from the tree's first
//! block on (`hash_start`), including anything after the tree up to `fec_blocks`; blocks past
//! the end read as zeroes. With `rsn = 255 - roots` and `rounds = ceil(fec_blocks / rsn)`:
//! codeword `c` (for `c` in `0 .. rounds * block_size`) takes byte `c % block_size` of virtual
//! blocks `c / block_size + i * rounds` for `i` in `0..rsn` — each codeword is spread over `rsn`
//! blocks `rounds` apart, so a burst of bad blocks costs each codeword one symbol. Its `roots`
//! parity bytes are stored at byte `c * roots` of the FEC area (`fec_start` blocks into the FEC
//! device). One "round" `n` is the `block_size` codewords of blocks `n, n + rounds, …`, whose
//! parity is one contiguous run of `block_size * roots` bytes.

use super::rs::{ReedSolomon, Uncorrectable, NN};
use super::VerityError;

/// Smallest and largest parity counts veritysetup and the kernel accept.
pub const MIN_ROOTS: u32 = 2;
pub const MAX_ROOTS: u32 = 24;
/// veritysetup's default `--fec-roots`.
pub const DEFAULT_ROOTS: u32 = 2;

/// Where a virtual FEC block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FecSource {
    /// Data block `n`.
    Data(u64),
    /// Absolute hash-device block `n` (block size = the data block size).
    Hash(u64),
    /// Past the protected area: zeroes.
    Zero,
}

/// The FEC geometry of one verity device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FecLayout {
    pub roots: u32,
    pub block_size: u32,
    /// Blocks covered (`fec_blocks`): data blocks + hash-device blocks from `hash_start`.
    pub blocks: u64,
    pub data_blocks: u64,
    pub hash_start: u64,
    pub rounds: u64,
}

impl FecLayout {
    pub fn new(
        roots: u32,
        block_size: u32,
        blocks: u64,
        data_blocks: u64,
        hash_start: u64,
    ) -> Result<FecLayout, VerityError> {
        if !(MIN_ROOTS..=MAX_ROOTS).contains(&roots) {
            return Err(VerityError::BadRoots);
        }
        if block_size < 512 || !block_size.is_power_of_two() {
            return Err(VerityError::BadBlockSize);
        }
        if blocks == 0 || blocks < data_blocks {
            return Err(VerityError::BadFecBlocks);
        }
        let rsn = (NN as u32 - roots) as u64;
        let rounds = blocks.div_ceil(rsn);
        rounds
            .checked_mul(block_size as u64)
            .and_then(|x| x.checked_mul(roots as u64))
            .ok_or(VerityError::Overflow)?;
        Ok(FecLayout {
            roots,
            block_size,
            blocks,
            data_blocks,
            hash_start,
            rounds,
        })
    }

    /// Data symbols per codeword.
    pub fn rsn(&self) -> u64 {
        (NN as u32 - self.roots) as u64
    }
    /// Bytes of parity in the FEC area.
    pub fn parity_bytes(&self) -> u64 {
        self.rounds * self.block_size as u64 * self.roots as u64
    }
    /// Parity size in blocks, rounded up (what veritysetup prints as "FEC blocks").
    pub fn parity_blocks(&self) -> u64 {
        self.parity_bytes().div_ceil(self.block_size as u64)
    }
    /// Which round and which symbol of its codewords virtual block `vb` is.
    pub fn round_of(&self, vb: u64) -> (u64, usize) {
        (vb % self.rounds, (vb / self.rounds) as usize)
    }
    /// The virtual blocks of round `n`, in symbol order (`rsn` of them).
    pub fn round_blocks(&self, n: u64) -> impl Iterator<Item = u64> + '_ {
        (0..self.rsn()).map(move |i| n + i * self.rounds)
    }
    /// Byte offset of round `n`'s parity within the FEC area.
    pub fn round_parity_offset(&self, n: u64) -> u64 {
        n * self.block_size as u64 * self.roots as u64
    }
    /// Where virtual block `vb` is read from.
    pub fn source(&self, vb: u64) -> FecSource {
        if vb >= self.blocks {
            FecSource::Zero
        } else if vb < self.data_blocks {
            FecSource::Data(vb)
        } else {
            FecSource::Hash(self.hash_start + (vb - self.data_blocks))
        }
    }
    /// Virtual block of absolute hash-device block `hb`.
    pub fn virtual_of_hash(&self, hb: u64) -> Option<u64> {
        let vb = self.data_blocks + hb.checked_sub(self.hash_start)?;
        (vb < self.blocks).then_some(vb)
    }

    /// Compute round `n`'s parity: `blocks` are its `rsn` blocks in symbol order (zero blocks
    /// for `FecSource::Zero`), `out` receives `block_size * roots` bytes.
    pub fn encode_round(&self, rs: &ReedSolomon, blocks: &[&[u8]], out: &mut [u8]) {
        let bs = self.block_size as usize;
        let roots = self.roots as usize;
        let rsn = self.rsn() as usize;
        debug_assert_eq!(blocks.len(), rsn);
        let mut msg = vec![0u8; rsn];
        for b in 0..bs {
            for (i, blk) in blocks.iter().enumerate() {
                msg[i] = blk[b];
            }
            rs.encode(&msg, &mut out[b * roots..(b + 1) * roots]);
        }
    }

    /// Correct every codeword of a round in place: `blocks` as for `encode_round` (mutable
    /// copies), `parity` the round's parity, `erasures` symbol indices known to be bad. Returns
    /// the number of corrected symbols.
    pub fn decode_round(
        &self,
        rs: &ReedSolomon,
        blocks: &mut [Vec<u8>],
        parity: &[u8],
        erasures: &[usize],
    ) -> Result<usize, Uncorrectable> {
        let bs = self.block_size as usize;
        let roots = self.roots as usize;
        let rsn = self.rsn() as usize;
        let mut cw = [0u8; NN];
        let mut total = 0;
        for b in 0..bs {
            for i in 0..rsn {
                cw[i] = blocks[i][b];
            }
            cw[rsn..].copy_from_slice(&parity[b * roots..(b + 1) * roots]);
            let n = rs.decode(&mut cw, erasures)?;
            if n > 0 {
                total += n;
                for i in 0..rsn {
                    blocks[i][b] = cw[i];
                }
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veritysetup_figures() {
        // veritysetup 2.6.1: 1024 data blocks of 4 KiB, a 1 MiB hash file (tree from block 1),
        // roots 2 -> fec_blocks 1279 in the table, "FEC blocks: 12".
        let f = FecLayout::new(2, 4096, 1279, 1024, 1).unwrap();
        assert_eq!(f.rounds, 6);
        assert_eq!(f.parity_blocks(), 12);
        assert_eq!(f.source(5), FecSource::Data(5));
        assert_eq!(f.source(1024), FecSource::Hash(1));
        assert_eq!(f.source(1279), FecSource::Zero);
        assert_eq!(f.round_of(1025), (1025 % 6, 1025 / 6));
        assert_eq!(f.virtual_of_hash(1), Some(1024));
        assert_eq!(f.virtual_of_hash(0), None);
    }

    #[test]
    fn bad_parameters() {
        assert_eq!(
            FecLayout::new(1, 4096, 10, 5, 1),
            Err(VerityError::BadRoots)
        );
        assert_eq!(
            FecLayout::new(25, 4096, 10, 5, 1),
            Err(VerityError::BadRoots)
        );
        assert_eq!(
            FecLayout::new(2, 4096, 4, 5, 1),
            Err(VerityError::BadFecBlocks)
        );
        assert!(FecLayout::new(2, 4096, u64::MAX, 5, 1).is_err());
    }

    #[test]
    fn round_trip_one_round() {
        let f = FecLayout::new(4, 512, 600, 500, 0).unwrap();
        let rs = ReedSolomon::new(4);
        let rsn = f.rsn() as usize;
        let blocks: Vec<Vec<u8>> = (0..rsn)
            .map(|i| (0..512).map(|b| (i * 7 + b * 13) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = blocks.iter().map(|b| b.as_slice()).collect();
        let mut par = vec![0u8; 512 * 4];
        f.encode_round(&rs, &refs, &mut par);
        let mut bad = blocks.clone();
        bad[3].iter_mut().for_each(|x| *x ^= 0xff);
        bad[100][7] ^= 1;
        assert!(f.decode_round(&rs, &mut bad, &par, &[]).is_ok());
        assert_eq!(bad, blocks);
    }
}
