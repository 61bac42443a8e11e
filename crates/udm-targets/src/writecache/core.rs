//! The writecache data path. `map` never blocks: under one short lock it walks the bio block
//! by block as the kernel's `writecache_map` does (the kernel maps one piece and lets dm
//! resubmit the rest; here the pieces are cut at once) and remaps each piece to the cache
//! device (a hit, or a newly allocated block) or to the origin (a read miss, a write around a
//! full cache, cleaner or metadata_only mode). A read of a block whose data write is still
//! in flight waits for it; a write that finds its block being written back and no free block
//! waits for the writeback. Flushes, FUA, discards and all metadata I/O run on the worker
//! or, for the end of writeback copies, the endio worker ([`super::work`]).

use super::state::{State, NIL};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_core::{Copier, MapResult, Worker};
use udm_io::{Bio, BioFlags, BlockDevice, IoError, Op, Sectors};

/// Fixed geometry and tunables of one table line.
pub struct Config {
    /// Block size in sectors.
    pub bs: u64,
    pub start_sector: u64,
    pub n_blocks: u64,
    /// Sectors of metadata in front of the data blocks.
    pub metadata_sectors: u64,
    pub autocommit_blocks: u32,
    pub autocommit_time: Duration,
    pub max_age: Option<Duration>,
    pub pause: Duration,
    pub writeback_jobs: u32,
    pub metadata_only: bool,
}

impl Config {
    /// Where entry `i`'s data lives on the cache device.
    pub fn cache_sector(&self, i: u32) -> u64 {
        self.start_sector + self.metadata_sectors + i as u64 * self.bs
    }
}

/// Deadlines the timer thread serves.
#[derive(Default)]
pub struct Timers {
    pub autocommit: Option<Instant>,
    pub max_age: Option<Instant>,
    pub writeback: Option<Instant>,
    pub stop: bool,
}

pub struct Core {
    pub cfg: Config,
    pub origin: Arc<dyn BlockDevice>,
    pub cache: Arc<dyn BlockDevice>,
    pub worker: Arc<Worker>,
    /// Ends writeback copies (origin flush, frees, commit) while the worker starts more.
    pub endio: Arc<Worker>,
    pub copier: Copier,
    /// Held across every metadata write sequence (a commit, a persist of frees), so two
    /// writers' copies of one region never land out of order.
    pub meta_io: Mutex<()>,
    pub st: Mutex<State>,
    /// Signalled when in-flight data bios end.
    pub idle: Condvar,
    pub timers: Mutex<Timers>,
    pub timer_cv: Condvar,
}

/// Where one piece of a bio goes.
enum Dest {
    /// Entries `first..first + n` (consecutive blocks), counted in `gen` for a write.
    Cache {
        sector: u64,
        first: u32,
        n: u32,
        gen: Option<u64>,
    },
    Origin {
        write: bool,
    },
    /// The rest of the bio waits for entry `.0`'s writes.
    ParkRead(u32),
    /// The rest of the bio waits for a free block.
    Blocked,
    Error,
}

/// How a cut piece is sent once the lock is dropped.
enum Route {
    Cache,
    Origin(bool),
    Fail,
}

impl Core {
    fn submit_origin(self: &Arc<Self>, bio: Bio, write: bool) {
        if write && !self.cfg.pause.is_zero() {
            self.st.lock().origin_writes += 1;
            let me = self.clone();
            let bio = bio.on_end(move |r, _| {
                let mut st = me.st.lock();
                st.origin_writes -= 1;
                st.origin_idle_since = Instant::now();
                r
            });
            return self.origin.submit(bio);
        }
        self.origin.submit(bio)
    }

    /// Map a bio (target-relative sectors); never blocks.
    pub fn map(self: &Arc<Self>, mut bio: Bio) -> MapResult {
        if bio.op == Op::Flush {
            if bio.target_bio_nr() != 0 {
                return MapResult::Remap(self.origin.clone(), bio);
            }
            let mut st = self.st.lock();
            if st.error {
                return MapResult::Kill(bio, IoError::Io);
            }
            st.stats.flushes += 1;
            drop(st);
            let me = self.clone();
            self.worker.spawn(move || {
                let ok = me.flush();
                bio.complete(if ok { Ok(()) } else { Err(IoError::Io) })
            });
            return MapResult::Submitted;
        }
        let bs = self.cfg.bs;
        if (bio.sector.0 | bio.len().0) & (bs - 1) != 0 {
            udm_core::klog::err(
                "writecache",
                &format!(
                    "I/O is not aligned, sector {}, size {}, block size {}",
                    bio.sector.0,
                    bio.len().0 * 512,
                    bs * 512
                ),
            );
            return MapResult::Kill(bio, IoError::Io);
        }
        match bio.op {
            Op::Discard => {
                let mut st = self.st.lock();
                st.stats.discards += bio.len().0 / bs;
                if st.error {
                    return MapResult::Kill(bio, IoError::Io);
                }
                drop(st);
                let me = self.clone();
                self.worker.spawn(move || me.discard(bio));
                MapResult::Submitted
            }
            Op::Read | Op::Write => {
                if bio.op == Op::Write && bio.flags.contains(BioFlags::FUA) {
                    // Data on the cache and its entry committed before completion.
                    bio.flags = bio.flags.without(BioFlags::FUA);
                    let me = self.clone();
                    let buf = bio.take_buf();
                    let inner = Bio::write(
                        bio.sector,
                        buf,
                        Box::new(move |r, b| {
                            bio.set_buf(b);
                            if r.is_err() {
                                return bio.complete(r);
                            }
                            let m2 = me.clone();
                            me.worker.spawn(move || {
                                let ok = m2.flush();
                                bio.complete(if ok { Ok(()) } else { Err(IoError::Io) })
                            });
                        }),
                    );
                    self.map_rw(inner);
                    return MapResult::Submitted;
                }
                self.map_rw(bio);
                MapResult::Submitted
            }
            _ => MapResult::Kill(bio, IoError::NotSupported),
        }
    }

