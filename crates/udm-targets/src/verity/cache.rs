//! The verified-block cache every `verity` target of the process shares: hash blocks and data
//! blocks whose digests matched the tree, kept in memory (which is trusted; the devices are
//! not), so a later read of a block is served without reading or hashing it again, as the
//! kernel's page cache above a dm-verity device serves buffered readers. Nothing that failed
//! verification (or was only corrected by FEC, or passed in logging mode) ever enters.
//!
//! Sized by memory ([`budget`]), cut into shards with their own lock, each evicting by CLOCK
//! with small per-entry weights (a hit raises an entry's weight; the hand lowers weights and
//! evicts the first entry found at zero; hash blocks, which each cover many data blocks,
//! enter and are hit with a larger weight). Entries are never invalidated (verity devices are
//! read-only); a target's entries go when the target does (table reload or remove).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Bookkeeping charged per entry on top of its bytes (slot, map entry, allocation header).
const OVERHEAD: usize = 96;
/// Consecutive blocks that share a shard, so a large read takes few locks.
const RUN: u64 = 32;
/// The weight a data block enters with / is raised to on a hit.
const DATA_IN: u8 = 0;
const DATA_HIT: u8 = 1;
/// The same for hash blocks.
const HASH_IN: u8 = 2;
const HASH_HIT: u8 = 3;

/// What a cached block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Data,
    Hash,
}

/// (owner, block with the kind in its top bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key(u64, u64);

impl Key {
    fn new(owner: u64, kind: Kind, block: u64) -> Key {
        let tag = match kind {
            Kind::Data => 0,
            Kind::Hash => 1 << 63,
        };
        Key(owner, block | tag)
    }
    fn kind(self) -> Kind {
        if self.1 >> 63 == 0 {
            Kind::Data
        } else {
            Kind::Hash
        }
    }
}

/// A multiply-rotate hasher for the two-word keys (SipHash costs more than the lookup).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type KeyMap = HashMap<Key, usize, BuildHasherDefault<KeyHasher>>;

struct Slot {
    key: Key,
    data: Arc<[u8]>,
    weight: u8,
}

#[derive(Default)]
struct Shard {
    map: KeyMap,
    slots: Vec<Slot>,
    hand: usize,
    bytes: usize,
}

fn cost(len: usize) -> usize {
    len + OVERHEAD
}

impl Shard {
    fn hit(&mut self, key: Key) -> Option<&Slot> {
        let i = *self.map.get(&key)?;
        let s = &mut self.slots[i];
        let w = match key.kind() {
            Kind::Data => DATA_HIT,
            Kind::Hash => HASH_HIT,
        };
        s.weight = s.weight.max(w);
        Some(s)
    }

    /// The CLOCK hand's next victim: lowers weights until it finds an entry at zero.
    fn victim(&mut self) -> usize {
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let s = &mut self.slots[self.hand];
            if s.weight == 0 {
                return self.hand;
            }
            s.weight -= 1;
            self.hand += 1;
        }
    }

    fn insert(&mut self, slot: Slot, cap: usize) {
        if self.map.contains_key(&slot.key) {
            return;
        }
        let need = cost(slot.data.len());
        while self.bytes + need > cap && !self.slots.is_empty() {
            let i = self.victim();
            let old = cost(self.slots[i].data.len());
            self.map.remove(&self.slots[i].key);
            self.bytes -= old;
            if self.bytes + need <= cap {
                // The new entry takes the victim's place and the hand moves past it.
                self.map.insert(slot.key, i);
                self.slots[i] = slot;
                self.bytes += need;
                self.hand = i + 1;
                return;
            }
            self.slots.swap_remove(i);
            if let Some(moved) = self.slots.get(i) {
                self.map.insert(moved.key, i);
            }
        }
        self.map.insert(slot.key, self.slots.len());
        self.slots.push(slot);
        self.bytes += need;
    }

    fn drop_owner(&mut self, owner: u64) {
        if !self.slots.iter().any(|s| s.key.0 == owner) {
            return;
        }
        self.slots.retain(|s| s.key.0 != owner);
        self.map = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key, i))
            .collect();
        self.bytes = self.slots.iter().map(|s| cost(s.data.len())).sum();
        self.hand = 0;
    }
}

/// Verified blocks of every verity target, at most `budget` bytes (entries plus bookkeeping).
pub struct BlockCache {
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    data_enabled: bool,
    /// The whole budget (shared with the data stores of `store.rs`).
    budget: usize,
    /// Bytes charged in all shards.
    total: AtomicUsize,
}

