//! The `raid` table line: raid types (level + md layout algorithm), the raid parameters of
//! the 6.1 kernel with its checks and error texts, and the canonical line it prints back.
//!
//! `raid <raid_type> <#raid_params> <chunk_size> [params…] <#raid_devs> (<meta>|- <data>|-)…`

use std::collections::BTreeSet;
use std::fmt;
use udm_core::{escape_arg, TargetError};

/// md's maximum number of raid devices.
pub const MAX_RAID_DEVICES: u32 = 253;
/// md's `MaxSector`.
pub const MAX_SECTOR: u64 = u64::MAX;
/// md bitmap's `COUNTER_MAX` (the write-behind limit).
const COUNTER_MAX: i64 = 0x3fff;

// md layout algorithms (raid5.h) and dm-raid's raid10 format ids.
pub const ALGO_LEFT_ASYMMETRIC: u32 = 0;
pub const ALGO_RIGHT_ASYMMETRIC: u32 = 1;
pub const ALGO_LEFT_SYMMETRIC: u32 = 2;
pub const ALGO_RIGHT_SYMMETRIC: u32 = 3;
pub const ALGO_PARITY_0: u32 = 4;
pub const ALGO_PARITY_N: u32 = 5;
pub const ALGO_ROTATING_ZERO_RESTART: u32 = 8;
pub const ALGO_ROTATING_N_RESTART: u32 = 9;
pub const ALGO_ROTATING_N_CONTINUE: u32 = 10;
pub const ALGO_LEFT_ASYMMETRIC_6: u32 = 16;
pub const ALGO_RIGHT_ASYMMETRIC_6: u32 = 17;
pub const ALGO_LEFT_SYMMETRIC_6: u32 = 18;
pub const ALGO_RIGHT_SYMMETRIC_6: u32 = 19;
const R10_DEFAULT: u32 = 0;
const R10_NEAR: u32 = 1;
const R10_OFFSET: u32 = 2;
const R10_FAR: u32 = 3;
/// md raid10 layout bits.
pub const RAID10_OFFSET: u32 = 1 << 16;
pub const RAID10_USE_FAR_SETS: u32 = 1 << 18;

/// One entry of dm-raid's `raid_types` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaidType {
    pub name: &'static str,
    pub parity_devs: u32,
    pub minimal_devs: u32,
    pub level: u32,
    pub algorithm: u32,
}

const fn rt(name: &'static str, p: u32, m: u32, level: u32, algorithm: u32) -> RaidType {
    RaidType {
        name,
        parity_devs: p,
        minimal_devs: m,
        level,
        algorithm,
    }
}

/// The kernel's table, in its order (lookups walk it backwards, as the kernel does).
pub const RAID_TYPES: [RaidType; 20] = [
    rt("raid0", 0, 2, 0, 0),
    rt("raid1", 0, 2, 1, 0),
    rt("raid10_far", 0, 2, 10, R10_FAR),
    rt("raid10_offset", 0, 2, 10, R10_OFFSET),
    rt("raid10_near", 0, 2, 10, R10_NEAR),
    rt("raid10", 0, 2, 10, R10_DEFAULT),
    rt("raid4", 1, 2, 5, ALGO_PARITY_0),
    rt("raid5_n", 1, 2, 5, ALGO_PARITY_N),
    rt("raid5_ls", 1, 2, 5, ALGO_LEFT_SYMMETRIC),
    rt("raid5_rs", 1, 2, 5, ALGO_RIGHT_SYMMETRIC),
    rt("raid5_la", 1, 2, 5, ALGO_LEFT_ASYMMETRIC),
    rt("raid5_ra", 1, 2, 5, ALGO_RIGHT_ASYMMETRIC),
    rt("raid6_zr", 2, 4, 6, ALGO_ROTATING_ZERO_RESTART),
    rt("raid6_nr", 2, 4, 6, ALGO_ROTATING_N_RESTART),
    rt("raid6_nc", 2, 4, 6, ALGO_ROTATING_N_CONTINUE),
    rt("raid6_n_6", 2, 4, 6, ALGO_PARITY_N),
    rt("raid6_ls_6", 2, 4, 6, ALGO_LEFT_SYMMETRIC_6),
    rt("raid6_rs_6", 2, 4, 6, ALGO_RIGHT_SYMMETRIC_6),
    rt("raid6_la_6", 2, 4, 6, ALGO_LEFT_ASYMMETRIC_6),
    rt("raid6_ra_6", 2, 4, 6, ALGO_RIGHT_ASYMMETRIC_6),
];

