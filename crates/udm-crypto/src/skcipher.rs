//! Symmetric ciphers named as the kernel's crypto API names them (`ctr(aes)`, `chacha20`,
//! `cbc(aes)`, `xts(aes)`, `ecb(aes)`, with serpent and twofish too), one request at a time:
//! what dm-integrity's `journal_crypt` allocates. A request encrypts one buffer as a single
//! message with the given IV, as `crypto_skcipher_encrypt` does: CTR counts 128-bit
//! big-endian blocks, ChaCha20 takes the kernel's 16-byte IV (little-endian block counter,
//! then the 96-bit nonce), CBC chains the whole buffer, XTS treats it as one data unit.

use crate::cipher::{
    cbc_decrypt, cbc_encrypt, ecb, new_block_cipher, xts, Block, BlockCipher, CipherError,
};
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use zeroize::Zeroizing;

enum Kind {
    Ctr(Box<dyn BlockCipher>),
    ChaCha20(Zeroizing<[u8; 32]>),
    Cbc(Box<dyn BlockCipher>),
    Xts(Box<dyn BlockCipher>, Box<dyn BlockCipher>),
    Ecb(Box<dyn BlockCipher>),
}

/// A keyed skcipher.
pub struct SkCipher {
    kind: Kind,
}

/// `mode(cipher)` → (mode, cipher).
fn split(name: &str) -> Option<(&str, &str)> {
    let (m, rest) = name.split_once('(')?;
    let c = rest.strip_suffix(')')?;
    Some((m, c))
}

impl SkCipher {
    /// Whether `name` is an skcipher this module implements (`crypto_alloc_skcipher` would
    /// fail with ENOENT otherwise).
    pub fn supports(name: &str) -> bool {
        if name == "chacha20" {
            return true;
        }
        matches!(split(name), Some((m, c)) if matches!(m, "ctr" | "cbc" | "xts" | "ecb")
            && crate::cipher::key_sizes(c).is_some() && c != "cipher_null")
    }

    /// Key the cipher `name` with `key` (`setkey`'s EINVAL as [`CipherError::Key`]).
    pub fn new(name: &str, key: &[u8]) -> Result<SkCipher, CipherError> {
        if !Self::supports(name) {
            return Err(CipherError::Alloc);
        }
        let kind = if name == "chacha20" {
            let k: [u8; 32] = key.try_into().map_err(|_| CipherError::Key)?;
            Kind::ChaCha20(Zeroizing::new(k))
        } else {
            let (m, c) = split(name).ok_or(CipherError::Alloc)?;
            match m {
                "ctr" => Kind::Ctr(new_block_cipher(c, key)?),
                "cbc" => Kind::Cbc(new_block_cipher(c, key)?),
                "ecb" => Kind::Ecb(new_block_cipher(c, key)?),
                _ => {
                    if key.is_empty() || !key.len().is_multiple_of(2) {
                        return Err(CipherError::Key);
                    }
                    let (a, b) = key.split_at(key.len() / 2);
                    Kind::Xts(new_block_cipher(c, a)?, new_block_cipher(c, b)?)
                }
            }
        };
        Ok(SkCipher { kind })
    }

    /// `crypto_skcipher_blocksize`: 1 for the stream ciphers (CTR, ChaCha20), else 16.
    pub fn block_size(&self) -> usize {
        match self.kind {
            Kind::Ctr(_) | Kind::ChaCha20(_) => 1,
            _ => 16,
        }
    }

    /// `crypto_skcipher_ivsize`: 0 for ECB, else 16.
    pub fn iv_size(&self) -> usize {
        match self.kind {
            Kind::Ecb(_) => 0,
            _ => 16,
        }
    }

    /// Encrypt `buf` in place as one request with `iv` (`iv_size` bytes; a block mode needs
    /// a whole number of blocks).
    pub fn encrypt(&self, iv: &[u8], buf: &mut [u8]) {
        self.process(iv, buf, true)
    }

    /// Decrypt `buf` in place (see [`SkCipher::encrypt`]).
    pub fn decrypt(&self, iv: &[u8], buf: &mut [u8]) {
        self.process(iv, buf, false)
    }

    fn process(&self, iv: &[u8], buf: &mut [u8], enc: bool) {
        let iv16 = || -> [u8; 16] {
            let mut v = [0u8; 16];
            v.copy_from_slice(&iv[..16]);
            v
        };
        match &self.kind {
            Kind::Ctr(c) => ctr(c.as_ref(), &iv16(), buf),
            Kind::ChaCha20(k) => {
                let v = iv16();
                let counter = u32::from_le_bytes(v[..4].try_into().expect("4 bytes"));
                let mut s = chacha20::ChaCha20::new(k.as_ref().into(), v[4..].into());
                s.seek(counter as u64 * 64);
                s.apply_keystream(buf);
            }
            Kind::Cbc(c) if enc => cbc_encrypt(c.as_ref(), &iv16(), buf),
            Kind::Cbc(c) => cbc_decrypt(c.as_ref(), &iv16(), buf),
            Kind::Xts(d, t) => xts(d.as_ref(), t.as_ref(), &iv16(), buf, enc),
            Kind::Ecb(c) => ecb(c.as_ref(), buf, enc),
        }
    }
}

