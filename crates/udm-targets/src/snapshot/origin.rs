//! `snapshot-origin <origin>`: the origin as its snapshots' users see it. Reads and flushes
//! pass straight through; a write first copies every chunk it touches into each snapshot
//! that has not copied it yet (on the origin's worker, in arrival order), then goes to the
//! origin once those copies are committed (a group commit: the worker goes on copying for
//! later writes meanwhile, and those wait for a commit covering every copy before them, so
//! no write overtakes the copy of its chunk).

use super::copyout::copy_out_then;
use super::snap::{Batch, OriginHub};
use super::OriginParams;
use std::sync::Arc;
use udm_core::{
    DevHandle, MapResult, Publication, StatusFlags, StatusType, Target, TargetCtx, TargetError,
    TargetType, Worker,
};
use udm_io::device::Extent;
use udm_io::{Bio, Op, Sectors};

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
        Ok(Box::new(Origin {
            dev,
            hub,
            worker: ctx.worker("snapshot-origin"),
            batch: Arc::default(),
            _pub: publication,
        }))
    }
}

pub struct Origin {
    dev: Arc<DevHandle>,
    hub: Arc<OriginHub>,
    worker: Arc<Worker>,
    batch: Arc<Batch>,
    _pub: Publication,
}

impl Target for Origin {
    fn map(&self, bio: Bio) -> MapResult {
        if !bio.op.is_write() || bio.op == Op::Flush || !self.hub.any_active() {
            return MapResult::Remap(self.dev.dev.clone(), bio);
        }
        let hub = self.hub.clone();
        let dev = self.dev.dev.clone();
        self.batch.push(&self.worker, bio, move |bios| {
            let ranges: Vec<_> = bios.iter().map(|b| (b.sector.0, b.len().0)).collect();
            copy_out_then(
                &hub,
                &ranges,
                None,
                Box::new(move || {
                    for b in bios {
                        dev.submit(b);
                    }
                }),
            );
        });
        MapResult::Submitted
    }
    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        match ty {
            StatusType::Info => String::new(),
            StatusType::Table => OriginParams {
                origin: self.dev.id.to_string(),
            }
            .to_string(),
        }
    }
    fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        self.dev.dev.extents(sector, len)
    }
}
