//! The journal at run time, as the kernel keeps it: writes are copied into the in-memory
//! journal (and complete), a commit pads the open section, stamps commit ids and writes the
//! sections with FUA; the writer copies committed sections to their places; replay after an
//! unclean stop copies what the on-disk journal committed.
//!
//! Locking: the target's state lock is held only to reserve journal entries, stamp and copy
//! out sections and update the ring; the I/O runs without it. As in the kernel, committing
//! and writing home run side by side on two background threads: past the watermark (or at
//! the commit interval) the commit thread runs `commit_cycle`s, each writing the open
//! sections to the journal and making them durable (the kernel's FUA commit: one flush); the
//! write-back thread runs `write_back_cycle`s, each copying the sections committed so far
//! to their places and flushing before they are reused. A section goes home only after its
//! commit is durable, and is reused only after its home copies are. A block stays readable
//! from the journal until its home copy is written.

use super::core::{Inner, State};
use udm_formats::integrity::journal::{
    self as jf, commit_id_in, next_seq, prev_seq, JOURNAL_BLOCK_SECTORS, JOURNAL_MAC_PER_SECTOR,
};
use udm_io::{sync, Bio, BioFlags, IoBuf, IoError, Sectors};

impl Inner {
    /// Put the journal MACs into sections `[start, start+n)` (ring order).
    fn seal_sections(&self, st: &mut State, start: u32, n: u32) {
        if self.jmac.is_none() {
            return;
        }
        let g = self.geo.journal;
        for k in 0..n {
            let s = (start + k) % g.sections;
            let mac = self.section_mac(&st.journal, s);
            for k in 0..JOURNAL_BLOCK_SECTORS as u32 {
                let o = g.sector_off(s, k) + 504 - JOURNAL_MAC_PER_SECTOR;
                let m = k as usize * JOURNAL_MAC_PER_SECTOR;
                st.journal[o..o + JOURNAL_MAC_PER_SECTOR]
                    .copy_from_slice(&mac[m..m + JOURNAL_MAC_PER_SECTOR]);
            }
        }
    }

    /// The contiguous pieces (first journal sector, sectors) of sections `[start, start+n)`.
    fn section_pieces(&self, start: u32, n: u32) -> Vec<(u64, u64)> {
        let g = self.geo.journal;
        let mut out = Vec::new();
        let (mut i, mut left) = (start, n);
        while left > 0 {
            let run = left.min(g.sections - i);
            out.push((
                g.sector_off(i, 0) as u64 / 512,
                run as u64 * g.section_sectors as u64,
            ));
            left -= run;
            i = (i + run) % g.sections;
        }
        out
    }

    /// Write sections `[start, start+n)` (ring order) with their MACs, FUA.
    pub(crate) fn write_journal(&self, st: &mut State, start: u32, n: u32) {
        self.seal_sections(st, start, n);
        for (first, len) in self.section_pieces(start, n) {
            let r = (first * 512) as usize..((first + len) * 512) as usize;
            self.sections_out(first, st.journal[r].to_vec(), true);
        }
    }

    /// Read or write journal sectors `[first, first+n)` (FUA for writes); an error fails the
    /// device. Nothing happens once the device has failed.
    pub(crate) fn rw_journal_sectors(&self, st: &mut State, write: bool, first: u64, n: u64) {
        let r = (first * 512) as usize..((first + n) * 512) as usize;
        if write {
            self.journal_out(first, st.journal[r].to_vec(), true);
            return;
        }
        if self.failed().is_some() {
            return;
        }
        let at = Sectors(self.geo.journal_start() + first);
        match sync::read_at(self.meta_dev(), at, r.len()) {
            Ok(b) => st.journal[r].copy_from_slice(b.as_slice()),
            Err(_) => self.io_error("reading journal", libc::EIO),
        }
    }

