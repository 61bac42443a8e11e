//! The mirror's dirty region logs (`core` and `disk`), with the kernel's on-disk format for
//! the disk log: a 16-byte header (`magic` "MiRr" = 0x4D695272 LE, `version` 2 LE,
//! `nr_regions` u64 LE) at byte 0 of the log device and the *clean* bitset (one bit per
//! region, little-endian bit order, a whole number of 32-bit words) at byte 1024; the two are
//! read and written as one buffer rounded up to the log device's logical block size.
//!
//! A region is *clean* when no write may be in flight to it (set: clean); it is *in sync*
//! when every leg holds the same data. At resume the sync bits are the clean bits read back.

use crate::kscan::scan_u32;
use std::fmt;
use std::sync::Arc;
use udm_core::{klog, DevHandle, TargetError};
use udm_io::{BlockDevice, DevId, IoError, Sectors};

/// "MiRr".
pub const MIRROR_MAGIC: u32 = 0x4D69_5272;
pub const MIRROR_DISK_VERSION: u32 = 2;
/// The clean bitset starts this many sectors into the log device.
pub const LOG_OFFSET_SECTORS: u64 = 2;
/// What the kernel's dirty log module prints its warnings under.
pub const LOG_PREFIX: &str = "dirty region log";

/// `[sync|nosync]`: what to assume about regions the log does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Resynchronise what the log does not say is in sync.
    Default,
    /// The legs are known to be identical.
    NoSync,
    /// Resynchronise everything.
    Force,
}

/// A log's table params: `core <#args> <region> [sync|nosync]` or
/// `disk <#args> <dev> <region> [sync|nosync]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogParams {
    /// `None` for the core log; the device spec for the disk log.
    pub dev: Option<String>,
    pub region_size: u32,
    pub sync: SyncMode,
}

impl fmt::Display for LogParams {
    /// The kernel's log table status, including its trailing space.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra = (self.sync != SyncMode::Default) as u32;
        match &self.dev {
            None => write!(f, "core {} {} ", 1 + extra, self.region_size)?,
            Some(d) => write!(
                f,
                "disk {} {} {} ",
                2 + extra,
                udm_core::Escaped(d),
                self.region_size
            )?,
        }
        match self.sync {
            SyncMode::Default => Ok(()),
            SyncMode::NoSync => f.write_str("nosync "),
            SyncMode::Force => f.write_str("sync "),
        }
    }
}

impl LogParams {
    /// Parse a log of type `ty` from its `args` (the `<#args>` words), for a target of `len`
    /// sectors, logging the kernel's warnings. Errors are what the mirror reports.
    pub fn parse(ty: &str, args: &[String], len: Sectors) -> Result<LogParams, TargetError> {
        let fail = || TargetError::invalid("Error creating mirror dirty log");
        let (dev, rest) = match ty {
            "core" => {
                if args.is_empty() || args.len() > 2 {
                    klog::warn(LOG_PREFIX, "wrong number of arguments to dirty region log");
                    return Err(fail());
                }
                (None, args)
            }
            "disk" => {
                if args.len() < 2 || args.len() > 3 {
                    klog::warn(
                        LOG_PREFIX,
                        "wrong number of arguments to disk dirty region log",
                    );
                    return Err(fail());
                }
                (Some(args[0].clone()), &args[1..])
            }
            other => {
                klog::warn(
                    LOG_PREFIX,
                    &format!("Module for logging type \"{other}\" not found."),
                );
                return Err(fail());
            }
        };
        let sync = match rest.get(1).map(String::as_str) {
            None => SyncMode::Default,
            Some("sync") => SyncMode::Force,
            Some("nosync") => SyncMode::NoSync,
            Some(o) => {
                klog::warn(
                    LOG_PREFIX,
                    &format!("unrecognised sync argument to dirty region log: {o}"),
                );
                return Err(fail());
            }
        };
        let region_size = scan_u32(&rest[0])
            .filter(|&r| r >= 2 && r as u64 <= len.0 && r.is_power_of_two())
            .ok_or_else(|| {
                klog::warn(LOG_PREFIX, &format!("invalid region size {}", rest[0]));
                fail()
            })?;
        Ok(LogParams {
            dev,
            region_size,
            sync,
        })
    }
}

