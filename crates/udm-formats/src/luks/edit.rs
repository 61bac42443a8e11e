//! Keyslot changes (cryptsetup's luksAddKey, luksRemoveKey, luksChangeKey, luksKillSlot),
//! prepared in memory as ordered writes: new key material goes to a free area before the
//! header that points at it, and a header that drops a keyslot is written before its area is
//! wiped — a failed command leaves the old keyslots usable. (The one exception is
//! cryptsetup's too: luksChangeKey on a LUKS1 header with all eight slots in use rewrites the
//! slot in place.) LUKS2 headers are written as both copies (new checksums, seqid + 1).

use super::create::{make_area, seal, KdfParams, Writes, STRIPES};
use super::kdf::Kdf;
use super::volume::{self, area_cipher, Header, KdfWatch, KeyslotError};
use super::{af, luks1, luks2, Zeroizing};
use serde_json::Value;

/// Keyslots a LUKS2 header may hold.
const L2_SLOTS: u32 = 32;

/// One disk write: offset and bytes.
type Write1 = (u64, Zeroizing<Vec<u8>>);

/// How many keyslots the header's version has.
pub fn slot_max(h: &Header) -> u32 {
    match h {
        Header::L1(_) => luks1::SLOTS as u32,
        Header::L2(_) => L2_SLOTS,
    }
}

/// True when keyslot `s` is in use.
pub fn slot_active(h: &Header, s: u32) -> bool {
    match h {
        Header::L1(h) => h.slots.get(s as usize).is_some_and(|x| x.active),
        Header::L2(m) => m.json["keyslots"].get(s.to_string()).is_some(),
    }
}

/// Keyslots in use.
pub fn active_count(h: &Header) -> usize {
    (0..slot_max(h)).filter(|&s| slot_active(h, s)).count()
}

/// cryptsetup's `keyslot_verify_or_find_empty`: `want`, or the first free keyslot.
pub fn pick_free(h: &Header, want: Option<u32>) -> Result<u32, KeyslotError> {
    let max = slot_max(h);
    match want {
        None => (0..max)
            .find(|&s| !slot_active(h, s))
            .ok_or(KeyslotError::SlotsFull),
        Some(s) if s >= max => Err(KeyslotError::SlotInvalid {
            slot: s,
            max: max - 1,
        }),
        Some(s) if slot_active(h, s) => Err(KeyslotError::SlotInUse(s)),
        Some(s) => Ok(s),
    }
}

/// LUKS1: key material for slot `s` and the slot fields (not yet in `h`).
fn seal1(
    kp: &KdfParams,
    w: &dyn KdfWatch,
    h: &mut luks1::Header,
    s: usize,
    vk: &[u8],
    pw: &[u8],
) -> Result<Write1, KeyslotError> {
    let Kdf::Pbkdf2 { iterations, .. } = kp.keyslot_kdf(true, vk.len())? else {
        return Err(KeyslotError::Luks1Pbkdf2Only);
    };
    let salt = super::random_bytes(luks1::SALT_SIZE);
    let kdf = Kdf::Pbkdf2 {
        hash: h.hash.clone(),
        iterations,
    };
    let area = make_area(w, &kdf, pw, &salt, vk, &h.cipher_spec(), vk.len(), &h.hash)?;
    let slot = &mut h.slots[s];
    slot.active = true;
    slot.iterations = iterations;
    slot.salt.copy_from_slice(&salt);
    slot.stripes = STRIPES;
    Ok((slot.offset as u64 * 512, area))
}

/// LUKS1: mark slot `s` free; returns the (offset, random bytes) that wipe its area.
fn drop1(h: &mut luks1::Header, s: usize) -> Write1 {
    let slot = &mut h.slots[s];
    let len = af::area_bytes(h.key_bytes as usize, slot.stripes.max(1)).div_ceil(512) * 512;
    slot.active = false;
    slot.iterations = 0;
    slot.salt = [0; luks1::SALT_SIZE];
    (slot.offset as u64 * 512, super::random_bytes(len as usize))
}

fn header1(h: &luks1::Header) -> Result<Zeroizing<Vec<u8>>, KeyslotError> {
    h.validate(None)?;
    Ok(h.to_bytes().map(Zeroizing::new)?)
}

/// LUKS2: (offset, size) of every keyslot area in the JSON, of any keyslot type.
fn used_areas(m: &luks2::Metadata) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    if let Some(obj) = m.json["keyslots"].as_object() {
        for k in obj.values() {
            let a = &k["area"];
            if let (Some(off), Some(size)) = (
                a.get("offset").and_then(luks2::num),
                a.get("size").and_then(luks2::num),
            ) {
                v.push((off, size));
            }
        }
    }
    v
}

