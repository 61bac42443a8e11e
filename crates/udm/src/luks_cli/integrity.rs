//! `luksFormat --integrity`: the authenticated cipher an option pair names, and the data
//! area as cryptsetup leaves it — a dm-integrity device (no internal hash, the crypt layer's
//! IV and tag per sector) at the data offset, wiped with encrypted zeros through a crypt
//! mapping over it so every sector has a valid tag (unless `--integrity-no-wipe`).

use super::{fail, Failed, Io, Opts};
use std::path::Path;
use udm_formats::luks::Zeroizing;
use udm_targets::crypt::setup::{luks2_integrity_cipher, table_params, CryptFlags, CryptMapping};
use udm_targets::integrity::setup::{format_at, kernel_alg, SetupOpts, Wipe};

/// LUKS2 data offset of a new header (cryptsetup's default), in sectors.
const DATA_OFFSET: u64 = (16 << 20) / 512;

/// An authenticated cipher for a new LUKS2 volume.
pub struct Auth {
    /// The segment's `integrity.type` (`hmac(sha256)`, `aead`).
    pub segment_type: String,
    /// The kernel cipher of the crypt table (`capi:authenc(hmac(sha256),xts(aes))-random`).
    pub kernel_cipher: String,
    /// Tag bytes per sector on the integrity device (IV and authentication tag).
    pub tag_size: u32,
    /// Bytes the MAC key adds to the volume key.
    pub mac_key_len: usize,
}

impl Auth {
    /// The cipher `--cipher` and `--integrity` name, with `bits` of encryption key.
    pub fn new(io: &mut Io<'_>, cipher: &str, integrity: &str, bits: u32) -> Result<Self, Failed> {
        let segment_type = kernel_alg(integrity);
        let mac_key_len = match segment_type.as_str() {
            "hmac(sha256)" => 32,
            _ => 0,
        };
        let Some((kernel_cipher, tag_size)) = luks2_integrity_cipher(cipher, &segment_type) else {
            return Err(fail(
                io,
                libc::ENOTSUP,
                format!("udm has no authenticated cipher {cipher} with integrity {integrity} (udm: aes-xts-random with hmac-sha256, aes-gcm-random with aead, chacha20-random with poly1305)."),
            ));
        };
        let name = cipher.split('-').next().unwrap_or("");
        let mode = cipher.split('-').nth(1).unwrap_or("");
        let ok = match (name, mode) {
            ("aes", "xts") => bits == 256 || bits == 512,
            ("aes", _) => matches!(bits, 128 | 192 | 256),
            _ => bits == 256,
        };
        if !ok {
            return Err(fail(
                io,
                libc::EINVAL,
                format!("Cipher {cipher} (key size {bits} bits) is not available."),
            ));
        }
        Ok(Auth {
            segment_type,
            kernel_cipher,
            tag_size,
            mac_key_len,
        })
    }
}

/// Format the integrity device at the data offset of `path` and (unless
/// `--integrity-no-wipe`) fill it with zeros encrypted under `vk`.
pub fn format_data(
    io: &mut Io<'_>,
    o: &Opts,
    path: &str,
    a: &Auth,
    vk: &[u8],
    sector_size: u32,
) -> Result<(), Failed> {
    let so = SetupOpts {
        integrity: "none".into(),
        tag_size: Some(a.tag_size),
        sector_size: Some(sector_size),
        ..SetupOpts::default()
    };
    let params = |dev: &str| {
        let m = CryptMapping {
            cipher: a.kernel_cipher.clone(),
            key: Zeroizing::new(vk.to_vec()),
            iv_offset: 0,
            offset: 0,
            sectors: 0,
            sector_size,
            uuid: String::new(),
            key_desc: None,
            integrity: Some((a.tag_size, "aead".into())),
        };
        table_params(&m, &CryptFlags::default(), dev).to_string()
    };
    let wipe = if o.integrity_no_wipe {
        Wipe::None
    } else {
        if !o.batch {
            let _ = writeln!(io.out, "Wiping device to initialize integrity checksum.\nYou can interrupt this by pressing CTRL+c (rest of not wiped device will contain invalid checksum).");
        }
        Wipe::Crypt { params: &params }
    };
    format_at(Path::new(path), DATA_OFFSET, &so, &wipe)
        .map(|_| ())
        .map_err(|e| {
            fail(
                io,
                libc::EINVAL,
                format!("Cannot format integrity for device {path}.\n{e}"),
            )
        })
}