impl RaidType {
    pub fn by_name(name: &str) -> Option<RaidType> {
        RAID_TYPES
            .iter()
            .rev()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .copied()
    }
    /// `get_raid_type_by_ll`: the type the status line names for an md level and layout.
    pub fn by_level_layout(level: u32, layout: u32) -> Option<RaidType> {
        RAID_TYPES
            .iter()
            .rev()
            .find(|t| t.level == level && (t.got_raid10(layout) || t.algorithm == layout))
            .copied()
    }
    fn got_raid10(&self, layout: u32) -> bool {
        if self.level != 10 {
            return false;
        }
        match self.algorithm {
            R10_DEFAULT | R10_NEAR => r10_is_near(layout),
            R10_OFFSET => r10_is_offset(layout),
            R10_FAR => r10_is_far(layout),
            _ => false,
        }
    }
    pub fn is_raid0(&self) -> bool {
        self.level == 0
    }
    pub fn is_raid1(&self) -> bool {
        self.level == 1
    }
    pub fn is_raid10(&self) -> bool {
        self.level == 10
    }
    pub fn is_raid456(&self) -> bool {
        matches!(self.level, 4..=6)
    }
    pub fn is_raid6(&self) -> bool {
        self.level == 6
    }
}

pub fn r10_near_copies(layout: u32) -> u32 {
    layout & 0xff
}
pub fn r10_far_copies(layout: u32) -> u32 {
    (layout >> 8) & 0xff
}
pub fn r10_is_offset(layout: u32) -> bool {
    layout & RAID10_OFFSET != 0
}
pub fn r10_is_near(layout: u32) -> bool {
    !r10_is_offset(layout) && r10_near_copies(layout) > 1
}
pub fn r10_is_far(layout: u32) -> bool {
    !r10_is_offset(layout) && r10_far_copies(layout) > 1
}
pub fn r10_copies(layout: u32) -> u32 {
    r10_near_copies(layout).max(r10_far_copies(layout))
}
pub fn r10_format_name(layout: u32) -> &'static str {
    if r10_is_offset(layout) {
        "offset"
    } else if r10_near_copies(layout) > 1 {
        "near"
    } else if r10_far_copies(layout) > 1 {
        "far"
    } else {
        "unknown"
    }
}

/// The raid10 format word of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum R10Format {
    Near,
    Far,
    Offset,
}

/// One parsed `raid` table line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidParams {
    pub rtype: RaidType,
    /// As given (raid1: forced to 0).
    pub chunk: u32,
    pub sync: bool,
    pub nosync: bool,
    pub rebuild: BTreeSet<u32>,
    pub daemon_sleep: Option<u32>,
    pub min_recovery_rate: Option<u32>,
    pub max_recovery_rate: Option<u32>,
    pub write_mostly: BTreeSet<u32>,
    /// In sectors as given (md keeps KiB: printed back as `value / 2`).
    pub max_write_behind: Option<u32>,
    pub stripe_cache: Option<u32>,
    pub region_size: Option<u32>,
    pub raid10_copies: Option<u32>,
    pub raid10_format: Option<R10Format>,
    pub raid10_use_near_sets: bool,
    pub delta_disks: Option<i32>,
    pub data_offset: Option<u32>,
    pub journal_dev: Option<String>,
    pub journal_mode: Option<String>,
    /// (metadata device, data device), `None` for `-`.
    pub devs: Vec<(Option<String>, Option<String>)>,
}

fn inval(msg: &str) -> TargetError {
    TargetError::invalid(msg)
}

/// `kstrtoint(s, 10)`: optional sign, decimal digits, optional trailing newline, no overflow.
pub fn kstrtoint(s: &str) -> Option<i32> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    let v = if neg { -v } else { v };
    i32::try_from(v).ok()
}