    /// Cut a read or write into pieces and send each where it goes.
    pub fn map_rw(self: &Arc<Self>, bio: Bio) {
        let write = bio.op == Op::Write;
        let mut st = self.st.lock();
        let plan = if write {
            self.plan_write(&mut st, bio.sector.0, bio.len().0)
        } else {
            self.plan_read(&mut st, bio.sector.0, bio.len().0)
        };
        let lens: Vec<Sectors> = plan.iter().map(|p| Sectors(p.0)).collect();
        let pieces = bio.split(&lens);
        let mut out = Vec::with_capacity(pieces.len());
        for (mut b, (_, dest)) in pieces.into_iter().zip(plan) {
            match dest {
                Dest::ParkRead(i) => st.waiting_reads.entry(i).or_default().push(b),
                Dest::Blocked => {
                    st.blocked.push_back(b);
                    self.queue_writeback(&mut st);
                }
                Dest::Cache {
                    sector,
                    first,
                    n,
                    gen,
                } => {
                    b.sector = Sectors(sector);
                    let me = self.clone();
                    b = b.on_end(move |r, _| {
                        me.end_cache_io(first, n, gen);
                        r
                    });
                    out.push((b, Route::Cache));
                }
                Dest::Origin { write } => out.push((b, Route::Origin(write))),
                Dest::Error => out.push((b, Route::Fail)),
            }
        }
        if write && !st.error {
            self.after_write(&mut st);
        }
        drop(st);
        for (b, how) in out {
            match how {
                Route::Cache => self.cache.submit(b),
                Route::Origin(w) => self.submit_origin(b, w),
                Route::Fail => b.complete(Err(IoError::Io)),
            }
        }
    }

    /// `writecache_map_read`, block by block over `[sector, sector+len)`.
    fn plan_read(&self, st: &mut State, mut sector: u64, len: u64) -> Vec<(u64, Dest)> {
        let (bs, end) = (self.cfg.bs, sector + len);
        let mut plan = Vec::new();
        while sector < end {
            st.stats.reads += 1;
            let found = st.find_following(sector);
            if let Some((_, i)) = found.filter(|f| f.0 == sector) {
                st.stats.read_hits += 1;
                if st.entries[i as usize].writes > 0 {
                    plan.push((end - sector, Dest::ParkRead(i)));
                    st.stats.reads -= 1;
                    st.stats.read_hits -= 1;
                    return plan;
                }
                st.entries[i as usize].reads += 1;
                plan.push((
                    bs,
                    Dest::Cache {
                        sector: self.cfg.cache_sector(i),
                        first: i,
                        n: 1,
                        gen: None,
                    },
                ));
                sector += bs;
            } else {
                let stop = found.map_or(end, |f| f.0.min(end));
                st.stats.reads += (stop - sector) / bs - 1;
                plan.push((stop - sector, Dest::Origin { write: false }));
                sector = stop;
            }
        }
        plan
    }

