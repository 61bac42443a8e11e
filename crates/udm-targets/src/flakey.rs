//! `flakey`: a linear mapping that is up for `up` seconds, then misbehaves for `down` seconds,
//! and repeats. While down it errors, drops or corrupts I/O as its features say. The cycle is
//! read from a `Clock`, so tests drive it by hand.
//!
//! Table output follows the reference kernel (6.1: a trailing space, `0 ` with no features);
//! the features newer kernels added (`error_reads`, `random_read_corrupt`,
//! `random_write_corrupt`) are accepted and printed in the same style.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use udm_core::clock::{Clock, RealClock};
use udm_core::{
    DevHandle, Escaped, MapResult, StatusType, Target, TargetCtx, TargetError, TargetType,
};
use udm_io::{Bio, BioFlags, IoBuf, IoError, Op, Sectors};

use crate::kscan::{scan_u64, ArgSet, DmArg};

/// Random-corruption probabilities are out of this many.
pub const PROBABILITY_BASE: u32 = 1_000_000_000;

/// The kernel's `REQ_FUA`, `REQ_PREFLUSH` and `REQ_NOUNMAP` bits, for `corrupt_bio_byte`'s
/// flags mask (the low 8 bits hold the op: read 0, write 1, discard 3, write-zeroes 9).
pub const REQ_FUA: u32 = 1 << 17;
pub const REQ_PREFLUSH: u32 = 1 << 18;
pub const REQ_NOUNMAP: u32 = 1 << 27;

/// `corrupt_bio_byte <Nth_byte> <r|w> <value> <flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptByte {
    /// 1-based byte within the bio.
    pub byte: u32,
    pub write: bool,
    pub value: u8,
    /// Only bios whose `bi_opf` has all these bits.
    pub flags: u32,
}

/// Features, as given on the table line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlakeyFeatures {
    pub error_reads: bool,
    pub drop_writes: bool,
    pub error_writes: bool,
    pub corrupt: Option<CorruptByte>,
    pub random_read_corrupt: u32,
    pub random_write_corrupt: u32,
}

impl FlakeyFeatures {
    /// No feature given: everything errors while down.
    pub fn none(&self) -> bool {
        *self == FlakeyFeatures::default()
    }
    fn errors_reads(&self) -> bool {
        self.error_reads || self.none()
    }
    fn errors_writes(&self) -> bool {
        self.error_writes || self.none()
    }
    /// Words the features take (the `<#features>` count).
    pub fn words(&self) -> u32 {
        self.error_reads as u32
            + self.drop_writes as u32
            + (self.error_writes && !self.drop_writes) as u32
            + self.corrupt.map_or(0, |_| 5)
            + if self.random_read_corrupt > 0 { 2 } else { 0 }
            + if self.random_write_corrupt > 0 { 2 } else { 0 }
    }
}

/// `flakey <dev> <offset> <up_secs> <down_secs> [<#features> <feature>...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeyParams {
    pub dev: String,
    pub offset: Sectors,
    pub up: u32,
    pub down: u32,
    pub features: FlakeyFeatures,
}

fn inval(m: &str) -> TargetError {
    TargetError::invalid(m)
}

