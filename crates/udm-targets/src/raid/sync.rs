//! Background sync: initial and bitmap-limited resync, recovery (rebuild) of legs that are
//! not in sync, and the `check`/`repair` scrubs with their mismatch count; stripe-wise on
//! the target's sync worker, throttled by `max_recovery_rate`, interruptible by `idle` and
//! `frozen`, with progress recorded in the superblocks.

use super::engine::{slot_refs, solve, Array, Op, RAID1_UNIT};
use super::gf;
use super::layout::Row;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_io::{BioFlags, BufPool, IoBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Resync,
    Recover,
    Check,
    Repair,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Resync => "resync",
            Action::Recover => "recover",
            Action::Check => "check",
            Action::Repair => "repair",
        }
    }
}

/// What the sync machinery is doing (md's `recovery` bits, reduced).
#[derive(Debug, Default)]
pub struct SyncCtl {
    pub running: Option<Action>,
    pub requested: Option<Action>,
    pub frozen: bool,
    /// `curr_resync_completed`.
    pub curr: u64,
    pub mismatches: u64,
    pub last: Option<Action>,
    /// Set when a resync/recovery needs (re)starting.
    pub needed: bool,
}

pub struct Syncer {
    pub ctl: Mutex<SyncCtl>,
    pub interrupt: AtomicBool,
    /// KiB/s of sync progress the sync never exceeds (`max_recovery_rate`, else md's
    /// `speed_limit_max`).
    pub max_rate: u64,
    /// KiB/s below which client I/O does not slow the sync (`min_recovery_rate`, else md's
    /// `speed_limit_min`); above it, with client I/O since the last window, the sync drains
    /// its I/O between jobs (md_do_sync's wait for `recovery_active`).
    pub min_rate: u64,
    /// Client bios seen (bumped by the target's map).
    pub client_io: AtomicU64,
}

/// md's system-wide defaults (`/proc/sys/dev/raid/speed_limit_max` and `_min`, KiB/s),
/// which dm-raid leaves in force when the table gives no recovery rate.
pub const SPEED_LIMIT_MAX: u64 = 200_000;
pub const SPEED_LIMIT_MIN: u64 = 1_000;

impl Syncer {
    /// Rates in KiB/s as the table gives them; 0 (not given) takes md's default.
    pub fn new(max_rate: u64, min_rate: u64) -> Syncer {
        let or = |v: u64, d: u64| if v == 0 { d } else { v };
        let (max_rate, min_rate) = (or(max_rate, SPEED_LIMIT_MAX), or(min_rate, SPEED_LIMIT_MIN));
        Syncer {
            ctl: Mutex::new(SyncCtl {
                needed: true,
                ..SyncCtl::default()
            }),
            interrupt: AtomicBool::new(false),
            max_rate,
            min_rate,
            client_io: AtomicU64::new(0),
        }
    }
}

/// What needs doing now (md_check_recovery's choice), if anything.
pub fn choose(a: &Array, s: &Syncer) -> Option<Action> {
    if a.geo.level == 0 {
        return None;
    }
    let mut c = s.ctl.lock();
    if c.frozen || c.running.is_some() {
        return None;
    }
    s.interrupt.store(false, SeqCst);
    if let Some(r) = c.requested.take() {
        return Some(r);
    }
    if !std::mem::take(&mut c.needed) {
        return None;
    }
    drop(c);
    if a.degraded()
        > a.geo.parity_devs().max(if a.geo.level == 1 {
            a.legs.len() - 1
        } else {
            0
        })
    {
        return None;
    }
    let recovering = a
        .legs
        .iter()
        .any(|l| l.usable() && l.recovery.load(SeqCst) != u64::MAX);
    if recovering {
        return Some(Action::Recover);
    }
    let rcp = a.meta.info.lock().recovery_cp;
    let dirty = a
        .meta
        .bm
        .as_ref()
        .is_some_and(|b| b.lock().needs_sync.iter().any(|&x| x));
    if (rcp < a.meta.sync_max || dirty) && a.degraded() == 0 {
        return Some(Action::Resync);
    }
    None
}