/// The disk half of a disk log.
pub struct DiskPart {
    pub dev: Arc<dyn BlockDevice>,
    pub id: DevId,
    pub _handle: Arc<DevHandle>,
    /// Header and clean bits as read or last written (`buf_size` bytes).
    pub buf: Vec<u8>,
    pub failed: bool,
    pub flush_failed: bool,
}

/// A dirty log's state (the kernel's `log_c`).
pub struct DirtyLog {
    pub params: LogParams,
    pub region_count: u64,
    /// 32-bit words in each bitset.
    words: usize,
    clean: Vec<u8>,
    sync: Vec<u8>,
    recovering: Vec<u8>,
    pub sync_count: u64,
    sync_search: u64,
    touched_dirtied: bool,
    touched_cleaned: bool,
    flush_failed: bool,
    pub disk: Option<DiskPart>,
}

fn test(bs: &[u8], i: u64) -> bool {
    bs[(i / 8) as usize] & (1 << (i % 8)) != 0
}
fn put(bs: &mut [u8], i: u64, v: bool) {
    let b = &mut bs[(i / 8) as usize];
    if v {
        *b |= 1 << (i % 8)
    } else {
        *b &= !(1 << (i % 8))
    }
}

/// Bytes of the disk log buffer for `regions` regions on a device with `lbs`-byte blocks.
pub fn disk_buf_size(regions: u64, lbs: u64) -> u64 {
    let bitset = regions.div_ceil(32) * 4;
    (LOG_OFFSET_SECTORS * 512 + bitset).div_ceil(lbs) * lbs
}

/// An in-core bitmap of `words` 32-bit words, every byte `fill`. The table's length and
/// region size decide its size: one that cannot be had is ENOMEM (as the kernel's failed
/// bitset allocation is), not an aborted process.
fn bitmap(words: usize, fill: u8) -> Result<Vec<u8>, TargetError> {
    let mut v = Vec::new();
    words
        .checked_mul(4)
        .and_then(|n| v.try_reserve_exact(n).ok().map(|()| n))
        .map(|n| {
            v.resize(n, fill);
            v
        })
        .ok_or_else(|| {
            klog::warn(LOG_PREFIX, "couldn't allocate core bitset");
            TargetError::with_errno(libc::ENOMEM, "Error creating mirror dirty log")
        })
}

impl DirtyLog {
    /// A log for a target of `len` sectors; `disk` for a disk log.
    pub fn new(
        params: LogParams,
        len: Sectors,
        disk: Option<(Arc<DevHandle>, DevId)>,
    ) -> Result<DirtyLog, TargetError> {
        let region_count = len.0.div_ceil(params.region_size as u64);
        let words = region_count.div_ceil(32) as usize;
        let disk = match disk {
            None => None,
            Some((h, id)) => {
                let lbs = h.dev.limits().logical_block_size.max(512) as u64;
                let size = disk_buf_size(region_count, lbs);
                if size > h.dev.size().bytes().0 {
                    klog::warn(
                        LOG_PREFIX,
                        &format!("log device {id} too small: need {size} bytes"),
                    );
                    return Err(TargetError::invalid("Error creating mirror dirty log"));
                }
                Some(DiskPart {
                    dev: h.dev.clone(),
                    id,
                    _handle: h,
                    buf: vec![0; size as usize],
                    failed: false,
                    flush_failed: false,
                })
            }
        };
        let nosync = params.sync == SyncMode::NoSync;
        Ok(DirtyLog {
            region_count,
            words,
            clean: bitmap(words, 0xff)?,
            sync: bitmap(words, if nosync { 0xff } else { 0 })?,
            recovering: bitmap(words, 0)?,
            sync_count: if nosync { region_count } else { 0 },
            sync_search: 0,
            touched_dirtied: false,
            touched_cleaned: false,
            flush_failed: false,
            params,
            disk,
        })
    }

