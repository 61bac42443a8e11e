//! Sector encryption as dm-crypt does it: a block cipher (AES, Serpent, Twofish, or the null
//! cipher), a chaining mode (XTS, CBC, ECB) and an IV generator (plain, plain64, plain64be,
//! essiv, benbi, null), applied sector by sector. XTS runs a batched loop over the cipher's
//! multi-block `encrypt_blocks`, which keeps AES-NI's pipeline full.

use crate::spec::{Chain, CipherSpec, IvMode};
use crate::xts_ni::{AesNiXts, UNITS};
use aes::cipher::generic_array::GenericArray;
use aes::cipher::typenum::U16;
use aes::cipher::{BlockDecrypt, BlockEncrypt, BlockSizeUser, KeyInit};
use sha2::Digest;
use zeroize::Zeroizing;

/// One 16-byte cipher block.
pub type Block = GenericArray<u8, U16>;

/// Why a cipher could not be set up, with the kernel's constructor message and errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The algorithm or mode is unknown (`crypto_alloc_skcipher` fails with ENOENT).
    #[error("Error allocating crypto tfm")]
    Alloc,
    /// The key does not fit the cipher (`setkey` fails with EINVAL).
    #[error("Error decoding and setting key")]
    Key,
    /// The IV generator cannot work with this cipher.
    #[error("Error creating IV")]
    Iv,
}

impl CipherError {
    /// The errno the kernel returns for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            CipherError::Alloc => libc::ENOENT,
            CipherError::Key | CipherError::Iv => libc::EINVAL,
        }
    }
}

/// A block cipher with a 16-byte block, behind one object-safe interface.
pub trait BlockCipher: Send + Sync {
    fn encrypt(&self, blocks: &mut [Block]);
    fn decrypt(&self, blocks: &mut [Block]);
}

impl<C> BlockCipher for C
where
    C: BlockEncrypt + BlockDecrypt + BlockSizeUser<BlockSize = U16> + Send + Sync,
{
    fn encrypt(&self, blocks: &mut [Block]) {
        self.encrypt_blocks(blocks)
    }
    fn decrypt(&self, blocks: &mut [Block]) {
        self.decrypt_blocks(blocks)
    }
}

/// `cipher_null`: the identity (key size 0), as the kernel's `ecb(cipher_null)`.
struct NullCipher;

impl BlockCipher for NullCipher {
    fn encrypt(&self, _blocks: &mut [Block]) {}
    fn decrypt(&self, _blocks: &mut [Block]) {}
}

/// Key sizes (bytes) a cipher accepts, by name; `None` for an unknown cipher.
pub fn key_sizes(cipher: &str) -> Option<&'static [usize]> {
    match cipher {
        "aes" | "twofish" => Some(&[16, 24, 32]),
        "serpent" => Some(&[16, 24, 32]),
        "cipher_null" => Some(&[0]),
        _ => None,
    }
}

/// A block cipher keyed with `key`.
pub fn new_block_cipher(cipher: &str, key: &[u8]) -> Result<Box<dyn BlockCipher>, CipherError> {
    let sizes = key_sizes(cipher).ok_or(CipherError::Alloc)?;
    if !sizes.contains(&key.len()) {
        return Err(CipherError::Key);
    }
    let c: Box<dyn BlockCipher> = match (cipher, key.len()) {
        ("cipher_null", _) => Box::new(NullCipher),
        ("aes", 16) => Box::new(aes::Aes128::new_from_slice(key).map_err(|_| CipherError::Key)?),
        ("aes", 24) => Box::new(aes::Aes192::new_from_slice(key).map_err(|_| CipherError::Key)?),
        ("aes", _) => Box::new(aes::Aes256::new_from_slice(key).map_err(|_| CipherError::Key)?),
        ("serpent", _) => {
            Box::new(serpent::Serpent::new_from_slice(key).map_err(|_| CipherError::Key)?)
        }
        ("twofish", _) => {
            Box::new(twofish::Twofish::new_from_slice(key).map_err(|_| CipherError::Key)?)
        }
        _ => return Err(CipherError::Alloc),
    };
    Ok(c)
}

