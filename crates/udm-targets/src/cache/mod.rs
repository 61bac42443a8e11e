//! `cache`: dm-cache, an SSD tier in front of a slow origin, with the kernel's metadata
//! format (udm-pdata's `cache` module) so a cache moves between the kernel and udm.
//!
//! `cache <metadata dev> <cache dev> <origin dev> <block size> <#features> [writethrough|
//! writeback|passthrough|metadata2|no_discard_passdown]* <policy> <#policy args> [<key>
//! <value>]*`. Policies: `smq` (`mq`, `default`: aliases) and `cleaner` ([`policy`]). The
//! data path and migrations are in [`core`]. The metadata object of a metadata device is
//! shared by the tables using it (a reload while live), as the kernel shares it.

mod core;
mod levels;
mod meta_io;
mod migrate;
mod policy;
mod smq;

pub use self::core::{discard_geometry, IoMode};
pub use meta_io::DevMetaIo;
pub use migrate::TICK_ENV;
pub use policy::PolicyName;
pub use smq::hotspot_params;

use self::core::Core;
use parking_lot::Mutex;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use udm_core::target::dev_label;
use udm_core::{
    DevHandle, MapResult, Publication, StatusFlags, StatusType, Target, TargetCtx, TargetError,
    TargetType,
};
use udm_io::{Bio, DevId, Sectors};
use udm_pdata::cache::{CacheMetadata, CacheStats, METADATA_BLOCK_SECTORS};

impl FromStr for IoMode {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        match s.to_ascii_lowercase().as_str() {
            "writeback" => Ok(IoMode::Writeback),
            "writethrough" => Ok(IoMode::Writethrough),
            "passthrough" => Ok(IoMode::Passthrough),
            _ => Err(TargetError::invalid("Unrecognised cache feature requested")),
        }
    }
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoMode::Writeback => "writeback",
            IoMode::Writethrough => "writethrough",
            IoMode::Passthrough => "passthrough",
        })
    }
}

/// The parsed constructor arguments after the three devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheParams {
    pub block_size: u64,
    pub mode: IoMode,
    pub metadata_version: u32,
    pub discard_passdown: bool,
    pub policy: PolicyName,
    pub policy_args: Vec<(String, String)>,
}

const BLOCK_MIN: u64 = 64;
const BLOCK_MAX: u64 = 2_097_152;

impl CacheParams {
    /// Parse `<block size> <#features> <features>* <policy> <#policy args> <args>*`.
    pub fn from_args(args: &[String]) -> Result<CacheParams, TargetError> {
        let insufficient = || TargetError::invalid("Insufficient args");
        let mut it = args.iter();
        let bs = it.next().ok_or_else(insufficient)?;
        let block_size = crate::kscan::scan_u64(bs)
            .filter(|&b| (BLOCK_MIN..=BLOCK_MAX).contains(&b) && b % BLOCK_MIN == 0)
            .ok_or_else(|| TargetError::invalid("Invalid data block size"))?;
        let nf = it
            .next()
            .and_then(|s| crate::kscan::scan_u32(s))
            .filter(|&n| n <= 3)
            .ok_or_else(|| TargetError::invalid("Invalid number of cache feature arguments"))?;
        let (mut mode, mut modes, mut metadata_version, mut discard_passdown) =
            (IoMode::Writeback, 0, 1, true);
        for _ in 0..nf {
            let f = it.next().ok_or_else(insufficient)?;
            match f.to_ascii_lowercase().as_str() {
                "metadata2" => metadata_version = 2,
                "no_discard_passdown" => discard_passdown = false,
                _ => {
                    mode = f.parse()?;
                    modes += 1;
                }
            }
        }
        if modes > 1 {
            return Err(TargetError::invalid(
                "Duplicate cache io_mode features requested",
            ));
        }
        let policy: PolicyName = it.next().ok_or_else(insufficient)?.parse()?;
        let np = it
            .next()
            .and_then(|s| crate::kscan::scan_u32(s))
            .filter(|&n| n <= 1024)
            .ok_or_else(|| TargetError::invalid("Invalid number of policy arguments"))?;
        let rest: Vec<&String> = it.collect();
        if rest.len() != np as usize {
            return Err(TargetError::invalid("Invalid number of policy arguments"));
        }
        if np % 2 == 1 {
            return Err(TargetError::invalid(
                "Error setting cache policy's config values",
            ));
        }
        let policy_args: Vec<(String, String)> = rest
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        Ok(CacheParams {
            block_size,
            mode,
            metadata_version,
            discard_passdown,
            policy,
            policy_args,
        })
    }
}

/// The `cache` target type.
pub struct CacheType;

/// The metadata object shared by every table on one metadata device.
struct SharedMeta(Arc<Mutex<CacheMetadata>>);

