//! A write-through cache of tag-area sectors (the role the kernel's dm-bufio plays for
//! dm-integrity's metadata): a checked read finds its tags without a second read of the
//! device, and a tag write that shares a sector with other blocks' tags modifies the cached
//! copy instead of reading the sector first. Only `read_tags`/`write_tags` touch the tag
//! areas, and every tag write holds the target's I/O lock alone, so the cache and the disk
//! agree. Bounded: when full, it is emptied and refills from the device.

use parking_lot::Mutex;
use std::collections::HashMap;

/// Sectors cached at most (512 bytes each): 16 MiB of tags, the tags of 2 GiB of data with
/// crc32c and 512-byte blocks.
const CAPACITY: usize = 32768;

#[derive(Default)]
pub(crate) struct TagCache {
    map: Mutex<HashMap<u64, Box<[u8; 512]>>>,
}

impl TagCache {
    /// Copy sectors `[first, first + buf.len()/512)` into `buf`; false (and `buf` partly
    /// filled) when any of them is not cached.
    pub(crate) fn get(&self, first: u64, buf: &mut [u8]) -> bool {
        let m = self.map.lock();
        for (k, out) in buf.chunks_mut(512).enumerate() {
            match m.get(&(first + k as u64)) {
                Some(s) => out.copy_from_slice(&s[..]),
                None => return false,
            }
        }
        true
    }

    /// Remember sectors `[first, …)` as `buf` holds them (what the device now has).
    pub(crate) fn put(&self, first: u64, buf: &[u8]) {
        let mut m = self.map.lock();
        if m.len() + buf.len() / 512 > CAPACITY {
            m.clear();
        }
        for (k, s) in buf.chunks(512).enumerate() {
            let sec = first + k as u64;
            match m.get_mut(&sec) {
                Some(e) => e.copy_from_slice(s),
                None => {
                    let mut e = Box::new([0u8; 512]);
                    e.copy_from_slice(s);
                    m.insert(sec, e);
                }
            }
        }
    }

    /// Forget everything (the device below may have changed).
    pub(crate) fn clear(&self) {
        self.map.lock().clear();
    }
}