/// Sync jobs in flight at once.
const WINDOW: usize = 4;
/// Largest sync job in bytes per device (raid1 and parity rows; a raid10 job is one chunk).
const JOB_BYTES: u64 = 2 << 20;
/// Longest the superblocks go unwritten while a sync runs (md's periodic update).
const SB_EVERY: Duration = Duration::from_secs(1);

/// One sync job: `units` consecutive sync units from `pos` (resync space).
#[derive(Debug, Clone, Copy)]
struct Job {
    pos: u64,
    len: u64,
    units: u64,
}

/// The sync space still to scan: hands out the next run of units that need syncing.
struct Jobs<'a> {
    a: &'a Array,
    act: Action,
    targets: &'a [usize],
    rcp0: u64,
    unit: u64,
    job_units: u64,
    /// Scan position: everything below it was handed out or needs nothing.
    p: u64,
}

impl Jobs<'_> {
    fn needed(&self, p: u64, len: u64) -> bool {
        let a = self.a;
        match self.act {
            Action::Resync => self.rcp0 <= p || a.meta.range_needs_sync(p, p + len),
            Action::Recover => self.targets.iter().any(|&i| {
                let l = &a.legs[i];
                l.recovery.load(SeqCst) < p + len
                    && (!l.partial.load(SeqCst) || a.meta.range_dirty(p, p + len))
            }),
            _ => true,
        }
    }

    /// The next job: up to `job_units` consecutive units that need syncing.
    fn next(&mut self) -> Option<Job> {
        let max = self.a.meta.sync_max;
        let mut job: Option<Job> = None;
        while self.p < max {
            let len = self.unit.min(max - self.p);
            if !self.needed(self.p, len) {
                if job.is_some() {
                    break;
                }
                self.p += len;
                continue;
            }
            let j = job.get_or_insert(Job {
                pos: self.p,
                len: 0,
                units: 0,
            });
            j.len += len;
            j.units += 1;
            self.p += len;
            if j.units == self.job_units {
                break;
            }
        }
        job
    }
}

