//! The LUKS2 header: two copies (primary at 0, secondary at `hdr_size`), each a 4 KiB binary
//! header with a checksum over the whole copy, followed by the JSON metadata (keyslots,
//! digests, segments, tokens, config). The JSON is kept as a `Value` so that fields udm does
//! not know survive a rewrite.

use super::kdf::Kdf;
use super::{corrupt, cstr, put_cstr, LuksError, MAGIC, MAGIC2};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest;

/// The binary part of each header copy.
pub const BIN_SIZE: usize = 4096;
/// Header copy sizes cryptsetup allows (binary + JSON).
pub const HDR_SIZES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];

/// The fields of a binary header copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinHeader {
    pub hdr_size: u64,
    pub seqid: u64,
    pub label: String,
    pub checksum_alg: String,
    pub salt: [u8; 64],
    pub uuid: String,
    pub subsystem: String,
    pub hdr_offset: u64,
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub(crate) fn unb64(s: &str) -> Result<Vec<u8>, LuksError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| corrupt("bad base64 in the JSON metadata"))
}

/// Checksum of a header copy (with its csum field taken as zero).
fn checksum(alg: &str, copy: &[u8]) -> Result<Vec<u8>, LuksError> {
    let parts = [&copy[..448], &[0u8; 64][..], &copy[512..]];
    Ok(match alg {
        "sha256" => {
            let mut d = sha2::Sha256::new();
            parts.iter().for_each(|p| d.update(p));
            d.finalize().to_vec()
        }
        "sha512" => {
            let mut d = sha2::Sha512::new();
            parts.iter().for_each(|p| d.update(p));
            d.finalize().to_vec()
        }
        "sha1" => {
            let mut d = sha1::Sha1::new();
            parts.iter().for_each(|p| d.update(p));
            d.finalize().to_vec()
        }
        a => return Err(LuksError::Unsupported(format!("header checksum {a}"))),
    })
}

/// Parse the binary header at the start of `b` (at least 4 KiB), checking magic and version.
/// `secondary` selects the magic expected.
pub fn parse_bin(b: &[u8], secondary: bool) -> Result<BinHeader, LuksError> {
    if b.len() < BIN_SIZE {
        return Err(LuksError::NotLuks);
    }
    let magic = if secondary { MAGIC2 } else { MAGIC };
    if b[..6] != magic {
        return Err(LuksError::NotLuks);
    }
    let ver = u16::from_be_bytes([b[6], b[7]]);
    if ver != 2 {
        return Err(LuksError::Version(ver));
    }
    Ok(BinHeader {
        hdr_size: be64(b, 8),
        seqid: be64(b, 16),
        label: cstr(&b[24..72]),
        checksum_alg: cstr(&b[72..104]),
        salt: b[104..168].try_into().expect("64 bytes"),
        uuid: cstr(&b[168..208]),
        subsystem: cstr(&b[208..256]),
        hdr_offset: be64(b, 256),
    })
}

/// Verify one full header copy (`copy` = `hdr_size` bytes) and parse its JSON.
pub fn parse_copy(copy: &[u8], secondary: bool) -> Result<(BinHeader, Value), LuksError> {
    let h = parse_bin(copy, secondary)?;
    if !HDR_SIZES.contains(&h.hdr_size) || copy.len() < h.hdr_size as usize {
        return Err(corrupt(format!("invalid header size {}", h.hdr_size)));
    }
    let copy = &copy[..h.hdr_size as usize];
    let sum = checksum(&h.checksum_alg, copy)?;
    if copy[448..448 + sum.len()] != sum[..] {
        return Err(corrupt("header checksum mismatch"));
    }
    let js = &copy[BIN_SIZE..];
    let end = js.iter().position(|&c| c == 0).unwrap_or(js.len());
    let v: Value =
        serde_json::from_slice(&js[..end]).map_err(|e| corrupt(format!("JSON metadata: {e}")))?;
    if !v.is_object() {
        return Err(corrupt("JSON metadata is not an object"));
    }
    Ok((h, v))
}

