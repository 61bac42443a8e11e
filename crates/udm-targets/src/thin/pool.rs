//! The pool object shared by a `thin-pool` table and its `thin` devices (the kernel's
//! `struct pool`): the metadata behind a lock, the pool's own worker, its mode, features,
//! low-water event and out-of-space queue. It outlives table reloads: a new `thin-pool`
//! table for the same device finds it through the core's lookup and takes it over.

use super::metaio::DevMetaIo;
use super::params::PoolFeatures;
use super::thin::ThinShared;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use udm_core::{Copier, DevHandle, EventTrigger, TargetError, Worker};
use udm_io::{Bio, DevId, IoError};
use udm_pdata::thin::ThinMetadata;
use udm_pdata::PdataError;

/// How often changed metadata is committed without a flush asking (the kernel's
/// `COMMIT_PERIOD`, one second).
pub const COMMIT_PERIOD: Duration = Duration::from_secs(1);

/// The pool's mode, in degrading order (the kernel's `pool_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PoolMode {
    Write,
    OutOfDataSpace,
    ReadOnly,
    Fail,
}

/// Mutable pool state other than the metadata.
pub(crate) struct PoolState {
    pub mode: PoolMode,
    /// Features in force (those of the table that last resumed the pool).
    pub pf: PoolFeatures,
    pub low_water: u64,
    pub low_water_triggered: bool,
    /// The data device of the bound table (flushed before every commit).
    pub data: Arc<DevHandle>,
    pub events: EventTrigger,
    /// Bios of the pool's thin devices that arrived while the pool was suspended (the
    /// kernel suspends every active thin with its pool), sent on at resume.
    pub held: Vec<(Arc<ThinShared>, Bio)>,
    /// Bios waiting for data space (queue_if_no_space), with the time space ran out.
    pub retry: Vec<(Arc<ThinShared>, Bio)>,
    pub out_of_space_since: Option<Instant>,
}

/// One pool.
pub struct Pool {
    /// Data block size in sectors.
    pub block_size: u64,
    pub(crate) meta_id: DevId,
    pub(crate) data_id: DevId,
    pub(crate) meta_io: Arc<DevMetaIo>,
    md: Mutex<Option<ThinMetadata>>,
    pub(crate) worker: Arc<Worker>,
    pub(crate) copier: Copier,
    /// Suspended (or suspending): thin bios are held in `PoolState::held`.
    suspended: AtomicBool,
    pub(crate) st: Mutex<PoolState>,
    /// Metadata changed since the last commit.
    dirty: AtomicBool,
    /// Open thin devices by id (delete refuses them).
    open: Mutex<HashMap<u64, usize>>,
    pub(crate) no_space_timeout: Duration,
    /// Mappings the worker looked up or made: (device, virtual block) → (data block,
    /// exclusive). `map` remaps reads of them, and writes of exclusive ones, without the
    /// hop to the worker. Entries go before the mapping changes (discard, delete,
    /// snapshot, aborted transaction).
    cache: RwLock<HashMap<(u64, u64), (u64, bool)>>,
    /// Bios waiting for the worker (see `batch`), and whether a job will take them.
    pub(crate) queue: Mutex<Vec<(Arc<ThinShared>, Bio)>>,
    pub(crate) queue_scheduled: AtomicBool,
}

/// Entries kept in the mapping cache before it starts over.
const CACHE_MAX: usize = 1 << 20;

/// Why a metadata operation failed.
#[derive(Debug)]
pub enum MdError {
    /// The pool cannot change metadata (read-only or failed mode).
    Mode(PoolMode),
    Pdata(PdataError),
}

impl From<PdataError> for MdError {
    fn from(e: PdataError) -> MdError {
        MdError::Pdata(e)
    }
}

impl MdError {
    pub fn errno(&self) -> i32 {
        match self {
            MdError::Mode(_) => libc::EINVAL,
            MdError::Pdata(e) => e.errno(),
        }
    }
    pub fn io(&self) -> IoError {
        match self {
            MdError::Pdata(PdataError::NoSpace(_)) => IoError::NoSpace,
            _ => IoError::Io,
        }
    }
}

