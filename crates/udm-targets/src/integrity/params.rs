//! `integrity` table arguments: `<dev> <offset> <tag size|-> <J|B|D|R> <#opts> [opts]`, parsed
//! with the kernel's rules and error texts.

use std::fmt;
use udm_core::TargetError;

/// The journal mode letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Journal,
    Bitmap,
    Direct,
    Recovery,
}

impl Mode {
    pub fn letter(self) -> char {
        match self {
            Mode::Journal => 'J',
            Mode::Bitmap => 'B',
            Mode::Direct => 'D',
            Mode::Recovery => 'R',
        }
    }
}

/// `alg[:hexkey]` of internal_hash / journal_crypt / journal_mac.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgSpec {
    pub alg: String,
    pub key_hex: Option<String>,
}

impl AlgSpec {
    fn parse(v: &str, err: &str) -> Result<AlgSpec, TargetError> {
        let (alg, key_hex) = match v.split_once(':') {
            Some((a, k)) => (a, Some(k.to_string())),
            None => (v, None),
        };
        if let Some(k) = &key_hex {
            if k.len() % 2 != 0 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TargetError::invalid(err));
            }
        }
        Ok(AlgSpec {
            alg: alg.to_string(),
            key_hex,
        })
    }
    pub fn key(&self) -> Option<Vec<u8>> {
        self.key_hex.as_ref().map(|h| {
            (0..h.len() / 2)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect()
        })
    }
}

impl fmt::Display for AlgSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.alg)?;
        if let Some(k) = &self.key_hex {
            write!(f, ":{k}")?;
        }
        Ok(())
    }
}

/// Parsed arguments (before the superblock is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityParams {
    pub dev: String,
    pub start: u64,
    /// `None` for `-`: the internal hash's digest size.
    pub tag_size: Option<u32>,
    pub mode: Mode,
    /// 0: the default (a fraction of the device).
    pub journal_sectors: u32,
    pub interleave_sectors: u32,
    pub buffer_sectors: u32,
    pub journal_watermark: u32,
    pub commit_time: u32,
    pub meta_device: Option<String>,
    pub sectors_per_block: u32,
    pub log2_sectors_per_bit: Option<u8>,
    pub bitmap_flush_interval: Option<u32>,
    pub internal_hash: Option<AlgSpec>,
    pub journal_crypt: Option<AlgSpec>,
    pub journal_mac: Option<AlgSpec>,
    pub recalculate: bool,
    pub reset_recalculate: bool,
    pub allow_discards: bool,
    pub fix_padding: bool,
    pub fix_hmac: bool,
    pub legacy_recalculate: bool,
}

fn inval(m: &str) -> TargetError {
    TargetError::invalid(m)
}

