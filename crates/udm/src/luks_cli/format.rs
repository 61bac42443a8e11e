//! `luksFormat`: a new LUKS2 (default) or LUKS1 header with keyslot 0, laid out as cryptsetup
//! 2.6 lays it out. Everything is checked and prepared in memory first, so a failed command
//! writes nothing.

use super::hdr::{self, Dev};
use super::{fail, pass, Failed, Io, Opts};
use udm_formats::luks::kdf::{self, Kdf};
use udm_formats::luks::{self, af, luks1, luks2, Zeroizing};
use udm_targets::crypt::{CipherSpec, SectorCipher};

/// LUKS2 header copy size, data offset and keyslots area, cryptsetup's defaults.
const L2_HDR: u64 = 16384;
const L2_DATA: u64 = 16 << 20;
const STRIPES: u32 = 4000;

fn kerr(io: &mut Io<'_>, e: luks::LuksError) -> Failed {
    fail(io, e.errno(), e)
}

/// Encrypt AF material for a keyslot area (512-byte sectors from 0).
fn seal(
    io: &mut Io<'_>,
    cipher: &str,
    key: &[u8],
    material: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Failed> {
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
            format!(
                "Cipher {cipher} (key size {} bits) is not available.",
                key.len() * 8
            ),
        )
    })?;
    let mut b = Zeroizing::new(material.to_vec());
    let n = b.len().div_ceil(512) * 512;
    b.resize(n, 0);
    c.encrypt(&mut b, 0);
    Ok(b)
}

/// The keyslot KDF from the options (`luks1` allows only PBKDF2).
pub fn keyslot_kdf(io: &mut Io<'_>, o: &Opts, v1: bool, key_len: usize) -> Result<Kdf, Failed> {
    let hash = o.hash.clone().unwrap_or("sha256".into());
    let name = o
        .pbkdf
        .clone()
        .unwrap_or(if v1 { "pbkdf2" } else { "argon2id" }.into());
    let ms = o.iter_time.unwrap_or(2000);
    match name.as_str() {
        "pbkdf2" => {
            let iterations = match o.pbkdf_force_iterations {
                Some(n) => n,
                None => {
                    let speed = kdf::pbkdf2_speed(&hash, key_len).map_err(|e| kerr(io, e))?;
                    (speed * ms / 1000).clamp(1000, u32::MAX as u64) as u32
                }
            };
            Ok(Kdf::Pbkdf2 { hash, iterations })
        }
        "argon2i" | "argon2id" if !v1 => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            Ok(Kdf::Argon2 {
                id: name == "argon2id",
                time: o.pbkdf_force_iterations.unwrap_or(4).max(1),
                memory: o.pbkdf_memory.unwrap_or(1 << 20).max(32),
                cpus: o.pbkdf_parallel.unwrap_or(4).min(cpus.max(1)).max(1),
            })
        }
        p => Err(fail(
            io,
            libc::EINVAL,
            format!(
                "Requested PBKDF type {p} is not supported for {}.",
                if v1 { "LUKS1" } else { "LUKS2" }
            ),
        )),
    }
}

/// Iterations of the volume-key digest (about 1/8 of the iteration time, at least 1000).
pub fn digest_iterations(io: &mut Io<'_>, o: &Opts, hash: &str, len: usize) -> Result<u32, Failed> {
    if o.pbkdf_force_iterations.is_some() {
        return Ok(1000);
    }
    let speed = kdf::pbkdf2_speed(hash, len).map_err(|e| kerr(io, e))?;
    Ok((speed * o.iter_time.unwrap_or(2000) / 8000).clamp(1000, u32::MAX as u64) as u32)
}

/// Derive a keyslot key and seal the volume key into AF material for an area.
pub fn make_area(
    io: &mut Io<'_>,
    kdf: &Kdf,
    pass: &[u8],
    salt: &[u8],
    vk: &[u8],
    cipher: &str,
    af_hash: &str,
) -> Result<Zeroizing<Vec<u8>>, Failed> {
    let key = {
        let _p = super::progress::start(kdf);
        kdf::derive(kdf, pass, salt, vk.len()).map_err(|e| kerr(io, e))?
    };
    let material = af::split(vk, STRIPES, af_hash).map_err(|e| kerr(io, e))?;
    seal(io, cipher, &key, &material)
}

