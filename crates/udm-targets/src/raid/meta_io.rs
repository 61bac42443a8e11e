//! Keeping the metadata devices current: superblock updates (md_update_sb through dm-raid's
//! super_sync), the write-intent bitmap (bits set and written before a write goes out,
//! cleared by the bitmap daemon once the writes are done and the set is not degraded), and
//! the resync bookkeeping they share.

use super::engine::Array;
use super::meta::*;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use udm_core::EventTrigger;
use udm_io::{BlockDevice, IoError, Sectors};

/// The kernel's HZ on the reference kernel (bitmap daemon_sleep is kept in jiffies).
pub const HZ: u32 = 250;

/// Superblock fields that are the same on every device.
#[derive(Debug, Clone)]
pub struct SbInfo {
    pub events: u64,
    /// md's `recovery_cp` (`u64::MAX`: in sync), in the resync space.
    pub recovery_cp: u64,
    pub level: u32,
    pub layout: u32,
    pub chunk: u32,
    pub array_sectors: u64,
    pub dev_sectors: u64,
    pub data_offset: u64,
}

/// The in-core bitmap.
pub struct Bitmap {
    pub sb: BitmapSuper,
    /// On-disk bits.
    pub bits: Vec<u8>,
    pending: Vec<u32>,
    /// Written since the daemon last looked.
    touched: Vec<bool>,
    /// Found dirty at load or left dirty by a failed resync: resync these.
    pub needs_sync: Vec<bool>,
    pub chunks: u64,
    /// Group commit of bits set by writes (md's unplug writes every page dirtied meanwhile
    /// once): each page's generation of its last set bit, the generation on disk, whether a
    /// writer is writing pages now, and the pages dirtied since the last write.
    page_gen: Vec<u64>,
    set_gen: u64,
    durable_gen: u64,
    writing: bool,
    dirty_pages: std::collections::BTreeSet<usize>,
}

impl Bitmap {
    /// A fresh (or stale) bitmap: md dirties every page it writes (`0xff` from the bits on,
    /// to the end of each page) so every region is resynced unless `nosync` said otherwise.
    pub fn new(sb: BitmapSuper, chunks: u64, needs_sync: bool) -> Bitmap {
        let pages = bitmap_bytes(chunks).div_ceil(4096) as usize;
        Bitmap {
            sb,
            bits: vec![0xff; pages * 4096 - BITMAP_SB_SIZE],
            pending: vec![0; chunks as usize],
            touched: vec![false; chunks as usize],
            needs_sync: vec![needs_sync; chunks as usize],
            chunks,
            page_gen: vec![0; pages],
            set_gen: 0,
            durable_gen: 0,
            writing: false,
            dirty_pages: Default::default(),
        }
    }
    /// A bitmap loaded from disk (`disk`: the bytes after its superblock): every set bit
    /// needs a resync.
    pub fn loaded(sb: BitmapSuper, chunks: u64, disk: &[u8]) -> Bitmap {
        let mut b = Bitmap::new(sb, chunks, false);
        b.bits.iter_mut().for_each(|x| *x = 0);
        let n = b.bits.len().min(disk.len());
        b.bits[..n].copy_from_slice(&disk[..n]);
        for r in 0..chunks {
            b.needs_sync[r as usize] = test_bit(&b.bits, r);
        }
        b
    }
    pub fn dirty_count(&self) -> u64 {
        (0..self.chunks)
            .filter(|&r| test_bit(&self.bits, r))
            .count() as u64
    }
}

pub struct MetaState {
    pub sb_size: usize,
    pub info: Mutex<SbInfo>,
    pub bm: Option<Mutex<Bitmap>>,
    /// Signalled when a group commit of bitmap pages ends.
    pub bm_cv: Condvar,
    /// Bitmap region (chunk) size in sectors.
    pub region: u64,
    /// Sectors the resync covers (dev_sectors, or array_sectors for raid10).
    pub sync_max: u64,
    pub event: EventTrigger,
}

/// Ends a write's hold on its bitmap regions.
pub struct WriteGuard<'a> {
    m: &'a MetaState,
    r: Option<(u64, u64)>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if let (Some((a, b)), Some(bm)) = (self.r, &self.m.bm) {
            let mut bm = bm.lock();
            for r in a..=b {
                let p = &mut bm.pending[r as usize];
                *p = p.saturating_sub(1);
            }
        }
    }
}

