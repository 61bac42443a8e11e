//! `switch`: split the device into fixed-size regions and send each region to one of several
//! paths, by a region table that `set_region_mappings` messages rewrite at run time.

use parking_lot::Mutex;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use udm_core::{
    DevHandle, Escaped, MapResult, StatusType, Target, TargetCtx, TargetError, TargetType,
};
use udm_io::{Bio, Op, Sectors};

use crate::kscan::{kstrtou64, ArgSet, DmArg};

/// The kernel's path-count limit: as many paths as fit in one kmalloc (4 MiB on x86-64).
pub const MAX_PATHS: u32 = 262_141;

/// `switch <#paths> <region_sectors> <#optional_args=0> [<dev> <offset>]+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchParams {
    pub region: u32,
    pub paths: Vec<(String, Sectors)>,
}

impl SwitchParams {
    /// Parse the words the table gave (as split by `split_args`).
    pub fn from_args(args: &[String]) -> Result<Self, TargetError> {
        let mut a = ArgSet::new(args);
        let n = a.read_arg(&DmArg {
            min: 1,
            max: MAX_PATHS,
            error: "Invalid number of paths",
        })?;
        let region = a.read_arg(&DmArg {
            min: 1,
            max: u32::MAX,
            error: "Invalid region size",
        })?;
        a.read_arg_group(&DmArg {
            min: 0,
            max: 0,
            error: "Invalid number of optional args",
        })?;
        if a.argc() != 2 * n as usize {
            return Err(TargetError::invalid("Incorrect number of path arguments"));
        }
        let mut paths = Vec::with_capacity(n as usize);
        while let (Some(d), Some(o)) = (a.shift(), a.shift()) {
            let o = kstrtou64(o)
                .ok_or_else(|| TargetError::invalid("Invalid device starting offset"))?;
            paths.push((d.to_string(), Sectors(o)));
        }
        Ok(SwitchParams { region, paths })
    }
}

impl FromStr for SwitchParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        SwitchParams::from_args(&udm_core::split_args(s))
    }
}

impl fmt::Display for SwitchParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} 0", self.paths.len(), self.region)?;
        for (d, o) in &self.paths {
            write!(f, " {} {o}", Escaped(d))?;
        }
        Ok(())
    }
}

pub struct SwitchType;

impl TargetType for SwitchType {
    fn name(&self) -> &'static str {
        "switch"
    }
    fn version(&self) -> [u32; 3] {
        [1, 1, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = SwitchParams::from_args(args)?;
        let mut paths = Vec::with_capacity(p.paths.len());
        for (d, o) in &p.paths {
            paths.push((ctx.get_device_area(d, *o, ctx.len)?, *o));
        }
        let nr_regions = ctx.len.0.div_ceil(p.region as u64);
        let nr_paths = paths.len() as u64;
        // Regions start out round-robin over the paths. A table too big to have (a long
        // target in small regions) is ENOMEM, as in the kernel, not an aborted process.
        let mut table = Vec::new();
        usize::try_from(nr_regions)
            .ok()
            .and_then(|n| table.try_reserve_exact(n).ok())
            .ok_or_else(|| TargetError::with_errno(libc::ENOMEM, "Cannot allocate region table"))?;
        table.extend((0..nr_regions).map(|r| Slot::new((r % nr_paths) as u32)));
        Ok(Box::new(Switch {
            paths,
            region: p.region,
            table,
            msg_lock: Mutex::new(()),
        }))
    }
}

/// One region table slot (a path index, read and written without locks).
struct Slot(AtomicU32);

impl Slot {
    fn new(v: u32) -> Slot {
        Slot(AtomicU32::new(v))
    }
    fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, v: u32) {
        self.0.store(v, Ordering::Relaxed)
    }
}

pub struct Switch {
    paths: Vec<(Arc<DevHandle>, Sectors)>,
    region: u32,
    table: Vec<Slot>,
    msg_lock: Mutex<()>,
}

/// Read leading hex digits (either case); returns the value (wrapping) and the rest.
fn parse_hex(s: &[u8]) -> (u64, &[u8]) {
    let n = s.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let v = s[..n].iter().fold(0u64, |acc, &b| {
        (acc << 4) | (b as char).to_digit(16).unwrap_or(0) as u64
    });
    (v, &s[n..])
}

