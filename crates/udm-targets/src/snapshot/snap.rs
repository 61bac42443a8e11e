//! `snapshot`: a point-in-time view of an origin. Reads of copied chunks come from the COW,
//! others from the origin; writes to the snapshot allocate COW chunks. The state shared with
//! the origin (`SnapShared`) lives here too; the origin write's copy-out is in `copyout`.
//!
//! Locking: each snapshot's state sits behind one mutex held across its I/O, on worker
//! threads only. A chunk an origin batch is copying stays out of the table until copied (a
//! snapshot read takes its old data from the origin, whose write waits for the commit after
//! the copy); a snapshot write waits for those copies, so exceptions enter the table in the
//! order their chunks were allocated.

use super::commit::{after_commit, GroupCommit};
use super::copyout::CopyJob;
use super::cow::{Store, StoreError, StoreKind};
use super::SnapshotParams;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use udm_core::{
    Copier, DevHandle, EventTrigger, Loc, MapResult, Publication, StatusFlags, StatusType, Target,
    TargetCtx, TargetError, TargetType, Worker,
};
use udm_io::{sync, Bio, BlockDevice, DevId, IoBuf, IoError, Op, Sectors};

/// The meeting point of an origin and its snapshots, published under the origin's id.
#[derive(Default)]
pub(crate) struct OriginHub {
    snaps: Mutex<Vec<Weak<SnapShared>>>,
}

impl OriginHub {
    /// Find (or make) the hub for `key` and keep it published while the guard lives.
    pub(crate) fn join(
        ctx: &TargetCtx<'_>,
        key: &DevId,
    ) -> Result<(Arc<OriginHub>, Publication), TargetError> {
        let hub = ctx.lookup::<OriginHub>(key).unwrap_or_default();
        let p = ctx.publish_as(key.clone(), &hub)?;
        Ok((hub, p))
    }
    pub(crate) fn add(&self, s: &Arc<SnapShared>) {
        let mut g = self.snaps.lock();
        g.retain(|w| w.strong_count() > 0);
        if !g.iter().any(|w| w.as_ptr() == Arc::as_ptr(s)) {
            g.push(Arc::downgrade(s));
        }
    }
    /// Live snapshots, oldest first.
    pub(crate) fn snapshots(&self) -> Vec<Arc<SnapShared>> {
        self.snaps
            .lock()
            .iter()
            .filter_map(|w| w.upgrade())
            .collect()
    }
    /// True if some snapshot could need a copy-out.
    pub(crate) fn any_active(&self) -> bool {
        self.snapshots().iter().any(|s| s.takes_copies())
    }
}

/// How long a status waits for queued copies.
const STATUS_WAIT: Duration = Duration::from_secs(2);
/// How long removing a snapshot waits for its queued copies and their commit.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

pub(crate) struct SnapInner {
    pub store: Store,
    pub valid: bool,
    pub overflow: bool,
    pub merge_failed: bool,
    /// Origin chunks an origin batch allocated COW chunks for, their copies queued on the
    /// snapshot's writer (`copyout`): not in the table until copied, so reads still take
    /// their old data from the origin (whose writes wait for the commit after the copy);
    /// nothing else may allocate them meanwhile.
    pub copying: HashSet<u64>,
}

/// One snapshot's state, shared by its table line(s), the origin and a merge.
pub(crate) struct SnapShared {
    pub origin: Arc<dyn BlockDevice>,
    pub cow: Arc<dyn BlockDevice>,
    pub cow_id: DevId,
    pub st: Mutex<SnapInner>,
    /// Resumed at least once (an inactive table's snapshot takes no copies).
    pub active: AtomicBool,
    /// This store is being merged into the origin.
    pub merging: AtomicBool,
    /// The snapshot's length in sectors (chunks past it are not copied).
    pub len: AtomicU64,
    pub copier: Copier,
    pub events: Mutex<EventTrigger>,
    /// Writes this snapshot's metadata for origin batches (group commit).
    pub committer: GroupCommit,
    /// The store's durable generation (see `Store::durable_handle`).
    pub durable: Arc<AtomicU64>,
    /// Copies the chunks of origin batches into the COW and adds their exceptions, batch
    /// after batch (`copyout`).
    pub writer: Worker,
    /// The origin batches' copies queued for the writer.
    pub copies: Arc<Batch<CopyJob>>,
    /// Told when queued copies leave `SnapInner::copying`.
    pub copied: Condvar,
}

