//! Keyslot commands: luksAddKey, luksRemoveKey, luksChangeKey, luksKillSlot, with cryptsetup
//! 2.6's prompts, messages and exit codes. Every change is prepared in memory; new key
//! material is written to a free area before the header that points at it, and a header that
//! drops a keyslot is written before its area is wiped — a failed command leaves the old
//! keyslots usable. (The one exception is cryptsetup's too: luksChangeKey on a LUKS1 header
//! with all eight slots in use rewrites the slot in place.) LUKS2 writes both header copies
//! (new checksums, seqid + 1).

use super::format::{keyslot_kdf, make_area};
use super::hdr::{self, Dev, Header};
use super::{fail, pass, Failed, Io, Opts};
use serde_json::Value;
use udm_formats::luks::kdf::Kdf;
use udm_formats::luks::{self, af, luks1, luks2, Zeroizing};

/// AF stripes of new keyslots.
const STRIPES: u32 = 4000;
/// Keyslots a LUKS2 header may hold.
const L2_SLOTS: u32 = 32;

fn verbose(io: &mut Io<'_>, o: &Opts, msg: impl std::fmt::Display) {
    if o.verbose {
        let _ = writeln!(io.out, "{msg}");
    }
}

/// cryptsetup's `yesDialog`: asks only on a terminal without `--batch-mode`.
fn yes_dialog(io: &mut Io<'_>, o: &Opts, msg: &str, fail_msg: &str) -> Result<(), Failed> {
    if !io.tty || o.batch {
        return Ok(());
    }
    let _ = write!(
        io.out,
        "\nWARNING!\n========\n{msg}\n\nAre you sure? (Type 'yes' in capital letters): "
    );
    let _ = io.out.flush();
    let mut line = Zeroizing::new(Vec::new());
    let mut b = [0u8; 1];
    while let Ok(1) = io.input.read(&mut b) {
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    if &line[..] != b"YES" {
        return Err(fail(io, libc::EPERM, fail_msg));
    }
    Ok(())
}

/// The device opened read-write and its header (`--type` restricts the version).
fn load(io: &mut Io<'_>, o: &Opts, path: &str) -> Result<(Dev, Header), Failed> {
    let dev = hdr::open_dev(io, path, true)?;
    let h = hdr::load(io, &dev, hdr::wanted(o))?;
    Ok((dev, h))
}

/// The passphrase of an existing keyslot (`--key-file` or prompt).
fn old_pass(io: &mut Io<'_>, o: &Opts, prompt: &str) -> Result<Zeroizing<Vec<u8>>, Failed> {
    pass::get(
        io,
        o.key_file.as_deref(),
        o.keyfile_offset,
        o.keyfile_size,
        prompt,
        false,
    )
}

/// The new passphrase: the `<new key file>` argument, or a prompt asked twice.
fn new_pass(
    io: &mut Io<'_>,
    o: &Opts,
    file: Option<&String>,
    prompt: &str,
) -> Result<Zeroizing<Vec<u8>>, Failed> {
    match file {
        Some(f) => pass::read_key_file(io, f, o.new_keyfile_offset, o.new_keyfile_size),
        None => pass::get(io, None, 0, None, prompt, true),
    }
}

fn kerr(io: &mut Io<'_>, e: luks::LuksError) -> Failed {
    fail(io, e.errno(), e)
}

fn slot_max(h: &Header) -> u32 {
    match h {
        Header::L1(_) => luks1::SLOTS as u32,
        Header::L2(_) => L2_SLOTS,
    }
}

fn slot_active(h: &Header, s: u32) -> bool {
    match h {
        Header::L1(h) => h.slots.get(s as usize).is_some_and(|x| x.active),
        Header::L2(m) => m.json["keyslots"].get(s.to_string()).is_some(),
    }
}

fn active_count(h: &Header) -> usize {
    (0..slot_max(h)).filter(|&s| slot_active(h, s)).count()
}

/// cryptsetup's `keyslot_verify_or_find_empty`.
fn pick_free(io: &mut Io<'_>, h: &Header, want: Option<u32>) -> Result<u32, Failed> {
    let max = slot_max(h);
    match want {
        None => (0..max)
            .find(|&s| !slot_active(h, s))
            .ok_or_else(|| fail(io, libc::EINVAL, "All key slots full.")),
        Some(s) if s >= max => Err(fail(
            io,
            libc::EINVAL,
            format!(
                "Key slot {s} is invalid, please select between 0 and {}.",
                max - 1
            ),
        )),
        Some(s) if slot_active(h, s) => Err(fail(
            io,
            libc::EINVAL,
            format!("Key slot {s} is full, please select another one."),
        )),
        Some(s) => Ok(s),
    }
}

/// One disk write: offset and bytes.
type Write1 = (u64, Zeroizing<Vec<u8>>);
/// Disk writes of one command, in order.
type Writes = Vec<Write1>;

fn apply(io: &mut Io<'_>, dev: &Dev, w: Writes) -> Result<(), Failed> {
    for (off, b) in &w {
        hdr::write_all(io, dev, *off, b)?;
    }
    Ok(())
}

/// LUKS1: key material for slot `s` and the slot fields (not yet in `h`).
fn seal1(
    io: &mut Io<'_>,
    o: &Opts,
    h: &mut luks1::Header,
    s: usize,
    vk: &[u8],
    pw: &[u8],
) -> Result<Write1, Failed> {
    let Kdf::Pbkdf2 { iterations, .. } = keyslot_kdf(io, o, true, vk.len())? else {
        return Err(fail(io, libc::EINVAL, "LUKS1 keyslots use PBKDF2 only."));
    };
    let salt = luks::random_bytes(luks1::SALT_SIZE);
    let kdf = Kdf::Pbkdf2 {
        hash: h.hash.clone(),
        iterations,
    };
    let area = make_area(io, &kdf, pw, &salt, vk, &h.cipher_spec(), &h.hash)?;
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
    (slot.offset as u64 * 512, luks::random_bytes(len as usize))
}

fn header1(io: &mut Io<'_>, h: &luks1::Header) -> Result<Zeroizing<Vec<u8>>, Failed> {
    h.validate(None).map_err(|e| kerr(io, e))?;
    h.to_bytes().map(Zeroizing::new).map_err(|e| kerr(io, e))
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
    io: &mut Io<'_>,
    o: &Opts,
    m: &luks2::Metadata,
    id: u32,
    vk: &[u8],
    pw: &[u8],
    reuse: Option<(u64, u64)>,
) -> Result<(Value, Write1), Failed> {
    let template = m.keyslots.iter().find(|k| k.key_size == vk.len());
    let (enc, enc_len, af_hash) = match template {
        Some(t) => (
            t.area_encryption.clone(),
            t.area_key_size,
            t.af_hash.clone(),
        ),
        None => {
            let enc = m
                .segment()
                .map(|s| s.encryption.clone())
                .unwrap_or("aes-xts-plain64".into());
            (enc, vk.len(), "sha256".to_string())
        }
    };
    let af_hash = o.hash.clone().unwrap_or(af_hash);
    if af::hash_size(&af_hash).is_none() {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Hash algorithm {af_hash} not supported."),
        ));
    }
    let size = af::area_bytes(vk.len(), STRIPES).div_ceil(4096) * 4096;
    let offset = match alloc_area(m, size) {
        Some(off) => off,
        None => match reuse {
            Some((off, s)) if s >= size => off,
            _ => return Err(fail(io, libc::ENOSPC, "No space for new keyslot.")),
        },
    };
    let kdf = keyslot_kdf(io, o, false, vk.len())?;
    let salt = luks::random_bytes(32);
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
    let key = {
        let _p = super::progress::start(&kdf);
        udm_formats::luks::kdf::derive(&kdf, pw, &salt, enc_len).map_err(|e| kerr(io, e))?
    };
    let area = seal_with_key(io, &enc, &key, vk, &af_hash)?;
    Ok((luks2::keyslot_json(&ks), (offset, area)))
}

