//! Copying chunks in batches (the kernel's pending exceptions and merge batches). An origin
//! batch allocates its COW chunks at once and marks them copying; each snapshot's writer
//! then copies what the batches queued since it last looked, runs of chunks consecutive on
//! both sides in one piece (`copy_file_range` when both sides are files, else the block
//! copier, all runs in flight together), and adds the exceptions in allocation order; the
//! origin writes wait for their group commit (`commit`), not the worker.

use super::commit::{after_commits, copy_begins, copy_ends};
use super::snap::{OriginHub, SnapInner, SnapShared};
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::{Copier, Loc};
use udm_io::{copy_in_kernel, BlockDevice, IoError, Sectors};

/// `(first source chunk, first destination chunk, chunks)` runs of `pairs` (source,
/// destination), merging neighbours that continue both sides.
pub(crate) fn runs(pairs: &[(u64, u64)]) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for &(s, d) in pairs {
        match out.last_mut() {
            Some((rs, rd, n)) if rs.wrapping_add(*n) == s && rd.wrapping_add(*n) == d => *n += 1,
            _ => out.push((s, d, 1)),
        }
    }
    out
}

/// Which side of a batch copy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyFail {
    Read,
    Write,
}

/// Copy every run (chunks of `cs` sectors) from `src` to `dst` at once and wait for all;
/// `limit` caps what is read from the source (its size: a last partial chunk). Runs
/// pointing past any device fail (as a read), they do not overflow. Each run's write-back
/// on `dst` starts as soon as it is copied, so the flush that follows a batch finds most
/// of it on its way to the disk already.
pub(crate) fn copy_runs_to(
    copier: &Copier,
    src: &Arc<dyn BlockDevice>,
    dst: &Arc<dyn BlockDevice>,
    runs: &[(u64, u64, u64)],
    cs: u64,
    limit: u64,
) -> Result<(), CopyFail> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut jobs = Vec::new();
    let mut r = Ok(());
    for &(s, d, n) in runs {
        let (Some(from), Some(to)) = (s.checked_mul(cs), d.checked_mul(cs)) else {
            r = Err(CopyFail::Read);
            break;
        };
        let count = n.saturating_mul(cs).min(limit.saturating_sub(from));
        // Plain file data on both sides: copied inside the kernel, page cache to page cache.
        if count > 0 && copy_in_kernel(&**src, Sectors(from), &**dst, Sectors(to), Sectors(count)) {
            dst.start_writeback(Sectors(to), Sectors(count));
            continue;
        }
        let tx = tx.clone();
        let job = jobs.len();
        copier.copy(
            Loc::new(src.clone(), Sectors(from)),
            vec![Loc::new(dst.clone(), Sectors(to))],
            Sectors(count),
            Box::new(move |o| drop(tx.send((job, o)))),
        );
        jobs.push((to, count));
    }
    for _ in 0..jobs.len() {
        let (job, o) = rx.recv().expect("copier completes every job");
        if o.is_ok() {
            let (to, count) = jobs[job];
            dst.start_writeback(Sectors(to), Sectors(count));
        } else if r.is_ok() {
            r = Err(if o.read.is_err() {
                CopyFail::Read
            } else {
                CopyFail::Write
            });
        }
    }
    r
}

/// The commit an origin batch's writes wait for in one snapshot: its generation, if the
/// exceptions up to now are not all on disk.
fn must_wait(g: &SnapInner) -> Option<u64> {
    (g.valid && !g.store.is_durable(g.store.gen())).then(|| g.store.gen())
}

/// Under the snapshot's lock, in arrival order: allocate COW chunks for the chunks of
/// `ranges` (origin sectors) this snapshot lacks and mark them copying. Returns those
/// `(origin chunk, COW chunk)` pairs, and whether the batch must go through the writer:
/// it has chunks to copy, or it touches chunks an earlier batch is copying (whose commit
/// its origin writes wait for too).
fn prepare_one(
    s: &SnapShared,
    g: &mut MutexGuard<'_, SnapInner>,
    ranges: &[(u64, u64)],
) -> (Vec<(u64, u64)>, bool) {
    if !g.valid {
        return (Vec::new(), false);
    }
    let cs = g.store.chunk;
    let slen = s.len.load(SeqCst);
    let mut seen = HashSet::new();
    let mut todo = Vec::new();
    let mut behind = false;
    'ranges: for &(sector, len) in ranges.iter().filter(|r| r.1 > 0) {
        for c in sector / cs..=sector.saturating_add(len - 1) / cs {
            if c.saturating_mul(cs) >= slen {
                break;
            }
            if !seen.insert(c) || g.store.lookup(c).is_some() {
                continue;
            }
            if g.copying.contains(&c) {
                behind = true;
                continue;
            }
            match g.store.prepare() {
                Ok(n) => {
                    g.copying.insert(c);
                    todo.push((c, n));
                }
                Err(_) => {
                    // The exceptions made before the COW filled are in the table (and
                    // committed) before it is dropped, as in the kernel; this batch's go.
                    for (c, _) in todo.drain(..) {
                        g.copying.remove(&c);
                    }
                    s.wait_all_copied(g);
                    s.invalidate(g, &IoError::NoSpace);
                    break 'ranges;
                }
            }
        }
    }
    let queue = behind || !todo.is_empty();
    (todo, queue)
}

