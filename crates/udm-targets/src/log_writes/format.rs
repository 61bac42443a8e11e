//! The on-disk log format of the kernel's dm-log-writes (drivers/md/dm-log-writes.c):
//! a super block in block 0, then one header block per entry, each followed by the data it
//! wrote. A "block" is the logged device's logical block size (`sectorsize`).
//!
//! ```text
//! super (block 0):   magic u64 | version u64 | nr_entries u64 | sectorsize u32 | zeros
//! entry header:      sector u64 | nr_sectors u64 | flags u64 | data_len u64 | mark text | zeros
//! entry data:        nr_sectors blocks (none for discards and marks)
//! ```
//! All integers little-endian; `sector` and `nr_sectors` count `sectorsize` blocks.

use std::fmt;

/// The entry followed a flush (it is the flush, or a write with `PREFLUSH`).
pub const LOG_FLUSH_FLAG: u64 = 1 << 0;
/// The write had FUA.
pub const LOG_FUA_FLAG: u64 = 1 << 1;
/// A discard: `sector`/`nr_sectors` name the range, no data follows.
pub const LOG_DISCARD_FLAG: u64 = 1 << 2;
/// A mark: its text follows the header in the same block.
pub const LOG_MARK_FLAG: u64 = 1 << 3;
/// The write carried `REQ_META`.
pub const LOG_METADATA_FLAG: u64 = 1 << 4;

pub const WRITE_LOG_VERSION: u64 = 1;
pub const WRITE_LOG_MAGIC: u64 = 0x006a_7366_7773_6872;
/// Bytes of `struct log_write_super`.
pub const SUPER_LEN: usize = 28;
/// Bytes of `struct log_write_entry`.
pub const ENTRY_LEN: usize = 32;
/// The mark the kernel logs when the target is torn down.
pub const END_MARK: &str = "dm-log-writes-end";

/// A log's failure to parse or to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// Reading or writing a device failed.
    Io(udm_io::IoError),
    BadMagic(u64),
    BadVersion(u64),
    BadSectorSize(u32),
    /// An entry header that cannot be valid (all zeroes, or garbage after a non-mark header).
    Malformed {
        entry: u64,
        block: u64,
    },
    /// The log ends inside an entry.
    Truncated {
        entry: u64,
    },
    /// A mark named by `--start-mark`/`--end-mark` is not in the log.
    NoMark(String),
    /// An entry number past the end.
    NoEntry(u64),
    /// An entry whose sectors lie past any device (its offset or length overflows).
    OutOfRange {
        entry: u64,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io(e) => write!(f, "I/O error: {e}"),
            LogError::BadMagic(m) => write!(f, "Magic doesn't match (0x{m:x})"),
            LogError::BadVersion(v) => {
                write!(f, "Version mismatch, wanted {WRITE_LOG_VERSION}, have {v}")
            }
            LogError::BadSectorSize(s) => write!(f, "Invalid sector size {s}"),
            LogError::Malformed { entry, block } => {
                write!(f, "Malformed entry {entry} @{block}")
            }
            LogError::Truncated { entry } => write!(f, "Log ends inside entry {entry}"),
            LogError::NoMark(m) => write!(f, "Couldn't find mark {m:?}"),
            LogError::NoEntry(n) => write!(f, "Invalid entry number {n}"),
            LogError::OutOfRange { entry } => {
                write!(f, "Entry {entry} lies past the end of any device")
            }
        }
    }
}

impl std::error::Error for LogError {}

