//! The shared state of one `integrity` target and its blocking building blocks: superblock
//! writes, tag reads and writes in the interleaved metadata, and checked reads/direct writes
//! of the data area. Everything here runs on a worker thread, never in `map`.

use super::params::{IntegrityParams, Mode};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use udm_core::DevHandle;
use udm_formats::integrity::journal::JOURNAL_MAC_SIZE;
use udm_formats::integrity::{
    Geometry, Superblock, TagHash, DISCARD_FILLER, FLAG_FIXED_HMAC, FLAG_RECALCULATING,
};
use udm_io::{sync, BlockDevice, IoBuf, IoError, Sectors};

pub(crate) const EILSEQ: IoError = IoError::Os(libc::EILSEQ);

/// Bytes of stored plus computed tags a checked read keeps on the stack (larger reads
/// allocate): both for a 64 KiB read of 512-byte blocks with 4-byte tags.
const TAGS_ON_STACK: usize = 1024;

/// Why a checked read failed: an I/O error, or a block (its first logical sector) whose tag
/// did not match. The request's top level turns the latter into EILSEQ, logging and
/// counting it once however many of the request's pieces failed (`Inner::report`), as the
/// kernel counts one mismatch per failing request.
#[derive(Debug)]
pub(crate) enum ReadFail {
    Io(IoError),
    Bad(u64),
}

impl From<IoError> for ReadFail {
    fn from(e: IoError) -> ReadFail {
        ReadFail::Io(e)
    }
}

/// Mutable state behind the target's lock: the in-memory journal (whose first blocks are the
/// bitmap in B mode), the journal ring pointers and the B-mode bitmaps.
pub(crate) struct State {
    pub journal: Vec<u8>,
    pub commit_seq: usize,
    pub committed_section: u32,
    pub n_committed: u32,
    pub uncommitted_section: u32,
    pub n_uncommitted: u32,
    pub free_section: u32,
    pub free_section_entry: u32,
    pub free_sectors: u32,
    /// Logical sector → position (section × entries + entry) of its newest journal entry.
    pub latest: HashMap<u64, u32, SectorHash>,
    pub wrote_to_journal: bool,
    pub journal_uptodate: bool,
    pub just_formatted: bool,
    pub recalc_bitmap: Vec<u8>,
    pub may_write: Vec<u8>,
    pub commit_deadline: Option<Instant>,
    pub bitmap_deadline: Option<Instant>,
    /// A writer waits for journal room: the commit thread commits what it can.
    pub kick: bool,
}

/// A cheap hash for sector numbers (multiply-shift; the keys are not attacker-chosen
/// beyond what the device's size allows, and the map is per target).
pub(crate) type SectorHash = std::hash::BuildHasherDefault<SectorHasher>;

#[derive(Default)]
pub(crate) struct SectorHasher(u64);

impl std::hash::Hasher for SectorHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// One integrity target's runtime.
pub struct Inner {
    pub(crate) p: IntegrityParams,
    pub(crate) geo: Geometry,
    pub(crate) mode: Mode,
    pub(crate) hash: Option<TagHash>,
    pub(crate) jmac: Option<TagHash>,
    /// `journal_crypt`: the on-disk journal is encrypted (see `jcrypt`).
    pub(crate) jcrypt: Option<super::jcrypt::JournalCrypt>,
    pub(crate) data: Arc<DevHandle>,
    pub(crate) meta: Option<Arc<DevHandle>>,
    /// The superblock area as on disk (4 KiB); fields are re-encoded into it when written.
    pub(crate) sb: Mutex<(Superblock, Vec<u8>)>,
    pub(crate) tag_size: usize,
    pub(crate) log2_blocks_per_bit: u8,
    pub(crate) n_bitmap_blocks: u64,
    pub(crate) threshold: u32,
    pub(crate) bitmap_flush_ms: u32,
    pub(crate) mismatches: AtomicU64,
    /// The errno the device failed with (0: healthy), as the kernel's `ic->failed`.
    pub(crate) failed: AtomicI32,
    pub(crate) st: Mutex<State>,
    /// Reads, writes and the background journal cycle share it (and run side by side);
    /// suspend, resume, discards, bitmap flushes and recalculation steps hold it alone.
    pub(crate) io_lock: RwLock<()>,
    /// Wakes the background thread (with `st`).
    pub(crate) wake: Condvar,
    /// Buffers of journal commits and home copies, reused (J mode).
    pub(crate) bufs: udm_io::BufPool,
    /// Wakes the J-mode write-back thread (with `st`).
    pub(crate) wb_wake: Condvar,
    /// Wakes J-mode writers waiting for journal room (with `st`).
    pub(crate) room: Condvar,
    /// Serializes journal commits (the background ones and those of flush and FUA
    /// requests) so sections go out in order.
    pub(crate) commit_lock: Mutex<()>,
    /// Blocks being read or written in place (data and tags).
    pub(crate) ranges: super::ranges::RangeLock,
    /// Held across a read-modify-write of tag sectors, and across a tag read that fills
    /// the cache, so the cache never holds a sector older than the device's.
    pub(crate) tag_lock: Mutex<()>,
    /// Tag-area sectors as on the device, and tags written but not yet down (write-back).
    pub(crate) tag_cache: super::tagcache::TagCache,
    pub(crate) stop: AtomicBool,
    pub(crate) recalc_running: AtomicBool,
    /// Resumed and not suspended since: a drop then stops it cleanly first.
    pub(crate) resumed: AtomicBool,
}