/// `sscanf("%u")`-style read of a group count with a range (`dm_read_arg`).
fn read_count(s: Option<&String>, max: usize, err: &str) -> Result<usize, TargetError> {
    let v = s
        .and_then(|s| crate::kscan::scan_u32(s))
        .ok_or_else(|| inval(err))?;
    if v as usize > max {
        return Err(inval(err));
    }
    Ok(v as usize)
}

impl RaidParams {
    /// Parse the constructor words with the kernel's checks and messages (those that need no
    /// device or superblock).
    pub fn from_args(args: &[String]) -> Result<RaidParams, TargetError> {
        let Some(name) = args.first() else {
            return Err(inval("No arguments"));
        };
        let rtype = RaidType::by_name(name).ok_or_else(|| inval("Unrecognised raid_type"))?;
        let rest = &args[1..];
        let nparams = read_count(
            rest.first(),
            rest.len().saturating_sub(1),
            "Cannot understand number of raid parameters",
        )?;
        if nparams < 1 {
            return Err(inval("Cannot understand number of raid parameters"));
        }
        let params = &rest[1..1 + nparams];
        let after = &rest[1 + nparams..];
        let ndevs = read_count(
            after.first(),
            after.len().saturating_sub(1) / 2,
            "Cannot understand number of raid devices parameters",
        )?;
        if ndevs < 1 {
            return Err(inval("Cannot understand number of raid devices parameters"));
        }
        if ndevs as u32 > MAX_RAID_DEVICES {
            return Err(inval("Invalid number of supplied raid devices"));
        }
        if ndevs as u32 <= rtype.parity_devs {
            return Err(inval("Insufficient number of devices"));
        }
        let mut p = RaidParams {
            rtype,
            chunk: 0,
            sync: false,
            nosync: false,
            rebuild: BTreeSet::new(),
            daemon_sleep: None,
            min_recovery_rate: None,
            max_recovery_rate: None,
            write_mostly: BTreeSet::new(),
            max_write_behind: None,
            stripe_cache: None,
            region_size: None,
            raid10_copies: None,
            raid10_format: None,
            raid10_use_near_sets: false,
            delta_disks: None,
            data_offset: None,
            journal_dev: None,
            journal_mode: None,
            devs: Vec::new(),
        };
        p.parse_params(params, ndevs as u32)?;
        // Device pairs.
        let words = &after[1..];
        if words.len() < ndevs * 2 {
            return Err(inval("Not enough arguments"));
        }
        if words.len() > ndevs * 2 {
            return Err(inval("Too many arguments"));
        }
        for i in 0..ndevs {
            let m = &words[2 * i];
            let d = &words[2 * i + 1];
            let m = (m != "-").then(|| m.clone());
            let d = (d != "-").then(|| d.clone());
            if d.is_none() {
                if p.rebuild.contains(&(i as u32)) {
                    return Err(inval("Drive designated for rebuild not specified"));
                }
                if m.is_some() {
                    return Err(inval("No data device supplied with metadata device"));
                }
            }
            p.devs.push((m, d));
        }
        Ok(p)
    }

