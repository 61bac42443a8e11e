//! The raid read fast path: a read of in-sync data on healthy legs is remapped to one leg
//! and submitted there asynchronously, buffer and all (no I/O thread, no copy). Mirrored
//! data (raid1, raid10) is balanced over the copies as md's `read_balance` does: a leg
//! whose head sits where the read starts keeps a sequential stream unless it is busier than
//! another, otherwise the least busy copy nearest its head wins; write-mostly legs only when
//! nothing else can serve. A leg read that fails marks the leg failed and hands the bio to
//! the blocking path, which reads another copy or reconstructs from parity.
//!
//! A large raid1 read is also cut into one piece per readable copy (at least `SPLIT_MIN`
//! each, 4 KiB aligned), the pieces read from different legs at once: one sequential
//! stream then gets the bandwidth of every leg, as striping would, where md keeps a stream
//! on one disk for its read-ahead. The NBD splice path (`read_file_range`) still takes one
//! leg per request: there the request threads give the parallelism.

use super::engine::Array;
use std::sync::atomic::Ordering::Relaxed;
use udm_io::{Bio, IoBuf, IoError, Sectors};

/// A sequential stream stays on its leg while that leg has fewer reads queued than this
/// more than the least busy copy.
const SEQ_SLACK: usize = 2;

/// The smallest piece a split raid1 read gives one leg (64 KiB).
pub const SPLIT_MIN: u64 = 128;

/// Where one piece of a read goes.
pub struct LegRead {
    pub leg: usize,
    pub sector: u64,
}

impl Array {
    /// Choose the copy to read `secs` sectors from among `copies` (device, device sector),
    /// or `None` when the fast path does not apply (out of sync, no readable copy).
    pub fn balance(&self, copies: &[(usize, u64)], secs: u64) -> Option<LegRead> {
        let mut best: Option<(bool, usize, u64, usize, u64)> = None;
        let mut seq: Option<(usize, usize, u64)> = None;
        for &(d, ds) in copies {
            let l = &self.legs[d];
            if !l.readable(ds + secs) {
                continue;
            }
            let pending = l.pending.load(Relaxed);
            let head = l.head.load(Relaxed);
            if head == ds && !l.write_mostly && seq.is_none() {
                seq = Some((d, pending, ds));
            }
            let key = (l.write_mostly, pending, head.abs_diff(ds), d, ds);
            if best
                .as_ref()
                .is_none_or(|b| (key.0, key.1, key.2) < (b.0, b.1, b.2))
            {
                best = Some(key);
            }
        }
        let (_, min_pending, _, d, ds) = best?;
        match seq {
            Some((sd, sp, sds)) if sp < min_pending + SEQ_SLACK => Some(LegRead {
                leg: sd,
                sector: sds,
            }),
            _ => Some(LegRead { leg: d, sector: ds }),
        }
    }

    /// raid1: cut `secs` sectors at `s` into one piece per readable copy (least busy
    /// first, write-mostly legs never), or `None` when the read is too small or only one
    /// copy can serve it.
    fn split_plan(&self, s: u64, secs: u64) -> Option<Vec<(u64, LegRead)>> {
        if secs < 2 * SPLIT_MIN {
            return None;
        }
        let mut legs: Vec<(usize, usize)> = (0..self.legs.len())
            .filter(|&d| self.legs[d].readable(s + secs) && !self.legs[d].write_mostly)
            .map(|d| (self.legs[d].pending.load(Relaxed), d))
            .collect();
        let n = legs.len().min((secs / SPLIT_MIN) as usize);
        if n < 2 {
            return None;
        }
        legs.sort_unstable();
        let piece = secs.div_ceil(n as u64).next_multiple_of(8);
        let mut out = Vec::with_capacity(n);
        let mut o = 0;
        for &(_, d) in legs.iter().take(n) {
            if o >= secs {
                break;
            }
            let len = piece.min(secs - o);
            out.push((
                len,
                LegRead {
                    leg: d,
                    sector: s + o,
                },
            ));
            o += len;
        }
        Some(out)
    }

    /// Where a read at logical sector `s` of `secs` sectors (inside one split unit) can be
    /// served from without the blocking path: one leg read per piece. `split`: a large
    /// raid1 read may be cut over several copies.
    pub fn fast_read_plan(&self, s: u64, secs: u64, split: bool) -> Option<Vec<(u64, LegRead)>> {
        let g = &self.geo;
        match g.level {
            0 => {
                let (d, ds) = g.raid0(s);
                self.legs[d]
                    .usable()
                    .then_some(vec![(secs, LegRead { leg: d, sector: ds })])
            }
            1 => {
                if self.meta.range_needs_sync(s, s + secs) {
                    return None;
                }
                if split {
                    if let Some(plan) = self.split_plan(s, secs) {
                        return Some(plan);
                    }
                }
                let copies: Vec<(usize, u64)> = (0..self.legs.len()).map(|i| (i, s)).collect();
                Some(vec![(secs, self.balance(&copies, secs)?)])
            }
            10 => {
                if self.meta.range_needs_sync(s, s + secs) {
                    return None;
                }
                Some(vec![(secs, self.balance(&g.raid10_copies(s), secs)?)])
            }
            _ => {
                let rs = g.chunk * g.data_disks() as u64;
                let row = s / rs;
                let r = g.row(row);
                let base = row * g.chunk;
                let mut o = s % rs;
                let end = o + secs;
                let mut out = Vec::new();
                while o < end {
                    let j = (o / g.chunk) as usize;
                    let a = o % g.chunk;
                    let n = (g.chunk - a).min(end - o);
                    let d = r.data[j];
                    if !self.legs[d].readable(base + a + n) {
                        return None;
                    }
                    out.push((
                        n,
                        LegRead {
                            leg: d,
                            sector: base + a,
                        },
                    ));
                    o += n;
                }
                Some(out)
            }
        }
    }

    /// Submit one leg read for `bio` (already cut to the piece); `slow` gets the bio back,
    /// buffer restored, when the leg fails it.
    pub fn submit_leg_read<F>(&self, mut bio: Bio, at: LegRead, slow: F)
    where
        F: FnOnce(Bio, usize) + Send + 'static,
    {
        let leg = &self.legs[at.leg];
        let Some(dev) = leg.data.clone() else {
            return slow(bio, at.leg);
        };
        let secs = bio.len().0;
        leg.pending.fetch_add(1, Relaxed);
        leg.head.store(at.sector + secs, Relaxed);
        let buf: IoBuf = bio.take_buf();
        let flags = bio.flags;
        let pending = leg.pending.clone();
        let idx = at.leg;
        let child = Bio::read(
            Sectors(at.sector),
            buf,
            Box::new(move |res: Result<(), IoError>, buf| {
                pending.fetch_sub(1, Relaxed);
                bio.set_buf(buf);
                match res {
                    Ok(()) => bio.complete(Ok(())),
                    Err(_) => slow(bio, idx),
                }
            }),
        )
        .with_flags(flags);
        dev.submit(child);
    }
}
