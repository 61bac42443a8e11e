//! The `thin-pool` target: one table line over the shared [`Pool`]. Its constructor finds
//! the pool a previous table of the same device made (or opens/formats the metadata), its
//! resume binds the pool to this table (features, low water mark, events, data and
//! metadata growth), and its messages create, snapshot and delete thin devices.

use super::params::{parse_dev_id, PoolParams};
use super::pool::{MdError, Pool, PoolMode};
use super::status::pool_info;
use std::sync::Arc;
use std::time::Duration;
use udm_core::{
    DevHandle, EventTrigger, MapResult, Publication, StatusFlags, StatusType, Target, TargetCtx,
    TargetError,
};
use udm_io::{Bio, Limits, Sectors};
use udm_pdata::space_map::MAX_METADATA_BLOCKS;
use udm_pdata::PdataError;

/// One `thin-pool` table line.
pub struct PoolTarget {
    pub(crate) pool: Arc<Pool>,
    params: PoolParams,
    meta: Arc<DevHandle>,
    data: Arc<DevHandle>,
    len: Sectors,
    events: EventTrigger,
    _published: Vec<Publication>,
}

fn lookup_err(msg: &'static str) -> impl FnOnce(TargetError) -> TargetError {
    move |e| {
        let detail = e.to_string();
        TargetError::with_errno(e.errno, msg).with_detail(detail)
    }
}

/// The metadata device's usable size in blocks.
fn meta_dev_blocks(meta: &DevHandle) -> u64 {
    (meta.dev.size().0 / 8).min(MAX_METADATA_BLOCKS)
}

/// The metadata low water mark for a metadata device of `blocks` usable blocks: free
/// blocks at or below it raise an event (as the kernel's `calc_metadata_threshold`).
pub(crate) fn meta_threshold(blocks: u64) -> u64 {
    (blocks / 4).min(1024)
}

/// The constructor (`pool_ctr`).
pub(crate) fn construct(
    ctx: &mut TargetCtx<'_>,
    args: &[String],
    no_space_timeout: Duration,
) -> Result<Box<dyn Target>, TargetError> {
    let mut p = PoolParams::from_args(args)?;
    let meta = ctx
        .get_device(&p.meta_dev)
        .map_err(lookup_err("Error opening metadata block device"))?;
    let data = ctx
        .get_device_area(&p.data_dev, Sectors(0), ctx.len)
        .map_err(lookup_err("Error getting data device"))?;
    p.parse_numbers(args)?;
    p.meta_dev = meta.id.to_string();
    p.data_dev = data.id.to_string();
    let owner = ctx.owner().cloned();
    let by_meta = ctx.lookup::<Pool>(&meta.id);
    let by_owner = owner.as_ref().and_then(|o| ctx.lookup::<Pool>(o));
    let pool = match (by_meta, by_owner) {
        (Some(m), o) if o.as_ref().is_none_or(|o| !Arc::ptr_eq(o, &m)) => {
            return Err(TargetError::with_errno(
                libc::EBUSY,
                "metadata device already in use by a pool",
            ));
        }
        (_, Some(pool)) => {
            if pool.meta_id != meta.id || pool.data_id != data.id {
                return Err(TargetError::invalid("different pool cannot replace a pool"));
            }
            if pool.features().discard_enabled != p.features.discard_enabled {
                return Err(TargetError::invalid(
                    "Discard support cannot be disabled once enabled",
                ));
            }
            pool
        }
        (None, None) => Pool::open(
            &meta,
            &data,
            p.block_size,
            ctx.len.0 / p.block_size,
            p.features,
            p.low_water,
            ctx.event_trigger(),
            ctx.worker("thin-pool"),
            no_space_timeout,
        )?,
        (Some(_), None) => unreachable!("handled by the first arm"),
    };
    // `calc_metadata_threshold`: 4 MiB worth of blocks, or a quarter of the device.
    pool.set_meta_threshold(meta_threshold(meta_dev_blocks(&meta)));
    let mut published = Vec::new();
    if owner.is_some() {
        published.push(ctx.publish(&pool)?);
        published.push(ctx.publish_as(meta.id.clone(), &pool)?);
    }
    Ok(Box::new(PoolTarget {
        pool,
        params: p,
        meta,
        data,
        len: ctx.len,
        events: ctx.event_trigger(),
        _published: published,
    }))
}