/// Run one action to its end or until interrupted (on the sync worker) as a rolling
/// pipeline: up to `WINDOW` jobs of up to `JOB_BYTES` each in flight, the next started as
/// soon as one finishes, so reads of later rows overlap writes of earlier ones. The
/// progress marks (status, `recovery_cp`, the legs' recovery offsets, and so the
/// superblocks) only ever reach the start of the lowest unfinished job: every row below
/// them is fully written.
pub fn run(a: &Array, s: &Syncer, act: Action) {
    {
        let mut c = s.ctl.lock();
        c.running = Some(act);
        c.curr = 0;
        if matches!(act, Action::Check | Action::Repair) {
            c.mismatches = 0;
        }
    }
    let unit = unit_len(a);
    // raid4/5/6: resync and single-leg recovery run multi-row jobs in parallel, each row
    // computed from slices of the job's reads (`row_sync`); check and repair (and anything
    // `row_sync` does not cover) go row by row, since copying rows out of a run's buffers
    // measured twice the CPU per MiB.
    let fast_rows = matches!(act, Action::Resync | Action::Recover);
    let job_units = match a.geo.level {
        1 => (JOB_BYTES / 512 / unit).max(1),
        10 => 1,
        _ if fast_rows => (JOB_BYTES / 512 / unit).max(1),
        _ => 1,
    };
    let window = match a.geo.level {
        10 => 4 * WINDOW,
        1 => WINDOW,
        _ if fast_rows => WINDOW,
        _ => 1,
    };
    let rcp0 = a.meta.info.lock().recovery_cp;
    let start = match act {
        Action::Resync if rcp0 != u64::MAX && !bitmap_dirty(a) => rcp0 - rcp0 % unit,
        _ => 0,
    };
    // Only the legs that were being recovered when this started.
    let targets: Vec<usize> = (0..a.legs.len())
        .filter(|&i| a.legs[i].usable() && a.legs[i].recovery.load(SeqCst) != u64::MAX)
        .collect();
    let mut jobs = Jobs {
        a,
        act,
        targets: &targets,
        rcp0,
        unit,
        job_units,
        p: start,
    };
    // Sync buffers are recycled: fresh multi-MiB allocations cost page faults each time.
    // At most `window` jobs of one buffer per device (and one output) are in flight.
    let pool = BufPool::new(window * (a.legs.len() + 1));
    let t0 = Instant::now();
    let mut done_bytes = 0u64;
    let mut last_sb = Instant::now();
    let mut last_io = s.client_io.load(SeqCst);
    let mut ok = true;
    let mut win_now = window;
    // Start positions of the jobs in flight; the lowest is the progress mark.
    let mut flying: BTreeSet<u64> = BTreeSet::new();
    let (tx, rx) = crossbeam_channel::unbounded::<(Job, u64)>();
    std::thread::scope(|sc| {
        let mut more = true;
        loop {
            // A recovery whose target failed ends unfinished; an interrupt ends it
            // unfinished unless every job was already handed out.
            let lost = act == Action::Recover && targets.iter().any(|&i| !a.legs[i].usable());
            let stop = lost || s.interrupt.load(SeqCst);
            if lost || (stop && more) {
                ok = false;
            }
            while more && !stop && flying.len() < win_now {
                let Some(j) = jobs.next() else {
                    more = false;
                    break;
                };
                flying.insert(j.pos);
                let (t, pool, tx) = (&targets, &pool, tx.clone());
                // A job that panics still reports (as no mismatches), so it cannot hold
                // the progress mark forever.
                let job = move || {
                    let m = catch_unwind(AssertUnwindSafe(|| sync_job(a, pool, act, j, t)));
                    let _ = tx.send((j, m.unwrap_or(0)));
                };
                if window == 1 {
                    job();
                } else {
                    sc.spawn(job);
                }
            }
            if flying.is_empty() {
                break;
            }
            if let Ok((j, m)) = rx.recv_timeout(SB_EVERY) {
                flying.remove(&j.pos);
                done_bytes += j.len * 512;
                if m > 0 {
                    s.ctl.lock().mismatches += m;
                }
            }
            let mark = flying.first().copied().unwrap_or(jobs.p);
            advance(a, s, act, &targets, rcp0, mark);
            if last_sb.elapsed() >= SB_EVERY {
                a.meta.write_superblocks(a);
                last_sb = Instant::now();
            }
            // md_do_sync's throttle: never above the max rate; above the min rate, with
            // client I/O since the last job finished, one job at a time (the sync's I/O
            // drained before the next starts).
            let io = s.client_io.load(SeqCst);
            let busy = io != std::mem::replace(&mut last_io, io);
            throttle(s.max_rate, done_bytes, t0);
            let kib_s = done_bytes as f64 / 1024.0 / t0.elapsed().as_secs_f64().max(1e-3);
            win_now = if busy && kib_s > s.min_rate as f64 {
                1
            } else {
                window
            };
        }
    });
    // Nothing in flight any more: everything below the scan position is done.
    finish(a, s, act, ok, jobs.p);
}

/// Move the progress marks to `pos` (every row below it fully written).
fn advance(a: &Array, s: &Syncer, act: Action, targets: &[usize], rcp0: u64, pos: u64) {
    s.ctl.lock().curr = pos;
    if act == Action::Recover {
        for &i in targets {
            if a.legs[i].usable() {
                a.legs[i]
                    .recovery
                    .fetch_max(recover_dev_pos(a, pos), SeqCst);
            }
        }
    }
    if act == Action::Resync && rcp0 != u64::MAX {
        let mut i = a.meta.info.lock();
        i.recovery_cp = i.recovery_cp.max(pos);
    }
}

fn bitmap_dirty(a: &Array) -> bool {
    a.meta
        .bm
        .as_ref()
        .is_some_and(|b| b.lock().needs_sync.iter().any(|&x| x))
}

