//! `error`: every I/O fails (arguments are accepted and ignored, as in the kernel).

use udm_core::{MapResult, Target, TargetCtx, TargetError, TargetType};
use udm_io::{Bio, IoError};

pub struct ErrorType;

impl TargetType for ErrorType {
    fn name(&self) -> &'static str {
        "error"
    }
    fn version(&self) -> [u32; 3] {
        [1, 5, 0]
    }
    fn construct(
        &self,
        _ctx: &mut TargetCtx<'_>,
        _args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(Error))
    }
}

pub struct Error;

impl Target for Error {
    fn map(&self, bio: Bio) -> MapResult {
        MapResult::Kill(bio, IoError::Io)
    }
}