impl SnapShared {
    /// Wait (the lock released meanwhile) until origin chunk `c` is not queued for copying.
    pub(crate) fn wait_copied(&self, g: &mut MutexGuard<'_, SnapInner>, c: u64) {
        while g.copying.contains(&c) {
            self.copied.wait(g);
        }
    }
    /// Wait until no copy is queued.
    pub(crate) fn wait_all_copied(&self, g: &mut MutexGuard<'_, SnapInner>) {
        while !g.copying.is_empty() {
            self.copied.wait(g);
        }
    }

    /// Let the copies queued so far land and be committed, as the kernel's snapshot
    /// destructor waits for its pending exceptions; false if `limit` ran out first.
    pub(crate) fn settle(self: &Arc<Self>, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let queued = tx.clone();
        self.writer.spawn(move || {
            let _ = queued.send(());
        });
        if rx.recv_deadline(until).is_err() {
            return false;
        }
        // Then the commit covering them (a snapshot invalidated meanwhile releases it too).
        let gen = {
            let g = self.st.lock();
            if !g.valid || g.store.is_durable(g.store.gen()) {
                return true;
            }
            g.store.gen()
        };
        after_commit(
            self,
            gen,
            Box::new(move || {
                let _ = tx.send(());
            }),
        );
        rx.recv_deadline(until).is_ok()
    }

    pub(crate) fn takes_copies(&self) -> bool {
        self.active.load(SeqCst) && !self.merging.load(SeqCst)
    }

    pub(crate) fn invalidate(&self, g: &mut SnapInner, err: &IoError) {
        if !g.valid {
            return;
        }
        if *err == IoError::NoSpace {
            tracing::error!("Invalidating snapshot: Unable to allocate exception.");
            // Exceptions made before the COW filled are on disk first, as in the kernel
            // (where each was committed before its origin write was acknowledged).
            if let Err(e) = g.store.commit_pending(&*self.cow) {
                tracing::warn!("commit before invalidating failed: {e}");
            }
        } else {
            tracing::error!("Invalidating snapshot: Error reading/writing.");
        }
        if let Err(e) = g.store.drop_snapshot(&*self.cow) {
            tracing::warn!("write header failed: {e}");
        }
        g.valid = false;
        (self.events.lock())();
    }

    /// Write the exceptions made since the last commit (invalidating on failure).
    pub(crate) fn commit(&self, g: &mut SnapInner) -> bool {
        if !g.valid {
            return false;
        }
        if let Err(e) = g.store.commit_pending(&*self.cow) {
            self.invalidate(g, &e);
            return false;
        }
        true
    }

    /// The table line of a snapshot or snapshot-merge over `origin` and `cow`: the store's
    /// chunk size wins over the table's (the header's overrides it, as in the kernel).
    pub(crate) fn table_line(&self, p: &SnapshotParams, origin: &DevId, cow: &DevId) -> String {
        SnapshotParams {
            origin: origin.to_string(),
            cow: cow.to_string(),
            chunk: self.st.lock().store.chunk,
            ..p.clone()
        }
        .to_string()
    }

    pub(crate) fn status(&self) -> String {
        let mut g = self.st.lock();
        // Acknowledged origin writes whose copies are still queued count as in the kernel,
        // where they were acknowledged only once their exceptions were in the table (a
        // copy stuck on a suspended device does not hold the status up for long).
        let until = Instant::now() + STATUS_WAIT;
        while !g.copying.is_empty() && !self.copied.wait_until(&mut g, until).timed_out() {}
        if !g.valid {
            "Invalid".into()
        } else if g.merge_failed {
            "Merge failed".into()
        } else if g.overflow {
            "Overflow".into()
        } else {
            let (a, t, m) = g.store.usage();
            format!("{a}/{t} {m}")
        }
    }
}

