//! A LUKS volume's header read from a device or image, and keyslot unlocking: KDF → keyslot
//! area decryption (the data's sector cipher, from `udm-crypto`) → AF merge → digest check.
//! Errors carry cryptsetup's messages and errnos; the caller prints them.

use super::kdf::{self, Kdf};
use super::{af, luks1, luks2, LuksError, Zeroizing};
use udm_crypto::{CipherSpec, SectorCipher};

/// Bytes read for header parsing: the largest primary plus secondary copy.
const HDR_READ: u64 = 8 << 20;

/// What keyslot code reads from: a device or an image file.
pub trait ReadAt {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from byte offset `off`.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

/// Told about each key derivation (which may take seconds): a terminal tool shows progress.
/// The guard `begin` returns is dropped when the derivation ends.
pub trait KdfWatch {
    fn begin(&self, kdf: &Kdf) -> Box<dyn std::any::Any>;
}

/// No progress reports.
impl KdfWatch for () {
    fn begin(&self, _kdf: &Kdf) -> Box<dyn std::any::Any> {
        Box::new(())
    }
}

/// `kdf::derive` reported to `w`.
pub fn derive(
    w: &dyn KdfWatch,
    k: &Kdf,
    pass: &[u8],
    salt: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let _guard = w.begin(k);
    kdf::derive(k, pass, salt, len)
}

/// Why a keyslot operation failed, in cryptsetup's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyslotError {
    #[error("{0}")]
    Luks(#[from] LuksError),
    #[error("No usable keyslot is available.")]
    NoUsableKeyslot,
    /// No keyslot opened; `last` is the last error other than a wrong passphrase.
    #[error("No key available with this passphrase.")]
    WrongPassphrase { last: Option<LuksError> },
    #[error("Cipher {cipher} is not available: {why}.")]
    CipherSpec { cipher: String, why: String },
    #[error("Cipher {cipher} (key size {bits} bits) is not available.")]
    CipherKey { cipher: String, bits: usize },
    #[error("Cipher {0} is not available.")]
    Cipher(String),
    #[error("Hash algorithm {0} not supported.")]
    Hash(String),
    #[error("LUKS1 keyslots use PBKDF2 only.")]
    Luks1Pbkdf2Only,
    #[error("Requested PBKDF type {pbkdf} is not supported for {version}.")]
    Pbkdf {
        pbkdf: String,
        version: &'static str,
    },
    #[error("All key slots full.")]
    SlotsFull,
    #[error("Key slot {slot} is invalid, please select between 0 and {max}.")]
    SlotInvalid { slot: u32, max: u32 },
    #[error("Key slot {0} is full, please select another one.")]
    SlotInUse(u32),
    #[error("No space for new keyslot.")]
    NoSpace,
    #[error("Device {path} is too small. (LUKS{version} requires at least {need} bytes.)")]
    TooSmall {
        path: String,
        version: u32,
        need: u64,
    },
    #[error("Unknown or unsupported device type {0} requested.")]
    Type(String),
    #[error("Key size must be a multiple of 8 bits")]
    KeySize,
    #[error("Unsupported encryption sector size.")]
    SectorSize,
    #[error("Wrong LUKS UUID format provided.")]
    Uuid,
}

impl KeyslotError {
    /// The errno libcryptsetup returns for this error.
    pub fn errno(&self) -> i32 {
        match self {
            KeyslotError::Luks(e) => e.errno(),
            KeyslotError::NoUsableKeyslot => libc::ENOENT,
            KeyslotError::WrongPassphrase { .. } => libc::EPERM,
            KeyslotError::NoSpace => libc::ENOSPC,
            _ => libc::EINVAL,
        }
    }
}

/// A parsed header of either version.
pub enum Header {
    L1(Box<luks1::Header>),
    L2(Box<luks2::Metadata>),
}

impl Header {
    pub fn uuid(&self) -> &str {
        match self {
            Header::L1(h) => &h.uuid,
            Header::L2(m) => &m.bin.uuid,
        }
    }
    pub fn version(&self) -> u32 {
        match self {
            Header::L1(_) => 1,
            Header::L2(_) => 2,
        }
    }

    /// Read and check the header (a damaged primary may still have a good LUKS2 secondary).
    pub fn load(dev: &dyn ReadAt) -> Result<Header, LuksError> {
        let mut b = vec![0u8; dev.size().min(HDR_READ) as usize];
        dev.read_at(0, &mut b).map_err(|_| LuksError::NotLuks)?;
        match super::version(&b) {
            Ok(1) => Ok(Header::L1(Box::new(luks1::Header::parse(
                &b,
                Some(dev.size() / 512),
            )?))),
            Ok(2) | Err(LuksError::NotLuks) => {
                let (m, _) = luks2::Metadata::read(&b)?;
                Ok(Header::L2(Box::new(m)))
            }
            Ok(v) => Err(LuksError::Version(v)),
            Err(e) => Err(e),
        }
    }

    /// Bytes of the header and keyslot areas (everything before the data).
    pub fn header_area(&self) -> u64 {
        match self {
            Header::L1(h) => h.payload_offset as u64 * 512,
            Header::L2(m) => m
                .segment()
                .map(|s| s.offset)
                .unwrap_or(2 * m.bin.hdr_size + m.keyslots_size),
        }
    }

    /// Bytes cryptsetup puts in a header backup: LUKS1 up to the end of the last keyslot
    /// area (4 KiB rounded), LUKS2 both header copies and the keyslots area.
    pub fn backup_size(&self) -> u64 {
        match self {
            Header::L1(h) => {
                let end = h
                    .slots
                    .iter()
                    .map(|s| {
                        s.offset as u64 + af::area_bytes(h.key_bytes as usize, s.stripes) / 512
                    })
                    .fold(8, u64::max);
                (end * 512).div_ceil(4096) * 4096
            }
            Header::L2(m) => 2 * m.bin.hdr_size + m.keyslots_size,
        }
    }

