//! The `thin-pool` and `thin` table lines, parsed in the kernel's order with its error
//! messages and printed back in the kernel's canonical form.

use std::fmt;
use udm_core::args::parse_num;
use udm_core::{Escaped, TargetError};

/// Smallest data block: 64 KiB (128 sectors); sizes are multiples of it.
pub const MIN_BLOCK_SECTORS: u64 = 128;
/// Largest data block: 1 GiB.
pub const MAX_BLOCK_SECTORS: u64 = 2 * 1024 * 1024;
/// Thin device ids are 24 bits.
pub const MAX_DEV_ID: u64 = (1 << 24) - 1;

/// Pool features as the table gives them (the kernel's `pool_features`, inverted where
/// the table names the non-default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFeatures {
    pub zero_new_blocks: bool,
    pub discard_enabled: bool,
    pub discard_passdown: bool,
    pub read_only: bool,
    pub error_if_no_space: bool,
}

impl Default for PoolFeatures {
    fn default() -> PoolFeatures {
        PoolFeatures {
            zero_new_blocks: true,
            discard_enabled: true,
            discard_passdown: true,
            read_only: false,
            error_if_no_space: false,
        }
    }
}

impl PoolFeatures {
    /// Words as the table prints them, in the kernel's order.
    pub fn words(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.zero_new_blocks {
            v.push("skip_block_zeroing");
        }
        if !self.discard_enabled {
            v.push("ignore_discard");
        }
        if !self.discard_passdown {
            v.push("no_discard_passdown");
        }
        if self.read_only {
            v.push("read_only");
        }
        if self.error_if_no_space {
            v.push("error_if_no_space");
        }
        v
    }
}

/// `thin-pool <meta> <data> <block size> <low water> [<#features> <features>…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolParams {
    pub meta_dev: String,
    pub data_dev: String,
    /// Data block size in sectors.
    pub block_size: u64,
    /// Low water mark in data blocks.
    pub low_water: u64,
    pub features: PoolFeatures,
}

impl PoolParams {
    /// Parse the argument count and the features as the kernel's `pool_ctr` does before
    /// it opens the devices; [`PoolParams::parse_numbers`] reads the rest after that.
    pub fn from_args(args: &[String]) -> Result<PoolParams, TargetError> {
        if args.len() < 4 {
            return Err(TargetError::invalid("Invalid argument count"));
        }
        if args[0] == args[1] {
            return Err(TargetError::invalid(
                "Error setting metadata or data device",
            ));
        }
        let features = parse_features(&args[4..])?;
        Ok(PoolParams {
            meta_dev: args[0].clone(),
            data_dev: args[1].clone(),
            block_size: MIN_BLOCK_SECTORS,
            low_water: 0,
            features,
        })
    }

    /// Read the block size and low water mark (after the devices are open).
    pub fn parse_numbers(&mut self, args: &[String]) -> Result<(), TargetError> {
        self.block_size = parse_block_size(&args[2])?;
        self.low_water =
            parse_num(&args[3]).ok_or_else(|| TargetError::invalid("Invalid low water mark"))?;
        Ok(())
    }

    /// Parse a whole line (no devices involved).
    pub fn parse(args: &[String]) -> Result<PoolParams, TargetError> {
        let mut p = PoolParams::from_args(args)?;
        p.parse_numbers(args)?;
        Ok(p)
    }
}

/// The block size word: decimal, 128…2097152, a multiple of 128.
pub fn parse_block_size(w: &str) -> Result<u64, TargetError> {
    let bad = || TargetError::invalid("Invalid block size");
    let b: u64 = parse_num(w).ok_or_else(bad)?;
    if !(MIN_BLOCK_SECTORS..=MAX_BLOCK_SECTORS).contains(&b) || !b.is_multiple_of(MIN_BLOCK_SECTORS)
    {
        return Err(bad());
    }
    Ok(b)
}

fn parse_features(rest: &[String]) -> Result<PoolFeatures, TargetError> {
    let mut f = PoolFeatures::default();
    if rest.is_empty() {
        return Ok(f);
    }
    let bad_count = || TargetError::invalid("Invalid number of pool feature arguments");
    let n: usize = parse_num(&rest[0]).ok_or_else(bad_count)?;
    if n > 4 || n > rest.len() - 1 {
        return Err(bad_count());
    }
    for w in &rest[1..=n] {
        match w.to_ascii_lowercase().as_str() {
            "skip_block_zeroing" => f.zero_new_blocks = false,
            "ignore_discard" => f.discard_enabled = false,
            "no_discard_passdown" => f.discard_passdown = false,
            "read_only" => f.read_only = true,
            "error_if_no_space" => f.error_if_no_space = true,
            _ => return Err(TargetError::invalid("Unrecognised pool feature requested")),
        }
    }
    Ok(f)
}

