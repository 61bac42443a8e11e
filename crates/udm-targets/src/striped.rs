//! `striped`: RAID-0 style striping of chunks across devices.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use udm_core::{
    ArgReader, DevHandle, Escaped, MapResult, StatusType, Target, TargetCtx, TargetError,
    TargetType,
};
use udm_io::device::Extent;
use udm_io::{Bio, IoError, Op, Sectors};

/// `striped <#stripes> <chunk_size> [<dev> <offset>]+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripedParams {
    pub chunk: Sectors,
    pub legs: Vec<(String, Sectors)>,
}

impl StripedParams {
    /// Parse the words the table gave (as split by `split_args`).
    pub fn from_args(args: &[String]) -> Result<Self, TargetError> {
        if args.len() < 2 {
            return Err(TargetError::invalid("Not enough arguments"));
        }
        let mut r = ArgReader::new(args);
        let stripes: u32 = r.num("Invalid stripe count")?;
        if stripes == 0 {
            return Err(TargetError::invalid("Invalid stripe count"));
        }
        let chunk: u64 = r.num("Invalid chunk_size")?;
        if chunk == 0 {
            return Err(TargetError::invalid("Invalid chunk_size"));
        }
        if r.remaining() != 2 * stripes as usize {
            return Err(TargetError::invalid("Not enough destinations specified"));
        }
        let mut legs = Vec::with_capacity(stripes as usize);
        for _ in 0..stripes {
            let dev = r.next("Couldn't parse stripe destination")?.to_string();
            let off = Sectors(r.num("Couldn't parse stripe destination")?);
            legs.push((dev, off));
        }
        Ok(StripedParams {
            chunk: Sectors(chunk),
            legs,
        })
    }
}

impl FromStr for StripedParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        StripedParams::from_args(&udm_core::split_args(s))
    }
}

impl fmt::Display for StripedParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.legs.len(), self.chunk)?;
        for (d, o) in &self.legs {
            write!(f, " {} {o}", Escaped(d))?;
        }
        Ok(())
    }
}

/// Where sector `s` of a striped target lives: (stripe index, sector on that stripe's device,
/// relative to the stripe's offset).
pub fn map_sector(s: Sectors, stripes: u64, chunk: Sectors) -> (usize, Sectors) {
    let chunk_no = s.0 / chunk.0;
    let within = s.0 % chunk.0;
    let stripe = chunk_no % stripes;
    let row = chunk_no / stripes;
    (stripe as usize, Sectors(row * chunk.0 + within))
}

pub struct StripedType;

impl TargetType for StripedType {
    fn name(&self) -> &'static str {
        "striped"
    }
    fn version(&self) -> [u32; 3] {
        [1, 6, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = StripedParams::from_args(args)?;
        let n = p.legs.len() as u64;
        if !ctx.len.0.is_multiple_of(n) {
            return Err(TargetError::invalid(
                "Target length not divisible by number of stripes",
            ));
        }
        let width = Sectors(ctx.len.0 / n);
        if !width.0.is_multiple_of(p.chunk.0) {
            return Err(TargetError::invalid(
                "Target length not divisible by chunk size",
            ));
        }
        let mut legs = Vec::with_capacity(p.legs.len());
        for (d, off) in &p.legs {
            let h = ctx.get_device_area(d, *off, width).map_err(|e| {
                TargetError::with_errno(
                    e.errno,
                    format!("Couldn't parse stripe destination ({})", e.msg),
                )
            })?;
            legs.push(Leg {
                dev: h,
                offset: *off,
                errors: Arc::new(AtomicU32::new(0)),
            });
        }
        Ok(Box::new(Striped {
            chunk: p.chunk,
            legs,
        }))
    }
}

struct Leg {
    dev: Arc<DevHandle>,
    offset: Sectors,
    errors: Arc<AtomicU32>,
}

pub struct Striped {
    chunk: Sectors,
    legs: Vec<Leg>,
}

impl Target for Striped {
    fn map(&self, mut bio: Bio) -> MapResult {
        if bio.op == Op::Flush {
            // The core sends one flush per stripe (`num_flush_bios`).
            let leg = &self.legs[bio.target_bio_nr() as usize % self.legs.len()];
            return MapResult::Remap(leg.dev.dev.clone(), bio);
        }
        // The core split the bio at chunk boundaries, so it lies within one chunk.
        let (i, s) = map_sector(bio.sector, self.legs.len() as u64, self.chunk);
        let leg = &self.legs[i];
        bio.sector = s + leg.offset;
        let errors = leg.errors.clone();
        let bio = bio.on_end(move |r, _| {
            if matches!(r, Err(e) if e != IoError::NotSupported) {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            r
        });
        MapResult::Remap(leg.dev.dev.clone(), bio)
    }

    fn max_io_len(&self) -> Option<Sectors> {
        Some(self.chunk)
    }

    fn num_flush_bios(&self) -> u32 {
        self.legs.len() as u32
    }

    /// As the kernel's stripe_io_hints: a chunk is the minimum I/O, a full stripe the optimal.
    fn io_hints(&self, limits: &mut udm_io::Limits) {
        let chunk = self.chunk.bytes().0 as u32;
        limits.io_min = chunk;
        limits.io_opt = chunk.saturating_mul(self.legs.len() as u32);
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        match ty {
            StatusType::Info => {
                let mut s = format!("{}", self.legs.len());
                for l in &self.legs {
                    s.push_str(&format!(" {}", Escaped(&l.dev.id.to_string())));
                }
                s.push_str(" 1 ");
                for l in &self.legs {
                    s.push(if l.errors.load(Ordering::Relaxed) > 0 {
                        'D'
                    } else {
                        'A'
                    });
                }
                s
            }
            StatusType::Table => StripedParams {
                chunk: self.chunk,
                legs: self
                    .legs
                    .iter()
                    .map(|l| (l.dev.id.to_string(), l.offset))
                    .collect(),
            }
            .to_string(),
        }
    }

    fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        let mut out: Vec<(Sectors, Extent)> = Vec::new();
        let end = sector + len;
        let mut pos = sector;
        while pos < end {
            let stop = Sectors(((pos.0 / self.chunk.0) + 1) * self.chunk.0).min(end);
            let (i, s) = map_sector(pos, self.legs.len() as u64, self.chunk);
            let leg = &self.legs[i];
            for (l, x) in leg.dev.dev.extents(s + leg.offset, stop - pos) {
                match out.last_mut() {
                    Some((ol, ox)) if *ox == x => *ol += l,
                    _ => out.push((l, x)),
                }
            }
            pos = stop;
        }
        out
    }
}