/// Bios (or what a target queues per bio) a target's worker takes in batches: all that
/// queued up while it was busy.
pub(crate) struct Batch<T = Bio> {
    q: Mutex<Vec<T>>,
    scheduled: AtomicBool,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            q: Mutex::default(),
            scheduled: AtomicBool::new(false),
        }
    }
}

impl<T: Send + 'static> Batch<T> {
    /// Queue `item`; make sure a job on `worker` will hand the queue to `run`.
    pub(crate) fn push<F>(self: &Arc<Self>, worker: &Worker, item: T, run: F)
    where
        F: FnOnce(Vec<T>) + Send + 'static,
    {
        self.q.lock().push(item);
        if !self.scheduled.swap(true, SeqCst) {
            let me = self.clone();
            worker.spawn(move || {
                me.scheduled.store(false, SeqCst);
                let items = std::mem::take(&mut *me.q.lock());
                if !items.is_empty() {
                    run(items);
                }
            });
        }
    }
}

/// Open the COW store for a table line (shared with a live line on the same COW).
pub(crate) fn open_shared(
    ctx: &mut TargetCtx<'_>,
    p: &SnapshotParams,
    key: &DevId,
    origin: &Arc<DevHandle>,
) -> Result<(Arc<SnapShared>, Arc<DevHandle>), TargetError> {
    let cow = ctx
        .get_device(&p.cow)
        .map_err(|e| TargetError::invalid("Cannot get COW device").with_detail(e.to_string()))?;
    if cow.id == origin.id {
        return Err(TargetError::invalid(
            "COW device cannot be the same as origin device",
        ));
    }
    let lbs = cow.dev.limits().logical_block_size as u64 / 512;
    if p.chunk != 0 && !p.chunk.is_multiple_of(lbs.max(1)) {
        return Err(TargetError::invalid(
            "Chunk size is not a multiple of device blocksize",
        ));
    }
    if let Some(s) = ctx
        .lookup_all::<SnapShared>(key)
        .into_iter()
        .find(|s| s.cow_id == cow.id)
    {
        s.len.store(ctx.len.0, SeqCst);
        return Ok((s, cow));
    }
    let opened = Store::open(&*cow.dev, p.kind, p.chunk).map_err(|e| match e {
        StoreError::BadMagic | StoreError::BadVersion(_) | StoreError::Io(_) => {
            if let StoreError::BadVersion(v) = e {
                tracing::warn!("unable to handle snapshot disk version {v}");
            } else if e == StoreError::BadMagic {
                tracing::warn!("Invalid or corrupt snapshot");
            }
            TargetError::with_errno(e.errno(), "Failed to read snapshot metadata")
                .with_detail(e.to_string())
        }
        e => TargetError::with_errno(e.errno(), "Couldn't create exception store")
            .with_detail(e.to_string()),
    })?;
    if let Some(t) = opened.overridden {
        tracing::warn!(
            "chunk size {} in device metadata overrides table chunk size of {t}.",
            opened.store.chunk
        );
    }
    if !opened.valid {
        tracing::warn!("Snapshot is marked invalid.");
    }
    let chunk = opened.store.chunk;
    let durable = opened.store.durable_handle();
    let shared = Arc::new(SnapShared {
        origin: origin.dev.clone(),
        cow: cow.dev.clone(),
        cow_id: cow.id.clone(),
        st: Mutex::new(SnapInner {
            store: opened.store,
            valid: opened.valid,
            overflow: false,
            merge_failed: false,
            copying: HashSet::new(),
        }),
        active: AtomicBool::new(false),
        merging: AtomicBool::new(false),
        len: AtomicU64::new(ctx.len.0),
        // Runs of chunks move in copier I/Os of up to 128 KiB, 16 in flight.
        copier: Copier::new(Sectors(chunk.max(256)), 16),
        events: Mutex::new(ctx.event_trigger()),
        committer: GroupCommit::new(),
        durable,
        writer: Worker::new("snapshot-copy"),
        copies: Arc::default(),
        copied: Condvar::new(),
    });
    Ok((shared, cow))
}

