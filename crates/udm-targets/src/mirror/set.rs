//! The running mirror set (the kernel's `mirror_set` with its region hash and `kmirrord`):
//! region states, writes to every leg, balanced reads with retry on another leg, leg
//! failures, and region-by-region resynchronisation with the block copier.
//!
//! Decisions that need the dirty log written first (a write to a clean region of a disk
//! log) and the resync loop run on the set's own worker; everything else happens in `map`
//! and in bio completions.

use super::log::DirtyLog;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::{klog, Copier, DevHandle, DeviceState, EventTrigger, Loc, Requeuer, Worker};
use udm_io::{Bio, BlockDevice, DevId, IoBuf, IoError, Op, Sectors};

/// Leg error kinds (the kernel's `dm_raid1_error` bits).
pub const ERR_WRITE: u8 = 1;
pub const ERR_FLUSH: u8 = 2;
pub const ERR_SYNC: u8 = 4;
pub const ERR_READ: u8 = 8;

/// What the kernel's mirror module prints under.
pub const PREFIX: &str = "raid1";

/// One leg of the mirror.
pub struct Leg {
    pub dev: Arc<dyn BlockDevice>,
    pub id: DevId,
    pub offset: u64,
    errors: AtomicU32,
    error_type: AtomicU8,
    pub _handle: Arc<DevHandle>,
}