fn msg_err(errno: i32, m: impl Into<String>) -> TargetError {
    TargetError::with_errno(errno, m)
}

fn md_err(e: MdError, what: String) -> TargetError {
    let errno = match &e {
        MdError::Pdata(PdataError::Invalid(_)) => libc::EINVAL,
        e => e.errno(),
    };
    let detail = match &e {
        MdError::Pdata(p) => p.to_string(),
        MdError::Mode(m) => format!("pool in {m:?} mode"),
    };
    msg_err(errno, what).with_detail(detail)
}

impl PoolTarget {
    fn arg_count(argv: &[String], want: usize) -> Result<(), TargetError> {
        if argv.len() != want {
            return Err(msg_err(
                libc::EINVAL,
                format!(
                    "Message received with {} arguments instead of {want}.",
                    argv.len()
                ),
            ));
        }
        Ok(())
    }

    fn dev_id(w: &str) -> Result<u64, TargetError> {
        parse_dev_id(w).ok_or_else(|| {
            msg_err(
                libc::EINVAL,
                format!("Message received with invalid device id: {w}"),
            )
        })
    }

    fn create_thin(&self, argv: &[String]) -> Result<(), TargetError> {
        Self::arg_count(argv, 2)?;
        let id = Self::dev_id(&argv[1])?;
        let fail = || {
            format!(
                "Creation of new thinly-provisioned device with id {} failed.",
                argv[1]
            )
        };
        let exists = self
            .pool
            .inspect(|md| Ok(md.details(id)?.is_some()))
            .map_err(|e| md_err(e, fail()))?;
        if exists {
            return Err(msg_err(libc::EEXIST, fail()));
        }
        self.pool
            .with_md(true, |md| md.create_thin(id))
            .map_err(|e| md_err(e, fail()))
    }

    fn create_snap(&self, argv: &[String]) -> Result<(), TargetError> {
        Self::arg_count(argv, 3)?;
        let id = Self::dev_id(&argv[1])?;
        let origin = Self::dev_id(&argv[2])?;
        let fail = || {
            format!(
                "Creation of new snapshot {} of device {} failed.",
                argv[1], argv[2]
            )
        };
        let (exists, origin_exists) = self
            .pool
            .inspect(|md| Ok((md.details(id)?.is_some(), md.details(origin)?.is_some())))
            .map_err(|e| md_err(e, fail()))?;
        if exists {
            return Err(msg_err(libc::EEXIST, fail()));
        }
        if !origin_exists {
            return Err(msg_err(libc::ENODATA, fail()));
        }
        self.pool.forget_dev(origin, true);
        self.pool
            .with_md(true, |md| md.create_snap(id, origin))
            .map_err(|e| md_err(e, fail()))
    }

    fn delete(&self, argv: &[String]) -> Result<(), TargetError> {
        Self::arg_count(argv, 2)?;
        let id = Self::dev_id(&argv[1])?;
        let fail = || format!("Deletion of thin device {} failed.", argv[1]);
        if self.pool.is_open(id) {
            return Err(msg_err(libc::EBUSY, fail()));
        }
        let exists = self
            .pool
            .inspect(|md| Ok(md.details(id)?.is_some()))
            .map_err(|e| md_err(e, fail()))?;
        if !exists {
            return Err(msg_err(libc::ENODATA, fail()));
        }
        self.pool.forget_dev(id, false);
        self.pool
            .with_md(true, |md| md.delete(id))
            .map_err(|e| md_err(e, fail()))
    }

