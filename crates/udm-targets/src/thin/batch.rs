//! The pool worker's queue and its provisioning batches. Bios of all thin devices wait in
//! the queue and the worker takes all that gathered at once: reads and plain writes of
//! cached mappings are remapped at once; writes to distinct blocks are provisioned side by
//! side (every new block allocated, the parts of each block the write does not cover
//! copied from the shared block or the external origin or zeroed, all data writes and fills
//! in flight together, then every mapping inserted), and the FUA writes among them complete
//! after one commit that covers them all; everything else keeps its order through
//! `io::process`. A batch is one worker job, so no commit sees a block allocated but not
//! yet mapped. While the pool is suspended the worker holds the bios instead.

use super::io::{self, alloc, alloc_once, lookup_for_write, out_of_space};
use super::pool::{MdError, Pool, PoolMode};
use super::thin::ThinShared;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::{CopyOutcome, Loc};
use udm_io::{Bio, BioFlags, IoError, Op, Sectors};
use udm_pdata::PdataError;

impl Pool {
    /// Queue `bio` of thin device `t`; make sure a worker job will take the queue.
    pub(crate) fn enqueue(self: &Arc<Self>, t: Arc<ThinShared>, bio: Bio) {
        self.queue.lock().push((t, bio));
        if !self.queue_scheduled.swap(true, SeqCst) {
            let me = self.clone();
            self.worker.spawn(move || {
                me.queue_scheduled.store(false, SeqCst);
                let bios = std::mem::take(&mut *me.queue.lock());
                run(&me, bios);
            });
        }
    }
}

/// Whether `bio` may join a group of provisioning writes (a PREFLUSH write needs the flush
/// first, so it goes alone, in order).
fn groupable(bio: &Bio) -> bool {
    bio.op == Op::Write && !bio.flags.contains(BioFlags::PREFLUSH)
}

fn run(pool: &Pool, bios: Vec<(Arc<ThinShared>, Bio)>) {
    let mut group: Vec<(Arc<ThinShared>, Bio)> = Vec::new();
    let mut keys = HashSet::new();
    for (t, bio) in bios {
        if t.requeue_mode.load(SeqCst) {
            t.requeuer.requeue(bio);
            continue;
        }
        let bio = match pool.hold(&t, bio) {
            Ok(()) => continue,
            Err(bio) => bio,
        };
        let bio = match t.remap_cached(bio) {
            Ok(remapped) => {
                t.pool_dev.dev.submit(remapped);
                continue;
            }
            Err(bio) => bio,
        };
        let key = (t.dev_id, bio.sector.0 / pool.block_size);
        if groupable(&bio) && keys.insert(key) {
            group.push((t, bio));
            continue;
        }
        write_group(pool, std::mem::take(&mut group));
        keys.clear();
        io::process(&t, bio);
    }
    write_group(pool, group);
}

/// A provisioning write under way: its bio (back once its data write ends), where it goes.
struct Pending {
    t: Arc<ThinShared>,
    v: u64,
    new: u64,
    fua: bool,
}

