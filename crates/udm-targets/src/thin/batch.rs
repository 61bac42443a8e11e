//! The pool worker's queue: bios of all thin devices wait here and the worker takes all
//! that gathered at once. Plain writes that each cover one whole block nobody else in the
//! batch touches are provisioned side by side (every new block allocated, all data writes
//! in flight together, then every mapping inserted under one metadata lock), instead of one
//! data write at a time; everything else keeps its order through `io::process`. The whole
//! batch is one worker job, so no commit sees a block allocated but not yet mapped.

use super::io::{self, alloc, lookup_for_write, out_of_space};
use super::pool::{MdError, Pool, PoolMode};
use super::thin::ThinShared;
use std::collections::HashSet;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
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

/// Whether `bio` may join a group of whole-block provisioning writes.
fn groupable(pool: &Pool, bio: &Bio) -> bool {
    bio.op == Op::Write
        && !bio.flags.contains(BioFlags::PREFLUSH)
        && !bio.flags.contains(BioFlags::FUA)
        && bio.sector.0.is_multiple_of(pool.block_size)
        && bio.len().0 == pool.block_size
}

fn run(pool: &Pool, bios: Vec<(Arc<ThinShared>, Bio)>) {
    let mut group: Vec<(Arc<ThinShared>, Bio)> = Vec::new();
    let mut keys = HashSet::new();
    for (t, bio) in bios {
        let key = (t.dev_id, bio.sector.0 / pool.block_size);
        if groupable(pool, &bio) && keys.insert(key) {
            group.push((t, bio));
            continue;
        }
        provision_group(std::mem::take(&mut group));
        keys.clear();
        io::process(&t, bio);
    }
    provision_group(group);
}

/// Whole-block writes to distinct blocks: mapped exclusive ones are remapped at once;
/// the others get new blocks, written together, then mapped together.
fn provision_group(group: Vec<(Arc<ThinShared>, Bio)>) {
    if group.len() < 2 {
        for (t, bio) in group {
            io::process(&t, bio);
        }
        return;
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut inflight = 0;
    for (t, mut bio) in group {
        let pool = t.pool.clone();
        if pool.mode() == PoolMode::Fail {
            bio.complete(Err(IoError::Io));
            continue;
        }
        let v = bio.sector.0 / pool.block_size;
        match lookup_for_write(&pool, t.dev_id, v) {
            Err(e) => {
                bio.complete(Err(e.io()));
                continue;
            }
            // Mapped and not shared: a plain remap (the write goes out now).
            Ok(Some((b, false))) => {
                pool.remember(t.dev_id, v, b, true);
                bio.sector = Sectors(b * pool.block_size);
                t.pool_dev.dev.submit(bio);
                continue;
            }
            // Unmapped, or shared: the whole block is overwritten, nothing to copy.
            Ok(_) => {}
        }
        if pool.mode() >= PoolMode::ReadOnly {
            bio.complete(Err(IoError::Io));
            continue;
        }
        let new = match alloc(&pool) {
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
        let buf = bio.take_buf();
        let tx = tx.clone();
        let dst = Sectors(new * pool.block_size);
        let dev = t.pool_dev.dev.clone();
        let write = Bio::write(
            dst,
            buf,
            Box::new(move |r, buf| {
                bio.set_buf(buf);
                drop(tx.send((t, bio, v, new, r)));
            }),
        );
        dev.submit(write);
        inflight += 1;
    }
    for _ in 0..inflight {
        let (t, bio, v, new, r) = rx.recv().expect("every write completes");
        let pool = &t.pool;
        let r = match r {
            Err(e) => {
                let _ = pool.with_md(true, |md| md.free_data_block(new));
                Err(e)
            }
            Ok(()) => match pool.with_md(true, |md| md.insert(t.dev_id, v, new)) {
                Ok(()) => {
                    pool.remember(t.dev_id, v, new, true);
                    Ok(())
                }
                Err(e) => Err(e.io()),
            },
        };
        bio.complete(r);
    }
}
