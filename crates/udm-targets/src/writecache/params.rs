//! The optional constructor arguments of `writecache` (6.1): parsed with the kernel's rules
//! and errors, printed back in the kernel's canonical order for `table` status.

use crate::kscan::{scan_u32, scan_u64, ArgSet, DmArg};
use std::fmt;
use udm_core::TargetError;

/// `HIGH_WATERMARK` / `LOW_WATERMARK` (percent used).
pub const HIGH_WATERMARK: u32 = 50;
pub const LOW_WATERMARK: u32 = 45;
/// `AUTOCOMMIT_BLOCKS_SSD`, `AUTOCOMMIT_MSEC`, `PAUSE_WRITEBACK` (3 s).
pub const AUTOCOMMIT_BLOCKS: u32 = 65536;
pub const AUTOCOMMIT_MSEC: u32 = 1000;
pub const PAUSE_MSEC: u32 = 3000;

/// The optional arguments as given (each `Some` was set in the table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WcOpts {
    pub start_sector: Option<u64>,
    pub high_watermark: Option<u32>,
    pub low_watermark: Option<u32>,
    pub writeback_jobs: Option<u32>,
    pub autocommit_blocks: Option<u32>,
    pub autocommit_time: Option<u32>,
    pub max_age: Option<u32>,
    pub cleaner: bool,
    pub metadata_only: bool,
    pub pause_writeback: Option<u32>,
}

fn invalid() -> TargetError {
    TargetError::invalid("Invalid optional argument")
}

/// `sscanf("%d%c")` for a watermark, then the 0..=100 check.
fn percent(s: &str) -> Result<u32, TargetError> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = scan_u64(digits).ok_or_else(invalid)? as i32;
    let v = if neg { v.wrapping_neg() } else { v };
    if !(0..=100).contains(&v) {
        return Err(invalid());
    }
    Ok(v as u32)
}

fn bounded(s: &str, max: u32) -> Result<u32, TargetError> {
    scan_u32(s).filter(|&v| v <= max).ok_or_else(invalid)
}

impl WcOpts {
    /// Parse `<#args> [args]*` from `as_`. `cache_sectors` bounds `start_sector`.
    pub fn parse(as_: &mut ArgSet<'_>, cache_sectors: u64) -> Result<WcOpts, TargetError> {
        let group = DmArg {
            min: 0,
            max: 18,
            error: "Invalid number of feature args",
        };
        let mut n = as_.read_arg_group(&group)?;
        let mut o = WcOpts::default();
        while n > 0 {
            let word = as_.shift().expect("counted").to_ascii_lowercase();
            n -= 1;
            let takes_value = matches!(
                word.as_str(),
                "start_sector"
                    | "high_watermark"
                    | "low_watermark"
                    | "writeback_jobs"
                    | "autocommit_blocks"
                    | "autocommit_time"
                    | "max_age"
                    | "pause_writeback"
            );
            if takes_value && n == 0 {
                return Err(invalid());
            }
            let mut value = || {
                n -= 1;
                as_.shift().expect("counted")
            };
            match word.as_str() {
                "start_sector" => {
                    let v = scan_u64(value()).ok_or_else(invalid)?;
                    if v >= cache_sectors {
                        return Err(invalid());
                    }
                    o.start_sector = Some(v);
                }
                "high_watermark" => o.high_watermark = Some(percent(value())?),
                "low_watermark" => o.low_watermark = Some(percent(value())?),
                "writeback_jobs" => o.writeback_jobs = Some(bounded(value(), u32::MAX)?),
                "autocommit_blocks" => o.autocommit_blocks = Some(bounded(value(), u32::MAX)?),
                "autocommit_time" => o.autocommit_time = Some(bounded(value(), 3_600_000)?),
                "max_age" => o.max_age = Some(bounded(value(), 86_400_000)?),
                "cleaner" => o.cleaner = true,
                "metadata_only" => o.metadata_only = true,
                "pause_writeback" => o.pause_writeback = Some(bounded(value(), 60_000)?),
                // fua/nofua need pmem mode, which udm refuses: invalid here, as in the kernel.
                _ => return Err(invalid()),
            }
        }
        if o.high() < o.low() {
            return Err(TargetError::invalid(
                "High watermark must be greater than or equal to low watermark",
            ));
        }
        Ok(o)
    }

    pub fn high(&self) -> u32 {
        self.high_watermark.unwrap_or(HIGH_WATERMARK)
    }
    pub fn low(&self) -> u32 {
        self.low_watermark.unwrap_or(LOW_WATERMARK)
    }
    pub fn start(&self) -> u64 {
        self.start_sector.unwrap_or(0)
    }
}

/// The kernel's `writecache_status(STATUSTYPE_TABLE)` tail: `<#args> [args]*`.
impl fmt::Display for WcOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs = [
            ("start_sector", self.start_sector),
            ("high_watermark", self.high_watermark.map(u64::from)),
            ("low_watermark", self.low_watermark.map(u64::from)),
            ("writeback_jobs", self.writeback_jobs.map(u64::from)),
            ("autocommit_blocks", self.autocommit_blocks.map(u64::from)),
            ("autocommit_time", self.autocommit_time.map(u64::from)),
            ("max_age", self.max_age.map(u64::from)),
        ];
        let mut n = pairs.iter().filter(|p| p.1.is_some()).count() * 2;
        n += self.cleaner as usize + self.metadata_only as usize;
        n += self.pause_writeback.is_some() as usize * 2;
        write!(f, "{n}")?;
        for (k, v) in pairs {
            if let Some(v) = v {
                write!(f, " {k} {v}")?;
            }
        }
        if self.cleaner {
            f.write_str(" cleaner")?;
        }
        if self.metadata_only {
            f.write_str(" metadata_only")?;
        }
        if let Some(p) = self.pause_writeback {
            write!(f, " pause_writeback {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<WcOpts, TargetError> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        WcOpts::parse(&mut ArgSet::new(&v), 1 << 20)
    }

    #[test]
    fn canonical_order_and_errors() {
        let o = parse("5 cleaner max_age 100 start_sector 8").unwrap();
        assert_eq!(o.to_string(), "5 start_sector 8 max_age 100 cleaner");
        assert_eq!(parse("0").unwrap().to_string(), "0");
        let e = |s: &str| parse(s).unwrap_err().msg;
        assert_eq!(e("19"), "Invalid number of feature args");
        assert_eq!(e("2 cleaner"), "Invalid number of feature args");
        assert_eq!(e("1 fua"), "Invalid optional argument");
        assert_eq!(e("1 start_sector"), "Invalid optional argument");
        assert_eq!(e("2 high_watermark 101"), "Invalid optional argument");
        assert_eq!(e("2 autocommit_time 3600001"), "Invalid optional argument");
        assert_eq!(e("2 start_sector 1048576"), "Invalid optional argument");
        assert_eq!(
            e("4 high_watermark 10 low_watermark 20"),
            "High watermark must be greater than or equal to low watermark"
        );
        assert_eq!(parse("2 HIGH_WATERMARK 60").unwrap().high(), 60);
    }
}
