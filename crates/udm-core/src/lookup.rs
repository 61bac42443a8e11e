//! Finding another mapped device's target: objects a target publishes (a thin pool under its
//! pool device, snapshots under their origin's device) and the lookups other constructors do,
//! like the kernel's pool table and origin hash.
//!
//! An entry lives as long as both its `Publication` guard (kept by the publishing target, so
//! it goes with that target's table on reload, clear or remove) and the object itself
//! (held weakly here: the registry never keeps an object alive).

use parking_lot::Mutex;
use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use udm_io::DevId;

struct Entry {
    id: u64,
    key: DevId,
    ty: TypeId,
    obj: Weak<dyn Any + Send + Sync>,
}

#[derive(Default)]
struct Inner {
    entries: Mutex<Vec<Entry>>,
    next: AtomicU64,
}

/// The registry-wide table of published objects, keyed by device id and type. Cheap to clone.
#[derive(Clone, Default)]
pub struct Published {
    inner: Arc<Inner>,
}

/// Keeps a published object findable; dropping it unpublishes.
#[must_use = "the object is unpublished when the Publication is dropped"]
pub struct Publication {
    id: u64,
    reg: Weak<Inner>,
}

impl Drop for Publication {
    fn drop(&mut self) {
        if let Some(inner) = self.reg.upgrade() {
            inner.entries.lock().retain(|e| e.id != self.id);
        }
    }
}

impl Published {
    pub fn new() -> Published {
        Published::default()
    }

    /// Publish `obj` under `key`.
    pub fn publish<T: Any + Send + Sync>(&self, key: DevId, obj: &Arc<T>) -> Publication {
        let id = self.inner.next.fetch_add(1, Relaxed);
        let any: Arc<dyn Any + Send + Sync> = obj.clone();
        let mut g = self.inner.entries.lock();
        g.retain(|e| e.obj.strong_count() > 0);
        g.push(Entry {
            id,
            key,
            ty: TypeId::of::<T>(),
            obj: Arc::downgrade(&any),
        });
        Publication {
            id,
            reg: Arc::downgrade(&self.inner),
        }
    }

    /// The newest live `T` under `key`.
    pub fn lookup<T: Any + Send + Sync>(&self, key: &DevId) -> Option<Arc<T>> {
        self.lookup_all(key).pop()
    }

    /// Every live `T` under `key`, oldest first.
    pub fn lookup_all<T: Any + Send + Sync>(&self, key: &DevId) -> Vec<Arc<T>> {
        let g = self.inner.entries.lock();
        g.iter()
            .filter(|e| e.ty == TypeId::of::<T>() && &e.key == key)
            .filter_map(|e| e.obj.upgrade())
            .filter_map(|a| a.downcast::<T>().ok())
            .collect()
    }

    /// How many entries are published (live or not yet pruned), for tests and diagnostics.
    pub fn len(&self) -> usize {
        self.inner
            .entries
            .lock()
            .iter()
            .filter(|e| e.obj.strong_count() > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
