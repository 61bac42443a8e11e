//! Making keyslots and headers: key-derivation settings as cryptsetup 2.6 picks them, sealing
//! a volume key into an encrypted AF keyslot area, and `luksFormat`'s LUKS1/LUKS2 layouts.
//! Everything is built in memory and returned as writes; the caller does the I/O.

use super::kdf::{self, Kdf};
use super::volume::{self, area_cipher, KdfWatch, KeyslotError};
use super::{af, luks1, luks2, Zeroizing};

/// AF stripes of new keyslots.
pub const STRIPES: u32 = 4000;
/// LUKS2 header copy size and data offset, cryptsetup's defaults.
const L2_HDR: u64 = 16384;
const L2_DATA: u64 = 16 << 20;

/// Disk writes of one command, in order: (byte offset, bytes).
pub type Writes = Vec<(u64, Zeroizing<Vec<u8>>)>;

/// Key-derivation options (`--hash`, `--pbkdf`, `--iter-time`, `--pbkdf-force-iterations`,
/// `--pbkdf-memory`, `--pbkdf-parallel`); `None` takes cryptsetup's default.
#[derive(Debug, Clone, Default)]
pub struct KdfParams {
    pub hash: Option<String>,
    pub pbkdf: Option<String>,
    pub iter_time_ms: Option<u64>,
    pub force_iterations: Option<u32>,
    pub memory_kib: Option<u32>,
    pub parallel: Option<u32>,
}

impl KdfParams {
    /// The keyslot KDF (`v1`: LUKS1, which allows only PBKDF2), benchmarked for the
    /// iteration time unless the iterations are forced.
    pub fn keyslot_kdf(&self, v1: bool, key_len: usize) -> Result<Kdf, KeyslotError> {
        let hash = self.hash.clone().unwrap_or("sha256".into());
        let name = self
            .pbkdf
            .clone()
            .unwrap_or(if v1 { "pbkdf2" } else { "argon2id" }.into());
        let ms = self.iter_time_ms.unwrap_or(2000);
        match name.as_str() {
            "pbkdf2" => {
                let iterations = match self.force_iterations {
                    Some(n) => n,
                    None => {
                        let speed = kdf::pbkdf2_speed(&hash, key_len)?;
                        (speed * ms / 1000).clamp(1000, u32::MAX as u64) as u32
                    }
                };
                Ok(Kdf::Pbkdf2 { hash, iterations })
            }
            "argon2i" | "argon2id" if !v1 => {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
                Ok(Kdf::Argon2 {
                    id: name == "argon2id",
                    time: self.force_iterations.unwrap_or(4).max(1),
                    memory: self.memory_kib.unwrap_or(1 << 20).max(32),
                    cpus: self.parallel.unwrap_or(4).min(cpus.max(1)).max(1),
                })
            }
            _ => Err(KeyslotError::Pbkdf {
                pbkdf: name,
                version: if v1 { "LUKS1" } else { "LUKS2" },
            }),
        }
    }

    /// Iterations of the volume-key digest (about 1/8 of the iteration time, at least 1000).
    pub fn digest_iterations(&self, hash: &str, len: usize) -> Result<u32, KeyslotError> {
        if self.force_iterations.is_some() {
            return Ok(1000);
        }
        let speed = kdf::pbkdf2_speed(hash, len)?;
        Ok((speed * self.iter_time_ms.unwrap_or(2000) / 8000).clamp(1000, u32::MAX as u64) as u32)
    }
}