/// `luksFormat <device> [<key file>]`.
pub fn format(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let v1 = match o.ty.as_deref() {
        None | Some("luks") | Some("luks2") => false,
        Some("luks1") => true,
        Some(t) => {
            return Err(fail(
                io,
                libc::EINVAL,
                format!("Unknown or unsupported device type {t} requested."),
            ))
        }
    };
    let path = &pos[0];
    let cipher = o.cipher.clone().unwrap_or("aes-xts-plain64".into());
    let (name, mode) = cipher
        .split_once('-')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap_or((cipher.clone(), String::new()));
    let bits = o
        .key_size
        .unwrap_or(if mode.starts_with("xts") { 512 } else { 256 });
    if !bits.is_multiple_of(8) || bits == 0 {
        return Err(fail(
            io,
            libc::EINVAL,
            "Key size must be a multiple of 8 bits",
        ));
    }
    let key_len = (bits / 8) as usize;
    let hash = o.hash.clone().unwrap_or("sha256".into());
    if af::hash_size(&hash).is_none() {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Hash algorithm {hash} not supported."),
        ));
    }
    let sector_size = o.sector_size.unwrap_or(512);
    if v1 && sector_size != 512 {
        return Err(fail(
            io,
            libc::EINVAL,
            "Unsupported encryption sector size.",
        ));
    }
    if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
        return Err(fail(
            io,
            libc::EINVAL,
            "Unsupported encryption sector size.",
        ));
    }
    if let Some(u) = &o.uuid {
        if !luks::valid_uuid(u) {
            return Err(fail(io, libc::EINVAL, "Wrong LUKS UUID format provided."));
        }
    }
    let vk = match &o.volume_key_file {
        Some(f) => {
            let k = pass::read_key_file(io, f, 0, Some(key_len))?;
            Zeroizing::new(k[..key_len].to_vec())
        }
        None => luks::random_bytes(key_len),
    };
    // The cipher must take this key before anything is written.
    seal(io, &cipher, &vk, &[0u8; 512])?;
    let kdf = keyslot_kdf(io, o, v1, key_len)?;
    let dev = hdr::open_dev(io, path, true)?;
    if !o.batch {
        let _ = writeln!(
            io.err,
            "\nWARNING!\n========\nThis will overwrite data on {path} irrevocably.\n\nAre you sure? (Type 'yes' in capital letters): "
        );
        let answer = pass::get(io, None, 0, None, "", false)?;
        if &answer[..] != b"YES" {
            return Err(fail(io, libc::EPERM, "Operation aborted."));
        }
    }
    let key_file = pos.get(1).or(o.key_file.as_ref());
    let prompt = format!("Enter passphrase for {path}: ");
    let pw = pass::get(
        io,
        key_file.map(|s| s.as_str()),
        o.keyfile_offset,
        o.keyfile_size,
        &prompt,
        true,
    )?;
    let uuid = o.uuid.clone().unwrap_or_else(luks::random_uuid);
    let dig_iter = digest_iterations(io, o, &hash, key_len)?;
    let writes = if v1 {
        format1(
            io, &dev, &name, &mode, &hash, &vk, &pw, &kdf, &uuid, dig_iter,
        )?
    } else {
        let label = o.label.clone().unwrap_or_default();
        let subsystem = o.subsystem.clone().unwrap_or_default();
        format2(
            io,
            &dev,
            &cipher,
            &hash,
            &vk,
            &pw,
            &kdf,
            &uuid,
            dig_iter,
            sector_size,
            &label,
            &subsystem,
        )?
    };
    for (off, b) in &writes {
        hdr::write_all(io, &dev, *off, b)?;
    }
    Ok(())
}

type Writes = Vec<(u64, Zeroizing<Vec<u8>>)>;

