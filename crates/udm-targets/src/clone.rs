//! `clone`: dm-clone, a local copy of a (slow or remote) source device that is usable at once
//! and hydrates itself region by region, with the kernel's metadata (udm-pdata's `clone`).
//!
//! `clone <metadata dev> <destination dev> <source dev> <region size> [<#features>
//! [no_hydration|no_discard_passdown]* [<#core args> [hydration_threshold N|
//! hydration_batch_size N]*]]`. Reads of hydrated regions go to the destination, of the
//! others to the source; a write to an unhydrated region waits while the region is copied
//! (or, when it covers the whole region, is written directly) and then goes to the
//! destination. Background hydration copies `hydration_batch_size` regions at a time on the
//! target's worker. A region is recorded hydrated in the metadata only at a commit that
//! follows a flush of the destination, so a crash never exposes an uncopied region.

use crate::kscan::scan_u32;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::target::dev_label;
use udm_core::{
    Copier, DevHandle, EventTrigger, Loc, MapResult, StatusFlags, StatusType, Target, TargetCtx,
    TargetError, TargetType, Worker,
};
use udm_io::{Bio, BlockDevice, DevId, IoError, Op, Sectors};
use udm_pdata::clone::CloneMetadata;

/// The `clone` target type.
pub struct CloneType;

#[derive(Default)]
struct State {
    hydrated: Vec<bool>,
    nr_hydrated: u64,
    /// Regions being hydrated, with the bios waiting for them.
    locked: HashMap<u64, Vec<Bio>>,
    /// Hydrated since the last commit (to be set in the metadata after a flush).
    dirty: Vec<u64>,
    cursor: u64,
}

struct Shared {
    region: u64,
    len: u64,
    nr_regions: u64,
    source: Arc<dyn BlockDevice>,
    dest: Arc<dyn BlockDevice>,
    md: Mutex<CloneMetadata>,
    st: Mutex<State>,
    worker: Arc<Worker>,
    copier: Copier,
    enabled: AtomicBool,
    suspended: AtomicBool,
    background: AtomicBool,
    passdown: bool,
    threshold: AtomicU32,
    batch: AtomicU32,
    hydrating: AtomicU32,
    failed: AtomicBool,
    event: EventTrigger,
}

fn submit(r: MapResult) {
    match r {
        MapResult::Remap(d, b) => d.submit(b),
        MapResult::Kill(b, e) => b.complete(Err(e)),
        MapResult::Requeue(b) => b.complete(Err(IoError::Io)),
        _ => {}
    }
}

impl Shared {
    fn dispatch(self: &Arc<Self>, mut bio: Bio) -> MapResult {
        let r = bio.sector.0 / self.region;
        let mut st = self.st.lock();
        if st.hydrated[r as usize] {
            return MapResult::Remap(self.dest.clone(), bio);
        }
        if bio.op == Op::Read {
            return MapResult::Remap(self.source.clone(), bio);
        }
        if let Some(q) = st.locked.get_mut(&r) {
            q.push(bio);
            return MapResult::Submitted;
        }
        let whole = bio.sector.0 == r * self.region && bio.len().0 == self.region_len(r);
        if whole && bio.op == Op::Write {
            // An overwrite of the whole region needs no copy: write it, then mark it.
            st.locked.insert(r, Vec::new());
            drop(st);
            let me = self.clone();
            bio = bio.on_end(move |res, _| {
                if res.is_ok() {
                    me.mark(r);
                }
                me.unlock(r);
                res
            });
            return MapResult::Remap(self.dest.clone(), bio);
        }
        st.locked.insert(r, vec![bio]);
        drop(st);
        let me = self.clone();
        self.hydrating.fetch_add(1, SeqCst);
        self.worker.spawn(move || {
            me.hydrate(r, 1);
            me.hydrating.fetch_sub(1, SeqCst);
        });
        MapResult::Submitted
    }