    pub fn region_size(&self) -> u64 {
        self.params.region_size as u64
    }
    pub fn is_clean(&self, r: u64) -> bool {
        test(&self.clean, r)
    }
    pub fn in_sync(&self, r: u64) -> bool {
        test(&self.sync, r)
    }
    /// A write is about to go to region `r`.
    pub fn mark_region(&mut self, r: u64) {
        put(&mut self.clean, r, false);
        self.touched_dirtied = true;
    }
    /// No write is in flight to `r` any more.
    pub fn clear_region(&mut self, r: u64) {
        if !self.flush_failed {
            put(&mut self.clean, r, true);
            self.touched_cleaned = true;
        }
    }
    /// The next region to resynchronise (marked recovering), if any.
    pub fn get_resync_work(&mut self) -> Option<u64> {
        loop {
            if self.sync_search >= self.region_count {
                return None;
            }
            let r = (self.sync_search..self.region_count).find(|&i| !test(&self.sync, i));
            let r = r?;
            self.sync_search = r + 1;
            if !test(&self.recovering, r) {
                put(&mut self.recovering, r, true);
                return Some(r);
            }
        }
    }
    pub fn set_region_sync(&mut self, r: u64, in_sync: bool) {
        put(&mut self.recovering, r, false);
        if in_sync {
            if !test(&self.sync, r) {
                self.sync_count += 1;
            }
            put(&mut self.sync, r, true);
        } else if test(&self.sync, r) {
            self.sync_count -= 1;
            put(&mut self.sync, r, false);
        }
    }

    /// `core`: restart the resync scan. `disk`: read the log, reconcile it with the
    /// region count and sync mode, write it back (returns the buffer to write: the caller
    /// does the I/O through `write_disk`).
    pub fn resume(&mut self) -> Result<(), IoError> {
        self.sync_search = 0;
        let Some(d) = self.disk.as_mut() else {
            return Ok(());
        };
        let read = udm_io::sync::read_at(&*d.dev, Sectors(0), d.buf.len());
        let mut nr_regions = 0u64;
        match read {
            Ok(b) => {
                d.buf.copy_from_slice(&b);
                let magic = u32::from_le_bytes(d.buf[0..4].try_into().expect("4 bytes"));
                let mut version = u32::from_le_bytes(d.buf[4..8].try_into().expect("4 bytes"));
                nr_regions = u64::from_le_bytes(d.buf[8..16].try_into().expect("8 bytes"));
                if self.params.sync != SyncMode::Default || magic != MIRROR_MAGIC {
                    version = MIRROR_DISK_VERSION;
                    nr_regions = 0;
                }
                if version == 1 {
                    version = 2;
                }
                if version != MIRROR_DISK_VERSION {
                    klog::warn(LOG_PREFIX, "incompatible disk log version");
                    klog::warn(
                        LOG_PREFIX,
                        &format!("{}: Failed to read header on dirty region log device", d.id),
                    );
                    d.failed = true;
                    nr_regions = 0;
                }
                let off = (LOG_OFFSET_SECTORS * 512) as usize;
                self.clean
                    .copy_from_slice(&d.buf[off..off + self.words * 4]);
            }
            Err(_) => {
                klog::warn(
                    LOG_PREFIX,
                    &format!("{}: Failed to read header on dirty region log device", d.id),
                );
                d.failed = true;
            }
        }
        let nosync = self.params.sync == SyncMode::NoSync;
        for i in nr_regions..self.region_count {
            put(&mut self.clean, i, nosync);
        }
        for i in self.region_count..(self.words as u64 * 32) {
            put(&mut self.clean, i, false);
        }
        self.sync.copy_from_slice(&self.clean);
        self.sync_count = self.clean.iter().map(|b| b.count_ones() as u64).sum();
        self.sync_search = 0;
        self.fill_buf();
        let r = self.write_disk(true);
        let d = self.disk.as_mut().expect("disk log");
        if r.is_err() {
            klog::warn(
                LOG_PREFIX,
                &format!(
                    "{}: Failed to write header on dirty region log device",
                    d.id
                ),
            );
            d.failed = true;
        }
        self.touched_cleaned = false;
        self.touched_dirtied = false;
        r
    }

    fn fill_buf(&mut self) {
        let (count, words) = (self.region_count, self.words);
        let Some(d) = self.disk.as_mut() else { return };
        d.buf[0..4].copy_from_slice(&MIRROR_MAGIC.to_le_bytes());
        d.buf[4..8].copy_from_slice(&MIRROR_DISK_VERSION.to_le_bytes());
        d.buf[8..16].copy_from_slice(&count.to_le_bytes());
        let off = (LOG_OFFSET_SECTORS * 512) as usize;
        d.buf[off..off + words * 4].copy_from_slice(&self.clean);
    }