fn parse_features(a: &mut ArgSet<'_>) -> Result<FlakeyFeatures, TargetError> {
    let mut f = FlakeyFeatures::default();
    if a.argc() == 0 {
        return Ok(f);
    }
    let count = DmArg {
        min: 0,
        max: 11,
        error: "Invalid number of feature args",
    };
    let byte = DmArg {
        min: 1,
        max: u32::MAX,
        error: "Invalid corrupt bio byte",
    };
    let value = DmArg {
        min: 0,
        max: 255,
        error: "Invalid corrupt value to write into bio byte (0-255)",
    };
    let flags = DmArg {
        min: 0,
        max: u32::MAX,
        error: "Invalid corrupt bio flags mask",
    };
    let prob = DmArg {
        min: 0,
        max: PROBABILITY_BASE,
        error: "Invalid random corrupt argument",
    };
    let mut argc = a.read_arg_group(&count)?;
    while argc > 0 {
        let name = a
            .shift()
            .ok_or_else(|| inval("Insufficient feature arguments"))?
            .to_ascii_lowercase();
        argc -= 1;
        match name.as_str() {
            "error_reads" => {
                if std::mem::replace(&mut f.error_reads, true) {
                    return Err(inval("Feature error_reads duplicated"));
                }
            }
            "drop_writes" => {
                if std::mem::replace(&mut f.drop_writes, true) {
                    return Err(inval("Feature drop_writes duplicated"));
                }
                if f.error_writes {
                    return Err(inval(
                        "Feature drop_writes conflicts with feature error_writes",
                    ));
                }
            }
            "error_writes" => {
                if std::mem::replace(&mut f.error_writes, true) {
                    return Err(inval("Feature error_writes duplicated"));
                }
                if f.drop_writes {
                    return Err(inval(
                        "Feature error_writes conflicts with feature drop_writes",
                    ));
                }
            }
            "corrupt_bio_byte" => {
                if f.corrupt.is_some() {
                    return Err(inval("Feature corrupt_bio_byte duplicated"));
                }
                if argc == 0 {
                    return Err(inval("Feature corrupt_bio_byte requires parameters"));
                }
                let b = a.read_arg(&byte)?;
                let dir = a.shift().map(|d| d.to_ascii_lowercase());
                let write = match dir.as_deref() {
                    Some("w") => true,
                    Some("r") => false,
                    _ => return Err(inval("Invalid corrupt bio direction (r or w)")),
                };
                let v = a.read_arg(&value)?;
                let fl = a.read_arg(&flags)?;
                argc = argc.saturating_sub(4);
                f.corrupt = Some(CorruptByte {
                    byte: b,
                    write,
                    value: v as u8,
                    flags: fl,
                });
            }
            "random_read_corrupt" | "random_write_corrupt" => {
                let slot = if name == "random_read_corrupt" {
                    &mut f.random_read_corrupt
                } else {
                    &mut f.random_write_corrupt
                };
                if *slot > 0 {
                    return Err(TargetError::invalid(format!("Feature {name} duplicated")));
                }
                if argc == 0 {
                    return Err(TargetError::invalid(format!(
                        "Feature {name} requires a parameter"
                    )));
                }
                *slot = a.read_arg(&prob)?;
                argc -= 1;
            }
            _ => return Err(inval("Unrecognised flakey feature requested")),
        }
    }
    let cw = f.corrupt.is_some_and(|c| c.write);
    let cr = f.corrupt.is_some_and(|c| !c.write);
    if f.drop_writes && f.random_write_corrupt > 0 {
        return Err(inval("drop_writes is incompatible with random_write_corrupt or corrupt_bio_byte with the WRITE flag set"));
    }
    if f.drop_writes && cw {
        return Err(inval(
            "drop_writes is incompatible with corrupt_bio_byte with the WRITE flag set",
        ));
    }
    if f.error_writes && f.random_write_corrupt > 0 {
        return Err(inval("error_writes is incompatible with random_write_corrupt or corrupt_bio_byte with the WRITE flag set"));
    }
    if f.error_writes && cw {
        return Err(inval(
            "error_writes is incompatible with corrupt_bio_byte with the WRITE flag set",
        ));
    }
    if f.error_reads && (cr || f.random_read_corrupt > 0) {
        return Err(inval("error_reads is incompatible with random_read_corrupt or corrupt_bio_byte with the READ flag set"));
    }
    Ok(f)
}

impl FlakeyParams {
    /// Parse the words the table gave (as split by `split_args`).
    pub fn from_args(args: &[String]) -> Result<Self, TargetError> {
        if args.len() < 4 {
            return Err(inval("Invalid argument count"));
        }
        let mut a = ArgSet::new(args);
        let dev = a.shift().unwrap_or_default().to_string();
        let offset = a
            .shift()
            .and_then(scan_u64)
            .ok_or_else(|| inval("Invalid device sector"))?;
        // The reference kernel reports a bad down interval with the up interval's message.
        let interval = DmArg {
            min: 0,
            max: u32::MAX,
            error: "Invalid up interval",
        };
        let up = a.read_arg(&interval)?;
        let down = a.read_arg(&interval)?;
        if up == 0 && down == 0 {
            return Err(inval("Total (up + down) interval is zero"));
        }
        if up.checked_add(down).is_none() {
            return Err(inval("Interval overflow"));
        }
        let features = parse_features(&mut a)?;
        Ok(FlakeyParams {
            dev,
            offset: Sectors(offset),
            up,
            down,
            features,
        })
    }
}

impl FromStr for FlakeyParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        FlakeyParams::from_args(&udm_core::split_args(s))
    }
}