    fn set_transaction_id(&self, argv: &[String]) -> Result<(), TargetError> {
        Self::arg_count(argv, 3)?;
        let num = |w: &str, what: &str| {
            udm_core::args::parse_num::<u64>(w).ok_or_else(|| {
                msg_err(
                    libc::EINVAL,
                    format!("set_transaction_id message: Unrecognised {what} {w}."),
                )
            })
        };
        let old = num(&argv[1], "id")?;
        let new = num(&argv[2], "new id")?;
        let fail = || {
            format!(
                "Failed to change transaction id from {} to {}.",
                argv[1], argv[2]
            )
        };
        let cur = self
            .pool
            .inspect(|md| Ok(md.superblock().trans_id))
            .map_err(|e| md_err(e, fail()))?;
        if cur != old {
            return Err(msg_err(libc::EINVAL, fail()).with_detail(format!(
                "mismatched transaction id: the pool's is {cur}, the message says {old}"
            )));
        }
        self.pool
            .with_md(true, |md| {
                md.set_transaction_id(new);
                Ok(())
            })
            .map_err(|e| md_err(e, fail()))
    }

    fn reserve_metadata_snap(&self, argv: &[String]) -> Result<(), TargetError> {
        Self::arg_count(argv, 1)?;
        let fail = || "reserve_metadata_snap message failed.".to_string();
        let _ = self.pool.commit();
        let held = self
            .pool
            .inspect(|md| Ok(md.superblock().metadata_snap))
            .map_err(|e| md_err(e, fail()))?;
        if held != 0 {
            return Err(msg_err(libc::EBUSY, fail()).with_detail(
                "Pool metadata snapshot already exists: release this before taking another.",
            ));
        }
        self.pool
            .with_md(true, |md| md.reserve_metadata_snap().map(|_| ()))
            .map_err(|e| md_err(e, fail()))
    }

    fn release_metadata_snap(&self, argv: &[String]) -> Result<(), TargetError> {
        Self::arg_count(argv, 1)?;
        let fail = || "release_metadata_snap message failed.".to_string();
        let held = self
            .pool
            .inspect(|md| Ok(md.superblock().metadata_snap))
            .map_err(|e| md_err(e, fail()))?;
        if held == 0 {
            return Err(msg_err(libc::EINVAL, fail())
                .with_detail("No pool metadata snapshot found: please acquire one."));
        }
        self.pool
            .with_md(true, |md| md.release_metadata_snap())
            .map_err(|e| md_err(e, fail()))
    }

    /// Grow the data and metadata space maps to this table's sizes (`maybe_resize_*`).
    fn resize(&self) -> Result<bool, TargetError> {
        let pool = &self.pool;
        let want = self.len.0 / pool.block_size;
        let (have, meta_have, needs_check) = pool
            .inspect(|md| {
                Ok((
                    md.data_sm().core().nr_blocks(),
                    md.superblock().metadata_nr_blocks,
                    md.superblock().flags & udm_pdata::thin::NEEDS_CHECK != 0,
                ))
            })
            .map_err(|e| md_err(e, "failed to retrieve data device size".into()))?;
        let mut changed = false;
        if want < have {
            return Err(TargetError::invalid(format!(
                "pool target ({want} blocks) too small: expected {have}"
            )));
        }
        let meta_want = meta_dev_blocks(&self.meta);
        if meta_want < meta_have {
            return Err(TargetError::invalid(format!(
                "metadata device ({meta_want} blocks) too small: expected {meta_have}"
            )));
        }
        if want > have {
            if needs_check {
                tracing::error!("thin-pool: unable to grow the data device until repaired.");
            } else {
                tracing::info!("thin-pool: growing the data device from {have} to {want} blocks");
                pool.with_md(true, |md| md.resize_data(want))
                    .map_err(|e| md_err(e, "dm_pool_resize_data_dev failed".into()))?;
                changed = true;
            }
        }
        if meta_want > meta_have && !needs_check {
            tracing::info!(
                "thin-pool: growing the metadata device from {meta_have} to {meta_want} blocks"
            );
            pool.with_md(true, |md| md.resize_metadata(meta_want))
                .map_err(|e| md_err(e, "dm_pool_resize_metadata_dev failed".into()))?;
            changed = true;
        }
        Ok(changed)
    }
}