    /// Write whole journal sections held in `bytes` from journal sector `first` (a section's
    /// start), encrypted first when the journal is (`journal_crypt`).
    pub(crate) fn sections_out(&self, first: u64, bytes: Vec<u8>, fua: bool) {
        let mut io = Inflight::new();
        self.sections_submit(first, IoBuf::from_vec(bytes), fua, &mut io);
        self.journal_wait(io);
    }

    /// `sections_out` without waiting: the write completes into `io`.
    fn sections_submit(&self, first: u64, mut bytes: IoBuf, fua: bool, io: &mut Inflight) {
        if let Some(c) = &self.jcrypt {
            let section = first / self.geo.journal.section_sectors as u64;
            c.apply(section as u32, &mut bytes, true);
        }
        self.journal_submit(first, bytes, fua, io);
    }

    /// Write `bytes` at journal sector `first` (with FUA when `fua`); an error fails the
    /// device. Nothing happens once the device has failed.
    pub(crate) fn journal_out(&self, first: u64, bytes: Vec<u8>, fua: bool) {
        let mut io = Inflight::new();
        self.journal_submit(first, IoBuf::from_vec(bytes), fua, &mut io);
        self.journal_wait(io);
    }

    /// `journal_out` without waiting: the write completes into `io`.
    fn journal_submit(&self, first: u64, bytes: IoBuf, fua: bool, io: &mut Inflight) {
        if self.failed().is_some() {
            return;
        }
        let at = Sectors(self.geo.journal_start() + first);
        let flags = if fua { BioFlags::FUA } else { BioFlags::NONE };
        let bio = Bio::write(at, bytes, io.completion()).with_flags(flags);
        self.meta_dev().submit(bio);
    }

    /// Wait for journal writes; an error fails the device.
    fn journal_wait(&self, io: Inflight) {
        if io.wait().is_err() {
            self.io_error("writing journal", libc::EIO);
        }
    }

    /// The kernel's `init_journal`: wipe sections with `seq`'s commit ids and write them.
    pub(crate) fn init_journal(&self, st: &mut State, start: u32, n: u32, seq: usize) {
        if n == 0 {
            return;
        }
        let g = self.geo.journal;
        let ids = self.commit_ids();
        for k in 0..n {
            g.init_section_in(&mut st.journal, (start + k) % g.sections, seq, &ids);
        }
        self.write_journal(st, start, n);
    }

    /// Copy as many blocks of `data` (logical sector `s`) as fit into the journal; returns
    /// how many bytes were taken.
    pub(crate) fn journal_put(
        &self,
        st: &mut State,
        s: u64,
        data: &[u8],
        tags: Option<&[u8]>,
    ) -> usize {
        let g = self.geo.journal;
        let (bb, ts, spb) = (self.block_bytes(), self.tag_size, self.spb());
        let blocks = (data.len() / bb).min(st.free_sectors as usize);
        let computed;
        let tags = match tags {
            Some(t) => t,
            None => {
                let mut t = vec![0u8; blocks * ts];
                self.compute_tags(s, &data[..blocks * bb], &mut t);
                computed = t;
                &computed[..]
            }
        };
        let mut b = 0;
        while b < blocks {
            // As many as fit in the open section, in one go.
            let (sec, n) = (st.free_section, st.free_section_entry);
            let k = ((g.section_entries - n) as usize).min(blocks - b);
            let ls = s + b as u64 * spb;
            g.put_blocks(
                &mut st.journal,
                sec,
                n,
                ls,
                &data[b * bb..(b + k) * bb],
                &tags[b * ts..(b + k) * ts],
                k as u32,
            );
            let pos = sec * g.section_entries + n;
            for x in 0..k {
                st.latest.insert(ls + x as u64 * spb, pos + x as u32);
            }
            st.free_sectors -= k as u32;
            st.free_section_entry += k as u32;
            if st.free_section_entry == g.section_entries {
                st.free_section_entry = 0;
                st.free_section = (st.free_section + 1) % g.sections;
                st.n_uncommitted += 1;
            }
            b += k;
        }
        blocks * bb
    }