fn finish(a: &Array, s: &Syncer, act: Action, ok: bool, pos: u64) {
    if ok {
        match act {
            Action::Resync => {
                a.meta.info.lock().recovery_cp = u64::MAX;
                if let Some(bm) = &a.meta.bm {
                    bm.lock().needs_sync.iter_mut().for_each(|x| *x = false);
                }
            }
            Action::Recover => {
                for l in &a.legs {
                    if l.usable() {
                        l.recovery.store(u64::MAX, SeqCst);
                        l.partial.store(false, SeqCst);
                    }
                }
                // A recovery that covered everything also leaves the set in sync.
                if let Some(bm) = &a.meta.bm {
                    bm.lock().needs_sync.iter_mut().for_each(|x| *x = false);
                }
            }
            _ => {}
        }
    } else if act == Action::Resync {
        let mut i = a.meta.info.lock();
        if i.recovery_cp != u64::MAX {
            i.recovery_cp = i.recovery_cp.min(pos);
        }
    }
    a.meta.write_superblocks(a);
    a.meta.bitmap_daemon(a);
    {
        let mut c = s.ctl.lock();
        c.running = None;
        c.last = Some(act);
        c.curr = pos;
        if ok && matches!(act, Action::Recover) {
            // A resync may be due after a recovery (md re-checks).
            c.needed = true;
        }
    }
    a.meta.event();
}

fn throttle(rate_kib: u64, done: u64, t0: Instant) {
    if rate_kib == 0 {
        return;
    }
    let want = Duration::from_secs_f64(done as f64 / (rate_kib as f64 * 1024.0));
    let el = t0.elapsed();
    if want > el {
        std::thread::sleep(want - el);
    }
}

/// Sync unit: a raid1 lock unit, a raid10 chunk (array space) or a raid4/5/6 row chunk.
fn unit_len(a: &Array) -> u64 {
    match a.geo.level {
        1 => RAID1_UNIT,
        _ => a.geo.chunk,
    }
}

/// The device sector a recovery at sync position `pos` has reached.
fn recover_dev_pos(a: &Array, pos: u64) -> u64 {
    if a.geo.level == 10 {
        // Array space: far and offset copies of early chunks lie anywhere on the device, so
        // nothing counts as recovered before the end.
        if pos >= a.geo.array_sectors {
            u64::MAX
        } else {
            0
        }
    } else if pos >= a.meta.sync_max {
        u64::MAX
    } else {
        pos
    }
}

/// Sync one job; returns mismatched sectors found (check/repair).
fn sync_job(a: &Array, pool: &BufPool, act: Action, j: Job, targets: &[usize]) -> u64 {
    match a.geo.level {
        1 => {
            let _g: Vec<_> = (j.pos / RAID1_UNIT..=(j.pos + j.len - 1) / RAID1_UNIT)
                .map(|k| a.lock(k))
                .collect();
            let copies: Vec<(usize, u64)> = (0..a.legs.len()).map(|i| (i, j.pos)).collect();
            sync_copies(a, pool, act, &copies, j.len, targets)
        }
        10 => {
            let _g = a.lock(j.pos / a.geo.chunk);
            sync_copies(a, pool, act, &a.geo.raid10_copies(j.pos), j.len, targets)
        }
        _ => sync_rows(a, pool, act, j.pos / a.geo.chunk, j.units, targets),
    }
}

