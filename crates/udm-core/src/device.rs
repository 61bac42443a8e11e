//! `MappedDevice`: one dm device — live table behind an atomic pointer, inactive slot,
//! suspend/resume with a deferred queue, in-flight accounting, events and open counts.

use crate::error::DmError;
use crate::stats::IoStats;
use crate::table::Table;
use crate::target::DeviceState;
use crate::DM_MAJOR;
use arc_swap::ArcSwapOption;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use udm_io::device::Extent;
use udm_io::{Bio, BlockDevice, DevId, IoError, Limits, Sectors};

/// What `info` reports about a device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DevInfo {
    pub name: String,
    pub uuid: String,
    pub major: u32,
    pub minor: u32,
    pub open_count: i32,
    pub event_nr: u32,
    pub suspended: bool,
    pub read_only: bool,
    pub live_table: bool,
    pub inactive_table: bool,
    pub target_count: u32,
    pub deferred_remove: bool,
    /// Resumed at least once: libdm has made its `/dev/mapper` node (opening it gives ENXIO
    /// while there is no table, ENOENT before).
    pub resumed: bool,
}

struct Held {
    suspended: bool,
    deferred: VecDeque<Bio>,
}

/// In-flight bio counter that suspend waits on.
struct Inflight {
    n: AtomicUsize,
    parked: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Inflight {
    fn end(&self) {
        if self.n.fetch_sub(1, SeqCst) == 1 {
            let _g = self.lock.lock();
            self.cv.notify_all();
        }
    }
    /// Wait until every bio in flight has ended or been parked; false if `timeout` passed
    /// first.
    fn wait_drained(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut g = self.lock.lock();
        while self.n.load(SeqCst) > self.parked.load(SeqCst) {
            let step = Duration::from_millis(50);
            let step = match deadline {
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(left) if !left.is_zero() => step.min(left),
                    _ => return false,
                },
                None => step,
            };
            self.cv.wait_for(&mut g, step);
        }
        true
    }
}

type Requeue = Arc<dyn Fn(Bio) + Send + Sync>;

/// How to suspend (the `DM_DEV_SUSPEND` flags udm acts on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SuspendOpts {
    /// `--noflush`: targets that keep bios requeue them (resubmitted after resume) instead of
    /// finishing or failing them.
    pub noflush: bool,
    /// Give up when in-flight I/O has not drained after this long (the kernel's interrupted
    /// suspend): targets get `presuspend_undo`, held I/O is released, the device stays live
    /// and the suspend fails with EINTR. `None` waits for as long as it takes.
    pub drain_timeout: Option<Duration>,
}

/// Geometry set by `setgeometry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Geometry {
    pub cylinders: u32,
    pub heads: u32,
    pub sectors: u32,
    pub start: u64,
}

/// A mapped device. Frontends hold it as `Arc<dyn BlockDevice>`.
pub struct MappedDevice {
    pub(crate) name: Mutex<String>,
    pub(crate) uuid: Mutex<String>,
    minor: u32,
    live: ArcSwapOption<Table>,
    pub(crate) inactive: Mutex<Option<Arc<Table>>>,
    /// Fast-path copy of `held.suspended`.
    suspended: AtomicBool,
    held: Mutex<Held>,
    inflight: Arc<Inflight>,
    event_nr: AtomicU32,
    event_lock: Mutex<()>,
    event_cv: Condvar,
    open_count: AtomicI32,
    pub(crate) deferred_remove: AtomicBool,
    /// Set by the first resume (see `DevInfo::resumed`).
    pub(crate) resumed: AtomicBool,
    pub(crate) removed: AtomicBool,
    read_only: AtomicBool,
    /// Serialises suspend/resume/load on this device.
    pub(crate) control: Mutex<()>,
    pub(crate) geometry: Mutex<Option<Geometry>>,
    /// I/O counters (diskstats and dm-stats regions).
    stats: Arc<IoStats>,
    requeue: std::sync::OnceLock<Requeue>,
    /// What targets see of a suspend in progress (`noflush_suspending`).
    state: DeviceState,
}

