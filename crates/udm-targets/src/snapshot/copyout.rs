//! Copying chunks in batches (the kernel's pending exceptions and merge batches): runs of
//! chunks that are consecutive on both sides go to the block copier as one job each, all
//! jobs of a batch in flight together; the exceptions they make are then added in chunk
//! order; the origin writes wait for their group commit (`commit`), not the worker.

use super::commit::{after_commits, copy_begins, copy_ends};
use super::snap::{OriginHub, SnapInner, SnapShared};
use std::collections::HashSet;
use std::sync::atomic::Ordering::SeqCst;
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

/// Copy the chunks of `ranges` (origin sectors) this snapshot lacks into its COW and add
/// them to its table; the generation a commit must reach before the origin writes go (these
/// exceptions, or chunks an earlier batch copied that are not on disk yet), if one must.
fn copy_out_one(s: &SnapShared, g: &mut SnapInner, ranges: &[(u64, u64)]) -> Option<u64> {
    let must_wait =
        |g: &SnapInner| (g.valid && !g.store.is_durable(g.store.gen())).then(|| g.store.gen());
    if !g.valid {
        return None;
    }
    let cs = g.store.chunk;
    let slen = s.len.load(SeqCst);
    let mut seen = HashSet::new();
    let mut todo = Vec::new();
    'ranges: for &(sector, len) in ranges.iter().filter(|r| r.1 > 0) {
        for c in sector / cs..=sector.saturating_add(len - 1) / cs {
            if c.saturating_mul(cs) >= slen {
                break;
            }
            if g.store.lookup(c).is_some() || !seen.insert(c) {
                continue;
            }
            match g.store.prepare() {
                Ok(n) => todo.push((c, n)),
                Err(_) => {
                    s.invalidate(g, &IoError::NoSpace);
                    break 'ranges;
                }
            }
        }
    }
    if !g.valid || todo.is_empty() {
        return must_wait(g);
    }
    let osize = s.origin.size().0;
    if copy_runs_to(&s.copier, &s.origin, &s.cow, &runs(&todo), cs, osize).is_err() {
        s.invalidate(g, &IoError::Io);
        return None;
    }
    for (c, n) in todo {
        g.store.add(c, n);
    }
    must_wait(g)
}

/// The kernel's `__origin_write`: before the origin ranges `(sector, len)` change, copy every
/// chunk they touch into each active snapshot that has not copied it (except `skip`). Returns
/// the commits the origin writes must wait for: each snapshot with the generation its
/// exceptions reach (none if every copy is durable already). Snapshots are served side by
/// side, each under its own lock while it copies (a chunk enters the table only once copied,
/// so nothing reads its new data as the snapshot's).
pub(crate) fn copy_out_pending(
    hub: &OriginHub,
    ranges: &[(u64, u64)],
    skip: Option<&SnapShared>,
) -> Vec<(Arc<SnapShared>, u64)> {
    let snaps: Vec<_> = hub
        .snapshots()
        .into_iter()
        .filter(|s| s.takes_copies() && !skip.is_some_and(|k| std::ptr::eq(k, &**s)))
        .collect();
    let one = |s: &Arc<SnapShared>| {
        copy_begins(s);
        let w = copy_out_one(s, &mut s.st.lock(), ranges);
        copy_ends(s);
        w
    };
    let waits: Vec<Option<u64>> = match snaps.as_slice() {
        [] => Vec::new(),
        [s] => vec![one(s)],
        many => std::thread::scope(|sc| {
            let hs: Vec<_> = many[1..].iter().map(|s| sc.spawn(|| one(s))).collect();
            let mut w = vec![one(&many[0])];
            w.extend(hs.into_iter().map(|h| h.join().expect("copy-out thread")));
            w
        }),
    };
    snaps
        .into_iter()
        .zip(waits)
        .filter_map(|(s, w)| w.map(|gen| (s, gen)))
        .collect()
}

/// [`copy_out_pending`], then `then` (the origin writes) once those commits are durable (a
/// group commit shared with other batches; the caller's thread does not wait for it).
pub(crate) fn copy_out_then(
    hub: &OriginHub,
    ranges: &[(u64, u64)],
    skip: Option<&SnapShared>,
    then: Box<dyn FnOnce() + Send>,
) {
    after_commits(copy_out_pending(hub, ranges, skip), then);
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
