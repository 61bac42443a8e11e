//! Tables: the kernel's text form, construction with the kernel's validation rules, and
//! dispatching bios to targets (splitting at target boundaries and `max_io_len`).

use crate::args::{is_arg_space, parse_num, split_args};
use crate::error::DmError;
use crate::resolve::{DevHandle, Resolver};
use crate::target::{
    DeviceLink, MapResult, StatusFlags, StatusType, Target, TargetCtx, TargetError, TargetTypes,
};
use std::sync::Arc;
use udm_io::device::Extent;
use udm_io::{Bio, BioFlags, IoError, Limits, Op, Sectors};

/// One `<start> <length> <type> <params>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLine {
    pub start: Sectors,
    pub len: Sectors,
    pub ttype: String,
    pub params: String,
}

impl std::fmt::Display for TableLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.start, self.len, self.ttype, self.params
        )
    }
}

/// Parse table text as dmsetup does: blank lines and lines starting with `#` skipped, each line
/// `<start> <length> <type> [params]`, params cut at a `#`. Backslashes are left alone for the
/// targets' `split_args`, and trailing whitespace is dropped unless a backslash escapes it.
/// Errors name the 1-based line.
pub fn parse_table_text(text: &str) -> Result<Vec<TableLine>, usize> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_matches(is_arg_space);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut rest = line;
        let mut word = || {
            let end = rest.find(is_arg_space).unwrap_or(rest.len());
            let w = &rest[..end];
            rest = rest[end..].trim_start_matches(is_arg_space);
            w
        };
        let (a, b, t) = (word(), word(), word());
        let (Some(start), Some(len), false) =
            (parse_num::<u64>(a), parse_num::<u64>(b), t.is_empty())
        else {
            return Err(i + 1);
        };
        let params = rest.split('#').next().unwrap_or("");
        out.push(TableLine {
            start: Sectors(start),
            len: Sectors(len),
            ttype: t.to_string(),
            params: trim_end_unescaped(params).to_string(),
        });
    }
    Ok(out)
}

/// `s` without trailing whitespace, keeping a whitespace character a backslash escapes.
fn trim_end_unescaped(mut s: &str) -> &str {
    while let Some(c) = s.chars().next_back().filter(|&c| is_arg_space(c)) {
        let body = &s[..s.len() - c.len_utf8()];
        let slashes = body.len() - body.trim_end_matches('\\').len();
        if slashes % 2 == 1 {
            break;
        }
        s = body;
    }
    s
}

pub(crate) struct Entry {
    pub start: Sectors,
    pub len: Sectors,
    pub type_name: String,
    pub target: Box<dyn Target>,
    max_io: Option<Sectors>,
    flush_bios: u32,
    discard_bios: u32,
}

/// A constructed table: its targets in order, the devices they use, its limits.
pub struct Table {
    pub(crate) entries: Vec<Entry>,
    size: Sectors,
    devices: Vec<Arc<DevHandle>>,
    read_only: bool,
    limits: Limits,
}

fn line_err(line: usize, msg: impl Into<String>) -> DmError {
    DmError::Table {
        line,
        err: TargetError::invalid(msg),
    }
}

impl Table {
    /// Build a table: run every constructor and apply the kernel's checks.
    pub fn build(
        lines: &[TableLine],
        types: &TargetTypes,
        resolver: &dyn Resolver,
        read_only: bool,
    ) -> Result<Table, DmError> {
        Table::build_for(lines, types, resolver, read_only, &DeviceLink::default())
    }

    /// As `build`, for a mapped device whose targets reach it through `link` (events,
    /// requeue, published objects). A failure is logged as the kernel logs it
    /// (`crate::klog`): constructor errors as `table: 253:N: …` + `ioctl: error adding
    /// target to table`, queue-limit errors with `core: Cannot calculate initial queue limits`.
    pub fn build_for(
        lines: &[TableLine],
        types: &TargetTypes,
        resolver: &dyn Resolver,
        read_only: bool,
        link: &DeviceLink,
    ) -> Result<Table, DmError> {
        let r = Table::build_staged(lines, types, resolver, read_only, link);
        if let Err((stage, e)) = &r {
            let msg = match e {
                DmError::Table { err, .. } => err.msg.clone(),
                other => other.to_string(),
            };
            let table_line = format!("{}{msg}", owner_prefix(link));
            crate::klog::err("table", &table_line);
            match stage {
                Stage::Construct => crate::klog::err("ioctl", "error adding target to table"),
                Stage::Limits => {
                    crate::klog::err("core", "Cannot calculate initial queue limits");
                    crate::klog::err("ioctl", "unable to set up device queue for new table.");
                }
            }
        }
        r.map_err(|(_, e)| e)
    }