impl MetaState {
    pub fn event(&self) {
        (self.event)()
    }

    fn regions(&self, s: u64, end: u64) -> Option<(u64, u64)> {
        let bm = self.bm.as_ref()?;
        let chunks = bm.lock().chunks;
        if end <= s || chunks == 0 {
            return None;
        }
        let a = (s / self.region).min(chunks - 1);
        let b = ((end - 1) / self.region).min(chunks - 1);
        Some((a, b))
    }

    /// Whether `[s, end)` (resync space) may be out of sync.
    pub fn range_needs_sync(&self, s: u64, end: u64) -> bool {
        if self.info.lock().recovery_cp < end {
            return true;
        }
        match (self.regions(s, end), &self.bm) {
            (Some((a, b)), Some(bm)) => {
                let bm = bm.lock();
                (a..=b).any(|r| bm.needs_sync[r as usize])
            }
            _ => false,
        }
    }

    /// Whether any bitmap bit of `[s, end)` is set (no bitmap: everything is dirty).
    pub fn range_dirty(&self, s: u64, end: u64) -> bool {
        match (self.regions(s, end), &self.bm) {
            (Some((a, b)), Some(bm)) => {
                let bm = bm.lock();
                (a..=b).any(|r| test_bit(&bm.bits, r) || bm.needs_sync[r as usize])
            }
            _ => true,
        }
    }

