//! `luksFormat`: options and prompts; the LUKS2 (default) or LUKS1 layout is built by
//! `udm_formats::luks::create`. Everything is checked and prepared in memory first, so a
//! failed command writes nothing. With `--integrity` the data area then becomes a
//! dm-integrity device holding each sector's IV and tag (`luks_cli::integrity`).

use super::hdr::{self, kerr, Progress};
use super::integrity;
use super::{fail, pass, Failed, Io, Opts};
use udm_formats::luks::{self, create, FormatParams, KdfParams, Zeroizing};

/// The key-derivation options.
pub fn kdf_params(o: &Opts) -> KdfParams {
    KdfParams {
        hash: o.hash.clone(),
        pbkdf: o.pbkdf.clone(),
        iter_time_ms: o.iter_time,
        force_iterations: o.pbkdf_force_iterations,
        memory_kib: o.pbkdf_memory,
        parallel: o.pbkdf_parallel,
    }
}

/// `luksFormat <device> [<key file>]`.
pub fn format(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let v1 = match o.ty.as_deref() {
        None | Some("luks") | Some("luks2") => false,
        Some("luks1") => true,
        Some(t) => return Err(kerr(io, luks::KeyslotError::Type(t.into()))),
    };
    let path = &pos[0];
    let cipher = o.cipher.clone().unwrap_or("aes-xts-plain64".into());
    let mode = cipher.split_once('-').map_or("", |(_, m)| m);
    let bits = o
        .key_size
        .unwrap_or(if mode.starts_with("xts") { 512 } else { 256 });
    let hash = o.hash.clone().unwrap_or("sha256".into());
    let sector_size = o.sector_size.unwrap_or(512);
    create::check_format(v1, bits, &hash, sector_size, o.uuid.as_deref())
        .map_err(|e| kerr(io, e))?;
    let auth = match &o.integrity {
        Some(_) if v1 => {
            return Err(fail(
                io,
                libc::EINVAL,
                "Integrity option can be used only for LUKS2 format.",
            ))
        }
        Some(i) => Some(integrity::Auth::new(io, &cipher, i, bits)?),
        None => None,
    };
    // With integrity the volume key also holds the MAC key (cryptsetup adds its size).
    let key_len = (bits / 8) as usize + auth.as_ref().map_or(0, |a| a.mac_key_len);
    let vk = match &o.volume_key_file {
        Some(f) => {
            let k = pass::read_key_file(io, f, 0, Some(key_len))?;
            Zeroizing::new(k[..key_len].to_vec())
        }
        None => luks::random_bytes(key_len),
    };
    // The cipher must take this key before anything is written.
    if auth.is_none() {
        create::seal(&cipher, &vk, &[0u8; 512]).map_err(|e| kerr(io, e))?;
    }
    let kp = kdf_params(o);
    let kdf = kp.keyslot_kdf(v1, key_len).map_err(|e| kerr(io, e))?;
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
    let params = FormatParams {
        v1,
        cipher,
        hash: hash.clone(),
        uuid: o.uuid.clone().unwrap_or_else(luks::random_uuid),
        sector_size,
        label: o.label.clone().unwrap_or_default(),
        subsystem: o.subsystem.clone().unwrap_or_default(),
        digest_iterations: kp
            .digest_iterations(&hash, key_len)
            .map_err(|e| kerr(io, e))?,
        integrity: auth.as_ref().map(|a| a.segment_type.clone()),
    };
    let writes = create::format(&params, &dev.path, dev.size, &vk, &pw, &kdf, &Progress)
        .map_err(|e| kerr(io, e))?;
    for (off, b) in &writes {
        hdr::write_all(io, &dev, *off, b)?;
    }
    if let Some(a) = &auth {
        integrity::format_data(io, o, &dev.path, a, &vk, sector_size)?;
    }
    Ok(())
}