/// Serialize one header copy (`hdr_size` bytes) with its checksum.
pub fn write_copy(h: &BinHeader, json: &Value, secondary: bool) -> Result<Vec<u8>, LuksError> {
    let mut b = vec![0u8; h.hdr_size as usize];
    b[..6].copy_from_slice(if secondary { &MAGIC2 } else { &MAGIC });
    b[6..8].copy_from_slice(&2u16.to_be_bytes());
    b[8..16].copy_from_slice(&h.hdr_size.to_be_bytes());
    b[16..24].copy_from_slice(&h.seqid.to_be_bytes());
    put_cstr(&mut b[24..72], &h.label)?;
    put_cstr(&mut b[72..104], &h.checksum_alg)?;
    b[104..168].copy_from_slice(&h.salt);
    put_cstr(&mut b[168..208], &h.uuid)?;
    put_cstr(&mut b[208..256], &h.subsystem)?;
    let off = if secondary { h.hdr_size } else { 0 };
    b[256..264].copy_from_slice(&off.to_be_bytes());
    let text = serde_json::to_vec(json).map_err(|e| LuksError::Invalid(e.to_string()))?;
    if text.len() >= b.len() - BIN_SIZE {
        return Err(LuksError::Invalid(
            "JSON metadata does not fit the header".into(),
        ));
    }
    b[BIN_SIZE..BIN_SIZE + text.len()].copy_from_slice(&text);
    let sum = checksum(&h.checksum_alg, &b)?;
    b[448..448 + sum.len()].copy_from_slice(&sum);
    Ok(b)
}

/// A number that LUKS2 JSON stores as a decimal string (offsets, sizes) or as a number.
pub fn num(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => udm_parse_u64(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn udm_parse_u64(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn field<'a>(v: &'a Value, k: &str, what: &str) -> Result<&'a Value, LuksError> {
    v.get(k)
        .ok_or_else(|| corrupt(format!("{what} has no {k:?}")))
}

fn field_num(v: &Value, k: &str, what: &str) -> Result<u64, LuksError> {
    num(field(v, k, what)?).ok_or_else(|| corrupt(format!("{what}: {k:?} is not a number")))
}

fn field_str<'a>(v: &'a Value, k: &str, what: &str) -> Result<&'a str, LuksError> {
    field(v, k, what)?
        .as_str()
        .ok_or_else(|| corrupt(format!("{what}: {k:?} is not a string")))
}

/// A keyslot of type `luks2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyslot {
    pub id: u32,
    pub key_size: usize,
    pub priority: Option<u64>,
    pub af_stripes: u32,
    pub af_hash: String,
    /// Area offset and size in bytes (from the device start).
    pub area_offset: u64,
    pub area_size: u64,
    pub area_encryption: String,
    pub area_key_size: usize,
    pub kdf: Kdf,
    pub salt: Vec<u8>,
}

/// A data segment of type `crypt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub id: u32,
    /// Bytes from the device start.
    pub offset: u64,
    /// Bytes, or `None` for `dynamic` (to the device end).
    pub size: Option<u64>,
    pub iv_tweak: u64,
    pub encryption: String,
    pub sector_size: u32,
    /// `integrity.type` (`hmac(sha256)`, `aead`, `poly1305`): the data sits on a
    /// dm-integrity device at `offset` holding each sector's IV and tag.
    pub integrity: Option<String>,
}

/// A digest of type `pbkdf2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEntry {
    pub id: u32,
    pub keyslots: Vec<u32>,
    pub segments: Vec<u32>,
    pub hash: String,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub digest: Vec<u8>,
}

fn ids(v: &Value, what: &str) -> Result<Vec<u32>, LuksError> {
    v.as_array()
        .ok_or_else(|| corrupt(format!("{what} is not an array")))?
        .iter()
        .map(|x| {
            x.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(format!("{what} holds a bad id")))
        })
        .collect()
}

fn entries<'a>(json: &'a Value, section: &str) -> Result<Vec<(u32, &'a Value)>, LuksError> {
    let obj = json
        .get(section)
        .and_then(Value::as_object)
        .ok_or_else(|| corrupt(format!("no {section:?} object")))?;
    let mut v = Vec::new();
    for (k, e) in obj {
        let id: u32 = k
            .parse()
            .ok()
            .filter(|&n: &u32| n < 32)
            .ok_or_else(|| corrupt(format!("{section}: bad id {k:?}")))?;
        v.push((id, e));
    }
    v.sort_by_key(|e| e.0);
    Ok(v)
}

/// The parsed metadata of a LUKS2 header.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub bin: BinHeader,
    pub json: Value,
    pub keyslots: Vec<Keyslot>,
    pub segments: Vec<Segment>,
    pub digests: Vec<DigestEntry>,
    pub json_size: u64,
    pub keyslots_size: u64,
}

