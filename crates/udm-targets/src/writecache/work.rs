//! The writecache's background work, on its worker: commits (`writecache_flush`), metadata
//! writes, writeback to the origin, discards, loading the metadata at resume, and the timer
//! thread (autocommit, max_age, pause_writeback). Writeback rounds only start copies (as
//! many as the watermarks ask for, each round's walk bounded); the endio worker ends them in
//! batches — one origin flush, the frees, one commit — while the worker starts more, so a
//! slow origin sees many copies in flight, as the kernel's kcopyd and endio thread do.
//!
//! Crash safety is the kernel's: an entry is valid after a crash only if its sequence count
//! is below the superblock's, and the superblock's count is raised only after the regions
//! holding the entries and every data write mapped under the old count are on the cache
//! device and flushed. A block freed (written back, discarded, superseded) becomes reusable
//! only once its cleared entry is on disk, so a crash never maps a sector to another
//! sector's data.

use super::core::Core;
use super::format::{NONE, REGION_BYTES};
use super::state::{State, NIL};
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_core::Loc;
use udm_io::{Bio, Sectors};

/// `BIO_MAX_VECS`: the longest run written back in one copy.
const MAX_RUN: usize = 256;
/// `WRITEBACK_LATENCY`: entries looked at per round outside writeback_all.
const WRITEBACK_LATENCY: usize = 64;
/// Longest an ended writeback copy waits for the others in flight to end with it.
const ENDIO_BATCH: Duration = Duration::from_millis(100);
/// Entries per round in writeback_all mode (bounds the time a flush waits behind it).
const ALL_BATCH: usize = 4096;

impl Core {
    /// `writecache_error`: the first error is logged; the cache stops taking writes.
    pub fn fail(&self, st: &mut State, msg: &str) {
        if !st.error {
            udm_core::klog::err("writecache", msg);
        }
        st.error = true;
    }

    pub fn queue_writeback(self: &Arc<Self>, st: &mut State) {
        if !st.writeback_queued && st.loaded {
            st.writeback_queued = true;
            let me = self.clone();
            self.worker.spawn(move || me.writeback_job());
        }
    }

    /// Copy out the changed metadata regions (offset in the metadata area, bytes).
    fn take_regions(st: &mut State) -> Vec<(u64, Vec<u8>)> {
        st.dirty
            .take()
            .into_iter()
            .map(|r| {
                let off = (r * REGION_BYTES) as usize;
                let end = (off + REGION_BYTES as usize).min(st.meta.len());
                (off as u64, st.meta[off..end].to_vec())
            })
            .collect()
    }

    fn write_regions(&self, regions: &[(u64, Vec<u8>)]) -> bool {
        let base = self.cfg.start_sector;
        regions.iter().all(|(off, data)| {
            udm_io::sync::write_at(&*self.cache, Sectors(base + off / 512), data).is_ok()
        })
    }

    /// `writecache_commit_flushed(wc, false)`: changed regions, then a cache flush. Frees
    /// made before it become usable blocks.
    pub fn persist(self: &Arc<Self>) -> bool {
        let meta = self.meta_io.lock();
        let (regions, freed) = {
            let mut st = self.st.lock();
            if st.dirty.is_empty() && st.pending_free.is_empty() {
                return !st.error;
            }
            (
                Self::take_regions(&mut st),
                std::mem::take(&mut st.pending_free),
            )
        };
        let ok = self.write_regions(&regions) && udm_io::sync::flush(&*self.cache).is_ok();
        drop(meta);
        let mut st = self.st.lock();
        if !ok {
            self.fail(&mut st, "error writing metadata");
            return false;
        }
        for i in freed {
            st.add_free(i);
        }
        let blocked: Vec<Bio> = st.blocked.drain(..).collect();
        drop(st);
        for b in blocked {
            self.map_rw(b);
        }
        true
    }

    /// Wait until no data write mapped under sequence count `gen` or earlier is in flight.
    fn wait_gen(&self, gen: u64) {
        let mut st = self.st.lock();
        while st.gen_writes.range(..=gen).next().is_some() {
            self.idle.wait(&mut st);
        }
    }

