//! The multiqueue smq is built from: an arena of entries linked by index into per-level
//! lists, and a `Queue` of up to 64 such levels with the kernel's rules (entries pushed at
//! the back of their level, requeued a few levels up by swapping with the oldest entry of the
//! level above, redistributed each period so every level holds its target count, sentinel
//! entries that mark "older than the last period" and are never counted).
//!
//! Written after reading dm-cache-policy-smq.c for its behaviour; no code is shared.

/// Origin block numbers hash with one multiplication (they are block numbers, not keys an
/// attacker picks): the hit path's lookups stay cheap.
#[derive(Default, Clone, Copy)]
pub struct BlockHasher(u64);

impl std::hash::Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by block number.
pub type BlockMap<V> =
    std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<BlockHasher>>;

/// "No entry".
pub const NIL: u32 = u32::MAX;

/// Levels per queue (hotspot, clean and dirty alike).
pub const NR_LEVELS: usize = 64;

/// One entry: a cache block, a hotspot block or a sentinel.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub prev: u32,
    pub next: u32,
    pub level: u8,
    pub dirty: bool,
    pub allocated: bool,
    pub sentinel: bool,
    pub pending: bool,
    pub oblock: u64,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            prev: NIL,
            next: NIL,
            level: 0,
            dirty: false,
            allocated: false,
            sentinel: false,
            pending: false,
            oblock: 0,
        }
    }
}

/// A doubly linked list of entries (sentinels are linked but not counted).
#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
    nr: u32,
}

impl Default for List {
    fn default() -> List {
        List {
            head: NIL,
            tail: NIL,
            nr: 0,
        }
    }
}

/// A stack of levels, each a list, entries moving up when used.
pub struct Queue {
    lists: Vec<List>,
    nr: u32,
    last_target_nr: u32,
    /// The top `nr_top_levels` levels hold only `nr_in_top_levels` entries in all.
    pub nr_top_levels: u32,
    pub nr_in_top_levels: u32,
    target: Vec<u32>,
}

impl Queue {
    pub fn new(levels: usize) -> Queue {
        Queue {
            lists: vec![List::default(); levels],
            nr: 0,
            last_target_nr: 0,
            nr_top_levels: 0,
            nr_in_top_levels: 0,
            target: vec![0; levels],
        }
    }

    /// Entries (sentinels excluded).
    pub fn size(&self) -> u32 {
        self.nr
    }

    fn add_tail(&mut self, es: &mut [Entry], i: u32) {
        let l = &mut self.lists[es[i as usize].level as usize];
        es[i as usize].next = NIL;
        es[i as usize].prev = l.tail;
        if l.tail != NIL {
            es[l.tail as usize].next = i;
        } else {
            l.head = i;
        }
        l.tail = i;
        if !es[i as usize].sentinel {
            l.nr += 1;
            self.nr += 1;
        }
    }

    fn add_head(&mut self, es: &mut [Entry], i: u32) {
        let l = &mut self.lists[es[i as usize].level as usize];
        es[i as usize].prev = NIL;
        es[i as usize].next = l.head;
        if l.head != NIL {
            es[l.head as usize].prev = i;
        } else {
            l.tail = i;
        }
        l.head = i;
        if !es[i as usize].sentinel {
            l.nr += 1;
            self.nr += 1;
        }
    }

    /// Insert `i` just before `old` (which is in the level `i` goes to).
    fn add_before(&mut self, es: &mut [Entry], old: u32, i: u32) {
        let prev = es[old as usize].prev;
        if prev == NIL {
            return self.add_head(es, i);
        }
        es[i as usize].prev = prev;
        es[i as usize].next = old;
        es[prev as usize].next = i;
        es[old as usize].prev = i;
        if !es[i as usize].sentinel {
            self.lists[es[i as usize].level as usize].nr += 1;
            self.nr += 1;
        }
    }

    /// Push at the back of its level.
    pub fn push(&mut self, es: &mut [Entry], i: u32) {
        self.add_tail(es, i);
    }

    /// Push at the front of its level (ahead of the sentinels: "old" at once).
    pub fn push_front(&mut self, es: &mut [Entry], i: u32) {
        self.add_head(es, i);
    }

    /// Push in front of `old` (a sentinel of the same level).
    pub fn push_before(&mut self, es: &mut [Entry], old: u32, i: u32) {
        self.add_before(es, old, i);
    }

    pub fn del(&mut self, es: &mut [Entry], i: u32) {
        let (prev, next) = (es[i as usize].prev, es[i as usize].next);
        let l = &mut self.lists[es[i as usize].level as usize];
        if prev != NIL {
            es[prev as usize].next = next;
        } else {
            l.head = next;
        }
        if next != NIL {
            es[next as usize].prev = prev;
        } else {
            l.tail = prev;
        }
        es[i as usize].prev = NIL;
        es[i as usize].next = NIL;
        if !es[i as usize].sentinel {
            l.nr -= 1;
            self.nr -= 1;
        }
    }

    /// The oldest entry of the lowest populated level below `max_level`; without
    /// `cross_sentinel` a level is only searched up to its first sentinel.
    pub fn peek(&self, es: &[Entry], max_level: usize, cross_sentinel: bool) -> Option<u32> {
        for l in &self.lists[..max_level.min(self.lists.len())] {
            let mut i = l.head;
            while i != NIL {
                if !es[i as usize].sentinel {
                    return Some(i);
                }
                if !cross_sentinel {
                    break;
                }
                i = es[i as usize].next;
            }
        }
        None
    }