    /// Mark `[s, end)` as being written: set its bits on disk first (`md_bitmap_startwrite`
    /// and the unplug that writes the pages before the data goes out). Writes that set bits
    /// while another one's pages are being written wait and go together in the next write.
    pub fn start_write(&self, a: &Array, s: u64, end: u64) -> Result<WriteGuard<'_>, IoError> {
        let Some((r0, r1)) = self.regions(s, end) else {
            return Ok(WriteGuard { m: self, r: None });
        };
        let bm = self.bm.as_ref().expect("regions imply a bitmap");
        let mut g = bm.lock();
        let mut set = false;
        for r in r0..=r1 {
            g.pending[r as usize] += 1;
            g.touched[r as usize] = true;
            if !test_bit(&g.bits, r) {
                set_bit(&mut g.bits, r, true);
                g.dirty_pages.insert(page_of(r));
                set = true;
            }
        }
        if set {
            g.set_gen += 1;
            let Bitmap {
                set_gen,
                page_gen,
                dirty_pages,
                ..
            } = &mut *g;
            for &p in dirty_pages.iter() {
                page_gen[p] = *set_gen;
            }
        }
        // Every bit of the range must be on disk before the data goes, also one set by a
        // write whose page write is still under way.
        let need = (page_of(r0)..=page_of(r1))
            .map(|p| g.page_gen[p])
            .max()
            .unwrap_or(0);
        while g.durable_gen < need {
            if g.writing {
                self.bm_cv.wait(&mut g);
                continue;
            }
            self.commit_dirty_pages(a, &mut g);
        }
        Ok(WriteGuard {
            m: self,
            r: Some((r0, r1)),
        })
    }

    /// Write every page dirtied since the last commit, outside the lock (other writes go on
    /// setting bits meanwhile), and make them durable.
    fn commit_dirty_pages(&self, a: &Array, g: &mut MutexGuard<'_, Bitmap>) {
        g.writing = true;
        let target = g.set_gen;
        let pages: Vec<(u64, Vec<u8>)> = std::mem::take(&mut g.dirty_pages)
            .into_iter()
            .map(|p| (page_sector(p), self.bitmap_page(g, p)))
            .collect();
        MutexGuard::unlocked(g, || self.write_meta_all(a, &pages));
        g.durable_gen = g.durable_gen.max(target);
        g.writing = false;
        self.bm_cv.notify_all();
    }

    /// Wait until no group commit is writing pages (the daemon and the other writers of
    /// pages write under the lock, after it).
    fn idle<'a>(&self, mut g: MutexGuard<'a, Bitmap>) -> MutexGuard<'a, Bitmap> {
        while g.writing {
            self.bm_cv.wait(&mut g);
        }
        g
    }

    /// `start_write` when it needs no I/O: every region's bit is set already (and so on
    /// disk), as in a stream of writes into dirty regions. False, nothing changed,
    /// otherwise. A true return is ended with `end_write`.
    pub fn start_write_set(&self, s: u64, end: u64) -> bool {
        let Some((r0, r1)) = self.regions(s, end) else {
            return true;
        };
        let Some(bm) = self.bm.as_ref() else {
            return true;
        };
        let mut g = bm.lock();
        if !(r0..=r1).all(|r| test_bit(&g.bits, r))
            || (page_of(r0)..=page_of(r1)).any(|p| g.page_gen[p] > g.durable_gen)
        {
            return false;
        }
        for r in r0..=r1 {
            g.pending[r as usize] += 1;
            g.touched[r as usize] = true;
        }
        true
    }

    /// The end of a write begun with `start_write_set`.
    pub fn end_write(&self, s: u64, end: u64) {
        drop(WriteGuard {
            m: self,
            r: self.regions(s, end),
        });
    }

    /// The bitmap daemon: clear bits of regions with no write in flight and none since the
    /// last pass, unless the set is degraded (those bits let a returning leg resync only
    /// what changed).
    pub fn bitmap_daemon(&self, a: &Array) {
        let Some(bm) = &self.bm else { return };
        if a.degraded() > 0 || a.legs.iter().any(|l| l.recovery.load(SeqCst) != u64::MAX) {
            return;
        }
        let rcp = self.info.lock().recovery_cp;
        let mut g = self.idle(bm.lock());
        let mut pages = Vec::new();
        for r in 0..g.chunks {
            let i = r as usize;
            if std::mem::take(&mut g.touched[i]) || g.pending[i] > 0 || g.needs_sync[i] {
                continue;
            }
            if rcp < (r + 1) * self.region {
                continue;
            }
            if test_bit(&g.bits, r) {
                set_bit(&mut g.bits, r, false);
                let p = page_of(r);
                if pages.last() != Some(&p) {
                    pages.push(p);
                }
            }
        }
        if !pages.is_empty() {
            g.sb.events_cleared = self.info.lock().events;
            if !pages.contains(&0) {
                pages.insert(0, 0);
            }
            self.write_bitmap_pages(a, &g, &pages);
        }
    }

    /// Mark every region of `[s, end)` as needing a resync (and its bits dirty on disk).
    pub fn mark_needs_sync(&self, a: &Array, s: u64, end: u64) {
        if let (Some((r0, r1)), Some(bm)) = (self.regions(s, end), &self.bm) {
            let mut g = self.idle(bm.lock());
            for r in r0..=r1 {
                g.needs_sync[r as usize] = true;
                set_bit(&mut g.bits, r, true);
            }
            let pages: Vec<usize> = (page_of(r0)..=page_of(r1)).collect();
            self.write_bitmap_pages(a, &g, &pages);
        }
    }

    /// Encode the bitmap area's page `p` (bytes `[p*4096, ...)` of superblock + bits).
    fn bitmap_page(&self, g: &Bitmap, p: usize) -> Vec<u8> {
        // The last page is written up to the logical block holding the last bit, straight
        // from the in-core page (whose tail md keeps at 0xff).
        let total = (bitmap_bytes(g.chunks) as usize).div_ceil(512) * 512;
        let start = p * 4096;
        let end = (start + 4096).min(total);
        let mut area = vec![0u8; end - start];
        for (k, b) in area.iter_mut().enumerate() {
            let off = start + k;
            *b = if off < BITMAP_SB_SIZE {
                0
            } else {
                g.bits[off - BITMAP_SB_SIZE]
            };
        }
        if p == 0 {
            let sb = g.sb.encode();
            let n = BITMAP_SB_SIZE.min(area.len());
            area[..n].copy_from_slice(&sb[..n]);
        }
        area
    }

    fn write_bitmap_pages(&self, a: &Array, g: &Bitmap, pages: &[usize]) {
        let pages: Vec<(u64, Vec<u8>)> = pages
            .iter()
            .map(|&p| (page_sector(p), self.bitmap_page(g, p)))
            .collect();
        self.write_meta_all(a, &pages);
    }

    /// Write `(sector, data)` pieces to every usable leg's metadata device and make them
    /// durable before returning, the legs side by side (md writes its superblocks and bitmap
    /// pages with PREFLUSH and FUA: a bit must be stable before the data write it covers
    /// goes out, or a power loss could leave a changed region that the resync after it does
    /// not know about).
    fn write_meta_all(&self, a: &Array, pieces: &[(u64, Vec<u8>)]) {
        let with_meta: Vec<(usize, &Arc<dyn BlockDevice>)> = (a.legs.iter().enumerate())
            .filter_map(|(i, l)| Some((i, l.meta.as_ref().filter(|_| l.usable())?)))
            .collect();
        let one = |(i, m): (usize, &Arc<dyn BlockDevice>)| {
            let r = pieces
                .iter()
                .try_for_each(|(s, d)| udm_io::sync::write_at(&**m, Sectors(*s), d))
                .and_then(|()| udm_io::sync::flush(&**m));
            if r.is_err() {
                tracing::warn!("raid: metadata write to leg {i} failed");
                a.legs[i].failed.store(true, SeqCst);
            }
        };
        match with_meta.split_first() {
            None => {}
            Some((first, rest)) => std::thread::scope(|sc| {
                for &leg in rest {
                    sc.spawn(move || one(leg));
                }
                one(*first);
            }),
        }
    }

    /// The superblock leg `i` gets now.
    pub fn superblock_for(&self, a: &Array, i: usize, info: &SbInfo) -> Superblock {
        let mut sb = Superblock {
            magic: DM_RAID_MAGIC,
            compat_features: FEATURE_SUPPORTS_V190,
            num_devices: a.legs.len() as u32,
            array_position: i as u32,
            events: info.events,
            disk_recovery_offset: a.legs[i].recovery.load(SeqCst),
            array_resync_offset: info.recovery_cp,
            level: info.level,
            layout: info.layout,
            stripe_sectors: info.chunk,
            reshape_position: u64::MAX,
            new_level: info.level,
            new_layout: info.layout,
            new_stripe_sectors: info.chunk,
            array_sectors: info.array_sectors,
            data_offset: info.data_offset,
            new_data_offset: info.data_offset,
            sectors: info.dev_sectors,
            ..Superblock::default()
        };
        for (k, l) in a.legs.iter().enumerate() {
            if !l.usable() {
                sb.set_failed(k as u32);
            }
        }
        sb
    }

    /// md_update_sb: bump the event count, write the bitmap superblock and every live leg's
    /// superblock.
    pub fn write_superblocks(&self, a: &Array) {
        let info = {
            let mut i = self.info.lock();
            i.events += 1;
            i.clone()
        };
        if let Some(bm) = &self.bm {
            let mut g = self.idle(bm.lock());
            g.sb.events = info.events;
            if info.events < g.sb.events_cleared {
                g.sb.events_cleared = info.events;
            }
            g.sb.sync_size = self.sync_max;
            self.write_bitmap_pages(a, &g, &[0]);
        }
        for (i, l) in a.legs.iter().enumerate() {
            if let (true, Some(m)) = (l.usable(), &l.meta) {
                let b = self.superblock_for(a, i, &info).encode(self.sb_size);
                let r = udm_io::sync::write_at(&**m, Sectors(0), &b)
                    .and_then(|()| udm_io::sync::flush(&**m));
                if r.is_err() {
                    tracing::warn!("raid: superblock write to leg {i} failed");
                    l.failed.store(true, SeqCst);
                }
            }
        }
    }

    /// Write the whole bitmap (after load or a resize).
    pub fn write_bitmap_all(&self, a: &Array) {
        if let Some(bm) = &self.bm {
            let g = self.idle(bm.lock());
            let pages = (bitmap_bytes(g.chunks) as usize).div_ceil(4096);
            self.write_bitmap_pages(a, &g, &(0..pages).collect::<Vec<_>>());
        }
    }
}

/// The metadata device sector of bitmap area page `p`.
fn page_sector(p: usize) -> u64 {
    BITMAP_OFFSET / 512 + (p as u64) * 8
}

fn page_of(r: u64) -> usize {
    ((r + (BITMAP_SB_SIZE as u64) * 8) / (4096 * 8)) as usize
}