    /// Finish freeing unlinked entries once no bio uses their blocks.
    fn retire(self: &Arc<Self>, idxs: &[u32]) {
        let mut st = self.st.lock();
        while idxs.iter().any(|&i| {
            let e = &st.entries[i as usize];
            e.writes > 0 || e.reads > 0
        }) {
            self.idle.wait(&mut st);
        }
        for &i in idxs {
            st.clear_seq(i);
            st.pending_free.push(i);
        }
    }

    /// `writecache_flush`: commit every uncommitted entry. Returns false on error.
    pub fn flush(self: &Arc<Self>) -> bool {
        let meta = self.meta_io.lock();
        let (gen, regions) = {
            let mut st = self.st.lock();
            st.uncommitted_blocks = 0;
            self.timers.lock().autocommit = None;
            if st.error {
                return false;
            }
            if !st.has_uncommitted() {
                if !st.overwrote_committed {
                    return true;
                }
                st.overwrote_committed = false;
                let gen = st.seq_count;
                drop(st);
                drop(meta);
                self.wait_gen(gen);
                return self.flush_cache();
            }
            let gen = st.seq_count;
            // Metadata rewritten under a suspended cache can bring any count back on
            // resume; the all-ones one marks free entries and cannot be counted past.
            if gen >= NONE - 1 {
                self.fail(&mut st, "seq_count overflow");
                return false;
            }
            st.seq_count += 1;
            st.overwrote_committed = false;
            (gen, Self::take_regions(&mut st))
        };
        let ok = self.write_regions(&regions);
        self.wait_gen(gen);
        if !ok || !self.flush_cache() {
            let mut st = self.st.lock();
            self.fail(&mut st, "error writing metadata");
            return false;
        }
        // The superblock, with the new count (write + flush: the kernel's FUA write).
        let sb = {
            let mut st = self.st.lock();
            st.meta[24..32].copy_from_slice(&(gen + 1).to_le_bytes());
            let n = (4096usize).min(st.meta.len());
            st.meta[..n].to_vec()
        };
        let ok = udm_io::sync::write_at(&*self.cache, Sectors(self.cfg.start_sector), &sb).is_ok()
            && udm_io::sync::flush(&*self.cache).is_ok();
        if !ok {
            let mut st = self.st.lock();
            self.fail(&mut st, "error writing superblock");
            return false;
        }
        drop(meta);
        // Older committed entries for the same sectors are superseded.
        let old: Vec<u32> = {
            let mut st = self.st.lock();
            let mut old = Vec::new();
            for &s in &st.dups {
                let newest = st.find(s).expect("a duplicate is cached");
                if !st.committed(newest) {
                    continue;
                }
                old.extend(
                    st.chain(newest)
                        .skip(1)
                        .filter(|&i| !st.entries[i as usize].wb),
                );
            }
            for &i in &old {
                st.unlink(i);
            }
            old
        };
        if !old.is_empty() {
            self.retire(&old);
            return self.persist();
        }
        true
    }

    fn flush_cache(self: &Arc<Self>) -> bool {
        if udm_io::sync::flush(&*self.cache).is_err() {
            let mut st = self.st.lock();
            self.fail(&mut st, "error flushing metadata");
            return false;
        }
        true
    }

    /// `writecache_discard` on the worker, then the discard goes on to the origin.
    pub fn discard(self: &Arc<Self>, bio: Bio) {
        let (start, end) = (bio.sector.0, bio.end().0);
        let gone: Vec<u32> = {
            let mut st = self.st.lock();
            let mut gone = st.entries_in(start, end);
            gone.retain(|&i| !st.entries[i as usize].wb);
            for &i in &gone {
                if !st.committed(i) {
                    st.uncommitted_blocks = st.uncommitted_blocks.saturating_sub(1);
                }
                st.unlink(i);
            }
            gone
        };
        if !gone.is_empty() {
            self.retire(&gone);
            self.persist();
        }
        self.origin.submit(bio);
    }

    /// Whether writeback has work (`writecache_writeback`'s loop condition), for the oldest
    /// LRU entry at or after `tick`.
    fn wants_writeback(&self, st: &State, tick: u64) -> bool {
        let Some((_, &i)) = st.lru.range(tick..).next() else {
            return false;
        };
        if st.writeback_all > 0 || st.free_count() + st.writeback_size <= st.low_wm {
            return true;
        }
        self.cfg
            .max_age
            .is_some_and(|a| st.entries[i as usize].age.elapsed() >= a - a / super::MAX_AGE_DIV)
    }