impl MappedDevice {
    pub(crate) fn new(name: &str, uuid: &str, minor: u32) -> MappedDevice {
        MappedDevice {
            name: Mutex::new(name.to_string()),
            uuid: Mutex::new(uuid.to_string()),
            minor,
            live: ArcSwapOption::empty(),
            inactive: Mutex::new(None),
            suspended: AtomicBool::new(false),
            held: Mutex::new(Held {
                suspended: false,
                deferred: VecDeque::new(),
            }),
            inflight: Arc::new(Inflight {
                n: AtomicUsize::new(0),
                parked: AtomicUsize::new(0),
                lock: Mutex::new(()),
                cv: Condvar::new(),
            }),
            event_nr: AtomicU32::new(0),
            event_lock: Mutex::new(()),
            event_cv: Condvar::new(),
            open_count: AtomicI32::new(0),
            deferred_remove: AtomicBool::new(false),
            resumed: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            read_only: AtomicBool::new(false),
            control: Mutex::new(()),
            geometry: Mutex::new(None),
            stats: Arc::new(IoStats::default()),
            requeue: std::sync::OnceLock::new(),
            state: DeviceState::default(),
        }
    }

    /// The handle targets of this device's tables query (`TargetCtx::device_state`).
    pub(crate) fn device_state(&self) -> DeviceState {
        self.state.clone()
    }