impl fmt::Display for FlakeyParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = &self.features;
        write!(
            f,
            "{} {} {} {} ",
            Escaped(&self.dev),
            self.offset,
            self.up,
            self.down
        )?;
        write!(f, "{} ", x.words())?;
        if x.error_reads {
            f.write_str("error_reads ")?;
        }
        if x.drop_writes {
            f.write_str("drop_writes ")?;
        } else if x.error_writes {
            f.write_str("error_writes ")?;
        }
        if let Some(c) = x.corrupt {
            write!(
                f,
                "corrupt_bio_byte {} {} {} {} ",
                c.byte,
                if c.write { 'w' } else { 'r' },
                c.value,
                c.flags
            )?;
        }
        if x.random_read_corrupt > 0 {
            write!(f, "random_read_corrupt {} ", x.random_read_corrupt)?;
        }
        if x.random_write_corrupt > 0 {
            write!(f, "random_write_corrupt {} ", x.random_write_corrupt)?;
        }
        Ok(())
    }
}

/// The `flakey` target type; `with_clock` drives the up/down cycle from a test clock.
pub struct FlakeyType {
    clock: Arc<dyn Clock>,
}

impl FlakeyType {
    pub fn new() -> FlakeyType {
        FlakeyType {
            clock: RealClock::shared(),
        }
    }
    pub fn with_clock(clock: Arc<dyn Clock>) -> FlakeyType {
        FlakeyType { clock }
    }
}

impl Default for FlakeyType {
    fn default() -> FlakeyType {
        FlakeyType::new()
    }
}

impl TargetType for FlakeyType {
    fn name(&self) -> &'static str {
        "flakey"
    }
    fn version(&self) -> [u32; 3] {
        [1, 5, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = FlakeyParams::from_args(args)?;
        let dev = ctx.get_device_area(&p.dev, p.offset, ctx.len)?;
        let start_time = self.clock.now();
        Ok(Box::new(Flakey {
            dev,
            p,
            clock: self.clock.clone(),
            start_time,
            rng: Arc::new(Rng::seeded()),
        }))
    }
}

/// A small xorshift generator for the random-corruption features.
struct Rng(AtomicU64);

impl Rng {
    fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Rng(AtomicU64::new(t | 1))
    }
    fn next(&self) -> u64 {
        let step = |mut x: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let prev = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x)))
            .unwrap_or(1);
        step(prev).wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `p / PROBABILITY_BASE`.
    fn hit(&self, p: u32) -> bool {
        p > 0 && (self.next() % PROBABILITY_BASE as u64) < p as u64
    }
    /// Overwrite one random byte with a random value.
    fn corrupt(&self, buf: &mut [u8]) {
        if buf.is_empty() {
            return;
        }
        let r = self.next();
        let at = (r % buf.len() as u64) as usize;
        buf[at] = (r >> 56) as u8;
    }
}

pub struct Flakey {
    dev: Arc<DevHandle>,
    p: FlakeyParams,
    clock: Arc<dyn Clock>,
    start_time: Duration,
    rng: Arc<Rng>,
}

/// The kernel's `bi_opf` for a bio: op code plus the flag bits udm models.
pub fn bio_opf(bio: &Bio) -> u32 {
    let op = match bio.op {
        Op::Read => 0,
        Op::Write | Op::Flush => 1,
        Op::Discard => 3,
        Op::WriteZeroes => 9,
        // An op added later: plain read or write.
        op => u32::from(op.is_write()),
    };
    let mut opf = op;
    if bio.flags.contains(BioFlags::FUA) {
        opf |= REQ_FUA;
    }
    if bio.flags.contains(BioFlags::PREFLUSH) || bio.op == Op::Flush {
        opf |= REQ_PREFLUSH;
    }
    if bio.flags.contains(BioFlags::NOUNMAP) {
        opf |= REQ_NOUNMAP;
    }
    opf
}

fn corrupt_fixed(c: &CorruptByte, buf: &mut [u8]) {
    if let Some(b) = buf.get_mut(c.byte as usize - 1) {
        *b = c.value;
    }
}

impl Flakey {
    /// True while in the down part of the cycle (whole seconds since construction, as jiffies/HZ).
    pub fn is_down(&self) -> bool {
        let elapsed = self.clock.now().saturating_sub(self.start_time).as_secs() as u32;
        let period = self.p.up + self.p.down;
        elapsed % period >= self.p.up
    }

    fn remap(&self, mut bio: Bio) -> MapResult {
        if bio.op != Op::Flush {
            bio.sector += self.p.offset;
        }
        MapResult::Remap(self.dev.dev.clone(), bio)
    }
}

