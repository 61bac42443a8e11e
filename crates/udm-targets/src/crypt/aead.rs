//! Authenticated `crypt` (`integrity:N:aead` in the table; in 6.1 `authenc(hmac(…),…)` is an
//! AEAD too, so HMAC volumes also say `aead`):
//! every sector gets a random IV, is sealed with associated data `sector (le64) || IV`, and
//! its tag and IV (`N` bytes: auth tag, IV, zero padding) go to the `integrity` device below
//! through its tag interface (`integrity::tags`). A sector whose tag does not verify fails
//! with EILSEQ, as the kernel's "INTEGRITY AEAD ERROR". Ciphers: `capi:gcm(aes)-random`
//! (`aes-gcm-random`), `capi:rfc7539(chacha20,poly1305)-random` (`chacha20-poly1305-random`)
//! and `capi:authenc(hmac(sha256),xts(aes))-random`.

use super::params::{format_table, to_hex, Features, KeySpec};
use crate::integrity::tags::TagDevice;
use std::sync::Arc;
use udm_core::{MapResult, StatusType, Target, TargetCtx, TargetError};
use udm_crypto::aead::SectorAead;
use udm_io::{Bio, BioFlags, IoError, Limits, Op, Sectors, WorkerPool};

/// The crypto API name of an AEAD cipher spec, or None when it is not one.
pub fn aead_api(spec: &str) -> Option<String> {
    let api = match spec {
        "aes-gcm-random" => "gcm(aes)".to_string(),
        "chacha20-poly1305-random" => "rfc7539(chacha20,poly1305)".to_string(),
        s => s
            .strip_prefix("capi:")?
            .strip_suffix("-random")?
            .to_string(),
    };
    SectorAead::supports(&api).then_some(api)
}

struct Inner {
    cipher: String,
    key: KeySpec,
    aead: SectorAead,
    iv_offset: u64,
    tags: Arc<TagDevice>,
    dev_id: String,
    offset: Sectors,
    feats: Features,
    /// Per-sector metadata size (`N`), auth tag size and IV size.
    on_disk: usize,
    sector_size: usize,
}

/// One authenticated crypt table line.
pub struct AeadCrypt {
    inner: Arc<Inner>,
    /// Its own threads: each job blocks on the integrity device's I/O, which needs the
    /// shared I/O pool.
    pool: WorkerPool,
}

/// Build the target for `cipher key iv_offset dev offset … integrity:N:kind`.
pub(crate) fn construct(
    ctx: &mut TargetCtx<'_>,
    args: &[String],
    feats: Features,
    key: KeySpec,
    bytes: &[u8],
) -> Result<Box<dyn Target>, TargetError> {
    let (n, aead_kind) = feats.integrity.expect("integrity feature");
    let api = aead_api(&args[0]).ok_or_else(|| {
        TargetError::invalid("Error allocating crypto tfm")
            .with_detail("udm's authenticated ciphers: gcm(aes), rfc7539(chacha20,poly1305), authenc(hmac(sha256),xts(aes)) with random IVs")
    })?;
    if !aead_kind {
        // integrity:N:none with an AEAD cipher: the kernel allocates a skcipher and fails.
        return Err(
            TargetError::with_errno(libc::ENOENT, "Error allocating crypto tfm")
                .with_detail("an authenticated cipher needs integrity:N:aead"),
        );
    }
    let aead = SectorAead::new(&api, bytes)
        .map_err(|e| TargetError::with_errno(e.errno(), "Error decoding and setting key"))?;
    let spb = (feats.sector_size / 512) as u64;
    let iv_offset: u64 = udm_core::args::parse_num(&args[2])
        .filter(|v: &u64| v & (spb - 1) == 0)
        .ok_or_else(|| TargetError::invalid("Invalid iv_offset sector"))?;
    let start: u64 = udm_core::args::parse_num(&args[4])
        .ok_or_else(|| TargetError::invalid("Invalid device sector"))?;
    let dev = ctx.get_device_area(&args[3], Sectors(start), ctx.len)?;
    let Some(tags) = ctx.lookup::<TagDevice>(&dev.id) else {
        return Err(TargetError::invalid("Integrity profile not supported.")
            .with_detail("the device below is not an integrity device without internal_hash"));
    };
    let on_disk = n as usize;
    if tags.tag_size() != on_disk {
        return Err(TargetError::invalid("Integrity profile tag size mismatch."));
    }
    if on_disk < aead.tag_size() + aead.iv_size() {
        return Err(TargetError::invalid("Integrity metadata too small."));
    }
    if tags.block_size() != feats.sector_size as usize {
        return Err(TargetError::invalid(
            "Integrity profile sector size mismatch.",
        ));
    }
    Ok(Box::new(AeadCrypt {
        inner: Arc::new(Inner {
            cipher: args[0].clone(),
            key: match key {
                KeySpec::Hex(_) => KeySpec::Hex(udm_crypto::Zeroizing::new(bytes.to_vec())),
                other => other,
            },
            aead,
            iv_offset,
            tags,
            dev_id: dev.id.to_string(),
            offset: Sectors(start),
            sector_size: feats.sector_size as usize,
            feats,
            on_disk,
        }),
        pool: WorkerPool::new("udm-crypt-aead", 4),
    }))
}