fn sync_copies(
    a: &Array,
    pool: &BufPool,
    act: Action,
    copies: &[(usize, u64)],
    len: u64,
    targets: &[usize],
) -> u64 {
    let bytes = (len * 512) as usize;
    let src = copies
        .iter()
        .copied()
        .find(|&(d, ds)| a.legs[d].readable(ds + len) && !targets.contains(&d));
    let Some((sd, ss)) = src else { return 0 };
    let res = a.par(
        vec![Op {
            leg: sd,
            write: false,
            sector: ss,
            buf: pool.get(bytes),
        }],
        BioFlags::NONE,
    );
    let Some((r, data)) = res.into_iter().next() else {
        return 0;
    };
    if r.is_err() {
        a.fail_leg(sd);
        pool.put(data);
        return 0;
    }
    let others: Vec<(usize, u64)> = copies
        .iter()
        .copied()
        .filter(|&(d, _)| d != sd && a.legs[d].usable())
        .filter(|&(d, _)| act != Action::Recover || targets.contains(&d))
        .collect();
    let mut mism = 0;
    let mut write_to = others.clone();
    if matches!(act, Action::Check | Action::Repair) {
        let ops = others
            .iter()
            .map(|&(d, ds)| Op {
                leg: d,
                write: false,
                sector: ds,
                buf: pool.get(bytes),
            })
            .collect();
        let got = a.par(ops, BioFlags::NONE);
        write_to.clear();
        for ((r, b), &(d, ds)) in got.into_iter().zip(&others) {
            if r.is_err() {
                a.fail_leg(d);
                continue;
            }
            let bad = count_mismatch(&data, &b);
            pool.put(b);
            if bad > 0 {
                mism += bad;
                write_to.push((d, ds));
            }
        }
        if act == Action::Check {
            pool.put(data);
            return mism;
        }
    }
    // Every target but the last gets a copy; the last takes the read buffer itself.
    let mut data = Some(data);
    let ops = write_to
        .iter()
        .enumerate()
        .map(|(k, &(d, ds))| Op {
            leg: d,
            write: true,
            sector: ds,
            buf: if k + 1 == write_to.len() {
                data.take().unwrap_or_default()
            } else {
                let mut b = pool.get(bytes);
                b.copy_from_slice(data.as_ref().map_or(&[][..], |x| &x[..]));
                b
            },
        })
        .collect();
    for ((r, b), &(d, _)) in a.par(ops, BioFlags::NONE).into_iter().zip(&write_to) {
        if r.is_err() {
            a.fail_leg(d);
        }
        pool.put(b);
    }
    if let Some(d) = data {
        pool.put(d);
    }
    mism
}

/// Mismatching 4 KiB pages, counted in sectors as md does.
fn count_mismatch(x: &[u8], y: &[u8]) -> u64 {
    x.chunks(4096)
        .zip(y.chunks(4096))
        .filter(|(p, q)| p != q)
        .map(|(p, _)| p.len() as u64 / 512)
        .sum()
}

/// Sync `rows` consecutive stripe rows from `row0`: one read per device for the whole run,
/// each row solved or re-paritied, the blocks to write merged into one write per device run.
fn sync_rows(
    a: &Array,
    pool: &BufPool,
    act: Action,
    row0: u64,
    rows: u64,
    targets: &[usize],
) -> u64 {
    let _g: Vec<_> = (row0..row0 + rows).map(|r| a.lock(r)).collect();
    let chunk = a.geo.chunk;
    let base = row0 * chunk;
    let n = a.geo.disks;
    let len = (chunk * 512) as usize;
    let readable: Vec<usize> = (0..n)
        .filter(|&d| a.legs[d].readable(base + rows * chunk) && !targets.contains(&d))
        .collect();
    let ops = readable
        .iter()
        .map(|&d| Op {
            leg: d,
            write: false,
            sector: base,
            buf: pool.get(len * rows as usize),
        })
        .collect();
    let mut whole: Vec<Option<IoBuf>> = (0..n).map(|_| None).collect();
    for ((res, b), &d) in a.par(ops, BioFlags::NONE).into_iter().zip(&readable) {
        if res.is_err() {
            a.fail_leg(d);
            pool.put(b);
            return 0;
        }
        whole[d] = Some(b);
    }
    if super::row_sync::sync_run(a, pool, act, row0, rows, &mut whole) {
        whole.into_iter().flatten().for_each(|b| pool.put(b));
        return 0;
    }
    let mut mism = 0;
    // Per device: (row index, block) to write, in row order.
    let mut out: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); n];
    for k in 0..rows {
        let at = k as usize * len;
        let blocks: Vec<Option<Vec<u8>>> = if rows == 1 {
            // One row: its blocks are the buffers read, no copy.
            whole
                .iter_mut()
                .map(|w| w.take().map(IoBuf::into_vec))
                .collect()
        } else {
            whole
                .iter()
                .map(|w| w.as_ref().map(|b| b[at..at + len].to_vec()))
                .collect()
        };
        let (m, writes) = sync_row(a, act, &a.geo.row(row0 + k), blocks, len);
        mism += m;
        for (d, v) in writes {
            out[d].push((k, v));
        }
    }
    let mut ops = Vec::new();
    let mut legs = Vec::new();
    for (d, runs) in out.into_iter().enumerate() {
        let mut cur: Option<(u64, u64, Vec<u8>)> = None;
        for (k, v) in runs {
            match &mut cur {
                Some((_, next, buf)) if *next == k => {
                    buf.extend_from_slice(&v);
                    *next += 1;
                }
                _ => {
                    if let Some((k0, _, buf)) = cur.take() {
                        ops.push(Op {
                            leg: d,
                            write: true,
                            sector: base + k0 * chunk,
                            buf: IoBuf::from_vec(buf),
                        });
                        legs.push(d);
                    }
                    cur = Some((k, k + 1, v));
                }
            }
        }
        if let Some((k0, _, buf)) = cur {
            ops.push(Op {
                leg: d,
                write: true,
                sector: base + k0 * chunk,
                buf: IoBuf::from_vec(buf),
            });
            legs.push(d);
        }
    }
    for ((res, _), &d) in a.par(ops, BioFlags::NONE).into_iter().zip(&legs) {
        if res.is_err() {
            a.fail_leg(d);
        }
    }
    whole.into_iter().flatten().for_each(|b| pool.put(b));
    mism
}

