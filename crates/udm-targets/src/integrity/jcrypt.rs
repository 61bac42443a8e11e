//! `journal_crypt:<alg>[:<hexkey>]`: the journal is encrypted on disk and kept in clear in
//! memory, as dm-integrity 1.10 (kernel 6.1) does it.
//!
//! - A stream cipher (block size 1: `ctr(aes)`, `chacha20`) encrypts zeros with a zero IV
//!   once, over the page-rounded journal followed by the four 8-byte commit id seeds: the
//!   journal is XORed with that keystream at its own byte offsets, and the commit ids become
//!   the encrypted seeds (a seed equal to an earlier one is incremented until unique).
//! - A block cipher (`cbc(aes)`, `xts(aes)`, `ecb(aes)`, …) encrypts each section as one
//!   request, with an IV per section: the cipher's encryption, under a zero IV, of a block
//!   holding the section number (le32) followed by zeros. The commit ids keep their seeds.
//!
//! Section MACs are computed over the clear journal before it is encrypted, and checked
//! after a replay read decrypts it.

use super::core::{Inner, State};
use super::params::AlgSpec;
use udm_core::TargetError;
use udm_crypto::skcipher::SkCipher;
use udm_crypto::{CipherError, Zeroizing};
use udm_formats::integrity::journal::{JournalGeometry, COMMIT_IDS, N_COMMIT_IDS};

const PAGE: usize = 4096;

enum Kind {
    /// The keystream over the page-rounded journal.
    Xor(Zeroizing<Vec<u8>>),
    /// One request per section, with that section's IV (`ivsize` bytes each).
    Sections {
        cipher: SkCipher,
        iv_size: usize,
        ivs: Vec<u8>,
    },
}

/// A keyed journal cipher for one journal geometry.
pub(crate) struct JournalCrypt {
    kind: Kind,
    section_bytes: usize,
    /// The commit id seeds this journal uses.
    pub(crate) commit_ids: [u64; N_COMMIT_IDS],
}

fn key_error(e: CipherError) -> TargetError {
    match e {
        CipherError::Alloc => TargetError::with_errno(libc::ENOENT, "Invalid journal cipher"),
        _ => TargetError::with_errno(libc::EINVAL, "Error setting encryption key"),
    }
}

impl JournalCrypt {
    /// The kernel's `create_journal` cipher set-up, with its error texts.
    pub(crate) fn new(spec: &AlgSpec, g: &JournalGeometry) -> Result<JournalCrypt, TargetError> {
        if !SkCipher::supports(&spec.alg) {
            return Err(key_error(CipherError::Alloc));
        }
        let key = spec.key();
        let cipher = SkCipher::new(&spec.alg, key.as_deref().unwrap_or(&[])).map_err(|e| {
            match (&key, e) {
                // No key: the first request fails with ENOKEY.
                (None, CipherError::Key) => TargetError::with_errno(
                    libc::ENOKEY,
                    if spec.alg == "chacha20" || spec.alg.starts_with("ctr(") {
                        "Unable to encrypt journal"
                    } else {
                        "Unable to generate iv"
                    },
                ),
                (_, e) => key_error(e),
            }
        })?;
        let section_bytes = g.section_sectors as usize * 512;
        let iv_size = cipher.iv_size();
        let mut commit_ids = COMMIT_IDS;
        let kind = if cipher.block_size() == 1 {
            let pages = (g.sectors() as usize * 512).div_ceil(PAGE);
            let mut ks = Zeroizing::new(vec![0u8; pages * PAGE + 8 * N_COMMIT_IDS]);
            for (k, id) in commit_ids.iter().enumerate() {
                ks[pages * PAGE + 8 * k..pages * PAGE + 8 * k + 8]
                    .copy_from_slice(&id.to_le_bytes());
            }
            cipher.encrypt(&vec![0u8; iv_size], &mut ks);
            for (id, b) in commit_ids.iter_mut().zip(ks[pages * PAGE..].chunks(8)) {
                *id = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            }
            ks.truncate(pages * PAGE);
            Kind::Xor(ks)
        } else {
            let len = iv_size.div_ceil(cipher.block_size()) * cipher.block_size();
            let mut ivs = Vec::with_capacity(g.sections as usize * iv_size);
            for i in 0..g.sections {
                let mut data = vec![0u8; len];
                let n = len.min(4);
                data[..n].copy_from_slice(&i.to_le_bytes()[..n]);
                cipher.encrypt(&vec![0u8; iv_size], &mut data);
                ivs.extend_from_slice(&data[..iv_size]);
            }
            Kind::Sections {
                cipher,
                iv_size,
                ivs,
            }
        };
        // Seeds must differ (the kernel bumps a repeated one).
        for i in 0..N_COMMIT_IDS {
            while commit_ids[..i].contains(&commit_ids[i]) {
                commit_ids[i] = commit_ids[i].wrapping_add(1);
            }
        }
        Ok(JournalCrypt {
            kind,
            section_bytes,
            commit_ids,
        })
    }

    /// En/decrypt `buf`, which holds sections `first..` of the journal, in place.
    pub(crate) fn apply(&self, first: u32, buf: &mut [u8], enc: bool) {
        let off = first as usize * self.section_bytes;
        match &self.kind {
            Kind::Xor(ks) => {
                let len = buf.len();
                for (b, k) in buf.iter_mut().zip(&ks[off..off + len]) {
                    *b ^= k;
                }
            }
            Kind::Sections {
                cipher,
                iv_size,
                ivs,
            } => {
                for (k, sec) in buf.chunks_mut(self.section_bytes).enumerate() {
                    let i = first as usize + k;
                    let iv = &ivs[i * iv_size..(i + 1) * iv_size];
                    if enc {
                        cipher.encrypt(iv, sec);
                    } else {
                        cipher.decrypt(iv, sec);
                    }
                }
            }
        }
    }
}

impl Inner {
    /// The commit id seeds of this journal.
    pub(crate) fn commit_ids(&self) -> [u64; N_COMMIT_IDS] {
        self.jcrypt.as_ref().map_or(COMMIT_IDS, |c| c.commit_ids)
    }

    /// Read sections `[start, start+n)` (no wrap) into the in-memory journal, decrypted when
    /// the journal is encrypted. Failures fail the device as `rw_journal_sectors` does.
    pub(crate) fn read_journal_sections(&self, st: &mut State, start: u32, n: u32) {
        let g = self.geo.journal;
        let first = start as u64 * g.section_sectors as u64;
        let count = n as u64 * g.section_sectors as u64;
        self.rw_journal_sectors(st, false, first, count);
        if let (Some(c), None) = (&self.jcrypt, self.failed()) {
            let r = (first * 512) as usize..((first + count) * 512) as usize;
            c.apply(start, &mut st.journal[r], false);
        }
    }
}