fn md_err(e: udm_pdata::PdataError) -> TargetError {
    TargetError::with_errno(e.errno(), "Error creating metadata object").with_detail(e.to_string())
}

impl TargetType for CacheType {
    fn name(&self) -> &'static str {
        "cache"
    }
    fn version(&self) -> [u32; 3] {
        [2, 2, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        if args.len() < 3 {
            return Err(TargetError::invalid("Insufficient args"));
        }
        let meta = ctx.get_device(&args[0]).map_err(|e| {
            TargetError::invalid("Error opening metadata device").with_detail(e.msg)
        })?;
        let cache = ctx
            .get_device(&args[1])
            .map_err(|e| TargetError::invalid("Error opening cache device").with_detail(e.msg))?;
        let origin = ctx
            .get_device(&args[2])
            .map_err(|e| TargetError::invalid("Error opening origin device").with_detail(e.msg))?;
        if ctx.len > origin.dev.size() {
            return Err(TargetError::invalid(
                "Device size larger than cached device",
            ));
        }
        let p = CacheParams::from_args(&args[3..])?;
        if p.block_size > cache.dev.size().0 {
            return Err(TargetError::invalid(
                "Data block size is larger than the cache device",
            ));
        }
        let mut threshold = 2048u64;
        for (k, v) in &p.policy_args {
            if k.eq_ignore_ascii_case("migration_threshold") {
                threshold = crate::kscan::scan_u64(v).ok_or_else(|| {
                    TargetError::invalid("Error setting cache policy's config values")
                })?;
            } else {
                p.policy.set_config(k, v).map_err(|_| {
                    TargetError::invalid("Error setting cache policy's config values")
                })?;
            }
        }
        let (shared, publication) = open_metadata(ctx, &meta, &p)?;
        let md = shared.0.clone();
        let nr_cblocks = cache.dev.size().0 / p.block_size;
        if p.mode == IoMode::Passthrough {
            let dirty = md
                .lock()
                .mappings(None)
                .map_err(md_err)?
                .iter()
                .any(|m| m.dirty);
            if dirty {
                return Err(TargetError::invalid(
                    "Cannot enter passthrough mode unless all blocks are clean",
                ));
            }
        }
        let core = Arc::new(Core::new(
            p.block_size,
            ctx.len.0,
            nr_cblocks,
            p.mode,
            p.policy,
            p.discard_passdown,
            origin.dev.clone(),
            cache.dev.clone(),
            md,
            ctx.worker("cache"),
        ));
        core.migration_threshold.store(threshold, SeqCst);
        migrate::start_ticker(&core);
        Ok(Box::new(CacheTarget {
            core,
            p,
            devs: [dev_label(&meta), dev_label(&cache), dev_label(&origin)],
            table_args: args[3..].to_vec(),
            loaded: Mutex::new(false),
            synced: std::sync::atomic::AtomicBool::new(false),
            _meta: meta,
            _publication: publication,
            _shared: shared,
        }))
    }
}

/// Open (or share) the metadata of `meta`, formatting an all-zero device.
fn open_metadata(
    ctx: &TargetCtx<'_>,
    meta: &Arc<DevHandle>,
    p: &CacheParams,
) -> Result<(Arc<SharedMeta>, Option<Publication>), TargetError> {
    if let Some(shared) = ctx.lookup::<SharedMeta>(&meta.id) {
        let bs = shared.0.lock().superblock().data_block_size as u64;
        if bs != p.block_size {
            return Err(
                TargetError::invalid("Error creating metadata object").with_detail(format!(
                    "data_block_size ({}) different from that in metadata ({bs})",
                    p.block_size
                )),
            );
        }
        let publication = ctx.publish_as(meta.id.clone(), &shared).ok();
        return Ok((shared, publication));
    }
    let io: Arc<dyn udm_pdata::io::MetaIo> = Arc::new(meta_io::DevMetaIo::new(meta.dev.clone()));
    let unformatted = CacheMetadata::is_unformatted(&*io).map_err(md_err)?;
    let md = if unformatted {
        CacheMetadata::format(io, p.block_size as u32, p.metadata_version)
    } else {
        CacheMetadata::open(io, p.block_size as u32)
    }
    .map_err(md_err)?;
    let shared = Arc::new(SharedMeta(Arc::new(Mutex::new(md))));
    let publication = ctx.publish_as(meta.id.clone(), &shared).ok();
    Ok((shared, publication))
}

