//! `ebs`: emulate a smaller logical block size (e.g. 512-byte sectors) on a device with larger
//! blocks. I/O that covers whole underlying blocks goes straight down; partial blocks are
//! read-modify-written by an ordered worker, as the kernel does with dm-bufio.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use udm_core::{
    DevHandle, Escaped, MapResult, StatusType, Target, TargetCtx, TargetError, TargetType,
};
use udm_io::{sync, Bio, BioFlags, BlockDevice, IoError, Limits, Op, Sectors};

use crate::kscan::scan_u64;

/// `ebs <dev> <offset> <emulated_sectors> [<underlying_sectors>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EbsParams {
    pub dev: String,
    pub offset: Sectors,
    /// Emulated block size in sectors (1, 2, 4 or 8).
    pub e_bs: u32,
    /// Underlying block size in sectors, when given on the table line.
    pub u_bs: Option<u32>,
}

/// `sscanf("%hu%c")`: a decimal that the kernel stores in 16 bits.
fn scan_u16(s: &str) -> Option<u32> {
    scan_u64(s).map(|v| v as u16 as u32)
}

fn bs_ok(bs: u32) -> bool {
    bs != 0 && bs.is_power_of_two()
}

impl EbsParams {
    /// Parse the words the table gave (as split by `split_args`).
    pub fn from_args(a: &[String]) -> Result<Self, TargetError> {
        if !(3..=4).contains(&a.len()) {
            return Err(TargetError::invalid("Invalid argument count"));
        }
        let offset =
            scan_u64(&a[1]).ok_or_else(|| TargetError::invalid("Invalid device offset sector"))?;
        let e_bs = scan_u16(&a[2])
            .filter(|&b| bs_ok(b) && b * 512 <= 4096)
            .ok_or_else(|| TargetError::invalid("Invalid emulated block size"))?;
        let u_bs = match a.get(3) {
            Some(u) => Some(
                scan_u16(u)
                    .filter(|&b| bs_ok(b))
                    .ok_or_else(|| TargetError::invalid("Invalid underlying block size"))?,
            ),
            None => None,
        };
        Ok(EbsParams {
            dev: a[0].clone(),
            offset: Sectors(offset),
            e_bs,
            u_bs,
        })
    }
}

impl FromStr for EbsParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        EbsParams::from_args(&udm_core::split_args(s))
    }
}

impl fmt::Display for EbsParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", Escaped(&self.dev), self.offset, self.e_bs)?;
        if let Some(u) = self.u_bs {
            write!(f, " {u}")?;
        }
        Ok(())
    }
}

pub struct EbsType;

impl TargetType for EbsType {
    fn name(&self) -> &'static str {
        "ebs"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 1]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = EbsParams::from_args(args)?;
        let dev = ctx.get_device_area(&p.dev, p.offset, ctx.len)?;
        let u_bs = match p.u_bs {
            Some(u) => u,
            None => {
                let u = dev.dev.limits().logical_block_size / 512;
                if !bs_ok(u) {
                    return Err(TargetError::invalid(
                        "Invalid retrieved underlying block size",
                    ));
                }
                if u == p.e_bs {
                    udm_core::klog::info(
                        "ebs",
                        "Emulation superfluous: emulated equal to underlying block size",
                    );
                }
                u
            }
        };
        if !p.offset.0.is_multiple_of(u_bs as u64) {
            return Err(TargetError::invalid(
                "Device offset must be multiple of underlying block size",
            ));
        }
        Ok(Box::new(Ebs {
            inner: Arc::new(Inner {
                dev,
                u_bs: u_bs as u64,
                queue: Mutex::new((VecDeque::new(), false)),
                worker: ctx.worker("ebs"),
            }),
            p,
        }))
    }
}

struct Inner {
    dev: Arc<DevHandle>,
    u_bs: u64,
    /// Bios waiting for the ordered worker, and whether a worker is running.
    queue: Mutex<(VecDeque<Bio>, bool)>,
    /// Its own thread for the blocking read-modify-write (never the shared I/O pool).
    worker: Arc<udm_core::Worker>,
}

impl Inner {
    /// Run queued bios one at a time, in arrival order (an ordered workqueue).
    fn drain(self: Arc<Self>) {
        loop {
            let bio = {
                let mut q = self.queue.lock();
                match q.0.pop_front() {
                    Some(b) => b,
                    None => {
                        q.1 = false;
                        return;
                    }
                }
            };
            let mut bio = bio;
            let r = self.process(&mut bio);
            bio.complete(r);
        }
    }