/// `prefix:%u` with nothing after the number (the kernel's sscanf with a `%c` sentinel).
fn num_after<T: std::str::FromStr>(opt: &str, prefix: &str) -> Option<T> {
    let v = opt.strip_prefix(prefix)?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

impl IntegrityParams {
    pub fn from_args(args: &[String]) -> Result<IntegrityParams, TargetError> {
        if args.len() <= 4 {
            return Err(inval("Invalid argument count"));
        }
        let start: u64 = args[1]
            .parse()
            .map_err(|_| inval("Invalid starting offset"))?;
        let tag_size = if args[2] == "-" {
            None
        } else {
            match args[2].parse::<u32>() {
                Ok(n) if n > 0 && args[2].bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(inval("Invalid tag size")),
            }
        };
        let mode = match args[3].as_str() {
            "J" => Mode::Journal,
            "B" => Mode::Bitmap,
            "D" => Mode::Direct,
            "R" => Mode::Recovery,
            _ => return Err(inval("Invalid mode (expecting J, B, D, R)")),
        };
        let mut p = IntegrityParams {
            dev: args[0].clone(),
            start,
            tag_size,
            mode,
            journal_sectors: 0,
            interleave_sectors: udm_formats::integrity::DEFAULT_INTERLEAVE_SECTORS,
            buffer_sectors: udm_formats::integrity::DEFAULT_BUFFER_SECTORS,
            journal_watermark: udm_formats::integrity::DEFAULT_JOURNAL_WATERMARK,
            commit_time: udm_formats::integrity::DEFAULT_SYNC_MSEC,
            meta_device: None,
            sectors_per_block: 1,
            log2_sectors_per_bit: None,
            bitmap_flush_interval: None,
            internal_hash: None,
            journal_crypt: None,
            journal_mac: None,
            recalculate: false,
            reset_recalculate: false,
            allow_discards: false,
            fix_padding: false,
            fix_hmac: false,
            legacy_recalculate: false,
        };
        let n: usize = match args[4].parse::<usize>() {
            Ok(n) if n <= 18 && args[4].bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(inval("Invalid number of feature args")),
        };
        if args.len() < 5 + n {
            return Err(inval("Not enough feature arguments"));
        }
        for opt in &args[5..5 + n] {
            let o = opt.as_str();
            if let Some(v) = num_after::<u32>(o, "journal_sectors:") {
                p.journal_sectors = v.max(1);
            } else if let Some(v) = num_after::<u32>(o, "interleave_sectors:") {
                p.interleave_sectors = v;
            } else if let Some(v) = num_after::<u32>(o, "buffer_sectors:") {
                p.buffer_sectors = v;
            } else if let Some(v) = num_after::<u32>(o, "journal_watermark:").filter(|v| *v <= 100)
            {
                p.journal_watermark = v;
            } else if let Some(v) = num_after::<u32>(o, "commit_time:") {
                p.commit_time = v;
            } else if let Some(d) = o.strip_prefix("meta_device:") {
                p.meta_device = Some(d.to_string());
            } else if let Some(v) = num_after::<u32>(o, "block_size:") {
                if !(512..=4096).contains(&v) || !v.is_power_of_two() {
                    return Err(inval("Invalid block_size argument"));
                }
                p.sectors_per_block = v / 512;
            } else if let Some(v) = num_after::<u64>(o, "sectors_per_bit:") {
                p.log2_sectors_per_bit = Some(if v == 0 { 0 } else { v.ilog2() as u8 });
            } else if let Some(v) = num_after::<u32>(o, "bitmap_flush_interval:") {
                // UINT_MAX * 1000 / HZ (250).
                if v as u64 >= u32::MAX as u64 * 1000 / 250 {
                    return Err(inval("Invalid bitmap_flush_interval argument"));
                }
                p.bitmap_flush_interval = Some(v);
            } else if let Some(v) = o.strip_prefix("internal_hash:") {
                p.internal_hash = Some(AlgSpec::parse(v, "Invalid internal_hash argument")?);
            } else if let Some(v) = o.strip_prefix("journal_crypt:") {
                p.journal_crypt = Some(AlgSpec::parse(v, "Invalid journal_crypt argument")?);
            } else if let Some(v) = o.strip_prefix("journal_mac:") {
                p.journal_mac = Some(AlgSpec::parse(v, "Invalid journal_mac argument")?);
            } else if o == "recalculate" {
                p.recalculate = true;
            } else if o == "reset_recalculate" {
                p.recalculate = true;
                p.reset_recalculate = true;
            } else if o == "allow_discards" {
                p.allow_discards = true;
            } else if o == "fix_padding" {
                p.fix_padding = true;
            } else if o == "fix_hmac" {
                p.fix_hmac = true;
            } else if o == "legacy_recalculate" {
                p.legacy_recalculate = true;
            } else {
                return Err(inval("Invalid argument"));
            }
        }
        Ok(p)
    }
}

/// `jiffies_to_msecs(msecs_to_jiffies(ms))` at HZ=250 (Debian's kernel).
pub fn round_to_jiffies_ms(ms: u32) -> u32 {
    (ms as u64)
        .div_ceil(4)
        .saturating_mul(4)
        .min(u32::MAX as u64) as u32
}