/// Writes (each within one block, no two to the same block) of `pool`'s thin devices:
/// those to mapped exclusive blocks are remapped at once; the others get new blocks, filled
/// and written together, then mapped together; FUA ones complete after one commit.
pub(super) fn write_group(pool: &Pool, group: Vec<(Arc<ThinShared>, Bio)>) {
    if group.is_empty() {
        return;
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut inflight = 0;
    let mut landed: Vec<(Pending, Bio, Result<(), IoError>)> = Vec::new();
    for (t, mut bio) in group {
        if pool.mode() == PoolMode::Fail {
            bio.complete(Err(IoError::Io));
            continue;
        }
        let v = bio.sector.0 / pool.block_size;
        let old = match lookup_for_write(pool, t.dev_id, v) {
            Err(e) => {
                bio.complete(Err(e.io()));
                continue;
            }
            // Mapped and not shared: a plain remap (FUA commits once it is written).
            Ok(Some((b, false))) => {
                pool.remember(t.dev_id, v, b, true);
                bio.sector = Sectors(b * pool.block_size + bio.sector.0 % pool.block_size);
                io::remap_write(&t, bio);
                continue;
            }
            Ok(Some((b, true))) => Some(b),
            Ok(None) => None,
        };
        if pool.mode() >= PoolMode::ReadOnly {
            bio.complete(Err(IoError::Io));
            continue;
        }
        let new = match alloc_once(pool) {
            Ok(b) => Ok(b),
            // Blocks freed in this transaction come back with a commit, which must not see
            // this batch's blocks allocated but unmapped: map those first.
            Err(MdError::Pdata(PdataError::NoSpace("data"))) => {
                while inflight > 0 {
                    landed.push(rx.recv().expect("every provisioning write ends"));
                    inflight -= 1;
                }
                map_landed(pool, std::mem::take(&mut landed));
                alloc(pool)
            }
            Err(e) => Err(e),
        };
        let new = match new {
            Ok(b) => b,
            Err(MdError::Pdata(PdataError::NoSpace("data"))) => {
                out_of_space(&t, bio);
                continue;
            }
            Err(e) => {
                bio.complete(Err(e.io()));
                continue;
            }
        };
        let p = Pending {
            fua: bio.flags.contains(BioFlags::FUA),
            t,
            v,
            new,
        };
        start(pool, p, bio, old, tx.clone());
        inflight += 1;
    }
    for _ in 0..inflight {
        landed.push(rx.recv().expect("every provisioning write ends"));
    }
    map_landed(pool, landed);
}

/// Insert the mappings of the writes that landed; complete them (the FUA ones after a
/// commit covering them all).
fn map_landed(pool: &Pool, landed: Vec<(Pending, Bio, Result<(), IoError>)>) {
    let mut fua = Vec::new();
    for (p, bio, r) in landed {
        let r = match r {
            Err(e) => {
                let _ = pool.with_md(true, |md| md.free_data_block(p.new));
                Err(e)
            }
            Ok(()) => match pool.with_md(true, |md| md.insert(p.t.dev_id, p.v, p.new)) {
                Ok(()) => {
                    pool.remember(p.t.dev_id, p.v, p.new, true);
                    Ok(())
                }
                Err(e) => Err(e.io()),
            },
        };
        if p.fua && r.is_ok() {
            fua.push(bio);
        } else {
            bio.complete(r);
        }
    }
    if !fua.is_empty() {
        let r = io::flush_all(pool);
        for bio in fua {
            bio.complete(r);
        }
    }
}

/// Counts down the pieces of one provisioning write (its data write and the fills of the
/// parts it does not cover); the last one sends the outcome.
struct Join {
    left: AtomicUsize,
    err: Mutex<Option<IoError>>,
    bio: Mutex<Option<Bio>>,
    send: Mutex<Option<(Pending, crossbeam_channel::Sender<LandedMsg>)>>,
}

type LandedMsg = (Pending, Bio, Result<(), IoError>);

impl Join {
    fn done(&self, r: Result<(), IoError>) {
        if let Err(e) = r {
            self.err.lock().get_or_insert(e);
        }
        if self.left.fetch_sub(1, SeqCst) != 1 {
            return;
        }
        let bio = self.bio.lock().take().expect("the data write ended");
        let (p, tx) = self.send.lock().take().expect("sent once");
        let r = match self.err.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        drop(tx.send((p, bio, r)));
    }
}

fn outcome(o: CopyOutcome) -> Result<(), IoError> {
    o.read?;
    for w in o.writes {
        w?;
    }
    Ok(())
}

/// One piece of filling a new block: copy from a device, or zero.
enum Fill {
    Copy(Loc, Sectors, Sectors),
    Zero(Sectors, Sectors),
}

/// What the parts `[a, b)` of the new block for `v` (not covered by the write) get: the
/// old block's data when breaking sharing, else the external origin as far as it reaches
/// and zeroes after it (unless zeroing is skipped).
fn fills(pool: &Pool, t: &ThinShared, v: u64, old: Option<u64>, a: u64, b: u64) -> Vec<Fill> {
    let bs = pool.block_size;
    if let Some(old) = old {
        let src = Loc::new(t.pool_dev.dev.clone(), Sectors(old * bs + a));
        return vec![Fill::Copy(src, Sectors(a), Sectors(b - a))];
    }
    let mut out = Vec::new();
    let vstart = v * bs;
    let mut from_origin = 0;
    if let Some(o) = &t.origin {
        let origin_size = t.origin_size.load(SeqCst);
        from_origin = origin_size.saturating_sub(vstart).min(bs);
        let end = b.min(from_origin);
        if a < end {
            let src = Loc::new(o.dev.clone(), Sectors(vstart + a));
            out.push(Fill::Copy(src, Sectors(a), Sectors(end - a)));
        }
    }
    let za = a.max(from_origin);
    if za < b && pool.features().zero_new_blocks {
        out.push(Fill::Zero(Sectors(za), Sectors(b - za)));
    }
    out
}

/// Start the data write of `bio` into new block `p.new` and the fills of the rest of the
/// block; the outcome goes to `tx` once all of them ended.
fn start(
    pool: &Pool,
    p: Pending,
    mut bio: Bio,
    old: Option<u64>,
    tx: crossbeam_channel::Sender<LandedMsg>,
) {
    let bs = pool.block_size;
    let off = bio.sector.0 % bs;
    let end = off + bio.len().0;
    let mut pieces = Vec::new();
    for (a, b) in [(0, off), (end, bs)] {
        if a < b {
            pieces.extend(fills(pool, &p.t, p.v, old, a, b));
        }
    }
    let dev = p.t.pool_dev.dev.clone();
    let dst = Sectors(p.new * bs);
    let join = Arc::new(Join {
        left: AtomicUsize::new(pieces.len() + 1),
        err: Mutex::new(None),
        bio: Mutex::new(None),
        send: Mutex::new(Some((p, tx))),
    });
    for piece in pieces {
        let j = join.clone();
        let done = Box::new(move |o| j.done(outcome(o)));
        match piece {
            Fill::Copy(src, at, len) => {
                pool.copier
                    .copy(src, vec![Loc::new(dev.clone(), dst + at)], len, done)
            }
            Fill::Zero(at, len) => {
                pool.copier
                    .zero(vec![Loc::new(dev.clone(), dst + at)], len, done)
            }
        }
    }
    let buf = bio.take_buf();
    let write = Bio::write(
        dst + Sectors(off),
        buf,
        Box::new(move |r, buf| {
            bio.set_buf(buf);
            *join.bio.lock() = Some(bio);
            join.done(r);
        }),
    );
    dev.submit(write);
}
