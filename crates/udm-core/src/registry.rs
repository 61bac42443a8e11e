//! `Registry`: the control plane — every mapped device by name/uuid/minor and the dm ioctl set
//! (create, load, clear, suspend, resume, remove, rename, info, deps, status, message, wait …).

use crate::device::{DevInfo, DmBlockDevice, Geometry, MappedDevice, SuspendOpts};
use crate::error::DmError;
use crate::klog;
use crate::lookup::Published;
use crate::resolve::{parse_devno, DevHandle, FileCache, Resolver};
use crate::table::{Table, TableLine};
use crate::target::{DeviceLink, StatusFlags, StatusType, TargetError, TargetTypes};
use crate::DM_MAJOR;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::Duration;
use udm_io::{BlockDevice, DevId, Sectors};

/// How a request names a device (the kernel's lookup precedence: uuid, then name, then dev).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DevSel {
    Name(String),
    Uuid(String),
    Dev(u32, u32),
}

/// One target's status line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetStatus {
    pub start: u64,
    pub len: u64,
    pub ttype: String,
    pub params: String,
}

/// Something frontends want to know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    Created(String),
    /// A table went live (first table, or a reload that may change the size).
    Resumed(String),
    Renamed {
        old: String,
        new: String,
    },
    Removed(String),
}

type Listener = Box<dyn Fn(&RegistryEvent) + Send + Sync>;

/// Why a [`DeviceProvider`] could not open a device (its message goes into the table error).
pub type ProviderError = Box<dyn std::error::Error + Send + Sync>;

/// Opens device arguments the core itself does not know, such as remote `nbd://` exports.
/// An embedder (the daemon) registers providers with [`Registry::register_provider`]; the
/// first provider that claims a table's device argument opens it.
pub trait DeviceProvider: Send + Sync {
    /// True when `spec` is this provider's to open.
    fn claims(&self, spec: &str) -> bool;
    /// Open (or share) the device `spec` names.
    fn open(&self, spec: &str, read_only: bool) -> Result<Arc<dyn BlockDevice>, ProviderError>;
}

/// A device used by a table, as `deps` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dep {
    /// `major:minor` or a path.
    pub id: String,
    /// Device number when it has one.
    pub devno: Option<(u32, u32)>,
    /// Name of the mapped device when it is one.
    pub dm_name: Option<String>,
}

struct Inner {
    devices: RwLock<BTreeMap<String, Arc<MappedDevice>>>,
    types: TargetTypes,
    files: FileCache,
    global_event: AtomicU32,
    listeners: Mutex<Vec<Listener>>,
    providers: RwLock<Vec<Arc<dyn DeviceProvider>>>,
    /// Serialises create/remove/rename so names stay unique.
    ns: Mutex<()>,
    /// Objects targets publish for other tables to find (pools, origins).
    published: Published,
}

/// The set of mapped devices and the operations on them. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// Log an ioctl refusal the kernel logs (`device-mapper: ioctl: <msg>`), and return it.
fn logged(e: DmError) -> DmError {
    klog::err("ioctl", &e.to_string());
    e
}

/// How long `remove` waits for opens that are being released before it says EBUSY.
const REMOVE_GRACE: Duration = Duration::from_millis(300);

