//! Thin device I/O on the pool's worker (one thread, jobs in order, so provisioning of a
//! block never races another bio to it): look the block up; remap reads of mapped blocks
//! to the data device, zeroes or the external origin for the others; writes go through
//! `batch::write_group` (remap, or provision: zeroing or copying from the external origin
//! the part the bio does not cover, breaking sharing with snapshots by copying); unmap
//! discarded blocks; commit for FLUSH and FUA.
//!
//! Data reaches the data device through the pool's mapped device, so it follows the
//! pool's live table; only the metadata lock is taken here, never across data I/O.

use super::pool::{MdError, Pool, PoolMode};
use super::thin::ThinShared;
use std::sync::Arc;
use udm_io::{Bio, BioFlags, IoError, Op, Sectors};
use udm_pdata::PdataError;

/// Handle one bio of thin device `t`.
pub(crate) fn process(t: &Arc<ThinShared>, bio: Bio) {
    if t.pool.mode() == PoolMode::Fail {
        return bio.complete(Err(IoError::Io));
    }
    match bio.op {
        Op::Flush => {
            let r = flush_all(&t.pool);
            bio.complete(r)
        }
        Op::Read => read(t, bio),
        Op::Write => write(t, bio),
        Op::Discard => discard(t, bio),
        _ => bio.complete(Err(IoError::NotSupported)),
    }
}

/// Make everything completed so far durable: commit changed metadata (which flushes the
/// data device first) or just flush the data device.
pub(crate) fn flush_all(pool: &Pool) -> Result<(), IoError> {
    match pool.commit() {
        Ok(()) if !pool.is_dirty() => {}
        Ok(()) | Err(MdError::Mode(_)) => {}
        Err(e) => return Err(e.io()),
    }
    let data = pool.st.lock().data.clone();
    match udm_io::sync::flush(data.dev.as_ref()) {
        Ok(()) | Err(IoError::NotSupported) => Ok(()),
        Err(e) => Err(e),
    }
}

/// (virtual block, offset in it).
fn split(pool: &Pool, sector: Sectors) -> (u64, u64) {
    (sector.0 / pool.block_size, sector.0 % pool.block_size)
}

fn read(t: &Arc<ThinShared>, mut bio: Bio) {
    let pool = &t.pool;
    let (v, off) = split(pool, bio.sector);
    match pool.inspect(|md| md.lookup(t.dev_id, v)) {
        Err(e) => bio.complete(Err(e.io())),
        Ok(Some((b, _))) => {
            if pool.cached(t.dev_id, v).is_none() {
                pool.remember(t.dev_id, v, b, false);
            }
            bio.sector = Sectors(b * pool.block_size + off);
            t.pool_dev.dev.submit(bio);
        }
        Ok(None) => read_unmapped(t, bio),
    }
}

/// An unprovisioned block reads as zeroes, or from the external origin where it reaches.
fn read_unmapped(t: &Arc<ThinShared>, mut bio: Bio) {
    let origin_size = t.origin_size.load(std::sync::atomic::Ordering::SeqCst);
    if let Some(o) = &t.origin {
        if bio.sector.0 < origin_size {
            if bio.end().0 <= origin_size {
                return o.dev.submit(bio);
            }
            let at = Sectors(origin_size - bio.sector.0);
            let (head, mut tail) = bio.split_at(at);
            tail.buf_mut().fill(0);
            tail.complete(Ok(()));
            return o.dev.submit(head);
        }
    }
    bio.buf_mut().fill(0);
    bio.complete(Ok(()));
}

/// Whether `(b, time)` of `dev` may be shared with a snapshot: mapped before the device
/// was last snapshotted (the kernel's time test), or referenced more than once.
pub(super) fn lookup_for_write(
    pool: &Pool,
    dev: u64,
    v: u64,
) -> Result<Option<(u64, bool)>, MdError> {
    pool.inspect(|md| {
        let Some((b, time)) = md.lookup(dev, v)? else {
            return Ok(None);
        };
        let snap_time = md.details(dev)?.map(|d| d.snapshotted_time).unwrap_or(0);
        let shared = time < snap_time || md.data_sm().get(b) > 1;
        Ok(Some((b, shared)))
    })
}

