//! Authenticated sector encryption as dm-crypt does it over integrity metadata (random IVs):
//! each sector is sealed with associated data `sector (le64) || IV`, and its tag and IV are
//! stored beside it. Ciphers: `gcm(aes)` (12-byte IV, 16-byte tag), `rfc7539(chacha20,poly1305)`
//! (12/16) and `authenc(hmac(sha256),xts(aes))` (16-byte IV, 32-byte HMAC; the key is the XTS
//! key followed by the HMAC key).

use crate::cipher::{new_block_cipher, CipherError};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

enum Kind {
    Gcm128(Box<aes_gcm::Aes128Gcm>),
    Gcm256(Box<aes_gcm::Aes256Gcm>),
    ChaCha(Box<chacha20poly1305::ChaCha20Poly1305>),
    AuthencXts {
        data: Box<dyn crate::cipher::BlockCipher>,
        tweak: Box<dyn crate::cipher::BlockCipher>,
        mac_key: Zeroizing<Vec<u8>>,
    },
}

/// A keyed AEAD for one crypt table line.
pub struct SectorAead {
    kind: Kind,
}

/// The authentication failed (the kernel's -EBADMSG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTag;

impl SectorAead {
    /// `api` is the crypto API name without the IV mode (`gcm(aes)`,
    /// `rfc7539(chacha20,poly1305)`, `authenc(hmac(sha256),xts(aes))`).
    pub fn new(api: &str, key: &[u8]) -> Result<SectorAead, CipherError> {
        let bad = || CipherError::Key;
        let kind = match api {
            "gcm(aes)" => match key.len() {
                16 => Kind::Gcm128(Box::new(
                    aes_gcm::Aes128Gcm::new_from_slice(key).map_err(|_| bad())?,
                )),
                32 => Kind::Gcm256(Box::new(
                    aes_gcm::Aes256Gcm::new_from_slice(key).map_err(|_| bad())?,
                )),
                _ => return Err(bad()),
            },
            "rfc7539(chacha20,poly1305)" => Kind::ChaCha(Box::new(
                chacha20poly1305::ChaCha20Poly1305::new_from_slice(key).map_err(|_| bad())?,
            )),
            "authenc(hmac(sha256),xts(aes))" => {
                if key.len() <= 32 {
                    return Err(bad());
                }
                let (enc, mac) = key.split_at(key.len() - 32);
                if enc.len() % 2 != 0 {
                    return Err(bad());
                }
                let (k1, k2) = enc.split_at(enc.len() / 2);
                Kind::AuthencXts {
                    data: new_block_cipher("aes", k1)?,
                    tweak: new_block_cipher("aes", k2)?,
                    mac_key: Zeroizing::new(mac.to_vec()),
                }
            }
            _ => return Err(CipherError::Alloc),
        };
        Ok(SectorAead { kind })
    }

    /// The names this module implements.
    pub fn supports(api: &str) -> bool {
        matches!(
            api,
            "gcm(aes)" | "rfc7539(chacha20,poly1305)" | "authenc(hmac(sha256),xts(aes))"
        )
    }

    pub fn iv_size(&self) -> usize {
        match self.kind {
            Kind::AuthencXts { .. } => 16,
            _ => 12,
        }
    }
    pub fn tag_size(&self) -> usize {
        match self.kind {
            Kind::AuthencXts { .. } => 32,
            _ => 16,
        }
    }

    fn hmac(&self, key: &[u8], aad: &[u8], ct: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("hmac key");
        m.update(aad);
        m.update(ct);
        m.finalize().into_bytes().to_vec()
    }

    /// Encrypt `buf` in place; returns the tag.
    pub fn seal(&self, sector: u64, iv: &[u8], buf: &mut [u8]) -> Vec<u8> {
        let mut aad = sector.to_le_bytes().to_vec();
        aad.extend_from_slice(iv);
        match &self.kind {
            Kind::Gcm128(c) => c
                .encrypt_in_place_detached(iv.into(), &aad, buf)
                .expect("gcm")
                .to_vec(),
            Kind::Gcm256(c) => c
                .encrypt_in_place_detached(iv.into(), &aad, buf)
                .expect("gcm")
                .to_vec(),
            Kind::ChaCha(c) => c
                .encrypt_in_place_detached(iv.into(), &aad, buf)
                .expect("chacha")
                .to_vec(),
            Kind::AuthencXts {
                data,
                tweak,
                mac_key,
            } => {
                let t: [u8; 16] = iv.try_into().expect("16-byte iv");
                crate::cipher::xts(data.as_ref(), tweak.as_ref(), &t, buf, true);
                self.hmac(mac_key, &aad, buf)
            }
        }
    }

    /// Check `tag` and decrypt `buf` in place.
    pub fn open(&self, sector: u64, iv: &[u8], buf: &mut [u8], tag: &[u8]) -> Result<(), BadTag> {
        let mut aad = sector.to_le_bytes().to_vec();
        aad.extend_from_slice(iv);
        match &self.kind {
            Kind::Gcm128(c) => c
                .decrypt_in_place_detached(iv.into(), &aad, buf, tag.into())
                .map_err(|_| BadTag),
            Kind::Gcm256(c) => c
                .decrypt_in_place_detached(iv.into(), &aad, buf, tag.into())
                .map_err(|_| BadTag),
            Kind::ChaCha(c) => c
                .decrypt_in_place_detached(iv.into(), &aad, buf, tag.into())
                .map_err(|_| BadTag),
            Kind::AuthencXts {
                data,
                tweak,
                mac_key,
            } => {
                if self.hmac(mac_key, &aad, buf)[..] != *tag {
                    return Err(BadTag);
                }
                let t: [u8; 16] = iv.try_into().expect("16-byte iv");
                crate::cipher::xts(data.as_ref(), tweak.as_ref(), &t, buf, false);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_aead_round_trips_and_rejects_a_flipped_bit() {
        for (api, klen) in [
            ("gcm(aes)", 32),
            ("gcm(aes)", 16),
            ("rfc7539(chacha20,poly1305)", 32),
            ("authenc(hmac(sha256),xts(aes))", 96),
        ] {
            let key: Vec<u8> = (0..klen as u8).collect();
            let a = SectorAead::new(api, &key).unwrap();
            let iv = vec![7u8; a.iv_size()];
            let plain: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
            let mut buf = plain.clone();
            let tag = a.seal(42, &iv, &mut buf);
            assert_eq!(tag.len(), a.tag_size());
            assert_ne!(buf, plain);
            let mut b2 = buf.clone();
            a.open(42, &iv, &mut b2, &tag).unwrap();
            assert_eq!(b2, plain, "{api}");
            let mut b3 = buf.clone();
            b3[100] ^= 1;
            assert_eq!(a.open(42, &iv, &mut b3, &tag), Err(BadTag), "{api}");
            let mut b4 = buf.clone();
            assert_eq!(a.open(43, &iv, &mut b4, &tag), Err(BadTag), "{api} sector");
        }
    }
}
