//! `zero`: reads return zeroes, writes are discarded.

use udm_core::{MapResult, Target, TargetCtx, TargetError, TargetType};
use udm_io::device::Extent;
use udm_io::{Bio, Op, Sectors};

pub struct ZeroType;

impl TargetType for ZeroType {
    fn name(&self) -> &'static str {
        "zero"
    }
    fn version(&self) -> [u32; 3] {
        [1, 1, 0]
    }
    fn construct(
        &self,
        _ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        if !args.is_empty() {
            return Err(TargetError::invalid("No arguments required"));
        }
        Ok(Box::new(Zero))
    }
}

pub struct Zero;

impl Target for Zero {
    fn map(&self, mut bio: Bio) -> MapResult {
        if bio.op == Op::Read {
            bio.buf_mut().fill(0);
        }
        bio.complete(Ok(()));
        MapResult::Submitted
    }
    fn extents(&self, _sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        vec![(len, Extent::Hole)]
    }
}
