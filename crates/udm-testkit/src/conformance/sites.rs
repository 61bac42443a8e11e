//! `CompletionSites`: a pass-through device that records whether each bio completed inline
//! (on the submitting thread, inside `submit`) or later on another thread.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use udm_io::{Bio, BlockDevice, DevId, Extent, Limits, Sectors};

/// Wraps a device and counts where completions ran: on the submitting thread, inside
/// `submit` (inline), or later on another thread (queued). Lets a test prove which of a
/// device's paths the suite exercised.
pub struct CompletionSites {
    inner: Arc<dyn BlockDevice>,
    inline: Arc<AtomicU64>,
    queued: Arc<AtomicU64>,
}

impl CompletionSites {
    pub fn new(inner: Arc<dyn BlockDevice>) -> CompletionSites {
        CompletionSites {
            inner,
            inline: Arc::default(),
            queued: Arc::default(),
        }
    }
    /// (inline, queued) completions so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.inline.load(SeqCst), self.queued.load(SeqCst))
    }
}

impl BlockDevice for CompletionSites {
    fn submit(&self, bio: Bio) {
        let me = std::thread::current().id();
        let (inline, queued) = (self.inline.clone(), self.queued.clone());
        let bio = bio.on_end(move |r, _| {
            if std::thread::current().id() == me {
                inline.fetch_add(1, SeqCst);
            } else {
                queued.fetch_add(1, SeqCst);
            }
            r
        });
        self.inner.submit(bio)
    }
    fn size(&self) -> Sectors {
        self.inner.size()
    }
    fn id(&self) -> DevId {
        self.inner.id()
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        self.inner.extents(sector, len)
    }
}