/// CTR mode: XOR with the encrypted 128-bit big-endian counter, which starts at `iv`.
fn ctr(c: &dyn BlockCipher, iv: &[u8; 16], buf: &mut [u8]) {
    const BATCH: usize = 32;
    let mut ctr = u128::from_be_bytes(*iv);
    let mut ks = [Block::default(); BATCH];
    for chunk in buf.chunks_mut(BATCH * 16) {
        let n = chunk.len().div_ceil(16);
        for k in ks[..n].iter_mut() {
            *k = Block::from(ctr.to_be_bytes());
            ctr = ctr.wrapping_add(1);
        }
        c.encrypt(&mut ks[..n]);
        for (i, b) in chunk.iter_mut().enumerate() {
            *b ^= ks[i / 16][i % 16];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    const NIST_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
    const NIST_PT: &str = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51";

    fn round_trip(name: &str, key: &[u8], iv: &[u8], pt: &[u8], ct: &[u8]) {
        let c = SkCipher::new(name, key).unwrap();
        let mut b = pt.to_vec();
        c.encrypt(iv, &mut b);
        assert_eq!(b, ct, "{name} encrypt");
        c.decrypt(iv, &mut b);
        assert_eq!(b, pt, "{name} decrypt");
    }

    #[test]
    fn ctr_aes128_sp800_38a_f51_with_counter_carry() {
        round_trip(
            "ctr(aes)",
            &h(NIST_KEY),
            &h("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"),
            &h(NIST_PT),
            &h("874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff"),
        );
    }

    #[test]
    fn cbc_aes128_sp800_38a_f21() {
        round_trip(
            "cbc(aes)",
            &h(NIST_KEY),
            &h("000102030405060708090a0b0c0d0e0f"),
            &h(NIST_PT),
            &h("7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2"),
        );
    }

    #[test]
    fn ecb_aes128_sp800_38a_f11() {
        round_trip(
            "ecb(aes)",
            &h(NIST_KEY),
            &[],
            &h(NIST_PT),
            &h("3ad77bb40d7a3660a89ecaf32466ef97 f5d3d58503b9699de785895a96fdbaaf"),
        );
    }

    #[test]
    fn xts_aes128_ieee1619_vector_2() {
        let mut iv = [0u8; 16];
        iv[..5].copy_from_slice(&[0x33; 5]);
        round_trip(
            "xts(aes)",
            &h(&format!("{}{}", "11".repeat(16), "22".repeat(16))),
            &iv,
            &[0x44; 32],
            &h("c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0"),
        );
    }

    #[test]
    fn chacha20_rfc7539_242_with_kernel_iv_layout() {
        let key: Vec<u8> = (0..32).collect();
        // Kernel IV: le32 block counter (1), then the nonce.
        let iv = h("01000000 000000000000004a00000000");
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let ct = h(
            "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b\
                    f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8\
                    07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736\
                    5af90bbf74a35be6b40b8eedf2785e42874d",
        );
        round_trip("chacha20", &key, &iv, pt, &ct);
    }

    #[test]
    fn names_sizes_and_key_errors() {
        assert!(SkCipher::supports("ctr(serpent)"));
        assert!(!SkCipher::supports("gcm(aes)"));
        assert!(!SkCipher::supports("salsa20"));
        assert!(!SkCipher::supports("ctr(cipher_null)"));
        assert!(matches!(
            SkCipher::new("ofb(aes)", &[0; 16]),
            Err(CipherError::Alloc)
        ));
        assert!(matches!(
            SkCipher::new("ctr(aes)", &[0; 15]),
            Err(CipherError::Key)
        ));
        assert!(matches!(
            SkCipher::new("chacha20", &[0; 16]),
            Err(CipherError::Key)
        ));
        let c = SkCipher::new("ctr(aes)", &[0; 32]).unwrap();
        assert_eq!((c.block_size(), c.iv_size()), (1, 16));
        let c = SkCipher::new("xts(aes)", &[0; 64]).unwrap();
        assert_eq!((c.block_size(), c.iv_size()), (16, 16));
        let c = SkCipher::new("ecb(twofish)", &[0; 16]).unwrap();
        assert_eq!((c.block_size(), c.iv_size()), (16, 0));
    }

    /// A CTR keystream split across requests continues when the caller advances the IV.
    #[test]
    fn ctr_stream_is_one_keystream() {
        let c = SkCipher::new("ctr(aes)", &[7; 16]).unwrap();
        let mut whole = vec![0u8; 1000];
        c.encrypt(&[0; 16], &mut whole);
        let mut tail = vec![0u8; 1000 - 512];
        let mut iv = [0u8; 16];
        iv[15] = 32;
        c.encrypt(&iv, &mut tail);
        assert_eq!(tail, whole[512..]);
    }
}
