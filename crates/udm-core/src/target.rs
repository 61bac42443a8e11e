//! Target contracts: `TargetType` (the constructor, like a kernel `target_type`) and `Target`
//! (one table line: `map`, status, messages and optional hooks with pass-through defaults).

use crate::lookup::{Publication, Published};
use crate::resolve::{DevHandle, Resolver};
use crate::worker::Worker;
use parking_lot::RwLock;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use udm_io::device::Extent;
use udm_io::{Bio, BlockDevice, DevId, IoError, Limits, Sectors};

/// What `Target::map` decided.
#[non_exhaustive]
pub enum MapResult {
    /// Send the (modified) bio to a lower device; the core submits it.
    Remap(Arc<dyn BlockDevice>, Bio),
    /// The target kept the bio and will complete it.
    Submitted,
    /// Park the bio until the device resumes (its sector is relative to the target).
    Requeue(Bio),
    /// Fail the bio.
    Kill(Bio, IoError),
}

/// Which status string to produce (`STATUSTYPE_INFO` / `STATUSTYPE_TABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusType {
    Info,
    Table,
}

/// Flags a status request carries (`dmsetup status --noflush` sets `noflush`, the ioctl's
/// `DM_NOFLUSH_FLAG`: a thin pool then reports without committing its metadata first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatusFlags {
    pub noflush: bool,
}

impl StatusFlags {
    pub const NONE: StatusFlags = StatusFlags { noflush: false };
    pub const NOFLUSH: StatusFlags = StatusFlags { noflush: true };
}

/// A constructor or message failure: the kernel's `ti->error` text and an errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", .detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct TargetError {
    pub msg: String,
    pub errno: i32,
    /// What the kernel would not say but a user needs (which file, why), shown after the
    /// kernel-style message.
    pub detail: Option<String>,
}

impl TargetError {
    pub fn invalid(msg: impl Into<String>) -> TargetError {
        TargetError {
            msg: msg.into(),
            errno: libc::EINVAL,
            detail: None,
        }
    }
    pub fn with_errno(errno: i32, msg: impl Into<String>) -> TargetError {
        TargetError {
            msg: msg.into(),
            errno,
            detail: None,
        }
    }
    /// Add detail for the user.
    pub fn with_detail(mut self, d: impl Into<String>) -> TargetError {
        self.detail = Some(d.into());
        self
    }
}

/// What the core answers a message to a target that takes none (`Target::message`).
pub const NO_MESSAGES: &str = "Target type does not support messages";

/// Table-validation properties of a target type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetFeatures {
    /// Must be the only target in its table.
    pub singleton: bool,
    /// A device can only be reloaded with the same type.
    pub immutable: bool,
    /// Rejected in read-only tables.
    pub always_writeable: bool,
}

/// One table line's mapping logic. `map` sees sectors relative to the target's start and must
/// not block (the `BlockDevice::submit` contract: no waiting beyond an inline fast path);
/// anything blocking goes to the target's own `Worker` (`TargetCtx::worker`), never to the
/// shared I/O pool.
pub trait Target: Send + Sync {
    fn map(&self, bio: Bio) -> MapResult;

