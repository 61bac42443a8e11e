//! Partition tables: MBR (primary entries, the extended partition's chain of EBRs, logical
//! partitions), GPT (primary and backup header, entry array, CRC checks) and protective-MBR
//! detection. Pure format code: callers hand in a [`Disk`] that reads bytes; these modules say
//! what the bytes mean.
//!
//! [`read_slices`] scans a disk the way kpartx does — GPT first (only with a valid protective
//! MBR unless forced), then DOS — and returns kpartx's *slices*: one per table slot, numbered
//! from 1 by position, with empty slots kept (size 0) so numbering matches kpartx's, and logical
//! partitions pointing at the extended partition that contains them. Sector numbers are always
//! in 512-byte units, whatever the disk's logical sector size.
//!
//! Hostile bytes never panic: every length and count read from the disk is bounded before use.

mod crc;
mod file;
pub mod gpt;
pub mod kpartx;
pub mod mbr;

pub use crc::crc32;
pub use file::FileDisk;

/// The most slices kpartx keeps (its `MAXSLICES`).
pub const MAX_SLICES: usize = 256;

/// Where partition-table bytes come from.
pub trait Disk {
    /// The logical sector size in bytes (512 for image files; a block device's own otherwise).
    fn sector_size(&self) -> u32;
    /// The size of the disk in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from byte `offset`; an error or a short read fails the read.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

/// An in-memory disk (tests, and callers that already hold the bytes).
impl Disk for Vec<u8> {
    fn sector_size(&self) -> u32 {
        512
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        match end {
            Some(end) if end <= self.len() as u64 => {
                buf.copy_from_slice(&self[offset as usize..end as usize]);
                Ok(())
            }
            _ => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        }
    }
}

/// Why a partition table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("read error at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("no MBR signature (0x55aa) at byte {0}")]
    NoSignature(u64),
    #[error("sector size {0} is not a multiple of 512")]
    BadSectorSize(u32),
    #[error("the MBR holds a protective GPT entry (type 0xee)")]
    Protective,
    #[error("GPT header at LBA {lba}: {why}")]
    Gpt { lba: u64, why: gpt::GptFault },
    #[error("no valid GPT header (primary: {primary}; backup: {backup})")]
    NoGpt { primary: String, backup: String },
    #[error("valid GPT signature but invalid protective MBR")]
    NoProtectiveMbr,
    #[error("disk too small")]
    TooSmall,
}

impl PartError {
    /// The errno a command reports for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            PartError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            PartError::BadSectorSize(_) => libc::EINVAL,
            _ => libc::ENXIO,
        }
    }
}

/// Read `len` bytes at `offset`, naming the offset on failure.
pub(crate) fn read_bytes(d: &mut dyn Disk, offset: u64, len: usize) -> Result<Vec<u8>, PartError> {
    let end = offset.checked_add(len as u64);
    if end.is_none_or(|e| e > d.size()) {
        return Err(PartError::Io {
            offset,
            source: std::io::Error::from_raw_os_error(libc::EIO),
        });
    }
    let mut buf = vec![0u8; len];
    d.read_at(offset, &mut buf)
        .map_err(|source| PartError::Io { offset, source })?;
    Ok(buf)
}

/// One kpartx slice: a table slot, in 512-byte sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slice {
    pub start: u64,
    /// 0 for an empty slot (kept so later slots keep their numbers).
    pub size: u64,
    /// The index (0-based, into the same slice list) of the extended partition holding this
    /// logical partition.
    pub container: Option<usize>,
}

/// Which kind of table was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gpt,
    Dos,
}

/// The result of a scan: the slices and the warnings kpartx prints on stderr on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub kind: Kind,
    pub slices: Vec<Slice>,
    pub warnings: Vec<String>,
}

/// Scan options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOpts {
    /// Use a GPT even without a protective MBR (kpartx `-g`).
    pub force_gpt: bool,
    /// Only this table type (kpartx `-t`).
    pub only: Option<Kind>,
}

/// Find the partition table as kpartx does: GPT first, then DOS. `Ok(None)`: neither.
pub fn read_slices(d: &mut dyn Disk, opts: ScanOpts) -> Result<Option<Scan>, PartError> {
    let ss = d.sector_size();
    if ss == 0 || !ss.is_multiple_of(512) {
        return Err(PartError::BadSectorSize(ss));
    }
    let mut warnings = Vec::new();
    if opts.only.is_none_or(|k| k == Kind::Gpt) {
        if let Some(t) = gpt::find_valid(d, opts.force_gpt, &mut warnings) {
            let slices = gpt::slices(&t, ss);
            if !slices.is_empty() {
                return Ok(Some(Scan {
                    kind: Kind::Gpt,
                    slices,
                    warnings,
                }));
            }
        }
    }
    if opts.only.is_none_or(|k| k == Kind::Dos) {
        match mbr::dos_slices(d, &mut warnings) {
            Ok(slices) if !slices.is_empty() => {
                return Ok(Some(Scan {
                    kind: Kind::Dos,
                    slices,
                    warnings,
                }))
            }
            Ok(_) | Err(_) => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