impl Switch {
    fn path_of(&self, offset: Sectors) -> usize {
        let r = (offset.0 / self.region as u64) as usize;
        let p = self.table.get(r).map_or(0, |s| s.get()) as usize;
        if p >= self.paths.len() {
            0
        } else {
            p
        }
    }

    fn set_region_mappings(&self, argv: &[String]) -> Result<(), TargetError> {
        let nr_regions = self.table.len() as u64;
        let bad =
            |a: &str| TargetError::invalid(format!("invalid set_region_mappings argument: '{a}'"));
        let mut idx: u64 = 0;
        for arg in &argv[1..] {
            let s = arg.as_bytes();
            if s.first().map(|b| b & 0xdf) == Some(b'R') {
                let s = &s[1..];
                if s.first() == Some(&b',') {
                    return Err(bad(arg));
                }
                let (cycle, s) = parse_hex(s);
                let Some(s) = s.strip_prefix(b",") else {
                    return Err(bad(arg));
                };
                if s.is_empty() {
                    return Err(bad(arg));
                }
                let (num, s) = parse_hex(s);
                if !s.is_empty() {
                    return Err(bad(arg));
                }
                if cycle == 0 || cycle - 1 > idx {
                    return Err(TargetError::invalid(format!(
                        "invalid set_region_mappings cycle length: {} > {idx}",
                        cycle.wrapping_sub(1)
                    )));
                }
                match idx.checked_add(num) {
                    Some(end) if end < nr_regions => {}
                    _ => {
                        return Err(TargetError::invalid(format!(
                        "invalid set_region_mappings region number: {idx} + {num} >= {nr_regions}"
                    )))
                    }
                }
                for _ in 0..num {
                    idx += 1;
                    let v = self.table[(idx - cycle) as usize].get();
                    self.table[idx as usize].set(v);
                }
                continue;
            }
            let rest = if s.first() == Some(&b':') {
                idx = idx.wrapping_add(1);
                s
            } else {
                let (v, rest) = parse_hex(s);
                idx = v;
                if rest.first() != Some(&b':') {
                    return Err(bad(arg));
                }
                rest
            };
            let rest = &rest[1..];
            if rest.is_empty() {
                return Err(bad(arg));
            }
            let (path, rest) = parse_hex(rest);
            if !rest.is_empty() {
                return Err(bad(arg));
            }
            if idx >= nr_regions {
                return Err(TargetError::invalid(format!(
                    "invalid set_region_mappings region number: {idx} >= {nr_regions}"
                )));
            }
            if path >= self.paths.len() as u64 {
                return Err(TargetError::invalid(format!(
                    "invalid set_region_mappings device: {path} >= {}",
                    self.paths.len()
                )));
            }
            self.table[idx as usize].set(path as u32);
        }
        Ok(())
    }

    /// The path each region maps to (for tests and tools).
    pub fn region_table(&self) -> Vec<u32> {
        self.table.iter().map(|s| s.get()).collect()
    }
}

impl Target for Switch {
    fn map(&self, mut bio: Bio) -> MapResult {
        if bio.op == Op::Flush {
            // The kernel sends this target no flushes; sending one to every path is the safe
            // equivalent for userspace backing files.
            let n = self.paths.len();
            for ((dev, _), b) in self.paths.iter().zip(bio.fan_out(n)) {
                dev.dev.submit(b);
            }
            return MapResult::Submitted;
        }
        let (dev, start) = &self.paths[self.path_of(bio.sector)];
        bio.sector += *start;
        MapResult::Remap(dev.dev.clone(), bio)
    }

    fn max_io_len(&self) -> Option<Sectors> {
        Some(Sectors(self.region as u64))
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        match ty {
            StatusType::Info => String::new(),
            StatusType::Table => SwitchParams {
                region: self.region,
                paths: self
                    .paths
                    .iter()
                    .map(|(d, o)| (d.id.to_string(), *o))
                    .collect(),
            }
            .to_string(),
        }
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        let _g = self.msg_lock.lock();
        if argv
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case("set_region_mappings"))
        {
            self.set_region_mappings(argv).map(|_| None)
        } else {
            Err(TargetError::invalid("Unrecognised message received."))
        }
    }
}