    /// The first half of the kernel's `integrity_commit`: pad the open section, stamp commit
    /// ids and MACs into the uncommitted sections and copy them out for writing. The caller
    /// adds them to the committed ones only once the write is durable.
    /// With `pad` false (the commit thread's early commits of full sections), the open
    /// section stays open and nothing else changes: the ring then stands where the
    /// kernel's, which commits only at the watermark, would stand.
    fn commit_begin(&self, st: &mut State, pad: bool) -> Option<Commit> {
        let g = self.geo.journal;
        if pad {
            st.commit_deadline = None;
        }
        if pad && st.free_section_entry != 0 {
            st.free_sectors -= g.section_entries - st.free_section_entry;
            st.free_section_entry = 0;
            st.free_section = (st.free_section + 1) % g.sections;
            st.n_uncommitted += 1;
        }
        let (start, n) = (st.uncommitted_section, st.n_uncommitted);
        if n == 0 {
            return None;
        }
        st.wrote_to_journal = true;
        let ids = self.commit_ids();
        let mut i = start;
        for _ in 0..n {
            for j in 0..g.section_sectors {
                let off = g.sector_off(i, j);
                let id = commit_id_in(&ids, st.commit_seq, i, j);
                jf::set_sector_commit_id(&mut st.journal, off, id);
            }
            i += 1;
            if i >= g.sections {
                st.commit_seq = next_seq(st.commit_seq);
                i = 0;
            }
        }
        self.seal_sections(st, start, n);
        let pieces = self
            .section_pieces(start, n)
            .into_iter()
            .map(|(first, len)| {
                let r = (first * 512) as usize..((first + len) * 512) as usize;
                let mut b = self.bufs.get(r.len());
                b.copy_from_slice(&st.journal[r]);
                (first, b)
            })
            .collect();
        st.uncommitted_section = (start + n) % g.sections;
        st.n_uncommitted = 0;
        Some(Commit { n, pieces })
    }

    /// Write a commit's sections (FUA when `fua`).
    fn commit_write(&self, c: &mut Commit, fua: bool) {
        let mut io = Inflight::new();
        self.commit_submit(c, fua, &mut io);
        if io.wait_into(&self.bufs).is_err() {
            self.io_error("writing journal", libc::EIO);
        }
    }

    /// `commit_write` without waiting: the writes complete into `io`.
    fn commit_submit(&self, c: &mut Commit, fua: bool, io: &mut Inflight) {
        for (first, bytes) in c.pieces.drain(..) {
            self.sections_submit(first, bytes, fua, io);
        }
    }

    /// The kernel's `integrity_commit` for J mode, all under the state lock (suspend and
    /// discards, with the I/O lock held alone).
    pub(crate) fn commit(&self, st: &mut State) {
        if let Some(mut c) = self.commit_begin(st, true) {
            self.commit_write(&mut c, true);
            st.n_committed += c.n;
        }
    }

    /// Commit what the journal holds, durably, without holding the state lock across the
    /// write (a flush or FUA request); past the watermark the background thread is woken.
    pub(crate) fn commit_sync(&self) {
        let _c = self.commit_lock.lock();
        let c = self.commit_begin(&mut self.st.lock(), true);
        let Some(mut c) = c else { return };
        self.commit_write(&mut c, true);
        let mut st = self.st.lock();
        st.n_committed += c.n;
        self.poke_write_back(&st);
    }

    /// Whether enough full sections wait for a commit for the commit thread to make one
    /// early: a quarter of the journal (a commit per few blocks would cost a flush each).
    /// Committed early, sections can go home as soon as the journal passes its watermark,
    /// instead of waiting there for their commit while writers run out of room. A flush or
    /// FUA request, or the commit interval, commits whatever there is (padding the open
    /// section, as the kernel).
    pub(crate) fn commit_batch_ready(&self, st: &State) -> bool {
        st.n_uncommitted > 0 && st.n_uncommitted >= (self.geo.journal.sections / 4).max(1)
    }