fn write(t: &Arc<ThinShared>, mut bio: Bio) {
    let pool = &t.pool;
    if bio.flags.contains(BioFlags::PREFLUSH) {
        if let Err(e) = flush_all(pool) {
            return bio.complete(Err(e));
        }
        bio.flags = bio.flags.without(BioFlags::PREFLUSH);
    }
    super::batch::write_group(pool, vec![(t.clone(), bio)]);
}

/// Send a write to its (already mapped) data block; with FUA, commit the metadata once it
/// is written, before completing it.
pub(super) fn remap_write(t: &Arc<ThinShared>, mut bio: Bio) {
    if !bio.flags.contains(BioFlags::FUA) {
        return t.pool_dev.dev.submit(bio);
    }
    let buf = bio.take_buf();
    let pool = t.pool.clone();
    let inner = Bio::write(
        bio.sector,
        buf,
        Box::new(move |r, buf| {
            bio.set_buf(buf);
            if r.is_err() || !pool.is_dirty() {
                return bio.complete(r);
            }
            let p = pool.clone();
            pool.worker.spawn(move || {
                let r = flush_all(&p);
                bio.complete(r)
            });
        }),
    )
    .with_flags(BioFlags::FUA);
    t.pool_dev.dev.submit(inner);
}

/// Allocate a data block (raising the low-water event when free blocks fall to the mark).
pub(super) fn alloc_once(pool: &Pool) -> Result<u64, MdError> {
    let (b, free) = pool.with_md(true, |md| {
        let b = md.alloc_data_block()?;
        Ok((b, md.data_sm().core().nr_free()))
    })?;
    pool.check_low_water(free);
    Ok(b)
}

/// Allocate a data block, committing once to reuse blocks freed in this transaction (the
/// caller has no block allocated and unmapped).
pub(super) fn alloc(pool: &Pool) -> Result<u64, MdError> {
    match alloc_once(pool) {
        Err(MdError::Pdata(PdataError::NoSpace("data"))) => {
            let _ = pool.commit();
            alloc_once(pool)
        }
        r => r,
    }
}

/// The pool ran out of data space: fail the bio (error_if_no_space) or hold it until
/// the pool grows, resumes or the no-space timeout passes.
pub(super) fn out_of_space(t: &Arc<ThinShared>, bio: Bio) {
    let pool = &t.pool;
    pool.set_mode(PoolMode::OutOfDataSpace);
    let mut st = pool.st.lock();
    if st.pf.error_if_no_space {
        drop(st);
        return bio.complete(Err(IoError::NoSpace));
    }
    st.out_of_space_since
        .get_or_insert_with(std::time::Instant::now);
    st.retry.push((t.clone(), bio));
}

/// Unmap every whole block the discard covers (partial blocks are left alone, as the
/// kernel does) and pass the freed data blocks down unless disabled.
fn discard(t: &Arc<ThinShared>, bio: Bio) {
    let pool = &t.pool;
    if pool.mode() >= PoolMode::ReadOnly {
        return bio.complete(Err(IoError::Io));
    }
    let bs = pool.block_size;
    let first = bio.sector.0.div_ceil(bs);
    let end = bio.end().0 / bs;
    let mut freed = Vec::new();
    for v in first..end {
        pool.forget(t.dev_id, v);
        let r = pool.with_md(true, |md| {
            let Some((b, _)) = md.lookup(t.dev_id, v)? else {
                return Ok(None);
            };
            md.remove(t.dev_id, v)?;
            Ok((md.data_sm().get(b) == 0).then_some(b))
        });
        match r {
            Ok(Some(b)) => freed.push(b),
            Ok(None) => {}
            Err(e) => return bio.complete(Err(e.io())),
        }
    }
    let pf = pool.features();
    if pf.discard_passdown {
        for b in freed {
            match udm_io::sync::discard(t.pool_dev.dev.as_ref(), Sectors(b * bs), Sectors(bs)) {
                Ok(()) | Err(IoError::NotSupported) => {}
                Err(e) => return bio.complete(Err(e)),
            }
        }
    }
    bio.complete(Ok(()))
}
