//! The `thin` target: a virtual device whose blocks the pool provisions on first write.
//! `map` never blocks: reads and plain writes of mappings the pool has cached are remapped
//! at once; everything else goes to the pool's worker (see `io`, `batch`), which looks
//! the block up and remaps, provisions, copies or unmaps. While the pool is suspended its
//! thin devices' bios are held, as the kernel suspends every active thin with its pool.
//! Block status reports unmapped blocks as holes.

use super::params::ThinParams;
use super::pool::{Pool, PoolMode};
use super::status::{dev_root, highest_mapped, thin_info};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::{
    DevHandle, DeviceState, MapResult, Requeuer, StatusFlags, StatusType, Target, TargetCtx,
    TargetError,
};
use udm_io::device::Extent;
use udm_io::{Bio, BioFlags, IoError, Limits, Op, Sectors};
use udm_pdata::btree;

/// What a thin device's I/O needs, shared with the jobs on the pool's worker.
pub struct ThinShared {
    pub pool: Arc<Pool>,
    pub dev_id: u64,
    /// The pool's mapped device: data I/O goes through it (and so through its table).
    pub pool_dev: Arc<DevHandle>,
    pub origin: Option<Arc<DevHandle>>,
    /// External origin size in sectors (read at resume).
    pub origin_size: AtomicU64,
    /// The device is suspending with noflush: bios the pool would hold or queue go back to
    /// the device instead (the kernel's `requeue_mode`).
    pub(crate) requeue_mode: AtomicBool,
    pub(crate) requeuer: Requeuer,
}

impl ThinShared {
    /// Queue `bio` for the pool's worker.
    pub(crate) fn defer(self: &Arc<Self>, bio: Bio) {
        self.pool.enqueue(self.clone(), bio);
    }

    /// Remap a read of a cached mapping, or a plain write to a cached exclusive one, to its
    /// data block (`Ok`); anything else needs the metadata (`Err`). Never waits.
    pub(crate) fn remap_cached(&self, mut bio: Bio) -> Result<Bio, Bio> {
        let special = BioFlags::FUA.with(BioFlags::PREFLUSH);
        let write = match bio.op {
            Op::Read => false,
            Op::Write if bio.flags.0 & special.0 == 0 => true,
            _ => return Err(bio),
        };
        let bs = self.pool.block_size;
        let v = bio.sector.0 / bs;
        match self.pool.cached(self.dev_id, v) {
            Some((b, excl)) if !write || excl => {
                bio.sector = Sectors(b * bs + bio.sector.0 % bs);
                Ok(bio)
            }
            _ => Err(bio),
        }
    }
}

/// One `thin` table line.
pub struct ThinTarget {
    t: Arc<ThinShared>,
    params: ThinParams,
    state: DeviceState,
}

impl Drop for ThinTarget {
    fn drop(&mut self) {
        self.t.pool.close_thin(self.t.dev_id);
    }
}

fn lookup_err(msg: &'static str) -> impl FnOnce(TargetError) -> TargetError {
    move |e| {
        let detail = e.to_string();
        TargetError::with_errno(e.errno, msg).with_detail(detail)
    }
}

/// The constructor (`thin_ctr`).
pub(crate) fn construct(
    ctx: &mut TargetCtx<'_>,
    args: &[String],
) -> Result<Box<dyn Target>, TargetError> {
    let mut p = ThinParams::from_args(args)?;
    let origin = match &p.origin {
        Some(o) => Some(
            ctx.get_device(o)
                .map_err(lookup_err("Error opening origin device"))?,
        ),
        None => None,
    };
    let pool_dev = ctx
        .get_device(&p.pool_dev)
        .map_err(lookup_err("Error opening pool device"))?;
    p.check_dev_id(&args[1])?;
    if pool_dev.dm_name.is_none() {
        return Err(TargetError::invalid("Couldn't get pool mapped device"));
    }
    let pool = ctx
        .lookup::<Pool>(&pool_dev.id)
        .ok_or_else(|| TargetError::invalid("Couldn't find pool object"))?;
    if pool.mode() == PoolMode::Fail {
        return Err(TargetError::invalid(
            "Couldn't open thin device, Pool is in fail mode",
        ));
    }
    let exists = pool
        .inspect(|md| Ok(md.details(p.dev_id)?.is_some()))
        .map_err(|e| TargetError::with_errno(e.errno(), "Couldn't open thin internal device"))?;
    if !exists {
        return Err(TargetError::with_errno(
            libc::ENODATA,
            "Couldn't open thin internal device",
        ));
    }
    if pool.is_suspended() {
        return Err(TargetError::invalid(
            "Unable to activate thin device while pool is suspended",
        ));
    }
    p.pool_dev = pool_dev.id.to_string();
    if let Some(o) = &origin {
        p.origin = Some(o.id.to_string());
    }
    pool.open_thin(p.dev_id);
    let origin_size = origin.as_ref().map(|o| o.dev.size().0).unwrap_or(0);
    Ok(Box::new(ThinTarget {
        t: Arc::new(ThinShared {
            pool,
            dev_id: p.dev_id,
            pool_dev,
            origin,
            origin_size: AtomicU64::new(origin_size),
            requeue_mode: AtomicBool::new(false),
            requeuer: ctx.requeuer(),
        }),
        params: p,
        state: ctx.device_state(),
    }))
}