    /// Remove and return the oldest entry of the lowest level.
    pub fn pop(&mut self, es: &mut [Entry]) -> Option<u32> {
        let i = self.peek(es, self.lists.len(), true)?;
        self.del(es, i);
        Some(i)
    }

    fn set_targets_range(&mut self, nr: u32, begin: usize, end: usize) {
        let levels = (end - begin) as u32;
        let per = nr.checked_div(levels).unwrap_or(0);
        let rem = nr.checked_rem(levels).unwrap_or(0);
        for (k, t) in self.target[begin..end].iter_mut().enumerate() {
            *t = per + ((k as u32) < rem) as u32;
        }
    }

    fn set_targets(&mut self) {
        if self.last_target_nr == self.nr {
            return;
        }
        self.last_target_nr = self.nr;
        let levels = self.lists.len();
        let top = self.nr_top_levels as usize;
        if top > levels {
            self.set_targets_range(self.nr, 0, levels);
        } else {
            self.set_targets_range(self.nr_in_top_levels, levels - top, levels);
            let rest = self.nr.saturating_sub(self.nr_in_top_levels);
            self.set_targets_range(rest, 0, levels - top);
        }
    }

    /// First non-sentinel entry at `level` or above, unlinked.
    fn redist_take(&mut self, es: &mut [Entry], level: usize) -> Option<u32> {
        for lv in level..self.lists.len() {
            let mut i = self.lists[lv].head;
            while i != NIL {
                if !es[i as usize].sentinel {
                    self.del(es, i);
                    return Some(i);
                }
                i = es[i as usize].next;
            }
        }
        None
    }

    /// Move entries between neighbouring levels until each holds its target count: the
    /// oldest of the levels above fall down, the newest of a full level rise.
    pub fn redistribute(&mut self, es: &mut [Entry]) {
        self.set_targets();
        let levels = self.lists.len();
        for level in 0..levels - 1 {
            let target = self.target[level];
            while self.lists[level].nr < target {
                let Some(i) = self.redist_take(es, level + 1) else {
                    break;
                };
                es[i as usize].level = level as u8;
                self.add_tail(es, i);
            }
            while self.lists[level].nr > target {
                let mut i = self.lists[level].tail;
                while i != NIL && es[i as usize].sentinel {
                    i = es[i as usize].prev;
                }
                if i == NIL {
                    break;
                }
                self.del(es, i);
                es[i as usize].level = level as u8 + 1;
                self.add_head(es, i);
            }
        }
    }

    /// Move `i` up `extra` levels, swapping with the oldest entry of that level, which
    /// goes down to `i`'s old level (in front of sentinel `s1` or `s2`, by how many
    /// sentinels preceded it, when given).
    pub fn requeue(&mut self, es: &mut [Entry], i: u32, extra: u32, sentinels: Option<(u32, u32)>) {
        let top = self.lists.len() as u32 - 1;
        let old = es[i as usize].level as u32;
        let new_level = (old + extra).min(top);
        if extra > 0 && old < top {
            let mut passed = 0;
            let mut d = self.lists[new_level as usize].head;
            while d != NIL && es[d as usize].sentinel {
                passed += 1;
                d = es[d as usize].next;
            }
            if d != NIL {
                self.del(es, d);
                es[d as usize].level = old as u8;
                match (sentinels, passed) {
                    (Some((s1, _)), 0) => self.push_before(es, s1, d),
                    (Some((_, s2)), 1) => self.push_before(es, s2, d),
                    _ => self.push(es, d),
                }
            }
        }
        self.del(es, i);
        es[i as usize].level = new_level as u8;
        self.push(es, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena(n: usize) -> Vec<Entry> {
        vec![Entry::default(); n]
    }

    #[test]
    fn push_pop_is_fifo_per_level_lowest_first() {
        let mut es = arena(4);
        let mut q = Queue::new(4);
        es[0].level = 2;
        es[1].level = 1;
        es[2].level = 1;
        for i in 0..3 {
            q.push(&mut es, i);
        }
        assert_eq!(q.size(), 3);
        assert_eq!(q.pop(&mut es), Some(1));
        assert_eq!(q.pop(&mut es), Some(2));
        assert_eq!(q.pop(&mut es), Some(0));
        assert_eq!(q.pop(&mut es), None);
    }

    #[test]
    fn sentinel_stops_peek_unless_crossed() {
        let mut es = arena(3);
        let mut q = Queue::new(2);
        es[0].sentinel = true;
        q.push(&mut es, 0);
        q.push(&mut es, 1);
        assert_eq!(q.size(), 1);
        assert_eq!(q.peek(&es, 2, false), None);
        assert_eq!(q.peek(&es, 2, true), Some(1));
    }

    #[test]
    fn redistribute_fills_levels_to_targets_newest_rising() {
        let mut es = arena(64);
        let mut q = Queue::new(8);
        for i in 0..64 {
            q.push(&mut es, i);
        }
        q.redistribute(&mut es);
        assert_eq!(q.size(), 64);
        for l in 0..8 {
            let n = (0..64).filter(|&i| es[i].level as usize == l).count();
            assert_eq!(n, 8, "level {l}");
        }
        // The newest pushed rose highest.
        assert_eq!(es[63].level, 7);
        assert_eq!(es[0].level, 0);
    }

    #[test]
    fn requeue_swaps_with_the_level_above() {
        let mut es = arena(2);
        let mut q = Queue::new(4);
        es[1].level = 1;
        q.push(&mut es, 0);
        q.push(&mut es, 1);
        q.requeue(&mut es, 0, 1, None);
        assert_eq!((es[0].level, es[1].level), (1, 0));
        assert_eq!(q.size(), 2);
    }
}