/// LUKS2: the lowest 4 KiB-aligned gap of `size` bytes in the keyslots area.
fn alloc_area(m: &luks2::Metadata, size: u64) -> Option<u64> {
    let start = 2 * m.bin.hdr_size;
    let end = start + m.keyslots_size;
    let used = used_areas(m);
    let mut cands: Vec<u64> = used
        .iter()
        .map(|(o, s)| (o + s).div_ceil(4096) * 4096)
        .collect();
    cands.push(start);
    cands.sort_unstable();
    cands.into_iter().find(|&c| {
        c >= start && c + size <= end && used.iter().all(|&(o, s)| c + size <= o || c >= o + s)
    })
}

/// LUKS2: a keyslot `id` for `vk` sealed by `pw` (area allocated anew; `reuse` is the area
/// of the keyslot being replaced, used only when there is no free room). Returns its JSON
/// and the area write.
fn seal2(
    kp: &KdfParams,
    w: &dyn KdfWatch,
    m: &luks2::Metadata,
    id: u32,
    vk: &[u8],
    pw: &[u8],
    reuse: Option<(u64, u64)>,
) -> Result<(Value, Write1), KeyslotError> {
    let template = m.keyslots.iter().find(|k| k.key_size == vk.len());
    let (enc, enc_len, af_hash) = match template {
        Some(t) => (
            t.area_encryption.clone(),
            t.area_key_size,
            t.af_hash.clone(),
        ),
        None => match m.segment() {
            // An authenticated segment's cipher cannot seal keyslots (cryptsetup's rule).
            Some(s) if s.integrity.is_some() => {
                let (c, n) = super::create::DEFAULT_KEYSLOT_CIPHER;
                (c.to_string(), n, "sha256".to_string())
            }
            Some(s) => (s.encryption.clone(), vk.len(), "sha256".to_string()),
            None => ("aes-xts-plain64".into(), vk.len(), "sha256".to_string()),
        },
    };
    let af_hash = kp.hash.clone().unwrap_or(af_hash);
    if af::hash_size(&af_hash).is_none() {
        return Err(KeyslotError::Hash(af_hash));
    }
    let size = af::area_bytes(vk.len(), STRIPES).div_ceil(4096) * 4096;
    let offset = match alloc_area(m, size) {
        Some(off) => off,
        None => match reuse {
            Some((off, s)) if s >= size => off,
            _ => return Err(KeyslotError::NoSpace),
        },
    };
    let kdf = kp.keyslot_kdf(false, vk.len())?;
    let salt = super::random_bytes(32);
    let ks = luks2::Keyslot {
        id,
        key_size: vk.len(),
        priority: None,
        af_stripes: STRIPES,
        af_hash: af_hash.clone(),
        area_offset: offset,
        area_size: size,
        area_encryption: enc.clone(),
        area_key_size: enc_len,
        kdf: kdf.clone(),
        salt: salt.to_vec(),
    };
    let key = volume::derive(w, &kdf, pw, &salt, enc_len)?;
    let material = af::split(vk, STRIPES, &af_hash)?;
    // The keyslot's own cipher must take the derived key (say so without the key size).
    area_cipher(&enc, &key).map_err(|e| match e {
        KeyslotError::CipherKey { cipher, .. } => KeyslotError::Cipher(cipher),
        e => e,
    })?;
    let area = seal(&enc, &key, &material)?;
    Ok((luks2::keyslot_json(&ks), (offset, area)))
}

