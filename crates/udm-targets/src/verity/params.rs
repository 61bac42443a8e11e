//! `verity` table parameters: parsing with the kernel's (6.1, target v1.9.0) error texts and
//! the canonical TABLE line.

use std::fmt;
use std::str::FromStr;
use udm_core::args::parse_num;
use udm_core::{escape_arg, Escaped, TargetError};
use udm_formats::verity::{from_hex, to_hex};

/// Most optional words the kernel accepts (4 flags + 8 FEC words + 2 signature words).
pub const MAX_OPT_ARGS: u64 = 14;

/// What happens when a block fails verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Fail the I/O with EIO (the default).
    #[default]
    Eio,
    /// `ignore_corruption`: log and return the data anyway.
    Logging,
    /// `restart_on_corruption`: the kernel reboots; udm fails this and all later I/O.
    Restart,
    /// `panic_on_corruption`: the kernel panics; udm fails this and all later I/O.
    Panic,
}

impl Mode {
    pub fn keyword(self) -> Option<&'static str> {
        match self {
            Mode::Eio => None,
            Mode::Logging => Some("ignore_corruption"),
            Mode::Restart => Some("restart_on_corruption"),
            Mode::Panic => Some("panic_on_corruption"),
        }
    }
}

/// FEC options as given (all optional until the constructor checks them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FecParams {
    pub dev: Option<String>,
    pub roots: Option<u32>,
    pub blocks: Option<u64>,
    pub start: u64,
}

/// `verity <version> <data_dev> <hash_dev> <data_block_size> <hash_block_size>
/// <#data_blocks> <hash_start> <alg> <root_digest> <salt|-> [<#opt> <opt>…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    pub version: u32,
    pub data_dev: String,
    pub hash_dev: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub hash_start: u64,
    pub alg: String,
    pub root_digest: Vec<u8>,
    pub salt: Vec<u8>,
    pub mode: Mode,
    pub ignore_zero_blocks: bool,
    pub check_at_most_once: bool,
    pub try_verify_in_tasklet: bool,
    pub fec: FecParams,
    pub sig_key_desc: Option<String>,
}

fn inval(m: &str) -> TargetError {
    TargetError::invalid(m)
}

/// `num << shift >> shift == num`: the kernel's check that a block count fits in sectors.
fn fits_in_sectors(num: u64, block_size: u32) -> bool {
    let shift = block_size.trailing_zeros().saturating_sub(9);
    shift < 64 && (num << shift) >> shift == num
}

impl VerityParams {
    /// True when FEC is in use (the kernel ignores FEC options without a device).
    pub fn fec_enabled(&self) -> bool {
        self.fec.dev.is_some()
    }

    fn opt_words(&self) -> Vec<String> {
        let mut w: Vec<String> = Vec::new();
        if let Some(k) = self.mode.keyword() {
            w.push(k.into());
        }
        if self.ignore_zero_blocks {
            w.push("ignore_zero_blocks".into());
        }
        if self.check_at_most_once {
            w.push("check_at_most_once".into());
        }
        if self.try_verify_in_tasklet {
            w.push("try_verify_in_tasklet".into());
        }
        if let Some(d) = &self.fec.dev {
            w.push("use_fec_from_device".into());
            w.push(escape_arg(d).into_owned());
            w.push("fec_blocks".into());
            w.push(self.fec.blocks.unwrap_or(0).to_string());
            w.push("fec_start".into());
            w.push(self.fec.start.to_string());
            w.push("fec_roots".into());
            w.push(self.fec.roots.unwrap_or(0).to_string());
        }
        if let Some(k) = &self.sig_key_desc {
            w.push("root_hash_sig_key_desc".into());
            w.push(k.clone());
        }
        w
    }

