//! `mirror`: dm-raid1, legs kept identical region by region with a dirty region log.
//!
//! `mirror <log type> <#log args> <log args> <#legs> <dev> <offset>... [<#features>
//! [handle_errors] [keep_log]]`, log type `core` (`<region size> [sync|nosync]`) or `disk`
//! (`<log dev> <region size> [sync|nosync]`, the kernel's on-disk log, see `log`). Writes go
//! to every leg; reads of in-sync regions are balanced over the healthy legs and retried on
//! another leg when one fails; regions out of sync are copied from the default leg to the
//! others in the background (`set`). Status and table lines are the kernel's.

pub mod log;
pub mod set;

use crate::kscan::{scan_u32, scan_u64};
use log::{DirtyLog, LogParams};
use set::{Leg, Set};
use std::fmt;
use std::sync::Arc;
use udm_core::{
    Escaped, MapResult, StatusFlags, StatusType, Target, TargetCtx, TargetError, TargetType,
};
use udm_io::{Bio, BioFlags, Op, Sectors};

/// The kernel's `MAX_NR_MIRRORS` (kcopyd's 8 destinations plus the source).
pub const MAX_LEGS: usize = 9;

/// Typed `mirror` params (devices as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorParams {
    pub log: LogParams,
    pub legs: Vec<(String, u64)>,
    pub handle_errors: bool,
    pub keep_log: bool,
}

impl fmt::Display for MirrorParams {
    /// The canonical table line (`status(Table)`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.log, self.legs.len())?;
        for (d, o) in &self.legs {
            write!(f, " {} {o}", Escaped(d))?;
        }
        let n = self.handle_errors as u32 + self.keep_log as u32;
        if n > 0 {
            write!(f, " {n}")?;
            if self.handle_errors {
                f.write_str(" handle_errors")?;
            }
            if self.keep_log {
                f.write_str(" keep_log")?;
            }
        }
        Ok(())
    }
}

/// Parse the words after the log (`<#legs> <dev> <off>... [features]`) in the kernel's
/// order and with its messages. Devices are not opened here.
pub fn parse_params(args: &[String], len: Sectors) -> Result<MirrorParams, TargetError> {
    let inval = TargetError::invalid;
    if args.len() < 2 {
        return Err(inval("Insufficient mirror log arguments"));
    }
    let n = scan_u32(&args[1]).ok_or_else(|| inval("Invalid mirror log argument count"))? as usize;
    if n > args.len() - 2 {
        return Err(inval("Insufficient mirror log arguments"));
    }
    let log = LogParams::parse(&args[0], &args[2..2 + n], len)?;
    let mut rest = &args[2 + n..];
    let nr = rest
        .first()
        .and_then(|s| scan_u32(s))
        .map(|v| v as usize)
        .filter(|&v| (2..=MAX_LEGS).contains(&v))
        .ok_or_else(|| inval("Invalid number of mirrors"))?;
    rest = &rest[1..];
    if rest.len() < nr * 2 {
        return Err(inval("Too few mirror arguments"));
    }
    let mut legs = Vec::new();
    for i in 0..nr {
        let off = scan_u64(&rest[2 * i + 1]).ok_or_else(|| inval("Invalid offset"))?;
        legs.push((rest[2 * i].clone(), off));
    }
    rest = &rest[nr * 2..];
    let (mut handle_errors, mut keep_log) = (false, false);
    if let Some(first) = rest.first() {
        let k = scan_u32(first).ok_or_else(|| inval("Invalid number of features"))? as usize;
        rest = &rest[1..];
        if k > rest.len() {
            return Err(inval("Not enough arguments to support feature count"));
        }
        for f in &rest[..k] {
            match f.as_str() {
                "handle_errors" => handle_errors = true,
                "keep_log" => keep_log = true,
                _ => return Err(inval("Unrecognised feature requested")),
            }
        }
        if keep_log && !handle_errors {
            return Err(inval("keep_log feature requires the handle_errors feature"));
        }
        rest = &rest[k..];
    }
    if !rest.is_empty() {
        return Err(inval("Too many mirror arguments"));
    }
    Ok(MirrorParams {
        log,
        legs,
        handle_errors,
        keep_log,
    })
}

/// The `mirror` target type.
pub struct MirrorType;

