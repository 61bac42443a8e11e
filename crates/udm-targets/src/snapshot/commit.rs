//! Group commit of a persistent snapshot's exceptions (the kernel commits when every
//! pending exception in flight is done): origin batches and snapshot-write batches add their
//! exceptions under the snapshot's lock and ask for a commit here; one committer thread per
//! snapshot writes the metadata once for all that asked meanwhile (the current area, and any
//! areas that filled since the last commit: see `cow`), while the workers go on with the
//! next batches. Each request's callback (submitting the origin writes, acknowledging the
//! snapshot writes) runs only once its exceptions are on disk, so no origin write reaches a
//! chunk before its copy is durable and no snapshot write is acknowledged before its
//! exception is.

use super::snap::SnapShared;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::Worker;

type Done = Box<dyn FnOnce() + Send>;

/// Batches a commit may wait for while copies keep coming, before it goes anyway.
const MAX_DEFERRED: usize = 32;

/// The committer of one snapshot.
pub(crate) struct GroupCommit {
    waiting: Mutex<Vec<Done>>,
    /// Origin batches copying into this snapshot now: the commit waits for them, so their
    /// exceptions join it (the kernel commits once no pending exception is in flight).
    copying: AtomicUsize,
    scheduled: AtomicBool,
    worker: Worker,
}

impl GroupCommit {
    pub(crate) fn new() -> GroupCommit {
        GroupCommit {
            waiting: Mutex::default(),
            copying: AtomicUsize::new(0),
            scheduled: AtomicBool::new(false),
            worker: Worker::new("snapshot-commit"),
        }
    }
}

/// Run `done` once every exception `sh` held when this is called is on disk (at once if
/// they are). A failing commit invalidates the snapshot; `done` still runs (the origin
/// goes on without the snapshot, as in the kernel).
pub(crate) fn after_commit(sh: &Arc<SnapShared>, done: Done) {
    sh.committer.waiting.lock().push(done);
    schedule(sh);
}

fn schedule(sh: &Arc<SnapShared>) {
    let c = &sh.committer;
    if !c.scheduled.swap(true, SeqCst) {
        let me = sh.clone();
        c.worker.spawn(move || run(&me));
    }
}

/// An origin batch starts copying into `sh`.
pub(crate) fn copy_begins(sh: &SnapShared) {
    sh.committer.copying.fetch_add(1, SeqCst);
}

/// That batch's copies are in the table: a commit left waiting for it may go.
pub(crate) fn copy_ends(sh: &Arc<SnapShared>) {
    let c = &sh.committer;
    if c.copying.fetch_sub(1, SeqCst) == 1 && !c.waiting.lock().is_empty() {
        schedule(sh);
    }
}

fn run(sh: &SnapShared) {
    sh.committer.scheduled.store(false, SeqCst);
    if sh.committer.copying.load(SeqCst) > 0 && sh.committer.waiting.lock().len() < MAX_DEFERRED {
        // The last copy to end schedules the commit (see `copy_ends`).
        return;
    }
    let waiters = std::mem::take(&mut *sh.committer.waiting.lock());
    if waiters.is_empty() {
        return;
    }
    // Everything added before the requests is in this copy of the area (and maybe more).
    let pending = {
        let mut g = sh.st.lock();
        if g.valid {
            g.store.take_pending()
        } else {
            None
        }
    };
    if let Some(p) = pending {
        // The committer may block: its flush and area writes run on this thread instead of
        // two round trips through the I/O pool per commit.
        if let Err(e) = udm_io::with_blocking_submit(|| p.write(&*sh.cow)) {
            let mut g = sh.st.lock();
            sh.invalidate(&mut g, &e);
        }
    }
    for w in waiters {
        w();
    }
}

/// Run `done` once every exception of each of `pending` (when called) is durable: at
/// once if none waits.
pub(crate) fn after_commits(pending: Vec<Arc<SnapShared>>, done: Done) {
    if pending.is_empty() {
        return done();
    }
    let left = Arc::new(AtomicUsize::new(pending.len()));
    let done = Arc::new(Mutex::new(Some(done)));
    for s in &pending {
        let (left, done) = (left.clone(), done.clone());
        after_commit(
            s,
            Box::new(move || {
                if left.fetch_sub(1, SeqCst) == 1 {
                    if let Some(d) = done.lock().take() {
                        d();
                    }
                }
            }),
        );
    }
}