#[allow(clippy::too_many_arguments)]
fn format1(
    io: &mut Io<'_>,
    dev: &Dev,
    name: &str,
    mode: &str,
    hash: &str,
    vk: &[u8],
    pw: &[u8],
    kdf: &Kdf,
    uuid: &str,
    dig_iter: u32,
) -> Result<Writes, Failed> {
    let mut h = luks1::Header::new_layout(name, mode, hash, vk.len() as u32, uuid, None)
        .map_err(|e| kerr(io, e))?;
    let need = h.payload_offset as u64 * 512;
    if dev.size <= need {
        return Err(fail(
            io,
            libc::EINVAL,
            format!(
                "Device {} is too small. (LUKS1 requires at least {} bytes.)",
                dev.path,
                need + 512
            ),
        ));
    }
    h.set_digest(vk, dig_iter).map_err(|e| kerr(io, e))?;
    let Kdf::Pbkdf2 { iterations, .. } = kdf else {
        return Err(fail(io, libc::EINVAL, "LUKS1 keyslots use PBKDF2 only."));
    };
    let salt = luks::random_bytes(32);
    let area = make_area(
        io,
        &Kdf::Pbkdf2 {
            hash: hash.into(),
            iterations: *iterations,
        },
        pw,
        &salt,
        vk,
        &h.cipher_spec(),
        hash,
    )?;
    let s = &mut h.slots[0];
    s.active = true;
    s.iterations = *iterations;
    s.salt.copy_from_slice(&salt);
    let area_off = s.offset as u64 * 512;
    let hdr_bytes = h.to_bytes().map_err(|e| kerr(io, e))?;
    Ok(vec![
        (0, Zeroizing::new(vec![0u8; need as usize])),
        (0, Zeroizing::new(hdr_bytes)),
        (area_off, area),
    ])
}

#[allow(clippy::too_many_arguments)]
fn format2(
    io: &mut Io<'_>,
    dev: &Dev,
    cipher: &str,
    hash: &str,
    vk: &[u8],
    pw: &[u8],
    kdf: &Kdf,
    uuid: &str,
    dig_iter: u32,
    sector_size: u32,
    label: &str,
    subsystem: &str,
) -> Result<Writes, Failed> {
    if dev.size <= L2_DATA {
        return Err(fail(
            io,
            libc::EINVAL,
            format!(
                "Device {} is too small. (LUKS2 requires at least {} bytes.)",
                dev.path,
                L2_DATA + 4096
            ),
        ));
    }
    let area_size = af::area_bytes(vk.len(), STRIPES).div_ceil(4096) * 4096;
    let ks_salt = luks::random_bytes(32);
    let ks = luks2::Keyslot {
        id: 0,
        key_size: vk.len(),
        priority: None,
        af_stripes: STRIPES,
        af_hash: hash.into(),
        area_offset: 2 * L2_HDR,
        area_size,
        area_encryption: cipher.into(),
        area_key_size: vk.len(),
        kdf: kdf.clone(),
        salt: ks_salt.to_vec(),
    };
    let area = make_area(io, kdf, pw, &ks_salt, vk, cipher, hash)?;
    let d_salt = luks::random_bytes(32);
    let dk = Kdf::Pbkdf2 {
        hash: "sha256".into(),
        iterations: dig_iter,
    };
    let digest = kdf::derive(&dk, vk, &d_salt, 32).map_err(|e| kerr(io, e))?;
    let dig = luks2::DigestEntry {
        id: 0,
        keyslots: vec![0],
        segments: vec![0],
        hash: "sha256".into(),
        iterations: dig_iter,
        salt: d_salt.to_vec(),
        digest: digest.to_vec(),
    };
    let seg = luks2::Segment {
        id: 0,
        offset: L2_DATA,
        size: None,
        iv_tweak: 0,
        encryption: cipher.into(),
        sector_size,
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
    salt.copy_from_slice(&luks::random_bytes(64));
    let bin = luks2::BinHeader {
        hdr_size: L2_HDR,
        seqid: 0,
        label: label.into(),
        checksum_alg: "sha256".into(),
        salt,
        uuid: uuid.into(),
        subsystem: subsystem.into(),
        hdr_offset: 0,
    };
    let mut md = luks2::Metadata::from_json(bin, json).map_err(|e| kerr(io, e))?;
    let hdr_bytes = md.to_bytes().map_err(|e| kerr(io, e))?;
    Ok(vec![
        (0, Zeroizing::new(vec![0u8; L2_DATA as usize])),
        (0, Zeroizing::new(hdr_bytes)),
        (2 * L2_HDR, area),
    ])
}