    fn build_staged(
        lines: &[TableLine],
        types: &TargetTypes,
        resolver: &dyn Resolver,
        read_only: bool,
        link: &DeviceLink,
    ) -> Result<Table, (Stage, DmError)> {
        let ctr = |e: DmError| (Stage::Construct, e);
        if lines.is_empty() {
            return Err(ctr(DmError::invalid("table: no targets specified")));
        }
        let mut devices = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut areas = Vec::new();
        let mut next = Sectors(0);
        // As the kernel's table load: every constructor runs first (dm_table_add_target)...
        for (i, l) in lines.iter().enumerate() {
            let n = i + 1;
            if l.len.0 == 0 {
                return Err(ctr(line_err(n, "zero-length target")));
            }
            let Some(tt) = types.get(&l.ttype) else {
                return Err(ctr(line_err(
                    n,
                    format!("{}: unknown target type", l.ttype),
                )));
            };
            let f = tt.features();
            if f.singleton && lines.len() > 1 {
                return Err(ctr(line_err(
                    n,
                    format!("target type {} must appear alone in table", l.ttype),
                )));
            }
            if f.always_writeable && read_only {
                return Err(ctr(line_err(
                    n,
                    format!(
                        "target type {} may not be included in a read-only table",
                        l.ttype
                    ),
                )));
            }
            if l.start != next {
                return Err(ctr(line_err(
                    n,
                    format!("{}: Gap in table (-EINVAL)", l.ttype),
                )));
            }
            let Some(end) = l.start.checked_add(l.len) else {
                return Err(ctr(line_err(n, "target length overflows")));
            };
            let args = split_args(&l.params);
            let mut ctx =
                TargetCtx::new(l.start, l.len, read_only, resolver, &mut devices).with_link(link);
            let target = tt.construct(&mut ctx, &args).map_err(|e| {
                ctr(DmError::Table {
                    line: n,
                    err: TargetError {
                        msg: format!("{}: {} ({})", l.ttype, e.msg, errno_name(e.errno)),
                        errno: e.errno,
                        detail: e.detail,
                    },
                })
            })?;
            areas.push(std::mem::take(&mut ctx.areas));
            let max_io = target.max_io_len();
            entries.push(Entry {
                start: l.start,
                len: l.len,
                type_name: l.ttype.clone(),
                flush_bios: target.num_flush_bios(),
                discard_bios: target.num_discard_bios(),
                target,
                max_io,
            });
            next = end;
        }
        // ... then dm_calculate_queue_limits: a target's devices stack into its own limits,
        // the target adjusts them (io_hints), every area it maps must fit and be aligned to
        // the result, and that stacks into the table's limits.
        let lim = |e: DmError| (Stage::Limits, e);
        let mut limits = Limits::stacking();
        let mut target_lbs = Vec::with_capacity(entries.len());
        for (i, (e, areas)) in entries.iter().zip(&areas).enumerate() {
            let mut tl = Limits::stacking();
            for (h, start, _) in areas {
                let dl = h.dev.limits();
                tl.stack(&dl);
                // blk_stack_limits: the area's offset within the device's physical blocks
                // must fall on a logical block of the result, else dm warns (and goes on).
                // (In bytes as u128: a hostile table may name an offset near 2^64 sectors;
                // `check_area` below refuses it.)
                let gran = dl.physical_block_size.max(dl.io_min).max(1) as u128;
                let start_b = start.0 as u128 * 512;
                let alignment = (gran - start_b % gran) % gran;
                if !alignment.is_multiple_of(tl.logical_block_size.max(1) as u128) {
                    crate::klog::warn(
                        "table",
                        &format!(
                            "{}adding target device {} caused an alignment inconsistency: \
                             physical_block_size={}, logical_block_size={}, \
                             alignment_offset=0, start={start_b}",
                            owner_prefix(link),
                            kname(h),
                            dl.physical_block_size,
                            dl.logical_block_size
                        ),
                    );
                }
            }
            target_lbs.push(tl.logical_block_size);
            e.target.io_hints(&mut tl);
            for (h, start, len) in areas {
                check_area(i + 1, h, *start, *len, &tl).map_err(lim)?;
            }
            limits.stack(&tl);
        }
        // validate_hardware_logical_block_alignment: walking the targets, the sectors left
        // to fill the table's current logical block must fit the next target's own block size.
        let dev_lbs = (limits.logical_block_size as u64 / 512).max(1);
        let (mut pos, mut remaining) = (0u64, 0u64);
        let mut bad = None;
        for (i, (e, t_lbs)) in entries.iter().zip(&target_lbs).enumerate() {
            let t_lbs = (*t_lbs as u64 / 512).max(1);
            if remaining < e.len.0 && !remaining.is_multiple_of(t_lbs) {
                bad = Some(i);
                break;
            }
            pos = (pos + e.len.0) % dev_lbs;
            remaining = if pos == 0 { 0 } else { dev_lbs - pos };
        }
        if remaining != 0 {
            let i = bad.unwrap_or(entries.len() - 1);
            let e = &entries[i];
            return Err(lim(line_err(
                i + 1,
                format!(
                    "table line {} (start sect {} len {}) not aligned to h/w logical block size {}",
                    bad.unwrap_or(entries.len()),
                    e.start,
                    e.len,
                    limits.logical_block_size
                ),
            )));
        }
        Ok(Table {
            entries,
            size: next,
            devices,
            read_only,
            limits,
        })
    }