/// Digest of `data` with a hash named as the kernel names it (for ESSIV and LUKS).
pub fn hash(name: &str, data: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let v = match name {
        "sha1" => sha1::Sha1::digest(data).to_vec(),
        "sha224" => sha2::Sha224::digest(data).to_vec(),
        "sha256" => sha2::Sha256::digest(data).to_vec(),
        "sha384" => sha2::Sha384::digest(data).to_vec(),
        "sha512" => sha2::Sha512::digest(data).to_vec(),
        "ripemd160" => ripemd::Ripemd160::digest(data).to_vec(),
        _ => return None,
    };
    Some(Zeroizing::new(v))
}

/// The chaining mode with its keyed cipher(s).
enum Mode {
    Xts {
        data: Box<dyn BlockCipher>,
        tweak: Box<dyn BlockCipher>,
        /// The AES-NI path, when the cipher is AES and the CPU has it.
        ni: Option<Box<AesNiXts>>,
    },
    Cbc(Box<dyn BlockCipher>),
    Ecb(Box<dyn BlockCipher>),
}

/// One keyed transform (the kernel allocates `keycount` of them; sectors pick one by number).
struct Tfm {
    mode: Mode,
    /// ESSIV: the IV is encrypted with a cipher keyed by the hash of this transform's key.
    essiv: Option<Box<dyn BlockCipher>>,
}

/// Blocks handled per batch in the XTS loop (one 512-byte sector).
const BATCH: usize = 32;

/// Multiply an XTS tweak by the primitive element α of GF(2^128) (little-endian convention).
#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127) * 0x87)
}

#[inline(always)]
fn load(b: &[u8]) -> u128 {
    u128::from_le_bytes(b.try_into().expect("16-byte block"))
}

/// XTS over one data unit (a crypt sector) in place.
pub(crate) fn xts(
    data: &dyn BlockCipher,
    tweak: &dyn BlockCipher,
    iv: &[u8; 16],
    buf: &mut [u8],
    enc: bool,
) {
    let mut t0 = Block::clone_from_slice(iv);
    tweak.encrypt(std::slice::from_mut(&mut t0));
    let mut t = load(&t0);
    let mut blocks = [Block::default(); BATCH];
    let mut tw = [0u128; BATCH];
    for chunk in buf.chunks_mut(BATCH * 16) {
        let n = chunk.len() / 16;
        for i in 0..n {
            tw[i] = t;
            let p = load(&chunk[i * 16..i * 16 + 16]) ^ t;
            blocks[i] = Block::from(p.to_le_bytes());
            t = mul_alpha(t);
        }
        if enc {
            data.encrypt(&mut blocks[..n]);
        } else {
            data.decrypt(&mut blocks[..n]);
        }
        for i in 0..n {
            let c = load(&blocks[i]) ^ tw[i];
            chunk[i * 16..i * 16 + 16].copy_from_slice(&c.to_le_bytes());
        }
    }
}

pub(crate) fn cbc_encrypt(c: &dyn BlockCipher, iv: &[u8; 16], buf: &mut [u8]) {
    let mut prev = load(iv);
    for chunk in buf.chunks_mut(16) {
        let mut b = Block::from((load(chunk) ^ prev).to_le_bytes());
        c.encrypt(std::slice::from_mut(&mut b));
        chunk.copy_from_slice(&b);
        prev = load(&b);
    }
}

pub(crate) fn cbc_decrypt(c: &dyn BlockCipher, iv: &[u8; 16], buf: &mut [u8]) {
    let mut prev = load(iv);
    let mut blocks = [Block::default(); BATCH];
    for chunk in buf.chunks_mut(BATCH * 16) {
        let n = chunk.len() / 16;
        for (i, b) in blocks[..n].iter_mut().enumerate() {
            b.copy_from_slice(&chunk[i * 16..i * 16 + 16]);
        }
        c.decrypt(&mut blocks[..n]);
        for i in 0..n {
            let ct = load(&chunk[i * 16..i * 16 + 16]);
            let p = load(&blocks[i]) ^ prev;
            chunk[i * 16..i * 16 + 16].copy_from_slice(&p.to_le_bytes());
            prev = ct;
        }
    }
}