impl fmt::Display for PoolParams {
    /// The kernel's table line: every word followed by a space, the last one too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} ",
            Escaped(&self.meta_dev),
            Escaped(&self.data_dev),
            self.block_size,
            self.low_water
        )?;
        let words = self.features.words();
        write!(f, "{} ", words.len())?;
        for w in words {
            write!(f, "{w} ")?;
        }
        Ok(())
    }
}

/// A thin device id word (decimal, 24 bits).
pub fn parse_dev_id(w: &str) -> Option<u64> {
    parse_num::<u64>(w).filter(|&d| d <= MAX_DEV_ID)
}

/// `thin <pool dev> <dev id> [<external origin dev>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinParams {
    pub pool_dev: String,
    pub dev_id: u64,
    pub origin: Option<String>,
}

impl ThinParams {
    /// Parse as the kernel's `thin_ctr` does (the device id is checked after the devices
    /// are opened; see [`ThinParams::check_dev_id`]).
    pub fn from_args(args: &[String]) -> Result<ThinParams, TargetError> {
        if args.len() != 2 && args.len() != 3 {
            return Err(TargetError::invalid("Invalid argument count"));
        }
        if args.len() == 3 && args[0] == args[2] {
            return Err(TargetError::invalid("Error setting origin device"));
        }
        Ok(ThinParams {
            pool_dev: args[0].clone(),
            dev_id: 0,
            origin: args.get(2).cloned(),
        })
    }

    /// Read the device id word.
    pub fn check_dev_id(&mut self, w: &str) -> Result<(), TargetError> {
        self.dev_id = parse_dev_id(w).ok_or_else(|| TargetError::invalid("Invalid device id"))?;
        Ok(())
    }
}

impl fmt::Display for ThinParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", Escaped(&self.pool_dev), self.dev_id)?;
        if let Some(o) = &self.origin {
            write!(f, " {}", Escaped(o))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn pool_line_round_trips_in_kernel_order() {
        let p = PoolParams::parse(&args(
            "/m /d 128 10 3 error_if_no_space skip_block_zeroing read_only",
        ))
        .unwrap();
        assert_eq!(
            p.to_string(),
            "/m /d 128 10 3 skip_block_zeroing read_only error_if_no_space "
        );
        let p = PoolParams::parse(&args("/m /d 256 0")).unwrap();
        assert_eq!(p.to_string(), "/m /d 256 0 0 ");
    }

    #[test]
    fn pool_errors_are_the_kernels() {
        let e = |s: &str| PoolParams::parse(&args(s)).unwrap_err().msg;
        assert_eq!(e("/m /d 128"), "Invalid argument count");
        assert_eq!(e("/m /m 128 0"), "Error setting metadata or data device");
        assert_eq!(e("/m /d 100 0"), "Invalid block size");
        assert_eq!(e("/m /d 64 0"), "Invalid block size");
        assert_eq!(e("/m /d 4194304 0"), "Invalid block size");
        assert_eq!(e("/m /d 128 x"), "Invalid low water mark");
        assert_eq!(
            e("/m /d 128 0 1 bogus"),
            "Unrecognised pool feature requested"
        );
        assert_eq!(
            e("/m /d 128 0 5 a b c d e"),
            "Invalid number of pool feature arguments"
        );
        assert_eq!(
            e("/m /d 128 0 2 read_only"),
            "Invalid number of pool feature arguments"
        );
    }

    #[test]
    fn thin_line_and_ids() {
        let mut t = ThinParams::from_args(&args("253:0 7 /o")).unwrap();
        t.check_dev_id("7").unwrap();
        assert_eq!(t.to_string(), "253:0 7 /o");
        assert_eq!(
            ThinParams::from_args(&args("253:0")).unwrap_err().msg,
            "Invalid argument count"
        );
        assert_eq!(
            t.check_dev_id("16777216").unwrap_err().msg,
            "Invalid device id"
        );
        assert_eq!(parse_dev_id("16777215"), Some(MAX_DEV_ID));
    }
}