fn kdf_of(k: &Value, what: &str) -> Result<(Kdf, Vec<u8>), LuksError> {
    let ty = field_str(k, "type", what)?;
    let salt = unb64(field_str(k, "salt", what)?)?;
    let kdf = match ty {
        "pbkdf2" => Kdf::Pbkdf2 {
            hash: field_str(k, "hash", what)?.to_string(),
            iterations: field_num(k, "iterations", what)?
                .try_into()
                .map_err(|_| corrupt("PBKDF2 iterations out of range"))?,
        },
        "argon2i" | "argon2id" => {
            let small = |key| -> Result<u32, LuksError> {
                field_num(k, key, what)?
                    .try_into()
                    .map_err(|_| corrupt(format!("{what}: {key} out of range")))
            };
            Kdf::Argon2 {
                id: ty == "argon2id",
                time: small("time")?,
                memory: small("memory")?,
                cpus: small("cpus")?,
            }
        }
        t => return Err(LuksError::Unsupported(format!("keyslot KDF {t}"))),
    };
    Ok((kdf, salt))
}

impl Metadata {
    /// Interpret a verified header copy.
    pub fn from_json(bin: BinHeader, json: Value) -> Result<Metadata, LuksError> {
        let mut keyslots = Vec::new();
        for (id, k) in entries(&json, "keyslots")? {
            let what = format!("keyslot {id}");
            if field_str(k, "type", &what)? != "luks2" {
                continue;
            }
            let af = field(k, "af", &what)?;
            let area = field(k, "area", &what)?;
            let (kdf, salt) = kdf_of(field(k, "kdf", &what)?, &what)?;
            let ks = Keyslot {
                id,
                key_size: field_num(k, "key_size", &what)? as usize,
                priority: k.get("priority").and_then(num),
                af_stripes: field_num(af, "stripes", &what)? as u32,
                af_hash: field_str(af, "hash", &what)?.to_string(),
                area_offset: field_num(area, "offset", &what)?,
                area_size: field_num(area, "size", &what)?,
                area_encryption: field_str(area, "encryption", &what)?.to_string(),
                area_key_size: field_num(area, "key_size", &what)? as usize,
                kdf,
                salt,
            };
            if ks.key_size == 0 || ks.key_size > 512 || ks.af_stripes == 0 {
                return Err(corrupt(format!("{what} has invalid sizes")));
            }
            if super::af::area_bytes(ks.key_size, ks.af_stripes) > ks.area_size
                || ks.area_size > 1 << 30
            {
                return Err(corrupt(format!(
                    "{what}: area too small for its key material"
                )));
            }
            keyslots.push(ks);
        }
        let mut segments = Vec::new();
        for (id, s) in entries(&json, "segments")? {
            let what = format!("segment {id}");
            if field_str(s, "type", &what)? != "crypt" {
                return Err(LuksError::Unsupported(format!(
                    "segment type {:?}",
                    s["type"]
                )));
            }
            let size = match field(s, "size", &what)? {
                Value::String(x) if x == "dynamic" => None,
                v => Some(num(v).ok_or_else(|| corrupt(format!("{what}: bad size")))?),
            };
            let sector_size = field_num(s, "sector_size", &what)?;
            if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
                return Err(corrupt(format!("{what}: bad sector size")));
            }
            segments.push(Segment {
                id,
                offset: field_num(s, "offset", &what)?,
                size,
                iv_tweak: field_num(s, "iv_tweak", &what)?,
                encryption: field_str(s, "encryption", &what)?.to_string(),
                sector_size: sector_size as u32,
                integrity: s
                    .get("integrity")
                    .and_then(|i| i.get("type"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        }
        let mut digests = Vec::new();
        for (id, d) in entries(&json, "digests")? {
            let what = format!("digest {id}");
            if field_str(d, "type", &what)? != "pbkdf2" {
                return Err(LuksError::Unsupported(format!(
                    "digest type {:?}",
                    d["type"]
                )));
            }
            digests.push(DigestEntry {
                id,
                keyslots: ids(field(d, "keyslots", &what)?, &what)?,
                segments: ids(field(d, "segments", &what)?, &what)?,
                hash: field_str(d, "hash", &what)?.to_string(),
                iterations: field_num(d, "iterations", &what)?
                    .try_into()
                    .map_err(|_| corrupt("digest iterations out of range"))?,
                salt: unb64(field_str(d, "salt", &what)?)?,
                digest: unb64(field_str(d, "digest", &what)?)?,
            });
        }
        let config = field(&json, "config", "metadata")?;
        let json_size = field_num(config, "json_size", "config")?;
        let keyslots_size = field_num(config, "keyslots_size", "config")?;
        if json_size + BIN_SIZE as u64 != bin.hdr_size {
            return Err(corrupt("config json_size does not match the header size"));
        }
        if let Some(req) = config.get("requirements").and_then(|r| r.get("mandatory")) {
            if req.as_array().is_some_and(|a| !a.is_empty()) {
                return Err(LuksError::Unsupported(format!(
                    "LUKS2 requirements {req} (reencryption or other features)"
                )));
            }
        }
        Ok(Metadata {
            bin,
            json,
            keyslots,
            segments,
            digests,
            json_size,
            keyslots_size,
        })
    }

    /// Read the header from the first bytes of a device (`b` should hold 4 MiB + 4 KiB or up
    /// to the device end, enough for any secondary copy). Both copies are checked; the valid
    /// one with the higher sequence id wins. Returns which copies were bad.
    pub fn read(b: &[u8]) -> Result<(Metadata, [bool; 2]), LuksError> {
        let primary = parse_copy(b, false);
        let size_hint = match &primary {
            Ok((h, _)) => Some(h.hdr_size),
            Err(_) => None,
        };
        let secondary = size_hint
            .into_iter()
            .chain(HDR_SIZES)
            .filter(|&o| b.len() as u64 > o)
            .map(|o| parse_copy(&b[o as usize..], true))
            .find(|r| r.is_ok())
            .unwrap_or(Err(LuksError::NotLuks));
        let bad = [primary.is_err(), secondary.is_err()];
        let (h, json) = match (primary, secondary) {
            (Ok(p), Ok(s)) => {
                if s.0.seqid > p.0.seqid {
                    s
                } else {
                    p
                }
            }
            (Ok(p), Err(_)) => p,
            (Err(_), Ok(s)) => s,
            (Err(e), Err(_)) => {
                return Err(match e {
                    LuksError::NotLuks if b.len() >= 8 && b[..6] != MAGIC => LuksError::NotLuks,
                    LuksError::NotLuks => corrupt("no valid header copy"),
                    e => e,
                })
            }
        };
        Ok((Metadata::from_json(h, json)?, bad))
    }

    /// Both header copies, with the sequence id bumped, after the JSON was changed.
    pub fn to_bytes(&mut self) -> Result<Vec<u8>, LuksError> {
        self.bin.seqid += 1;
        let mut out = write_copy(&self.bin, &self.json, false)?;
        out.extend(write_copy(&self.bin, &self.json, true)?);
        Ok(out)
    }

    /// The digest that covers keyslot `id`.
    pub fn digest_for_keyslot(&self, id: u32) -> Option<&DigestEntry> {
        self.digests.iter().find(|d| d.keyslots.contains(&id))
    }

    /// The first data segment.
    pub fn segment(&self) -> Option<&Segment> {
        self.segments.first()
    }
}

/// JSON of a `luks2` keyslot.
pub fn keyslot_json(k: &Keyslot) -> Value {
    let kdf = match &k.kdf {
        Kdf::Pbkdf2 { hash, iterations } => json!({
            "type": "pbkdf2", "hash": hash, "iterations": iterations, "salt": b64(&k.salt)
        }),
        Kdf::Argon2 {
            time, memory, cpus, ..
        } => json!({
            "type": k.kdf.name(), "time": time, "memory": memory, "cpus": cpus,
            "salt": b64(&k.salt)
        }),
    };
    let mut v = json!({
        "type": "luks2",
        "key_size": k.key_size,
        "af": {"type": "luks1", "stripes": k.af_stripes, "hash": k.af_hash},
        "area": {
            "type": "raw",
            "offset": k.area_offset.to_string(),
            "size": k.area_size.to_string(),
            "encryption": k.area_encryption,
            "key_size": k.area_key_size
        },
        "kdf": kdf
    });
    if let Some(p) = k.priority {
        v["priority"] = json!(p);
    }
    v
}

/// JSON of a `pbkdf2` digest.
pub fn digest_json(d: &DigestEntry) -> Value {
    let s = |v: &[u32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    json!({
        "type": "pbkdf2",
        "keyslots": s(&d.keyslots),
        "segments": s(&d.segments),
        "hash": d.hash,
        "iterations": d.iterations,
        "salt": b64(&d.salt),
        "digest": b64(&d.digest)
    })
}

/// JSON of a `crypt` segment.
pub fn segment_json(s: &Segment) -> Value {
    let mut v = json!({
        "type": "crypt",
        "offset": s.offset.to_string(),
        "size": s.size.map(|x| x.to_string()).unwrap_or_else(|| "dynamic".into()),
        "iv_tweak": s.iv_tweak.to_string(),
        "encryption": s.encryption,
        "sector_size": s.sector_size
    });
    if let Some(t) = &s.integrity {
        v["integrity"] = json!({
            "type": t,
            "journal_encryption": "none",
            "journal_integrity": "none"
        });
    }
    v
}