/// One `cache` table line.
pub struct CacheTarget {
    core: Arc<Core>,
    p: CacheParams,
    devs: [DevId; 3],
    table_args: Vec<String>,
    loaded: Mutex<bool>,
    /// The metadata was synced (marked clean) since the last resume.
    synced: std::sync::atomic::AtomicBool,
    _meta: Arc<DevHandle>,
    _publication: Option<Publication>,
    /// Keeps the published metadata object alive for tables loaded after this one.
    _shared: Arc<SharedMeta>,
}

impl Drop for CacheTarget {
    /// Removing a live device suspends it first in the kernel: sync and mark clean.
    fn drop(&mut self) {
        self.core.quiesce();
        if *self.loaded.lock() && !self.synced.load(SeqCst) {
            self.sync_metadata();
        }
    }
}

impl CacheTarget {
    /// Size the metadata to the cache device and load the mappings (first resume).
    fn load(&self) -> Result<(), TargetError> {
        let mut loaded = self.loaded.lock();
        if *loaded {
            return Ok(());
        }
        let c = &self.core;
        let policy = self.p.policy.id();
        let nr = c.nr_cblocks;
        let (mappings, discards) = {
            let mut md = c.md.lock();
            let fail = |e: udm_pdata::PdataError| TargetError::invalid(e.to_string());
            if md.cache_blocks() != nr {
                md.resize(nr).map_err(fail)?;
            }
            let (dbs, dnr) = (c.discard_bs, c.nr_discard);
            let old_bs = md.superblock().discard_block_size;
            if md.superblock().discard_nr_blocks != dnr || old_bs != dbs {
                md.resize_discards(dbs, dnr).map_err(fail)?;
                if old_bs != dbs {
                    // Bits of another geometry mean nothing now.
                    for b in 0..dnr {
                        md.set_discard(b, false).map_err(fail)?;
                    }
                }
            }
            let discards = md.discards().map_err(fail)?;
            (md.mappings(Some(&policy)).map_err(fail)?, discards)
        };
        c.load(&mappings, &discards);
        // The counters continue from the last sync (the kernel reads them in its
        // constructor; here after the previous table's suspend wrote them).
        let stats = c.md.lock().stats();
        c.counters.read_hits.store(stats.read_hits as u64, SeqCst);
        c.counters
            .read_misses
            .store(stats.read_misses as u64, SeqCst);
        c.counters.write_hits.store(stats.write_hits as u64, SeqCst);
        c.counters
            .write_misses
            .store(stats.write_misses as u64, SeqCst);
        *loaded = true;
        Ok(())
    }

    /// The kernel's `sync_metadata`: dirty bits, discards, stats, hints, then a commit that
    /// marks the metadata clean.
    fn sync_metadata(&self) -> bool {
        let policy = self.p.policy.id();
        self.core.on_worker(move |c| {
            if c.failed.load(SeqCst) {
                return false;
            }
            let (mapped, hints, discards) = c.snapshot();
            let stats = CacheStats {
                read_hits: c.counters.read_hits.load(SeqCst) as u32,
                read_misses: c.counters.read_misses.load(SeqCst) as u32,
                write_hits: c.counters.write_hits.load(SeqCst) as u32,
                write_misses: c.counters.write_misses.load(SeqCst) as u32,
            };
            let mut md = c.md.lock();
            let mut r = Ok(());
            for (cb, dirty) in mapped {
                r = r.and_then(|_| md.set_dirty(cb, dirty));
            }
            if let Some(discards) = discards {
                for (b, d) in discards.into_iter().enumerate() {
                    r = r.and_then(|_| md.set_discard(b as u64, d));
                }
            }
            md.set_stats(stats);
            r = r
                .and_then(|_| md.write_hints(&policy, &hints))
                .and_then(|_| md.commit(true));
            if let Err(e) = r {
                tracing::error!("cache: could not write cache metadata: {e}");
                return false;
            }
            true
        })
    }

    fn info(&self) -> String {
        let c = &self.core;
        let (free, total) = c.md.lock().metadata_usage();
        let (resident, dirty) = c.usage();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(SeqCst);
        let mut s = format!(
            "{} {}/{} {} {}/{} {} {} {} {} {} {} {} ",
            METADATA_BLOCK_SECTORS,
            total - free,
            total,
            c.bs,
            resident,
            c.nr_cblocks,
            n(&c.counters.read_hits),
            n(&c.counters.read_misses),
            n(&c.counters.write_hits),
            n(&c.counters.write_misses),
            n(&c.counters.demotions),
            n(&c.counters.promotions),
            dirty
        );
        let v2 = self.p.metadata_version == 2;
        let count = v2 as u32 + !self.p.discard_passdown as u32 + 1;
        s.push_str(&format!("{count} "));
        if v2 {
            s.push_str("metadata2 ");
        }
        s.push_str(&format!("{} ", self.p.mode));
        if !self.p.discard_passdown {
            s.push_str("no_discard_passdown ");
        }
        s.push_str(&format!(
            "2 migration_threshold {} ",
            c.migration_threshold.load(SeqCst)
        ));
        s.push_str(&format!("{} ", self.p.policy.real_name()));
        s.push_str(&self.p.policy.emit_config());
        s.push_str(if c.failed.load(SeqCst) { "ro " } else { "rw " });
        s.push_str(if c.md.lock().needs_check() {
            "needs_check "
        } else {
            "- "
        });
        s
    }
}

