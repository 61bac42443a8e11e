//! `verity`: a read-only device whose every block is checked against a hash tree (dm-verity,
//! target version 1.9.0 as in kernel 6.1), with optional Reed-Solomon FEC from a separate
//! device. The on-disk formats live in `udm_formats::verity`.

mod cache;
mod fec;
mod io;
pub mod params;
pub mod sig;
mod store;
mod target;

pub use params::{FecParams, Mode, VerityParams};
pub use target::{BlockType, Verity};

use std::sync::Arc;
use udm_core::{Target, TargetCtx, TargetError, TargetFeatures, TargetType};
use udm_formats::verity::{
    BlockHasher, Digest, FecLayout, Geometry, HashAlg, HashType, VerityError,
};

/// (blocks, bytes) held in the process's verified-block cache (the sharded cache and the
/// data blocks kept in memfds) by every verity target, and the budget they share in bytes
/// (`UDM_VERITY_CACHE_MB`, else 1/8 of memory up to 2 GiB).
pub fn cache_usage() -> (usize, usize, usize) {
    let c = cache::global();
    let (n, b) = c.usage(None);
    let (sn, sb) = store::usage_all();
    (n + sn, b + sb, c.budget())
}

/// Whether targets with `bs`-byte data blocks keep verified blocks in a memfd that NBD
/// replies splice from (one page per block, shmem without transparent huge pages).
pub fn zero_copy_available(bs: u32) -> bool {
    store::usable(bs as usize)
}

pub struct VerityType;

fn e2big(m: &str) -> TargetError {
    TargetError::with_errno(libc::E2BIG, m)
}

fn lookup_err(msg: &str) -> impl FnOnce(TargetError) -> TargetError + '_ {
    move |e| {
        let detail = e.to_string();
        TargetError::with_errno(e.errno, msg).with_detail(detail)
    }
}

/// `root_hash_sig_key_desc DESC`: the `user` key DESC holds a PKCS#7 signature of the root
/// digest text that must verify against the daemon's trusted certificates.
fn verify_root_hash_sig(desc: &str, root_hex: &str) -> Result<(), TargetError> {
    let blob = crate::crypt::keyring::lookup("user", desc).ok_or_else(|| {
        TargetError::with_errno(
            libc::ENOKEY,
            "DM Verity Sig Verification Invalid key specified",
        )
        .with_detail(format!(
            "no key user:{desc} in the daemon's key store (add the signature with `udm key add user {desc}`)"
        ))
    })?;
    sig::verify_pkcs7(root_hex.as_bytes(), &blob).map_err(|e| {
        TargetError::with_errno(e.errno, "Root hash verification failed").with_detail(e.msg)
    })
}

impl TargetType for VerityType {
    fn name(&self) -> &'static str {
        "verity"
    }
    fn version(&self) -> [u32; 3] {
        [1, 9, 0]
    }
    fn features(&self) -> TargetFeatures {
        TargetFeatures {
            immutable: true,
            ..TargetFeatures::default()
        }
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        if !ctx.read_only {
            return Err(TargetError::invalid("Device must be readonly"));
        }
        let mut p = VerityParams::from_args(args)?;
        let data = ctx
            .get_device_area(&p.data_dev, udm_io::Sectors(0), ctx.len)
            .map_err(lookup_err("Data device lookup failed"))?;
        let hash = ctx
            .get_device(&p.hash_dev)
            .map_err(lookup_err("Hash device lookup failed"))?;
        if p.data_block_size < data.dev.limits().logical_block_size {
            return Err(TargetError::invalid("Invalid data device block size"));
        }
        if p.hash_block_size < hash.dev.limits().logical_block_size {
            return Err(TargetError::invalid("Invalid hash device block size"));
        }
        let data_spb = (p.data_block_size / 512) as u64;
        if ctx.len.0 > p.data_blocks.saturating_mul(data_spb) {
            return Err(TargetError::invalid("Data device is too small"));
        }
        let alg = HashAlg::from_name(&p.alg).map_err(|e| {
            TargetError::with_errno(libc::ENOENT, "Cannot initialize hash function")
                .with_detail(e.to_string())
        })?;
        if (p.hash_block_size as usize) < alg.digest_size() * 2 {
            return Err(TargetError::invalid("Digest size too big"));
        }
        if p.root_digest.len() != alg.digest_size() {
            return Err(TargetError::invalid("Invalid root digest"));
        }
        let fec_dev = match p.fec.dev.clone() {
            Some(d) => Some(
                ctx.get_device(&d)
                    .map_err(lookup_err("FEC device lookup failed"))?,
            ),
            None => None,
        };
        if let Some(desc) = &p.sig_key_desc {
            // The kernel signs and checks the root digest as written in the table.
            verify_root_hash_sig(desc, args.get(8).map_or("", String::as_str))?;
        }
        let ty = HashType::from_u32(p.version).unwrap_or(HashType::Normal);
        let geo = Geometry::new(
            ty,
            alg,
            p.data_block_size,
            p.hash_block_size,
            p.data_blocks,
            p.hash_start,
        )
        .map_err(|e| match e {
            VerityError::TooManyLevels => e2big("Too many tree levels"),
            VerityError::Overflow => e2big("Hash device offset overflow"),
            other => TargetError::invalid(other.to_string()),
        })?;
        let hbs_sectors = (p.hash_block_size / 512) as u64;
        let hash_dev_blocks = hash.dev.size().0 / hbs_sectors;
        if hash_dev_blocks < geo.hash_end() {
            return Err(e2big("Hash device is too small").with_detail(format!(
                "the tree ends at hash block {}, the device has {hash_dev_blocks}",
                geo.hash_end()
            )));
        }
        let fec = match fec_dev {
            None => {
                p.fec = FecParams::default();
                None
            }
            Some(dev) => {
                if p.data_block_size != p.hash_block_size {
                    return Err(TargetError::invalid("Block sizes must match to use FEC"));
                }
                let roots = p
                    .fec
                    .roots
                    .ok_or_else(|| TargetError::invalid("Missing fec_roots"))?;
                let blocks = p
                    .fec
                    .blocks
                    .ok_or_else(|| TargetError::invalid("Missing fec_blocks"))?;
                if blocks < p.data_blocks + geo.tree_blocks() {
                    return Err(TargetError::invalid("Invalid fec_blocks"));
                }
                if hash_dev_blocks < blocks - p.data_blocks {
                    return Err(e2big("Hash device is too small for fec_blocks"));
                }
                let layout = FecLayout::new(
                    roots,
                    p.data_block_size,
                    blocks,
                    p.data_blocks,
                    p.hash_start,
                )
                .map_err(|_| TargetError::invalid("Invalid fec_blocks"))?;
                let have = dev
                    .dev
                    .size()
                    .bytes()
                    .0
                    .saturating_sub(p.fec.start.saturating_mul(p.data_block_size as u64));
                if have < layout.parity_bytes() {
                    return Err(e2big("FEC device is too small"));
                }
                if data.dev.size().0 / data_spb < p.data_blocks {
                    return Err(e2big("Data device is too small"));
                }
                Some(fec::FecRuntime::new(dev, layout, p.fec.start))
            }
        };
        let hasher = BlockHasher::new(alg, ty, &p.salt);
        let root = Digest::from_slice(&p.root_digest);
        let mut inner = target::Inner::new(p, geo, hasher, root, data, hash, fec);
        inner.event = Some(ctx.event_trigger());
        Ok(Box::new(Verity {
            inner: Arc::new(inner),
        }))
    }
}
