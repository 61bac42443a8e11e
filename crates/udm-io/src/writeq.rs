//! A file's queue of writes waiting for a pool thread (`FileDevice`): at most `FILE_WRITERS`
//! of the I/O pool's threads (one by default) write one regular file at a time, and later
//! writes wait in this queue for one of them, which takes them in order of arrival (with one
//! writer, a file's pool writes are done in the order they were submitted).
//!
//! Buffered writes to one file are serialised by the file system anyway (ext4, xfs take the
//! inode's lock exclusively for the whole copy into the page cache): with all the pool's
//! threads on one file, all but one waited for that lock, spinning while its holder ran
//! (profiled with four NBD connections writing 1 MiB blocks: an eighth of the daemon's CPU
//! in the lock's spinning and sleeping), on a machine where that CPU is what the requests'
//! payloads are received with. Reads never wait here (they go to the pool directly), nor do
//! other files' writes.
//!
//! No lock is held while a write runs or completes: a completion that submits another write
//! to the same file only queues it, and the writer taking the queue finds it next.

use crate::Bio;
use parking_lot::Mutex;
use std::collections::VecDeque;

/// The default number of threads writing one file at once (`UDM_FILE_WRITERS` overrides; 0
/// turns the queue off: every write is a pool job of its own, as before it). Measured with
/// four NBD connections writing 1 MiB blocks on 2 busy cores, 1, 2 and 8 (no queue) were
/// within the noise of each other in throughput; with one, the lock's spinning was gone from
/// the profile (with eight it had been up to an eighth of the daemon's CPU on a quiet
/// machine), and pool writes keep their order.
pub const FILE_WRITERS: usize = 1;

/// A writer takes at most this many writes in a row before it lets the pool run the jobs
/// queued behind it (it keeps its place as a writer and comes back).
pub(crate) const WRITER_BATCH: usize = 16;

/// The writers allowed per file, read once.
pub(crate) fn file_writers() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("UDM_FILE_WRITERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(FILE_WRITERS, |n| n.min(64))
    })
}

/// Writes waiting, and how many writers are at work.
#[derive(Default)]
pub(crate) struct WriteQueue {
    state: Mutex<(VecDeque<Bio>, usize)>,
}

impl WriteQueue {
    /// Queue `bio`; true when the caller must start a writer for it (fewer than `max` are at
    /// work; it is counted from now on).
    pub(crate) fn push(&self, bio: Bio, max: usize) -> bool {
        let mut s = self.state.lock();
        s.0.push_back(bio);
        if s.1 < max {
            s.1 += 1;
            true
        } else {
            false
        }
    }

    /// The next write for a writer; `None` when there is none, and the writer is then no
    /// longer counted (it must stop).
    pub(crate) fn pop(&self) -> Option<Bio> {
        let mut s = self.state.lock();
        let b = s.0.pop_front();
        if b.is_none() {
            s.1 -= 1;
        }
        b
    }
}