impl Target for PoolTarget {
    fn map(&self, bio: Bio) -> MapResult {
        MapResult::Remap(self.data.dev.clone(), bio)
    }

    fn status(&self, ty: StatusType, flags: StatusFlags) -> String {
        match ty {
            StatusType::Table => self.params.to_string(),
            StatusType::Info => {
                if self.pool.mode() == PoolMode::Fail {
                    return "Fail".into();
                }
                let suspended = self.pool.is_suspended();
                if !flags.noflush && !suspended {
                    let _ = self.pool.commit();
                }
                match pool_info(&self.pool, meta_dev_blocks(&self.meta)) {
                    Ok(i) => i.to_string(),
                    Err(e) => {
                        tracing::error!("thin-pool: status: {e}");
                        "Error".into()
                    }
                }
            }
        }
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        if self.pool.mode() >= PoolMode::ReadOnly {
            return Err(msg_err(
                libc::EOPNOTSUPP,
                "unable to service pool target messages in READ_ONLY or FAIL mode",
            ));
        }
        let cmd = argv[0].to_ascii_lowercase();
        let r = match cmd.as_str() {
            "create_thin" => self.create_thin(argv),
            "create_snap" => self.create_snap(argv),
            "delete" => self.delete(argv),
            "set_transaction_id" => self.set_transaction_id(argv),
            "reserve_metadata_snap" => self.reserve_metadata_snap(argv),
            "release_metadata_snap" => self.release_metadata_snap(argv),
            _ => Err(msg_err(
                libc::EINVAL,
                format!(
                    "Unrecognised thin pool target message received: {}",
                    argv[0]
                ),
            )),
        };
        if r.is_ok() {
            let _ = self.pool.commit();
        }
        r.map(|_| None)
    }

    fn num_discard_bios(&self) -> u32 {
        let pf = self.params.features;
        u32::from(pf.discard_enabled && pf.discard_passdown)
    }

    fn io_hints(&self, limits: &mut Limits) {
        let bytes = (self.pool.block_size * 512) as u32;
        if limits.io_opt == 0 || !limits.io_opt.is_multiple_of(bytes) {
            limits.io_min = limits.io_min.max(bytes);
            limits.io_opt = bytes;
        }
        if !self.params.features.discard_enabled {
            limits.discard_granularity = 0;
        }
    }

    fn presuspend(&self) {
        self.pool.suspend_thins();
    }

    fn presuspend_undo(&self) {
        self.pool.resume_thins();
    }

    fn postsuspend(&self) {
        let _ = self.pool.commit();
    }

    fn preresume(&self) -> Result<(), TargetError> {
        let pool = &self.pool;
        {
            // Bind this table to the pool (`bind_control_target`).
            let mut st = pool.st.lock();
            st.pf = self.params.features;
            st.low_water = self.params.low_water;
            st.data = self.data.clone();
            st.events = self.events.clone();
            if self.params.features.read_only {
                st.mode = st.mode.max(PoolMode::ReadOnly);
            } else if st.mode == PoolMode::ReadOnly && pool.inspect(|_| Ok(())).is_ok() {
                st.mode = PoolMode::Write;
            }
        }
        pool.meta_io.set_device(self.meta.dev.clone());
        let r = self.resize();
        match r {
            Ok(true) => {
                let _ = pool.commit();
                let mut st = pool.st.lock();
                if st.mode == PoolMode::OutOfDataSpace {
                    st.mode = PoolMode::Write;
                }
                Ok(())
            }
            Ok(false) => Ok(()),
            // A failed pool must still resume so its queued I/O can be failed.
            Err(_) if pool.mode() == PoolMode::Fail => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn resume(&self) {
        {
            let mut st = self.pool.st.lock();
            st.low_water_triggered = false;
        }
        self.pool.resume_thins();
        self.pool.retry_queued();
    }
}