impl Inner {
    pub(crate) fn meta_dev(&self) -> &dyn BlockDevice {
        self.meta.as_ref().unwrap_or(&self.data).dev.as_ref()
    }
    pub(crate) fn data_dev(&self) -> &dyn BlockDevice {
        self.data.dev.as_ref()
    }
    pub(crate) fn spb(&self) -> u64 {
        self.geo.sectors_per_block()
    }
    pub(crate) fn block_bytes(&self) -> usize {
        (self.spb() * 512) as usize
    }

    /// The kernel's `dm_integrity_io_error`: count EILSEQ, remember the first failure.
    pub(crate) fn io_error(&self, msg: &str, errno: i32) {
        if errno == libc::EILSEQ {
            self.mismatches.fetch_add(1, Ordering::Relaxed);
        }
        if self
            .failed
            .compare_exchange(0, errno, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            udm_core::klog::err("integrity", &format!("Error on {msg}: -{errno}"));
        }
    }
    pub(crate) fn failed(&self) -> Option<IoError> {
        match self.failed.load(Ordering::SeqCst) {
            0 => None,
            e => Some(IoError::from_errno(e)),
        }
    }

    pub(crate) fn salt(&self) -> Option<[u8; 16]> {
        let sb = self.sb.lock();
        sb.0.has(FLAG_FIXED_HMAC).then_some(sb.0.salt)
    }

    /// Tags of `blocks` consecutive blocks starting at logical `sector` of `data`.
    pub(crate) fn compute_tags(&self, sector: u64, data: &[u8], out: &mut [u8]) {
        let Some(h) = &self.hash else {
            out.fill(0);
            return;
        };
        let salt = self.salt();
        let (bb, ts) = (self.block_bytes(), self.tag_size);
        h.tags_into(salt.as_ref(), sector, self.spb(), data, bb, out, ts);
    }