impl ThinTarget {
    /// Runs of mapped (`true`) and unmapped blocks in `[first, end)`.
    fn block_runs(&self, first: u64, end: u64) -> Option<Vec<(u64, u64, bool)>> {
        let dev = self.t.dev_id;
        let mapped = self
            .t
            .pool
            .inspect(|md| {
                let mut keys = Vec::new();
                if let Some(root) = dev_root(md, dev)? {
                    btree::walk_from(md.tm(), root, 8, first, &mut |k, _| {
                        if k >= end {
                            return Ok(false);
                        }
                        keys.push(k);
                        Ok(true)
                    })?;
                }
                Ok(keys)
            })
            .ok()?;
        let mut runs: Vec<(u64, u64, bool)> = Vec::new();
        let mut push = |a: u64, b: u64, m: bool| {
            if a >= b {
                return;
            }
            match runs.last_mut() {
                Some(last) if last.1 == a && last.2 == m => last.1 = b,
                _ => runs.push((a, b, m)),
            }
        };
        let mut at = first;
        for k in mapped {
            push(at, k, false);
            push(k, k + 1, true);
            at = k + 1;
        }
        push(at, end, false);
        Some(runs)
    }
}

impl Target for ThinTarget {
    fn map(&self, bio: Bio) -> MapResult {
        if self.t.pool.mode() == PoolMode::Fail {
            return MapResult::Kill(bio, IoError::Io);
        }
        match bio.op {
            Op::Read | Op::Write | Op::Flush => {}
            Op::Discard if self.t.pool.features().discard_enabled => {}
            _ => return MapResult::Kill(bio, IoError::NotSupported),
        }
        if self.t.requeue_mode.load(SeqCst) {
            return MapResult::Requeue(bio);
        }
        let bio = match self.t.pool.hold(&self.t, bio) {
            Ok(()) => return MapResult::Submitted,
            Err(bio) => bio,
        };
        match self.t.remap_cached(bio) {
            Ok(remapped) => MapResult::Remap(self.t.pool_dev.dev.clone(), remapped),
            Err(bio) => {
                self.t.defer(bio);
                MapResult::Submitted
            }
        }
    }

    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        if self.t.pool.mode() == PoolMode::Fail {
            return "Fail".into();
        }
        match ty {
            StatusType::Table => self.params.to_string(),
            StatusType::Info => {
                let dev = self.t.dev_id;
                let r = self.t.pool.inspect(|md| {
                    let d = md.details(dev)?;
                    let h = highest_mapped(md, dev)?;
                    Ok(d.map(|d| (d.mapped_blocks, h)))
                });
                match r {
                    Ok(Some((mapped, h))) => thin_info(mapped, h, self.t.pool.block_size),
                    Ok(None) => "-".into(),
                    Err(e) => {
                        tracing::error!("thin: status: {e:?}");
                        "Error".into()
                    }
                }
            }
        }
    }

    fn max_io_len(&self) -> Option<Sectors> {
        Some(Sectors(self.t.pool.block_size))
    }

    fn num_discard_bios(&self) -> u32 {
        u32::from(self.t.pool.features().discard_enabled)
    }

    fn io_hints(&self, limits: &mut Limits) {
        if self.t.pool.features().discard_enabled {
            limits.discard_granularity = (self.t.pool.block_size * 512) as u32;
        }
    }

    fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        let bs = self.t.pool.block_size;
        let end = sector.0 + len.0;
        let first = sector.0 / bs;
        let last = end.div_ceil(bs);
        let Some(runs) = self.block_runs(first, last) else {
            return vec![(len, Extent::Data)];
        };
        let origin_end = if self.t.origin.is_some() {
            self.t.origin_size.load(SeqCst)
        } else {
            0
        };
        let mut out: Vec<(Sectors, Extent)> = Vec::new();
        let mut push = |a: u64, b: u64, e: Extent| {
            let (a, b) = (a.max(sector.0), b.min(end));
            if a >= b {
                return;
            }
            match out.last_mut() {
                Some(last) if last.1 == e => last.0 .0 += b - a,
                _ => out.push((Sectors(b - a), e)),
            }
        };
        for (a, b, mapped) in runs {
            let (sa, sb) = (a * bs, b * bs);
            if mapped {
                push(sa, sb, Extent::Data);
            } else {
                // Unprovisioned: a hole, except where an external origin supplies data.
                let split = origin_end.clamp(sa, sb);
                push(sa, split, Extent::Data);
                push(split, sb, Extent::Hole);
            }
        }
        out
    }

    /// A noflush suspend hands back the bios the pool holds for this device (pool
    /// suspended, or out of data space) and those still queued for the worker, to be
    /// resubmitted at resume (the kernel's `thin_presuspend` / `do_noflush_start`).
    fn presuspend(&self) {
        if self.state.noflush_suspending() {
            for bio in self.t.pool.take_bios_of(&self.t) {
                self.t.requeuer.requeue(bio);
            }
        }
    }

    fn presuspend_undo(&self) {
        self.t.requeue_mode.store(false, SeqCst);
    }

    fn postsuspend(&self) {
        self.t.requeue_mode.store(false, SeqCst);
    }

    fn preresume(&self) -> Result<(), TargetError> {
        if let Some(o) = &self.t.origin {
            self.t.origin_size.store(o.dev.size().0, SeqCst);
        }
        Ok(())
    }
}