    /// Find the keyslot `pass` opens (only `slot` if given): (slot, volume key).
    pub fn unlock(
        &self,
        dev: &dyn ReadAt,
        pass: &[u8],
        slot: Option<u32>,
        w: &dyn KdfWatch,
    ) -> Result<(u32, Zeroizing<Vec<u8>>), KeyslotError> {
        let mut last = None;
        let mut tried = 0;
        match self {
            Header::L1(h) => {
                for i in 0..luks1::SLOTS {
                    if !h.slots[i].active || slot.is_some_and(|s| s as usize != i) {
                        continue;
                    }
                    tried += 1;
                    match try_slot1(dev, h, i, pass, w) {
                        Ok(Some(vk)) => return Ok((i as u32, vk)),
                        Ok(None) => {}
                        Err(e) => last = Some(e),
                    }
                }
            }
            Header::L2(m) => {
                let mut order: Vec<&luks2::Keyslot> = m
                    .keyslots
                    .iter()
                    .filter(|k| slot.map_or(k.priority != Some(0), |s| s == k.id))
                    .collect();
                order.sort_by_key(|k| std::cmp::Reverse(k.priority.unwrap_or(1)));
                for ks in order {
                    tried += 1;
                    match try_slot2(dev, m, ks, pass, w) {
                        Ok(Some(vk)) => return Ok((ks.id, vk)),
                        Ok(None) => {}
                        Err(e) => last = Some(e),
                    }
                }
            }
        }
        if tried == 0 {
            return Err(KeyslotError::NoUsableKeyslot);
        }
        Err(KeyslotError::WrongPassphrase { last })
    }
}

/// A sector cipher (512-byte sectors from 0) for a keyslot area.
pub(crate) fn area_cipher(cipher: &str, key: &[u8]) -> Result<SectorCipher, KeyslotError> {
    let spec: CipherSpec = cipher.parse().map_err(|e| KeyslotError::CipherSpec {
        cipher: cipher.into(),
        why: format!("{e}"),
    })?;
    SectorCipher::new(&spec, key, 512, false).map_err(|_| KeyslotError::CipherKey {
        cipher: cipher.into(),
        bits: key.len() * 8,
    })
}

/// Decrypt a keyslot area (`len` bytes at `off`) with `cipher` keyed by `key`.
fn read_area(
    dev: &dyn ReadAt,
    cipher: &str,
    key: &[u8],
    off: u64,
    len: u64,
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let spec: CipherSpec = cipher
        .parse()
        .map_err(|_| LuksError::Unsupported(format!("cipher {cipher}")))?;
    let c = SectorCipher::new(&spec, key, 512, false)
        .map_err(|e| LuksError::Unsupported(format!("cipher {cipher}: {e}")))?;
    if off.checked_add(len).is_none_or(|end| end > dev.size()) {
        return Err(LuksError::Corrupt(
            "keyslot area beyond the device end".into(),
        ));
    }
    let mut b = Zeroizing::new(vec![0u8; len as usize]);
    dev.read_at(off, &mut b)
        .map_err(|e| LuksError::Invalid(format!("cannot read the keyslot area: {e}")))?;
    c.decrypt(&mut b, 0);
    Ok(b)
}

/// Try one LUKS1 keyslot.
fn try_slot1(
    dev: &dyn ReadAt,
    h: &luks1::Header,
    i: usize,
    pass: &[u8],
    w: &dyn KdfWatch,
) -> Result<Option<Zeroizing<Vec<u8>>>, LuksError> {
    let s = &h.slots[i];
    let k = Kdf::Pbkdf2 {
        hash: h.hash.clone(),
        iterations: s.iterations,
    };
    let key = derive(w, &k, pass, &s.salt, h.key_bytes as usize)?;
    let len = af::area_bytes(h.key_bytes as usize, s.stripes);
    let area = read_area(dev, &h.cipher_spec(), &key, s.offset as u64 * 512, len)?;
    let n = h.key_bytes as usize * s.stripes as usize;
    let vk = af::merge(&area[..n], h.key_bytes as usize, s.stripes, &h.hash)?;
    Ok(h.verify_key(&vk)?.then_some(vk))
}

/// Check a candidate LUKS2 volume key against a digest.
pub fn digest_ok(d: &luks2::DigestEntry, vk: &[u8]) -> Result<bool, LuksError> {
    let k = Kdf::Pbkdf2 {
        hash: d.hash.clone(),
        iterations: d.iterations,
    };
    Ok(kdf::derive(&k, vk, &d.salt, d.digest.len())?[..] == d.digest[..])
}

/// Try one LUKS2 keyslot.
fn try_slot2(
    dev: &dyn ReadAt,
    m: &luks2::Metadata,
    ks: &luks2::Keyslot,
    pass: &[u8],
    w: &dyn KdfWatch,
) -> Result<Option<Zeroizing<Vec<u8>>>, LuksError> {
    let Some(d) = m.digest_for_keyslot(ks.id) else {
        return Ok(None);
    };
    let key = derive(w, &ks.kdf, pass, &ks.salt, ks.area_key_size)?;
    let len = af::area_bytes(ks.key_size, ks.af_stripes);
    let area = read_area(dev, &ks.area_encryption, &key, ks.area_offset, len)?;
    let n = ks.key_size * ks.af_stripes as usize;
    let vk = af::merge(&area[..n], ks.key_size, ks.af_stripes, &ks.af_hash)?;
    Ok(digest_ok(d, &vk)?.then_some(vk))
}