    /// The queued writeback work: honours pause_writeback, then runs rounds.
    pub fn writeback_job(self: &Arc<Self>) {
        {
            let mut st = self.st.lock();
            st.writeback_queued = false;
            if st.error || !st.loaded || (st.suspended && st.writeback_all == 0) {
                return;
            }
            let pause = self.cfg.pause;
            if !pause.is_zero() && !st.cleaner && st.writeback_all == 0 && !st.suspended {
                let idle = if st.origin_writes > 0 {
                    Duration::ZERO
                } else {
                    st.origin_idle_since.elapsed()
                };
                if idle < pause {
                    if self.wants_writeback(&st, 0) {
                        let wait = (pause - idle).min(Duration::from_secs(1));
                        self.timers.lock().writeback = Some(Instant::now() + wait);
                        self.timer_cv.notify_all();
                    }
                    return;
                }
            }
        }
        if self.writeback_round() {
            let mut st = self.st.lock();
            self.queue_writeback(&mut st);
        }
    }

    /// Pick entries (oldest first, or by sector in writeback_all mode), mark them in writeback
    /// and start their copies to the origin; `writeback_ended` finishes them. Returns whether
    /// more remains to be done (the kernel's `writecache_writeback`, which also leaves the
    /// copies to its endio thread).
    pub fn writeback_round(self: &Arc<Self>) -> bool {
        {
            let st = self.st.lock();
            let first_uncommitted = st.lru.values().next().is_some_and(|&i| !st.committed(i));
            let need = self.wants_writeback(&st, 0)
                && st.has_uncommitted()
                && (st.writeback_all > 0 || first_uncommitted);
            drop(st);
            if need && !self.flush() {
                return false;
            }
        }
        let (runs, limited) = self.select();
        if runs.is_empty() {
            return limited;
        }
        {
            let mut st = self.st.lock();
            while runs
                .iter()
                .flatten()
                .any(|&i| st.entries[i as usize].writes > 0)
            {
                self.idle.wait(&mut st);
            }
        }
        self.start_copies(runs);
        let st = self.st.lock();
        !st.error && (limited || self.wants_writeback(&st, 0))
    }

    /// Copy runs cache → origin, at most `writeback_jobs` blocks in flight (0: no limit).
    fn start_copies(self: &Arc<Self>, runs: Vec<Vec<u32>>) {
        let origin_len = self.origin.size().0;
        let jobs = self.cfg.writeback_jobs as usize;
        for run in runs {
            let (first, n) = (run[0], run.len());
            let to = {
                let mut st = self.st.lock();
                while jobs > 0 && st.wb_inflight > 0 && st.wb_inflight + n > jobs {
                    self.idle.wait(&mut st);
                }
                st.wb_inflight += n;
                st.entries[first as usize].sector
            };
            if to >= origin_len {
                self.copy_ended(run, true);
                continue;
            }
            let len = (n as u64 * self.cfg.bs).min(origin_len - to);
            let me = self.clone();
            self.copier.copy(
                Loc::new(self.cache.clone(), Sectors(self.cfg.cache_sector(first))),
                vec![Loc::new(self.origin.clone(), Sectors(to))],
                Sectors(len),
                Box::new(move |r| me.copy_ended(run, r.is_ok())),
            );
        }
    }

    /// A writeback copy ended: hand it to the endio worker.
    fn copy_ended(self: &Arc<Self>, run: Vec<u32>, ok: bool) {
        let mut st = self.st.lock();
        st.wb_inflight -= run.len();
        st.wb_done.push((run, ok));
        self.idle.notify_all();
        if !st.endio_busy {
            st.endio_busy = true;
            let me = self.clone();
            self.endio.spawn(move || me.writeback_ended());
        }
    }