    pub fn size(&self) -> Sectors {
        self.size
    }
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    pub fn limits(&self) -> Limits {
        self.limits
    }
    pub fn num_targets(&self) -> usize {
        self.entries.len()
    }
    /// Devices in the order the kernel lists them for `deps` (most recently first referenced first).
    pub fn deps(&self) -> Vec<Arc<DevHandle>> {
        self.devices.iter().rev().cloned().collect()
    }
    /// Target type names, in order.
    pub fn target_types(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.type_name.clone()).collect()
    }

    /// Per target: start, length, type, status string (`flags` go to every target).
    pub fn status(
        &self,
        ty: StatusType,
        flags: StatusFlags,
    ) -> Vec<(Sectors, Sectors, String, String)> {
        self.entries
            .iter()
            .map(|e| {
                (
                    e.start,
                    e.len,
                    e.type_name.clone(),
                    e.target.status(ty, flags),
                )
            })
            .collect()
    }

    fn index_of(&self, sector: Sectors) -> usize {
        self.entries.partition_point(|e| e.start + e.len <= sector)
    }

    /// The type of the target covering `sector`.
    pub fn type_at(&self, sector: Sectors) -> Option<String> {
        (sector < self.size).then(|| self.entries[self.index_of(sector)].type_name.clone())
    }

    /// Send a message to the target covering `sector`.
    pub fn message(&self, sector: Sectors, argv: &[String]) -> Result<Option<String>, TargetError> {
        if sector >= self.size {
            return Err(TargetError::invalid(
                "Target message sector outside device.",
            ));
        }
        self.entries[self.index_of(sector)].target.message(argv)
    }

    pub(crate) fn for_each_target(&self, mut f: impl FnMut(&dyn Target)) {
        for e in &self.entries {
            f(e.target.as_ref())
        }
    }

    /// Allocation map of `[sector, sector+len)`.
    pub fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        let mut out: Vec<(Sectors, Extent)> = Vec::new();
        let end = (sector + len).min(self.size);
        let mut pos = sector;
        while pos < end {
            let e = &self.entries[self.index_of(pos)];
            let piece_end = (e.start + e.len).min(end);
            for (l, x) in e.target.extents(pos - e.start, piece_end - pos) {
                match out.last_mut() {
                    Some((ol, ox)) if *ox == x => *ol += l,
                    _ => out.push((l, x)),
                }
            }
            pos = piece_end;
        }
        out
    }

    /// `BlockDevice::read_file_range` for a range inside one target (device-relative sectors).
    pub fn read_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: udm_io::FileReader<'_>,
    ) -> Option<std::io::Result<usize>> {
        let (t, at) = self.one_target(sector, len)?;
        t.read_file_range(at, len, f)
    }

    /// `BlockDevice::write_file_range` for a range inside one target (device-relative sectors).
    pub fn write_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: udm_io::FileWriter<'_>,
    ) -> Option<std::io::Result<usize>> {
        let (t, at) = self.one_target(sector, len)?;
        t.write_file_range(at, len, f)
    }

    /// The target holding all of `[sector, sector+len)` (not empty), with the target-relative
    /// start.
    fn one_target(&self, sector: Sectors, len: Sectors) -> Option<(&dyn Target, Sectors)> {
        let end = sector.checked_add(len)?;
        if len.0 == 0 || end > self.size {
            return None;
        }
        let e = &self.entries[self.index_of(sector)];
        (end <= e.start + e.len).then(|| (&*e.target, sector - e.start))
    }

    /// `BlockDevice::read_mapped` for a range inside one target (device-relative sectors).
    pub fn read_mapped(&self, sector: Sectors, len: Sectors, f: udm_io::MappedReader<'_>) -> bool {
        self.one_target(sector, len)
            .is_some_and(|(t, at)| t.read_mapped(at, len, f))
    }

    /// Route a bio (sectors relative to the device) to the targets. `requeue` receives bios a
    /// target parked, with sectors made device-relative again.
    pub fn dispatch(self: &Arc<Self>, bio: Bio, requeue: &Arc<dyn Fn(Bio) + Send + Sync>) {
        if bio.op == Op::Flush {
            // Each target gets as many copies as it asks for, numbered per target.
            let total: u32 = self.entries.iter().map(|e| e.flush_bios).sum();
            if total == 0 {
                return bio.complete(Ok(()));
            }
            let mut copies = bio.fan_out(total as usize).into_iter();
            for (i, e) in self.entries.iter().enumerate() {
                for nr in 0..e.flush_bios {
                    let mut b = copies.next().expect("one copy per flush bio");
                    b.set_target_bio_nr(nr);
                    self.map_one(i, b, requeue);
                }
            }
            return;
        }
        let max_discard = self.limits.max_discard_sectors.0;
        if bio.op == Op::Discard && max_discard > 0 && bio.len().0 > max_discard {
            // Cut at multiples of the largest discard the devices below take.
            let (mut lens, mut pos) = (Vec::new(), bio.sector.0);
            while pos < bio.end().0 {
                let stop = ((pos / max_discard + 1) * max_discard).min(bio.end().0);
                lens.push(Sectors(stop - pos));
                pos = stop;
            }
            for b in bio.split(&lens) {
                self.dispatch(b, requeue);
            }
            return;
        }
        if bio.flags.contains(BioFlags::PREFLUSH) && !bio.is_empty() {
            // A data bio with PREFLUSH: flush every device first, then the data.
            let me = self.clone();
            let rq = requeue.clone();
            let mut data = bio;
            data.flags = data.flags.without(BioFlags::PREFLUSH);
            let flush = Bio::flush(Box::new(move |res, _| match res {
                Ok(()) => me.dispatch(data, &rq),
                Err(e) => data.complete(Err(e)),
            }));
            return self.dispatch(flush, requeue);
        }
        let lens = self.piece_lens(bio.sector, bio.len());
        if lens.len() == 1 {
            let i = self.index_of(bio.sector);
            return self.map_one(i, bio, requeue);
        }
        for b in bio.split(&lens) {
            let i = self.index_of(b.sector);
            self.map_one(i, b, requeue);
        }
    }

    /// Lengths of the pieces a bio must be cut into.
    fn piece_lens(&self, sector: Sectors, len: Sectors) -> Vec<Sectors> {
        let end = sector + len;
        let mut pos = sector;
        let mut out = Vec::with_capacity(1);
        while pos < end {
            let e = &self.entries[self.index_of(pos)];
            let mut stop = (e.start + e.len).min(end);
            if let Some(m) = e.max_io {
                let rel = (pos - e.start).0;
                let boundary = e.start.0 + (rel / m.0 + 1) * m.0;
                stop = stop.min(Sectors(boundary));
            }
            out.push(stop - pos);
            pos = stop;
        }
        out
    }

    fn map_one(&self, i: usize, bio: Bio, requeue: &Arc<dyn Fn(Bio) + Send + Sync>) {
        let e = &self.entries[i];
        if bio.op == Op::Discard && e.discard_bios != 1 {
            if e.discard_bios == 0 {
                return bio.complete(Err(IoError::NotSupported));
            }
            for (nr, mut b) in bio.fan_out(e.discard_bios as usize).into_iter().enumerate() {
                b.set_target_bio_nr(nr as u32);
                self.map_target(e, b, requeue);
            }
            return;
        }
        self.map_target(e, bio, requeue)
    }

    fn map_target(&self, e: &Entry, mut bio: Bio, requeue: &Arc<dyn Fn(Bio) + Send + Sync>) {
        if bio.op != Op::Flush {
            bio.sector -= e.start;
        }
        match e.target.map(bio) {
            MapResult::Remap(dev, b) => dev.submit(b),
            MapResult::Submitted => {}
            MapResult::Requeue(mut b) => {
                if b.op != Op::Flush {
                    b.sector += e.start;
                }
                requeue(b)
            }
            MapResult::Kill(b, err) => b.complete(Err(err)),
        }
    }
}