pub struct SnapshotType;

impl TargetType for SnapshotType {
    fn name(&self) -> &'static str {
        "snapshot"
    }
    fn version(&self) -> [u32; 3] {
        [1, 16, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = SnapshotParams::from_args(args)?;
        let origin = ctx.get_device(&p.origin).map_err(|e| {
            TargetError::invalid("Cannot get origin device").with_detail(e.to_string())
        })?;
        let key = origin.id.clone();
        let (shared, cow) = open_shared(ctx, &p, &key, &origin)?;
        *shared.events.lock() = ctx.event_trigger();
        let (hub, hub_pub) = OriginHub::join(ctx, &key)?;
        let me_pub = ctx.publish_as(key, &shared)?;
        Ok(Box::new(Snapshot {
            p,
            origin,
            cow,
            shared,
            hub,
            worker: ctx.worker("snapshot"),
            batch: Arc::default(),
            _pubs: [hub_pub, me_pub],
        }))
    }
}

pub struct Snapshot {
    p: SnapshotParams,
    origin: Arc<DevHandle>,
    cow: Arc<DevHandle>,
    shared: Arc<SnapShared>,
    hub: Arc<OriginHub>,
    worker: Arc<Worker>,
    batch: Arc<Batch>,
    _pubs: [Publication; 2],
}

/// Sector `off` of COW chunk `n` (a chunk number read from a damaged COW may point past any
/// device: the I/O then fails, nothing overflows).
pub(crate) fn at(n: u64, cs: u64, off: u64) -> u64 {
    n.wrapping_mul(cs).wrapping_add(off)
}

/// Synchronous I/O of a bio's data at `sector` of `dev`.
pub(crate) fn rw_sync(dev: &dyn BlockDevice, bio: &mut Bio, sector: u64) -> Result<(), IoError> {
    match bio.op {
        Op::Read => {
            let buf = bio.take_buf();
            let (r, buf) = sync::submit_wait(dev, |d| Bio::read(Sectors(sector), buf, d));
            bio.set_buf(buf);
            r
        }
        Op::Write => sync::write_at(dev, Sectors(sector), bio.buf().as_slice()),
        Op::WriteZeroes => sync::write_zeroes(dev, Sectors(sector), bio.len()),
        _ => Err(IoError::NotSupported),
    }
}

