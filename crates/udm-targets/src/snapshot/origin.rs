//! `snapshot-origin <origin>`: the origin as its snapshots' users see it. Reads and flushes
//! pass straight through; a write first has every chunk it touches copied into each
//! snapshot that has not copied it yet (COW chunks allocated on the origin's worker, in
//! arrival order; the copies made by each snapshot's writer, `copyout`), then goes to the
//! origin once those copies are committed (a group commit: later writes wait for a commit
//! covering every copy before them, so no write overtakes the copy of its chunk). A plain
//! write is acknowledged once its chunks' COW chunks are allocated, its data held until that
//! commit (`hold`): what overlaps it, and every flush, waits for it.

use super::copyout::copy_out_then;
use super::hold::{cap_from_env, Holds};
use super::snap::{Batch, OriginHub};
use super::OriginParams;
use std::sync::Arc;
use udm_core::{
    DevHandle, MapResult, Publication, StatusFlags, StatusType, Target, TargetCtx, TargetError,
    TargetType, Worker,
};
use udm_io::device::Extent;
use udm_io::{Bio, BioFlags, BufPool, Op, Sectors};

pub struct OriginType;

impl TargetType for OriginType {
    fn name(&self) -> &'static str {
        "snapshot-origin"
    }
    fn version(&self) -> [u32; 3] {
        [1, 9, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        if args.len() != 1 {
            return Err(TargetError::invalid(
                "origin: incorrect number of arguments",
            ));
        }
        let dev = ctx.get_device(&args[0]).map_err(|e| {
            TargetError::invalid("Cannot get target device").with_detail(e.to_string())
        })?;
        let (hub, publication) = OriginHub::join(ctx, &dev.id)?;
        let cap = cap_from_env();
        Ok(Box::new(Origin {
            io: Arc::new(OriginIo {
                dev,
                hub,
                worker: ctx.worker("snapshot-origin"),
                batch: Arc::default(),
                holds: Arc::new(Holds::new(cap)),
                pool: Arc::new(BufPool::new((cap / BufPool::MIN_LEN as u64) as usize)),
            }),
            _pub: publication,
        }))
    }
}

pub struct Origin {
    io: Arc<OriginIo>,
    _pub: Publication,
}

/// What the origin's I/O paths share (bios parked behind held writes come back here).
struct OriginIo {
    dev: Arc<DevHandle>,
    hub: Arc<OriginHub>,
    worker: Arc<Worker>,
    batch: Arc<Batch<Queued>>,
    holds: Arc<Holds>,
    /// Buffers for held copies.
    pool: Arc<BufPool>,
}

impl OriginIo {
    /// Whatever stands behind held writes waits for them; then `route`.
    fn map(self: &Arc<Self>, bio: Bio) -> Option<Bio> {
        let (start, end) = if bio.op == Op::Flush || bio.flags.contains(BioFlags::PREFLUSH) {
            (0, u64::MAX)
        } else {
            (bio.sector.0, bio.end().0)
        };
        let bio = self.holds.gate(bio, start, end, || {
            let me = self.clone();
            move |b| {
                if let Some(b) = me.route(b) {
                    me.dev.dev.submit(b);
                }
            }
        })?;
        self.route(bio)
    }

    /// The bio to pass to the origin as it is, or `None` if it was taken (a write with
    /// snapshots to copy into, or a flush failing on a held write's error).
    fn route(self: &Arc<Self>, bio: Bio) -> Option<Bio> {
        if bio.op == Op::Flush || bio.flags.contains(BioFlags::PREFLUSH) {
            if let Some(e) = self.holds.take_failed() {
                bio.complete(Err(e));
                return None;
            }
        }
        if !bio.op.is_write() || !self.hub.any_active() {
            return Some(bio);
        }
        let item = self.hold(bio);
        let me = self.clone();
        self.batch
            .push(&self.worker, item, move |items| me.write_batch(items));
        None
    }

    /// Plain write `b` as a held write to send in its place (with `b`'s own buffer when its
    /// submitter spares it, `Bio::with_spare_buf`, else a copy), and `b` to acknowledge once
    /// its COW chunks are allocated; or `b` alone if it may not be held (FUA, PREFLUSH, no
    /// data, over the cap), acknowledged when it is in the origin.
    fn hold(&self, mut b: Bio) -> Queued {
        if b.op != Op::Write
            || b.flags.contains(BioFlags::FUA)
            || b.flags.contains(BioFlags::PREFLUSH)
        {
            return (b, None);
        }
        let Some(id) = self.holds.try_hold(b.sector.0, b.len().0) else {
            return (b, None);
        };
        let mut data = self.pool.get(b.buf().len());
        if b.spares_buf() {
            // Keep the submitter's buffer, hand back a spare: no copy.
            data = std::mem::replace(b.buf_mut(), data);
        } else {
            data.as_mut_slice().copy_from_slice(b.buf().as_slice());
        }
        let (h, pool) = (self.holds.clone(), self.pool.clone());
        let copy = Bio::write(
            b.sector,
            data,
            Box::new(move |r, buf| {
                pool.put(buf);
                h.done(id, r);
            }),
        );
        (copy, Some(b))
    }

    /// Have what the queued writes overwrite copied out, acknowledge the held ones, and send
    /// them all to the origin once those copies are committed.
    fn write_batch(&self, items: Vec<Queued>) {
        let ranges: Vec<_> = items.iter().map(|(b, _)| (b.sector.0, b.len().0)).collect();
        let (bios, acks): (Vec<Bio>, Vec<Option<Bio>>) = items.into_iter().unzip();
        let dev = self.dev.dev.clone();
        copy_out_then(
            &self.hub,
            &ranges,
            None,
            Box::new(move || {
                for b in bios {
                    dev.submit(b);
                }
            }),
        );
        for b in acks.into_iter().flatten() {
            b.complete(Ok(()));
        }
    }
}

/// A write queued for its copy-out: the bio to send to the origin and, when that is a held
/// copy, the client's bio to acknowledge once the copies are queued.
type Queued = (Bio, Option<Bio>);

impl Target for Origin {
    fn map(&self, bio: Bio) -> MapResult {
        match self.io.map(bio) {
            Some(b) => MapResult::Remap(self.io.dev.dev.clone(), b),
            None => MapResult::Submitted,
        }
    }
    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        match ty {
            StatusType::Info => String::new(),
            StatusType::Table => OriginParams {
                origin: self.io.dev.id.to_string(),
            }
            .to_string(),
        }
    }
    fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        self.io.dev.dev.extents(sector, len)
    }
    fn postsuspend(&self) {
        self.io.holds.drain();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.io.holds.drain();
    }
}