    /// The status string (INFO) or the canonical table params (TABLE). `flags.noflush`: the
    /// caller asked not to flush/commit anything to produce it.
    fn status(&self, _ty: StatusType, _flags: StatusFlags) -> String {
        String::new()
    }
    /// Handle `dmsetup message`; `Ok(Some(text))` returns text to the caller.
    fn message(&self, _argv: &[String]) -> Result<Option<String>, TargetError> {
        Err(TargetError::invalid(NO_MESSAGES))
    }
    /// Split bios so none crosses a multiple of this length (relative to the target start).
    fn max_io_len(&self) -> Option<Sectors> {
        None
    }
    /// Narrow the device's limits (e.g. a larger logical block size).
    fn io_hints(&self, _limits: &mut Limits) {}
    /// Allocation of `[sector, sector+len)` relative to the target (for NBD block status).
    fn extents(&self, _sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        vec![(len, Extent::Data)]
    }
    /// Zero-copy reads of `[sector, sector+len)` relative to the target
    /// (`BlockDevice::read_file_range`): a target whose reads there are a plain remap (linear)
    /// passes the call on to its device. `None` (the default): read with bios.
    fn read_file_range(
        &self,
        _sector: Sectors,
        _len: Sectors,
        _f: udm_io::FileReader<'_>,
    ) -> Option<std::io::Result<usize>> {
        None
    }
    /// Zero-copy writes of `[sector, sector+len)` relative to the target
    /// (`BlockDevice::write_file_range`): as `read_file_range`, a plain remap (linear) passes
    /// the call on. `None` (the default): write with bios.
    fn write_file_range(
        &self,
        _sector: Sectors,
        _len: Sectors,
        _f: udm_io::FileWriter<'_>,
    ) -> Option<std::io::Result<usize>> {
        None
    }
    /// `BlockDevice::read_mapped` of `[sector, sector+len)` relative to the target: as
    /// `read_file_range`, a plain remap (linear) passes it on. False (the default): bios.
    fn read_mapped(&self, _sector: Sectors, _len: Sectors, _f: udm_io::MappedReader<'_>) -> bool {
        false
    }
    /// How many copies of each flush this target receives, told apart by
    /// `Bio::target_bio_nr` (striped: one per stripe). 0: the target gets no flushes.
    fn num_flush_bios(&self) -> u32 {
        1
    }
    /// How many copies of each discard (a piece within this target) it receives, told apart
    /// by `Bio::target_bio_nr`. 0: discards fail with `NotSupported`.
    fn num_discard_bios(&self) -> u32 {
        1
    }
    /// First step of a suspend, before new I/O is held. With `DeviceState::noflush_suspending`
    /// a target that keeps bios hands them back with `Requeuer::requeue` (and returns
    /// `MapResult::Requeue` from `map`) instead of finishing or failing them.
    fn presuspend(&self) {}
    /// The suspend that ran `presuspend` was abandoned (its I/O did not drain in time): undo
    /// whatever `presuspend` did; the device stays live.
    fn presuspend_undo(&self) {}
    fn postsuspend(&self) {}
    fn preresume(&self) -> Result<(), TargetError> {
        Ok(())
    }
    fn resume(&self) {}
}

/// A registered target type.
pub trait TargetType: Send + Sync {
    fn name(&self) -> &'static str;
    fn version(&self) -> [u32; 3];
    fn features(&self) -> TargetFeatures {
        TargetFeatures::default()
    }
    /// The constructor: parse `args`, open devices through `ctx`.
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError>;
}

/// Raises a dm event on the device a target belongs to (the kernel's `dm_table_event`):
/// bumps its event number and wakes `dmsetup wait`.
pub type EventTrigger = Arc<dyn Fn() + Send + Sync>;

/// Parks a bio on its mapped device until the next resume (device-relative sectors).
pub type RequeueFn = Arc<dyn Fn(Bio) + Send + Sync>;

/// A target's view of its device's suspend state (the kernel's `dm_noflush_suspending`).
#[derive(Clone, Default)]
pub struct DeviceState(pub(crate) Arc<AtomicBool>);

impl DeviceState {
    /// True from just before `presuspend` until in-flight I/O has drained, during a suspend
    /// asked for with `noflush`.
    pub fn noflush_suspending(&self) -> bool {
        self.0.load(SeqCst)
    }
}

/// What a table loaded into a mapped device can reach of that device. `Default` is a
/// standalone table (no device: events go nowhere, requeued bios fail).
#[derive(Clone, Default)]
pub struct DeviceLink {
    pub events: Option<EventTrigger>,
    /// The device the table is loaded into (`253:N`).
    pub owner: Option<DevId>,
    /// Where targets publish objects others find (`TargetCtx::publish` / `lookup`).
    pub published: Option<Published>,
    pub state: DeviceState,
    pub requeue: Option<RequeueFn>,
}

/// Hands bios a target holds back to its device, to be resubmitted after resume.
#[derive(Clone)]
pub struct Requeuer {
    begin: Sectors,
    f: Option<RequeueFn>,
}

impl Requeuer {
    /// Requeue a bio this target holds (sectors relative to the target, as `map` saw it).
    /// On a table that belongs to no device the bio fails with EIO.
    pub fn requeue(&self, mut bio: Bio) {
        match &self.f {
            Some(f) => {
                if bio.op != udm_io::Op::Flush {
                    bio.sector += self.begin;
                }
                f(bio)
            }
            None => bio.complete(Err(IoError::Io)),
        }
    }
}