fn ids_without(v: &Value, id: u32) -> Value {
    let id = id.to_string();
    Value::Array(
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x.as_str() != Some(&id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// LUKS2: drop keyslot `id` from keyslots, digests and tokens; the area to wipe.
fn drop2(m: &mut luks2::Metadata, id: u32) -> Option<Write1> {
    let key = id.to_string();
    let ks = m.json["keyslots"].as_object_mut()?.remove(&key)?;
    for sect in ["digests", "tokens"] {
        if let Some(obj) = m.json[sect].as_object_mut() {
            for e in obj.values_mut() {
                if e.get("keyslots").is_some() {
                    e["keyslots"] = ids_without(&e["keyslots"], id);
                }
            }
        }
    }
    let a = &ks["area"];
    let off = a.get("offset").and_then(luks2::num)?;
    let size = a.get("size").and_then(luks2::num)?;
    Some((off, super::random_bytes(size as usize)))
}

/// LUKS2: bind keyslot `id` to the digest of the volume key (the one keyslot `via` uses).
fn bind2(m: &mut luks2::Metadata, id: u32, via: u32) {
    let via = via.to_string();
    if let Some(obj) = m.json["digests"].as_object_mut() {
        for d in obj.values_mut() {
            let Some(a) = d["keyslots"].as_array() else {
                continue;
            };
            if a.iter().any(|x| x.as_str() == Some(&via)) {
                let mut ids: Vec<u32> = a
                    .iter()
                    .filter_map(|x| x.as_str()?.parse().ok())
                    .filter(|&x| x != id)
                    .collect();
                ids.push(id);
                ids.sort_unstable();
                d["keyslots"] =
                    Value::Array(ids.iter().map(|x| Value::String(x.to_string())).collect());
                return;
            }
        }
    }
}

/// LUKS2: both header copies for the changed JSON, checked by parsing it again.
fn header2(m: &mut luks2::Metadata) -> Result<Zeroizing<Vec<u8>>, KeyslotError> {
    luks2::Metadata::from_json(m.bin.clone(), m.json.clone())?;
    Ok(m.to_bytes().map(Zeroizing::new)?)
}

/// A new keyslot `new` opening `vk` with `npw`, bound to the volume key keyslot `via`
/// opened: the writes (area, then header).
pub fn add_key(
    h: Header,
    via: u32,
    new: u32,
    vk: &[u8],
    npw: &[u8],
    kp: &KdfParams,
    w: &dyn KdfWatch,
) -> Result<Writes, KeyslotError> {
    Ok(match h {
        Header::L1(mut h) => {
            let area = seal1(kp, w, &mut h, new as usize, vk, npw)?;
            vec![area, (0, header1(&h)?)]
        }
        Header::L2(mut m) => {
            let (js, area) = seal2(kp, w, &m, new, vk, npw, None)?;
            m.json["keyslots"][new.to_string()] = js;
            bind2(&mut m, new, via);
            vec![area, (0, header2(&mut m)?)]
        }
    })
}

/// Destroy keyslot `s`: the header first, then the area wipe.
pub fn destroy(h: Header, s: u32) -> Result<Writes, KeyslotError> {
    Ok(match h {
        Header::L1(mut h) => {
            let wipe = drop1(&mut h, s as usize);
            vec![(0, header1(&h)?), wipe]
        }
        Header::L2(mut m) => {
            let wipe = drop2(&mut m, s);
            let mut w = vec![(0, header2(&mut m)?)];
            w.extend(wipe);
            w
        }
    })
}

/// Re-seal the volume key of keyslot `old` with `npw`: LUKS1 moves it to a free slot when
/// there is one (else rewrites it in place); LUKS2 keeps the keyslot id with a new area.
/// Returns the keyslot that now holds it and the writes.
pub fn change_key(
    h: Header,
    old: u32,
    vk: &[u8],
    npw: &[u8],
    kp: &KdfParams,
    w: &dyn KdfWatch,
) -> Result<(u32, Writes), KeyslotError> {
    Ok(match h {
        Header::L1(mut h) => match (0..luks1::SLOTS).find(|&s| !h.slots[s].active) {
            Some(new) => {
                let area = seal1(kp, w, &mut h, new, vk, npw)?;
                let wipe = drop1(&mut h, old as usize);
                (new as u32, vec![area, (0, header1(&h)?), wipe])
            }
            None => {
                let area = seal1(kp, w, &mut h, old as usize, vk, npw)?;
                (old, vec![area, (0, header1(&h)?)])
            }
        },
        Header::L2(mut m) => {
            let key = old.to_string();
            let prev = m.json["keyslots"][&key].clone();
            let area_of = |k: &Value| {
                Some((
                    luks2::num(k["area"].get("offset")?)?,
                    luks2::num(k["area"].get("size")?)?,
                ))
            };
            let prev_area = area_of(&prev);
            let (mut js, area) = seal2(kp, w, &m, old, vk, npw, prev_area)?;
            if let Some(p) = prev.get("priority") {
                js["priority"] = p.clone();
            }
            let moved = prev_area.is_some_and(|(off, _)| off != area.0);
            m.json["keyslots"][&key] = js;
            let mut wr = vec![area, (0, header2(&mut m)?)];
            if let (true, Some((off, size))) = (moved, prev_area) {
                wr.push((off, super::random_bytes(size as usize)));
            }
            (old, wr)
        }
    })
}
