//! The journal at run time, as the kernel keeps it: writes are copied into the in-memory
//! journal (and complete), a commit pads the open section, stamps commit ids and writes the
//! sections with FUA; the writer copies committed sections to their places; replay after an
//! unclean stop copies what the on-disk journal committed.

use super::core::{Inner, State};
use udm_formats::integrity::journal::{
    self as jf, commit_id_in, next_seq, prev_seq, JOURNAL_BLOCK_SECTORS, JOURNAL_MAC_PER_SECTOR,
};
use udm_io::{sync, IoError, Sectors};

impl Inner {
    /// Write sections `[start, start+n)` (ring order) with their MACs, FUA.
    pub(crate) fn write_journal(&self, st: &mut State, start: u32, n: u32) {
        let g = self.geo.journal;
        let mut i = start;
        let mut left = n;
        while left > 0 {
            let run = left.min(g.sections - i);
            for s in i..i + run {
                if self.jmac.is_some() {
                    let mac = self.section_mac(&st.journal, s);
                    for k in 0..JOURNAL_BLOCK_SECTORS as u32 {
                        let o = g.sector_off(s, k) + 504 - JOURNAL_MAC_PER_SECTOR;
                        let m = k as usize * JOURNAL_MAC_PER_SECTOR;
                        st.journal[o..o + JOURNAL_MAC_PER_SECTOR]
                            .copy_from_slice(&mac[m..m + JOURNAL_MAC_PER_SECTOR]);
                    }
                }
            }
            self.rw_journal_sections(st, true, i, run);
            left -= run;
            i = (i + run) % g.sections;
        }
    }