impl Pool {
    /// Open (or, when block 0 is all zeroes, format) the metadata on `meta`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        meta: &Arc<DevHandle>,
        data: &Arc<DevHandle>,
        block_size: u64,
        nr_data_blocks: u64,
        pf: PoolFeatures,
        low_water: u64,
        events: EventTrigger,
        worker: Arc<Worker>,
        no_space_timeout: Duration,
    ) -> Result<Arc<Pool>, TargetError> {
        let io = Arc::new(DevMetaIo::new(meta.dev.clone()));
        let create_err =
            |e: String| TargetError::invalid("Error creating metadata object").with_detail(e);
        let first = udm_io::sync::read_at(meta.dev.as_ref(), udm_io::Sectors(0), 4096)
            .map_err(|e| create_err(format!("reading the superblock: {e}")))?;
        let md = if first.iter().all(|&b| b == 0) {
            if pf.read_only {
                return Err(create_err(
                    "the metadata is blank and the pool is read-only, so it cannot be formatted"
                        .into(),
                ));
            }
            ThinMetadata::format(io.clone(), block_size as u32, nr_data_blocks)
                .map_err(|e| create_err(e.to_string()))?
        } else {
            let md = ThinMetadata::open(io.clone()).map_err(|e| create_err(e.to_string()))?;
            let have = md.superblock().data_block_size as u64;
            if have != block_size {
                return Err(create_err(format!(
                    "changing the data block size (from {have} to {block_size}) is not supported"
                )));
            }
            md
        };
        let copy_chunk = udm_io::Sectors(block_size.min(2048));
        let pool = Arc::new(Pool {
            block_size,
            meta_id: meta.id.clone(),
            data_id: data.id.clone(),
            meta_io: io,
            md: Mutex::new(Some(md)),
            worker,
            copier: Copier::new(copy_chunk, 16),
            // As the kernel's pool, suspended until its first resume.
            suspended: AtomicBool::new(true),
            st: Mutex::new(PoolState {
                mode: if pf.read_only {
                    PoolMode::ReadOnly
                } else {
                    PoolMode::Write
                },
                pf,
                low_water,
                low_water_triggered: false,
                data: data.clone(),
                events,
                held: Vec::new(),
                retry: Vec::new(),
                out_of_space_since: None,
            }),
            dirty: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            cache: RwLock::new(HashMap::new()),
            queue: Mutex::new(Vec::new()),
            queue_scheduled: AtomicBool::new(false),
            no_space_timeout,
        });
        start_ticker(Arc::downgrade(&pool));
        Ok(pool)
    }

    pub fn mode(&self) -> PoolMode {
        self.st.lock().mode
    }

    pub(crate) fn features(&self) -> PoolFeatures {
        self.st.lock().pf
    }

    /// Move to `mode` (the kernel's `set_pool_mode`, within what udm models).
    pub(crate) fn set_mode(&self, mode: PoolMode) {
        let mut st = self.st.lock();
        if st.mode == mode {
            return;
        }
        // A failed pool stays failed; a read-only pool only leaves by a reload.
        if st.mode == PoolMode::Fail {
            return;
        }
        tracing::warn!("thin-pool: switching pool to {mode:?} mode");
        st.mode = mode;
        let ev = st.events.clone();
        drop(st);
        ev();
    }

    /// Run `f` on the metadata (any thread but the I/O pool: it may read metadata blocks).
    /// A failure of the metadata itself aborts the transaction and makes the pool read-only,
    /// as the kernel's `metadata_operation_failed`.
    pub(crate) fn with_md<R>(
        &self,
        write: bool,
        f: impl FnOnce(&mut ThinMetadata) -> Result<R, PdataError>,
    ) -> Result<R, MdError> {
        let mode = self.mode();
        if mode == PoolMode::Fail || (write && mode >= PoolMode::ReadOnly) {
            return Err(MdError::Mode(mode));
        }
        let mut g = self.md.lock();
        let md = g.as_mut().ok_or(MdError::Mode(PoolMode::Fail))?;
        let r = f(md);
        if write {
            self.dirty.store(true, SeqCst);
        }
        if md.tm().take_threshold_event() {
            // Raised outside the metadata lock, as the data low-water event is.
            drop(g);
            tracing::warn!("thin-pool: reached low water mark for metadata device: sending event");
            let ev = self.st.lock().events.clone();
            ev();
            g = self.md.lock();
        }
        match r {
            Ok(v) => Ok(v),
            Err(e @ (PdataError::Invalid(_) | PdataError::NoSpace("data"))) => Err(e.into()),
            Err(e) => {
                tracing::error!("thin-pool: metadata operation failed: {e}");
                self.abort(&mut g);
                drop(g);
                self.set_mode(PoolMode::ReadOnly);
                Err(e.into())
            }
        }
    }

    /// Drop the uncommitted transaction: reopen at the last commit, with needs_check set
    /// when that can be recorded.
    fn abort(&self, g: &mut Option<ThinMetadata>) {
        self.cache.write().clear();
        self.dirty.store(false, SeqCst);
        match ThinMetadata::open(self.meta_io.clone()) {
            Ok(mut md) => {
                md.set_needs_check();
                if md.commit().is_err() {
                    tracing::error!("thin-pool: could not record needs_check");
                }
                *g = Some(md);
            }
            Err(e) => {
                tracing::error!("thin-pool: reopening metadata failed: {e}; failing the pool");
                *g = None;
                self.st.lock().mode = PoolMode::Fail;
            }
        }
    }

    /// Commit when something changed: flush the data device first (so the data of every
    /// new mapping is durable before the mapping is), then the two-phase metadata commit.
    pub(crate) fn commit(&self) -> Result<(), MdError> {
        if !self.dirty.load(SeqCst) {
            return Ok(());
        }
        let data = self.st.lock().data.clone();
        if let Err(e) = udm_io::sync::flush(data.dev.as_ref()) {
            if e != IoError::NotSupported {
                tracing::error!("thin-pool: flushing the data device failed: {e}");
                return Err(MdError::Pdata(PdataError::Io {
                    block: 0,
                    source: std::io::Error::from_raw_os_error(e.errno()),
                }));
            }
        }
        let mode = self.mode();
        if mode >= PoolMode::ReadOnly {
            return Err(MdError::Mode(mode));
        }
        let mut g = self.md.lock();
        let Some(md) = g.as_mut() else {
            return Err(MdError::Mode(PoolMode::Fail));
        };
        // Cleared first: a change made after the commit takes the lock sets it again.
        self.dirty.store(false, SeqCst);
        if let Err(e) = md.commit() {
            tracing::error!("thin-pool: metadata commit failed: {e}");
            self.abort(&mut g);
            drop(g);
            self.set_mode(PoolMode::ReadOnly);
            return Err(e.into());
        }
        Ok(())
    }

    /// The cached mapping of `(dev, v)`, if `map` can use it now (never waits).
    pub(crate) fn cached(&self, dev: u64, v: u64) -> Option<(u64, bool)> {
        self.cache.try_read()?.get(&(dev, v)).copied()
    }

    /// Remember a mapping the worker saw or made.
    pub(crate) fn remember(&self, dev: u64, v: u64, block: u64, exclusive: bool) {
        let mut c = self.cache.write();
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert((dev, v), (block, exclusive));
    }

    /// Forget `(dev, v)` (before it is unmapped).
    pub(crate) fn forget(&self, dev: u64, v: u64) {
        self.cache.write().remove(&(dev, v));
    }

    /// Forget every mapping of `dev` (deleted), or only that they are exclusive (`dev` is
    /// about to be snapshotted).
    pub(crate) fn forget_dev(&self, dev: u64, only_exclusive: bool) {
        let mut c = self.cache.write();
        if only_exclusive {
            for ((d, _), (_, excl)) in c.iter_mut() {
                if *d == dev {
                    *excl = false;
                }
            }
        } else {
            c.retain(|(d, _), _| *d != dev);
        }
    }

    /// Set the metadata low water mark (table load: `dm_pool_register_metadata_threshold`).
    pub(crate) fn set_meta_threshold(&self, blocks: u64) {
        if let Some(md) = self.md.lock().as_mut() {
            md.tm().set_threshold(blocks);
        }
    }

    /// A data block was allocated: raise the low-water event once free blocks fall to the
    /// mark (re-armed by resume).
    pub(crate) fn check_low_water(&self, free: u64) {
        let mut st = self.st.lock();
        if free <= st.low_water && !st.low_water_triggered {
            st.low_water_triggered = true;
            tracing::info!("thin-pool: reached low water mark for data device: sending event");
            let ev = st.events.clone();
            drop(st);
            ev();
        }
    }

    /// Note a thin device open (`thin` constructor) or closed.
    pub(crate) fn open_thin(&self, id: u64) {
        *self.open.lock().entry(id).or_default() += 1;
    }
    pub(crate) fn close_thin(&self, id: u64) {
        let mut g = self.open.lock();
        if let Some(n) = g.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                g.remove(&id);
            }
        }
    }
    pub(crate) fn is_open(&self, id: u64) -> bool {
        self.open.lock().contains_key(&id)
    }

    /// Hand every queued bio back to the worker (space was added, or the pool resumed).
    pub(crate) fn retry_queued(self: &Arc<Self>) {
        let queued = {
            let mut st = self.st.lock();
            st.out_of_space_since = None;
            std::mem::take(&mut st.retry)
        };
        for (t, bio) in queued {
            t.defer(bio);
        }
    }

    /// Whether the pool is suspended (or suspending).
    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended.load(SeqCst)
    }

    /// Hold `bio` of `t` while the pool is suspended; `Err(bio)` when it is not, or when
    /// `t` is being suspended with noflush (its bios go back to its device then).
    pub(crate) fn hold(&self, t: &Arc<ThinShared>, bio: Bio) -> Result<(), Bio> {
        if !self.is_suspended() {
            return Err(bio);
        }
        let mut st = self.st.lock();
        if !self.is_suspended() || t.requeue_mode.load(SeqCst) {
            return Err(bio);
        }
        st.held.push((t.clone(), bio));
        Ok(())
    }

    /// The pool's presuspend (the kernel's `pool_presuspend`, which suspends every active
    /// thin device with noflush): from now on thin bios are held, and the worker finishes
    /// what it started (a provisioning batch ends with its mappings made), so the pool's
    /// own suspend finds no thin I/O between the metadata and the data device.
    pub(crate) fn suspend_thins(&self) {
        {
            let _st = self.st.lock();
            self.suspended.store(true, SeqCst);
        }
        self.worker.call(|| ());
    }

    /// The pool's resume (or an abandoned suspend): send the held thin bios on.
    pub(crate) fn resume_thins(&self) {
        let held = {
            let mut st = self.st.lock();
            self.suspended.store(false, SeqCst);
            std::mem::take(&mut st.held)
        };
        for (t, bio) in held {
            t.defer(bio);
        }
    }

    /// Take the bios of `t` the pool holds (suspended, or waiting for data space): its
    /// device is suspending with noflush, so they go back to it. Sets `t`'s requeue mode
    /// first (under the same lock `hold` checks it), so none is held after this.
    pub(crate) fn take_bios_of(&self, t: &Arc<ThinShared>) -> Vec<Bio> {
        let mut g = self.st.lock();
        let st = &mut *g;
        t.requeue_mode.store(true, SeqCst);
        let mut out = Vec::new();
        for list in [&mut st.held, &mut st.retry] {
            let (mine, rest): (Vec<_>, Vec<_>) =
                list.drain(..).partition(|(o, _)| Arc::ptr_eq(o, t));
            *list = rest;
            out.extend(mine.into_iter().map(|(_, b)| b));
        }
        out
    }

    /// Periodic work: commit, and end the out-of-space wait after its timeout. Nothing
    /// while suspended (the kernel stops its waker and no-space timer in postsuspend).
    fn tick(self: &Arc<Self>) {
        if self.is_suspended() {
            return;
        }
        if self.dirty.load(SeqCst) {
            self.worker.spawn({
                let me = self.clone();
                move || {
                    let _ = me.commit();
                }
            });
        }
        let expired = {
            let mut st = self.st.lock();
            match st.out_of_space_since {
                Some(t) if t.elapsed() >= self.no_space_timeout && !st.retry.is_empty() => {
                    // The kernel's no_space_timeout: switch to erroring and fail the queue.
                    st.pf.error_if_no_space = true;
                    st.out_of_space_since = None;
                    std::mem::take(&mut st.retry)
                }
                _ => Vec::new(),
            }
        };
        for (_, bio) in expired {
            bio.complete(Err(IoError::NoSpace));
        }
    }
}

