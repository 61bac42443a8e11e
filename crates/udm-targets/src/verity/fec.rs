//! Forward error correction at read time (the kernel's `verity_fec_decode`): rebuild a block
//! from its round's `rsn` interleaved blocks and parity, first assuming unknown error positions,
//! then with the data blocks that fail their own hash marked as erasures. The result counts
//! only if it matches the expected digest. Runs on worker threads (blocking reads).

use super::target::Inner;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use udm_core::DevHandle;
use udm_formats::verity::fec::FecSource;
use udm_formats::verity::{Digest, FecLayout, ReedSolomon};
use udm_io::{IoError, Sectors};

/// FEC state of a target.
pub struct FecRuntime {
    pub dev: Arc<DevHandle>,
    pub layout: FecLayout,
    /// `fec_start`, in data blocks.
    pub start: u64,
    rs: ReedSolomon,
    /// Blocks corrected so far.
    pub corrected: AtomicU64,
}

impl FecRuntime {
    pub fn new(dev: Arc<DevHandle>, layout: FecLayout, start: u64) -> FecRuntime {
        let rs = ReedSolomon::new(layout.roots as usize);
        FecRuntime {
            dev,
            layout,
            start,
            rs,
            corrected: AtomicU64::new(0),
        }
    }

    fn read(dev: &DevHandle, byte: u64, len: usize) -> Result<Vec<u8>, IoError> {
        udm_io::sync::read_at(dev.dev.as_ref(), Sectors(byte / 512), len).map(|b| b.into_vec())
    }

    /// Read virtual block `vb` (None on an I/O error).
    fn read_virtual(&self, v: &Inner, vb: u64) -> Option<Vec<u8>> {
        let bs = self.layout.block_size as u64;
        match self.layout.source(vb) {
            FecSource::Zero => Some(vec![0u8; bs as usize]),
            FecSource::Data(b) => Self::read(&v.data, b * bs, bs as usize).ok(),
            FecSource::Hash(b) => Self::read(&v.hash, b * bs, bs as usize).ok(),
        }
    }

    /// Try to rebuild virtual block `vb` so that its digest is `want`.
    pub(crate) fn correct(&self, v: &Inner, vb: u64, want: &Digest) -> Option<Vec<u8>> {
        let l = &self.layout;
        let (round, idx) = l.round_of(vb);
        let bs = l.block_size as usize;
        let mut io_erasures = Vec::new();
        let blocks: Vec<Vec<u8>> = l
            .round_blocks(round)
            .enumerate()
            .map(|(i, b)| {
                self.read_virtual(v, b).unwrap_or_else(|| {
                    io_erasures.push(i);
                    vec![0u8; bs]
                })
            })
            .collect();
        let parity_len = bs * l.roots as usize;
        let parity = Self::read(
            &self.dev,
            self.start * bs as u64 + l.round_parity_offset(round),
            parity_len,
        )
        .ok()?;
        let attempt = |erasures: &[usize]| -> Option<Vec<u8>> {
            if erasures.len() > l.roots as usize {
                return None;
            }
            let mut work = blocks.clone();
            l.decode_round(&self.rs, &mut work, &parity, erasures)
                .ok()?;
            let fixed = std::mem::take(&mut work[idx]);
            (v.hasher.digest(&fixed) == *want).then_some(fixed)
        };
        let fixed = attempt(&io_erasures).or_else(|| {
            // Second try: mark data blocks that fail their own hash (and unreadable ones).
            let mut eras = io_erasures.clone();
            for (i, b) in l.round_blocks(round).enumerate() {
                if eras.len() > l.roots as usize {
                    break;
                }
                if eras.contains(&i) {
                    continue;
                }
                if let FecSource::Data(d) = l.source(b) {
                    let bad = match v.want_digest(d, true, true) {
                        Ok(w) => v.hasher.digest(&blocks[i]) != w,
                        Err(_) => false,
                    };
                    if bad {
                        eras.push(i);
                    }
                }
            }
            attempt(&eras)
        })?;
        self.corrected.fetch_add(1, Ordering::Relaxed);
        udm_core::klog::info(
            "verity-fec",
            &format!("{}: FEC corrected block {vb}", v.data.id),
        );
        Some(fixed)
    }
}