/// The kernel's `%pe` rendering of an errno.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EINVAL => "EINVAL",
        libc::ENXIO => "ENXIO",
        libc::ENODEV => "ENODEV",
        libc::ENOENT => "ENOENT",
        libc::ENOMEM => "ENOMEM",
        libc::EBUSY => "EBUSY",
        libc::EIO => "EIO",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EROFS => "EROFS",
        libc::ENOTBLK => "ENOTBLK",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::E2BIG => "E2BIG",
        libc::ENOKEY => "ENOKEY",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::EKEYREJECTED => "EKEYREJECTED",
        libc::EBADMSG => "EBADMSG",
        libc::ENOPKG => "ENOPKG",
        _ => return format!("{}", -e),
    };
    format!("-{name}")
}

/// How the kernel names a device in its messages (`%pg`): `vda`, `loop0`, `dm-3`; image
/// files by their path.
fn kname(h: &DevHandle) -> String {
    match &h.id {
        udm_io::DevId::Path(p) => p.clone(),
        udm_io::DevId::Num(ma, mi) if *ma == crate::DM_MAJOR => format!("dm-{mi}"),
        udm_io::DevId::Num(ma, mi) => {
            std::fs::read_to_string(format!("/sys/dev/block/{ma}:{mi}/uevent"))
                .ok()
                .and_then(|u| {
                    u.lines()
                        .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
                })
                .or_else(|| dev_node_name(*ma, *mi))
                .unwrap_or_else(|| format!("{ma}:{mi}"))
        }
    }
}