/// AF-split `vk` and encrypt it with an already derived keyslot key.
fn seal_with_key(
    io: &mut Io<'_>,
    cipher: &str,
    key: &[u8],
    vk: &[u8],
    af_hash: &str,
) -> Result<Zeroizing<Vec<u8>>, Failed> {
    use udm_targets::crypt::{CipherSpec, SectorCipher};
    let material = af::split(vk, STRIPES, af_hash).map_err(|e| kerr(io, e))?;
    let spec: CipherSpec = cipher.parse().map_err(|e| {
        fail(
            io,
            libc::EINVAL,
            format!("Cipher {cipher} is not available: {e}."),
        )
    })?;
    let c = SectorCipher::new(&spec, key, 512, false).map_err(|_| {
        fail(
            io,
            libc::EINVAL,
            format!("Cipher {cipher} is not available."),
        )
    })?;
    let mut b = Zeroizing::new(material.to_vec());
    let n = b.len().div_ceil(512) * 512;
    b.resize(n, 0);
    c.encrypt(&mut b, 0);
    Ok(b)
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
    Some((off, luks::random_bytes(size as usize)))
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
fn header2(io: &mut Io<'_>, m: &mut luks2::Metadata) -> Result<Zeroizing<Vec<u8>>, Failed> {
    luks2::Metadata::from_json(m.bin.clone(), m.json.clone()).map_err(|e| kerr(io, e))?;
    m.to_bytes().map(Zeroizing::new).map_err(|e| kerr(io, e))
}

/// `luksAddKey <device> [<new key file>]`.
pub fn add_key(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    // cryptsetup 2.6: --new-key-slot names the new slot and --key-slot the one to unlock;
    // --key-slot alone names the new slot.
    let (want, from) = match o.new_key_slot {
        Some(n) => (Some(n), o.key_slot),
        None => (o.key_slot, None),
    };
    if o.new_key_slot.is_none() && o.key_slot.is_some() {
        let _ = writeln!(
            io.out,
            "WARNING: The --key-slot parameter is used for new keyslot number."
        );
    }
    let (dev, h) = load(io, o, &pos[0])?;
    let pw = old_pass(io, o, "Enter any existing passphrase: ")?;
    if from.is_some_and(|f| !slot_active(&h, f)) {
        // cryptsetup fails here without a message.
        return Err(Failed(libc::EINVAL));
    }
    let (via, vk) = hdr::unlock(io, &dev, &h, &pw, from)?;
    drop(pw);
    verbose(io, o, format!("Key slot {via} unlocked."));
    let new = pick_free(io, &h, want)?;
    let npw = new_pass(io, o, pos.get(1), "Enter new passphrase for key slot: ")?;
    let writes = match h {
        Header::L1(mut h) => {
            let area = seal1(io, o, &mut h, new as usize, &vk, &npw)?;
            vec![area, (0, header1(io, &h)?)]
        }
        Header::L2(mut m) => {
            let (js, area) = seal2(io, o, &m, new, &vk, &npw, None)?;
            m.json["keyslots"][new.to_string()] = js;
            bind2(&mut m, new, via);
            vec![area, (0, header2(io, &mut m)?)]
        }
    };
    apply(io, &dev, writes)?;
    verbose(io, o, format!("Key slot {new} created."));
    Ok(())
}

/// Destroy keyslot `s` of a loaded header: header first, then the area wipe.
fn destroy(io: &mut Io<'_>, dev: &Dev, h: Header, s: u32) -> Result<(), Failed> {
    let writes = match h {
        Header::L1(mut h) => {
            let wipe = drop1(&mut h, s as usize);
            vec![(0, header1(io, &h)?), wipe]
        }
        Header::L2(mut m) => {
            let wipe = drop2(&mut m, s);
            let mut w = vec![(0, header2(io, &mut m)?)];
            w.extend(wipe);
            w
        }
    };
    apply(io, dev, writes)
}

/// `luksRemoveKey <device> [<key file>]`.
pub fn remove_key(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let (dev, h) = load(io, o, &pos[0])?;
    let kf = pos.get(1).or(o.key_file.as_ref());
    let pw = pass::get(
        io,
        kf.map(String::as_str),
        o.keyfile_offset,
        o.keyfile_size,
        "Enter passphrase to be deleted: ",
        false,
    )?;
    let (s, _vk) = hdr::unlock(io, &dev, &h, &pw, None)?;
    drop(pw);
    verbose(io, o, format!("Key slot {s} selected for deletion."));
    if active_count(&h) == 1 {
        yes_dialog(
            io,
            o,
            "This is the last keyslot. Device will become unusable after purging this key.",
            "Operation aborted, the keyslot was NOT wiped.",
        )?;
    }
    destroy(io, &dev, h, s)?;
    verbose(io, o, format!("Key slot {s} removed."));
    Ok(())
}

/// C's `atoi`: optional sign and leading digits, 0 when there are none.
fn atoi(a: &str) -> i64 {
    let t = a.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = t
        .bytes()
        .take_while(u8::is_ascii_digit)
        .take(10)
        .fold(0i64, |n, d| n * 10 + (d - b'0') as i64);
    if neg {
        -n
    } else {
        n
    }
}

/// `luksKillSlot <device> <key slot>`.
pub fn kill_slot(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let (dev, h) = load(io, o, &pos[0])?;
    let max = slot_max(&h);
    // cryptsetup reads the number with atoi(): junk is slot 0, a bad number fails silently.
    let s = atoi(&pos[1]);
    if s < 0 || s >= max as i64 {
        return Err(Failed(libc::EINVAL));
    }
    let s = s as u32;
    if !slot_active(&h, s) {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Keyslot {s} is not active."),
        ));
    }
    verbose(io, o, format!("Keyslot {s} is selected for deletion."));
    let last = active_count(&h) == 1;
    if !o.batch || o.key_file.is_some() || !io.tty {
        if last && o.key_file.is_none() {
            yes_dialog(
                io,
                o,
                "This is the last keyslot. Device will become unusable after purging this key.",
                "Operation aborted, the keyslot was NOT wiped.",
            )?;
        }
        let pw = old_pass(io, o, "Enter any remaining passphrase: ")?;
        let from_stdin = o.key_file.as_deref().is_none_or(|f| f == "-");
        // cryptsetup ignores a failed read of stdin here (nothing to read: no check).
        if !(pw.is_empty() && from_stdin) {
            let ok = if last {
                hdr::unlock(io, &dev, &h, &pw, Some(s)).is_ok()
            } else {
                (0..max).filter(|&x| x != s && slot_active(&h, x)).any(|x| {
                    let mut sink = Vec::new();
                    let mut empty: &[u8] = &[];
                    let mut quiet = Io {
                        out: &mut sink,
                        err: &mut Vec::new(),
                        input: &mut empty,
                        tty: false,
                        socket: io.socket.clone(),
                    };
                    hdr::unlock(&mut quiet, &dev, &h, &pw, Some(x)).is_ok()
                })
            };
            if !ok {
                if last {
                    return Err(Failed(libc::EPERM));
                }
                return Err(fail(
                    io,
                    libc::EPERM,
                    "No key available with this passphrase.",
                ));
            }
        }
    }
    destroy(io, &dev, h, s)?;
    verbose(io, o, format!("Key slot {s} removed."));
    Ok(())
}

