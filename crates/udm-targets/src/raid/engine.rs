//! The raid data path: legs, failure handling, row locks and the per-level read and write
//! logic (mirrors, striping, raid4/5/6 with read-modify-write and reconstruct-write and
//! degraded reconstruction). Runs on the target's own I/O threads and blocks there.

use super::gf;
use super::layout::{Geo, Row};
use super::meta_io::MetaState;
use crossbeam_channel::bounded;
use parking_lot::{Condvar, Mutex};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use udm_io::{Bio, BioFlags, BlockDevice, IoBuf, IoError, Sectors};

/// Sectors a raid1 lock (and split) unit covers.
pub const RAID1_UNIT: u64 = 1024;

/// One raid device: metadata and data, and its state.
pub struct Leg {
    pub meta: Option<Arc<dyn BlockDevice>>,
    pub data: Option<Arc<dyn BlockDevice>>,
    /// md's `Faulty`.
    pub failed: AtomicBool,
    /// Device sectors below this are in sync (`u64::MAX`: all, md's `In_sync`).
    pub recovery: AtomicU64,
    pub write_mostly: bool,
    /// Returning leg: recover only the regions the bitmap marks dirty.
    pub partial: AtomicBool,
    /// Fast-path reads in flight (read balancing).
    pub pending: Arc<AtomicUsize>,
    /// The device sector after the last fast-path read (read balancing).
    pub head: AtomicU64,
}

impl Leg {
    pub fn usable(&self) -> bool {
        self.data.is_some() && !self.failed.load(SeqCst)
    }
    /// Usable and in sync up to device sector `end`.
    pub fn readable(&self, end: u64) -> bool {
        self.usable() && self.recovery.load(SeqCst) >= end
    }
}

/// A raid set's I/O state.
pub struct Array {
    pub geo: Geo,
    pub legs: Vec<Leg>,
    pub meta: MetaState,
    locks: Mutex<HashSet<u64>>,
    unlocked: Condvar,
    rr: AtomicUsize,
}

/// A leg I/O.
pub struct Op {
    pub leg: usize,
    pub write: bool,
    pub sector: u64,
    pub buf: IoBuf,
}

/// Holds a row (or lock unit) while alive.
pub struct RowGuard<'a> {
    a: &'a Array,
    key: u64,
}

impl Drop for RowGuard<'_> {
    fn drop(&mut self) {
        self.a.locks.lock().remove(&self.key);
        self.a.unlocked.notify_all();
    }
}

impl Array {
    pub fn new(geo: Geo, legs: Vec<Leg>, meta: MetaState) -> Array {
        Array {
            geo,
            legs,
            meta,
            locks: Mutex::new(HashSet::new()),
            unlocked: Condvar::new(),
            rr: AtomicUsize::new(0),
        }
    }