    /// Write the superblock (the kernel's `sync_rw_sb` write: version, then the MAC).
    pub(crate) fn write_sb(&self) -> Result<(), IoError> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let buf = {
            let mut g = self.sb.lock();
            let meta_dev = self.meta.is_some();
            g.0.version = g.0.version_for(self.mode == Mode::Bitmap, meta_dev);
            let enc = g.0.encode();
            g.1[..64].copy_from_slice(&enc[..64]);
            if let (Some(m), true) = (&self.jmac, g.0.has(FLAG_FIXED_HMAC)) {
                let n = m.digest_size();
                let d = m.digest(&[&g.1[..512 - n]]);
                g.1[512 - n..512].copy_from_slice(&d);
            }
            g.1.clone()
        };
        sync::write_fua_at(self.meta_dev(), Sectors(self.geo.start), &buf)
    }

    /// Read the tags of the blocks from logical `sector` (one area) into `out`, from the tag
    /// cache when it has them (no allocation then), else from the device into the cache.
    pub(crate) fn read_tags(&self, sector: u64, out: &mut [u8]) -> Result<(), IoError> {
        let (_, tb) = self.geo.locate(sector);
        if self.tag_cache.get_bytes(tb, out) {
            return Ok(());
        }
        let (first, end) = self.tag_window(sector, tb, tb + out.len() as u64);
        let mut buf = vec![0u8; ((end - first) * 512) as usize];
        {
            let _t = self.tag_lock.lock();
            self.tag_sectors(first, &mut buf)?;
        }
        let o = (tb - first * 512) as usize;
        out.copy_from_slice(&buf[o..o + out.len()]);
        Ok(())
    }

    /// The tag-area sectors `[first, end)` a cache miss reads for the tag bytes `[from,
    /// to)` of blocks from logical `sector` on: as the kernel reads metadata in buffers of
    /// `buffer_sectors` (its dm-bufio block size), the buffer-aligned sectors around them
    /// (aligned from the start of the area's tags), within that area's tag run — so the
    /// next reads nearby find their tags cached.
    fn tag_window(&self, sector: u64, from: u64, to: u64) -> (u64, u64) {
        let g = &self.geo;
        let l2 = g.log2_buffer_sectors;
        let (area, _) = g.area_offset(sector);
        let base = g.tag_byte(area, 0) >> 9;
        let run = if self.meta.is_some() {
            let blocks = g.provided_data_sectors / self.spb();
            (blocks * self.tag_size as u64).div_ceil(512 << l2) << l2
        } else {
            g.metadata_run
        };
        let (first, end) = (from / 512, to.div_ceil(512));
        let wf = base + (((first - base) >> l2) << l2);
        let we = (base + ((end - base).div_ceil(1 << l2) << l2))
            .min(base + run)
            .min(self.meta_dev().size().0);
        (wf.min(first), we.max(end))
    }

    /// Tag sectors from `first` into `buf`, from the cache or the device (tag lock held).
    fn tag_sectors(&self, first: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if !self.tag_cache.get(first, buf) {
            let b = sync::read_at(self.meta_dev(), Sectors(first), buf.len())?;
            buf.copy_from_slice(b.as_slice());
            self.tag_cache.put_read(first, buf);
        }
        Ok(())
    }

    /// Write tags of consecutive blocks from logical `sector` (one area) into the tag cache
    /// (the sectors they share with other blocks' tags come from it, or are read first);
    /// they reach the device with the next flush (`flush_all`), or when too many are dirty.
    pub(crate) fn write_tags(&self, sector: u64, tags: &[u8]) -> Result<(), IoError> {
        let (_, tb) = self.geo.locate(sector);
        let first = tb / 512;
        let end = (tb + tags.len() as u64).div_ceil(512);
        let o = (tb - first * 512) as usize;
        let _t = self.tag_lock.lock();
        let mut buf = vec![0u8; ((end - first) * 512) as usize];
        if o != 0 || !tags.len().is_multiple_of(512) {
            self.tag_sectors(first, &mut buf)?;
            if buf[o..o + tags.len()] == *tags {
                return Ok(());
            }
        }
        buf[o..o + tags.len()].copy_from_slice(tags);
        self.tag_cache.put_dirty(first, &buf);
        if self.tag_cache.dirty() > super::tagcache::DIRTY_MAX {
            self.write_dirty_tags_locked()?;
        }
        Ok(())
    }

    /// Write the dirty tag sectors down (in sorted runs); an error fails the device.
    pub(crate) fn write_dirty_tags(&self) -> Result<(), IoError> {
        let _t = self.tag_lock.lock();
        self.write_dirty_tags_locked()
    }

    fn write_dirty_tags_locked(&self) -> Result<(), IoError> {
        for (first, buf) in self.tag_cache.take_dirty() {
            if let Err(e) = sync::write_at(self.meta_dev(), Sectors(first), &buf) {
                self.tag_cache.clear();
                self.io_error("writing tags", libc::EIO);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether reads of `[s, s+n)` are checked (not R mode, a hash, not awaiting recalc).
    fn check_wanted(&self, s: u64, n: u64) -> bool {
        if self.mode == Mode::Recovery || self.hash.is_none() {
            return false;
        }
        {
            let sb = self.sb.lock();
            if sb.0.has(FLAG_RECALCULATING) && s + n > sb.0.recalc_sector {
                return false;
            }
        }
        if self.mode == Mode::Bitmap {
            let st = self.st.lock();
            if !self.bitmap_all(&st.recalc_bitmap, s, n, false) {
                return false;
            }
        }
        true
    }

    /// Read data-area sectors from `ds` into `out`: when they are a plain file range (a file
    /// backing, or linear over one) straight from the file into `out` on this thread (no
    /// bio, no buffer to copy out of, no hop to the I/O pool for large reads); otherwise
    /// with a bio.
    fn read_data(&self, ds: u64, out: &mut [u8]) -> Result<(), IoError> {
        let len = out.len();
        let got = {
            let mut reader = |f: &std::fs::File, off: u64| -> std::io::Result<usize> {
                use std::os::unix::fs::FileExt;
                let mut done = 0;
                while done < len {
                    match f.read_at(&mut out[done..], off + done as u64) {
                        Ok(0) => break,
                        Ok(k) => done += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(done)
            };
            self.data_dev()
                .read_file_range(Sectors(ds), Sectors(len as u64 / 512), &mut reader)
        };
        match got {
            // Past the end of a file, a file device reads zeroes.
            Some(Ok(k)) => {
                out[k..].fill(0);
                Ok(())
            }
            Some(Err(e)) => Err(e.into()),
            None => {
                let buf = sync::read_at(self.data_dev(), Sectors(ds), len)?;
                out.copy_from_slice(buf.as_slice());
                Ok(())
            }
        }
    }

    /// A request's result: a mismatch is logged (its first bad block), counted once and
    /// fails with EILSEQ.
    pub(crate) fn report(&self, r: Result<(), ReadFail>) -> Result<(), IoError> {
        match r {
            Ok(()) => Ok(()),
            Err(ReadFail::Io(e)) => Err(e),
            Err(ReadFail::Bad(bad)) => {
                udm_core::klog::err(
                    "integrity",
                    &format!("{}: Checksum failed at sector 0x{bad:x}", self.data.id),
                );
                self.mismatches.fetch_add(1, Ordering::Relaxed);
                Err(EILSEQ)
            }
        }
    }

    /// Read `out.len()` bytes of logical data from `s` off the data area, checking tags; a
    /// mismatch stops at the first bad block (`ReadFail::Bad`, see `report`). With
    /// `tags_out`, the stored tags of the blocks too (read under the same range hold as the
    /// data, so both come from one write).
    pub(crate) fn read_checked(
        &self,
        s: u64,
        out: &mut [u8],
        mut tags_out: Option<&mut [u8]>,
    ) -> Result<(), ReadFail> {
        let mut done = 0usize;
        while done < out.len() {
            let cur = s + (done / 512) as u64;
            let n = ((out.len() - done) as u64 / 512).min(self.geo.run_len(cur));
            let chunk = &mut out[done..done + (n * 512) as usize];
            let (ds, _) = self.geo.locate(cur);
            let _r = self.ranges.lock(cur, n);
            self.read_data(ds, chunk)?;
            if let Some(e) = self.failed() {
                return Err(e.into());
            }
            let blocks = (n / self.spb()) as usize;
            let check = self.check_wanted(cur, n);
            if !check && tags_out.is_none() {
                done += chunk.len();
                continue;
            }
            // Stored and computed tags side by side: on the stack for short reads.
            let tlen = blocks * self.tag_size;
            let mut small = [0u8; TAGS_ON_STACK];
            let mut big = Vec::new();
            let both = if 2 * tlen <= small.len() {
                &mut small[..2 * tlen]
            } else {
                big.resize(2 * tlen, 0);
                &mut big[..]
            };
            let (stored, want) = both.split_at_mut(tlen);
            self.read_tags(cur, stored)?;
            if let Some(t) = tags_out.as_deref_mut() {
                let t0 = done / self.block_bytes() * self.tag_size;
                t[t0..t0 + tlen].copy_from_slice(stored);
            }
            if check {
                self.compute_tags(cur, chunk, want);
                // All equal (the common case) in one comparison; else find the first bad.
                if stored != want {
                    for b in 0..blocks {
                        let r = b * self.tag_size..(b + 1) * self.tag_size;
                        if stored[r.clone()] == want[r.clone()]
                            || (self.p.allow_discards
                                && stored[r].iter().all(|&x| x == DISCARD_FILLER))
                        {
                            continue;
                        }
                        return Err(ReadFail::Bad(cur + b as u64 * self.spb()));
                    }
                }
            }
            done += chunk.len();
        }
        Ok(())
    }

    /// Write data and its tags in place (D and B modes, tags from the layer above): a copy
    /// of `data` goes down (see `write_direct_buf`).
    pub(crate) fn write_direct(
        &self,
        s: u64,
        data: &[u8],
        tags: Option<&[u8]>,
    ) -> Result<(), IoError> {
        self.write_direct_buf(s, IoBuf::from_slice(data), tags).1
    }

    /// Write the blocks of `buf` at logical `s` in place with their tags (`tags`, or
    /// computed here first): per interleave area, that part of `buf` itself goes down as
    /// the data write (no copy, as the kernel writes from the bio's pages) while its tags are
    /// written; `buf` comes back whole.
    pub(crate) fn write_direct_buf(
        &self,
        s: u64,
        mut buf: IoBuf,
        tags: Option<&[u8]>,
    ) -> (IoBuf, Result<(), IoError>) {
        let computed;
        let tags = match tags {
            Some(t) => t,
            None => {
                let mut t = vec![0u8; buf.len() / self.block_bytes() * self.tag_size];
                self.compute_tags(s, &buf, &mut t);
                computed = t;
                &computed[..]
            }
        };
        let mut out = IoBuf::empty();
        let mut res = Ok(());
        while !buf.is_empty() {
            let done = out.len();
            let cur = s + (done / 512) as u64;
            let n = (buf.len() as u64 / 512).min(self.geo.run_len(cur));
            let rest = buf.split_off((n * 512) as usize);
            let t0 = done / self.block_bytes() * self.tag_size;
            let blocks = (n / self.spb()) as usize;
            let (piece, r) = self.write_area(cur, buf, &tags[t0..t0 + blocks * self.tag_size]);
            out.unsplit(piece);
            buf = rest;
            if r.is_err() {
                res = r;
                out.unsplit(std::mem::take(&mut buf));
            }
        }
        (out, res)
    }

    /// Write `buf` (blocks within one area) at logical `cur` with its tags: the data write
    /// goes down while the tags are written; `buf` comes back from the data write.
    pub(crate) fn write_area(
        &self,
        cur: u64,
        buf: IoBuf,
        tags: &[u8],
    ) -> (IoBuf, Result<(), IoError>) {
        let n = (buf.len() / 512) as u64;
        let (ds, _) = self.geo.locate(cur);
        let _r = self.ranges.lock(cur, n);
        let (tx, rx) = std::sync::mpsc::channel();
        self.data_dev().submit(udm_io::Bio::write(
            Sectors(ds),
            buf,
            Box::new(move |r, b| {
                let _ = tx.send((b, r));
            }),
        ));
        let rt = self.write_tags(cur, tags);
        let (b, r) = rx.recv().unwrap_or((IoBuf::empty(), Err(IoError::Io)));
        (b, r.and(rt))
    }

    /// Discard `[s, s+n)`: filler tags, then the discard goes down.
    pub(crate) fn discard_direct(&self, s: u64, n: u64) -> Result<(), IoError> {
        let mut cur = s;
        while cur < s + n {
            let m = (s + n - cur).min(self.geo.run_len(cur));
            let blocks = (m / self.spb()) as usize;
            let _r = self.ranges.lock(cur, m);
            self.write_tags(cur, &vec![DISCARD_FILLER; blocks * self.tag_size])?;
            let (ds, _) = self.geo.locate(cur);
            match sync::discard(self.data_dev(), Sectors(ds), Sectors(m)) {
                Ok(()) | Err(IoError::NotSupported) => {}
                Err(e) => return Err(e),
            }
            cur += m;
        }
        Ok(())
    }

    /// Write dirty tags, then flush tags and data (the kernel's
    /// `dm_integrity_flush_buffers(ic, true)`).
    pub(crate) fn flush_all(&self) -> Result<(), IoError> {
        self.write_dirty_tags()?;
        sync::flush(self.meta_dev())?;
        if self.meta.is_some() {
            sync::flush(self.data_dev())?;
        }
        Ok(())
    }

    /// The journal MAC of section `i` (64 bytes), the kernel's `section_mac`.
    pub(crate) fn section_mac(&self, j: &[u8], i: u32) -> [u8; JOURNAL_MAC_SIZE] {
        let mut out = [0u8; JOURNAL_MAC_SIZE];
        let Some(m) = &self.jmac else {
            return out;
        };
        let g = &self.geo.journal;
        let salt = self.salt();
        let sec = (i as u64).to_le_bytes();
        let mut parts: Vec<&[u8]> = Vec::new();
        if let Some(s) = salt.as_ref() {
            parts.push(s);
            parts.push(&sec);
        }
        for n in 0..g.section_entries {
            let e = g.entry_off(i, n);
            parts.push(&j[e..e + 8]);
        }
        let d = m.digest(&parts);
        let k = d.len().min(JOURNAL_MAC_SIZE);
        out[..k].copy_from_slice(&d[..k]);
        out
    }
}