/// Encrypt AF material for a keyslot area (512-byte sectors from 0, padded to a sector).
pub fn seal(cipher: &str, key: &[u8], material: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyslotError> {
    let c = area_cipher(cipher, key)?;
    let mut b = Zeroizing::new(material.to_vec());
    let n = b.len().div_ceil(512) * 512;
    b.resize(n, 0);
    c.encrypt(&mut b, 0);
    Ok(b)
}

/// Derive a keyslot key of `key_len` bytes and seal the volume key into AF material for an
/// area encrypted with `cipher`.
#[allow(clippy::too_many_arguments)]
pub fn make_area(
    w: &dyn KdfWatch,
    kdf: &Kdf,
    pass: &[u8],
    salt: &[u8],
    vk: &[u8],
    cipher: &str,
    key_len: usize,
    af_hash: &str,
) -> Result<Zeroizing<Vec<u8>>, KeyslotError> {
    let key = volume::derive(w, kdf, pass, salt, key_len)?;
    let material = af::split(vk, STRIPES, af_hash)?;
    seal(cipher, &key, &material)
}

/// What `luksFormat` lays out.
#[derive(Debug, Clone)]
pub struct FormatParams {
    /// LUKS1 instead of LUKS2.
    pub v1: bool,
    /// Data cipher, e.g. `aes-xts-plain64`.
    pub cipher: String,
    /// Header and AF hash.
    pub hash: String,
    pub uuid: String,
    /// Encryption sector size (LUKS2).
    pub sector_size: u32,
    pub label: String,
    pub subsystem: String,
    /// Iterations of the volume-key digest.
    pub digest_iterations: u32,
    /// LUKS2 `integrity.type` of the segment (`hmac(sha256)`, `aead`): the volume key then
    /// also holds the MAC key, and keyslots use cryptsetup's default keyslot cipher.
    pub integrity: Option<String>,
}

/// The keyslot area cipher and key length cryptsetup uses when the data cipher cannot seal
/// keyslots (an authenticated segment).
pub const DEFAULT_KEYSLOT_CIPHER: (&str, usize) = ("aes-xts-plain64", 64);

/// The checks `luksFormat` makes on its options before it touches anything.
pub fn check_format(
    v1: bool,
    key_bits: u32,
    hash: &str,
    sector_size: u32,
    uuid: Option<&str>,
) -> Result<(), KeyslotError> {
    if !key_bits.is_multiple_of(8) || key_bits == 0 {
        return Err(KeyslotError::KeySize);
    }
    if af::hash_size(hash).is_none() {
        return Err(KeyslotError::Hash(hash.into()));
    }
    if (v1 && sector_size != 512)
        || !(512..=4096).contains(&sector_size)
        || !sector_size.is_power_of_two()
    {
        return Err(KeyslotError::SectorSize);
    }
    if uuid.is_some_and(|u| !super::valid_uuid(u)) {
        return Err(KeyslotError::Uuid);
    }
    Ok(())
}

/// A new header with keyslot 0 opening `vk` with `pw`, for a device of `dev_size` bytes
/// named `path` (in messages): the writes that make it (zeroed header area, header, area).
pub fn format(
    p: &FormatParams,
    path: &str,
    dev_size: u64,
    vk: &[u8],
    pw: &[u8],
    kdf: &Kdf,
    w: &dyn KdfWatch,
) -> Result<Writes, KeyslotError> {
    if p.v1 {
        format1(p, path, dev_size, vk, pw, kdf, w)
    } else {
        format2(p, path, dev_size, vk, pw, kdf, w)
    }
}

fn format1(
    p: &FormatParams,
    path: &str,
    dev_size: u64,
    vk: &[u8],
    pw: &[u8],
    kdf: &Kdf,
    w: &dyn KdfWatch,
) -> Result<Writes, KeyslotError> {
    let (name, mode) = p
        .cipher
        .split_once('-')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap_or((p.cipher.clone(), String::new()));
    let hash = &p.hash;
    let mut h = luks1::Header::new_layout(&name, &mode, hash, vk.len() as u32, &p.uuid, None)?;
    let need = h.payload_offset as u64 * 512;
    if dev_size <= need {
        return Err(KeyslotError::TooSmall {
            path: path.into(),
            version: 1,
            need: need + 512,
        });
    }
    h.set_digest(vk, p.digest_iterations)?;
    let Kdf::Pbkdf2 { iterations, .. } = kdf else {
        return Err(KeyslotError::Luks1Pbkdf2Only);
    };
    let salt = super::random_bytes(32);
    let k = Kdf::Pbkdf2 {
        hash: hash.clone(),
        iterations: *iterations,
    };
    let area = make_area(w, &k, pw, &salt, vk, &h.cipher_spec(), vk.len(), hash)?;
    let s = &mut h.slots[0];
    s.active = true;
    s.iterations = *iterations;
    s.salt.copy_from_slice(&salt);
    let area_off = s.offset as u64 * 512;
    let hdr_bytes = h.to_bytes()?;
    Ok(vec![
        (0, Zeroizing::new(vec![0u8; need as usize])),
        (0, Zeroizing::new(hdr_bytes)),
        (area_off, area),
    ])
}

fn format2(
    p: &FormatParams,
    path: &str,
    dev_size: u64,
    vk: &[u8],
    pw: &[u8],
    kdf: &Kdf,
    w: &dyn KdfWatch,
) -> Result<Writes, KeyslotError> {
    if dev_size <= L2_DATA {
        return Err(KeyslotError::TooSmall {
            path: path.into(),
            version: 2,
            need: L2_DATA + 4096,
        });
    }
    let (cipher, hash) = (p.cipher.as_str(), p.hash.as_str());
    let (area_cipher, area_key) = match &p.integrity {
        Some(_) => DEFAULT_KEYSLOT_CIPHER,
        None => (cipher, vk.len()),
    };
    let area_size = af::area_bytes(vk.len(), STRIPES).div_ceil(4096) * 4096;
    let ks_salt = super::random_bytes(32);
    let ks = luks2::Keyslot {
        id: 0,
        key_size: vk.len(),
        priority: None,
        af_stripes: STRIPES,
        af_hash: hash.into(),
        area_offset: 2 * L2_HDR,
        area_size,
        area_encryption: area_cipher.into(),
        area_key_size: area_key,
        kdf: kdf.clone(),
        salt: ks_salt.to_vec(),
    };
    let area = make_area(w, kdf, pw, &ks_salt, vk, area_cipher, area_key, hash)?;
    let d_salt = super::random_bytes(32);
    let dk = Kdf::Pbkdf2 {
        hash: "sha256".into(),
        iterations: p.digest_iterations,
    };
    let digest = kdf::derive(&dk, vk, &d_salt, 32)?;
    let dig = luks2::DigestEntry {
        id: 0,
        keyslots: vec![0],
        segments: vec![0],
        hash: "sha256".into(),
        iterations: p.digest_iterations,
        salt: d_salt.to_vec(),
        digest: digest.to_vec(),
    };
    let seg = luks2::Segment {
        id: 0,
        offset: L2_DATA,
        size: None,
        iv_tweak: 0,
        encryption: cipher.into(),
        sector_size: p.sector_size,
        integrity: p.integrity.clone(),
    };
    let json = serde_json::json!({
        "keyslots": {"0": luks2::keyslot_json(&ks)},
        "tokens": {},
        "segments": {"0": luks2::segment_json(&seg)},
        "digests": {"0": luks2::digest_json(&dig)},
        "config": {
            "json_size": (L2_HDR - 4096).to_string(),
            "keyslots_size": (L2_DATA - 2 * L2_HDR).to_string()
        }
    });
    let mut salt = [0u8; 64];
    salt.copy_from_slice(&super::random_bytes(64));
    let bin = luks2::BinHeader {
        hdr_size: L2_HDR,
        seqid: 0,
        label: p.label.clone(),
        checksum_alg: "sha256".into(),
        salt,
        uuid: p.uuid.clone(),
        subsystem: p.subsystem.clone(),
        hdr_offset: 0,
    };
    let mut md = luks2::Metadata::from_json(bin, json)?;
    let hdr_bytes = md.to_bytes()?;
    Ok(vec![
        (0, Zeroizing::new(vec![0u8; L2_DATA as usize])),
        (0, Zeroizing::new(hdr_bytes)),
        (2 * L2_HDR, area),
    ])
}

/// cryptsetup's plain-mode key from a passphrase: round i hashes i `A`s then the passphrase,
/// the digests concatenated to `len` bytes (`plain`: the passphrase itself, zero-padded).
/// `None` for an unknown hash.
pub fn plain_key(hash: &str, pass: &[u8], len: usize) -> Option<Zeroizing<Vec<u8>>> {
    if hash == "plain" {
        let mut k = Zeroizing::new(pass.to_vec());
        k.resize(len, 0);
        return Some(k);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    let mut round = 0;
    while out.len() < len {
        let mut input = Zeroizing::new(vec![b'A'; round]);
        input.extend_from_slice(pass);
        let d = udm_crypto::hash(hash, &input)?;
        let n = d.len().min(len - out.len());
        out.extend_from_slice(&d[..n]);
        round += 1;
    }
    Some(out)
}