/// Handle one bio of a batch with the lock held (reads only when the snapshot is invalid: a
/// valid one reads in [`ReadRun`]s). `None`: the bio went elsewhere. Otherwise the bio, its
/// result, and whether that result waits for the batch's commit.
fn snap_one(
    sh: &SnapShared,
    g: &mut MutexGuard<'_, SnapInner>,
    mut bio: Bio,
    p: &SnapshotParams,
) -> Option<(Bio, Result<(), IoError>, bool)> {
    let cs = g.store.chunk;
    let c = bio.sector.0 / cs;
    if bio.op.is_write() {
        // Exceptions enter the table in the order their chunks were allocated (the COW's
        // layout is the kernel's): the origin batches' queued copies go first. (A read of a
        // chunk being copied takes the old data from the origin, as in the kernel.)
        sh.wait_all_copied(g);
    }
    if !g.valid {
        return Some((bio, Err(IoError::Io), false));
    }
    debug_assert!(bio.op != Op::Read, "a valid snapshot reads in runs");
    let off = bio.sector.0 % cs;
    let whole = off == 0 && bio.len().0 == cs;
    let res = if bio.op == Op::Discard {
        if bio.target_bio_nr() == 1 && p.discard_passdown_origin {
            sh.origin.submit(bio);
            return None;
        }
        match g.store.lookup(c) {
            Some(n) if whole => sync::write_zeroes(&*sh.cow, Sectors(at(n, cs, 0)), Sectors(cs)),
            Some(n) => sync::discard(&*sh.cow, Sectors(at(n, cs, off)), bio.len()),
            None => Ok(()),
        }
    } else if let Some(n) = g.store.lookup(c) {
        rw_sync(&*sh.cow, &mut bio, at(n, cs, off))
    } else if g.overflow {
        Err(IoError::Io)
    } else {
        let n = match g.store.prepare() {
            Ok(n) => n,
            Err(_) => {
                if matches!(g.store.kind, StoreKind::Persistent { overflow: true }) {
                    tracing::error!("Snapshot overflowed: Unable to allocate exception.");
                    g.overflow = true;
                } else {
                    sh.invalidate(g, &IoError::NoSpace);
                }
                return Some((bio, Err(IoError::Io), false));
            }
        };
        let mut r = Ok(());
        if !whole {
            // A partial write: the rest of the chunk comes from the origin first.
            let count = cs.min(sh.origin.size().0.saturating_sub(c * cs));
            let out = sh.copier.copy_wait(
                Loc::new(sh.origin.clone(), Sectors(c * cs)),
                vec![Loc::new(sh.cow.clone(), Sectors(n * cs))],
                Sectors(count),
            );
            if !out.is_ok() {
                r = Err(IoError::Io);
            }
        }
        let r = r.and_then(|_| rw_sync(&*sh.cow, &mut bio, n * cs + off));
        match &r {
            Ok(()) => g.store.add(c, n),
            Err(e) => sh.invalidate(g, e),
        }
        return Some((bio, r, true));
    };
    // A write into a chunk an origin write just copied waits for that copy's commit.
    let waits = bio.op.is_write();
    Some((bio, res, waits))
}

/// Consecutive reads of one batch that lie next to each other on the COW or on the origin,
/// and whose buffers lie next to each other in memory (the engine splits a read at every
/// chunk; a sequential reader's chunks mostly sit in order on one side): read with one I/O
/// straight into those buffers, under the lock as each piece was.
#[derive(Default)]
struct ReadRun {
    from_cow: bool,
    start: u64,
    sectors: u64,
    /// The address just past the last buffer.
    mem_end: usize,
    bios: Vec<Bio>,
}

/// The most one [`ReadRun`] reads at once (1 MiB).
const READ_RUN_MAX: u64 = 2048;

impl ReadRun {
    /// Add a read of `bio` at `(from_cow, sector)`, reading what is gathered first when it
    /// does not continue it.
    fn add(
        &mut self,
        sh: &SnapShared,
        (from_cow, sector): (bool, u64),
        bio: Bio,
        out: &mut Vec<(Bio, Result<(), IoError>)>,
    ) {
        let len = bio.len().0;
        let mem = bio.buf().as_slice().as_ptr() as usize;
        let joins = !self.bios.is_empty()
            && self.from_cow == from_cow
            && self.start.checked_add(self.sectors) == Some(sector)
            && self.sectors.saturating_add(len) <= READ_RUN_MAX
            && self.mem_end == mem;
        if !joins {
            self.finish(sh, out);
            (self.from_cow, self.start, self.sectors) = (from_cow, sector, 0);
        }
        self.sectors += len;
        self.mem_end = mem.wrapping_add(bio.buf().len());
        self.bios.push(bio);
    }

