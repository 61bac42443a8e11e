//! A write-back cache of tag-area sectors (the role the kernel's dm-bufio plays for
//! dm-integrity's metadata): a checked read finds its tags without a second read of the
//! device, and a tag write only changes the cached sector, marking it dirty; dirty sectors
//! go down in sorted runs before every flush of the device (`Inner::flush_all`), so tags
//! are durable exactly when the kernel's are (J mode frees a journal section only after
//! that flush; B mode's dirty bitmap covers tags not yet written). Only `read_tags`,
//! `write_tags` and `write_dirty_tags` touch the tag areas, all holding the target's tag
//! lock while they touch the device and the cache, so the cache never holds a sector older
//! than the device's. Bounded: past the capacity, clean sectors are dropped (dirty ones
//! stay until written).

use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};

/// Sectors cached at most (512 bytes each): 16 MiB of tags, the tags of 2 GiB of data with
/// crc32c and 512-byte blocks.
const CAPACITY: usize = 32768;
/// Dirty sectors past which a tag write writes them all down first.
pub(crate) const DIRTY_MAX: usize = 8192;

#[derive(Default)]
struct Cached {
    map: HashMap<u64, Box<[u8; 512]>>,
    dirty: BTreeSet<u64>,
}

#[derive(Default)]
pub(crate) struct TagCache {
    c: Mutex<Cached>,
}

impl Cached {
    fn set(&mut self, sec: u64, s: &[u8]) {
        match self.map.get_mut(&sec) {
            Some(e) => e.copy_from_slice(s),
            None => {
                let mut e = Box::new([0u8; 512]);
                e.copy_from_slice(s);
                self.map.insert(sec, e);
            }
        }
    }
    fn make_room(&mut self, n: usize) {
        if self.map.len() + n > CAPACITY {
            let dirty = &self.dirty;
            self.map.retain(|k, _| dirty.contains(k));
        }
    }
}

impl TagCache {
    /// Copy sectors `[first, first + buf.len()/512)` into `buf`; false (and `buf` partly
    /// filled) when any of them is not cached.
    pub(crate) fn get(&self, first: u64, buf: &mut [u8]) -> bool {
        let c = self.c.lock();
        for (k, out) in buf.chunks_mut(512).enumerate() {
            match c.map.get(&(first + k as u64)) {
                Some(s) => out.copy_from_slice(&s[..]),
                None => return false,
            }
        }
        true
    }

    /// Copy the bytes from byte `at` of the tag area on (any alignment) into `out`; false
    /// (and `out` partly filled) when a sector they touch is not cached.
    pub(crate) fn get_bytes(&self, at: u64, out: &mut [u8]) -> bool {
        let c = self.c.lock();
        let mut done = 0;
        while done < out.len() {
            let pos = at + done as u64;
            let o = (pos % 512) as usize;
            let n = (512 - o).min(out.len() - done);
            match c.map.get(&(pos / 512)) {
                Some(s) => out[done..done + n].copy_from_slice(&s[o..o + n]),
                None => return false,
            }
            done += n;
        }
        true
    }

    /// Remember sectors `[first, …)` as just read from the device in `buf`; sectors cached
    /// dirty keep their newer contents, copied into `buf`.
    pub(crate) fn put_read(&self, first: u64, buf: &mut [u8]) {
        let mut c = self.c.lock();
        c.make_room(buf.len() / 512);
        for (k, s) in buf.chunks_mut(512).enumerate() {
            let sec = first + k as u64;
            if c.dirty.contains(&sec) {
                s.copy_from_slice(&c.map[&sec][..]);
            } else {
                c.set(sec, s);
            }
        }
    }

    /// Remember sectors `[first, …)` as written: cached and dirty (not yet on the device).
    pub(crate) fn put_dirty(&self, first: u64, buf: &[u8]) {
        let mut c = self.c.lock();
        c.make_room(buf.len() / 512);
        for (k, s) in buf.chunks(512).enumerate() {
            c.set(first + k as u64, s);
            c.dirty.insert(first + k as u64);
        }
    }

    /// How many sectors are dirty.
    pub(crate) fn dirty(&self) -> usize {
        self.c.lock().dirty.len()
    }

    /// Take the dirty sectors as runs of consecutive sectors (first, contents); they count
    /// as clean from now on.
    pub(crate) fn take_dirty(&self) -> Vec<(u64, Vec<u8>)> {
        let mut c = self.c.lock();
        let dirty = std::mem::take(&mut c.dirty);
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        for sec in dirty {
            let s = &c.map[&sec][..];
            match runs.last_mut() {
                Some((f, b)) if *f + (b.len() / 512) as u64 == sec => b.extend_from_slice(s),
                _ => runs.push((sec, s.to_vec())),
            }
        }
        runs
    }

    /// Forget everything, dirty sectors too (the device below may have changed, or writing
    /// them failed and the device has failed).
    pub(crate) fn clear(&self) {
        let mut c = self.c.lock();
        c.map.clear();
        c.dirty.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_across_sectors_come_back_as_put_and_a_gap_misses() {
        let c = TagCache::default();
        let area: Vec<u8> = (0..3 * 512).map(|i| (i * 7 % 251) as u8).collect();
        let mut sectors = area.clone();
        c.put_read(10, &mut sectors);
        for (at, len) in [(0, 1), (3, 4), (508, 8), (511, 515), (0, 1536), (1000, 536)] {
            let mut out = vec![0u8; len];
            assert!(c.get_bytes(10 * 512 + at as u64, &mut out), "{at}+{len}");
            assert_eq!(out, area[at..at + len], "{at}+{len}");
        }
        // Sector 13 is not cached: a range reaching into it misses.
        let mut out = vec![0u8; 8];
        assert!(!c.get_bytes(13 * 512 - 4, &mut out));
        // A dirty sector's newer contents are what a read gets.
        c.put_dirty(11, &[0xee; 512]);
        let mut out = vec![0u8; 4];
        assert!(c.get_bytes(11 * 512 + 100, &mut out));
        assert_eq!(out, [0xee; 4]);
    }
}
