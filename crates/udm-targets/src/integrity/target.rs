//! The running `integrity` target: `map` serves a bio with blocking I/O (journal, bitmap or
//! direct) on the submitting thread when that thread may block (an NBD request thread, see
//! `udm_io::with_blocking_submit`: no hop to a pool and back; J-mode writes excepted),
//! otherwise on the target's own pool; a large read with no other read in flight is split
//! across threads. Status and table lines as the kernel's; postsuspend/resume run the
//! kernel's journal and bitmap steps.

use super::core::{Inner, ReadFail};
use super::params::{round_to_jiffies_ms, Mode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;
use udm_core::{Escaped, MapResult, StatusFlags, StatusType, Target, TargetError};
use udm_formats::integrity::{
    BITMAP_BLOCK_SIZE, FLAG_DIRTY_BITMAP, FLAG_FIXED_HMAC, FLAG_FIXED_PADDING, FLAG_RECALCULATING,
    SB_SECTORS,
};
use udm_io::{sync, Bio, BioFlags, IoBuf, IoError, Limits, Op, Sectors, WorkerPool};

/// One `integrity` table line.
pub struct Integrity {
    pub(crate) inner: Arc<Inner>,
    pub(crate) pool: Arc<Workers>,
    /// The tag interface published for the layer above (no internal hash only).
    pub(crate) _publication: Option<(Arc<super::tags::TagDevice>, udm_core::Publication)>,
    /// The background threads, joined on drop: the device below is released when the
    /// table goes, as the kernel's destructor releases it (`dmsetup remove top bottom`).
    pub(crate) threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Integrity {
    fn drop(&mut self) {
        // Removing a live device suspends it first in the kernel (`__dm_destroy`).
        if self.inner.resumed.swap(false, Ordering::SeqCst) {
            self.inner.postsuspend();
        }
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.recalc_running.store(false, Ordering::SeqCst);
        {
            let _g = self.inner.st.lock();
            self.inner.wake.notify_all();
            self.inner.wb_wake.notify_all();
        }
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            // A table dropped by one of its own threads (its last I/O's completion) cannot
            // wait for itself; that thread ends when it returns to its loop.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

/// The background threads: one for the autocommit and bitmap-flush timers and the J-mode
/// commits once the journal is past its watermark, and in J mode one more that writes
/// committed sections home meanwhile (the kernel's commit and writer work queues). They are
/// the target's own threads and wait for their I/O anyway, so they are marked as ones that
/// may block (`udm_io::with_blocking_submit`): a file below writes their small pieces, and
/// flushes, right there instead of a hop to the I/O pool and back for each.
pub(crate) fn spawn_timer(inner: &Arc<Inner>) -> Vec<std::thread::JoinHandle<()>> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let mut threads = vec![std::thread::Builder::new()
        .name("udm-integrity".into())
        .spawn(move || udm_io::with_blocking_submit(|| timer_loop(weak)))
        .expect("spawn integrity timer")];
    if inner.mode == Mode::Journal {
        let weak: Weak<Inner> = Arc::downgrade(inner);
        threads.push(
            std::thread::Builder::new()
                .name("udm-integrity-wb".into())
                .spawn(move || udm_io::with_blocking_submit(|| write_back_loop(weak)))
                .expect("spawn integrity write-back"),
        );
    }
    threads
}

/// The J-mode write-back thread: past the watermark, committed sections go home.
fn write_back_loop(weak: Weak<Inner>) {
    loop {
        let Some(me) = weak.upgrade() else { return };
        if me.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut st = me.st.lock();
        // Checked again under the lock the dropping table notifies under: no lost wake-up.
        if me.stop.load(Ordering::SeqCst) {
            return;
        }
        if st.n_committed > 0 && st.free_sectors <= me.threshold {
            drop(st);
            // Shared even while a suspend waits for the lock alone, as the commit thread.
            let _io = me.io_lock.read_recursive();
            me.write_back_cycle();
            continue;
        }
        me.wb_wake
            .wait_for(&mut st, std::time::Duration::from_secs(1));
    }
}

fn timer_loop(weak: Weak<Inner>) {
    loop {
        let Some(me) = weak.upgrade() else { return };
        if me.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut st = me.st.lock();
        if me.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let commit_due = st.commit_deadline.is_some_and(|t| t <= now);
        let pressed = me.mode == Mode::Journal
            && me.failed().is_none()
            && (std::mem::take(&mut st.kick) || me.commit_batch_ready(&st));
        if commit_due || pressed {
            if commit_due {
                st.commit_deadline = None;
            }
            drop(st);
            // Shared, and taken even while a suspend waits for the lock alone: writers
            // that hold it shared may be waiting for this cycle's room.
            let _io = me.io_lock.read_recursive();
            if me.mode == Mode::Journal {
                // Early commits (full sections) leave the open section open; the commit
                // interval commits everything, as the kernel's.
                me.commit_cycle(commit_due);
            }
            continue;
        }
        if st.bitmap_deadline.is_some_and(|t| t <= now) {
            drop(st);
            let _io = me.io_lock.write();
            let mut st = me.st.lock();
            if st.bitmap_deadline.is_some_and(|t| t <= Instant::now()) {
                me.bitmap_flush(&mut st);
            }
            continue;
        }
        let next = [st.commit_deadline, st.bitmap_deadline]
            .into_iter()
            .flatten()
            .min();
        let w = &me.wake;
        match next {
            Some(t) => {
                w.wait_until(&mut st, t);
            }
            None => {
                w.wait_for(&mut st, std::time::Duration::from_secs(1));
            }
        }
    }
}

impl Inner {
    fn do_flush(&self) -> Result<(), IoError> {
        let _io = self.io_lock.read();
        if self.mode == Mode::Journal {
            self.commit_sync();
        } else if self.flush_all().is_err() {
            self.io_error("flushing disk cache", libc::EIO);
        }
        self.failed().map_or(Ok(()), Err)
    }

    /// Read `out` at `s`: blocks the journal holds come from it, the rest from their places
    /// (checked). A block leaves the journal's index only after its home write, so a block
    /// not found there is at home.
    pub(crate) fn read_blocks(
        &self,
        s: u64,
        out: &mut [u8],
        mut tags: Option<&mut [u8]>,
    ) -> Result<(), ReadFail> {
        let (bb, ts, spb) = (self.block_bytes(), self.tag_size, self.spb());
        let blocks = out.len() / bb;
        // Not J mode, or a journal whose index is empty (all written home): all at home.
        if self.mode != Mode::Journal || self.st.lock().latest.is_empty() {
            return self.read_checked(s, out, tags);
        }
        let mut runs = Vec::new();
        {
            let st = self.st.lock();
            let g = self.geo.journal;
            let mut b = 0;
            while b < blocks {
                if let Some(&pos) = st.latest.get(&(s + b as u64 * spb)) {
                    let (js, je) = (pos / g.section_entries, pos % g.section_entries);
                    g.get_block(&st.journal, js, je, &mut out[b * bb..(b + 1) * bb]);
                    if let Some(t) = tags.as_deref_mut() {
                        t[b * ts..(b + 1) * ts].copy_from_slice(g.entry_tag(&st.journal, js, je));
                    }
                    b += 1;
                    continue;
                }
                let mut e = b + 1;
                while e < blocks && !st.latest.contains_key(&(s + e as u64 * spb)) {
                    e += 1;
                }
                runs.push((b, e));
                b = e;
            }
        }
        for (b, e) in runs {
            let t = tags.as_deref_mut().map(|t| &mut t[b * ts..e * ts]);
            self.read_checked(s + b as u64 * spb, &mut out[b * bb..e * bb], t)?;
        }
        Ok(())
    }

    /// Read `buf` at `s`. Long enough and with no other read in flight, it is cut into one
    /// piece per core: this thread reads the first, `w`'s threads the others (they run
    /// under this thread's hold of the I/O lock, which it keeps until all are back); a
    /// mismatch in any piece counts once for the request.
    fn do_read(
        self: &Arc<Self>,
        w: &Arc<Workers>,
        s: u64,
        mut buf: IoBuf,
    ) -> (IoBuf, Result<(), IoError>) {
        let _io = self.io_lock.read();
        if let Some(e) = self.failed() {
            return (buf, Err(e));
        }
        let _reading = Reading::enter(w);
        let bb = self.block_bytes();
        let n = if _reading.alone {
            (buf.len() / SPLIT_MIN).min(crate::pieces::cpus())
        } else {
            1
        };
        if n < 2 {
            let r = self.read_blocks(s, buf.as_mut_slice(), None);
            return (buf, self.report(r));
        }
        let per = buf.len().div_ceil(n).div_ceil(bb) * bb;
        let mut pieces = crate::pieces::cut(buf, per).into_iter();
        let mut first = pieces.next().unwrap_or_default();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut k = 0;
        for (i, mut p) in pieces.enumerate() {
            let (me, tx) = (self.clone(), tx.clone());
            let ps = s + ((i + 1) * per / 512) as u64;
            w.pool.spawn(move || {
                let r = me.read_blocks(ps, p.as_mut_slice(), None);
                let _ = tx.send((i + 1, p, r));
            });
            k += 1;
        }
        drop(tx);
        let r0 = self.read_blocks(s, first.as_mut_slice(), None);
        let mut back: Vec<Option<(IoBuf, Result<(), ReadFail>)>> = (0..k).map(|_| None).collect();
        for _ in 0..k {
            match rx.recv() {
                Ok((i, p, r)) => back[i - 1] = Some((p, r)),
                // A piece's job died (a panic): its buffer is gone with it.
                Err(_) => return (IoBuf::empty(), Err(IoError::Io)),
            }
        }
        let mut res = r0;
        for piece in back {
            let Some((p, r)) = piece else {
                return (IoBuf::empty(), Err(IoError::Io));
            };
            first.unsplit(p);
            res = res.and(r);
        }
        (first, self.report(res))
    }

    /// Write `buf` at `s`; the buffer comes back (B and D modes send it down itself).
    fn do_write(&self, s: u64, buf: IoBuf, fua: bool) -> (IoBuf, Result<(), IoError>) {
        let _io = self.io_lock.read();
        if let Some(e) = self.failed() {
            return (buf, Err(e));
        }
        if self.mode == Mode::Journal {
            let r = self.journal_write(s, &buf, None, fua);
            return (buf, r);
        }
        if self.mode == Mode::Bitmap {
            let mut st = self.st.lock();
            self.bitmap_mark(&mut st, s, (buf.len() / 512) as u64);
        }
        let (buf, r) = self.write_direct_buf(s, buf, None);
        let r = r.and_then(|_| if fua { self.flush_all() } else { Ok(()) });
        (buf, r.and_then(|_| self.failed().map_or(Ok(()), Err)))
    }

    fn do_discard(&self, s: u64, n: u64) -> Result<(), IoError> {
        let _io = self.io_lock.write();
        let mut st = self.st.lock();
        match self.mode {
            Mode::Journal => {
                let spb = self.spb();
                if (0..n / spb).any(|b| st.latest.contains_key(&(s + b * spb))) {
                    self.commit(&mut st);
                    self.writer(&mut st);
                }
            }
            Mode::Bitmap => self.bitmap_mark(&mut st, s, n),
            _ => {}
        }
        drop(st);
        self.discard_direct(s, n)?;
        self.failed().map_or(Ok(()), Err)
    }

    /// The kernel's `dm_integrity_postsuspend`.
    pub(crate) fn postsuspend(&self) {
        self.recalc_running.store(false, Ordering::SeqCst);
        let _io = self.io_lock.write();
        let mut st = self.st.lock();
        st.commit_deadline = None;
        st.bitmap_deadline = None;
        st.kick = false;
        let g = self.geo.journal;
        match self.mode {
            Mode::Journal => {
                self.commit(&mut st);
                self.writer(&mut st);
                if self.flush_all().is_err() {
                    self.io_error("flushing disk cache", libc::EIO);
                }
                if st.wrote_to_journal {
                    let (fs, seq) = (st.free_section, st.commit_seq);
                    self.init_journal(&mut st, fs, g.sections - fs, seq);
                    if fs != 0 {
                        self.init_journal(
                            &mut st,
                            0,
                            fs,
                            udm_formats::integrity::journal::next_seq(seq),
                        );
                    }
                }
            }
            Mode::Bitmap => {
                if self.flush_all().is_err() {
                    self.io_error("flushing disk cache", libc::EIO);
                }
                self.init_journal(&mut st, 0, g.sections, 0);
                self.sb.lock().0.flags &= !FLAG_DIRTY_BITMAP;
                if self.write_sb().is_err() {
                    self.io_error("writing superblock", libc::EIO);
                }
            }
            Mode::Direct => {
                if self.flush_all().is_err() {
                    self.io_error("flushing disk cache", libc::EIO);
                }
            }
            Mode::Recovery => {}
        }
        st.journal_uptodate = true;
    }

    fn write_bitmap(&self, st: &mut super::core::State) {
        self.rw_journal_sectors(
            st,
            true,
            0,
            self.n_bitmap_blocks * (BITMAP_BLOCK_SIZE / 512),
        );
    }

    /// The kernel's `dm_integrity_resume`.
    pub(crate) fn resume(self: &Arc<Inner>) {
        let _io = self.io_lock.write();
        // The device may have been changed while suspended.
        self.tag_cache.clear();
        let mut st = self.st.lock();
        st.wrote_to_journal = false;
        let provided = self.geo.provided_data_sectors;
        let nb = (self.n_bitmap_blocks * BITMAP_BLOCK_SIZE) as usize;
        let set_all = |me: &Inner, bm: &mut Vec<u8>, from: u64, set: bool| {
            if from < provided {
                me.bitmap_op(bm, from, provided - from, set);
            }
        };
        let old = self.sb.lock().0.provided_data_sectors;
        if self.mode != Mode::Recovery && provided != old {
            let l2 = self.sb.lock().0.log2_blocks_per_bitmap_bit;
            if provided > old && self.mode == Mode::Bitmap && l2 == self.log2_blocks_per_bit {
                self.rw_journal_sectors(&mut st, false, 0, nb as u64 / 512);
                let mut j = std::mem::take(&mut st.journal);
                set_all(self, &mut j, old, true);
                st.journal = j;
                self.write_bitmap(&mut st);
            }
            self.sb.lock().0.provided_data_sectors = provided;
            if self.write_sb().is_err() {
                self.io_error("writing superblock", libc::EIO);
            }
        }
        let dirty = self.sb.lock().0.has(FLAG_DIRTY_BITMAP);
        let reset = self.p.reset_recalculate;
        let mark_recalc = |me: &Inner| {
            let mut sb = me.sb.lock();
            sb.0.flags |= FLAG_RECALCULATING;
            sb.0.recalc_sector = 0;
        };
        if self.mode == Mode::Recovery {
            // R mode: no journal, no bitmap, nothing written.
        } else if dirty {
            self.rw_journal_sectors(&mut st, false, 0, nb as u64 / 512);
            let same = self.sb.lock().0.log2_blocks_per_bitmap_bit == self.log2_blocks_per_bit;
            if self.mode == Mode::Bitmap {
                if same && !reset {
                    st.recalc_bitmap = st.journal[..nb].to_vec();
                    st.may_write = st.journal[..nb].to_vec();
                    if !self.bitmap_all(&st.journal[..nb], 0, provided, false) {
                        mark_recalc(self);
                    }
                } else {
                    self.sb.lock().0.log2_blocks_per_bitmap_bit = self.log2_blocks_per_bit;
                    let mut rb = std::mem::take(&mut st.recalc_bitmap);
                    set_all(self, &mut rb, 0, true);
                    st.recalc_bitmap = rb;
                    let mut mw = std::mem::take(&mut st.may_write);
                    set_all(self, &mut mw, 0, true);
                    st.may_write = mw;
                    let mut j = std::mem::take(&mut st.journal);
                    set_all(self, &mut j, 0, true);
                    st.journal = j;
                    self.write_bitmap(&mut st);
                    mark_recalc(self);
                }
            } else {
                if !(same && self.bitmap_all(&st.journal[..nb], 0, provided, false)) || reset {
                    mark_recalc(self);
                }
                let g = self.geo.journal;
                self.init_journal(&mut st, 0, g.sections, 0);
                self.replay_journal(&mut st);
                self.sb.lock().0.flags &= !FLAG_DIRTY_BITMAP;
            }
            if self.write_sb().is_err() {
                self.io_error("writing superblock", libc::EIO);
            }
        } else {
            self.replay_journal(&mut st);
            if reset {
                mark_recalc(self);
            }
            if self.mode == Mode::Bitmap {
                {
                    let mut sb = self.sb.lock();
                    sb.0.flags |= FLAG_DIRTY_BITMAP;
                    sb.0.log2_blocks_per_bitmap_bit = self.log2_blocks_per_bit;
                }
                if self.write_sb().is_err() {
                    self.io_error("writing superblock", libc::EIO);
                }
                let mut j = std::mem::take(&mut st.journal);
                set_all(self, &mut j, 0, false);
                let mut rb = std::mem::take(&mut st.recalc_bitmap);
                set_all(self, &mut rb, 0, false);
                let mut mw = std::mem::take(&mut st.may_write);
                set_all(self, &mut mw, 0, false);
                let sb = self.sb.lock().0.clone();
                if sb.has(FLAG_RECALCULATING) && sb.recalc_sector < provided {
                    set_all(self, &mut j, sb.recalc_sector, true);
                    set_all(self, &mut rb, sb.recalc_sector, true);
                    set_all(self, &mut mw, sb.recalc_sector, true);
                }
                st.journal = j;
                st.recalc_bitmap = rb;
                st.may_write = mw;
                self.write_bitmap(&mut st);
            }
        }
        st.just_formatted = false;
        drop(st);
        let sb = self.sb.lock().0.clone();
        if sb.has(FLAG_RECALCULATING) && self.mode != Mode::Recovery {
            if sb.recalc_sector < provided {
                if !self.recalc_running.swap(true, Ordering::SeqCst) {
                    let me = self.clone();
                    std::thread::Builder::new()
                        .name("udm-integrity-recalc".into())
                        .spawn(move || me.recalc_run())
                        .expect("spawn recalc");
                }
            } else if sb.recalc_sector > provided {
                self.sb.lock().0.recalc_sector = provided;
                if self.write_sb().is_err() {
                    self.io_error("writing superblock", libc::EIO);
                }
            }
        }
    }

    /// The status table line (`STATUSTYPE_TABLE`).
    pub(crate) fn table_line(&self) -> String {
        let sb = self.sb.lock().0.clone();
        let je = self.geo.journal.entries() as u64;
        let wm = ((je - (self.threshold as u64).min(je)) * 100 + je / 2)
            .checked_div(je)
            .unwrap_or(0);
        let mut opts: Vec<String> = Vec::new();
        if let Some(m) = &self.meta {
            opts.push(format!("meta_device:{}", Escaped(&m.id.to_string())));
        }
        if self.spb() != 1 {
            opts.push(format!("block_size:{}", self.spb() * 512));
        }
        if sb.has(FLAG_RECALCULATING) {
            opts.push("recalculate".into());
        }
        if self.p.reset_recalculate {
            opts.push("reset_recalculate".into());
        }
        if self.p.allow_discards {
            opts.push("allow_discards".into());
        }
        opts.push(format!(
            "journal_sectors:{}",
            self.geo.initial_sectors - SB_SECTORS
        ));
        opts.push(format!(
            "interleave_sectors:{}",
            1u64 << sb.log2_interleave_sectors
        ));
        opts.push(format!(
            "buffer_sectors:{}",
            1u64 << self.geo.log2_buffer_sectors
        ));
        if self.mode == Mode::Journal {
            opts.push(format!("journal_watermark:{wm}"));
            opts.push(format!("commit_time:{}", self.p.commit_time));
        }
        if self.mode == Mode::Bitmap {
            opts.push(format!(
                "sectors_per_bit:{}",
                self.spb() << self.log2_blocks_per_bit
            ));
            opts.push(format!("bitmap_flush_interval:{}", self.bitmap_flush_ms));
        }
        if sb.has(FLAG_FIXED_PADDING) {
            opts.push("fix_padding".into());
        }
        if sb.has(FLAG_FIXED_HMAC) {
            opts.push("fix_hmac".into());
        }
        if self.p.legacy_recalculate {
            opts.push("legacy_recalculate".into());
        }
        for (n, a) in [
            ("internal_hash", &self.p.internal_hash),
            ("journal_crypt", &self.p.journal_crypt),
            ("journal_mac", &self.p.journal_mac),
        ] {
            if let Some(a) = a {
                opts.push(format!("{n}:{a}"));
            }
        }
        format!(
            "{} {} {} {} {}{}{}",
            Escaped(&self.data.id.to_string()),
            self.geo.start,
            self.tag_size,
            self.mode.letter(),
            opts.len(),
            if opts.is_empty() { "" } else { " " },
            opts.join(" ")
        )
    }
}

/// Reads at least twice this long are split across threads (one piece per core, none
/// shorter than this) when no other read of the target is in flight.
const SPLIT_MIN: usize = 256 << 10;

/// Threads serving one target's bios when the submitter may not block, and pieces of large
/// reads. Not the shared I/O pool: these jobs block on I/O of the devices below, which may
/// itself need the shared pool.
pub(crate) struct Workers {
    pool: WorkerPool,
    /// Reads in flight (a read alone may be split).
    reads: AtomicUsize,
}

pub(crate) fn pool() -> Arc<Workers> {
    Arc::new(Workers {
        pool: WorkerPool::new("udm-integrity", 4),
        reads: AtomicUsize::new(0),
    })
}

/// One read in flight, counted in `Workers::reads` until dropped.
struct Reading<'a> {
    w: &'a Workers,
    alone: bool,
}

impl<'a> Reading<'a> {
    fn enter(w: &'a Workers) -> Reading<'a> {
        let alone = w.reads.fetch_add(1, Ordering::SeqCst) == 0;
        Reading { w, alone }
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.w.reads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serve `bio`: here when this thread may block, else on the target's pool. J-mode writes
/// always go to the pool: served on NBD request threads they measured 2.4x the daemon CPU
/// per GiB for 1 MiB writes (7.1-7.2 against 3.0 CPU-s/GiB) and a quarter of the rate.
fn exec(w: &Arc<Workers>, inner: &Arc<Inner>, bio: Bio) {
    if udm_io::blocking_submit_allowed() && !(inner.mode == Mode::Journal && bio.op == Op::Write) {
        return serve(w, inner, bio);
    }
    let (me, w2) = (inner.clone(), w.clone());
    w.pool.spawn(move || serve(&w2, &me, bio));
}

fn serve(w: &Arc<Workers>, me: &Arc<Inner>, mut bio: Bio) {
    {
        let s = bio.sector.0;
        let r = match bio.op {
            Op::Flush => me.do_flush(),
            Op::Read => {
                let (buf, r) = me.do_read(w, s, bio.take_buf());
                bio.set_buf(buf);
                r
            }
            Op::Write => {
                let pre = if bio.flags.contains(BioFlags::PREFLUSH) {
                    me.do_flush()
                } else {
                    Ok(())
                };
                let buf = bio.take_buf();
                let (buf, r) = match pre {
                    Ok(()) => me.do_write(s, buf, bio.flags.contains(BioFlags::FUA)),
                    Err(e) => (buf, Err(e)),
                };
                bio.set_buf(buf);
                r
            }
            Op::Discard => me.do_discard(s, bio.len().0),
            _ => Err(IoError::NotSupported),
        };
        bio.complete(r);
    }
}

impl Target for Integrity {
    fn map(&self, bio: Bio) -> MapResult {
        let inner = &self.inner;
        match bio.op {
            Op::Flush => {
                exec(&self.pool, inner, bio);
                return MapResult::Submitted;
            }
            Op::Read | Op::Write | Op::Discard => {}
            _ => return MapResult::Kill(bio, IoError::NotSupported),
        }
        let (s, n) = (bio.sector.0, bio.len().0);
        if s + n > inner.geo.provided_data_sectors {
            udm_core::klog::err(
                "integrity",
                &format!(
                    "Too big sector number: 0x{s:x} + 0x{n:x} > 0x{:x}",
                    inner.geo.provided_data_sectors
                ),
            );
            return MapResult::Kill(bio, IoError::Io);
        }
        let spb = inner.spb();
        if (s | n) & (spb - 1) != 0 {
            udm_core::klog::err(
                "integrity",
                &format!("Bio not aligned on {spb} sectors: 0x{s:x}, 0x{n:x}"),
            );
            return MapResult::Kill(bio, IoError::Io);
        }
        if inner.mode == Mode::Recovery && bio.op != Op::Read {
            return MapResult::Kill(bio, IoError::Io);
        }
        exec(&self.pool, inner, bio);
        MapResult::Submitted
    }

    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        let inner = &self.inner;
        match ty {
            StatusType::Info => {
                let sb = inner.sb.lock().0.clone();
                let rs = if sb.has(FLAG_RECALCULATING) {
                    sb.recalc_sector.to_string()
                } else {
                    "-".into()
                };
                format!(
                    "{} {} {rs}",
                    inner.mismatches.load(Ordering::Relaxed),
                    inner.geo.provided_data_sectors
                )
            }
            StatusType::Table => inner.table_line(),
        }
    }

    fn max_io_len(&self) -> Option<Sectors> {
        let inner = &self.inner;
        let mut m: Option<u64> = inner
            .meta
            .is_none()
            .then(|| 1u64 << inner.geo.log2_interleave);
        if inner.mode == Mode::Bitmap {
            let b = (inner.spb() << inner.log2_blocks_per_bit) * BITMAP_BLOCK_SIZE * 8;
            let b = if b == 0 || b > u32::MAX as u64 {
                1u64 << 31
            } else {
                b
            };
            m = Some(m.map_or(b, |x| x.min(b)));
        }
        m.map(Sectors)
    }

    fn num_discard_bios(&self) -> u32 {
        self.inner.p.allow_discards as u32
    }

    fn io_hints(&self, limits: &mut Limits) {
        let bs = (self.inner.spb() * 512) as u32;
        if bs > 512 {
            limits.logical_block_size = bs;
            limits.physical_block_size = bs;
            limits.io_min = bs;
        }
    }

    fn postsuspend(&self) {
        if self.inner.resumed.swap(false, Ordering::SeqCst) {
            self.inner.postsuspend();
        }
    }

    fn preresume(&self) -> Result<(), TargetError> {
        self.inner.resume();
        self.inner.resumed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Round a bitmap flush interval as the kernel stores it (jiffies at HZ=250).
pub(crate) fn flush_interval_ms(ms: Option<u32>) -> u32 {
    ms.map_or(10_000, round_to_jiffies_ms)
}

/// Read the superblock area (8 sectors) at `start` of `dev`.
pub(crate) fn read_sb_area(dev: &dyn udm_io::BlockDevice, start: u64) -> Result<Vec<u8>, IoError> {
    sync::read_at(dev, Sectors(start), (SB_SECTORS * 512) as usize).map(|b| b.into_vec())
}