impl Target for CacheTarget {
    fn map(&self, bio: Bio) -> MapResult {
        self.core.map(bio)
    }

    fn max_io_len(&self) -> Option<Sectors> {
        Some(Sectors(self.core.bs))
    }

    /// As the kernel: unless the stacked optimal I/O is a multiple of the block size, the
    /// block size becomes the minimum and optimal I/O.
    fn io_hints(&self, limits: &mut udm_io::Limits) {
        let bytes = (self.core.bs * 512) as u32;
        if limits.io_opt < bytes || !limits.io_opt.is_multiple_of(bytes) {
            limits.io_min = bytes;
            limits.io_opt = bytes;
        }
    }

    fn status(&self, ty: StatusType, flags: StatusFlags) -> String {
        match ty {
            StatusType::Info => {
                if !flags.noflush {
                    self.core.on_worker(|c| c.commit());
                }
                self.info()
            }
            StatusType::Table => {
                let e = |d: &DevId| udm_core::escape_arg(&d.to_string()).into_owned();
                let mut s = format!(
                    "{} {} {}",
                    e(&self.devs[0]),
                    e(&self.devs[1]),
                    e(&self.devs[2])
                );
                for a in &self.table_args {
                    s.push(' ');
                    s.push_str(a);
                }
                s
            }
        }
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        if self.core.failed.load(SeqCst) {
            return Err(TargetError::with_errno(
                libc::EOPNOTSUPP,
                "unable to service cache target messages in READ_ONLY or FAIL mode",
            ));
        }
        if argv[0].eq_ignore_ascii_case("invalidate_cblocks") {
            return self.invalidate(&argv[1..]).map(|_| None);
        }
        if argv.len() != 2 {
            return Err(TargetError::invalid("Invalid message"));
        }
        if argv[0].eq_ignore_ascii_case("migration_threshold") {
            let v = crate::kscan::scan_u64(&argv[1]).ok_or_else(|| {
                TargetError::invalid(format!("bad config value for {}: {}", argv[0], argv[1]))
            })?;
            self.core.migration_threshold.store(v, SeqCst);
            return Ok(None);
        }
        self.p.policy.set_config(&argv[0], &argv[1]).map(|_| None)
    }

    fn postsuspend(&self) {
        self.core.quiesce();
        if *self.loaded.lock() {
            self.sync_metadata();
            self.synced.store(true, SeqCst);
        }
    }

    fn preresume(&self) -> Result<(), TargetError> {
        self.load()
    }

    fn resume(&self) {
        self.synced.store(false, SeqCst);
        self.core.unquiesce();
        if self.p.policy == PolicyName::Cleaner {
            let c = self.core.clone();
            self.core.worker.spawn(move || c.clean_all());
        }
    }
}

impl CacheTarget {
    fn invalidate(&self, ranges: &[String]) -> Result<(), TargetError> {
        if self.p.mode != IoMode::Passthrough {
            return Err(TargetError::with_errno(
                libc::EPERM,
                "cache has to be in passthrough mode for invalidation",
            ));
        }
        let n = self.core.nr_cblocks;
        let mut parsed = Vec::new();
        for r in ranges {
            let (b, e) = match r.split_once('-') {
                Some((b, e)) => (crate::kscan::scan_u64(b), crate::kscan::scan_u64(e)),
                None => {
                    let b = crate::kscan::scan_u64(r);
                    (b, b.map(|b| b + 1))
                }
            };
            let (Some(b), Some(e)) = (b, e) else {
                return Err(TargetError::invalid(format!("invalid cblock range '{r}'")));
            };
            if b >= n {
                return Err(TargetError::invalid(format!(
                    "begin cblock out of range: {b} >= {n}"
                )));
            }
            if e > n {
                return Err(TargetError::invalid(format!(
                    "end cblock out of range: {e} > {n}"
                )));
            }
            if b >= e {
                return Err(TargetError::invalid(format!(
                    "invalid cblock range: {b} >= {e}"
                )));
            }
            parsed.push((b, e));
        }
        self.core.on_worker(move |c| {
            for (b, e) in parsed {
                for cb in b..e {
                    c.invalidate_cblock(cb);
                }
            }
            c.commit();
        });
        Ok(())
    }
}