    fn parse_opts(&mut self, args: &[String]) -> Result<(), TargetError> {
        let count: u64 = parse_num(&args[0])
            .filter(|&n: &u64| n <= MAX_OPT_ARGS && (n as usize) < args.len())
            .ok_or_else(|| inval("Invalid number of feature args"))?;
        let mut it = args[1..=count as usize].iter();
        while let Some(name) = it.next() {
            let lname = name.to_ascii_lowercase();
            match lname.as_str() {
                "ignore_corruption" | "restart_on_corruption" | "panic_on_corruption" => {
                    if self.mode != Mode::Eio {
                        return Err(inval("Conflicting error handling parameters"));
                    }
                    self.mode = match lname.as_str() {
                        "ignore_corruption" => Mode::Logging,
                        "restart_on_corruption" => Mode::Restart,
                        _ => Mode::Panic,
                    };
                }
                "ignore_zero_blocks" => self.ignore_zero_blocks = true,
                "check_at_most_once" => {
                    if self.data_blocks > i32::MAX as u64 {
                        return Err(TargetError::with_errno(
                            libc::E2BIG,
                            "device too large to use check_at_most_once",
                        ));
                    }
                    self.check_at_most_once = true
                }
                "try_verify_in_tasklet" => self.try_verify_in_tasklet = true,
                "use_fec_from_device" | "fec_blocks" | "fec_start" | "fec_roots" => {
                    let v = it
                        .next()
                        .ok_or_else(|| inval("FEC feature arguments require a value"))?;
                    match lname.as_str() {
                        "use_fec_from_device" => self.fec.dev = Some(v.clone()),
                        "fec_blocks" => {
                            self.fec.blocks = Some(
                                parse_num(v)
                                    .filter(|&n| fits_in_sectors(n, self.data_block_size))
                                    .ok_or_else(|| inval("Invalid fec_blocks"))?,
                            )
                        }
                        "fec_start" => {
                            self.fec.start = parse_num(v)
                                .filter(|&n| fits_in_sectors(n, self.data_block_size))
                                .ok_or_else(|| inval("Invalid fec_start"))?
                        }
                        _ => {
                            self.fec.roots = Some(
                                parse_num::<u8>(v)
                                    .map(u32::from)
                                    .filter(|r| (2..=24).contains(r))
                                    .ok_or_else(|| inval("Invalid fec_roots"))?,
                            )
                        }
                    }
                }
                "root_hash_sig_key_desc" => {
                    let v = it.next().ok_or_else(|| {
                        inval("DM Verity Sig Verification Signature key not specified")
                    })?;
                    self.sig_key_desc = Some(v.clone());
                }
                _ => {
                    return Err(inval("Unrecognized verity feature request")
                        .with_detail(format!("unknown option `{name}`")))
                }
            }
        }
        Ok(())
    }
}

impl VerityParams {
    /// Parse the words the table gave (as split by `split_args`).
    pub fn from_args(a: &[String]) -> Result<Self, TargetError> {
        if a.len() < 10 {
            return Err(inval("Not enough arguments"));
        }
        let version: u32 = parse_num(&a[0])
            .filter(|&v| v <= 1)
            .ok_or_else(|| inval("Invalid version"))?;
        let data_block_size: u32 = parse_num(&a[3])
            .filter(|&n: &u32| n.is_power_of_two() && (512..=4096).contains(&n))
            .ok_or_else(|| inval("Invalid data device block size"))?;
        let hash_block_size: u32 = parse_num(&a[4])
            .filter(|&n: &u32| n.is_power_of_two() && n >= 512 && n <= i32::MAX as u32)
            .ok_or_else(|| inval("Invalid hash device block size"))?;
        let data_blocks: u64 = parse_num(&a[5])
            .filter(|&n| fits_in_sectors(n, data_block_size))
            .ok_or_else(|| inval("Invalid data blocks"))?;
        let hash_start: u64 = parse_num(&a[6])
            .filter(|&n| fits_in_sectors(n, hash_block_size))
            .ok_or_else(|| inval("Invalid hash start"))?;
        let root_digest = from_hex(&a[8])
            .filter(|d| !d.is_empty())
            .ok_or_else(|| inval("Invalid root digest"))?;
        let salt = if a[9] == "-" {
            Vec::new()
        } else {
            from_hex(&a[9]).ok_or_else(|| inval("Invalid salt"))?
        };
        let mut p = VerityParams {
            version,
            data_dev: a[1].clone(),
            hash_dev: a[2].clone(),
            data_block_size,
            hash_block_size,
            data_blocks,
            hash_start,
            alg: a[7].clone(),
            root_digest,
            salt,
            mode: Mode::Eio,
            ignore_zero_blocks: false,
            check_at_most_once: false,
            try_verify_in_tasklet: false,
            fec: FecParams::default(),
            sig_key_desc: None,
        };
        if a.len() > 10 {
            p.parse_opts(&a[10..])?;
        }
        Ok(p)
    }
}

impl FromStr for VerityParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        VerityParams::from_args(&udm_core::split_args(s))
    }
}