    fn parse_params(&mut self, params: &[String], ndevs: u32) -> Result<(), TargetError> {
        let rt = self.rtype;
        let value = kstrtoint(&params[0])
            .ok_or_else(|| inval("Bad numerical argument given for chunk_size"))?;
        if rt.is_raid1() {
            self.chunk = 0;
        } else if value <= 0 || !(value as u32).is_power_of_two() {
            return Err(inval("Chunk size must be a power of 2"));
        } else if value < 8 {
            return Err(inval("Chunk size value is too small"));
        } else {
            self.chunk = value as u32;
        }
        let mut it = params[1..].iter();
        while let Some(key) = it.next() {
            let k = key.to_ascii_lowercase();
            match k.as_str() {
                "nosync" | "sync" | "raid10_use_near_sets" => {
                    let slot = match k.as_str() {
                        "nosync" => &mut self.nosync,
                        "sync" => &mut self.sync,
                        _ => &mut self.raid10_use_near_sets,
                    };
                    if std::mem::replace(slot, true) {
                        return Err(inval(match k.as_str() {
                            "nosync" => "Only one 'nosync' argument allowed",
                            "sync" => "Only one 'sync' argument allowed",
                            _ => "Only one 'raid10_use_new_sets' argument allowed",
                        }));
                    }
                    continue;
                }
                _ => {}
            }
            let arg = it
                .next()
                .ok_or_else(|| inval("Wrong number of raid parameters given"))?;
            match k.as_str() {
                "raid10_format" => {
                    if self.raid10_format.is_some() {
                        return Err(inval("Only one 'raid10_format' argument pair allowed"));
                    }
                    if !rt.is_raid10() {
                        return Err(inval(
                            "'raid10_format' is an invalid parameter for this RAID type",
                        ));
                    }
                    self.raid10_format = Some(match arg.to_ascii_lowercase().as_str() {
                        "near" => R10Format::Near,
                        "far" => R10Format::Far,
                        "offset" => R10Format::Offset,
                        _ => return Err(inval("Invalid 'raid10_format' value given")),
                    });
                    continue;
                }
                "journal_dev" => {
                    if self.journal_dev.is_some() {
                        return Err(inval("Only one raid4/5/6 set journaling device allowed"));
                    }
                    if !rt.is_raid456() {
                        return Err(inval(
                            "'journal_dev' is an invalid parameter for this RAID type",
                        ));
                    }
                    self.journal_dev = Some(arg.clone());
                    continue;
                }
                "journal_mode" => {
                    if self.journal_dev.is_none() {
                        return Err(inval(
                            "raid4/5/6 'journal_mode' is invalid without 'journal_dev'",
                        ));
                    }
                    if self.journal_mode.is_some() {
                        return Err(inval("Only one raid4/5/6 'journal_mode' argument allowed"));
                    }
                    let m = arg.to_ascii_lowercase();
                    if m != "writethrough" && m != "writeback" {
                        return Err(inval("Invalid 'journal_mode' argument"));
                    }
                    self.journal_mode = Some(m);
                    continue;
                }
                _ => {}
            }
            let v = kstrtoint(arg)
                .ok_or_else(|| inval("Bad numerical argument given in raid params"))?;
            let once = |slot: &Option<u32>, what: &str| -> Result<(), TargetError> {
                if slot.is_some() {
                    Err(TargetError::invalid(format!(
                        "Only one {what} argument pair allowed"
                    )))
                } else {
                    Ok(())
                }
            };
            match k.as_str() {
                "rebuild" => {
                    if v < 0 || v as u32 >= ndevs {
                        return Err(inval("Invalid rebuild index given"));
                    }
                    if !self.rebuild.insert(v as u32) {
                        return Err(inval("rebuild for this index already given"));
                    }
                }
                "write_mostly" => {
                    if !rt.is_raid1() {
                        return Err(inval("write_mostly option is only valid for RAID1"));
                    }
                    if v < 0 || v as u32 >= ndevs {
                        return Err(inval("Invalid write_mostly index given"));
                    }
                    self.write_mostly.insert(v as u32);
                }
                "max_write_behind" => {
                    if !rt.is_raid1() {
                        return Err(inval("max_write_behind option is only valid for RAID1"));
                    }
                    once(&self.max_write_behind, "max_write_behind")?;
                    if v < 0 || (v / 2) as i64 > COUNTER_MAX {
                        return Err(inval("Max write-behind limit out of range"));
                    }
                    self.max_write_behind = Some(v as u32);
                }
                "daemon_sleep" => {
                    once(&self.daemon_sleep, "daemon_sleep")?;
                    if v < 0 {
                        return Err(inval("daemon sleep period out of range"));
                    }
                    self.daemon_sleep = Some(v as u32);
                }
                "data_offset" => {
                    once(&self.data_offset, "data_offset")?;
                    if v < 0 || (v != 0 && (v < 32 || v % 8 != 0)) {
                        return Err(inval("Bogus data_offset value"));
                    }
                    self.data_offset = Some(v as u32);
                }
                "delta_disks" => {
                    if self.delta_disks.is_some() {
                        return Err(inval("Only one delta_disks argument pair allowed"));
                    }
                    let a = v.unsigned_abs();
                    if a < 1 || a > MAX_RAID_DEVICES - rt.minimal_devs {
                        return Err(inval("Too many delta_disk requested"));
                    }
                    self.delta_disks = Some(v);
                }
                "stripe_cache" => {
                    once(&self.stripe_cache, "stripe_cache")?;
                    if !rt.is_raid456() {
                        return Err(inval("Inappropriate argument: stripe_cache"));
                    }
                    if v < 0 {
                        return Err(inval("Bogus stripe cache entries value"));
                    }
                    self.stripe_cache = Some(v as u32);
                }
                "min_recovery_rate" => {
                    once(&self.min_recovery_rate, "min_recovery_rate")?;
                    if v < 0 {
                        return Err(inval("min_recovery_rate out of range"));
                    }
                    self.min_recovery_rate = Some(v as u32);
                }
                "max_recovery_rate" => {
                    once(&self.max_recovery_rate, "max_recovery_rate")?;
                    if v < 0 {
                        return Err(inval("max_recovery_rate out of range"));
                    }
                    self.max_recovery_rate = Some(v as u32);
                }
                "region_size" => {
                    once(&self.region_size, "region_size")?;
                    self.region_size = Some(v as u32);
                }
                "raid10_copies" => {
                    once(&self.raid10_copies, "raid10_copies")?;
                    if v < 2 || v as u32 > ndevs {
                        return Err(inval("Bad value for 'raid10_copies'"));
                    }
                    self.raid10_copies = Some(v as u32);
                }
                _ => return Err(inval("Unable to parse RAID parameter")),
            }
        }
        if self.sync && self.nosync {
            return Err(inval("sync and nosync are mutually exclusive"));
        }
        if !self.rebuild.is_empty() && (self.sync || self.nosync) {
            return Err(inval("sync/nosync and rebuild are mutually exclusive"));
        }
        if self.write_mostly.len() as u32 >= ndevs && !self.write_mostly.is_empty() {
            return Err(inval("Can't set all raid1 devices to write_mostly"));
        }
        if let (Some(min), Some(max)) = (self.min_recovery_rate, self.max_recovery_rate) {
            if max != 0 && min > max {
                return Err(inval("Bogus recovery rates"));
            }
        }
        if rt.is_raid10() {
            let f = self.raid10_format.unwrap_or(R10Format::Near);
            if self.raid10_use_near_sets && f == R10Format::Near {
                return Err(inval(
                    "RAID10 format 'near' and 'raid10_use_near_sets' are incompatible",
                ));
            }
        }
        self.check_valid_flags()
    }

