//! raid1/raid10 writes without an I/O thread: when the lock unit is free and the bitmap
//! already marks the regions dirty (no bitmap write needed first), the write goes to
//! every usable copy at once from the submitter, and the client's bio completes when the
//! last copy has landed. Anything else — a busy lock unit, a bitmap bit to set first — is
//! left to the blocking path, as is the end of a write that a leg failed (failing the
//! leg writes the superblocks).

use super::engine::{Array, RAID1_UNIT};
use parking_lot::Mutex;
use std::sync::Arc;
use udm_io::{Bio, BioFlags, IoBuf, IoError, Op as BioOp, Sectors};

/// What the copies of one write share until the last completes.
struct Pending<F> {
    left: usize,
    bad: Vec<usize>,
    bio: Option<Bio>,
    slow: Option<F>,
}

/// Submit `bio` (a write) to every usable copy asynchronously, or give it back when the
/// fast path does not apply. `slow(bio, failed legs, any copy landed)` runs when a copy
/// failed: it must fail those legs and complete the bio.
pub fn submit<A, F>(me: &Arc<A>, mut bio: Bio, slow: F) -> Result<(), Bio>
where
    A: AsRef<Array> + Send + Sync + 'static,
    F: FnOnce(Bio, Vec<usize>, bool) + Send + 'static,
{
    let a = (**me).as_ref();
    let g = &a.geo;
    if bio.op != BioOp::Write || bio.flags.contains(BioFlags::PREFLUSH) || bio.is_empty() {
        return Err(bio);
    }
    let s = bio.sector.0;
    let end = s + bio.len().0;
    let (copies, key) = match g.level {
        1 => ((0..a.legs.len()).map(|i| (i, s)).collect(), s / RAID1_UNIT),
        10 => (g.raid10_copies(s), s / g.chunk),
        _ => return Err(bio),
    };
    let targets: Vec<(usize, u64, Arc<dyn udm_io::BlockDevice>)> = copies
        .into_iter()
        .filter(|&(d, _)| a.legs[d].usable())
        .filter_map(|(d, ds)| Some((d, ds, a.legs[d].data.clone()?)))
        .collect();
    if targets.is_empty() || !a.try_lock(key) {
        return Err(bio);
    }
    if !a.meta.start_write_set(s, end) {
        a.unlock(key);
        return Err(bio);
    }
    let data = bio.take_buf();
    let flags = bio.flags;
    let n = targets.len();
    // Every copy but the last gets its own buffer; the last writes the client's.
    let mut bufs: Vec<IoBuf> = (1..n).map(|_| IoBuf::from_slice(&data)).collect();
    bufs.push(data);
    let st = Arc::new(Mutex::new(Pending {
        left: n,
        bad: Vec::new(),
        bio: Some(bio),
        slow: Some(slow),
    }));
    for (k, ((d, ds, dev), buf)) in targets.into_iter().zip(bufs).enumerate() {
        let (st, me) = (st.clone(), me.clone());
        let own = k + 1 == n;
        let done: udm_io::Completion = Box::new(move |r: Result<(), IoError>, buf| {
            let mut p = st.lock();
            if own {
                if let Some(b) = p.bio.as_mut() {
                    b.set_buf(buf);
                }
            }
            if r.is_err() {
                p.bad.push(d);
            }
            p.left -= 1;
            if p.left > 0 {
                return;
            }
            let (bio, bad, slow) = (p.bio.take(), std::mem::take(&mut p.bad), p.slow.take());
            drop(p);
            let a = (*me).as_ref();
            a.meta.end_write(s, end);
            a.unlock(key);
            let Some(bio) = bio else { return };
            match (bad.is_empty(), slow) {
                (true, _) => bio.complete(Ok(())),
                (false, Some(slow)) => {
                    let landed = bad.len() < n;
                    slow(bio, bad, landed)
                }
                (false, None) => bio.complete(Err(IoError::Io)),
            }
        });
        dev.submit(Bio::write(Sectors(ds), buf, done).with_flags(flags));
    }
    Ok(())
}