    /// Write the buffer (and flush the log device when `flush`).
    fn write_disk(&mut self, flush: bool) -> Result<(), IoError> {
        let d = self.disk.as_mut().expect("disk log");
        udm_io::sync::write_at(&*d.dev, Sectors(0), &d.buf)?;
        if flush {
            if let Err(e) = udm_io::sync::flush(&*d.dev) {
                d.flush_failed = true;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether a flush has something to write and needs the legs flushed first (cleaned
    /// bits may only reach the log after the data they cover is durable).
    pub fn flush_needs(&self) -> (bool, bool) {
        (
            self.disk.is_some() && (self.touched_cleaned || self.touched_dirtied),
            self.touched_cleaned,
        )
    }

    /// Write the log if it changed (the disk log; the core log has nothing to write).
    /// `legs_flushed`: the legs' flush before it succeeded (false: every region becomes
    /// dirty, as the kernel does when it cannot tell). An error means the log device failed.
    pub fn flush(&mut self, legs_flushed: bool) -> Result<(), IoError> {
        if self.disk.is_none() || (!self.touched_cleaned && !self.touched_dirtied) {
            return Ok(());
        }
        if self.touched_cleaned && !legs_flushed {
            self.flush_failed = true;
            for i in 0..self.region_count {
                put(&mut self.clean, i, false);
            }
            self.touched_dirtied = true;
        }
        self.fill_buf();
        let dirtied = self.touched_dirtied;
        let r = self.write_disk(dirtied);
        let d = self.disk.as_mut().expect("disk log");
        match r {
            Err(e) => {
                d.failed = true;
                Err(e)
            }
            Ok(()) => {
                self.touched_dirtied = false;
                self.touched_cleaned = false;
                Ok(())
            }
        }
    }

    /// Whether the log device has failed (the mirror stops trusting it).
    pub fn failed(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.failed)
    }

    /// The log's part of the mirror's INFO status: `1 core` or `3 disk <dev> <A|D|F>`.
    pub fn status_info(&self) -> String {
        match &self.disk {
            None => "1 core".into(),
            Some(d) => format!(
                "3 disk {} {}",
                udm_core::escape_arg(&d.id.to_string()),
                if d.flush_failed {
                    'F'
                } else if d.failed {
                    'D'
                } else {
                    'A'
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn log_params_parse_and_print_as_the_kernel() {
        let p = LogParams::parse("core", &args("1024 nosync"), Sectors(8192)).unwrap();
        assert_eq!(p.to_string(), "core 2 1024 nosync ");
        let p = LogParams::parse("core", &args("512"), Sectors(8192)).unwrap();
        assert_eq!(p.to_string(), "core 1 512 ");
        let p = LogParams::parse("disk", &args("7:3 1024 sync"), Sectors(8192)).unwrap();
        assert_eq!(p.to_string(), "disk 3 7:3 1024 sync ");
        for bad in ["1000", "1", "16384", "x", "1024 maybe"] {
            let e = LogParams::parse("core", &args(bad), Sectors(8192)).unwrap_err();
            assert_eq!(e.msg, "Error creating mirror dirty log", "{bad}");
        }
        assert!(LogParams::parse("disk", &args("1024"), Sectors(8192)).is_err());
        assert!(LogParams::parse("foo", &args("1024"), Sectors(8192)).is_err());
    }

    #[test]
    fn buffer_is_rounded_to_the_block_size() {
        assert_eq!(disk_buf_size(8, 512), 1536);
        assert_eq!(disk_buf_size(8, 4096), 4096);
        assert_eq!(disk_buf_size(4096 * 8 + 1, 512), 5632);
    }

    #[test]
    fn resync_work_walks_the_unsynced_regions_once() {
        let p = LogParams::parse("core", &args("2"), Sectors(10)).unwrap();
        let mut l = DirtyLog::new(p, Sectors(10), None).unwrap();
        assert_eq!(l.region_count, 5);
        assert_eq!(l.get_resync_work(), Some(0));
        l.set_region_sync(0, true);
        assert_eq!(l.get_resync_work(), Some(1));
        l.set_region_sync(1, false);
        assert_eq!(l.get_resync_work(), Some(2));
        assert_eq!(l.sync_count, 1);
        l.set_region_sync(0, false);
        assert_eq!(l.sync_count, 0);
        l.mark_region(3);
        assert!(!l.is_clean(3));
        l.clear_region(3);
        assert!(l.is_clean(3));
    }
}