    fn region_len(&self, r: u64) -> u64 {
        self.region.min(self.len - r * self.region)
    }

    fn mark(&self, r: u64) {
        let mut st = self.st.lock();
        if !st.hydrated[r as usize] {
            st.hydrated[r as usize] = true;
            st.nr_hydrated += 1;
            st.dirty.push(r);
            if st.nr_hydrated == self.nr_regions {
                (self.event)();
            }
        }
    }

    fn unlock(self: &Arc<Self>, r: u64) {
        let bios = self.st.lock().locked.remove(&r).unwrap_or_default();
        for b in bios {
            submit(self.dispatch(b));
        }
    }

    /// Copy regions `[r, r+n)` (locked by the caller) from source to destination, mark them
    /// and release their bios (worker only).
    fn hydrate(self: &Arc<Self>, r: u64, n: u64) {
        let len: u64 = (r..r + n).map(|x| self.region_len(x)).sum();
        let ok = self
            .copier
            .copy_wait(
                Loc::new(self.source.clone(), Sectors(r * self.region)),
                vec![Loc::new(self.dest.clone(), Sectors(r * self.region))],
                Sectors(len),
            )
            .is_ok();
        for x in r..r + n {
            if ok {
                self.mark(x);
                self.unlock(x);
            } else {
                // Fail the waiting writes; the region stays unhydrated.
                let bios = self.st.lock().locked.remove(&x).unwrap_or_default();
                for b in bios {
                    b.complete(Err(IoError::Io));
                }
            }
        }
    }

    /// One background batch; re-queues itself while there is work and it is allowed.
    fn background(self: &Arc<Self>) {
        if !self.enabled.load(SeqCst)
            || self.suspended.load(SeqCst)
            || self.failed.load(SeqCst)
            || self.threshold.load(SeqCst) == 0
        {
            self.background.store(false, SeqCst);
            return;
        }
        let batch = (self.batch.load(SeqCst).max(1) as u64).min(self.nr_regions);
        let run = {
            let mut st = self.st.lock();
            let start = (0..self.nr_regions)
                .map(|i| (st.cursor + i) % self.nr_regions)
                .find(|&x| !st.hydrated[x as usize] && !st.locked.contains_key(&x));
            start.map(|s| {
                let mut n = 0;
                while n < batch
                    && s + n < self.nr_regions
                    && !st.hydrated[(s + n) as usize]
                    && !st.locked.contains_key(&(s + n))
                {
                    st.locked.insert(s + n, Vec::new());
                    n += 1;
                }
                st.cursor = s + n;
                (s, n)
            })
        };
        let Some((s, n)) = run else {
            self.background.store(false, SeqCst);
            let _ = self.commit();
            return;
        };
        self.hydrating.fetch_add(n as u32, SeqCst);
        self.hydrate(s, n);
        self.hydrating.fetch_sub(n as u32, SeqCst);
        let dirty = self.st.lock().dirty.len();
        if dirty >= 64 {
            let _ = self.commit();
        }
        let me = self.clone();
        self.worker.spawn(move || me.background());
    }

    fn kick(self: &Arc<Self>) {
        if !self.background.swap(true, SeqCst) {
            let me = self.clone();
            self.worker.spawn(move || me.background());
        }
    }

    /// Flush the destination, then record the regions hydrated before it and commit.
    fn commit(&self) -> Result<(), IoError> {
        let dirty = std::mem::take(&mut self.st.lock().dirty);
        let r = udm_io::sync::flush(&*self.dest).and_then(|_| {
            let mut md = self.md.lock();
            dirty
                .iter()
                .try_for_each(|&x| md.set_hydrated(x))
                .and_then(|_| md.commit())
                .map_err(|e| {
                    tracing::error!("clone: metadata commit failed: {e}");
                    self.failed.store(true, SeqCst);
                    IoError::Io
                })
        });
        if r.is_err() {
            self.st.lock().dirty.extend(dirty);
        }
        r
    }