/// `luksChangeKey <device> [<new key file>]`: LUKS1 moves the key to a free slot when there
/// is one (else rewrites it in place); LUKS2 keeps the keyslot id with a new area.
pub fn change_key(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let (dev, h) = load(io, o, &pos[0])?;
    if o.key_slot.is_some_and(|s| s >= slot_max(&h)) {
        return Err(fail(io, libc::EINVAL, "Key slot is invalid."));
    }
    let pw = old_pass(io, o, "Enter passphrase to be changed: ")?;
    let (old, vk) = hdr::unlock(io, &dev, &h, &pw, o.key_slot)?;
    drop(pw);
    verbose(io, o, format!("Key slot {old} unlocked."));
    let npw = new_pass(io, o, pos.get(1), "Enter new passphrase: ")?;
    let (new, writes) = match h {
        Header::L1(mut h) => {
            let new = (0..luks1::SLOTS).find(|&s| !h.slots[s].active);
            match new {
                Some(new) => {
                    let area = seal1(io, o, &mut h, new, &vk, &npw)?;
                    let wipe = drop1(&mut h, old as usize);
                    (new as u32, vec![area, (0, header1(io, &h)?), wipe])
                }
                None => {
                    let area = seal1(io, o, &mut h, old as usize, &vk, &npw)?;
                    (old, vec![area, (0, header1(io, &h)?)])
                }
            }
        }
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
            let (mut js, area) = seal2(io, o, &m, old, &vk, &npw, prev_area)?;
            if let Some(p) = prev.get("priority") {
                js["priority"] = p.clone();
            }
            let moved = prev_area.is_some_and(|(off, _)| off != area.0);
            m.json["keyslots"][&key] = js;
            let mut w = vec![area, (0, header2(io, &mut m)?)];
            if let (true, Some((off, size))) = (moved, prev_area) {
                w.push((off, luks::random_bytes(size as usize)));
            }
            (old, w)
        }
    };
    apply(io, &dev, writes)?;
    verbose(io, o, format!("Key slot {new} created."));
    Ok(())
}
