//! Group commit of a persistent snapshot's exceptions (the kernel commits when every
//! pending exception in flight is done): origin batches add their exceptions under the
//! snapshot's lock and ask for a commit here; one committer thread per snapshot writes the
//! metadata area once for all that asked meanwhile, while the origin's worker copies the
//! next batches. Each request's callback (submitting the origin writes) runs only once its
//! exceptions are on disk, so no origin write reaches a chunk before its copy is durable.

use super::snap::SnapShared;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::Worker;

type Done = Box<dyn FnOnce() + Send>;

/// The committer of one snapshot.
pub(crate) struct GroupCommit {
    waiting: Mutex<Vec<Done>>,
    scheduled: AtomicBool,
    worker: Worker,
}

impl GroupCommit {
    pub(crate) fn new() -> GroupCommit {
        GroupCommit {
            waiting: Mutex::default(),
            scheduled: AtomicBool::new(false),
            worker: Worker::new("snapshot-commit"),
        }
    }
}

/// Run `done` once every exception `sh` held when this is called is on disk (at once if
/// they are). A failing commit invalidates the snapshot; `done` still runs (the origin
/// goes on without the snapshot, as in the kernel).
pub(crate) fn after_commit(sh: &Arc<SnapShared>, done: Done) {
    let c = &sh.committer;
    c.waiting.lock().push(done);
    if !c.scheduled.swap(true, SeqCst) {
        let me = sh.clone();
        c.worker.spawn(move || run(&me));
    }
}

fn run(sh: &SnapShared) {
    sh.committer.scheduled.store(false, SeqCst);
    let waiters = std::mem::take(&mut *sh.committer.waiting.lock());
    if waiters.is_empty() {
        return;
    }
    // Everything added before the requests is in this copy of the area (and maybe more).
    let pending = {
        let g = sh.st.lock();
        if g.valid {
            g.store.take_pending()
        } else {
            None
        }
    };
    if let Some(p) = pending {
        if let Err(e) = p.write(&*sh.cow) {
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
