//! The `BlockDevice` trait every backend, mapped device and remote device implements.

use crate::{Bio, Sectors};
use std::fmt;

/// How a device is named in tables and `deps`: a `major:minor` pair (block devices, mapped
/// devices) or a path (a regular file used as backing, printed as given).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DevId {
    Num(u32, u32),
    Path(String),
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevId::Num(ma, mi) => write!(f, "{ma}:{mi}"),
            DevId::Path(p) => f.write_str(p),
        }
    }
}

/// I/O limits a device advertises (the kernel's `queue_limits`, the parts udm uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Smallest addressable unit, bytes (512 or 4096 …).
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    /// Preferred minimum I/O, bytes.
    pub io_min: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            logical_block_size: 512,
            physical_block_size: 512,
            io_min: 512,
        }
    }
}

/// A block device: accepts bios and completes them. `submit` never blocks the caller for I/O.
///
/// The contract every implementation keeps (checked for each one by the conformance suite in
/// `udm_testkit::conformance`): every bio completes exactly once and hands its buffer back;
/// I/O reaching past `size()` fails with `IoError::Io` (EIO, as the kernel's end-of-device
/// check) and never panics; a `read_only()` device fails writes, discards and write-zeroes
/// with `IoError::ReadOnly` (EROFS) and keeps its data; a write-zeroes that succeeds leaves
/// the range reading as zeroes.
pub trait BlockDevice: Send + Sync {
    /// Start the bio; its completion runs later (possibly on another thread, possibly inline).
    fn submit(&self, bio: Bio);
    /// Size in sectors.
    fn size(&self) -> Sectors;
    /// How the device prints in tables.
    fn id(&self) -> DevId;
    fn limits(&self) -> Limits {
        Limits::default()
    }
    fn read_only(&self) -> bool {
        false
    }
    /// Report allocation of `[sector, sector+len)`: runs of `(len, Extent)`. The default says
    /// everything is allocated data.
    fn extents(&self, _sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        vec![(len, Extent::Data)]
    }
}

/// Allocation state of a range, for NBD block status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    Data,
    /// Allocated but reads as zeroes.
    Zero,
    /// Not allocated and reads as zeroes.
    Hole,
}