/// An origin batch's chunks for one snapshot's writer, and the batch to report to.
pub(crate) type CopyJob = (Vec<(u64, u64)>, Arc<Join>);

/// On the snapshot's writer, the jobs queued since it last looked, in order: copy their
/// chunks (origin → COW, `copy_runs_to`; the runs of consecutive batches join), then add
/// their exceptions, or invalidate the snapshot if a copy failed; then each batch learns
/// the commit its writes wait for.
pub(crate) fn finish_copies(s: &Arc<SnapShared>, jobs: Vec<CopyJob>) {
    // A commit due now waits for these copies, so their exceptions join it.
    copy_begins(s);
    let cs = s.st.lock().store.chunk;
    let todo: Vec<(u64, u64)> = jobs.iter().flat_map(|j| j.0.iter().copied()).collect();
    let osize = s.origin.size().0;
    let ok = todo.is_empty()
        || copy_runs_to(&s.copier, &s.origin, &s.cow, &runs(&todo), cs, osize).is_ok();
    let w = {
        let mut g = s.st.lock();
        for (c, _) in &todo {
            g.copying.remove(c);
        }
        if g.valid {
            if ok {
                for (c, n) in todo {
                    g.store.add(c, n);
                }
            } else {
                s.invalidate(&mut g, &IoError::Io);
            }
        }
        s.copied.notify_all();
        must_wait(&g)
    };
    for (_, join) in jobs {
        join.arrive(w.map(|gen| (s.clone(), gen)));
    }
    copy_ends(s);
}

/// The kernel's `__origin_write`: before the origin ranges `(sector, len)` change, copy every
/// chunk they touch into each active snapshot that has not copied it (except `skip`), then
/// run `then` (the origin writes) once the commits covering those copies are durable (a
/// group commit shared with other batches). The COW chunks are allocated before this
/// returns, in arrival order (so later snapshot writes get theirs after them, as in the
/// kernel); the copies run on each snapshot's writer meanwhile, batch after batch, and
/// enter the table when done. The caller's thread waits for neither.
pub(crate) fn copy_out_then(
    hub: &OriginHub,
    ranges: &[(u64, u64)],
    skip: Option<&SnapShared>,
    then: Box<dyn FnOnce() + Send>,
) {
    let snaps: Vec<_> = hub
        .snapshots()
        .into_iter()
        .filter(|s| s.takes_copies() && !skip.is_some_and(|k| std::ptr::eq(k, &**s)))
        .collect();
    let join = Arc::new(Join {
        left: AtomicUsize::new(snaps.len()),
        waits: Mutex::new(Vec::new()),
        then: Mutex::new(Some(then)),
    });
    if snaps.is_empty() {
        return join.done();
    }
    for s in snaps {
        let (todo, now) = {
            let mut g = s.st.lock();
            let (todo, queue) = prepare_one(&s, &mut g, ranges);
            // Nothing to copy nor to wait behind: the commit to wait for is known now.
            (todo, (!queue).then(|| must_wait(&g)))
        };
        if let Some(w) = now {
            join.arrive(w.map(|gen| (s, gen)));
            continue;
        }
        let me = s.clone();
        s.copies.push(&s.writer, (todo, join.clone()), move |jobs| {
            finish_copies(&me, jobs)
        });
    }
}

/// An origin batch's snapshots reporting the commits its writes wait for.
pub(crate) struct Join {
    left: AtomicUsize,
    waits: Mutex<Vec<(Arc<SnapShared>, u64)>>,
    then: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Join {
    fn arrive(&self, wait: Option<(Arc<SnapShared>, u64)>) {
        if let Some(w) = wait {
            self.waits.lock().push(w);
        }
        if self.left.fetch_sub(1, SeqCst) == 1 {
            self.done();
        }
    }
    fn done(&self) {
        if let Some(then) = self.then.lock().take() {
            after_commits(std::mem::take(&mut *self.waits.lock()), then);
        }
    }
}

/// [`copy_out_then`], waiting for the commits.
pub(crate) fn copy_out(hub: &OriginHub, ranges: &[(u64, u64)], skip: Option<&SnapShared>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    copy_out_then(
        hub,
        ranges,
        skip,
        Box::new(move || {
            let _ = tx.send(());
        }),
    );
    let _ = rx.recv();
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_join_neighbours_on_both_sides() {
        assert_eq!(
            runs(&[(4, 10), (5, 11), (6, 13), (7, 14), (9, 15), (1, 2)]),
            vec![(4, 10, 2), (6, 13, 2), (9, 15, 1), (1, 2, 1)]
        );
        assert!(runs(&[]).is_empty());
    }
}
