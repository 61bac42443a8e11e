//! A bounded cache of verified hash blocks (the part of the kernel's dm-bufio + `hash_verified`
//! that matters here): a block enters only after its digest matched its parent's entry.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Verified hash blocks by absolute hash-block number, evicted oldest-first.
pub struct HashCache {
    cap: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    map: HashMap<u64, Arc<[u8]>>,
    order: VecDeque<u64>,
}

impl HashCache {
    /// A cache holding at most `cap` blocks (at least 1).
    pub fn new(cap: usize) -> HashCache {
        HashCache {
            cap: cap.max(1),
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    pub fn get(&self, block: u64) -> Option<Arc<[u8]>> {
        self.inner.lock().map.get(&block).cloned()
    }

    /// Remember a verified block.
    pub fn insert(&self, block: u64, data: Arc<[u8]>) {
        let mut g = self.inner.lock();
        if g.map.insert(block, data).is_some() {
            return;
        }
        g.order.push_back(block);
        while g.order.len() > self.cap {
            if let Some(old) = g.order.pop_front() {
                g.map.remove(&old);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest() {
        let c = HashCache::new(2);
        for i in 0..3u64 {
            c.insert(i, Arc::from(vec![i as u8]));
        }
        assert!(c.get(0).is_none());
        assert_eq!(c.get(2).unwrap()[0], 2);
        c.insert(2, Arc::from(vec![9u8]));
        assert_eq!(c.len(), 2);
    }
}
