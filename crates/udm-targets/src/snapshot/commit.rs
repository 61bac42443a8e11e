//! Group commit of a persistent snapshot's exceptions (the kernel commits when every
//! pending exception in flight is done): origin batches and snapshot-write batches add their
//! exceptions under the snapshot's lock and ask here for a commit covering their generation;
//! one committer thread per snapshot runs the store's commit pipeline (`cow`: each step a
//! flush, then the areas of every exception added before it) while the workers go on with
//! the next batches, so back-to-back commits share their flushes. Each request's callback
//! (submitting the origin writes, acknowledging the snapshot writes) runs only once its
//! exceptions are on disk, so no origin write reaches a chunk before its copy is durable and
//! no snapshot write is acknowledged before its exception is.

use super::snap::SnapShared;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::Worker;

type Done = Box<dyn FnOnce() + Send>;

/// Batches an idle committer may wait for while copies keep coming, before it starts anyway.
const MAX_DEFERRED: usize = 32;

/// The committer of one snapshot.
pub(crate) struct GroupCommit {
    /// Callbacks and the generation each waits for.
    waiting: Mutex<Vec<(u64, Done)>>,
    /// Origin batches copying into this snapshot now: the commit waits for them, so their
    /// exceptions join it (the kernel commits once no pending exception is in flight).
    copying: AtomicUsize,
    scheduled: AtomicBool,
    worker: Worker,
    /// Runs the callbacks of durable commits (the origin writes and acknowledgements), so
    /// the committer goes on with the next step meanwhile.
    releaser: Worker,
}

impl GroupCommit {
    pub(crate) fn new() -> GroupCommit {
        GroupCommit {
            waiting: Mutex::default(),
            copying: AtomicUsize::new(0),
            scheduled: AtomicBool::new(false),
            worker: Worker::new("snapshot-commit"),
            releaser: Worker::new("snapshot-release"),
        }
    }
}

/// Run `done` once every exception of `sh` up to generation `gen` is on disk. A failing
/// commit invalidates the snapshot; `done` still runs (the origin goes on without the
/// snapshot, as in the kernel).
pub(crate) fn after_commit(sh: &Arc<SnapShared>, gen: u64, done: Done) {
    sh.committer.waiting.lock().push((gen, done));
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
    let c = &sh.committer;
    c.scheduled.store(false, SeqCst);
    if c.copying.load(SeqCst) > 0 && c.waiting.lock().len() < MAX_DEFERRED {
        // The last copy to end schedules the commit (see `copy_ends`).
        return;
    }
    loop {
        // Every exception added so far: their copies are written, so this step's flush
        // makes them stable (and the areas of the step before).
        let pending = {
            let mut g = sh.st.lock();
            if g.valid {
                g.store.take_pending()
            } else {
                None
            }
        };
        let Some(p) = pending else { break };
        // The committer may block: its flushes and area writes run on this thread instead
        // of round trips through the I/O pool.
        if let Err(e) = udm_io::with_blocking_submit(|| p.step(&*sh.cow)) {
            let mut g = sh.st.lock();
            sh.invalidate(&mut g, &e);
            break;
        }
        release(sh, false);
    }
    // All durable, or the snapshot is invalid: then everyone goes on without it.
    let invalid = !sh.st.lock().valid;
    release(sh, invalid);
}

/// Run the callbacks whose generation is durable (all of them with `all`).
fn release(sh: &SnapShared, all: bool) {
    let ready: Vec<Done> = {
        let durable = sh.durable.load(SeqCst);
        let mut w = sh.committer.waiting.lock();
        let (now, later) = std::mem::take(&mut *w)
            .into_iter()
            .partition(|(gen, _)| all || *gen <= durable);
        *w = later;
        now.into_iter().map(|(_, d)| d).collect()
    };
    if !ready.is_empty() {
        sh.committer.releaser.spawn(move || {
            for d in ready {
                d();
            }
        });
    }
}

/// Run `done` once every exception of each of `pending` up to its generation is durable:
/// at once if none waits.
pub(crate) fn after_commits(pending: Vec<(Arc<SnapShared>, u64)>, done: Done) {
    if pending.is_empty() {
        return done();
    }
    let left = Arc::new(AtomicUsize::new(pending.len()));
    let done = Arc::new(Mutex::new(Some(done)));
    for (s, gen) in &pending {
        let (left, done) = (left.clone(), done.clone());
        after_commit(
            s,
            *gen,
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