    /// `rs_check_for_valid_flags`: which parameters each level takes.
    fn check_valid_flags(&self) -> Result<(), TargetError> {
        let rt = self.rtype;
        let any_sync = self.sync || self.nosync;
        let recovery = !self.rebuild.is_empty()
            || self.daemon_sleep.is_some()
            || self.min_recovery_rate.is_some()
            || self.max_recovery_rate.is_some()
            || self.region_size.is_some();
        let r1 = !self.write_mostly.is_empty() || self.max_write_behind.is_some();
        let r10 = self.raid10_copies.is_some()
            || self.raid10_format.is_some()
            || self.raid10_use_near_sets;
        let r456 = self.stripe_cache.is_some()
            || self.journal_dev.is_some()
            || self.journal_mode.is_some();
        let bad = match rt.level {
            0 => any_sync || recovery || r1 || r10 || r456 || self.delta_disks.is_some(),
            1 => r10 || r456,
            10 => r1 || r456,
            6 => self.nosync || r1 || r10,
            _ => r1 || r10,
        };
        if bad {
            return Err(inval("Invalid flags combination"));
        }
        Ok(())
    }

    /// The md raid10 layout word (`raid10_format_to_md_layout`).
    pub fn raid10_layout(&self) -> u32 {
        let copies = self.raid10_copies.unwrap_or(2);
        let far_sets = if self.raid10_use_near_sets {
            0
        } else {
            RAID10_USE_FAR_SETS
        };
        match self.raid10_format.unwrap_or(R10Format::Near) {
            R10Format::Near => (1 << 8) | copies,
            R10Format::Offset => RAID10_OFFSET | far_sets | (copies << 8) | 1,
            R10Format::Far => far_sets | (copies << 8) | 1,
        }
    }