    /// Read-modify-write (or read) through whole underlying blocks.
    fn process(&self, bio: &mut Bio) -> Result<(), IoError> {
        let dev: &dyn BlockDevice = &*self.dev.dev;
        let ubs = self.u_bs;
        let first = bio.sector.0 / ubs * ubs;
        let end = bio.end().0.div_ceil(ubs) * ubs;
        let skip = ((bio.sector.0 - first) * 512) as usize;
        match bio.op {
            Op::Read => {
                let blocks = sync::read_at(dev, Sectors(first), ((end - first) * 512) as usize)?;
                let n = bio.buf().len();
                bio.buf_mut().copy_from_slice(&blocks[skip..skip + n]);
                Ok(())
            }
            Op::Write | Op::WriteZeroes => {
                let n = (bio.len().0 * 512) as usize;
                let whole = bio.sector.0 == first && bio.end().0 == end;
                let mut blocks = if whole {
                    vec![0u8; n]
                } else {
                    sync::read_at(dev, Sectors(first), ((end - first) * 512) as usize)?.into_vec()
                };
                if bio.op == Op::Write {
                    blocks[skip..skip + n].copy_from_slice(bio.buf());
                } else {
                    blocks[skip..skip + n].fill(0);
                }
                let fua = bio.flags.contains(BioFlags::FUA);
                if fua {
                    sync::write_fua_at(dev, Sectors(first), &blocks)
                } else {
                    sync::write_at(dev, Sectors(first), &blocks)
                }
            }
            Op::Discard => {
                // Only whole underlying blocks inside the range are discarded.
                let lo = bio.sector.0.div_ceil(ubs) * ubs;
                let hi = bio.end().0 / ubs * ubs;
                if hi > lo {
                    sync::discard(dev, Sectors(lo), Sectors(hi - lo))?;
                }
                Ok(())
            }
            Op::Flush => sync::flush(dev),
            _ => Err(IoError::NotSupported),
        }
    }
}

pub struct Ebs {
    inner: Arc<Inner>,
    p: EbsParams,
}

impl Target for Ebs {
    fn map(&self, mut bio: Bio) -> MapResult {
        let inner = &self.inner;
        if bio.op == Op::Flush {
            return MapResult::Remap(inner.dev.dev.clone(), bio);
        }
        bio.sector += self.p.offset;
        let ubs = inner.u_bs;
        let partial = !bio.sector.0.is_multiple_of(ubs) || !bio.end().0.is_multiple_of(ubs);
        if !partial && self.p.e_bs as u64 != ubs {
            return MapResult::Remap(inner.dev.dev.clone(), bio);
        }
        let mut q = inner.queue.lock();
        q.0.push_back(bio);
        if !q.1 {
            q.1 = true;
            let me = inner.clone();
            inner.worker.spawn(move || me.drain());
        }
        MapResult::Submitted
    }

    fn io_hints(&self, limits: &mut Limits) {
        limits.logical_block_size = self.p.e_bs * 512;
        limits.physical_block_size = self.inner.u_bs as u32 * 512;
        limits.io_min = limits.io_min.max(limits.logical_block_size);
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        match ty {
            StatusType::Info => String::new(),
            StatusType::Table => EbsParams {
                dev: self.inner.dev.id.to_string(),
                u_bs: self.p.u_bs.map(|_| self.inner.u_bs as u32),
                ..self.p.clone()
            }
            .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctr_errors() {
        let e = |s: &str| s.parse::<EbsParams>().unwrap_err().msg;
        assert_eq!(e("/d 0"), "Invalid argument count");
        assert_eq!(e("/d x 1"), "Invalid device offset sector");
        assert_eq!(e("/d 0 3"), "Invalid emulated block size");
        assert_eq!(e("/d 0 16"), "Invalid emulated block size");
        assert_eq!(e("/d 0 1 6"), "Invalid underlying block size");
        assert_eq!(
            "/d 8 2 8".parse::<EbsParams>().unwrap().to_string(),
            "/d 8 2 8"
        );
        assert_eq!("/d 8 2".parse::<EbsParams>().unwrap().to_string(), "/d 8 2");
    }
}