    fn on_worker<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<Shared>) -> T + Send + 'static,
    ) -> T {
        let me = self.clone();
        self.worker.call(move || f(&me))
    }
}

impl TargetType for CloneType {
    fn name(&self) -> &'static str {
        "clone"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        if args.len() < 4 {
            return Err(TargetError::invalid("Invalid number of arguments"));
        }
        let open = |ctx: &mut TargetCtx<'_>, a: &str, what: &str| {
            ctx.get_device(a).map_err(|e| {
                TargetError::invalid(format!("Error opening {what}")).with_detail(e.msg)
            })
        };
        let meta = open(ctx, &args[0], "metadata device")?;
        let dest = open(ctx, &args[1], "destination device")?;
        if dest.dev.size() < ctx.len {
            return Err(TargetError::invalid(
                "Device size larger than destination device",
            ));
        }
        let source = open(ctx, &args[2], "source device")?;
        if source.dev.size() < ctx.len {
            return Err(TargetError::invalid(
                "Device size larger than source device",
            ));
        }
        let region = scan_u32(&args[3])
            .filter(|&r| (8..=2_097_152).contains(&r))
            .ok_or_else(|| TargetError::invalid("Invalid region size"))?
            as u64;
        if !region.is_power_of_two() {
            return Err(TargetError::invalid("Region size is not a power of 2"));
        }
        let nr_regions = ctx.len.0.div_ceil(region);
        if nr_regions > 1 << 31 {
            return Err(TargetError::invalid(
                "Too many regions. Consider increasing the region size",
            ));
        }
        let (mut enabled, mut passdown, mut threshold, mut batch) = (true, true, 1u32, 1u32);
        let mut rest = args[4..].iter();
        if let Some(n) = rest.next() {
            let n = scan_u32(n)
                .filter(|&n| n <= 2)
                .ok_or_else(|| TargetError::invalid("Invalid number of feature arguments"))?;
            for _ in 0..n {
                let f = rest
                    .next()
                    .ok_or_else(|| TargetError::invalid("Not enough arguments"))?;
                match f.to_ascii_lowercase().as_str() {
                    "no_hydration" => enabled = false,
                    "no_discard_passdown" => passdown = false,
                    _ => return Err(TargetError::invalid("Invalid feature argument")),
                }
            }
        }
        if let Some(n) = rest.next() {
            let n = scan_u32(n)
                .filter(|&n| n <= 4)
                .ok_or_else(|| TargetError::invalid("Invalid number of core arguments"))?;
            if n % 2 == 1 {
                return Err(TargetError::invalid(
                    "Number of core arguments must be even",
                ));
            }
            for _ in 0..n / 2 {
                let (k, v) = (rest.next(), rest.next());
                let (Some(k), Some(v)) = (k, v) else {
                    return Err(TargetError::invalid("Not enough arguments"));
                };
                let slot = match k.to_ascii_lowercase().as_str() {
                    "hydration_threshold" => &mut threshold,
                    "hydration_batch_size" => &mut batch,
                    _ => return Err(TargetError::invalid("Invalid core argument")),
                };
                *slot = scan_u32(v).ok_or_else(|| {
                    TargetError::invalid(format!("Invalid value for argument `{k}'"))
                })?;
            }
        }
        let io: Arc<dyn udm_pdata::io::MetaIo> =
            Arc::new(crate::cache::DevMetaIo::new(meta.dev.clone()));
        let mut md = CloneMetadata::open_or_format(io, region, ctx.len.0).map_err(|e| {
            TargetError::with_errno(e.errno(), "Failed to load metadata").with_detail(e.to_string())
        })?;
        let hydrated = md.hydrated().map_err(|e| {
            TargetError::with_errno(e.errno(), "Failed to load metadata").with_detail(e.to_string())
        })?;
        let nr_hydrated = hydrated.iter().filter(|&&h| h).count() as u64;
        let shared = Arc::new(Shared {
            region,
            len: ctx.len.0,
            nr_regions,
            source: source.dev.clone(),
            dest: dest.dev.clone(),
            md: Mutex::new(md),
            st: Mutex::new(State {
                hydrated,
                nr_hydrated,
                ..State::default()
            }),
            worker: ctx.worker("clone"),
            copier: Copier::new(Sectors(region.min(1024)), 16),
            enabled: AtomicBool::new(enabled),
            suspended: AtomicBool::new(true),
            background: AtomicBool::new(false),
            passdown,
            threshold: AtomicU32::new(threshold),
            batch: AtomicU32::new(batch),
            hydrating: AtomicU32::new(0),
            failed: AtomicBool::new(false),
            event: ctx.event_trigger(),
        });
        Ok(Box::new(CloneTarget {
            shared,
            devs: [dev_label(&meta), dev_label(&dest), dev_label(&source)],
            args: args[3..].to_vec(),
            _meta: meta,
        }))
    }
}