    /// On the endio worker, for every batch of ended copies: one origin flush, then the
    /// entries leave the cache (or, after an error, go back to the LRU's old end), and their
    /// blocks are freed by one commit. A batch waits (at most `ENDIO_BATCH`) for the copies
    /// still in flight while free blocks are plentiful: each commit flushes the cache
    /// device, and one per copy wave cost the foreground writes more than the frees gain. Writeback is queued again while below the high
    /// watermark (`writecache_free_entry`).
    fn writeback_ended(self: &Arc<Self>) {
        loop {
            let done = {
                let mut st = self.st.lock();
                // Let the copies still in flight join this batch (one origin flush and one
                // commit for all), unless writes want the blocks now or a flush waits.
                let until = Instant::now() + ENDIO_BATCH;
                while st.wb_inflight > 0
                    && st.writeback_all == 0
                    && st.blocked.is_empty()
                    && st.free.len() as u64 > self.cfg.n_blocks / 8
                    && !self.idle.wait_until(&mut st, until).timed_out()
                {}
                if st.wb_done.is_empty() {
                    st.endio_busy = false;
                    self.idle.notify_all();
                    if !st.error && st.below_high() {
                        self.queue_writeback(&mut st);
                    }
                    return;
                }
                std::mem::take(&mut st.wb_done)
            };
            let copied = done.iter().all(|d| d.1);
            let ok = copied && udm_io::sync::flush(&*self.origin).is_ok();
            let all: Vec<u32> = done.into_iter().flat_map(|d| d.0).collect();
            let freed = {
                let mut st = self.st.lock();
                let ok = ok && !st.error;
                for &i in &all {
                    st.entries[i as usize].wb = false;
                    st.writeback_size -= 1;
                    if ok {
                        st.unlink(i);
                    } else {
                        st.relink_oldest(i);
                    }
                }
                if !ok {
                    self.fail(&mut st, "copy error");
                }
                ok
            };
            if freed {
                self.retire(&all);
                self.persist();
            }
        }
    }

    /// Wait until no writeback copy is in flight or waiting to be ended.
    pub fn wait_writeback_idle(&self) {
        let mut st = self.st.lock();
        while !st.writeback_idle() {
            self.idle.wait(&mut st);
        }
    }

    /// Choose the runs of one round and mark them in writeback.
    fn select(&self) -> (Vec<Vec<u32>>, bool) {
        let mut st = self.st.lock();
        let bs = self.cfg.bs;
        let all_mode = st.writeback_all > 0;
        let (mut tick, mut scur, mut walked, mut taken) = (0u64, 0u64, 0usize, 0usize);
        let mut runs = Vec::new();
        loop {
            if !self.wants_writeback(&st, if all_mode { 0 } else { tick }) {
                return (runs, false);
            }
            walked += 1;
            if (!all_mode && walked > WRITEBACK_LATENCY) || taken >= ALL_BATCH {
                return (runs, true);
            }
            let e = if all_mode {
                let Some((s, i)) = st.next_cached(scur) else {
                    return (runs, false);
                };
                scur = s + 1;
                st.oldest(i)
            } else {
                let Some((&t, &i)) = st.lru.range(tick..).next() else {
                    return (runs, false);
                };
                tick = t + 1;
                i
            };
            let ent = st.entries[e as usize];
            let head = st.find(ent.sector).expect("a listed entry is cached");
            if ent.wb || st.chain(head).any(|o| st.entries[o as usize].wb) {
                continue;
            }
            if !st.committed(e) {
                return (runs, false);
            }
            let mut run = vec![e];
            let mut f = e;
            while run.len() < MAX_RUN {
                let ns = st.entries[f as usize].sector + bs;
                let Some(g) = st.find(ns) else { break };
                let ge = st.entries[g as usize];
                if ge.older != NIL || g != f + 1 || ge.wb || !st.committed(g) {
                    break;
                }
                run.push(g);
                f = g;
            }
            if all_mode {
                scur = st.entries[f as usize].sector + 1;
            }
            for &i in &run {
                st.entries[i as usize].wb = true;
                let t = st.entries[i as usize].lru;
                st.lru.remove(&t);
                st.writeback_size += 1;
            }
            taken += run.len();
            runs.push(run);
        }
    }

    /// The `flush` message and flush_on_suspend: commit, then write everything back.
    pub fn writeback_all(self: &Arc<Self>) -> bool {
        if !self.flush() {
            return false;
        }
        self.st.lock().writeback_all += 1;
        self.drain_all();
        let mut st = self.st.lock();
        st.writeback_all -= 1;
        !st.error
    }