/// Find the /dev node with this device number (when sysfs is not mounted).
fn dev_node_name(ma: u32, mi: u32) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::read_dir("/dev").ok()?.flatten().find_map(|e| {
        let m = e.metadata().ok()?;
        let r = m.rdev();
        (m.file_type().is_block_device() && libc::major(r) == ma && libc::minor(r) == mi)
            .then(|| e.file_name().to_string_lossy().into_owned())
    })
}

/// `dm_device_name` as the kernel's table messages start: `253:N: `.
fn owner_prefix(link: &DeviceLink) -> String {
    match &link.owner {
        Some(udm_io::DevId::Num(ma, mi)) => format!("{ma}:{mi}: "),
        _ => String::new(),
    }
}

/// Which step of a table load failed (the kernel logs them differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Construct,
    Limits,
}

/// The kernel's `device_area_is_invalid`: the area must fit on the device and be aligned to
/// the target's logical block size (`limits`: the device's, after the target's `io_hints`).
fn check_area(
    line: usize,
    h: &DevHandle,
    start: Sectors,
    len: Sectors,
    limits: &Limits,
) -> Result<(), DmError> {
    let size = h.dev.size();
    let lbs = limits.logical_block_size as u64 / 512;
    let end = start.checked_add(len);
    if end.map(|e| e > size).unwrap_or(true) {
        return Err(line_err(
            line,
            format!(
                "{} too small for target: start={}, len={}, dev_size={}",
                kname(h),
                start,
                len,
                size
            ),
        ));
    }
    if lbs > 1 && !start.0.is_multiple_of(lbs) {
        return Err(line_err(
            line,
            format!(
                "start={} not aligned to h/w logical block size {} of {}",
                start,
                lbs * 512,
                kname(h)
            ),
        ));
    }
    if lbs > 1 && !len.0.is_multiple_of(lbs) {
        return Err(line_err(
            line,
            format!(
                "len={} not aligned to h/w logical block size {} of {}",
                len,
                lbs * 512,
                kname(h)
            ),
        ));
    }
    Ok(())
}

/// Fail a bio with EIO (for callers that have no table).
pub fn fail(bio: Bio) {
    bio.complete(Err(IoError::Io))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_text_keeps_escapes_for_the_targets() {
        let t = parse_table_text(
            "0 8 linear /tmp/my\\ disk\\\\\\ f.img 0\n\
             8 8 linear /a\\  # c\n\
             16 8 linear /b\\\\ \t \n\
             24 8\tzero\t#x",
        )
        .unwrap();
        assert_eq!(t[0].params, "/tmp/my\\ disk\\\\\\ f.img 0");
        assert_eq!(split_args(&t[0].params), ["/tmp/my disk\\ f.img", "0"]);
        // An escaped trailing space stays; an escaped backslash does not escape the space.
        assert_eq!(t[1].params, "/a\\ ");
        assert_eq!(split_args(&t[1].params), ["/a "]);
        assert_eq!(t[2].params, "/b\\\\");
        assert_eq!((t[3].ttype.as_str(), t[3].params.as_str()), ("zero", ""));
        assert_eq!(parse_table_text("0 8"), Err(1));
        assert_eq!(parse_table_text("\n0 x zero"), Err(2));
    }
}