impl Leg {
    pub fn new(h: Arc<DevHandle>, offset: u64) -> Leg {
        Leg {
            dev: h.dev.clone(),
            id: h.id.clone(),
            offset,
            errors: AtomicU32::new(0),
            error_type: AtomicU8::new(0),
            _handle: h,
        }
    }
    fn ok(&self) -> bool {
        self.errors.load(SeqCst) == 0
    }
    /// `A` alive, `F` flush, `D` write, `S` sync, `R` read failure, `U` unknown.
    pub fn status_char(&self) -> char {
        if self.ok() {
            return 'A';
        }
        let t = self.error_type.load(SeqCst);
        if t & ERR_FLUSH != 0 {
            'F'
        } else if t & ERR_WRITE != 0 {
            'D'
        } else if t & ERR_SYNC != 0 {
            'S'
        } else if t & ERR_READ != 0 {
            'R'
        } else {
            'U'
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RState {
    Clean,
    Dirty,
    NoSync,
    Recovering,
}

struct Region {
    state: RState,
    pending: u32,
    delayed: Vec<Bio>,
    /// The log saying this region is dirty has reached the log device.
    flushed: bool,
}

/// A finished resync copy: region, read result, write results (other legs, in order).
type Recovered = (u64, bool, Vec<bool>);

/// Everything the lock protects.
pub struct St {
    pub log: DirtyLog,
    regions: HashMap<u64, Region>,
    recovering: Option<u64>,
    copying: bool,
    recovery_stopped: bool,
    pub in_sync: bool,
    holds: Vec<Bio>,
    suspended: bool,
    log_failure: bool,
    leg_failure: bool,
    /// Writes waiting for the worker to mark their regions in the log.
    queued: Vec<Bio>,
    recovered: Vec<Recovered>,
    default: usize,
    rr: usize,
}

impl St {
    pub fn suspended(&self) -> bool {
        self.suspended
    }
    fn state(&self, r: u64) -> RState {
        match self.regions.get(&r) {
            Some(reg) => reg.state,
            None if self.log.in_sync(r) => RState::Clean,
            None => RState::NoSync,
        }
    }
    fn region(&mut self, r: u64) -> &mut Region {
        let st = if self.log.in_sync(r) {
            RState::Clean
        } else {
            RState::NoSync
        };
        self.regions.entry(r).or_insert(Region {
            state: st,
            pending: 0,
            delayed: Vec::new(),
            flushed: true,
        })
    }
}

/// The mirror set shared by the target, its worker and its bios.
pub struct Set {
    pub legs: Vec<Leg>,
    pub st: Mutex<St>,
    pub handle_errors: bool,
    pub keep_log: bool,
    pub len: u64,
    pub region: u64,
    pub nr_regions: u64,
    pub worker: Arc<Worker>,
    copier: Copier,
    event: EventTrigger,
    requeue: Requeuer,
    dstate: DeviceState,
    kicked: AtomicBool,
}

enum Action {
    Kept,
    All(Bio, u64),
    Default(Bio, u64),
}

impl Set {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        legs: Vec<Leg>,
        log: DirtyLog,
        handle_errors: bool,
        keep_log: bool,
        len: u64,
        worker: Arc<Worker>,
        event: EventTrigger,
        requeue: Requeuer,
        dstate: DeviceState,
    ) -> Set {
        let region = log.region_size();
        let nr_regions = log.region_count;
        Set {
            legs,
            st: Mutex::new(St {
                log,
                regions: HashMap::new(),
                recovering: None,
                copying: false,
                recovery_stopped: true,
                in_sync: false,
                holds: Vec::new(),
                // Until the first resume (a table loaded but never live does nothing).
                suspended: true,
                log_failure: false,
                leg_failure: false,
                queued: Vec::new(),
                recovered: Vec::new(),
                default: 0,
                rr: 0,
            }),
            handle_errors,
            keep_log,
            len,
            region,
            nr_regions,
            worker,
            copier: Copier::new(Sectors(region.min(1024)), 8),
            event,
            requeue,
            dstate,
            kicked: AtomicBool::new(false),
        }
    }

    fn region_len(&self, r: u64) -> u64 {
        self.region.min(self.len - r * self.region)
    }

    /// Run `do_mirror` on the worker (coalescing kicks).
    pub fn kick(self: &Arc<Self>) {
        if !self.kicked.swap(true, SeqCst) {
            let me = self.clone();
            self.worker.spawn(move || {
                me.kicked.store(false, SeqCst);
                me.do_mirror();
            });
        }
    }

    /// Record a failure of leg `i`; with `handle_errors`, a failed default leg hands its
    /// role to a healthy one and an event is raised.
    fn fail_mirror(&self, i: usize, kind: u8) {
        let mut st = self.st.lock();
        st.leg_failure = true;
        let leg = &self.legs[i];
        leg.errors.fetch_add(1, SeqCst);
        if leg.error_type.fetch_or(kind, SeqCst) & kind != 0 || !self.handle_errors {
            return;
        }
        if i == st.default {
            if !st.in_sync && !self.keep_log {
                klog::err(
                    PREFIX,
                    &format!(
                        "Primary mirror ({}) failed while out-of-sync: Reads may fail.",
                        leg.id
                    ),
                );
            } else if let Some(n) = self.legs.iter().position(Leg::ok) {
                st.default = n;
            } else {
                klog::warn(PREFIX, "All sides of mirror have failed.");
            }
        }
        drop(st);
        (self.event)();
    }

    fn choose_leg(&self, st: &mut St) -> Option<usize> {
        let n = self.legs.len();
        st.rr = st.rr.wrapping_add(1);
        (0..n).map(|k| (st.rr + k) % n).find(|&i| self.legs[i].ok())
    }

    // ---- reads ----

    pub fn map_read(self: &Arc<Self>, bio: Bio) {
        let r = bio.sector.0 / self.region;
        let leg = {
            let mut st = self.st.lock();
            if st.log.in_sync(r) {
                self.choose_leg(&mut st)
            } else {
                Some(st.default).filter(|&d| self.legs[d].ok())
            }
        };
        match leg {
            Some(l) => self.read(bio, l),
            None => bio.complete(Err(IoError::Io)),
        }
    }

    fn read(self: &Arc<Self>, mut bio: Bio, leg: usize) {
        let buf = bio.take_buf();
        let l = &self.legs[leg];
        let sector = Sectors(l.offset) + bio.sector;
        let flags = bio.flags;
        let me = self.clone();
        let child = Bio::read(
            sector,
            buf,
            Box::new(move |res, buf| {
                bio.set_buf(buf);
                match res {
                    Ok(()) => bio.complete(Ok(())),
                    Err(e) => me.read_failed(bio, leg, e),
                }
            }),
        )
        .with_flags(flags);
        l.dev.submit(child);
    }

    fn read_failed(self: &Arc<Self>, bio: Bio, leg: usize, e: IoError) {
        let name = self.legs[leg].id.to_string();
        klog::err(
            PREFIX,
            &format!("Mirror read failed from {name}. Trying alternative device."),
        );
        self.fail_mirror(leg, ERR_READ);
        let r = bio.sector.0 / self.region;
        let next = {
            let mut st = self.st.lock();
            let default_ok = self.legs[st.default].ok();
            if st.log.in_sync(r) {
                self.choose_leg(&mut st)
            } else if default_ok {
                Some(st.default)
            } else {
                None
            }
        };
        match next {
            Some(l) => self.read(bio, l),
            None => {
                klog::err(PREFIX, "All replicated volumes dead, failing I/O");
                bio.complete(Err(e))
            }
        }
    }

    // ---- writes ----

    /// Flushes and discards: to every leg, outside the region accounting.
    pub fn map_special(self: &Arc<Self>, bio: Bio) {
        let all: Vec<usize> = (0..self.legs.len()).collect();
        self.write_legs(bio, all, None);
    }

    pub fn map_write(self: &Arc<Self>, bio: Bio) {
        let a = {
            let mut st = self.st.lock();
            self.classify(&mut st, bio, false)
        };
        self.act(a);
    }

    fn classify(self: &Arc<Self>, st: &mut St, bio: Bio, worker: bool) -> Action {
        let r = bio.sector.0 / self.region;
        let disk = st.log.disk.is_some();
        match st.state(r) {
            RState::Recovering => {
                st.region(r).delayed.push(bio);
                Action::Kept
            }
            RState::Clean if !disk || worker => {
                st.log.mark_region(r);
                let reg = st.region(r);
                reg.state = RState::Dirty;
                reg.pending += 1;
                reg.flushed = !disk;
                Action::All(bio, r)
            }
            RState::Dirty if st.regions[&r].flushed || worker => {
                st.region(r).pending += 1;
                Action::All(bio, r)
            }
            RState::NoSync => {
                if st.leg_failure && self.handle_errors && !self.keep_log {
                    st.holds.push(bio);
                    return Action::Kept;
                }
                st.region(r).pending += 1;
                Action::Default(bio, r)
            }
            _ => {
                st.queued.push(bio);
                drop_kick(self);
                Action::Kept
            }
        }
    }

    fn act(self: &Arc<Self>, a: Action) {
        match a {
            Action::Kept => {}
            Action::All(bio, r) => {
                let all = (0..self.legs.len()).collect();
                self.write_legs(bio, all, Some(r))
            }
            Action::Default(bio, r) => {
                let d = self.st.lock().default;
                self.write_legs(bio, vec![d], Some(r))
            }
        }
    }

    /// Send `bio` to `legs`, then finish it with the per-leg results.
    fn write_legs(self: &Arc<Self>, bio: Bio, legs: Vec<usize>, region: Option<u64>) {
        struct Join {
            left: usize,
            errs: Vec<(usize, IoError)>,
            bio: Option<Bio>,
        }
        let data = (bio.op == Op::Write).then(|| bio.buf().as_slice().to_vec());
        let (op, flags, sector, len) = (bio.op, bio.flags, bio.sector, bio.len());
        let join = Arc::new(Mutex::new(Join {
            left: legs.len(),
            errs: Vec::new(),
            bio: Some(bio),
        }));
        for i in legs {
            let j = join.clone();
            let me = self.clone();
            let done: udm_io::Completion = Box::new(move |res, _| {
                let mut g = j.lock();
                if let Err(e) = res {
                    g.errs.push((i, e));
                }
                g.left -= 1;
                if g.left == 0 {
                    let bio = g.bio.take().expect("mirror write");
                    let errs = std::mem::take(&mut g.errs);
                    drop(g);
                    me.write_done(bio, region, errs);
                }
            });
            let l = &self.legs[i];
            let s = Sectors(l.offset) + sector;
            let child = match op {
                Op::Write => Bio::write(s, IoBuf::from_slice(data.as_deref().unwrap_or(&[])), done),
                Op::WriteZeroes => Bio::write_zeroes(s, len, done),
                Op::Discard => Bio::discard(s, len, done),
                _ => Bio::flush(done),
            };
            l.dev.submit(child.with_flags(flags));
        }
    }

    fn write_done(self: &Arc<Self>, bio: Bio, region: Option<u64>, errs: Vec<(usize, IoError)>) {
        if errs.is_empty() {
            if let Some(r) = region {
                self.dec(r);
            }
            return bio.complete(Ok(()));
        }
        if bio.op == Op::Discard {
            if let Some(r) = region {
                self.dec(r);
            }
            return bio.complete(Err(IoError::NotSupported));
        }
        let kind = if bio.op == Op::Flush {
            ERR_FLUSH
        } else {
            ERR_WRITE
        };
        for (i, _) in &errs {
            self.fail_mirror(*i, kind);
        }
        let mut st = self.st.lock();
        if !st.log_failure {
            st.in_sync = false;
            if let Some(r) = region {
                self.mark_nosync(&mut st, r);
            }
        }
        let valid = self.legs.iter().any(Leg::ok);
        let res = if !valid || (self.keep_log && st.log_failure) {
            Some(Err(errs[0].1))
        } else if self.handle_errors && !self.keep_log {
            None
        } else {
            Some(Ok(()))
        };
        let bio = match res {
            Some(r) => Some((bio, r)),
            None => {
                if st.suspended {
                    let requeue = self.dstate.noflush_suspending();
                    drop(st);
                    if requeue {
                        self.requeue.requeue(bio);
                    } else {
                        bio.complete(Err(IoError::Io));
                    }
                    st = self.st.lock();
                } else {
                    st.holds.push(bio);
                }
                None
            }
        };
        drop(st);
        if let Some(r) = region {
            self.dec(r);
        }
        if let Some((b, r)) = bio {
            b.complete(r);
        }
    }

    fn mark_nosync(self: &Arc<Self>, st: &mut St, r: u64) {
        st.log.set_region_sync(r, false);
        let reg = st.region(r);
        let was = reg.state;
        reg.state = RState::NoSync;
        if was == RState::Recovering {
            st.recovering = None;
            let delayed = std::mem::take(&mut st.region(r).delayed);
            st.queued.extend(delayed);
            drop_kick(self);
        }
    }

    /// A write to region `r` ended.
    fn dec(self: &Arc<Self>, r: u64) {
        let mut st = self.st.lock();
        let Some(reg) = st.regions.get_mut(&r) else {
            return;
        };
        reg.pending = reg.pending.saturating_sub(1);
        if reg.pending > 0 {
            return;
        }
        match reg.state {
            RState::Dirty => {
                st.log.clear_region(r);
                st.regions.remove(&r);
            }
            RState::NoSync if reg.delayed.is_empty() => {
                st.regions.remove(&r);
            }
            _ => {}
        }
        drop(st);
        self.kick();
    }

    // ---- the worker: resync, queued writes, log flushes ----

    fn do_mirror(self: &Arc<Self>) {
        let mut redo = Vec::new();
        let mut st = self.st.lock();
        // Finished resync copies.
        for (r, read_ok, writes) in std::mem::take(&mut st.recovered) {
            drop(st);
            let d = self.st.lock().default;
            if !read_ok {
                klog::err(PREFIX, "Unable to read primary mirror during recovery");
                self.fail_mirror(d, ERR_SYNC);
            }
            let others = (0..self.legs.len()).filter(|&i| i != d);
            if writes.iter().any(|w| !w) {
                for (i, ok) in others.zip(&writes) {
                    if !ok {
                        self.fail_mirror(i, ERR_SYNC);
                    }
                }
            }
            st = self.st.lock();
            let ok = read_ok && writes.iter().all(|w| *w);
            if ok {
                st.log.clear_region(r);
            }
            st.log.set_region_sync(r, ok || !self.handle_errors);
            st.copying = false;
            st.recovering = None;
            if let Some(reg) = st.regions.remove(&r) {
                redo.extend(reg.delayed);
            }
        }
        if !st.in_sync && st.log.sync_count == self.nr_regions {
            st.in_sync = true;
            st.leg_failure = false;
            for l in &self.legs {
                l.errors.store(0, SeqCst);
                l.error_type.store(0, SeqCst);
            }
            drop(st);
            (self.event)();
            st = self.st.lock();
        }
        // Start resyncing the next region.
        if !st.recovery_stopped && st.recovering.is_none() {
            if let Some(r) = st.log.get_resync_work() {
                st.region(r).state = RState::Recovering;
                st.recovering = Some(r);
            }
        }
        if let Some(r) = st.recovering {
            if !st.copying && st.regions.get(&r).is_none_or(|g| g.pending == 0) {
                st.copying = true;
                let d = st.default;
                drop(st);
                self.recover(r, d);
                st = self.st.lock();
            }
        }
        // Writes waiting for their regions to be marked.
        let queued: Vec<Bio> = std::mem::take(&mut st.queued)
            .into_iter()
            .chain(redo)
            .collect();
        let mut actions = Vec::new();
        for b in queued {
            actions.push(self.classify(&mut st, b, true));
        }
        let (needs, cleaned) = st.log.flush_needs();
        drop(st);
        if needs {
            let legs_ok = !cleaned
                || self
                    .legs
                    .iter()
                    .enumerate()
                    .filter(|(i, l)| {
                        // Every leg is flushed (no short cut): each failure is recorded.
                        let failed = udm_io::sync::flush(&*l.dev).is_err();
                        if failed {
                            self.fail_mirror(*i, ERR_FLUSH);
                        }
                        failed
                    })
                    .count()
                    == 0;
            let mut st = self.st.lock();
            if st.log.flush(legs_ok).is_err() && !st.log_failure {
                st.log_failure = true;
                drop(st);
                (self.event)();
                st = self.st.lock();
            }
            for reg in st.regions.values_mut() {
                reg.flushed = true;
            }
        }
        let log_failure = self.st.lock().log_failure;
        for a in actions {
            match a {
                Action::All(bio, r) | Action::Default(bio, r)
                    if log_failure && self.handle_errors =>
                {
                    // As the kernel: writes that need the log wait for userspace (or
                    // fail with keep_log).
                    self.dec(r);
                    if self.keep_log {
                        bio.complete(Err(IoError::Io));
                    } else {
                        self.st.lock().holds.push(bio);
                    }
                }
                a => self.act(a),
            }
        }
    }

    fn recover(self: &Arc<Self>, r: u64, default: usize) {
        let at = |i: usize| {
            Loc::new(
                self.legs[i].dev.clone(),
                Sectors(self.legs[i].offset + r * self.region),
            )
        };
        let dests = (0..self.legs.len())
            .filter(|&i| i != default)
            .map(at)
            .collect();
        let me = self.clone();
        self.copier.copy(
            at(default),
            dests,
            Sectors(self.region_len(r)),
            Box::new(move |o| {
                let writes = o.writes.iter().map(|w| w.is_ok()).collect();
                me.st.lock().recovered.push((r, o.read.is_ok(), writes));
                me.kick();
            }),
        );
    }

    // ---- suspend / resume ----

    pub fn presuspend(self: &Arc<Self>) {
        let holds = {
            let mut st = self.st.lock();
            st.suspended = true;
            st.recovery_stopped = true;
            std::mem::take(&mut st.holds)
        };
        for b in holds {
            if self.dstate.noflush_suspending() {
                self.requeue.requeue(b);
            } else {
                b.complete(Err(IoError::Io));
            }
        }
        // Let the resync in flight finish, then drain the worker.
        loop {
            let me = self.clone();
            self.worker.call(move || me.do_mirror());
            if self.st.lock().recovering.is_none() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    pub fn postsuspend(self: &Arc<Self>) {
        let me = self.clone();
        self.worker.call(move || me.do_mirror());
    }

    pub fn resume(self: &Arc<Self>) {
        let me = self.clone();
        let r = self.worker.call(move || me.st.lock().log.resume());
        if r.is_err() {
            klog::warn(PREFIX, "log resume failed");
        }
        {
            let mut st = self.st.lock();
            st.suspended = false;
            st.recovery_stopped = false;
        }
        self.kick();
    }

    pub fn presuspend_undo(self: &Arc<Self>) {
        self.resume_recovery();
    }

    fn resume_recovery(self: &Arc<Self>) {
        {
            let mut st = self.st.lock();
            st.suspended = false;
            st.recovery_stopped = false;
        }
        self.kick();
    }

    /// Leg health characters, in leg order.
    pub fn health(&self) -> String {
        self.legs.iter().map(Leg::status_char).collect()
    }
}

fn drop_kick(s: &Arc<Set>) {
    // Called with the state lock held: the kick only queues a job.
    s.kick()
}