/// What a constructor gets: its place in the table and a way to open devices.
pub struct TargetCtx<'a> {
    pub begin: Sectors,
    pub len: Sectors,
    pub read_only: bool,
    resolver: &'a dyn Resolver,
    events: Option<EventTrigger>,
    link: DeviceLink,
    pub(crate) devices: &'a mut Vec<Arc<DevHandle>>,
    pub(crate) areas: Vec<(Arc<DevHandle>, Sectors, Sectors)>,
}

impl<'a> TargetCtx<'a> {
    pub(crate) fn new(
        begin: Sectors,
        len: Sectors,
        read_only: bool,
        resolver: &'a dyn Resolver,
        devices: &'a mut Vec<Arc<DevHandle>>,
    ) -> TargetCtx<'a> {
        TargetCtx {
            begin,
            len,
            read_only,
            resolver,
            events: None,
            link: DeviceLink::default(),
            devices,
            areas: Vec::new(),
        }
    }

    pub(crate) fn with_link(mut self, link: &DeviceLink) -> TargetCtx<'a> {
        self.events = link.events.clone();
        self.link = link.clone();
        self
    }

    /// The mapped device this table is being loaded into (`253:N`), if any.
    pub fn owner(&self) -> Option<&DevId> {
        self.link.owner.as_ref()
    }

    /// Whether the device is suspending with `noflush`, for `map` and `presuspend`.
    pub fn device_state(&self) -> DeviceState {
        self.link.state.clone()
    }

    /// A handle to give held bios back to the device (noflush suspend, no path).
    pub fn requeuer(&self) -> Requeuer {
        Requeuer {
            begin: self.begin,
            f: self.link.requeue.clone(),
        }
    }

    /// A dedicated worker for this target's blocking work (metadata reads, copies, commits),
    /// so it never runs on, starves or waits for the shared I/O pool. Its thread ends when
    /// the last handle is dropped.
    pub fn worker(&self, name: &str) -> Arc<Worker> {
        Arc::new(Worker::new(name))
    }

    /// Publish `obj` under this table's device so other tables can find it (a thin pool for
    /// its thin devices). Found while the returned `Publication` lives (keep it in the
    /// target: reloading or removing the device drops it) and `obj` is alive.
    pub fn publish<T: Any + Send + Sync>(&self, obj: &Arc<T>) -> Result<Publication, TargetError> {
        let key = self
            .owner()
            .cloned()
            .ok_or_else(|| TargetError::invalid("target needs a mapped device to publish under"))?;
        self.publish_as(key, obj)
    }

    /// Publish `obj` under another key, e.g. a backing device (a snapshot registers with its
    /// origin's device, as the kernel's origin hash).
    pub fn publish_as<T: Any + Send + Sync>(
        &self,
        key: DevId,
        obj: &Arc<T>,
    ) -> Result<Publication, TargetError> {
        let p =
            self.link.published.as_ref().ok_or_else(|| {
                TargetError::invalid("no registry to publish in (standalone table)")
            })?;
        Ok(p.publish(key, obj))
    }

    /// The newest live object of type `T` published under `key` (e.g. the id of a device
    /// opened with `get_device`).
    pub fn lookup<T: Any + Send + Sync>(&self, key: &DevId) -> Option<Arc<T>> {
        self.link.published.as_ref()?.lookup(key)
    }

    /// Every live object of type `T` under `key`, oldest first.
    pub fn lookup_all<T: Any + Send + Sync>(&self, key: &DevId) -> Vec<Arc<T>> {
        self.link
            .published
            .as_ref()
            .map(|p| p.lookup_all(key))
            .unwrap_or_default()
    }

    /// A handle the target keeps to signal events (thin low-water, verity corruption, …).
    pub fn event_trigger(&self) -> EventTrigger {
        self.events.clone().unwrap_or_else(|| Arc::new(|| {}))
    }

    /// Open a device named in the table (`/path`, `major:minor`, `/dev/mapper/NAME`), shared
    /// with the rest of the table. Does not check any area; see `get_device_area`.
    pub fn get_device(&mut self, spec: &str) -> Result<Arc<DevHandle>, TargetError> {
        let h = self.resolver.resolve(spec, self.read_only)?;
        if let Some(existing) = self.devices.iter().find(|d| d.id == h.id) {
            return Ok(existing.clone());
        }
        self.devices.push(h.clone());
        Ok(h)
    }

    /// Open a device and record that `[start, start+len)` of it is used, so the table checks it
    /// lies inside the device and is aligned to its logical block size.
    pub fn get_device_area(
        &mut self,
        spec: &str,
        start: Sectors,
        len: Sectors,
    ) -> Result<Arc<DevHandle>, TargetError> {
        let h = self.get_device(spec)?;
        self.areas.push((h.clone(), start, len));
        Ok(h)
    }
}