impl Inner {
    fn read(&self, s: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let tags = self.tags.read(self.offset.0 + s, buf)?;
        let (ts, ivs, ss) = (self.aead.tag_size(), self.aead.iv_size(), self.sector_size);
        for (i, sec) in buf.chunks_mut(ss).enumerate() {
            let t = &tags[i * self.on_disk..(i + 1) * self.on_disk];
            let rel = s + (i * ss / 512) as u64;
            if self
                .aead
                .open(rel, &t[ts..ts + ivs], sec, &t[..ts])
                .is_err()
            {
                udm_core::klog::err(
                    "crypt",
                    &format!("{}: INTEGRITY AEAD ERROR, sector {rel}", self.dev_id),
                );
                return Err(IoError::Os(libc::EILSEQ));
            }
        }
        Ok(())
    }

    fn write(&self, s: u64, data: &[u8], fua: bool) -> Result<(), IoError> {
        let mut buf = data.to_vec();
        let (ts, ivs, ss) = (self.aead.tag_size(), self.aead.iv_size(), self.sector_size);
        let mut tags = vec![0u8; buf.len() / ss * self.on_disk];
        for (i, sec) in buf.chunks_mut(ss).enumerate() {
            let t = &mut tags[i * self.on_disk..(i + 1) * self.on_disk];
            getrandom::getrandom(&mut t[ts..ts + ivs]).map_err(|_| IoError::Io)?;
            let rel = s + (i * ss / 512) as u64;
            let iv = t[ts..ts + ivs].to_vec();
            let tag = self.aead.seal(rel, &iv, sec);
            t[..ts].copy_from_slice(&tag);
        }
        self.tags.write(self.offset.0 + s, &buf, &tags, fua)
    }
}

impl Target for AeadCrypt {
    fn map(&self, mut bio: Bio) -> MapResult {
        match bio.op {
            Op::Read | Op::Write | Op::Flush => {}
            _ => return MapResult::Kill(bio, IoError::NotSupported),
        }
        let me = self.inner.clone();
        if bio.op != Op::Flush
            && (bio.sector.0 | bio.len().0) & (me.sector_size as u64 / 512 - 1) != 0
        {
            return MapResult::Kill(bio, IoError::Io);
        }
        self.pool.spawn(move || {
            let s = bio.sector.0;
            let r = match bio.op {
                Op::Flush => me.tags.flush(),
                Op::Read => {
                    let mut b = bio.take_buf();
                    let r = me.read(s, b.as_mut_slice());
                    bio.set_buf(b);
                    r
                }
                _ => {
                    let b = bio.take_buf();
                    let pre = if bio.flags.contains(BioFlags::PREFLUSH) {
                        me.tags.flush()
                    } else {
                        Ok(())
                    };
                    let r = pre
                        .and_then(|_| me.write(s, b.as_slice(), bio.flags.contains(BioFlags::FUA)));
                    bio.set_buf(b);
                    r
                }
            };
            bio.complete(r);
        });
        MapResult::Submitted
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        let i = &self.inner;
        match ty {
            StatusType::Info => String::new(),
            StatusType::Table => {
                let key = match &i.key {
                    KeySpec::Empty => "-".to_string(),
                    KeySpec::Hex(k) => to_hex(k),
                    KeySpec::Keyring { size, ktype, desc } => format!(":{size}:{ktype}:{desc}"),
                };
                format_table(&i.cipher, &key, i.iv_offset, &i.dev_id, i.offset, &i.feats)
            }
        }
    }

    fn num_discard_bios(&self) -> u32 {
        0
    }

    fn io_hints(&self, limits: &mut Limits) {
        let ss = self.inner.sector_size as u32;
        if ss > 512 {
            limits.logical_block_size = limits.logical_block_size.max(ss);
            limits.physical_block_size = limits.physical_block_size.max(ss);
            limits.io_min = limits.io_min.max(ss);
        }
    }
}