impl TargetType for MirrorType {
    fn name(&self) -> &'static str {
        "mirror"
    }
    fn version(&self) -> [u32; 3] {
        [1, 14, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = parse_params(args, ctx.len)?;
        let disk = match &p.log.dev {
            None => None,
            Some(d) => {
                let h = ctx.get_device(d).map_err(|e| {
                    TargetError::with_errno(e.errno, "Error creating mirror dirty log")
                        .with_detail(e.to_string())
                })?;
                let id = h.id.clone();
                Some((h, id))
            }
        };
        let mut log = DirtyLog::new(p.log.clone(), ctx.len, disk)?;
        if let Some(d) = log.disk.as_ref() {
            // The table prints the log device as opened (`major:minor` or path).
            log.params.dev = Some(d.id.to_string());
        }
        let mut legs = Vec::new();
        for (d, off) in &p.legs {
            let h = ctx
                .get_device_area(d, Sectors(*off), ctx.len)
                .map_err(|e| {
                    TargetError::with_errno(e.errno, "Device lookup failure")
                        .with_detail(e.to_string())
                })?;
            legs.push(Leg::new(h, *off));
        }
        let set = Arc::new(Set::new(
            legs,
            log,
            p.handle_errors,
            p.keep_log,
            ctx.len.0,
            ctx.worker("kmirrord"),
            ctx.event_trigger(),
            ctx.requeuer(),
            ctx.device_state(),
        ));
        Ok(Box::new(MirrorTarget { set }))
    }
}

/// One `mirror` table line.
pub struct MirrorTarget {
    set: Arc<Set>,
}

impl MirrorTarget {
    /// The table params as the kernel prints them.
    pub fn params(&self) -> MirrorParams {
        let s = &self.set;
        let st = s.st.lock();
        MirrorParams {
            log: st.log.params.clone(),
            legs: s
                .legs
                .iter()
                .map(|l| (l.id.to_string(), l.offset))
                .collect(),
            handle_errors: s.handle_errors,
            keep_log: s.keep_log,
        }
    }
}

impl Target for MirrorTarget {
    fn map(&self, bio: Bio) -> MapResult {
        let s = &self.set;
        match bio.op {
            Op::Read => s.map_read(bio),
            Op::Flush | Op::Discard => s.map_special(bio),
            Op::Write if bio.is_empty() && bio.flags.contains(BioFlags::PREFLUSH) => {
                s.map_special(bio)
            }
            _ => s.map_write(bio),
        }
        MapResult::Submitted
    }

    fn max_io_len(&self) -> Option<Sectors> {
        Some(Sectors(self.set.region))
    }

    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        match ty {
            StatusType::Info => {
                let s = &self.set;
                let mut out = format!("{} ", s.legs.len());
                for l in &s.legs {
                    out.push_str(&udm_core::escape_arg(&l.id.to_string()));
                    out.push(' ');
                }
                let st = s.st.lock();
                out.push_str(&format!(
                    "{}/{} 1 {} {}",
                    st.log.sync_count,
                    s.nr_regions,
                    s.health(),
                    st.log.status_info()
                ));
                out
            }
            StatusType::Table => self.params().to_string(),
        }
    }

    fn presuspend(&self) {
        self.set.presuspend()
    }
    fn presuspend_undo(&self) {
        self.set.presuspend_undo()
    }
    fn postsuspend(&self) {
        self.set.postsuspend()
    }
    fn resume(&self) {
        self.set.resume()
    }
}

impl Drop for MirrorTarget {
    /// As the kernel's destroy of a live device: suspend the set first, so the disk log
    /// records the regions cleaned since its last write.
    fn drop(&mut self) {
        if !self.set.st.lock().suspended() {
            self.set.presuspend();
            self.set.postsuspend();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn params_round_trip_and_refuse_as_the_kernel() {
        let t = "core 2 1024 nosync 2 /a 0 /b 8 1 handle_errors";
        let p = parse_params(&words(t), Sectors(8192)).unwrap();
        assert_eq!(p.to_string(), t);
        let t = "disk 2 /l 1024 3 /a 0 /b 0 /c 0 2 handle_errors keep_log";
        assert_eq!(
            parse_params(&words(t), Sectors(8192)).unwrap().to_string(),
            t
        );
        let bad = [
            ("core", "Insufficient mirror log arguments"),
            ("core x 1024", "Invalid mirror log argument count"),
            ("core 5 1024 2 /a 0", "Insufficient mirror log arguments"),
            ("core 1 1024 1 /a 0", "Invalid number of mirrors"),
            ("core 1 1024 10 /a 0", "Invalid number of mirrors"),
            ("core 1 1024 2 /a 0", "Too few mirror arguments"),
            ("core 1 1024 2 /a 0 /b x", "Invalid offset"),
            ("core 1 1024 2 /a 0 /b 0 x", "Invalid number of features"),
            (
                "core 1 1024 2 /a 0 /b 0 2 handle_errors",
                "Not enough arguments to support feature count",
            ),
            (
                "core 1 1024 2 /a 0 /b 0 1 nope",
                "Unrecognised feature requested",
            ),
            (
                "core 1 1024 2 /a 0 /b 0 1 keep_log",
                "keep_log feature requires the handle_errors feature",
            ),
            ("core 1 1024 2 /a 0 /b 0 0 x", "Too many mirror arguments"),
            ("core 1 1000 2 /a 0 /b 0", "Error creating mirror dirty log"),
        ];
        for (t, msg) in bad {
            let e = parse_params(&words(t), Sectors(8192)).unwrap_err();
            assert_eq!(e.msg, msg, "{t}");
        }
    }
}