pub(crate) fn ecb(c: &dyn BlockCipher, buf: &mut [u8], enc: bool) {
    let mut blocks = [Block::default(); BATCH];
    for chunk in buf.chunks_mut(BATCH * 16) {
        let n = chunk.len() / 16;
        for (i, b) in blocks[..n].iter_mut().enumerate() {
            b.copy_from_slice(&chunk[i * 16..i * 16 + 16]);
        }
        if enc {
            c.encrypt(&mut blocks[..n]);
        } else {
            c.decrypt(&mut blocks[..n]);
        }
        for (i, b) in blocks[..n].iter().enumerate() {
            chunk[i * 16..i * 16 + 16].copy_from_slice(b);
        }
    }
}

/// A keyed sector cipher: what one dm-crypt table line encrypts with.
pub struct SectorCipher {
    tfms: Vec<Tfm>,
    iv: Option<IvMode>,
    /// Crypt sector size in bytes (512..4096).
    sector_size: usize,
    /// Shift applied to the 512-byte sector number to get the IV sector (`iv_large_sectors`).
    iv_shift: u32,
}

impl SectorCipher {
    /// Key `spec` with `key` (all key parts, as in the table), for `sector_size`-byte crypt
    /// sectors; `iv_large_sectors` counts IVs in crypt sectors instead of 512-byte sectors.
    pub fn new(
        spec: &CipherSpec,
        key: &[u8],
        sector_size: u32,
        iv_large_sectors: bool,
    ) -> Result<SectorCipher, CipherError> {
        let count = spec.keycount as usize;
        if count == 0 || !key.len().is_multiple_of(count) {
            return Err(CipherError::Key);
        }
        let sub = key.len() / count;
        let mut tfms = Vec::with_capacity(count);
        for i in 0..count {
            let part = &key[i * sub..(i + 1) * sub];
            let mode = match spec.chain {
                Chain::Xts => {
                    if !part.len().is_multiple_of(2) || part.is_empty() {
                        return Err(CipherError::Key);
                    }
                    let (a, b) = part.split_at(part.len() / 2);
                    Mode::Xts {
                        data: new_block_cipher(&spec.cipher, a)?,
                        tweak: new_block_cipher(&spec.cipher, b)?,
                        ni: (spec.cipher == "aes")
                            .then(|| AesNiXts::new(a, b).map(Box::new))
                            .flatten(),
                    }
                }
                Chain::Cbc => Mode::Cbc(new_block_cipher(&spec.cipher, part)?),
                Chain::Ecb => Mode::Ecb(new_block_cipher(&spec.cipher, part)?),
            };
            let essiv = match &spec.iv {
                Some(IvMode::Essiv(h)) if spec.chain != Chain::Ecb => {
                    let salt = hash(h, part).ok_or(CipherError::Alloc)?;
                    Some(new_block_cipher(&spec.cipher, &salt)?)
                }
                _ => None,
            };
            tfms.push(Tfm { mode, essiv });
        }
        let iv = match (&spec.chain, &spec.iv) {
            // ECB takes no IV: the kernel warns and ignores any IV mode.
            (Chain::Ecb, _) => None,
            (_, iv) => iv.clone(),
        };
        if spec.chain != Chain::Ecb && iv.is_none() {
            return Err(CipherError::Iv);
        }
        if matches!(iv, Some(IvMode::Random)) {
            return Err(CipherError::Iv);
        }
        if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(CipherError::Iv);
        }
        let iv_shift = if iv_large_sectors {
            sector_size.trailing_zeros() - 9
        } else {
            0
        };
        Ok(SectorCipher {
            tfms,
            iv,
            sector_size: sector_size as usize,
            iv_shift,
        })
    }

    /// Crypt sector size in bytes.
    pub fn sector_size(&self) -> usize {
        self.sector_size
    }

    /// The IV for a sector (before ESSIV encryption), 16 bytes.
    fn iv(&self, tfm: &Tfm, iv_sector: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        match &self.iv {
            None | Some(IvMode::Null) | Some(IvMode::Random) => {}
            Some(IvMode::Plain) => iv[..4].copy_from_slice(&(iv_sector as u32).to_le_bytes()),
            Some(IvMode::Plain64) => iv[..8].copy_from_slice(&iv_sector.to_le_bytes()),
            Some(IvMode::Plain64Be) => iv[8..].copy_from_slice(&iv_sector.to_be_bytes()),
            Some(IvMode::Benbi) => {
                // Big-endian count of 16-byte blocks, starting at 1.
                let v = (iv_sector << 5).wrapping_add(1);
                iv[8..].copy_from_slice(&v.to_be_bytes());
            }
            Some(IvMode::Essiv(_)) => {
                iv[..8].copy_from_slice(&iv_sector.to_le_bytes());
                if let Some(e) = &tfm.essiv {
                    let mut b = Block::from(iv);
                    e.encrypt(std::slice::from_mut(&mut b));
                    iv.copy_from_slice(&b);
                }
            }
        }
        iv
    }

    /// Encrypt (`enc`) or decrypt `buf` in place. `sector` is the 512-byte sector number of
    /// its first byte as dm-crypt counts it (target offset + iv_offset); `buf` is a whole
    /// number of crypt sectors.
    pub fn process(&self, buf: &mut [u8], sector: u64, enc: bool) {
        debug_assert_eq!(buf.len() % self.sector_size, 0);
        if let Some(x) = self.one_ni() {
            return self.batched(x, None, buf, sector, enc);
        }
        let step = (self.sector_size / 512) as u64;
        let mut s = sector;
        for unit in buf.chunks_mut(self.sector_size) {
            self.unit(unit, s, enc);
            s = s.wrapping_add(step);
        }
    }

    /// Encrypt `src` into `dst` (same length), leaving `src` alone: each crypt sector is
    /// copied and encrypted while it is in cache, instead of a copy pass over the whole
    /// buffer and then an encryption pass. `sector` as in `process`.
    pub fn encrypt_into(&self, src: &[u8], dst: &mut [u8], sector: u64) {
        self.process_into(src, dst, sector, true)
    }

    /// Decrypt `src` into `dst` (same length), as `encrypt_into` (crypt reads decrypt
    /// straight from the page cache this way).
    pub fn decrypt_into(&self, src: &[u8], dst: &mut [u8], sector: u64) {
        self.process_into(src, dst, sector, false)
    }

    fn process_into(&self, src: &[u8], dst: &mut [u8], sector: u64, enc: bool) {
        assert_eq!(src.len(), dst.len(), "process_into: lengths differ");
        debug_assert_eq!(src.len() % self.sector_size, 0);
        if let Some(x) = self.one_ni() {
            return self.batched(x, Some(src), dst, sector, enc);
        }
        let step = (self.sector_size / 512) as u64;
        let mut s = sector;
        let units = src.chunks(self.sector_size);
        for (unit, from) in dst.chunks_mut(self.sector_size).zip(units) {
            self.unit_from(Some(from), unit, s, enc);
            s = s.wrapping_add(step);
        }
    }

    /// The AES-NI XTS transform when every sector uses it (one key): sectors then go
    /// through it in batches (`batched`).
    fn one_ni(&self) -> Option<&AesNiXts> {
        match &self.tfms[..] {
            [Tfm {
                mode: Mode::Xts { ni: Some(x), .. },
                ..
            }] => Some(x),
            _ => None,
        }
    }

    /// `process`/`process_into` through AES-NI XTS `x`, `UNITS` crypt sectors at a time
    /// (their first tweaks computed together).
    fn batched(&self, x: &AesNiXts, src: Option<&[u8]>, dst: &mut [u8], sector: u64, enc: bool) {
        let step = (self.sector_size / 512) as u64;
        let per = UNITS * self.sector_size;
        let mut ivs = [[0u8; 16]; UNITS];
        let mut s = sector;
        for (c, d) in dst.chunks_mut(per).enumerate() {
            let n = d.len() / self.sector_size;
            for iv in &mut ivs[..n] {
                *iv = self.iv(&self.tfms[0], s >> self.iv_shift);
                s = s.wrapping_add(step);
            }
            let from = src.map(|src| &src[c * per..c * per + d.len()]);
            x.process_units(&ivs[..n], from, d, enc);
        }
    }

    /// En/decrypt one crypt sector (`unit`, at 512-byte sector `s`) in place.
    #[inline]
    fn unit(&self, unit: &mut [u8], s: u64, enc: bool) {
        self.unit_from(None, unit, s, enc)
    }

    /// As `unit`, from `src` (as long as `unit`) when given: AES-NI XTS reads it directly,
    /// the others copy it into `unit` first.
    #[inline]
    fn unit_from(&self, src: Option<&[u8]>, unit: &mut [u8], s: u64, enc: bool) {
        let mask = self.tfms.len() as u64 - 1;
        let tfm = &self.tfms[(s & mask) as usize];
        let iv = self.iv(tfm, s >> self.iv_shift);
        if let (Mode::Xts { ni: Some(x), .. }, Some(src)) = (&tfm.mode, src) {
            return x.process_into(&iv, src, unit, enc);
        }
        if let Some(src) = src {
            unit.copy_from_slice(src);
        }
        match &tfm.mode {
            Mode::Xts { ni: Some(x), .. } => x.process(&iv, unit, enc),
            Mode::Xts { data, tweak, .. } => xts(data.as_ref(), tweak.as_ref(), &iv, unit, enc),
            Mode::Cbc(c) if enc => cbc_encrypt(c.as_ref(), &iv, unit),
            Mode::Cbc(c) => cbc_decrypt(c.as_ref(), &iv, unit),
            Mode::Ecb(c) => ecb(c.as_ref(), unit, enc),
        }
    }

    /// Encrypt `buf` in place (see `process`).
    pub fn encrypt(&self, buf: &mut [u8], sector: u64) {
        self.process(buf, sector, true)
    }
    /// Decrypt `buf` in place (see `process`).
    pub fn decrypt(&self, buf: &mut [u8], sector: u64) {
        self.process(buf, sector, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn xts_aes128_ieee1619_vector_2() {
        // IEEE P1619 XTS-AES-128 vector 2: key1 = 11…, key2 = 22…, data unit 0x3333333333,
        // plaintext 44… (32 bytes).
        let spec: CipherSpec = "aes-xts-plain64".parse().unwrap();
        let key = unhex(&format!("{}{}", "11".repeat(16), "22".repeat(16)));
        let c = SectorCipher::new(&spec, &key, 512, false).unwrap();
        let mut buf = vec![0x44u8; 512];
        c.encrypt(&mut buf, 0x3333333333);
        assert_eq!(
            &buf[..32],
            &unhex("c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0")[..]
        );
        c.decrypt(&mut buf, 0x3333333333);
        assert!(buf.iter().all(|&b| b == 0x44));
    }

    #[test]
    fn aes_ni_and_portable_xts_agree() {
        for klen in [32usize, 48, 64] {
            let key: Vec<u8> = (0..klen as u8).map(|i| i.wrapping_mul(91) ^ 0x3c).collect();
            let (a, b) = key.split_at(klen / 2);
            let Some(ni) = AesNiXts::new(a, b) else {
                return;
            };
            let (ca, cb) = (
                new_block_cipher("aes", a).unwrap(),
                new_block_cipher("aes", b).unwrap(),
            );
            for len in [16usize, 112, 128, 144, 272, 512, 4096, 4144] {
                let iv: [u8; 16] = std::array::from_fn(|i| (i * 13 + len) as u8);
                let plain: Vec<u8> = (0..len).map(|i| (i * 31 + klen) as u8).collect();
                let (mut x, mut y) = (plain.clone(), plain.clone());
                ni.process(&iv, &mut x, true);
                xts(ca.as_ref(), cb.as_ref(), &iv, &mut y, true);
                assert_eq!(x, y, "encrypt key {klen} len {len}");
                ni.process(&iv, &mut x, false);
                xts(ca.as_ref(), cb.as_ref(), &iv, &mut y, false);
                assert_eq!((&x, &y), (&plain, &plain), "decrypt key {klen} len {len}");
            }
        }
    }

    #[test]
    fn batched_sectors_equal_the_portable_xts_sector_by_sector() {
        // Runs of sectors go through AES-NI in batches of `UNITS` (first tweaks together):
        // every sector must still equal the portable XTS of that sector alone, across batch
        // edges, for both IV modes, both sector sizes, in place and from a source.
        let key: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(29) ^ 0xa5).collect();
        let (a, b) = key.split_at(32);
        let (ca, cb) = (
            new_block_cipher("aes", a).unwrap(),
            new_block_cipher("aes", b).unwrap(),
        );
        for (spec, ss, large) in [
            ("aes-xts-plain64", 512u32, false),
            ("aes-xts-plain", 512, false),
            ("aes-xts-plain64", 4096, false),
            ("aes-xts-plain64", 4096, true),
        ] {
            let c = SectorCipher::new(&spec.parse().unwrap(), &key, ss, large).unwrap();
            let step = ss as u64 / 512;
            for units in [1usize, 2, 15, 16, 17, 37] {
                let first = 0xffff_fff0u64; // crosses 2^32: plain's IV wraps there
                let plain: Vec<u8> = (0..units * ss as usize)
                    .map(|i| (i * 13 + units) as u8)
                    .collect();
                let mut want = plain.clone();
                for (k, u) in want.chunks_mut(ss as usize).enumerate() {
                    let s = first + k as u64 * step;
                    let n = if large { s / step } else { s };
                    let mut iv = [0u8; 16];
                    if spec.ends_with("plain") {
                        iv[..4].copy_from_slice(&(n as u32).to_le_bytes());
                    } else {
                        iv[..8].copy_from_slice(&n.to_le_bytes());
                    }
                    xts(ca.as_ref(), cb.as_ref(), &iv, u, true);
                }
                let mut got = plain.clone();
                c.encrypt(&mut got, first);
                assert_eq!(got, want, "{spec} {ss} large={large} units {units}");
                let mut into = vec![0u8; plain.len()];
                c.encrypt_into(&plain, &mut into, first);
                assert_eq!(into, want, "{spec} {ss} into, units {units}");
                c.decrypt_into(&want, &mut into, first);
                assert_eq!(into, plain, "{spec} {ss} decrypt into, units {units}");
                c.decrypt(&mut got, first);
                assert_eq!(got, plain, "{spec} {ss} decrypt, units {units}");
            }
        }
    }

    #[test]
    fn encrypt_into_equals_encrypt_in_place() {
        let key = (0u8..64).collect::<Vec<_>>();
        for (spec, klen, ss) in [
            ("aes-xts-plain64", 64, 512u32),
            ("aes-xts-plain64", 32, 4096),
            ("aes:2-cbc-essiv:sha256", 64, 512),
            ("serpent-xts-plain64", 64, 1024),
        ] {
            let s: CipherSpec = spec.parse().unwrap();
            let c = SectorCipher::new(&s, &key[..klen], ss, false).unwrap();
            let plain: Vec<u8> = (0..16384u32).map(|i| (i * 11 + 3) as u8).collect();
            let mut want = plain.clone();
            c.encrypt(&mut want, 1001);
            let mut got = vec![0xeeu8; plain.len()];
            c.encrypt_into(&plain, &mut got, 1001);
            assert_ne!(want, plain, "{spec}");
            assert_eq!(got, want, "{spec} sector size {ss}");
        }
    }

    #[test]
    fn every_mode_round_trips() {
        let key = (0u8..64).collect::<Vec<_>>();
        for (spec, klen) in [
            ("aes-xts-plain64", 64),
            ("aes-xts-plain", 32),
            ("aes-cbc-essiv:sha256", 32),
            ("aes-cbc-plain64be", 24),
            ("aes-cbc-benbi", 16),
            ("aes-cbc-null", 16),
            ("aes-ecb", 32),
            ("serpent-xts-plain64", 64),
            ("twofish-cbc-plain64", 32),
            ("aes:2-cbc-plain64", 64),
        ] {
            let s: CipherSpec = spec.parse().unwrap();
            let c = SectorCipher::new(&s, &key[..klen], 512, false).unwrap();
            let plain: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
            let mut b = plain.clone();
            c.encrypt(&mut b, 77);
            assert_ne!(b, plain, "{spec}");
            c.decrypt(&mut b, 77);
            assert_eq!(b, plain, "{spec}");
        }
    }
}