    /// The md layout for this table's type.
    pub fn md_layout(&self) -> u32 {
        if self.rtype.is_raid10() {
            self.raid10_layout()
        } else {
            self.rtype.algorithm
        }
    }

    /// The region size the bitmap uses (`validate_region_size`, before range checks).
    pub fn effective_region(&self, len: u64) -> u64 {
        match self.region_size {
            Some(r) if r > 0 => r as u64,
            _ => {
                let min = len / (1 << 21);
                if min > (1 << 13) {
                    min.next_power_of_two()
                } else {
                    1 << 13
                }
            }
        }
    }

    /// The number of parameter words `raid_status` counts.
    fn param_count(&self) -> usize {
        let mut n = 1 + 2 * self.rebuild.len() + 2 * self.write_mostly.len();
        n += self.sync as usize + self.nosync as usize + self.raid10_use_near_sets as usize;
        let one = [
            self.daemon_sleep.is_some(),
            self.min_recovery_rate.is_some(),
            self.max_recovery_rate.is_some(),
            self.max_write_behind.is_some(),
            self.stripe_cache.is_some(),
            self.region_size.is_some(),
            self.raid10_copies.is_some(),
            self.raid10_format.is_some(),
            self.delta_disks.is_some(),
            self.data_offset.is_some(),
            self.journal_dev.is_some(),
            self.journal_mode.is_some(),
        ];
        n + 2 * one.iter().filter(|&&b| b).count()
    }
}

impl fmt::Display for RaidParams {
    /// The line `raid_status(STATUSTYPE_TABLE)` prints: parameters in the documented order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.rtype.name,
            self.param_count(),
            self.chunk
        )?;
        if self.sync {
            f.write_str(" sync")?;
        }
        if self.nosync {
            f.write_str(" nosync")?;
        }
        for i in &self.rebuild {
            write!(f, " rebuild {i}")?;
        }
        if let Some(v) = self.daemon_sleep {
            write!(f, " daemon_sleep {v}")?;
        }
        if let Some(v) = self.min_recovery_rate {
            write!(f, " min_recovery_rate {v}")?;
        }
        if let Some(v) = self.max_recovery_rate {
            write!(f, " max_recovery_rate {v}")?;
        }
        for i in &self.write_mostly {
            write!(f, " write_mostly {i}")?;
        }
        if let Some(v) = self.max_write_behind {
            write!(f, " max_write_behind {}", v / 2)?;
        }
        if let Some(v) = self.stripe_cache {
            // The stripe cache never holds fewer entries than half a chunk.
            write!(f, " stripe_cache {}", v.max(self.chunk / 2))?;
        }
        if let Some(v) = self.region_size {
            write!(f, " region_size {v}")?;
        }
        if self.raid10_copies.is_some() {
            write!(f, " raid10_copies {}", r10_copies(self.raid10_layout()))?;
        }
        if self.raid10_format.is_some() {
            write!(
                f,
                " raid10_format {}",
                r10_format_name(self.raid10_layout())
            )?;
        }
        if let Some(v) = self.delta_disks {
            write!(f, " delta_disks {v}")?;
        }
        if let Some(v) = self.data_offset {
            write!(f, " data_offset {v}")?;
        }
        if let Some(d) = &self.journal_dev {
            write!(f, " journal_dev {}", escape_arg(d))?;
        }
        if let Some(m) = &self.journal_mode {
            write!(f, " journal_mode {m}")?;
        }
        if self.raid10_use_near_sets {
            // Not printed by the kernel's table line (a flag without a print slot), but
            // counted; print it so the line round-trips.
            f.write_str(" raid10_use_near_sets")?;
        }
        write!(f, " {}", self.devs.len())?;
        for (m, d) in &self.devs {
            let w = |o: &Option<String>| -> String {
                o.as_deref()
                    .map_or("-".into(), |s| escape_arg(s).into_owned())
            };
            write!(f, " {} {}", w(m), w(d))?;
        }
        Ok(())
    }
}