/// One thread per pool that wakes the pool every tick while the pool exists.
fn start_ticker(pool: Weak<Pool>) {
    let step = Duration::from_millis(100);
    let spawned = std::thread::Builder::new()
        .name("udm-thin-tick".into())
        .spawn(move || {
            let mut last = Instant::now();
            loop {
                std::thread::sleep(step);
                let Some(p) = pool.upgrade() else { return };
                if last.elapsed() >= COMMIT_PERIOD.min(p.no_space_timeout) {
                    last = Instant::now();
                    p.tick();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("thin-pool: no periodic commit thread: {e}");
    }
}

/// Read-only access for status and the tests' inspection.
impl Pool {
    /// Run a read-only closure on the metadata.
    pub fn inspect<R>(
        &self,
        f: impl FnOnce(&mut ThinMetadata) -> Result<R, PdataError>,
    ) -> Result<R, MdError> {
        self.with_md(false, f)
    }

    /// Whether uncommitted changes exist.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(SeqCst)
    }
}

impl Drop for Pool {
    /// The last table and thin device are gone: commit what is left (the kernel commits
    /// on the pool's final suspend).
    fn drop(&mut self) {
        if self.dirty.load(SeqCst) {
            if let Err(e) = self.commit() {
                tracing::error!("thin-pool: final commit failed: {e:?}");
            }
        }
    }
}
