//! `unstriped`: expose one stripe of a striped (RAID-0) layout as a device of its own.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use udm_core::{
    DevHandle, Escaped, MapResult, StatusType, Target, TargetCtx, TargetError, TargetType,
};
use udm_io::{Bio, Op, Sectors};

use crate::kscan::{kstrtou32, scan_u64};

/// `unstriped <#stripes> <chunk_sectors> <stripe_idx> <dev> <offset>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnstripedParams {
    pub stripes: u32,
    pub chunk: u32,
    pub stripe: u32,
    pub dev: String,
    pub offset: Sectors,
}

impl UnstripedParams {
    /// Parse the words the table gave (as split by `split_args`).
    pub fn from_args(a: &[String]) -> Result<Self, TargetError> {
        if a.len() != 5 {
            return Err(TargetError::invalid("Invalid number of arguments"));
        }
        let stripes = kstrtou32(&a[0])
            .filter(|&v| v != 0)
            .ok_or_else(|| TargetError::invalid("Invalid stripe count"))?;
        let chunk = kstrtou32(&a[1])
            .filter(|&v| v != 0)
            .ok_or_else(|| TargetError::invalid("Invalid chunk_size"))?;
        let stripe =
            kstrtou32(&a[2]).ok_or_else(|| TargetError::invalid("Invalid stripe number"))?;
        // The kernel's own bound (it lets `stripe == stripes` through).
        if stripe > stripes && stripes > 1 {
            return Err(TargetError::invalid(
                "Please provide stripe between [0, # of stripes]",
            ));
        }
        let offset =
            scan_u64(&a[4]).ok_or_else(|| TargetError::invalid("Invalid striped device offset"))?;
        Ok(UnstripedParams {
            stripes,
            chunk,
            stripe,
            dev: a[3].clone(),
            offset: Sectors(offset),
        })
    }
}

impl FromStr for UnstripedParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        UnstripedParams::from_args(&udm_core::split_args(s))
    }
}

impl fmt::Display for UnstripedParams {
    /// As the kernel prints it: stripes and stripe index as signed ints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.stripes as i32,
            self.chunk,
            self.stripe as i32,
            Escaped(&self.dev),
            self.offset
        )
    }
}

/// Where sector `s` of stripe `stripe` lives on the striped device (before the offset).
pub fn map_sector(s: u64, stripes: u32, chunk: u32, stripe: u32) -> u64 {
    let chunk = chunk as u64;
    let row = s / chunk;
    s + row * (stripes as u64 - 1) * chunk + stripe as u64 * chunk
}

pub struct UnstripedType;

impl TargetType for UnstripedType {
    fn name(&self) -> &'static str {
        "unstriped"
    }
    fn version(&self) -> [u32; 3] {
        [1, 1, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = UnstripedParams::from_args(args)?;
        let dev = ctx
            .get_device_area(&p.dev, p.offset, ctx.len)
            .map_err(|e| TargetError {
                msg: "Couldn't get striped device".into(),
                ..e
            })?;
        if !ctx.len.0.is_multiple_of(p.chunk as u64) {
            return Err(TargetError::invalid(
                "Target length not divisible by chunk size",
            ));
        }
        Ok(Box::new(Unstriped { dev, p }))
    }
}

pub struct Unstriped {
    dev: Arc<DevHandle>,
    p: UnstripedParams,
}

impl Target for Unstriped {
    fn map(&self, mut bio: Bio) -> MapResult {
        // The kernel sends this target no flushes at all; passing them down is the safe
        // equivalent for a userspace backing file.
        if bio.op != Op::Flush {
            let p = &self.p;
            bio.sector = Sectors(map_sector(bio.sector.0, p.stripes, p.chunk, p.stripe)) + p.offset;
        }
        MapResult::Remap(self.dev.dev.clone(), bio)
    }

    fn max_io_len(&self) -> Option<Sectors> {
        Some(Sectors(self.p.chunk as u64))
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        match ty {
            StatusType::Info => String::new(),
            StatusType::Table => UnstripedParams {
                dev: self.dev.id.to_string(),
                ..self.p.clone()
            }
            .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::striped;

    #[test]
    fn inverts_striped_mapping() {
        for stripes in 1..5u32 {
            for chunk in [1u32, 3, 8] {
                for idx in 0..stripes {
                    for s in 0..64u64 {
                        let dev = map_sector(s, stripes, chunk, idx);
                        let (i, on) = striped::map_sector(
                            Sectors(dev),
                            stripes as u64,
                            Sectors(chunk as u64),
                        );
                        assert_eq!(i as u32, idx);
                        assert_eq!(on.0, s);
                    }
                }
            }
        }
    }

    #[test]
    fn ctr_errors() {
        let e = |s: &str| s.parse::<UnstripedParams>().unwrap_err().msg;
        assert_eq!(e("2 8 0 /d"), "Invalid number of arguments");
        assert_eq!(e("0 8 0 /d 0"), "Invalid stripe count");
        assert_eq!(e("2 0 0 /d 0"), "Invalid chunk_size");
        assert_eq!(e("2 8 x /d 0"), "Invalid stripe number");
        assert_eq!(
            e("2 8 3 /d 0"),
            "Please provide stripe between [0, # of stripes]"
        );
        assert_eq!(e("2 8 1 /d -1"), "Invalid striped device offset");
        assert!("2 8 2 /d 0".parse::<UnstripedParams>().is_ok());
    }
}