/// One row of a sync: the blocks read (`None`: not readable), what to write back and the
/// mismatched sectors found.
fn sync_row(
    a: &Array,
    act: Action,
    r: &Row,
    mut blocks: Vec<Option<Vec<u8>>>,
    len: usize,
) -> (u64, Vec<(usize, Vec<u8>)>) {
    let n = a.geo.disks;
    let lost: Vec<usize> = (0..n).filter(|&d| blocks[d].is_none()).collect();
    let parity: Vec<usize> = std::iter::once(r.pd).chain(r.qd).collect();
    let mut writes: Vec<usize> = Vec::new();
    let mut mism = 0;
    if act == Action::Recover || lost.iter().any(|d| !parity.contains(d)) {
        if !solve(r, &mut blocks, &lost, len) {
            return (0, Vec::new());
        }
        writes.extend(lost.iter().copied().filter(|d| a.legs[*d].usable()));
    }
    if act != Action::Recover {
        let full: Vec<Vec<u8>> = blocks
            .iter()
            .map(|b| b.clone().unwrap_or_else(|| vec![0u8; len]))
            .collect();
        let slots = slot_refs(r, &full);
        let mut p = vec![0u8; len];
        gf::gen_p(&slots, &mut p);
        let mut fresh = vec![(r.pd, p)];
        if let Some(qd) = r.qd {
            let mut q = vec![0u8; len];
            gf::gen_q(&slots, &mut q);
            fresh.push((qd, q));
        }
        for (d, v) in fresh {
            let differs = blocks[d].as_ref().map(|old| count_mismatch(old, &v));
            if let Some(m) = differs {
                mism += m;
            }
            let write = match act {
                Action::Check => false,
                Action::Repair => differs.unwrap_or(1) > 0,
                _ => true,
            };
            blocks[d] = Some(v);
            if write && a.legs[d].usable() && !writes.contains(&d) {
                writes.push(d);
            }
        }
    }
    writes.sort_unstable();
    let out = writes
        .into_iter()
        .map(|d| (d, blocks[d].take().unwrap_or_default()))
        .collect();
    (mism, out)
}

/// Kick the sync machinery: choose what is due now (so the status shows it at once) and
/// run it, and whatever follows, on the sync worker.
pub fn kick<A: AsRef<Array> + Send + Sync + 'static>(
    a: &Arc<A>,
    s: &Arc<Syncer>,
    worker: &udm_core::Worker,
) {
    let Some(act) = choose((**a).as_ref(), s) else {
        return;
    };
    s.ctl.lock().running = Some(act);
    let a = a.clone();
    let s = s.clone();
    worker.spawn(move || {
        let mut act = Some(act);
        while let Some(x) = act {
            run((*a).as_ref(), &s, x);
            act = choose((*a).as_ref(), &s);
            if let Some(x) = act {
                s.ctl.lock().running = Some(x);
            }
        }
    });
}