    pub fn lock(&self, key: u64) -> RowGuard<'_> {
        let mut g = self.locks.lock();
        while g.contains(&key) {
            self.unlocked.wait(&mut g);
        }
        g.insert(key);
        RowGuard { a: self, key }
    }

    /// Take lock `key` if free (released with `unlock`).
    pub fn try_lock(&self, key: u64) -> bool {
        self.locks.lock().insert(key)
    }

    pub fn unlock(&self, key: u64) {
        self.locks.lock().remove(&key);
        self.unlocked.notify_all();
    }

    /// Failed or missing legs.
    pub fn degraded(&self) -> usize {
        self.legs.iter().filter(|l| !l.usable()).count()
    }

    /// Mark a leg failed (md_error): superblocks record it and an event is raised.
    pub fn fail_leg(&self, i: usize) {
        if self.geo.level == 0 {
            return;
        }
        if !self.legs[i].failed.swap(true, SeqCst) {
            tracing::warn!("raid: leg {i} failed");
            self.meta.write_superblocks(self);
            self.meta.event();
        }
    }

    /// Submit leg I/Os in parallel and wait for all; a failing leg is marked failed.
    pub fn par(&self, ops: Vec<Op>, flags: BioFlags) -> Vec<(Result<(), IoError>, IoBuf)> {
        let n = ops.len();
        let (tx, rx) = bounded(n.max(1));
        let mut out: Vec<Option<(Result<(), IoError>, IoBuf)>> = (0..n).map(|_| None).collect();
        for (k, op) in ops.into_iter().enumerate() {
            let Some(dev) = self.legs[op.leg].data.clone() else {
                out[k] = Some((Err(IoError::Io), op.buf));
                continue;
            };
            let tx = tx.clone();
            let done: udm_io::Completion = Box::new(move |r, b| {
                let _ = tx.send((k, r, b));
            });
            let bio = if op.write {
                Bio::write(Sectors(op.sector), op.buf, done).with_flags(flags)
            } else {
                Bio::read(Sectors(op.sector), op.buf, done)
            };
            dev.submit(bio);
        }
        drop(tx);
        while let Ok((k, r, b)) = rx.recv() {
            out[k] = Some((r, b));
        }
        out.into_iter()
            .map(|o| o.unwrap_or((Err(IoError::Io), IoBuf::empty())))
            .collect()
    }

    /// `par` that fails legs whose I/O failed and reports which did.
    fn par_fail(&self, ops: Vec<Op>, flags: BioFlags) -> (Vec<IoBuf>, Vec<usize>) {
        let legs: Vec<usize> = ops.iter().map(|o| o.leg).collect();
        let res = self.par(ops, flags);
        let mut bad = Vec::new();
        let bufs = res
            .into_iter()
            .zip(legs)
            .map(|((r, b), leg)| {
                if r.is_err() {
                    self.fail_leg(leg);
                    bad.push(leg);
                }
                b
            })
            .collect();
        (bufs, bad)
    }

    /// Flush every usable data leg.
    pub fn flush(&self) -> Result<(), IoError> {
        let mut ok = false;
        for (i, l) in self.legs.iter().enumerate() {
            if let (true, Some(d)) = (l.usable(), &l.data) {
                match udm_io::sync::flush(&**d) {
                    Ok(()) => ok = true,
                    Err(IoError::NotSupported) => ok = true,
                    Err(_) => self.fail_leg(i),
                }
            }
        }
        if ok || self.geo.level == 0 && self.degraded() == 0 {
            Ok(())
        } else {
            Err(IoError::Io)
        }
    }

    /// Read `len` bytes at logical sector `s` (inside one split unit).
    pub fn read(&self, s: u64, len: usize) -> Result<Vec<u8>, IoError> {
        match self.geo.level {
            0 => {
                let (d, ds) = self.geo.raid0(s);
                let (mut b, bad) = self.par_fail(vec![self.op_r(d, ds, len)], BioFlags::NONE);
                if bad.is_empty() {
                    Ok(b.remove(0).into_vec())
                } else {
                    Err(IoError::Io)
                }
            }
            1 => self.read_copies(&self.mirror_copies(s), len, s),
            10 => self.read_copies(&self.geo.raid10_copies(s), len, s),
            _ => self.read_parity(s, len),
        }
    }

    fn op_r(&self, leg: usize, sector: u64, len: usize) -> Op {
        Op {
            leg,
            write: false,
            sector,
            buf: IoBuf::zeroed(len),
        }
    }

    fn mirror_copies(&self, s: u64) -> Vec<(usize, u64)> {
        (0..self.legs.len()).map(|i| (i, s)).collect()
    }

    /// Whether the region holding device (raid10: array) sector `s` may hold differing
    /// copies: not yet resynced.
    fn out_of_sync(&self, s: u64, end: u64) -> bool {
        self.meta.range_needs_sync(s, end)
    }

    fn read_copies(&self, copies: &[(usize, u64)], len: usize, s: u64) -> Result<Vec<u8>, IoError> {
        let secs = len as u64 / 512;
        let end = s + secs;
        let mut cands: Vec<(usize, u64)> = copies
            .iter()
            .copied()
            .filter(|&(d, ds)| self.legs[d].readable(ds + secs))
            .collect();
        if !self.out_of_sync(s, end) && cands.len() > 1 {
            // Balance: rotate the start, write-mostly legs last.
            let k = self.rr.fetch_add(1, SeqCst) % cands.len();
            cands.rotate_left(k);
            cands.sort_by_key(|&(d, _)| self.legs[d].write_mostly);
        }
        for (d, ds) in cands {
            let (mut b, bad) = self.par_fail(vec![self.op_r(d, ds, len)], BioFlags::NONE);
            if bad.is_empty() {
                return Ok(b.remove(0).into_vec());
            }
        }
        Err(IoError::Io)
    }

    /// Write `data` to every copy; fine while at least one copy of each piece lands.
    fn write_copies(
        &self,
        copies: &[(usize, u64)],
        data: &[u8],
        flags: BioFlags,
    ) -> Result<(), IoError> {
        let ops: Vec<Op> = copies
            .iter()
            .filter(|&&(d, _)| self.legs[d].usable())
            .map(|&(d, ds)| Op {
                leg: d,
                write: true,
                sector: ds,
                buf: IoBuf::from_slice(data),
            })
            .collect();
        let n = ops.len();
        let (_, bad) = self.par_fail(ops, flags);
        if n > bad.len() {
            Ok(())
        } else {
            Err(IoError::Io)
        }
    }

    /// Write `data` at logical sector `s` (inside one split unit).
    pub fn write(&self, s: u64, data: &[u8], flags: BioFlags) -> Result<(), IoError> {
        let secs = data.len() as u64 / 512;
        match self.geo.level {
            0 => {
                let (d, ds) = self.geo.raid0(s);
                let op = Op {
                    leg: d,
                    write: true,
                    sector: ds,
                    buf: IoBuf::from_slice(data),
                };
                let (_, bad) = self.par_fail(vec![op], flags);
                if bad.is_empty() {
                    Ok(())
                } else {
                    Err(IoError::Io)
                }
            }
            1 => {
                let _g = self.lock(s / RAID1_UNIT);
                let _w = self.meta.start_write(self, s, s + secs)?;
                self.write_copies(&self.mirror_copies(s), data, flags)
            }
            10 => {
                let _g = self.lock(s / self.geo.chunk);
                let _w = self.meta.start_write(self, s, s + secs)?;
                self.write_copies(&self.geo.raid10_copies(s), data, flags)
            }
            _ => self.write_parity(s, data, flags),
        }
    }

    // ---- raid4/5/6 ----

    fn row_sectors(&self) -> u64 {
        self.geo.chunk * self.geo.data_disks() as u64
    }

    /// Per data index: the chunk-relative sector range a request at `s` covers.
    fn segments(&self, s: u64, secs: u64) -> (u64, Vec<(usize, u64, u64)>) {
        let rs = self.row_sectors();
        let row = s / rs;
        let mut o = s % rs;
        let end = o + secs;
        let mut segs = Vec::new();
        while o < end {
            let j = (o / self.geo.chunk) as usize;
            let a = o % self.geo.chunk;
            let b = (a + (end - o)).min(self.geo.chunk);
            segs.push((j, a, b));
            o += b - a;
        }
        (row, segs)
    }

    fn read_parity(&self, s: u64, len: usize) -> Result<Vec<u8>, IoError> {
        let secs = len as u64 / 512;
        let (row, segs) = self.segments(s, secs);
        let r = self.geo.row(row);
        let base = row * self.geo.chunk;
        let direct = segs
            .iter()
            .all(|&(j, _, b)| self.legs[r.data[j]].readable(base + b));
        if direct {
            let ops = segs
                .iter()
                .map(|&(j, a, b)| self.op_r(r.data[j], base + a, ((b - a) * 512) as usize))
                .collect();
            let (bufs, bad) = self.par_fail(ops, BioFlags::NONE);
            if bad.is_empty() {
                let mut out = Vec::with_capacity(len);
                bufs.iter().for_each(|b| out.extend_from_slice(b));
                return Ok(out);
            }
        }
        // Degraded: rebuild the window from the other devices, under the row lock.
        let _g = self.lock(row);
        let (lo, hi) = window(&segs);
        let blocks = self.stripe_window(&r, base, lo, hi, &[])?;
        let mut out = Vec::with_capacity(len);
        for &(j, a, b) in &segs {
            let blk = &blocks[r.data[j]];
            out.extend_from_slice(&blk[((a - lo) * 512) as usize..((b - lo) * 512) as usize]);
        }
        Ok(out)
    }

    /// Every device's block of the row for chunk sectors `[lo, hi)`, missing ones rebuilt.
    /// `skip`: devices whose old contents are not needed (they will be overwritten) unless a
    /// rebuild needs them.
    pub fn stripe_window(
        &self,
        r: &Row,
        base: u64,
        lo: u64,
        hi: u64,
        skip: &[usize],
    ) -> Result<Vec<Vec<u8>>, IoError> {
        let n = self.geo.disks;
        let len = ((hi - lo) * 512) as usize;
        for _attempt in 0..=n {
            let avail: Vec<bool> = (0..n).map(|d| self.legs[d].readable(base + hi)).collect();
            let missing_data = r.data.iter().any(|&d| !avail[d]);
            let need: Vec<usize> = (0..n)
                .filter(|&d| avail[d])
                .filter(|&d| {
                    let is_data = r.data.contains(&d);
                    if missing_data {
                        true
                    } else {
                        is_data && !skip.contains(&d)
                    }
                })
                .collect();
            let ops = need.iter().map(|&d| self.op_r(d, base + lo, len)).collect();
            let (bufs, bad) = self.par_fail(ops, BioFlags::NONE);
            if !bad.is_empty() {
                continue;
            }
            let mut blocks: Vec<Option<Vec<u8>>> = vec![None; n];
            for (d, b) in need.iter().zip(bufs) {
                blocks[*d] = Some(b.into_vec());
            }
            if missing_data {
                let lost: Vec<usize> = (0..n).filter(|&d| !avail[d]).collect();
                if !solve(r, &mut blocks, &lost, len) {
                    return Err(IoError::Io);
                }
            }
            return Ok(blocks
                .into_iter()
                .map(|b| b.unwrap_or_else(|| vec![0u8; len]))
                .collect());
        }
        Err(IoError::Io)
    }

    fn write_parity(&self, s: u64, data: &[u8], flags: BioFlags) -> Result<(), IoError> {
        let secs = data.len() as u64 / 512;
        let (row, segs) = self.segments(s, secs);
        let r = self.geo.row(row);
        let base = row * self.geo.chunk;
        let (lo, hi) = window(&segs);
        let _g = self.lock(row);
        let _w = self.meta.start_write(self, base + lo, base + hi)?;
        let touched: Vec<usize> = segs.iter().map(|&(j, _, _)| r.data[j]).collect();
        let full: Vec<usize> = segs
            .iter()
            .filter(|&&(_, a, b)| a == lo && b == hi)
            .map(|&(j, _, _)| r.data[j])
            .collect();
        let parity: Vec<usize> = std::iter::once(r.pd).chain(r.qd).collect();
        let healthy = touched
            .iter()
            .chain(&parity)
            .all(|&d| self.legs[d].readable(base + hi));
        let in_sync = !self.out_of_sync(base + lo, base + hi);
        let untouched = r.data.len() - touched.len();
        let len = ((hi - lo) * 512) as usize;
        let overlay = |blocks: &mut [Vec<u8>]| {
            let mut off = 0usize;
            for &(j, a, b) in &segs {
                let n = ((b - a) * 512) as usize;
                let at = ((a - lo) * 512) as usize;
                blocks[r.data[j]][at..at + n].copy_from_slice(&data[off..off + n]);
                off += n;
            }
        };
        let mut blocks: Vec<Vec<u8>>;
        if healthy && in_sync && touched.len() + parity.len() <= untouched {
            // Read-modify-write: P' = P ^ D ^ D', Q' = Q ^ g^k (D ^ D').
            let rd: Vec<usize> = touched.iter().chain(&parity).copied().collect();
            let ops = rd.iter().map(|&d| self.op_r(d, base + lo, len)).collect();
            let (bufs, bad) = self.par_fail(ops, BioFlags::NONE);
            if !bad.is_empty() {
                drop(_w);
                drop(_g);
                return self.write_parity(s, data, flags);
            }
            blocks = vec![Vec::new(); self.geo.disks];
            for (d, b) in rd.iter().zip(bufs) {
                blocks[*d] = b.into_vec();
            }
            let old: Vec<(usize, Vec<u8>)> =
                touched.iter().map(|&d| (d, blocks[d].clone())).collect();
            overlay(&mut blocks);
            for (d, o) in old {
                let delta: Vec<u8> = o.iter().zip(&blocks[d]).map(|(x, y)| x ^ y).collect();
                for (p, x) in blocks[r.pd].iter_mut().zip(&delta) {
                    *p ^= x;
                }
                if let Some(q) = r.qd {
                    let c = gf::pow2(r.slot[d]);
                    for (p, x) in blocks[q].iter_mut().zip(&delta) {
                        *p ^= gf::mul(c, *x);
                    }
                }
            }
        } else {
            // Reconstruct-write: all data of the window, then fresh parity.
            blocks = self.stripe_window(&r, base, lo, hi, &full)?;
            overlay(&mut blocks);
            let mut p = vec![0u8; len];
            let slots = slot_refs(&r, &blocks);
            gf::gen_p(&slots, &mut p);
            let q = r.qd.map(|_| {
                let mut q = vec![0u8; len];
                gf::gen_q(&slots, &mut q);
                q
            });
            blocks[r.pd] = p;
            if let (Some(qd), Some(q)) = (r.qd, q) {
                blocks[qd] = q;
            }
        }
        let targets: Vec<usize> = touched
            .iter()
            .chain(&parity)
            .copied()
            .filter(|&d| self.legs[d].usable())
            .collect();
        let ops = targets
            .iter()
            .map(|&d| Op {
                leg: d,
                write: true,
                sector: base + lo,
                buf: IoBuf::from_vec(std::mem::take(&mut blocks[d])),
            })
            .collect();
        self.par_fail(ops, flags);
        if self.degraded() > self.geo.parity_devs() {
            return Err(IoError::Io);
        }
        Ok(())
    }
}

