//! B mode's dirty bitmap (kept in the first blocks of the journal area: a set bit means its
//! region may hold data whose tags were not written) and tag recalculation.

use super::core::{Inner, State};
use super::params::Mode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_formats::integrity::{BITMAP_BLOCK_SIZE, FLAG_RECALCULATING};
use udm_io::{sync, Sectors};

/// Sectors recalculated per step, as the kernel's `RECALC_SECTORS`.
const RECALC_SECTORS: u64 = 32768;
/// The superblock is written every this many steps.
const RECALC_WRITE_SUPER: u32 = 16;

impl Inner {
    fn bit_range(&self, s: u64, n: u64) -> (u64, u64) {
        let shift = self.geo.log2_spb + self.log2_blocks_per_bit;
        (s >> shift, (s + n - 1) >> shift)
    }

    /// True when every bit covering `[s, s+n)` is `set` (set) or clear (`!set`).
    pub(crate) fn bitmap_all(&self, bm: &[u8], s: u64, n: u64, set: bool) -> bool {
        if n == 0 {
            return true;
        }
        let (a, b) = self.bit_range(s, n);
        (a..=b).all(|bit| ((bm[(bit / 8) as usize] >> (bit % 8)) & 1 == 1) == set)
    }

    /// Set or clear the bits covering `[s, s+n)`.
    pub(crate) fn bitmap_op(&self, bm: &mut [u8], s: u64, n: u64, set: bool) {
        if n == 0 {
            return;
        }
        let (a, b) = self.bit_range(s, n);
        for bit in a..=b {
            let m = 1u8 << (bit % 8);
            let byte = &mut bm[(bit / 8) as usize];
            if set {
                *byte |= m;
            } else {
                *byte &= !m;
            }
        }
    }

    fn bitmap_bytes(&self) -> usize {
        (self.n_bitmap_blocks * BITMAP_BLOCK_SIZE) as usize
    }

    /// Before a B-mode write or discard: mark its region dirty on disk (the kernel's
    /// `bitmap_block_work`).
    pub(crate) fn bitmap_mark(&self, st: &mut State, s: u64, n: u64) {
        if self.bitmap_all(&st.may_write, s, n, true) {
            return;
        }
        let nb = self.bitmap_bytes();
        self.bitmap_op(&mut st.journal[..nb], s, n, true);
        let (first, _) = self.bit_range(s, n);
        let idx = first / (BITMAP_BLOCK_SIZE * 8);
        self.rw_journal_sectors(
            st,
            true,
            idx * (BITMAP_BLOCK_SIZE / 512),
            BITMAP_BLOCK_SIZE / 512,
        );
        let mut mw = std::mem::take(&mut st.may_write);
        self.bitmap_op(&mut mw, s, n, true);
        st.may_write = mw;
        if st.bitmap_deadline.is_none() {
            st.bitmap_deadline =
                Some(Instant::now() + Duration::from_millis(self.bitmap_flush_ms as u64));
            self.wake.notify_all();
        }
    }

    /// The kernel's `bitmap_flush_work`: flush, then clear the bitmap on disk.
    pub(crate) fn bitmap_flush(&self, st: &mut State) {
        st.bitmap_deadline = None;
        if self.flush_all().is_err() {
            self.io_error("flushing disk cache", libc::EIO);
        }
        let mut limit = self.geo.provided_data_sectors;
        {
            let sb = self.sb.lock();
            if sb.0.has(FLAG_RECALCULATING) {
                let shift = self.geo.log2_spb + self.log2_blocks_per_bit;
                limit = sb.0.recalc_sector >> shift << shift;
            }
        }
        let nb = self.bitmap_bytes();
        self.bitmap_op(&mut st.journal[..nb], 0, limit, false);
        let mut mw = std::mem::take(&mut st.may_write);
        self.bitmap_op(&mut mw, 0, limit, false);
        st.may_write = mw;
        self.rw_journal_sectors(
            st,
            true,
            0,
            self.n_bitmap_blocks * (BITMAP_BLOCK_SIZE / 512),
        );
    }

    /// Write the superblock after flushing (the kernel's `recalc_write_super`).
    fn recalc_write_super(&self) {
        if self.flush_all().is_err() {
            self.io_error("flushing disk cache", libc::EIO);
        }
        if self.failed().is_some() {
            return;
        }
        if self.write_sb().is_err() {
            self.io_error("writing superblock", libc::EIO);
        }
    }

    /// Recalculate tags from the superblock's `recalc_sector` to the end, step by step,
    /// stopping early when the target suspends or stops.
    pub(crate) fn recalc_run(self: &Arc<Inner>) {
        let mut counter = 0;
        let spb = self.spb();
        loop {
            let _io = self.io_lock.write();
            if self.stop.load(Ordering::SeqCst) || !self.recalc_running.load(Ordering::SeqCst) {
                self.recalc_write_super();
                break;
            }
            let rs = self.sb.lock().0.recalc_sector;
            let provided = self.geo.provided_data_sectors;
            if rs >= provided {
                if self.mode == Mode::Bitmap {
                    let mut st = self.st.lock();
                    let mut rb = std::mem::take(&mut st.recalc_bitmap);
                    self.bitmap_op(&mut rb, 0, provided, false);
                    st.recalc_bitmap = rb;
                    st.bitmap_deadline = Some(Instant::now());
                    self.wake.notify_all();
                }
                self.recalc_write_super();
                break;
            }
            let mut n = RECALC_SECTORS.min(provided - rs);
            if self.meta.is_none() {
                n = n.min(self.geo.run_len(rs));
            }
            let (mut ls, mut ln) = (rs, n);
            let mut skip = false;
            if self.mode == Mode::Bitmap {
                let st = self.st.lock();
                if self.bitmap_all(&st.recalc_bitmap, ls, ln, false) {
                    skip = true;
                } else {
                    while self.bitmap_all(&st.recalc_bitmap, ls, spb, false) {
                        ls += spb;
                        ln -= spb;
                    }
                    while self.bitmap_all(&st.recalc_bitmap, ls + ln - spb, spb, false) {
                        ln -= spb;
                    }
                }
            }
            counter += 1;
            if counter == RECALC_WRITE_SUPER {
                self.recalc_write_super();
                counter = 0;
            }
            if self.failed().is_some() {
                break;
            }
            if !skip {
                let (ds, _) = self.geo.locate(ls);
                match sync::read_at(self.data_dev(), Sectors(ds), (ln * 512) as usize) {
                    Ok(buf) => {
                        let mut tags = vec![0u8; (ln / spb) as usize * self.tag_size];
                        self.compute_tags(ls, buf.as_slice(), &mut tags);
                        if self.write_tags(ls, &tags).is_err() {
                            self.io_error("writing tags", libc::EIO);
                            break;
                        }
                    }
                    Err(_) => {
                        self.io_error("reading data", libc::EIO);
                        break;
                    }
                }
                if self.mode == Mode::Bitmap {
                    let shift = self.geo.log2_spb + self.log2_blocks_per_bit;
                    let start = rs >> shift << shift;
                    let end = (rs + n) >> shift << shift;
                    let mut st = self.st.lock();
                    let mut rb = std::mem::take(&mut st.recalc_bitmap);
                    self.bitmap_op(&mut rb, start, end - start, false);
                    st.recalc_bitmap = rb;
                }
            }
            self.sb.lock().0.recalc_sector = rs + n;
        }
        self.recalc_running.store(false, Ordering::SeqCst);
    }
}