impl BlockCache {
    /// A cache of at most `budget` bytes in `shards` shards (each holds `budget / shards`);
    /// without `data_enabled` only hash blocks are kept.
    pub fn new(budget: usize, shards: usize, data_enabled: bool) -> BlockCache {
        let n = shards.max(1);
        BlockCache {
            shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(),
            shard_cap: budget / n,
            data_enabled,
            budget,
            total: AtomicUsize::new(0),
        }
    }

    /// The budget this cache and the data stores share.
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes charged in all shards.
    pub(crate) fn bytes(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Account a shard's change from `before` to `after` bytes.
    fn account(&self, before: usize, after: usize) {
        if after >= before {
            self.total.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    fn shard(&self, key: Key) -> &Mutex<Shard> {
        let mut h = KeyHasher::default();
        h.write_u64(key.0);
        h.write_u64(key.1 / RUN);
        &self.shards[(h.finish() >> 32) as usize % self.shards.len()]
    }

    /// Whether data blocks are cached at all.
    pub fn data_enabled(&self) -> bool {
        self.data_enabled
    }

    /// A cached block.
    pub(crate) fn get(&self, owner: u64, kind: Kind, block: u64) -> Option<Arc<[u8]>> {
        let key = Key::new(owner, kind, block);
        self.shard(key).lock().hit(key).map(|s| s.data.clone())
    }

    /// Copy cached data block `block` into `out` (its length); false when not cached.
    pub(crate) fn copy_data(&self, owner: u64, block: u64, out: &mut [u8]) -> bool {
        if !self.data_enabled {
            return false;
        }
        let key = Key::new(owner, Kind::Data, block);
        match self.shard(key).lock().hit(key) {
            Some(s) if s.data.len() == out.len() => {
                out.copy_from_slice(&s.data);
                true
            }
            _ => false,
        }
    }

    /// Copy cached data blocks `first..` into `buf` (whole `bs`-byte blocks) until one is
    /// not cached; the number copied. Takes each shard's lock once per run of blocks.
    pub(crate) fn copy_data_run(&self, owner: u64, first: u64, bs: usize, buf: &mut [u8]) -> usize {
        if !self.data_enabled || bs == 0 {
            return 0;
        }
        let n = buf.len() / bs;
        let mut i = 0;
        while i < n {
            let b = first + i as u64;
            let run_end = ((b / RUN + 1) * RUN - first).min(n as u64) as usize;
            let mut g = self.shard(Key::new(owner, Kind::Data, b)).lock();
            while i < run_end {
                let key = Key::new(owner, Kind::Data, first + i as u64);
                match g.hit(key) {
                    Some(s) if s.data.len() == bs => {
                        buf[i * bs..(i + 1) * bs].copy_from_slice(&s.data);
                        i += 1;
                    }
                    _ => return i,
                }
            }
        }
        n
    }

    /// Keep a verified block (data blocks only when enabled).
    pub(crate) fn insert(&self, owner: u64, kind: Kind, block: u64, data: Arc<[u8]>) {
        if (kind == Kind::Data && !self.data_enabled) || cost(data.len()) > self.shard_cap {
            return;
        }
        let key = Key::new(owner, kind, block);
        let weight = match kind {
            Kind::Data => DATA_IN,
            Kind::Hash => HASH_IN,
        };
        {
            let mut g = self.shard(key).lock();
            let before = g.bytes;
            g.insert(Slot { key, data, weight }, self.shard_cap);
            self.account(before, g.bytes);
        }
        // The data stores give way when the shards grew past what is left to them.
        super::store::trim(self);
    }

    /// Forget everything `owner` cached.
    pub(crate) fn drop_owner(&self, owner: u64) {
        for s in self.shards.iter() {
            let mut g = s.lock();
            let before = g.bytes;
            g.drop_owner(owner);
            self.account(before, g.bytes);
        }
    }

    /// (entries, bytes charged) held for `owner`, or for everyone with `None`.
    pub fn usage(&self, owner: Option<u64>) -> (usize, usize) {
        let mut n = (0, 0);
        for s in self.shards.iter() {
            let g = s.lock();
            for slot in g
                .slots
                .iter()
                .filter(|s| owner.is_none_or(|o| s.key.0 == o))
            {
                n.0 += 1;
                n.1 += cost(slot.data.len());
            }
        }
        n
    }
}

/// A process-unique owner id for a new target's entries.
pub(crate) fn new_owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The memory every verity target of the process may keep in verified blocks: 1/8 of
/// physical memory, at most 2 GiB, at least 16 MiB; `UDM_VERITY_CACHE_MB` overrides it.
pub fn budget() -> usize {
    if let Some(mb) = std::env::var("UDM_VERITY_CACHE_MB")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    {
        return mb.max(1) << 20;
    }
    // SAFETY: sysconf takes an integer name and returns an integer; no memory is shared.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let phys = if pages > 0 && size > 0 {
        pages as usize * size as usize
    } else {
        1 << 30
    };
    (phys / 8).clamp(16 << 20, 2 << 30)
}

/// The process's cache: [`budget`] bytes in 64 shards; `UDM_VERITY_DATA_CACHE=0` keeps hash
/// blocks only (every read then hashes its data again, as before the data cache).
pub fn global() -> &'static BlockCache {
    static C: OnceLock<BlockCache> = OnceLock::new();
    C.get_or_init(|| {
        let data = !matches!(
            std::env::var("UDM_VERITY_DATA_CACHE")
                .as_deref()
                .map(str::trim),
            Ok("0")
        );
        BlockCache::new(budget(), 64, data)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fill: u8, len: usize) -> Arc<[u8]> {
        Arc::from(vec![fill; len])
    }

    #[test]
    fn hits_copy_and_misses() {
        let c = BlockCache::new(1 << 20, 4, true);
        c.insert(1, Kind::Data, 7, block(7, 512));
        c.insert(1, Kind::Hash, 7, block(9, 512));
        let mut out = [0u8; 512];
        assert!(c.copy_data(1, 7, &mut out));
        assert_eq!(out, [7u8; 512]);
        assert_eq!(c.get(1, Kind::Hash, 7).unwrap()[0], 9);
        assert!(!c.copy_data(2, 7, &mut out), "another owner's block");
        assert!(!c.copy_data(1, 8, &mut out));
        // Runs across shard boundaries stop at the first block not cached.
        for b in 20..80u64 {
            c.insert(1, Kind::Data, b, block(b as u8, 512));
        }
        let mut buf = vec![0u8; 70 * 512];
        assert_eq!(c.copy_data_run(1, 20, 512, &mut buf), 60);
        assert!((0..60).all(|i| buf[i * 512..(i + 1) * 512] == [20 + i as u8; 512]));
        assert_eq!(c.copy_data_run(1, 30, 512, &mut buf[..50 * 512]), 50);
        assert_eq!(c.copy_data_run(1, 19, 512, &mut buf), 0);
        assert!(c.get(1, Kind::Data, 8).is_none());
        let off = BlockCache::new(1 << 20, 4, false);
        off.insert(1, Kind::Data, 7, block(7, 512));
        off.insert(1, Kind::Hash, 7, block(9, 512));
        assert!(!off.copy_data(1, 7, &mut out));
        assert_eq!(off.usage(None).0, 1);
    }

    #[test]
    fn bounded_by_budget() {
        let budget = 64 * cost(4096);
        let c = BlockCache::new(budget, 4, true);
        for b in 0..10_000u64 {
            c.insert(3, Kind::Data, b, block(b as u8, 4096));
            assert!(c.usage(None).1 <= budget, "after {b}");
        }
        assert!(c.usage(Some(3)).0 >= 32, "{:?}", c.usage(None));
        // The most recent block of each shard stays.
        assert!(c.get(3, Kind::Data, 9_999).is_some());
    }

    #[test]
    fn clock_keeps_blocks_that_are_hit() {
        // One shard of 8 entries: block 0 is read between every insert and must survive a
        // stream of 100 blocks read once each, which FIFO would have evicted after 8.
        let c = BlockCache::new(8 * cost(64), 1, true);
        let mut out = [0u8; 64];
        c.insert(1, Kind::Data, 0, block(0xaa, 64));
        for b in 1..100u64 {
            assert!(c.copy_data(1, 0, &mut out), "block 0 evicted at {b}");
            c.insert(1, Kind::Data, b, block(b as u8, 64));
        }
        assert_eq!(out, [0xaa; 64]);
        assert_eq!(c.usage(None).0, 8);
    }

    #[test]
    fn dropping_an_owner_frees_its_entries_only() {
        let c = BlockCache::new(1 << 20, 8, true);
        for b in 0..100 {
            c.insert(1, Kind::Data, b, block(1, 512));
            c.insert(2, Kind::Data, b, block(2, 512));
            c.insert(1, Kind::Hash, b, block(3, 512));
        }
        c.drop_owner(1);
        assert_eq!(c.usage(Some(1)), (0, 0));
        assert_eq!(c.usage(Some(2)).0, 100);
        let mut out = [0u8; 512];
        for b in 0..100 {
            assert!(c.copy_data(2, b, &mut out));
            assert_eq!(out, [2u8; 512]);
        }
        // Inserting after a drop still works (hand and indexes rebuilt).
        c.insert(1, Kind::Data, 5, block(4, 512));
        assert!(c.copy_data(1, 5, &mut out));
        assert_eq!(out[0], 4);
    }
}