    /// Wake the write-back thread when the journal is past its watermark and holds
    /// committed sections (state lock held).
    pub(crate) fn poke_write_back(&self, st: &State) {
        if st.n_committed > 0 && st.free_sectors <= self.threshold {
            self.wb_wake.notify_all();
        }
    }

    /// One step of the commit thread (the kernel's `integrity_commit`): write the sections
    /// not yet committed (with `pad`, the open one too) to the journal, FUA; only then do
    /// they count as committed.
    pub(crate) fn commit_cycle(&self, pad: bool) {
        let _c = self.commit_lock.lock();
        let c = self.commit_begin(&mut self.st.lock(), pad);
        let Some(mut c) = c else { return };
        // FUA, as the kernel's `write_journal`: only the journal's own pages must be durable
        // before the sections go home. A flush here would also wait for every dirty page of
        // the device below (the home copies the write-back thread is writing meanwhile).
        self.commit_write(&mut c, true);
        let mut st = self.st.lock();
        st.n_committed += c.n;
        self.poke_write_back(&st);
    }

    /// One step of the write-back thread (the kernel's `integrity_writer`): copy the
    /// sections committed so far to their places and flush; only then are they free. Commits
    /// go on meanwhile (the commit thread only adds sections after these).
    pub(crate) fn write_back_cycle(&self) {
        let g = self.geo.journal;
        let (home, old) = {
            let mut st = self.st.lock();
            let old = (st.committed_section, st.n_committed);
            if old.1 == 0 {
                return;
            }
            (self.gather_home(&mut st, old.0, old.1, false), old)
        };
        if self.failed().is_none() {
            self.write_home(home.runs);
        }
        if self.flush_all().is_err() {
            self.io_error("flushing disk cache", libc::EIO);
        }
        let mut st = self.st.lock();
        self.forget(&mut st, &home.forget);
        st.committed_section = (old.0 + old.1) % g.sections;
        st.n_committed -= old.1;
        st.free_sectors += old.1 * g.section_entries;
        drop(st);
        self.room.notify_all();
    }

    /// The kernel's `integrity_writer`: copy every committed section home and free it
    /// (under the state lock: suspend and discards).
    pub(crate) fn writer(&self, st: &mut State) {
        let (start, n) = (st.committed_section, st.n_committed);
        if n == 0 {
            return;
        }
        self.do_journal_write(st, start, n, false);
        let g = self.geo.journal;
        st.committed_section = (start + n) % g.sections;
        st.n_committed -= n;
        st.free_sectors += n * g.section_entries;
    }

    fn is_committed(&self, st: &State, section: u32) -> bool {
        let g = self.geo.journal;
        let rel = (section + g.sections - st.committed_section) % g.sections;
        rel < st.n_committed
    }

    /// Copy entries of sections `[start, start+n)` to their places (the kernel's
    /// `do_journal_write`), all under the state lock; from replay, entries are validated
    /// first.
    pub(crate) fn do_journal_write(&self, st: &mut State, start: u32, n: u32, from_replay: bool) {
        let home = self.gather_home(st, start, n, from_replay);
        if self.failed().is_none() {
            self.write_home(home.runs);
        }
        if self.flush_all().is_err() {
            self.io_error("flushing disk cache", libc::EIO);
        }
        self.forget(st, &home.forget);
    }