    pub fn name(&self) -> String {
        self.name.lock().clone()
    }
    pub fn uuid(&self) -> String {
        self.uuid.lock().clone()
    }
    pub fn minor(&self) -> u32 {
        self.minor
    }
    pub fn devno(&self) -> (u32, u32) {
        (DM_MAJOR, self.minor)
    }
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(SeqCst)
    }
    pub fn open_count(&self) -> i32 {
        self.open_count.load(SeqCst)
    }
    pub fn event_nr(&self) -> u32 {
        self.event_nr.load(SeqCst)
    }
    pub fn live_table(&self) -> Option<Arc<Table>> {
        self.live.load_full()
    }
    pub fn inactive_table(&self) -> Option<Arc<Table>> {
        self.inactive.lock().clone()
    }
    /// The device's I/O counters.
    pub fn stats(&self) -> &IoStats {
        &self.stats
    }
    /// Bios currently being processed.
    pub fn in_flight(&self) -> usize {
        self.inflight.n.load(SeqCst)
    }

    pub fn info(&self, query_inactive: bool) -> DevInfo {
        let live = self.live_table();
        let inactive = self.inactive_table();
        let shown = if query_inactive {
            inactive.clone()
        } else {
            live.clone()
        };
        DevInfo {
            name: self.name(),
            uuid: self.uuid(),
            major: DM_MAJOR,
            minor: self.minor,
            open_count: self.open_count(),
            event_nr: self.event_nr(),
            suspended: self.is_suspended(),
            read_only: if query_inactive {
                inactive.as_ref().map(|t| t.read_only()).unwrap_or(false)
            } else {
                self.read_only.load(SeqCst)
            },
            live_table: live.is_some(),
            inactive_table: inactive.is_some(),
            target_count: shown.map(|t| t.num_targets() as u32).unwrap_or(0),
            deferred_remove: self.deferred_remove.load(SeqCst),
            resumed: self.resumed.load(SeqCst),
        }
    }

    /// Note an event: bump the counter and wake waiters.
    pub fn raise_event(&self) {
        self.event_nr.fetch_add(1, SeqCst);
        let _g = self.event_lock.lock();
        self.event_cv.notify_all();
    }

    /// Block until the event counter differs from `nr` (or the device is removed, or `timeout`).
    pub fn wait_event(&self, nr: u32, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut g = self.event_lock.lock();
        while self.event_nr() == nr && !self.removed.load(SeqCst) {
            let step = Duration::from_millis(200);
            let step = match deadline {
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return false;
                    }
                    step.min(d - now)
                }
                None => step,
            };
            self.event_cv.wait_for(&mut g, step);
        }
        true
    }

    pub(crate) fn open(&self) {
        self.open_count.fetch_add(1, SeqCst);
    }
    /// Drop an open; true when this was the last open.
    pub(crate) fn close(&self) -> bool {
        self.open_count.fetch_sub(1, SeqCst) == 1
    }

    /// Stage a table in the inactive slot (replacing any previous one).
    pub(crate) fn load(&self, t: Table) {
        *self.inactive.lock() = Some(Arc::new(t));
    }

    /// Suspend: hold new I/O, wait for in-flight I/O, run the hooks. Idempotent.
    pub fn suspend(self: &Arc<Self>) {
        // Without a drain timeout a suspend cannot be abandoned.
        let _ = self.suspend_with(SuspendOpts::default());
    }

    /// Suspend with options (noflush, a drain timeout). Idempotent.
    pub fn suspend_with(self: &Arc<Self>, opts: SuspendOpts) -> Result<(), DmError> {
        let _c = self.control.lock();
        self.suspend_locked(opts)
    }

    fn suspend_locked(self: &Arc<Self>, opts: SuspendOpts) -> Result<(), DmError> {
        if self.is_suspended() {
            return Ok(());
        }
        let live = self.live_table();
        // As the kernel: targets see `noflush_suspending` from presuspend until the drain ends.
        self.state.0.store(opts.noflush, SeqCst);
        if let Some(t) = &live {
            t.for_each_target(|t| t.presuspend());
        }
        {
            let mut h = self.held.lock();
            h.suspended = true;
            self.suspended.store(true, SeqCst);
        }
        let drained = self.inflight.wait_drained(opts.drain_timeout);
        self.state.0.store(false, SeqCst);
        if !drained {
            // Abandon: undo presuspend, let held and requeued I/O go again.
            if let Some(t) = &live {
                t.for_each_target(|t| t.presuspend_undo());
            }
            self.release_held();
            return Err(DmError::Errno {
                errno: libc::EINTR,
                msg: "suspend abandoned: in-flight I/O did not drain".into(),
            });
        }
        if let Some(t) = &live {
            t.for_each_target(|t| t.postsuspend());
        }
        Ok(())
    }

    /// Leave the suspended state and resubmit every held or requeued bio.
    fn release_held(self: &Arc<Self>) {
        let held: Vec<Bio> = {
            let mut h = self.held.lock();
            h.suspended = false;
            self.suspended.store(false, SeqCst);
            h.deferred.drain(..).collect()
        };
        self.inflight.parked.store(0, SeqCst);
        for b in held {
            self.submit(b);
        }
    }

    /// Resume: swap in the inactive table if there is one (suspending first), run the hooks,
    /// release held I/O. On a failed preresume the old table stays live and the new one is
    /// put back into the inactive slot.
    pub fn resume(self: &Arc<Self>) -> Result<bool, DmError> {
        self.resume_with(SuspendOpts::default())
    }

    /// As `resume`; `opts` apply to the suspend that precedes a table swap on a live device
    /// (`dmsetup resume --noflush`).
    pub fn resume_with(self: &Arc<Self>, opts: SuspendOpts) -> Result<bool, DmError> {
        let _c = self.control.lock();
        let new = self.inactive.lock().take();
        let swapped = new.is_some();
        if let Some(new) = new {
            if let Err(e) = self.suspend_locked(opts) {
                *self.inactive.lock() = Some(new);
                return Err(e);
            }
            if let Err(e) = preresume(&new) {
                *self.inactive.lock() = Some(new);
                return Err(DmError::Errno {
                    errno: e.errno,
                    msg: e.msg,
                });
            }
            self.read_only.store(new.read_only(), SeqCst);
            self.live.store(Some(new));
        } else if !self.is_suspended() {
            return Ok(false);
        } else if let Some(t) = self.live_table() {
            if let Err(e) = preresume(&t) {
                return Err(DmError::Errno {
                    errno: e.errno,
                    msg: e.msg,
                });
            }
        }
        if let Some(t) = self.live_table() {
            t.for_each_target(|t| t.resume());
        }
        self.release_held();
        Ok(swapped)
    }

    /// Replace the live table directly (used by `remove --force` through load+resume and tests).
    pub(crate) fn clear_inactive(&self) -> bool {
        self.inactive.lock().take().is_some()
    }

    /// Fail every bio held by a suspended device (daemon shutdown); stays suspended.
    pub fn abort_held(&self) -> usize {
        let held: Vec<Bio> = self.held.lock().deferred.drain(..).collect();
        let n = held.len();
        for b in held {
            b.complete(Err(IoError::Io));
        }
        n
    }

    /// Drop every table (device removal) and fail any held I/O. Returns the mapped devices
    /// the tables used, weakly: a target's background thread or a completion still running
    /// may hold them a moment longer (see `Registry::remove`).
    pub(crate) fn teardown(&self) -> Vec<std::sync::Weak<crate::resolve::DevHandle>> {
        self.removed.store(true, SeqCst);
        let inactive = self.inactive.lock().take();
        let below: Vec<_> = self
            .live
            .load_full()
            .iter()
            .chain(inactive.iter())
            .flat_map(|t| t.deps())
            .filter(|h| h.dm_name.is_some())
            .map(|h| Arc::downgrade(&h))
            .collect();
        self.live.store(None);
        drop(inactive);
        let held: Vec<Bio> = {
            let mut h = self.held.lock();
            h.suspended = false;
            self.suspended.store(false, SeqCst);
            h.deferred.drain(..).collect()
        };
        for b in held {
            b.complete(Err(IoError::NoDevice));
        }
        let _g = self.event_lock.lock();
        self.event_cv.notify_all();
        below
    }

    /// Where targets' requeued bios go: made once per device, not per bio.
    pub(crate) fn requeue_fn(self: &Arc<Self>) -> &Requeue {
        self.requeue.get_or_init(|| {
            let me = Arc::downgrade(self);
            Arc::new(move |bio: Bio| match me.upgrade() {
                Some(d) => d.park(bio),
                None => bio.complete(Err(IoError::NoDevice)),
            })
        })
    }

    /// A target asked to requeue: hold the bio until resume.
    fn park(self: &Arc<Self>, bio: Bio) {
        self.inflight.parked.fetch_add(1, SeqCst);
        let mut h = self.held.lock();
        h.deferred.push_back(bio);
        drop(h);
        let _g = self.inflight.lock.lock();
        self.inflight.cv.notify_all();
    }

    /// Submit through an `Arc` (so requeued bios can find their way back).
    pub fn submit_arc(self: &Arc<Self>, bio: Bio) {
        self.inflight.n.fetch_add(1, SeqCst);
        if self.suspended.load(SeqCst) {
            self.inflight.end();
            let mut h = self.held.lock();
            if h.suspended {
                h.deferred.push_back(bio);
                return;
            }
            drop(h);
            return self.submit_arc(bio);
        }
        let Some(table) = self.live.load_full() else {
            self.inflight.end();
            return bio.complete(Err(IoError::Io));
        };
        if bio.end() > table.size() {
            self.inflight.end();
            return bio.complete(Err(IoError::Io));
        }
        if bio.op.is_write() && self.read_only.load(SeqCst) {
            self.inflight.end();
            return bio.complete(Err(IoError::ReadOnly));
        }
        let inflight = self.inflight.clone();
        let keep = table.clone();
        let (stats, acct) = (self.stats.clone(), self.stats.start(&bio));
        let bio = bio.on_end(move |r, _| {
            stats.end(acct, &r);
            drop(keep);
            inflight.end();
            r
        });
        table.dispatch(bio, self.requeue_fn());
    }
}