    /// Read or write journal sectors `[first, first+n)` (FUA for writes); an error fails the
    /// device. Nothing happens once the device has failed.
    pub(crate) fn rw_journal_sectors(&self, st: &mut State, write: bool, first: u64, n: u64) {
        if self.failed().is_some() {
            return;
        }
        let at = Sectors(self.geo.journal_start() + first);
        let r = (first * 512) as usize..((first + n) * 512) as usize;
        let res = if write {
            sync::write_fua_at(self.meta_dev(), at, &st.journal[r])
        } else {
            sync::read_at(self.meta_dev(), at, r.len())
                .map(|b| st.journal[r].copy_from_slice(b.as_slice()))
        };
        if res.is_err() {
            let what = if write {
                "writing journal"
            } else {
                "reading journal"
            };
            self.io_error(what, libc::EIO);
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
        let bb = self.block_bytes();
        let blocks = (data.len() / bb).min(st.free_sectors as usize);
        let mut tag = vec![0u8; self.tag_size];
        for b in 0..blocks {
            let (sec, n) = (st.free_section, st.free_section_entry);
            let blk = &data[b * bb..(b + 1) * bb];
            let ls = s + b as u64 * self.spb();
            match tags {
                Some(t) => tag.copy_from_slice(&t[b * self.tag_size..(b + 1) * self.tag_size]),
                None => self.compute_tags(ls, blk, &mut tag),
            }
            g.put_block(&mut st.journal, sec, n, ls, blk, &tag);
            st.latest.insert(ls, sec * g.section_entries + n);
            st.free_sectors -= 1;
            st.free_section_entry += 1;
            if st.free_section_entry == g.section_entries {
                st.free_section_entry = 0;
                st.free_section = (st.free_section + 1) % g.sections;
                st.n_uncommitted += 1;
            }
        }
        blocks * bb
    }

    /// The newest journal copy of block `s`, if the journal has one.
    pub(crate) fn journal_get(&self, st: &State, s: u64, out: &mut [u8]) -> bool {
        let Some(&pos) = st.latest.get(&s) else {
            return false;
        };
        let g = self.geo.journal;
        g.get_block(
            &st.journal,
            pos / g.section_entries,
            pos % g.section_entries,
            out,
        );
        true
    }

    /// The kernel's `integrity_commit` for J mode.
    pub(crate) fn commit(&self, st: &mut State) {
        st.commit_deadline = None;
        let g = self.geo.journal;
        if st.free_section_entry != 0 {
            st.free_sectors -= g.section_entries - st.free_section_entry;
            st.free_section_entry = 0;
            st.free_section = (st.free_section + 1) % g.sections;
            st.n_uncommitted += 1;
        }
        let (start, n) = (st.uncommitted_section, st.n_uncommitted);
        if n == 0 {
            return;
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
        self.write_journal(st, start, n);
        st.uncommitted_section = (start + n) % g.sections;
        st.n_uncommitted = 0;
        st.n_committed += n;
    }

    /// Commit, then run the writer when the journal is past its watermark.
    pub(crate) fn commit_and_maybe_write(&self, st: &mut State) {
        self.commit(st);
        if st.free_sectors <= self.threshold {
            self.writer(st);
        }
    }

    /// The kernel's `integrity_writer`: copy every committed section home and free it.
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
    /// `do_journal_write`); from replay, entries are validated first. The entries to copy
    /// are sorted by sector (the newest copy of a sector wins, as written in ring order) and
    /// go home in runs: one data write and one tag write per run within an area.
    pub(crate) fn do_journal_write(&self, st: &mut State, start: u32, n: u32, from_replay: bool) {
        let g = self.geo.journal;
        let bb = self.block_bytes();
        let mut block = vec![0u8; bb];
        let salt = self.salt();
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
                        Some(&q) if q == pos => {
                            st.latest.remove(&sec);
                        }
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
        if self.failed().is_none() {
            self.copy_home(st, &mut todo);
        }
        if self.flush_all().is_err() {
            self.io_error("flushing disk cache", libc::EIO);
        }
    }

    /// Write journal entries `(sector, order, section, entry)` to their places in runs of
    /// consecutive blocks; the latest (highest order) entry of a sector wins.
    fn copy_home(&self, st: &State, todo: &mut [(u64, u32, u32, u32)]) {
        let g = self.geo.journal;
        let (bb, ts, spb) = (self.block_bytes(), self.tag_size, self.spb());
        todo.sort_unstable_by_key(|&(s, o, _, _)| (s, o));
        let mut data: Vec<u8> = Vec::new();
        let mut tags: Vec<u8> = Vec::new();
        let mut k = 0;
        while k < todo.len() {
            let first = todo[k].0;
            let room = self.geo.run_len(first) / spb;
            data.clear();
            tags.clear();
            let mut next = first;
            let mut blocks = 0u64;
            while k < todo.len() && todo[k].0 == next && blocks < room {
                // The last entry of this sector.
                while k + 1 < todo.len() && todo[k + 1].0 == next {
                    k += 1;
                }
                let (_, _, i, j) = todo[k];
                let o = data.len();
                data.resize(o + bb, 0);
                g.get_block(&st.journal, i, j, &mut data[o..]);
                tags.extend_from_slice(&g.entry_tag(&st.journal, i, j)[..ts]);
                blocks += 1;
                next += spb;
                k += 1;
            }
            if let Err(e) = self.write_direct(first, &data, Some(&tags)) {
                self.io_error("copying from journal", e.errno());
                return;
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
            self.rw_journal_sections(st, false, 0, g.sections);
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

    /// J-mode write of `data` at logical `s`: into the journal, committing and writing back
    /// when it fills; FUA commits before returning.
    pub(crate) fn journal_write(
        &self,
        st: &mut State,
        s: u64,
        data: &[u8],
        tags: Option<&[u8]>,
        fua: bool,
    ) -> Result<(), IoError> {
        let mut done = 0;
        while done < data.len() {
            if let Some(e) = self.failed() {
                return Err(e);
            }
            if st.free_sectors == 0 {
                self.commit(st);
                self.writer(st);
                if st.free_sectors == 0 {
                    return Err(IoError::Io);
                }
            }
            let t = tags.map(|t| &t[done / self.block_bytes() * self.tag_size..]);
            done += self.journal_put(st, s + (done / 512) as u64, &data[done..], t);
        }
        if fua || st.free_sectors <= self.threshold {
            self.commit_and_maybe_write(st);
        } else if st.commit_deadline.is_none() {
            st.commit_deadline = Some(
                std::time::Instant::now()
                    + std::time::Duration::from_millis(self.p.commit_time as u64),
            );
            self.wake.notify_all();
        }
        match self.failed() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