/// How long a remove waits for the mapped devices below to be released.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// The kernel's destructor releases the devices below before `dmsetup remove` returns, so
/// `dmsetup remove top && dmsetup remove bottom` works. A udm target's state can outlive
/// its table for a moment (a completion returning on a pool thread, a timer thread's
/// tick): wait until the handles on mapped devices the removed tables held are gone.
fn wait_released(below: &[Weak<DevHandle>]) {
    let until = std::time::Instant::now() + RELEASE_WAIT;
    while below.iter().any(|w| w.strong_count() > 0) {
        if std::time::Instant::now() >= until {
            tracing::warn!("remove: a device below is still held after {RELEASE_WAIT:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Driver interface version udm reports (`dmsetup version`).
pub const DM_VERSION: [u32; 3] = [4, 47, 0];

/// Kernel 6.1's rules: not empty, no '/', not "." or "..", at most 127 bytes ("control" is
/// accepted, as the kernel does).
fn check_name(name: &str) -> Result<(), DmError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.len() > 127 {
        return Err(DmError::invalid(format!("Invalid device name: {name:?}")));
    }
    Ok(())
}

impl Registry {
    pub fn new(types: TargetTypes) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                devices: RwLock::new(BTreeMap::new()),
                types,
                files: FileCache::default(),
                global_event: AtomicU32::new(0),
                listeners: Mutex::new(Vec::new()),
                providers: RwLock::new(Vec::new()),
                ns: Mutex::new(()),
                published: Published::new(),
            }),
        }
    }

    pub fn target_types(&self) -> &TargetTypes {
        &self.inner.types
    }

    /// The objects targets have published (see `TargetCtx::publish`).
    pub fn published(&self) -> &Published {
        &self.inner.published
    }

    /// Register a callback for device lifecycle events.
    pub fn subscribe(&self, f: impl Fn(&RegistryEvent) + Send + Sync + 'static) {
        self.inner.listeners.lock().push(Box::new(f));
    }

    /// Let `p` open the device arguments it claims (tried in registration order, before
    /// mapped devices and paths).
    pub fn register_provider(&self, p: Arc<dyn DeviceProvider>) {
        self.inner.providers.write().push(p);
    }

    fn notify(&self, ev: RegistryEvent) {
        for l in self.inner.listeners.lock().iter() {
            l(&ev);
        }
    }

    pub fn version(&self) -> [u32; 3] {
        DM_VERSION
    }

    /// Look a device up.
    pub fn get(&self, sel: &DevSel) -> Result<Arc<MappedDevice>, DmError> {
        let g = self.inner.devices.read();
        let found = match sel {
            DevSel::Name(n) => g.get(n).cloned(),
            DevSel::Uuid(u) => g
                .values()
                .find(|d| !u.is_empty() && d.uuid() == *u)
                .cloned(),
            DevSel::Dev(ma, mi) => g
                .values()
                .find(|d| *ma == DM_MAJOR && d.minor() == *mi)
                .cloned(),
        };
        found.ok_or(DmError::NoDevice)
    }

    /// All devices, sorted by name: (name, major, minor, event_nr, uuid).
    pub fn list(&self) -> Vec<DevInfo> {
        self.inner
            .devices
            .read()
            .values()
            .map(|d| d.info(false))
            .collect()
    }

    /// Create an empty device (no tables).
    pub fn create(&self, name: &str, uuid: &str) -> Result<DevInfo, DmError> {
        check_name(name)?;
        if uuid.len() > 128 {
            return Err(DmError::invalid("uuid too long"));
        }
        let _ns = self.inner.ns.lock();
        let mut g = self.inner.devices.write();
        if g.contains_key(name) {
            return Err(DmError::Busy(format!("Device {name} already exists")));
        }
        if !uuid.is_empty() && g.values().any(|d| d.uuid() == uuid) {
            return Err(DmError::Busy(format!("uuid {uuid} is already in use")));
        }
        let used: std::collections::BTreeSet<u32> = g.values().map(|d| d.minor()).collect();
        let minor = (0..).find(|m| !used.contains(m)).unwrap_or(0);
        let d = Arc::new(MappedDevice::new(name, uuid, minor));
        g.insert(name.to_string(), d.clone());
        drop(g);
        self.inner.global_event.fetch_add(1, SeqCst);
        self.notify(RegistryEvent::Created(name.to_string()));
        Ok(d.info(false))
    }

    /// Build a table and stage it in the device's inactive slot.
    pub fn load(
        &self,
        sel: &DevSel,
        lines: &[TableLine],
        read_only: bool,
    ) -> Result<DevInfo, DmError> {
        let d = self.get(sel)?;
        let resolver = RegResolver { reg: self };
        let weak = Arc::downgrade(&d);
        let events: crate::target::EventTrigger = Arc::new(move || {
            if let Some(d) = weak.upgrade() {
                d.raise_event();
            }
        });
        let link = DeviceLink {
            events: Some(events),
            owner: Some(DevId::Num(DM_MAJOR, d.minor())),
            published: Some(self.inner.published.clone()),
            state: d.device_state(),
            requeue: Some(d.requeue_fn().clone()),
        };
        let t = Table::build_for(lines, &self.inner.types, &resolver, read_only, &link)?;
        if let Some(live) = d.live_table() {
            // Immutable types can only be replaced by the same type.
            let old = live.target_types();
            for ty in &old {
                if self
                    .inner
                    .types
                    .get(ty)
                    .map(|t| t.features().immutable)
                    .unwrap_or(false)
                    && t.target_types() != old
                {
                    return Err(logged(DmError::invalid(format!(
                        "can't replace immutable target type {ty}"
                    ))));
                }
            }
        }
        d.load(t);
        Ok(d.info(false))
    }

    /// Drop the inactive table.
    pub fn clear(&self, sel: &DevSel) -> Result<DevInfo, DmError> {
        let d = self.get(sel)?;
        d.clear_inactive();
        Ok(d.info(false))
    }

    /// Suspend. `noflush` lets targets requeue the I/O they hold (resubmitted after resume);
    /// `nolockfs` is accepted (udm has no filesystem to freeze).
    pub fn suspend(
        &self,
        sel: &DevSel,
        noflush: bool,
        _nolockfs: bool,
    ) -> Result<DevInfo, DmError> {
        self.suspend_with(
            sel,
            SuspendOpts {
                noflush,
                ..SuspendOpts::default()
            },
        )
    }

    /// Suspend with every option (a drain timeout makes it abandonable).
    pub fn suspend_with(&self, sel: &DevSel, opts: SuspendOpts) -> Result<DevInfo, DmError> {
        let d = self.get(sel)?;
        d.suspend_with(opts)?;
        Ok(d.info(false))
    }

    /// Resume, swapping in the inactive table if present.
    pub fn resume(&self, sel: &DevSel) -> Result<DevInfo, DmError> {
        self.resume_with(sel, SuspendOpts::default())
    }

    /// Resume; `opts` (noflush) apply to the suspend a table swap on a live device needs.
    pub fn resume_with(&self, sel: &DevSel, opts: SuspendOpts) -> Result<DevInfo, DmError> {
        let d = self.get(sel)?;
        // The kernel loads a table that maps onto its own device (it holds itself open) and
        // would then loop on its first I/O; udm loads it too but will not make it live.
        let me = DevId::Num(DM_MAJOR, d.minor());
        if d.inactive_table()
            .is_some_and(|t| t.deps().iter().any(|h| h.id == me))
        {
            return Err(DmError::invalid(
                "table references its own device: refusing to make it live",
            ));
        }
        let swapped = d.resume_with(opts)?;
        d.resumed.store(true, SeqCst);
        // The kernel does not bump the event number on a resume (only targets, rename and
        // removal do); frontends still hear about the new table.
        if swapped {
            self.notify(RegistryEvent::Resumed(d.name()));
        }
        Ok(d.info(false))
    }

    /// Remove a device. Open → EBUSY, unless `deferred`, which marks it for removal on last close.
    pub fn remove(&self, sel: &DevSel, deferred: bool) -> Result<DevInfo, DmError> {
        let d = self.get(sel)?;
        if !deferred {
            // A client that just disconnected (an NBD client that sent DISC and exited, a
            // closed FUSE file) is released by its connection thread a moment later: give
            // that a short grace so `qemu-img … && dmsetup remove` is not a race.
            let until = std::time::Instant::now() + REMOVE_GRACE;
            while d.open_count() > 0 && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ns = self.inner.ns.lock();
        if d.open_count() > 0 {
            if deferred {
                d.deferred_remove.store(true, SeqCst);
                return Ok(d.info(false));
            }
            return Err(DmError::Busy("Device or resource busy".into()));
        }
        let info = d.info(false);
        self.inner.devices.write().remove(&d.name());
        d.raise_event();
        let below = d.teardown();
        self.inner.global_event.fetch_add(1, SeqCst);
        self.notify(RegistryEvent::Removed(info.name.clone()));
        drop(_ns);
        wait_released(&below);
        Ok(info)
    }

    /// Remove every device not open, repeating while that makes progress (stacks); with
    /// `deferred`, open ones are marked. Returns how many remain.
    pub fn remove_all(&self, deferred: bool) -> usize {
        loop {
            let names: Vec<String> = self.inner.devices.read().keys().cloned().collect();
            let mut progress = false;
            for n in &names {
                if self.remove(&DevSel::Name(n.clone()), false).is_ok() {
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        let left: Vec<Arc<MappedDevice>> = self.inner.devices.read().values().cloned().collect();
        if deferred {
            for d in &left {
                d.deferred_remove.store(true, SeqCst);
            }
        }
        self.inner.global_event.fetch_add(1, SeqCst);
        if !left.is_empty() {
            klog::err(
                "ioctl",
                &format!("remove_all left {} open device(s)", left.len()),
            );
        }
        left.len()
    }

    /// `@cancel_deferred_remove`.
    pub fn cancel_deferred_remove(&self, sel: &DevSel) -> Result<(), DmError> {
        let d = self.get(sel)?;
        // Cancelling when nothing is pending succeeds, as in the kernel.
        d.deferred_remove.store(false, SeqCst);
        Ok(())
    }

    /// Rename a device.
    pub fn rename(&self, sel: &DevSel, new: &str) -> Result<DevInfo, DmError> {
        check_name(new)?;
        let d = self.get(sel).inspect_err(|_| {
            if let DevSel::Name(old) = sel {
                klog::err(
                    "ioctl",
                    &format!("Unable to rename non-existent device, {old} to {new}"),
                );
            }
        })?;
        let _ns = self.inner.ns.lock();
        let mut g = self.inner.devices.write();
        let old = d.name();
        if g.contains_key(new) {
            return Err(logged(DmError::Busy(format!(
                "Unable to change name on mapped device {old} to one that already exists: {new}"
            ))));
        }
        g.remove(&old);
        *d.name.lock() = new.to_string();
        g.insert(new.to_string(), d.clone());
        drop(g);
        d.raise_event();
        self.inner.global_event.fetch_add(1, SeqCst);
        self.notify(RegistryEvent::Renamed {
            old,
            new: new.to_string(),
        });
        Ok(d.info(false))
    }

    /// Set the uuid of a device that has none.
    pub fn set_uuid(&self, sel: &DevSel, uuid: &str) -> Result<DevInfo, DmError> {
        if uuid.is_empty() || uuid.len() > 128 {
            return Err(DmError::invalid("Invalid new uuid"));
        }
        let d = self.get(sel)?;
        let _ns = self.inner.ns.lock();
        let name = d.name();
        if self.inner.devices.read().values().any(|o| o.uuid() == uuid) {
            return Err(logged(DmError::Busy(format!(
                "Unable to change uuid on mapped device {name} to one that already exists: {uuid}"
            ))));
        }
        let old = d.uuid();
        if !old.is_empty() {
            return Err(logged(DmError::invalid(format!(
                "Unable to change uuid of mapped device {name} to {uuid} because uuid is already set to {old}"
            ))));
        }
        *d.uuid.lock() = uuid.to_string();
        d.raise_event();
        self.inner.global_event.fetch_add(1, SeqCst);
        Ok(d.info(false))
    }

    pub fn info(&self, sel: &DevSel, inactive: bool) -> Result<DevInfo, DmError> {
        Ok(self.get(sel)?.info(inactive))
    }

    fn table_of(d: &MappedDevice, inactive: bool) -> Option<Arc<Table>> {
        if inactive {
            d.inactive_table()
        } else {
            d.live_table()
        }
    }

    /// Devices used by the live (or inactive) table, in the kernel's order.
    pub fn deps(&self, sel: &DevSel, inactive: bool) -> Result<(DevInfo, Vec<Dep>), DmError> {
        let d = self.get(sel)?;
        let deps = Self::table_of(&d, inactive)
            .map(|t| {
                t.deps()
                    .iter()
                    .map(|h| Dep {
                        id: h.id.to_string(),
                        devno: match h.id {
                            DevId::Num(a, b) => Some((a, b)),
                            DevId::Path(_) => None,
                        },
                        dm_name: h.dm_name.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((d.info(inactive), deps))
    }

    /// Status (INFO) or table (TABLE) strings of the live (or inactive) table.
    pub fn status(
        &self,
        sel: &DevSel,
        inactive: bool,
        ty: StatusType,
    ) -> Result<(DevInfo, Vec<TargetStatus>), DmError> {
        self.status_with(sel, inactive, ty, StatusFlags::NONE)
    }

    /// As `status`, passing `flags` (`--noflush`) to every target.
    pub fn status_with(
        &self,
        sel: &DevSel,
        inactive: bool,
        ty: StatusType,
        flags: StatusFlags,
    ) -> Result<(DevInfo, Vec<TargetStatus>), DmError> {
        let d = self.get(sel)?;
        let st = Self::table_of(&d, inactive)
            .map(|t| {
                t.status(ty, flags)
                    .into_iter()
                    .map(|(s, l, ty, p)| TargetStatus {
                        start: s.0,
                        len: l.0,
                        ttype: ty,
                        params: p,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((d.info(inactive), st))
    }

    /// Send a message to the target at `sector`, or to the core for `@…` words.
    pub fn message(
        &self,
        sel: &DevSel,
        sector: u64,
        argv: &[String],
    ) -> Result<Option<String>, DmError> {
        let d = self.get(sel)?;
        if argv.first().map(|a| a.as_str()) == Some("@cancel_deferred_remove") {
            self.cancel_deferred_remove(sel)?;
            return Ok(None);
        }
        if argv
            .first()
            .is_some_and(|a| a.starts_with("@stats_") || a == "@diskstats")
        {
            let size = d.live_table().map(|t| t.size().0).unwrap_or(0);
            return d.stats().message(size, argv).map(Some);
        }
        let Some(t) = d.live_table() else {
            return Err(logged(DmError::invalid(
                "Target message sector outside device.",
            )));
        };
        if argv.is_empty() {
            return Err(logged(DmError::invalid("Empty message received.")));
        }
        t.message(Sectors(sector), argv).map_err(|e| {
            // The core's own refusals come from dm-ioctl; a target's from the target.
            let prefix = match t.type_at(Sectors(sector)) {
                Some(ty) if e.msg != crate::target::NO_MESSAGES && sector < t.size().0 => ty,
                _ => "ioctl".to_string(),
            };
            // An empty message: the target refused without a word (as kernel targets do).
            if !e.msg.is_empty() {
                klog::err(&prefix, &e.msg);
            }
            DmError::Errno {
                errno: e.errno,
                msg: e.msg,
            }
        })
    }

    /// Registered target types, newest first (modules not loaded yet are not listed).
    pub fn list_versions(&self) -> Vec<(String, [u32; 3])> {
        self.inner.types.list()
    }

    /// The version of target type `name`, loading its module first as the kernel's
    /// `DM_GET_TARGET_VERSION` does (`request_module`); `None` if there is no such type.
    pub fn target_version(&self, name: &str) -> Option<[u32; 3]> {
        self.inner.types.get(name).map(|t| t.version())
    }

    /// `modprobe dm-<module>`: register a target module's types now. False if unknown.
    pub fn load_module(&self, module: &str) -> bool {
        self.inner.types.load_module(module)
    }

    /// Wait until the device's event number differs from `event_nr`.
    pub fn wait(
        &self,
        sel: &DevSel,
        event_nr: u32,
        timeout: Option<Duration>,
    ) -> Result<DevInfo, DmError> {
        let d = self.get(sel)?;
        if !d.wait_event(event_nr, timeout) {
            return Err(DmError::Errno {
                errno: libc::ETIMEDOUT,
                msg: "timed out".into(),
            });
        }
        Ok(d.info(false))
    }

    /// `DM_DEV_SET_GEO` with the geometry as text (`"<cyl> <heads> <sectors> <start>"`),
    /// parsed as the kernel parses it (`%lu` each: blanks, an optional `+`, digits).
    pub fn set_geometry_str(&self, sel: &DevSel, text: &str) -> Result<(), DmError> {
        let num = |w: &str| -> Option<u64> {
            let w = w.strip_prefix('+').unwrap_or(w);
            (!w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
                .then(|| w.parse().ok())
                .flatten()
        };
        let v: Vec<Option<u64>> = text.split_ascii_whitespace().take(4).map(num).collect();
        let [Some(c), Some(h), Some(s), Some(start)] = v[..] else {
            return Err(logged(DmError::invalid(
                "Unable to interpret geometry settings.",
            )));
        };
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        self.set_geometry(sel, clamp(c), clamp(h), clamp(s), start)
    }

    pub fn set_geometry(
        &self,
        sel: &DevSel,
        c: u32,
        h: u32,
        s: u32,
        start: u64,
    ) -> Result<(), DmError> {
        if c > 65535 || h > 255 || s > 255 {
            return Err(logged(DmError::invalid("Geometry exceeds range limits.")));
        }
        let d = self.get(sel)?;
        *d.geometry.lock() = Some(Geometry {
            cylinders: c,
            heads: h,
            sectors: s,
            start,
        });
        Ok(())
    }

    /// Open a device for I/O (what a frontend or stacked table does). The guard closes it; the
    /// last close of a device marked for deferred removal removes it.
    pub fn open(&self, sel: &DevSel) -> Result<(Arc<dyn BlockDevice>, OpenGuard), DmError> {
        let d = self.get(sel)?;
        d.open();
        let dev: Arc<dyn BlockDevice> = Arc::new(DmBlockDevice(d.clone()));
        Ok((
            dev,
            OpenGuard {
                dev: d,
                reg: Arc::downgrade(&self.inner),
            },
        ))
    }

    /// Resolve a device argument as a table would (for tools that open devices directly).
    pub fn resolve(&self, spec: &str, read_only: bool) -> Result<Arc<DevHandle>, TargetError> {
        RegResolver { reg: self }.resolve(spec, read_only)
    }
}

/// Keeps a mapped device open.
pub struct OpenGuard {
    dev: Arc<MappedDevice>,
    reg: Weak<Inner>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.dev.close() && self.dev.deferred_remove.load(SeqCst) {
            if let Some(inner) = self.reg.upgrade() {
                let reg = Registry { inner };
                let name = self.dev.name();
                // Remove on another thread: we may be inside a table teardown holding locks.
                std::thread::spawn(move || {
                    let _ = reg.remove(&DevSel::Name(name), false);
                });
            }
        }
    }
}

struct RegResolver<'a> {
    reg: &'a Registry,
}

impl Resolver for RegResolver<'_> {
    fn resolve(&self, spec: &str, read_only: bool) -> Result<Arc<DevHandle>, TargetError> {
        let lookup_failed = |why: String| {
            TargetError::with_errno(libc::ENXIO, "Device lookup failed")
                .with_detail(format!("{spec}: {why}"))
        };
        let provider = (self.reg.inner.providers.read().iter())
            .find(|p| p.claims(spec))
            .cloned();
        if let Some(p) = provider {
            // e.g. a remote NBD export (shared by every table naming the same URI).
            let d = p
                .open(spec, read_only)
                .map_err(|e| lookup_failed(e.to_string()))?;
            return Ok(Arc::new(DevHandle::new(d.id(), d, None, None)));
        }
        let mapped = |sel: DevSel| -> Result<Arc<DevHandle>, TargetError> {
            let d = self
                .reg
                .get(&sel)
                .map_err(|_| lookup_failed("no such mapped device".into()))?;
            let (dev, guard) = self
                .reg
                .open(&sel)
                .map_err(|e| lookup_failed(e.to_string()))?;
            Ok(Arc::new(DevHandle::new(
                DevId::Num(DM_MAJOR, d.minor()),
                dev,
                Some(d.name()),
                Some(Box::new(guard)),
            )))
        };
        if let Some((ma, mi)) = parse_devno(spec) {
            if ma == DM_MAJOR {
                return mapped(DevSel::Dev(ma, mi));
            }
            let uevent = std::fs::read_to_string(format!("/sys/dev/block/{ma}:{mi}/uevent"))
                .map_err(|_| lookup_failed("no such block device".into()))?;
            let name = uevent
                .lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .ok_or_else(|| lookup_failed("no DEVNAME".into()))?;
            return self.open_path(&format!("/dev/{name}"), read_only);
        }
        if spec.contains(':')
            && spec
                .split(':')
                .all(|p| p.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(TargetError::with_errno(
                libc::EOVERFLOW,
                format!("Device number out of range: {spec}"),
            ));
        }
        if let Some(name) = spec.strip_prefix("/dev/mapper/") {
            if let Ok(d) = self.reg.get(&DevSel::Name(name.to_string())) {
                let _ = d;
                return mapped(DevSel::Name(name.to_string()));
            }
        }
        self.open_path(spec, read_only)
    }
}

impl RegResolver<'_> {
    fn open_path(&self, spec: &str, read_only: bool) -> Result<Arc<DevHandle>, TargetError> {
        let path = Path::new(spec);
        // The kernel says ENODEV for a path it cannot use; the detail says why.
        let d = self.reg.inner.files.open(path, read_only).map_err(|e| {
            TargetError::with_errno(libc::ENODEV, "Device lookup failed")
                .with_detail(format!("{spec}: {e}"))
        })?;
        let id = d.id();
        let dev: Arc<dyn BlockDevice> = d;
        Ok(Arc::new(DevHandle::new(id, dev, None, None)))
    }
}