fn preresume(t: &Table) -> Result<(), crate::target::TargetError> {
    let mut res = Ok(());
    t.for_each_target(|t| {
        if res.is_ok() {
            res = t.preresume();
        }
    });
    res
}

/// `Arc<MappedDevice>` as a block device (stacking and frontends).
pub struct DmBlockDevice(pub Arc<MappedDevice>);

impl BlockDevice for DmBlockDevice {
    fn submit(&self, bio: Bio) {
        self.0.submit_arc(bio)
    }
    fn size(&self) -> Sectors {
        self.0.live_table().map(|t| t.size()).unwrap_or_default()
    }
    fn id(&self) -> DevId {
        DevId::Num(DM_MAJOR, self.0.minor)
    }
    fn limits(&self) -> Limits {
        self.0.live_table().map(|t| t.limits()).unwrap_or_default()
    }
    fn read_only(&self) -> bool {
        self.0.read_only.load(SeqCst)
    }
    fn read_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: udm_io::FileReader<'_>,
    ) -> Option<std::io::Result<usize>> {
        self.0.read_file_range(sector, len, f)
    }
    fn write_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: udm_io::FileWriter<'_>,
    ) -> Option<std::io::Result<usize>> {
        self.0.write_file_range(sector, len, f)
    }
    fn read_mapped(&self, sector: Sectors, len: Sectors, f: udm_io::MappedReader<'_>) -> bool {
        self.0.read_mapped(sector, len, f)
    }
    fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        match self.0.live_table() {
            Some(t) => t.extents(sector, len),
            None => vec![(len, Extent::Data)],
        }
    }
}

