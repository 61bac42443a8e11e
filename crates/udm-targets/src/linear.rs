//! `linear`: map a range onto a contiguous range of another device.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use udm_core::{
    ArgReader, DevHandle, Escaped, MapResult, StatusType, Target, TargetCtx, TargetError,
    TargetType,
};
use udm_io::device::Extent;
use udm_io::{Bio, Op, Sectors};

/// `linear <dev> <offset>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearParams {
    pub dev: String,
    pub offset: Sectors,
}

impl LinearParams {
    /// Parse the words the table gave (as split by `split_args`).
    pub fn from_args(args: &[String]) -> Result<Self, TargetError> {
        if args.len() != 2 {
            return Err(TargetError::invalid("Invalid argument count"));
        }
        let mut r = ArgReader::new(args);
        let dev = r.next("Invalid argument count")?.to_string();
        let offset = Sectors(r.num("Invalid device sector")?);
        Ok(LinearParams { dev, offset })
    }
}

impl FromStr for LinearParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        LinearParams::from_args(&udm_core::split_args(s))
    }
}

impl fmt::Display for LinearParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", Escaped(&self.dev), self.offset)
    }
}

pub struct LinearType;

impl TargetType for LinearType {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn version(&self) -> [u32; 3] {
        [1, 4, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = LinearParams::from_args(args)?;
        let dev = ctx.get_device_area(&p.dev, p.offset, ctx.len)?;
        Ok(Box::new(Linear {
            dev,
            offset: p.offset,
        }))
    }
}

pub struct Linear {
    dev: Arc<DevHandle>,
    offset: Sectors,
}

impl Target for Linear {
    fn map(&self, mut bio: Bio) -> MapResult {
        if bio.op != Op::Flush {
            bio.sector += self.offset;
        }
        MapResult::Remap(self.dev.dev.clone(), bio)
    }
    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        match ty {
            StatusType::Info => String::new(),
            StatusType::Table => LinearParams {
                dev: self.dev.id.to_string(),
                offset: self.offset,
            }
            .to_string(),
        }
    }
    fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        self.dev.dev.extents(sector + self.offset, len)
    }
    fn read_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: udm_io::FileReader<'_>,
    ) -> Option<std::io::Result<usize>> {
        self.dev.dev.read_file_range(sector + self.offset, len, f)
    }
    fn write_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: udm_io::FileWriter<'_>,
    ) -> Option<std::io::Result<usize>> {
        self.dev.dev.write_file_range(sector + self.offset, len, f)
    }
    fn read_mapped(&self, sector: Sectors, len: Sectors, f: udm_io::MappedReader<'_>) -> bool {
        self.dev.dev.read_mapped(sector + self.offset, len, f)
    }
}
