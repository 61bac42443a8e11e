//! `crypt`: transparent sector encryption (dm-crypt, target version 1.24.0 as in kernel 6.1).
//! Table: `<cipher> <key> <iv_offset> <dev> <offset> [<#opts> <opt>…]` with the kernel's
//! cipher specs, hex / `-` / key-store keys, optional args, status and `key set|wipe`
//! messages. The ciphers themselves live in `udm-crypto` (re-exported here as `cipher`, `spec`).

pub mod aead;
pub mod keyring;
pub mod params;
pub mod setup;
mod target;

pub use udm_crypto::{cipher, spec};

pub use cipher::{CipherError, SectorCipher};
pub use params::{Features, KeySpec};
pub use spec::{Chain, CipherSpec, IvMode};
pub use target::Crypt;
pub use zeroize::{Zeroize, Zeroizing};

use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use target::{Inner, KeyState};
use udm_core::{Target, TargetCtx, TargetError, TargetType};
use udm_io::Sectors;

pub struct CryptType;

/// The key bytes a key spec stands for (a key-store reference is looked up now).
pub fn resolve_key(k: &KeySpec) -> Result<Zeroizing<Vec<u8>>, TargetError> {
    let bad = |errno| TargetError::with_errno(errno, "Error decoding and setting key");
    match k {
        KeySpec::Hex(b) => Ok(b.clone()),
        KeySpec::Empty => Ok(Zeroizing::new(Vec::new())),
        KeySpec::Keyring { size, ktype, desc } => {
            let key = keyring::lookup(ktype, desc).ok_or_else(|| {
                bad(libc::ENOKEY).with_detail(format!(
                    "no key {ktype}:{desc} in the daemon's key store (add it with `udm key add`)"
                ))
            })?;
            if key.len() != *size as usize {
                return Err(bad(libc::EINVAL).with_detail(format!(
                    "key {ktype}:{desc} has {} bytes, the table says {size}",
                    key.len()
                )));
            }
            Ok(key)
        }
    }
}

/// Mask the key of a `crypt` table's params as dmsetup does without `--showkeys`: every
/// character of the second word becomes `0` unless it is a key-store reference.
pub fn mask_key(params: &str) -> String {
    let mut words: Vec<&str> = params.split(' ').collect();
    let masked;
    if let Some(k) = words.get(1) {
        if !k.starts_with(':') {
            masked = "0".repeat(k.len());
            words[1] = &masked;
        }
    }
    words.join(" ")
}

impl TargetType for CryptType {
    fn name(&self) -> &'static str {
        "crypt"
    }
    fn version(&self) -> [u32; 3] {
        [1, 24, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        if args.len() < 5 {
            return Err(TargetError::invalid("Not enough arguments"));
        }
        params::key_size(&args[1])?;
        let feats = Features::parse(&args[5..], ctx.len)?;
        if feats.integrity.is_some() && aead::aead_api(&args[0]).is_some() {
            let shown = params::parse_key(&args[1])?;
            let bytes = resolve_key(&shown)?;
            return aead::construct(ctx, args, feats, shown, &bytes);
        }
        let spec: CipherSpec = args[0]
            .parse()
            .map_err(|e: spec::SpecError| TargetError::with_errno(e.errno(), e.to_string()))?;
        if let Some((_, aead)) = feats.integrity {
            if aead {
                return Err(
                    TargetError::invalid("Bad cipher specification").with_detail(
                        "udm's AEAD ciphers: gcm(aes), rfc7539(chacha20,poly1305) with -random",
                    ),
                );
            }
        }
        let shown = params::parse_key(&args[1])?;
        let bytes = resolve_key(&shown)?;
        let engine =
            match SectorCipher::new(&spec, &bytes, feats.sector_size, feats.iv_large_sectors) {
                Ok(e) => Some(e),
                // The random IV needs integrity metadata below; the kernel says so after opening
                // the device.
                Err(CipherError::Iv) if spec.iv == Some(IvMode::Random) => None,
                Err(e) => return Err(TargetError::with_errno(e.errno(), e.to_string())),
            };
        let spb = (feats.sector_size / 512) as u64;
        let iv_offset: u64 = udm_core::args::parse_num(&args[2])
            .filter(|v: &u64| v & (spb - 1) == 0)
            .ok_or_else(|| TargetError::invalid("Invalid iv_offset sector"))?;
        let start: Option<u64> = udm_core::args::parse_num(&args[4]);
        ctx.get_device(&args[3]).map_err(|e| {
            let detail = e.to_string();
            TargetError::with_errno(e.errno, "Device lookup failed").with_detail(detail)
        })?;
        let start = Sectors(start.ok_or_else(|| TargetError::invalid("Invalid device sector"))?);
        let engine = match engine {
            Some(e) if feats.integrity.is_none() => e,
            _ => {
                return Err(TargetError::invalid("Integrity profile not supported.")
                    .with_detail("udm has no integrity metadata (dm-integrity) below crypt"))
            }
        };
        let dev = ctx.get_device_area(&args[3], start, ctx.len)?;
        // The kernel keeps only the description of a key-store key, never the key text.
        let shown = match shown {
            KeySpec::Hex(_) => KeySpec::Hex(bytes),
            other => other,
        };
        Ok(Box::new(Crypt {
            inner: Arc::new(Inner {
                cipher: args[0].clone(),
                spec,
                key: RwLock::new(KeyState {
                    shown,
                    engine: Some(Arc::new(engine)),
                }),
                iv_offset,
                dev,
                offset: start,
                feats,
                suspended: AtomicBool::new(false),
                inflight: AtomicUsize::new(0),
            }),
        }))
    }
}