    /// Collect what sections `[start, start+n)` send home: the entries are sorted by
    /// sector (the newest copy of a sector wins, as written in ring order) and copied out in
    /// runs, one data and one tag write per run within an area. Entries a newer committed
    /// one supersedes are dropped; the rest are marked unused in memory (only the sector
    /// word changes: data and tag stay readable). Blocks whose newest copy goes home stay in
    /// `latest` (readable from the journal) until `forget`, after their home write.
    fn gather_home(&self, st: &mut State, start: u32, n: u32, from_replay: bool) -> Home {
        let g = self.geo.journal;
        let bb = self.block_bytes();
        let mut block = vec![0u8; bb];
        let salt = self.salt();
        let mut home = Home::default();
        // (sector, ring order, section, entry) of every entry to copy.
        let mut todo: Vec<(u64, u32, u32, u32)> = Vec::new();
        for k in 0..n {
            let i = (start + k) % g.sections;
            if from_replay && self.jmac.is_some() {
                let mac = self.section_mac(&st.journal, i);
                for j in 0..JOURNAL_BLOCK_SECTORS as u32 {
                    let o = g.sector_off(i, j) + 504 - JOURNAL_MAC_PER_SECTOR;
                    let m = j as usize * JOURNAL_MAC_PER_SECTOR;
                    if st.journal[o..o + JOURNAL_MAC_PER_SECTOR]
                        != mac[m..m + JOURNAL_MAC_PER_SECTOR]
                    {
                        self.io_error("journal mac", libc::EILSEQ);
                    }
                }
            }
            for j in 0..g.section_entries {
                let e = g.entry_off(i, j);
                if jf::entry_is_unused(&st.journal, e) {
                    continue;
                }
                let mut sec = jf::entry_sector(&st.journal, e);
                if from_replay {
                    if sec & (self.spb() - 1) != 0 {
                        self.io_error("invalid sector in journal", libc::EIO);
                        sec &= !(self.spb() - 1);
                    }
                    if sec >= self.geo.provided_data_sectors {
                        jf::set_entry_unused(&mut st.journal, e);
                        continue;
                    }
                } else {
                    let pos = i * g.section_entries + j;
                    match st.latest.get(&sec) {
                        Some(&q) if q == pos => home.forget.push((sec, pos)),
                        Some(&q) if self.is_committed(st, q / g.section_entries) => {
                            jf::set_entry_unused(&mut st.journal, e);
                            continue;
                        }
                        _ => {}
                    }
                }
                if from_replay {
                    if let Some(h) = &self.hash {
                        g.get_block(&st.journal, i, j, &mut block);
                        let mut t = vec![0u8; self.tag_size];
                        h.tag_into(salt.as_ref(), sec, &block, &mut t);
                        if t != g.entry_tag(&st.journal, i, j) {
                            self.io_error("tag mismatch when replaying journal", libc::EILSEQ);
                        }
                    }
                }
                // The kernel's tag write of each entry fails with the device's error once
                // it has failed, and an EILSEQ counts again (`dm_integrity_rw_tag`).
                if self.failed.load(std::sync::atomic::Ordering::SeqCst) == libc::EILSEQ {
                    self.mismatches
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                // Only the sector word changes: data and tag stay readable below.
                jf::set_entry_unused(&mut st.journal, e);
                todo.push((sec, k * g.section_entries + j, i, j));
            }
        }
        home.runs = self.copy_home(st, &mut todo);
        home
    }

    /// Journal entries `(sector, order, section, entry)` as runs of consecutive blocks
    /// `(sector, data, tags)`; the latest (highest order) entry of a sector wins.
    fn copy_home(&self, st: &State, todo: &mut [(u64, u32, u32, u32)]) -> Vec<HomeRun> {
        let g = self.geo.journal;
        let (bb, ts, spb) = (self.block_bytes(), self.tag_size, self.spb());
        todo.sort_unstable_by_key(|&(s, o, _, _)| (s, o));
        let mut runs = Vec::new();
        // Consecutive entries of one section (section, first entry, count): their data is
        // contiguous in the journal and is copied out in one go.
        let mut groups: Vec<(u32, u32, u32)> = Vec::new();
        let mut k = 0;
        while k < todo.len() {
            let first = todo[k].0;
            let room = self.geo.run_len(first) / spb;
            let mut tags: Vec<u8> = Vec::new();
            let mut next = first;
            let mut blocks = 0u64;
            groups.clear();
            while k < todo.len() && todo[k].0 == next && blocks < room {
                // The last entry of this sector.
                while k + 1 < todo.len() && todo[k + 1].0 == next {
                    k += 1;
                }
                let (_, _, i, j) = todo[k];
                match groups.last_mut() {
                    Some((gi, gj, gc)) if *gi == i && *gj + *gc == j => *gc += 1,
                    _ => groups.push((i, j, 1)),
                }
                tags.extend_from_slice(&g.entry_tag(&st.journal, i, j)[..ts]);
                blocks += 1;
                next += spb;
                k += 1;
            }
            let mut data = self.bufs.get(blocks as usize * bb);
            let mut o = 0;
            for &(gi, gj, gc) in &groups {
                let len = gc as usize * bb;
                g.get_blocks(&st.journal, gi, gj, gc, &mut data[o..o + len]);
                o += len;
            }
            runs.push((first, data, tags));
        }
        runs
    }

    /// Write runs home (data and tags): every run's data write goes down at once while the
    /// tags go into the tag cache, each run's blocks held (in ascending order) until all are
    /// back; the first error fails the device.
    fn write_home(&self, runs: Vec<HomeRun>) {
        let mut io = Inflight::new();
        let mut held = Vec::with_capacity(runs.len());
        let mut res = Ok(());
        for (first, data, tags) in runs {
            let n = (data.len() / 512) as u64;
            let (ds, _) = self.geo.locate(first);
            held.push(self.ranges.lock(first, n));
            let bio = Bio::write(Sectors(ds), data, io.completion());
            self.data_dev().submit(bio);
            if res.is_ok() {
                res = self.write_tags(first, &tags);
            }
        }
        let res = io.wait_into(&self.bufs).and(res);
        drop(held);
        if let Err(e) = res {
            self.io_error("copying from journal", e.errno());
        }
    }

    /// After their home writes: blocks whose newest copy went home leave `latest`.
    fn forget(&self, st: &mut State, list: &[(u64, u32)]) {
        for (sec, pos) in list {
            if st.latest.get(sec) == Some(pos) {
                st.latest.remove(sec);
            }
        }
    }

    /// The kernel's `replay_journal`, run at resume.
    pub(crate) fn replay_journal(&self, st: &mut State) {
        if self.mode == super::params::Mode::Recovery || st.journal_uptodate {
            return;
        }
        let g = self.geo.journal;
        if !st.just_formatted {
            self.read_journal_sections(st, 0, g.sections);
        }
        let mut last_used = 0;
        let mut write_start = 0;
        let mut continue_at = None;
        if self.failed().is_none() {
            match g.plan_replay_in(&st.journal, &self.commit_ids()) {
                Ok(p) => {
                    last_used = p.last_used;
                    write_start = p.write_start;
                    if !p.empty {
                        self.do_journal_write(st, p.write_start, p.write_sections, true);
                    }
                    if p.write_sections == g.sections
                        && (self.mode == super::params::Mode::Journal || p.empty)
                    {
                        continue_at = Some((p.write_start, p.want_seq));
                    }
                }
                Err(jf::ReplayError::BadCommitId(..)) => {
                    self.io_error("journal commit id", libc::EIO)
                }
                Err(jf::ReplayError::AllSeqsUsed) => self.io_error("journal commit ids", libc::EIO),
            }
        }
        let cont = match continue_at {
            Some((s, seq)) => {
                st.commit_seq = seq;
                s
            }
            None => {
                let erase = prev_seq(prev_seq(last_used));
                let mut s = write_start;
                self.init_journal(st, s, 1, erase);
                s = (s + 1) % g.sections;
                if g.sections >= 2 {
                    self.init_journal(st, s, g.sections - 2, erase);
                    s = (s + g.sections - 2) % g.sections;
                    self.init_journal(st, s, 1, erase);
                }
                st.commit_seq = next_seq(erase);
                0
            }
        };
        st.committed_section = cont;
        st.n_committed = 0;
        st.uncommitted_section = cont;
        st.n_uncommitted = 0;
        st.free_section = cont;
        st.free_section_entry = 0;
        st.free_sectors = g.entries();
        st.latest.clear();
    }

    /// J-mode write of `data` at logical `s`: its tags computed first, then its blocks
    /// copied into the journal (waiting for room when it is full); past the watermark the
    /// background thread is woken; FUA commits before returning.
    pub(crate) fn journal_write(
        &self,
        s: u64,
        data: &[u8],
        tags: Option<&[u8]>,
        fua: bool,
    ) -> Result<(), IoError> {
        let bb = self.block_bytes();
        let computed;
        let tags = match tags {
            Some(t) => t,
            None => {
                let mut t = vec![0u8; data.len() / bb * self.tag_size];
                self.compute_tags(s, data, &mut t);
                computed = t;
                &computed[..]
            }
        };
        let mut done = 0;
        let mut st = self.st.lock();
        while done < data.len() {
            if let Some(e) = self.failed() {
                return Err(e);
            }
            if st.free_sectors == 0 {
                st.kick = true;
                self.wake.notify_all();
                self.poke_write_back(&st);
                self.room.wait(&mut st);
                continue;
            }
            let t = &tags[done / bb * self.tag_size..];
            done += self.journal_put(&mut st, s + (done / 512) as u64, &data[done..], Some(t));
        }
        // The commit thread commits once a batch is full (or at the commit interval); past
        // the watermark the write-back thread writes committed sections home.
        if st.commit_deadline.is_none() {
            st.commit_deadline = Some(
                std::time::Instant::now()
                    + std::time::Duration::from_millis(self.p.commit_time as u64),
            );
            self.wake.notify_all();
        } else if self.commit_batch_ready(&st) {
            self.wake.notify_all();
        }
        self.poke_write_back(&st);
        drop(st);
        if fua {
            self.commit_sync();
        }
        match self.failed() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A commit's sections as copied out: how many, and (first journal sector, bytes) pieces.
struct Commit {
    n: u32,
    pieces: Vec<(u64, IoBuf)>,
}

/// A run of consecutive blocks going home: (first sector, data, tags).
type HomeRun = (u64, IoBuf, Vec<u8>);

/// What a write-back sends home, and the `latest` entries to drop after it.
#[derive(Default)]
struct Home {
    runs: Vec<HomeRun>,
    forget: Vec<(u64, u32)>,
}

/// Writes submitted and not yet waited for: their completions (with their buffers) arrive
/// on one channel.
struct Inflight {
    tx: std::sync::mpsc::Sender<(Result<(), IoError>, IoBuf)>,
    rx: std::sync::mpsc::Receiver<(Result<(), IoError>, IoBuf)>,
    n: usize,
}

impl Inflight {
    fn new() -> Inflight {
        let (tx, rx) = std::sync::mpsc::channel();
        Inflight { tx, rx, n: 0 }
    }

    /// The completion of one more write.
    fn completion(&mut self) -> udm_io::Completion {
        self.n += 1;
        let tx = self.tx.clone();
        Box::new(move |r, b| {
            let _ = tx.send((r, b));
        })
    }

    /// Wait for every write; the first error, if any.
    fn wait(self) -> Result<(), IoError> {
        let mut res = Ok(());
        for _ in 0..self.n {
            let (r, _) = self.rx.recv().unwrap_or((Err(IoError::Io), IoBuf::empty()));
            res = res.and(r);
        }
        res
    }

    /// `wait`, giving the buffers back to `pool` (buffers taken from it).
    fn wait_into(self, pool: &udm_io::BufPool) -> Result<(), IoError> {
        let mut res = Ok(());
        for _ in 0..self.n {
            let (r, b) = self.rx.recv().unwrap_or((Err(IoError::Io), IoBuf::empty()));
            pool.put(b);
            res = res.and(r);
        }
        res
    }
}
