//! Target contracts: `TargetType` (the constructor, like a kernel `target_type`) and `Target`
//! (one table line: `map`, status, messages and optional hooks with pass-through defaults).

use crate::resolve::{DevHandle, Resolver};
use parking_lot::RwLock;
use std::collections::BTreeMap;
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
/// not block; anything blocking goes to `udm_io::WorkerPool`.
pub trait Target: Send + Sync {
    fn map(&self, bio: Bio) -> MapResult;

    /// The status string (INFO) or the canonical table params (TABLE).
    fn status(&self, _ty: StatusType) -> String {
        String::new()
    }
    /// Handle `dmsetup message`; `Ok(Some(text))` returns text to the caller.
    fn message(&self, _argv: &[String]) -> Result<Option<String>, TargetError> {
        Err(TargetError::invalid(
            "Target type does not support messages",
        ))
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
    fn presuspend(&self) {}
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

/// What a constructor gets: its place in the table and a way to open devices.
pub struct TargetCtx<'a> {
    pub begin: Sectors,
    pub len: Sectors,
    pub read_only: bool,
    resolver: &'a dyn Resolver,
    events: Option<EventTrigger>,
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
            devices,
            areas: Vec::new(),
        }
    }

    pub(crate) fn with_events(mut self, events: Option<EventTrigger>) -> TargetCtx<'a> {
        self.events = events;
        self
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

/// A type and its registration sequence number.
type Registered = (u64, Arc<dyn TargetType>);

/// The set of registered target types.
#[derive(Clone, Default)]
pub struct TargetTypes {
    types: Arc<RwLock<BTreeMap<String, Registered>>>,
}

impl TargetTypes {
    pub fn new() -> TargetTypes {
        TargetTypes::default()
    }
    pub fn register(&self, t: Arc<dyn TargetType>) {
        let mut g = self.types.write();
        let seq = g.len() as u64;
        g.insert(t.name().to_string(), (seq, t));
    }
    pub fn get(&self, name: &str) -> Option<Arc<dyn TargetType>> {
        self.types.read().get(name).map(|(_, t)| t.clone())
    }
    /// Name and version of every type, most recently registered first (as the kernel lists them).
    pub fn list(&self) -> Vec<(String, [u32; 3])> {
        let g = self.types.read();
        let mut v: Vec<_> = g
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