/// One `clone` table line.
pub struct CloneTarget {
    shared: Arc<Shared>,
    devs: [DevId; 3],
    args: Vec<String>,
    _meta: Arc<DevHandle>,
}

impl Drop for CloneTarget {
    fn drop(&mut self) {
        if !self.shared.suspended.load(SeqCst) {
            self.postsuspend();
        }
    }
}

impl Target for CloneTarget {
    fn map(&self, bio: Bio) -> MapResult {
        let s = &self.shared;
        match bio.op {
            Op::Read | Op::Write
                if bio.flags.contains(udm_io::BioFlags::PREFLUSH)
                    || bio.flags.contains(udm_io::BioFlags::FUA) =>
            {
                // Commit first (regions hydrated so far), then let the bio go normally;
                // a FUA write to a hydrated region is durable with its mapping.
                let me = s.clone();
                s.worker.spawn(move || match me.commit() {
                    Ok(()) => submit(me.dispatch(bio)),
                    Err(e) => bio.complete(Err(e)),
                });
                MapResult::Submitted
            }
            Op::Read | Op::Write => s.dispatch(bio),
            Op::Flush => {
                let me = s.clone();
                s.worker.spawn(move || {
                    let r = me.commit();
                    bio.complete(r)
                });
                MapResult::Submitted
            }
            _ => {
                // Discard / write-zeroes: whole unhydrated regions become hydrated (their
                // contents are now defined by the destination), the rest goes to the
                // destination only where hydrated.
                let me = s.clone();
                s.worker.spawn(move || me.discard_like(bio));
                MapResult::Submitted
            }
        }
    }

    fn max_io_len(&self) -> Option<Sectors> {
        Some(Sectors(self.shared.region))
    }

    /// As the kernel: unless the stacked optimal I/O is a multiple of the region size, the
    /// region size becomes the minimum and optimal I/O.
    fn io_hints(&self, limits: &mut udm_io::Limits) {
        let bytes = (self.shared.region * 512) as u32;
        if limits.io_opt < bytes || !limits.io_opt.is_multiple_of(bytes) {
            limits.io_min = bytes;
            limits.io_opt = bytes;
        }
    }

