//! The hashes dm-integrity computes tags and journal MACs with (the kernel's crypto API names:
//! `crc32c`, `sha1`, `sha256`, `sha512`, `hmac(sha1)`, `hmac(sha256)`, `hmac(sha512)`), and
//! the tag of one block: `hash([salt,] sector_le64, block)`, cut or zero-padded to the tag size.

use super::IntegrityFormatError;
use hmac::{Hmac, Mac};
use sha2::Digest as _;
use zeroize::Zeroizing;

/// One keyed or unkeyed hash algorithm.
#[derive(Clone)]
pub enum TagHash {
    Crc32c,
    Sha1,
    Sha256,
    Sha512,
    HmacSha1(Zeroizing<Vec<u8>>),
    HmacSha256(Zeroizing<Vec<u8>>),
    HmacSha512(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for TagHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TagHash {
    /// The algorithm named `alg` (a kernel crypto name) with an optional key. `Err(true)`:
    /// the algorithm needs a key and has none; `Err(false)`: unknown algorithm.
    pub fn new(alg: &str, key: Option<&[u8]>) -> Result<TagHash, IntegrityFormatError> {
        let k = || {
            key.map(|k| Zeroizing::new(k.to_vec()))
                .ok_or(IntegrityFormatError::NeedKey)
        };
        Ok(match alg {
            "crc32c" => TagHash::Crc32c,
            "sha1" => TagHash::Sha1,
            "sha256" => TagHash::Sha256,
            "sha512" => TagHash::Sha512,
            "hmac(sha1)" => TagHash::HmacSha1(k()?),
            "hmac(sha256)" => TagHash::HmacSha256(k()?),
            "hmac(sha512)" => TagHash::HmacSha512(k()?),
            _ => return Err(IntegrityFormatError::UnknownHash(alg.to_string())),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            TagHash::Crc32c => "crc32c",
            TagHash::Sha1 => "sha1",
            TagHash::Sha256 => "sha256",
            TagHash::Sha512 => "sha512",
            TagHash::HmacSha1(_) => "hmac(sha1)",
            TagHash::HmacSha256(_) => "hmac(sha256)",
            TagHash::HmacSha512(_) => "hmac(sha512)",
        }
    }

    pub fn digest_size(&self) -> usize {
        match self {
            TagHash::Crc32c => 4,
            TagHash::Sha1 | TagHash::HmacSha1(_) => 20,
            TagHash::Sha256 | TagHash::HmacSha256(_) => 32,
            TagHash::Sha512 | TagHash::HmacSha512(_) => 64,
        }
    }

    pub fn is_keyed(&self) -> bool {
        matches!(
            self,
            TagHash::HmacSha1(_) | TagHash::HmacSha256(_) | TagHash::HmacSha512(_)
        )
    }

    /// The digest of the concatenation of `parts`.
    pub fn digest(&self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: sha2::Digest>(mut d: D, parts: &[&[u8]]) -> Vec<u8> {
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("hmac key");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            TagHash::Crc32c => {
                let mut c = 0u32;
                for p in parts {
                    c = crc32c::crc32c_append(c, p);
                }
                c.to_le_bytes().to_vec()
            }
            TagHash::Sha1 => run(sha1::Sha1::new(), parts),
            TagHash::Sha256 => run(sha2::Sha256::new(), parts),
            TagHash::Sha512 => run(sha2::Sha512::new(), parts),
            TagHash::HmacSha1(k) => mac::<Hmac<sha1::Sha1>>(k, parts),
            TagHash::HmacSha256(k) => mac::<Hmac<sha2::Sha256>>(k, parts),
            TagHash::HmacSha512(k) => mac::<Hmac<sha2::Sha512>>(k, parts),
        }
    }

    /// The tags of consecutive blocks of `data` (`bb` bytes each) from logical `sector`,
    /// the next block `step` sectors on, `tag_into` for each, into `out` (`ts` bytes per
    /// block); crc32c runs several blocks side by side (`crcx`).
    #[allow(clippy::too_many_arguments)]
    pub fn tags_into(
        &self,
        salt: Option<&[u8; 16]>,
        sector: u64,
        step: u64,
        data: &[u8],
        bb: usize,
        out: &mut [u8],
        ts: usize,
    ) {
        if let TagHash::Crc32c = self {
            return super::crcx::crc32c_tags(salt, sector, step, data, bb, out, ts);
        }
        for (i, (blk, t)) in data.chunks(bb).zip(out.chunks_mut(ts)).enumerate() {
            self.tag_into(salt, sector + i as u64 * step, blk, t);
        }
    }

    /// The tag of one block at logical `sector` (the kernel's `integrity_sector_checksum`),
    /// written into `out` (the tag size): the digest cut, or zero-padded, to fit.
    pub fn tag_into(&self, salt: Option<&[u8; 16]>, sector: u64, block: &[u8], out: &mut [u8]) {
        if let TagHash::Crc32c = self {
            return super::crcx::crc32c_tag(salt, sector, block, out);
        }
        let s = sector.to_le_bytes();
        let d = match salt {
            Some(salt) => self.digest(&[salt, &s, block]),
            None => self.digest(&[&s, block]),
        };
        let n = out.len().min(d.len());
        out[..n].copy_from_slice(&d[..n]);
        out[n..].fill(0);
    }
}