/// The chunk-relative window `[lo, hi)` the segments span.
fn window(segs: &[(usize, u64, u64)]) -> (u64, u64) {
    let lo = segs.iter().map(|s| s.1).min().unwrap_or(0);
    let hi = segs.iter().map(|s| s.2).max().unwrap_or(0);
    (lo, hi)
}

/// The syndrome slots of a row's blocks (holes for P/Q positions in ddf layouts).
pub fn slot_refs<'a>(r: &Row, blocks: &'a [Vec<u8>]) -> Vec<Option<&'a [u8]>> {
    let mut slots: Vec<Option<&[u8]>> = vec![None; r.nslots];
    for &d in &r.data {
        slots[r.slot[d]] = Some(blocks[d].as_slice());
    }
    slots
}

/// Rebuild the `lost` devices' blocks of a row from the others.
pub fn solve(r: &Row, blocks: &mut [Option<Vec<u8>>], lost: &[usize], len: usize) -> bool {
    let n = r.nslots;
    let mut v: Vec<Vec<u8>> = vec![vec![0u8; len]; n + 1 + r.qd.is_some() as usize];
    for &d in &r.data {
        if let Some(b) = &blocks[d] {
            v[r.slot[d]] = b.clone();
        }
    }
    if let Some(b) = &blocks[r.pd] {
        v[n] = b.clone();
    }
    if let Some(q) = r.qd {
        if let Some(b) = &blocks[q] {
            v[n + 1] = b.clone();
        }
    }
    let miss: Vec<usize> = lost
        .iter()
        .map(|&d| {
            if d == r.pd {
                n
            } else if Some(d) == r.qd {
                n + 1
            } else {
                r.slot[d]
            }
        })
        .collect();
    if !gf::reconstruct(&mut v, n, &miss) {
        return false;
    }
    for &d in lost {
        let k = if d == r.pd {
            n
        } else if Some(d) == r.qd {
            n + 1
        } else {
            r.slot[d]
        };
        blocks[d] = Some(v[k].clone());
    }
    true
}