impl MappedDevice {
    /// `BlockDevice::read_file_range`: as `submit_arc` for a read, the call counts as in
    /// flight (a suspend waits for it) and in the statistics; a suspended device, or a range
    /// that is no plain file range, says `None` so the caller submits a bio (which is held).
    pub fn read_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: udm_io::FileReader<'_>,
    ) -> Option<std::io::Result<usize>> {
        self.direct(
            udm_io::Op::Read,
            sector,
            len,
            |t, start| {
                t.read_file_range(sector, len, &mut |file, off| {
                    start();
                    f(file, off)
                })
            },
            |r| r.is_ok(),
        )
    }

    /// `BlockDevice::write_file_range`, counted in flight and in the statistics as
    /// `read_file_range` (as a write); a read-only device says `None` too (the bio it then
    /// gets fails as writes to it do).
    pub fn write_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: udm_io::FileWriter<'_>,
    ) -> Option<std::io::Result<usize>> {
        if self.read_only.load(SeqCst) {
            return None;
        }
        let bytes = len.0 * udm_io::SECTOR_SIZE;
        self.direct(
            udm_io::Op::Write,
            sector,
            len,
            |t, start| {
                t.write_file_range(sector, len, &mut |file, off| {
                    start();
                    f(file, off)
                })
            },
            |r| matches!(r, Ok(n) if *n as u64 == bytes),
        )
    }

    /// `BlockDevice::read_mapped`, counted in flight and in the statistics as
    /// `read_file_range`.
    pub fn read_mapped(&self, sector: Sectors, len: Sectors, f: udm_io::MappedReader<'_>) -> bool {
        self.direct(
            udm_io::Op::Read,
            sector,
            len,
            |t, start| {
                t.read_mapped(sector, len, &mut |b| {
                    start();
                    f(b)
                })
                .then_some(())
            },
            |_| true,
        )
        .is_some()
    }

    /// What the reads and writes that bypass bios share: the call is in flight (a suspend
    /// waits for it); a suspended device (or none loaded) runs nothing and gives `None`;
    /// otherwise `run` runs on the live table and calls `start` when it does the I/O, which
    /// opens the statistics' I/O (an `op`), closed with `ok`'s verdict on the result.
    fn direct<R>(
        &self,
        op: udm_io::Op,
        sector: Sectors,
        len: Sectors,
        run: impl FnOnce(&Table, &mut dyn FnMut()) -> Option<R>,
        ok: impl FnOnce(&R) -> bool,
    ) -> Option<R> {
        self.inflight.n.fetch_add(1, SeqCst);
        if self.suspended.load(SeqCst) {
            self.inflight.end();
            return None;
        }
        let mut acct = None;
        let res = self.live.load_full().and_then(|t| {
            run(&t, &mut || {
                acct = Some(self.stats.start_range(op, sector.0, len.0))
            })
        });
        if let (Some(a), Some(r)) = (acct, &res) {
            self.stats
                .end(a, &if ok(r) { Ok(()) } else { Err(IoError::Io) });
        }
        self.inflight.end();
        res
    }

    /// Plain `submit` for callers holding `&MappedDevice` inside an `Arc` elsewhere.
    fn submit(self: &Arc<Self>, bio: Bio) {
        self.submit_arc(bio)
    }
}