    fn status(&self, ty: StatusType, flags: StatusFlags) -> String {
        let s = &self.shared;
        match ty {
            StatusType::Info => {
                if s.failed.load(SeqCst) {
                    return "Fail".into();
                }
                if !flags.noflush && !s.suspended.load(SeqCst) {
                    let _ = s.on_worker(|s| s.commit());
                }
                let (free, total) = s.md.lock().metadata_usage();
                let hydrated = s.st.lock().nr_hydrated;
                let mut out = format!(
                    "8 {}/{} {} {}/{} {} ",
                    total - free,
                    total,
                    s.region,
                    hydrated,
                    s.nr_regions,
                    s.hydrating.load(SeqCst)
                );
                let enabled = s.enabled.load(SeqCst);
                out.push_str(&format!("{} ", !enabled as u32 + !s.passdown as u32));
                if !enabled {
                    out.push_str("no_hydration ");
                }
                if !s.passdown {
                    out.push_str("no_discard_passdown ");
                }
                out.push_str(&format!(
                    "4 hydration_threshold {} hydration_batch_size {} rw",
                    s.threshold.load(SeqCst),
                    s.batch.load(SeqCst)
                ));
                out
            }
            StatusType::Table => {
                let e = |d: &DevId| udm_core::escape_arg(&d.to_string()).into_owned();
                let mut out = format!(
                    "{} {} {}",
                    e(&self.devs[0]),
                    e(&self.devs[1]),
                    e(&self.devs[2])
                );
                for a in &self.args {
                    out.push(' ');
                    out.push_str(a);
                }
                out
            }
        }
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        let s = &self.shared;
        let cmd = argv[0].to_ascii_lowercase();
        match (cmd.as_str(), argv.len()) {
            ("enable_hydration", _) => {
                if !s.enabled.swap(true, SeqCst) && !s.suspended.load(SeqCst) {
                    s.kick();
                }
            }
            ("disable_hydration", _) => s.enabled.store(false, SeqCst),
            ("hydration_threshold", 2) | ("hydration_batch_size", 2) => {
                let v = scan_u32(&argv[1]).ok_or_else(|| TargetError::invalid("Invalid value"))?;
                if cmd == "hydration_threshold" {
                    s.threshold.store(v, SeqCst);
                    if s.enabled.load(SeqCst) && !s.suspended.load(SeqCst) {
                        s.kick();
                    }
                } else {
                    s.batch.store(v, SeqCst);
                }
            }
            _ => {
                return Err(TargetError::invalid(format!(
                    "Unsupported message `{}'",
                    argv[0]
                )))
            }
        }
        Ok(None)
    }

    fn postsuspend(&self) {
        let s = &self.shared;
        s.suspended.store(true, SeqCst);
        if let Err(e) = s.on_worker(|s| s.commit()) {
            tracing::error!("clone: commit at suspend failed: {e:?}");
        }
    }

    fn resume(&self) {
        let s = &self.shared;
        s.suspended.store(false, SeqCst);
        if s.enabled.load(SeqCst) {
            s.kick();
        }
    }
}

impl Shared {
    fn discard_like(self: &Arc<Self>, bio: Bio) {
        let (start, end) = (bio.sector.0, bio.end().0);
        let first = start.div_ceil(self.region);
        let last = end / self.region;
        for r in first..last {
            if self.region_len(r) == self.region || r * self.region + self.region_len(r) <= end {
                let free = !self.st.lock().locked.contains_key(&r);
                if free {
                    self.mark(r);
                }
            }
        }
        let pass = bio.op == Op::WriteZeroes || self.passdown;
        if !pass {
            bio.complete(Ok(()));
            return;
        }
        // Only hydrated regions may be touched on the destination.
        let hydrated_all = {
            let st = self.st.lock();
            (start / self.region..end.div_ceil(self.region)).all(|r| st.hydrated[r as usize])
        };
        if hydrated_all {
            self.dest.submit(bio);
        } else if bio.op == Op::WriteZeroes {
            // Zero unhydrated partial regions after hydrating them.
            let regions: Vec<u64> = (start / self.region..end.div_ceil(self.region)).collect();
            for r in regions {
                let needs = {
                    let mut st = self.st.lock();
                    let n = !st.hydrated[r as usize] && !st.locked.contains_key(&r);
                    if n {
                        st.locked.insert(r, Vec::new());
                    }
                    n
                };
                if needs {
                    self.hydrate(r, 1);
                }
            }
            self.dest.submit(bio);
        } else {
            bio.complete(Ok(()));
        }
    }
}