impl fmt::Display for VerityParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {} {} {} {} {}",
            self.version,
            Escaped(&self.data_dev),
            Escaped(&self.hash_dev),
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start,
            self.alg,
            to_hex(&self.root_digest),
            if self.salt.is_empty() {
                "-".to_string()
            } else {
                to_hex(&self.salt)
            }
        )?;
        let w = self.opt_words();
        if !w.is_empty() {
            write!(f, " {} {}", w.len(), w.join(" "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "ed9b5d78043c83bc3098c71afef042f9e4df362f1d7f9b61afb7d622c2957dd6";

    fn p(s: &str) -> Result<VerityParams, String> {
        s.parse::<VerityParams>().map_err(|e| e.msg)
    }
    fn base() -> String {
        format!("1 /d /h 4096 4096 1024 1 sha256 {ROOT} 0011")
    }

    #[test]
    fn canonical_order_as_kernel_6_1() {
        // Loaded and printed by kernel 6.1 (devices shown by name here).
        let t = format!("{} 12 use_fec_from_device /f fec_roots 2 fec_blocks 1279 fec_start 0 try_verify_in_tasklet check_at_most_once ignore_zero_blocks panic_on_corruption", base());
        assert_eq!(
            p(&t).unwrap().to_string(),
            format!("{} 12 panic_on_corruption ignore_zero_blocks check_at_most_once try_verify_in_tasklet use_fec_from_device /f fec_blocks 1279 fec_start 0 fec_roots 2", base())
        );
        let t = format!("{} 3 fec_roots 2 restart_on_corruption", base());
        assert_eq!(
            p(&t).unwrap().to_string(),
            format!("{} 1 restart_on_corruption", base())
        );
        assert_eq!(
            p(&format!("{} 1 IGNORE_corruption", base()))
                .unwrap()
                .to_string(),
            format!("{} 1 ignore_corruption", base())
        );
        let up = format!(
            "01 /d /h 4096 4096 1024 1 sha256 {} AB 0",
            ROOT.to_uppercase()
        );
        assert_eq!(
            p(&up).unwrap().to_string(),
            format!("1 /d /h 4096 4096 1024 1 sha256 {ROOT} ab")
        );
    }

    #[test]
    fn kernel_error_texts() {
        let b = base();
        let cases = [
            (
                format!("{b} 2 ignore_corruption restart_on_corruption"),
                "Conflicting error handling parameters",
            ),
            (
                format!("{b} 1 bogus"),
                "Unrecognized verity feature request",
            ),
            (format!("{b} 2 fec_roots"), "Invalid number of feature args"),
            (
                format!("{b} 1 fec_roots"),
                "FEC feature arguments require a value",
            ),
            (
                format!("{b} 15 a b c d e f g h i j k l m n o"),
                "Invalid number of feature args",
            ),
            (format!("{b} 2 fec_roots 1"), "Invalid fec_roots"),
            (format!("{b} 2 fec_roots 25"), "Invalid fec_roots"),
            (format!("{b} 1"), "Invalid number of feature args"),
            (
                format!("{b} 1 root_hash_sig_key_desc"),
                "DM Verity Sig Verification Signature key not specified",
            ),
            (
                format!("1 /d /h 4096 4096 1024 1 sha256 {ROOT} 001"),
                "Invalid salt",
            ),
            (
                format!("1 /d /h 4096 4096 1024 1 sha256 {ROOT}"),
                "Not enough arguments",
            ),
            (
                format!("2 /d /h 4096 4096 1024 1 sha256 {ROOT} 00"),
                "Invalid version",
            ),
            (
                format!("1 /d /h 8192 4096 1024 1 sha256 {ROOT} 00"),
                "Invalid data device block size",
            ),
            (
                format!("1 /d /h 4096 3000 1024 1 sha256 {ROOT} 00"),
                "Invalid hash device block size",
            ),
            (
                format!("1 /d /h 4096 4096 99999999999999999999 1 sha256 {ROOT} 00"),
                "Invalid data blocks",
            ),
            (
                format!("1 /d /h 4096 4096 4611686018427387904 1 sha256 {ROOT} 00"),
                "Invalid data blocks",
            ),
            (
                format!("1 /d /h 4096 4096 1024 -1 sha256 {ROOT} 00"),
                "Invalid hash start",
            ),
            (
                "1 /d /h 4096 4096 1024 1 sha256 0x 00".to_string(),
                "Invalid root digest",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(p(&t).unwrap_err(), want, "{t}");
        }
    }
}