    /// `writecache_map_write` with `writecache_bio_copy_ssd`, over `[sector, sector+len)`.
    fn plan_write(self: &Arc<Self>, st: &mut State, mut sector: u64, len: u64) -> Vec<(u64, Dest)> {
        let (bs, end) = (self.cfg.bs, sector + len);
        let mut plan = Vec::new();
        while sector < end {
            if st.error {
                st.stats.writes += (end - sector) / bs;
                plan.push((end - sector, Dest::Error));
                return plan;
            }
            let mut found_entry = false;
            let mut first = None;
            let mut search_used = false;
            if let Some(i) = st.find(sector) {
                if !st.committed(i) {
                    st.stats.write_hits_uncommitted += 1;
                    (first, search_used) = (Some(i), true);
                } else {
                    st.stats.write_hits_committed += 1;
                    if !st.entries[i as usize].wb {
                        st.overwrote_committed = true;
                        (first, search_used) = (Some(i), true);
                    } else {
                        found_entry = true;
                    }
                }
            } else if st.cleaner || self.cfg.metadata_only {
                plan.push(self.write_around(st, sector, end));
                sector += plan.last().expect("pushed").0;
                continue;
            }
            let e = match first {
                Some(i) => i,
                None => match st.pop_free(None) {
                    Some(i) => {
                        self.verify_watermark(st);
                        let seq = st.seq_count;
                        st.set_entry(i, sector, seq);
                        st.insert(i);
                        st.uncommitted_blocks += 1;
                        st.stats.writes_allocate += 1;
                        i
                    }
                    None if !found_entry => {
                        plan.push(self.write_around(st, sector, end));
                        sector += plan.last().expect("pushed").0;
                        continue;
                    }
                    None => {
                        st.stats.writes_blocked_on_freelist += 1;
                        plan.push((end - sector, Dest::Blocked));
                        return plan;
                    }
                },
            };
            // Extend over following blocks: newly allocated contiguous ones, or (for a
            // hit) existing entries next in both sector and cache position.
            let mut n = bs;
            let mut last = e;
            while sector + n < end {
                let next_sector = sector + n;
                if !search_used {
                    // The kernel would allocate here even over a cached sector, leaving two
                    // entries of one sequence count for it; a crash before the older one's
                    // release is on disk would then make the pair ambiguous. Stop instead:
                    // the rest is mapped as a hit.
                    if st.cached(next_sector) {
                        break;
                    }
                    let Some(f) = st.pop_free(Some(last + 1)) else {
                        break;
                    };
                    self.verify_watermark(st);
                    let seq = st.seq_count;
                    st.set_entry(f, next_sector, seq);
                    st.insert(f);
                    st.uncommitted_blocks += 1;
                    last = f;
                } else {
                    let Some(f) = st.find(next_sector) else { break };
                    let fe = st.entries[f as usize];
                    if f != last + 1 || fe.wb || fe.older != NIL {
                        break;
                    }
                    if st.committed(f) {
                        st.overwrote_committed = true;
                    }
                    last = f;
                }
                n += bs;
            }
            st.stats.writes += n / bs;
            st.stats.writes_allocate += n / bs - 1;
            let gen = st.seq_count;
            *st.gen_writes.entry(gen).or_insert(0) += 1;
            for i in e..=last {
                st.entries[i as usize].writes += 1;
            }
            plan.push((
                n,
                Dest::Cache {
                    sector: self.cfg.cache_sector(e),
                    first: e,
                    n: last - e + 1,
                    gen: Some(gen),
                },
            ));
            sector += n;
        }
        plan
    }

    /// A write that bypasses the cache up to the next cached sector.
    fn write_around(&self, st: &mut State, sector: u64, end: u64) -> (u64, Dest) {
        let stop = st
            .find_following(sector)
            .map_or(end, |f| f.0.min(end))
            .max(sector + self.cfg.bs);
        let n = (stop - sector) / self.cfg.bs;
        st.stats.writes_around += n;
        st.stats.writes += n;
        (stop - sector, Dest::Origin { write: true })
    }

    /// Autocommit by count (a commit queued now), or arm the autocommit timer.
    fn after_write(self: &Arc<Self>, st: &mut State) {
        if st.uncommitted_blocks >= self.cfg.autocommit_blocks {
            st.uncommitted_blocks = 0;
            let me = self.clone();
            self.worker.spawn(move || {
                me.flush();
            });
            return;
        }
        let mut t = self.timers.lock();
        if t.autocommit.is_none() {
            t.autocommit = Some(Instant::now() + self.cfg.autocommit_time);
            self.timer_cv.notify_all();
        }
    }

    pub fn verify_watermark(self: &Arc<Self>, st: &mut State) {
        if st.below_high() {
            self.queue_writeback(st);
        }
    }

    /// End of a data bio to the cache: release its entries and wake what waits on them.
    fn end_cache_io(self: &Arc<Self>, first: u32, n: u32, gen: Option<u64>) {
        let mut wake = Vec::new();
        {
            let mut st = self.st.lock();
            for i in first..first + n {
                let e = &mut st.entries[i as usize];
                if gen.is_some() {
                    e.writes -= 1;
                    if e.writes == 0 {
                        if let Some(v) = st.waiting_reads.remove(&i) {
                            wake.extend(v);
                        }
                    }
                } else {
                    e.reads -= 1;
                }
            }
            if let Some(g) = gen {
                let n = st.gen_writes.get_mut(&g).expect("counted");
                *n -= 1;
                if *n == 0 {
                    st.gen_writes.remove(&g);
                }
            }
            self.idle.notify_all();
        }
        for b in wake {
            self.map_rw(b);
        }
    }
}