    /// Read what is gathered into the bios' own buffers (joined without a copy: they are
    /// pieces of one split buffer) and complete into `out`. A failed run is read again piece
    /// by piece, so only the pieces that fail alone fail (a damaged COW may point one chunk
    /// past its device).
    fn finish(&mut self, sh: &SnapShared, out: &mut Vec<(Bio, Result<(), IoError>)>) {
        let dev = if self.from_cow { &*sh.cow } else { &*sh.origin };
        if self.bios.len() > 1 {
            let mut all = self.bios[0].take_buf();
            for b in &mut self.bios[1..] {
                all.unsplit(b.take_buf());
            }
            let (r, mut all) = sync::submit_wait(dev, |d| Bio::read(Sectors(self.start), all, d));
            for b in self.bios.iter_mut().rev() {
                let n = b.len().0 as usize * 512;
                // (A bio lost on its way comes back empty, and failed: fresh buffers then.)
                b.set_buf(match all.len().checked_sub(n) {
                    Some(at) => all.split_off(at),
                    None => IoBuf::zeroed(n),
                });
            }
            if r.is_ok() {
                out.extend(self.bios.drain(..).map(|b| (b, Ok(()))));
                return;
            }
        }
        let mut at = self.start;
        for mut bio in self.bios.drain(..) {
            let res = rw_sync(dev, &mut bio, at);
            at = at.wrapping_add(bio.len().0);
            out.push((bio, res));
        }
    }
}

/// A batch of snapshot bios: handled in order under the lock; reads and failures complete
/// at once, the writes once a commit covers every exception the store held after them (a
/// group commit shared with origin batches and later snapshot batches: the worker goes on
/// with the next batch meanwhile). Flushes go to the COW at once: every write acknowledged
/// before them was committed, so its data and exception are already stable.
fn snap_batch(sh: &Arc<SnapShared>, bios: Vec<Bio>, p: &SnapshotParams) {
    let mut flushes = Vec::new();
    let mut now = Vec::new();
    let mut after = Vec::new();
    let gen = {
        let mut g = sh.st.lock();
        let mut run = ReadRun::default();
        for bio in bios {
            if bio.op == Op::Read && g.valid {
                let cs = g.store.chunk;
                let (c, off) = (bio.sector.0 / cs, bio.sector.0 % cs);
                let place = match g.store.lookup(c) {
                    Some(n) => (true, at(n, cs, off)),
                    None => (false, bio.sector.0),
                };
                run.add(sh, place, bio, &mut now);
                continue;
            }
            run.finish(sh, &mut now);
            if bio.op == Op::Flush {
                flushes.push(bio);
            } else if let Some((bio, res, waits)) = snap_one(sh, &mut g, bio, p) {
                if waits && res.is_ok() {
                    after.push(bio);
                } else {
                    now.push((bio, res));
                }
            }
        }
        run.finish(sh, &mut now);
        let gen = g.store.gen();
        if g.store.is_durable(gen) {
            now.extend(after.drain(..).map(|b| (b, Ok(()))));
        }
        gen
    };
    for (bio, res) in now {
        bio.complete(res);
    }
    for f in flushes {
        sh.cow.submit(f);
    }
    if !after.is_empty() {
        let me = sh.clone();
        after_commit(
            sh,
            gen,
            Box::new(move || {
                let ok = me.st.lock().store.is_durable(gen);
                for bio in after {
                    bio.complete(if ok { Ok(()) } else { Err(IoError::Io) });
                }
            }),
        );
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if !self.shared.settle(SETTLE_LIMIT) {
            tracing::warn!(
                "snapshot: copies into the COW still in flight after {}s; removing anyway",
                SETTLE_LIMIT.as_secs()
            );
        }
    }
}

impl Target for Snapshot {
    fn map(&self, bio: Bio) -> MapResult {
        let sh = self.shared.clone();
        let p = self.p.clone();
        self.batch
            .push(&self.worker, bio, move |bios| snap_batch(&sh, bios, &p));
        MapResult::Submitted
    }
    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        match ty {
            StatusType::Info => self.shared.status(),
            StatusType::Table => self
                .shared
                .table_line(&self.p, &self.origin.id, &self.cow.id),
        }
    }
    fn max_io_len(&self) -> Option<Sectors> {
        Some(Sectors(self.shared.st.lock().store.chunk))
    }
    fn num_discard_bios(&self) -> u32 {
        match (self.p.discard_zeroes_cow, self.p.discard_passdown_origin) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        }
    }
    fn resume(&self) {
        self.hub.add(&self.shared);
        self.shared.active.store(true, SeqCst);
    }
}
