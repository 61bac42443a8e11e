//! LVM2's on-disk format (the `lvm2` metadata format, `LVM2 001` labels): the label and PV
//! header in the first sectors of a PV, the metadata area header with its circular buffer of
//! text metadata, the text metadata grammar (a lossless generic tree and a typed model), and
//! PV/VG operations on image files that real lvm2 reads and writes too.
//!
//! - [`label`]: `LABELONE` label header, PV header, PV header extension, LVM ids.
//! - [`mda`]: metadata area header (`mda_header`), raw locations, the circular text buffer.
//! - [`text`]: the text metadata grammar as a generic tree: parse and print, byte-exact.
//! - [`model`]: typed VG/PV/LV/segment model over the tree (unknown keys survive).
//! - [`ops`]: `pvcreate`, write and commit a VG to every PV, read a VG from a set of PVs.
//! - [`alloc`]: `--alloc` policies (contiguous, cling, normal, anywhere).
//! - [`build`], [`edit`]: vgcreate/lvcreate allocation and the other VG and LV edits.
//! - [`dmplan`]: the device-mapper devices and tables lvm2 activates for an LV.
//! - [`merge`]: snapshot merges, and what goes with a removed layered LV.
//! - [`pools`]: thin pools, thin volumes, cache pools and caches as lvm2 writes them.
//! - [`raid`]: raid and mirror LVs with their rmeta/rimage/mimage/mlog sub-LVs.
//! - [`resize`]: resizing thin volumes, thin pools and caches; splitting caches.
//! - [`report`]: the fields, attribute strings and units of lvm2's reports.

pub mod alloc;
pub mod build;
pub mod dmplan;
pub mod edit;
pub mod label;
pub mod mda;
pub mod merge;
pub mod model;
pub mod ops;
pub mod pools;
pub mod raid;
pub mod report;
pub mod resize;
pub mod text;

pub use label::{LvmId, PvHeader};
pub use mda::{MdaHeader, RawLocn};
pub use model::{Lv, Metadata, Pv, Segment, Vg};
pub use ops::{pvcreate, read_vg, scan_pv, write_vg, Disk, PvScan, PvcreateOptions, ReadVg};
pub use text::{Document, Item, Value};

/// Bytes per sector in every LVM2 offset that counts sectors.
pub const SECTOR_SIZE: u64 = 512;

/// LVM2's checksum: a CRC-32 (reflected polynomial 0xEDB88320) started at [`INITIAL_CRC`]
/// with no final inversion. Chain calls to checksum data in pieces (a wrapped metadata text).
pub fn calc_crc(initial: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut crc = initial;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The starting value of every LVM2 checksum.
pub const INITIAL_CRC: u32 = 0xf597_a6cf;

/// What is wrong with a PV, its metadata, or a request: each says where, as lvm2 would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LvmError {
    #[error("no LVM label found in the first 4 sectors")]
    NoLabel,
    #[error("bad label at sector {sector}: {reason}")]
    BadLabel { sector: u64, reason: String },
    #[error("bad PV header: {0}")]
    BadPvHeader(String),
    #[error("bad metadata area header at {offset}: {reason}")]
    BadMdaHeader { offset: u64, reason: String },
    #[error("bad metadata text at {offset}: {reason}")]
    BadMetadata { offset: u64, reason: String },
    #[error("metadata parse error at line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error("invalid metadata: {0}")]
    Invalid(String),
    #[error("VG {vg} metadata ({size} bytes) exceeds maximum metadata size ({max} bytes)")]
    MetadataTooLarge { vg: String, size: u64, max: u64 },
    #[error("device is too small: {size} bytes, need at least {need}")]
    TooSmall { size: u64, need: u64 },
    #[error("no valid metadata for VG {vg}: {reasons}")]
    NoValidMetadata { vg: String, reasons: String },
    #[error("inconsistent metadata: {0}")]
    Inconsistent(String),
    #[error("{0}")]
    NotFound(String),
    /// A request lvm2 would refuse, in lvm2's words.
    #[error("{0}")]
    Refused(String),
    #[error("I/O error on {what}: {reason}")]
    Io {
        what: String,
        reason: String,
        errno: i32,
    },
}

impl LvmError {
    /// The errno a caller should report.
    pub fn errno(&self) -> i32 {
        match self {
            LvmError::Io { errno, .. } => *errno,
            LvmError::NotFound(_) | LvmError::NoLabel => libc::ENOENT,
            LvmError::MetadataTooLarge { .. } | LvmError::TooSmall { .. } => libc::ENOSPC,
            _ => libc::EINVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_chainable_crc32() {
        // Chained checksums equal one checksum over the whole buffer.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let whole = calc_crc(INITIAL_CRC, &data);
        let part = calc_crc(calc_crc(INITIAL_CRC, &data[..333]), &data[333..]);
        assert_eq!(whole, part);
        // The empty buffer leaves the initial value; one zero byte is the table step.
        assert_eq!(calc_crc(INITIAL_CRC, &[]), INITIAL_CRC);
        // Started at all-ones and inverted, it is the standard CRC-32 (check value).
        assert_eq!(!calc_crc(0xffff_ffff, b"123456789"), 0xcbf4_3926);
    }
}