/// The set of target types: those registered (listed by `targets`, newest first, as the
/// kernel lists them) and the "modules" that register more types on first use.
///
/// The kernel has error, linear and striped built into dm-mod; every other target is a module
/// (`dm-zero`, `dm-crypt`, `dm-snapshot` …) that `request_module("dm-<type>")` loads when a
/// table or `target-version` first names one of its types. udm keeps that behaviour so
/// `dmsetup targets` prints what the kernel prints after the same commands.
#[derive(Clone, Default)]
pub struct TargetTypes {
    inner: Arc<RwLock<Types>>,
}

#[derive(Default)]
struct Types {
    /// Registered types with their registration sequence numbers.
    loaded: BTreeMap<String, (u64, Arc<dyn TargetType>)>,
    /// Modules not loaded yet: (module name, the types it registers in order).
    modules: Vec<(String, Vec<Arc<dyn TargetType>>)>,
    next: u64,
}

impl Types {
    fn add(&mut self, t: Arc<dyn TargetType>) {
        let seq = self.next;
        self.next += 1;
        self.loaded.insert(t.name().to_string(), (seq, t));
    }
    /// Load the module providing type `name` (or named `name`); true if one was loaded.
    fn autoload(&mut self, name: &str) -> bool {
        let Some(i) = self
            .modules
            .iter()
            .position(|(m, ts)| m == name || ts.iter().any(|t| t.name() == name))
        else {
            return false;
        };
        let (_, ts) = self.modules.remove(i);
        for t in ts {
            self.add(t);
        }
        true
    }
}

impl TargetTypes {
    pub fn new() -> TargetTypes {
        TargetTypes::default()
    }
    /// Register a type now (a type built into the core, or a module loaded by hand).
    pub fn register(&self, t: Arc<dyn TargetType>) {
        self.inner.write().add(t);
    }
    /// Make a module available: its types register, in the given order, the first time one
    /// of them is named (`get`) or the module is loaded with `load_module`.
    pub fn register_module(&self, module: &str, types: Vec<Arc<dyn TargetType>>) {
        self.inner.write().modules.push((module.to_string(), types));
    }
    /// Load a module (`modprobe dm-<name>`, or by one of its type names) if it is not loaded.
    /// False if there is no such module (already loaded counts as loaded: true).
    pub fn load_module(&self, module: &str) -> bool {
        let module = module.strip_prefix("dm-").unwrap_or(module);
        let mut g = self.inner.write();
        g.autoload(module)
            || g.loaded.contains_key(module)
            || g.loaded.values().any(|(_, t)| t.name() == module)
    }
    /// Load every module still unloaded, in the order they were made available.
    pub fn load_all(&self) {
        let mut g = self.inner.write();
        for (_, ts) in std::mem::take(&mut g.modules) {
            for t in ts {
                g.add(t);
            }
        }
    }
    /// The type called `name`, loading its module first if needed (`request_module`).
    pub fn get(&self, name: &str) -> Option<Arc<dyn TargetType>> {
        if let Some((_, t)) = self.inner.read().loaded.get(name) {
            return Some(t.clone());
        }
        let mut g = self.inner.write();
        g.autoload(name);
        g.loaded.get(name).map(|(_, t)| t.clone())
    }
    /// Name and version of every registered type, most recently registered first (as the
    /// kernel lists them). Modules not loaded yet are not listed.
    pub fn list(&self) -> Vec<(String, [u32; 3])> {
        let g = self.inner.read();
        let mut v: Vec<_> = g
            .loaded
            .values()
            .map(|(seq, t)| (*seq, t.name().to_string(), t.version()))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        v.into_iter().map(|(_, n, ver)| (n, ver)).collect()
    }
}

/// `DevId` of a handle, for targets printing their table line.
pub fn dev_label(h: &DevHandle) -> DevId {
    h.id.clone()
}