impl Target for Flakey {
    fn map(&self, bio: Bio) -> MapResult {
        if !self.is_down() {
            return self.remap(bio);
        }
        let f = self.p.features;
        if bio.op == Op::Read {
            if f.errors_reads() {
                return MapResult::Kill(bio, IoError::Io);
            }
            let fixed = f
                .corrupt
                .filter(|c| !c.write && bio_opf(&bio) & c.flags == c.flags);
            if fixed.is_none() && f.random_read_corrupt == 0 {
                return self.remap(bio);
            }
            let rng = self.rng.clone();
            let bio = bio.on_end(move |r, buf| {
                if r.is_ok() {
                    if let Some(c) = fixed {
                        corrupt_fixed(&c, buf);
                    }
                    if rng.hit(f.random_read_corrupt) {
                        rng.corrupt(buf);
                    }
                }
                r
            });
            return self.remap(bio);
        }
        // Writes, flushes, discards, write-zeroes.
        if f.drop_writes {
            bio.complete(Ok(()));
            return MapResult::Submitted;
        }
        if f.errors_writes() {
            return MapResult::Kill(bio, IoError::Io);
        }
        if bio.op != Op::Write {
            return self.remap(bio);
        }
        let fixed = f
            .corrupt
            .filter(|c| c.write && bio_opf(&bio) & c.flags == c.flags);
        let random = self.rng.hit(f.random_write_corrupt);
        if fixed.is_none() && !random {
            return self.remap(bio);
        }
        // Corrupt a copy, so the submitter's buffer comes back as it gave it.
        let mut bio = bio;
        let orig = bio.take_buf();
        let mut copy = IoBuf::from_slice(&orig);
        if let Some(c) = fixed {
            corrupt_fixed(&c, &mut copy);
        }
        if random {
            self.rng.corrupt(&mut copy);
        }
        bio.set_buf(copy);
        let bio = bio.on_end(move |r, buf| {
            *buf = orig;
            r
        });
        self.remap(bio)
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        match ty {
            StatusType::Info => String::new(),
            StatusType::Table => FlakeyParams {
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

    fn p(s: &str) -> Result<FlakeyParams, TargetError> {
        s.parse()
    }

    #[test]
    fn table_round_trips_in_kernel_order() {
        let t = p("/d 0 5 1 7 corrupt_bio_byte 32 W 1 0 error_writes error_reads").unwrap_err();
        assert!(t.msg.contains("error_writes is incompatible"), "{t}");
        let t = p("/d 8 5 1 4 error_writes error_reads random_read_corrupt 1000").unwrap_err();
        assert!(t.msg.contains("error_reads is incompatible"));
        let t = p("/d 8 5 1 4 random_read_corrupt 1000 drop_writes corrupt_bio_byte").unwrap_err();
        assert_eq!(t.msg, "Feature corrupt_bio_byte requires parameters");
        let ok = p("/d 8 5 1 3 drop_writes random_read_corrupt 1000").unwrap();
        assert_eq!(
            ok.to_string(),
            "/d 8 5 1 3 drop_writes random_read_corrupt 1000 "
        );
        assert_eq!(p("/d 0 1 1").unwrap().to_string(), "/d 0 1 1 0 ");
        assert_eq!(
            p("/d 0 1 1 5 corrupt_bio_byte 1 r 255 0")
                .unwrap()
                .to_string(),
            "/d 0 1 1 5 corrupt_bio_byte 1 r 255 0 "
        );
    }

    #[test]
    fn constructor_errors() {
        assert_eq!(p("/d 0 1").unwrap_err().msg, "Invalid argument count");
        assert_eq!(p("/d x 1 1").unwrap_err().msg, "Invalid device sector");
        assert_eq!(
            p("/d 0 0 0").unwrap_err().msg,
            "Total (up + down) interval is zero"
        );
        assert_eq!(p("/d 0 4294967295 1").unwrap_err().msg, "Interval overflow");
        assert_eq!(p("/d 0 1 x").unwrap_err().msg, "Invalid up interval");
        assert_eq!(
            p("/d 0 1 1 2 drop_writes").unwrap_err().msg,
            "Invalid number of feature args"
        );
        assert_eq!(
            p("/d 0 1 1 1 bogus").unwrap_err().msg,
            "Unrecognised flakey feature requested"
        );
        assert_eq!(
            p("/d 0 1 1 2 drop_writes error_writes").unwrap_err().msg,
            "Feature error_writes conflicts with feature drop_writes"
        );
    }
}