impl From<udm_io::IoError> for LogError {
    fn from(e: udm_io::IoError) -> LogError {
        LogError::Io(e)
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// `struct log_write_super`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSuper {
    pub nr_entries: u64,
    pub sectorsize: u32,
}

impl LogSuper {
    /// The super block, padded with zeroes to one block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.sectorsize as usize];
        b[0..8].copy_from_slice(&WRITE_LOG_MAGIC.to_le_bytes());
        b[8..16].copy_from_slice(&WRITE_LOG_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.nr_entries.to_le_bytes());
        b[24..28].copy_from_slice(&self.sectorsize.to_le_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> Result<LogSuper, LogError> {
        let magic = u64_at(b, 0);
        if magic != WRITE_LOG_MAGIC {
            return Err(LogError::BadMagic(magic));
        }
        let version = u64_at(b, 8);
        if version != WRITE_LOG_VERSION {
            return Err(LogError::BadVersion(version));
        }
        let mut s = [0u8; 4];
        s.copy_from_slice(&b[24..28]);
        let sectorsize = u32::from_le_bytes(s);
        if sectorsize < 512 || !sectorsize.is_power_of_two() {
            return Err(LogError::BadSectorSize(sectorsize));
        }
        Ok(LogSuper {
            nr_entries: u64_at(b, 16),
            sectorsize,
        })
    }
}

/// `struct log_write_entry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryHeader {
    /// First block written (in `sectorsize` units).
    pub sector: u64,
    /// Blocks written (data blocks that follow, unless a discard).
    pub nr_sectors: u64,
    pub flags: u64,
    /// Bytes of mark text in the header block.
    pub data_len: u64,
}

impl EntryHeader {
    /// The header block: header, then `mark` (for marks), zero padded to `sectorsize`.
    pub fn encode(&self, mark: &[u8], sectorsize: usize) -> Vec<u8> {
        let mut b = vec![0u8; sectorsize];
        b[0..8].copy_from_slice(&self.sector.to_le_bytes());
        b[8..16].copy_from_slice(&self.nr_sectors.to_le_bytes());
        b[16..24].copy_from_slice(&self.flags.to_le_bytes());
        b[24..32].copy_from_slice(&self.data_len.to_le_bytes());
        let n = mark.len().min(sectorsize - ENTRY_LEN);
        b[ENTRY_LEN..ENTRY_LEN + n].copy_from_slice(&mark[..n]);
        b
    }
    pub fn decode(b: &[u8]) -> EntryHeader {
        EntryHeader {
            sector: u64_at(b, 0),
            nr_sectors: u64_at(b, 8),
            flags: u64_at(b, 16),
            data_len: u64_at(b, 24),
        }
    }
    /// replay-log's sanity check on a header block.
    pub fn valid(&self, block: &[u8]) -> bool {
        if self.flags == 0 && self.nr_sectors == 0 {
            return false;
        }
        !(self.flags != LOG_MARK_FLAG && block.get(ENTRY_LEN).is_some_and(|&b| b != 0))
    }
}

/// Flags as replay-log prints them: `FLUSH|FUA`, `NONE`, `UNKNOWN.0x…` for other bits.
pub fn flags_str(mut flags: u64) -> String {
    let names = [
        (LOG_FLUSH_FLAG, "FLUSH"),
        (LOG_FUA_FLAG, "FUA"),
        (LOG_DISCARD_FLAG, "DISCARD"),
        (LOG_MARK_FLAG, "MARK"),
        (LOG_METADATA_FLAG, "METADATA"),
    ];
    let mut out: Vec<String> = Vec::new();
    for (bit, n) in names {
        if flags & bit != 0 {
            out.push(n.to_string());
            flags &= !bit;
        }
    }
    if flags != 0 {
        out.push(format!("UNKNOWN.0x{flags:x}"));
    }
    if out.is_empty() {
        return "NONE".into();
    }
    out.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn super_round_trips() {
        let s = LogSuper {
            nr_entries: 7,
            sectorsize: 4096,
        };
        let b = s.encode();
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[0..8], b"rhswfsj\0");
        assert_eq!(LogSuper::decode(&b).unwrap(), s);
        let mut bad = b.clone();
        bad[8] = 2;
        assert_eq!(LogSuper::decode(&bad), Err(LogError::BadVersion(2)));
    }

    #[test]
    fn entry_round_trips_and_validates() {
        let h = EntryHeader {
            sector: 0,
            nr_sectors: 0,
            flags: LOG_MARK_FLAG,
            data_len: 4,
        };
        let b = h.encode(b"mkfs", 512);
        assert_eq!(EntryHeader::decode(&b), h);
        assert!(h.valid(&b));
        let zero = EntryHeader::default();
        assert!(!zero.valid(&zero.encode(b"", 512)));
        let w = EntryHeader {
            nr_sectors: 1,
            ..EntryHeader::default()
        };
        let mut wb = w.encode(b"", 512);
        assert!(w.valid(&wb));
        wb[ENTRY_LEN] = 1;
        assert!(!w.valid(&wb));
        assert_eq!(flags_str(LOG_FLUSH_FLAG | LOG_FUA_FLAG), "FLUSH|FUA");
        assert_eq!(flags_str(0), "NONE");
        assert_eq!(flags_str(LOG_MARK_FLAG | 64), "MARK|UNKNOWN.0x40");
    }
}