    /// Rounds in writeback_all mode, each waited for (copies ended, blocks freed), until
    /// nothing is left; copies started before are waited for first, so no entry is skipped
    /// for a duplicate still in writeback.
    fn drain_all(self: &Arc<Self>) {
        self.wait_writeback_idle();
        loop {
            let more = self.writeback_round();
            self.wait_writeback_idle();
            if !more {
                return;
            }
        }
    }

    /// `writecache_resume`: read the metadata and rebuild the state from it.
    pub fn load(self: &Arc<Self>) {
        let bytes = (self.cfg.metadata_sectors * 512) as usize;
        let r = udm_io::sync::read_at(&*self.cache, Sectors(self.cfg.start_sector), bytes);
        let changed = {
            let mut st = self.st.lock();
            let image = match r {
                Ok(b) => b.into_vec(),
                Err(e) => {
                    let msg = format!("unable to read metadata: {}", -e.errno());
                    self.fail(&mut st, &msg);
                    let mut m = st.meta.clone();
                    m[64..].fill(0xff);
                    m
                }
            };
            let (changed, identical) = st.load(image, self.cfg.bs);
            for (b, s, q) in identical {
                self.fail(
                    &mut st,
                    &format!("two identical entries, position {b}, sector {s}, sequence {q}"),
                );
            }
            if changed {
                let regions = (st.meta.len() as u64).div_ceil(REGION_BYTES);
                for r in 0..regions {
                    st.dirty.mark(r);
                }
            }
            st.suspended = false;
            changed
        };
        if changed {
            self.persist();
        }
        let mut st = self.st.lock();
        self.verify_watermark(&mut st);
        if let Some(a) = self.cfg.max_age {
            self.timers.lock().max_age = Some(Instant::now() + a / super::MAX_AGE_DIV);
            self.timer_cv.notify_all();
        }
    }

    /// `writecache_suspend` (postsuspend).
    pub fn suspend(self: &Arc<Self>) {
        {
            let mut t = self.timers.lock();
            t.autocommit = None;
            t.max_age = None;
            t.writeback = None;
        }
        self.flush();
        let fos = std::mem::take(&mut self.st.lock().flush_on_suspend);
        if fos {
            self.st.lock().writeback_all += 1;
            self.drain_all();
            self.st.lock().writeback_all -= 1;
        }
        self.wait_writeback_idle();
        self.st.lock().suspended = true;
    }
}

/// The timer thread: autocommit, the max_age tick and the pause_writeback retry. It ends
/// when `Timers::stop` is set (the table is dropped).
pub fn start_timers(core: &Arc<Core>) {
    let weak = Arc::downgrade(core);
    let spawned = std::thread::Builder::new()
        .name("writecache-timer".into())
        .spawn(move || loop {
            let Some(c) = weak.upgrade() else { return };
            let mut t = c.timers.lock();
            if t.stop {
                return;
            }
            let now = Instant::now();
            let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
            if due(t.autocommit) {
                t.autocommit = None;
                let me = c.clone();
                c.worker.spawn(move || {
                    if !me.st.lock().error {
                        me.flush();
                    }
                });
            }
            if due(t.max_age) {
                let a = c.cfg.max_age.expect("max_age set");
                t.max_age = Some(now + a / super::MAX_AGE_DIV);
                drop(t);
                let mut st = c.st.lock();
                if !st.suspended && !st.error {
                    c.queue_writeback(&mut st);
                }
                drop(st);
                t = c.timers.lock();
            }
            if due(t.writeback) {
                t.writeback = None;
                drop(t);
                let mut st = c.st.lock();
                c.queue_writeback(&mut st);
                drop(st);
                t = c.timers.lock();
            }
            let next = [t.autocommit, t.max_age, t.writeback]
                .into_iter()
                .flatten()
                .min()
                .map_or(Duration::from_secs(1), |d| {
                    d.saturating_duration_since(Instant::now())
                });
            c.timer_cv
                .wait_for(&mut t, next.min(Duration::from_secs(1)));
        });
    if let Err(e) = spawned {
        tracing::error!("writecache: no timer thread: {e}");
    }
}
