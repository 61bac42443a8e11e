//! The GUID partition table: a header at LBA 1 (`EFI PART`, its own CRC-32 over
//! `header_size` bytes, `my_lba`, `alternate_lba`, usable range, disk GUID, where the entry
//! array is and its CRC-32) and a backup header in the disk's last LBA; 128-byte entries (type
//! GUID, unique GUID, first and last LBA inclusive, attributes, UTF-16LE name).
//!
//! [`find_valid`] chooses a table as kpartx does: the primary header if valid (the backup is
//! then only checked against it), else the backup — at the primary's `alternate_lba` or the last
//! LBA — and only with a protective MBR unless forced; disagreements between the two headers
//! become kpartx's warnings.

use super::mbr::Mbr;
use super::{crc32, read_bytes, Disk, PartError, Slice, MAX_SLICES};

/// `EFI PART`, little-endian.
pub const SIGNATURE: u64 = 0x5452_4150_2049_4645;
/// The only entry size kpartx accepts.
pub const ENTRY_SIZE: u32 = 128;
/// Bytes of the header that are defined.
pub const HEADER_MIN: u32 = 92;
/// The largest entry array read (hostile counts are refused, not allocated).
pub const MAX_ENTRIES: u32 = 16384;

/// Why one GPT header (with its entries) is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptFault {
    #[error("cannot read it")]
    Unreadable,
    #[error("bad signature")]
    BadSignature,
    #[error("header size {0} out of range")]
    HeaderSize(u32),
    #[error("header CRC {found:#010x} != computed {computed:#010x}")]
    HeaderCrc { found: u32, computed: u32 },
    #[error("my_lba {0} is not where the header was read")]
    MyLba(u64),
    #[error("partition entry size {0} is not 128")]
    EntrySize(u32),
    #[error("{0} partition entries is too many")]
    TooManyEntries(u32),
    #[error("cannot read the partition entries")]
    EntriesUnreadable,
    #[error("entry array CRC {found:#010x} != computed {computed:#010x}")]
    EntriesCrc { found: u32, computed: u32 },
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub revision: u32,
    pub header_size: u32,
    pub header_crc: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: [u8; 16],
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn le64(b: &[u8], o: usize) -> u64 {
    u64::from(le32(b, o)) | (u64::from(le32(b, o + 4)) << 32)
}

impl Header {
    /// Decode and check a header read from `lba` (`sector` is that whole sector): signature,
    /// size, CRC, `my_lba` and the entry size.
    pub fn parse(sector: &[u8], lba: u64) -> Result<Header, GptFault> {
        if sector.len() < HEADER_MIN as usize {
            return Err(GptFault::Unreadable);
        }
        if le64(sector, 0) != SIGNATURE {
            return Err(GptFault::BadSignature);
        }
        let header_size = le32(sector, 12);
        if header_size < HEADER_MIN || header_size as usize > sector.len() {
            return Err(GptFault::HeaderSize(header_size));
        }
        let found = le32(sector, 16);
        let mut h = sector[..header_size as usize].to_vec();
        h[16..20].fill(0);
        let computed = crc32(&h);
        if found != computed {
            return Err(GptFault::HeaderCrc { found, computed });
        }
        let mut disk_guid = [0u8; 16];
        disk_guid.copy_from_slice(&sector[56..72]);
        let hdr = Header {
            revision: le32(sector, 8),
            header_size,
            header_crc: found,
            my_lba: le64(sector, 24),
            alternate_lba: le64(sector, 32),
            first_usable: le64(sector, 40),
            last_usable: le64(sector, 48),
            disk_guid,
            entries_lba: le64(sector, 72),
            num_entries: le32(sector, 80),
            entry_size: le32(sector, 84),
            entries_crc: le32(sector, 88),
        };
        if hdr.my_lba != lba {
            return Err(GptFault::MyLba(hdr.my_lba));
        }
        if hdr.entry_size != ENTRY_SIZE {
            return Err(GptFault::EntrySize(hdr.entry_size));
        }
        if hdr.num_entries > MAX_ENTRIES {
            return Err(GptFault::TooManyEntries(hdr.num_entries));
        }
        Ok(hdr)
    }
}

/// One partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub type_guid: [u8; 16],
    pub unique_guid: [u8; 16],
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

impl Entry {
    /// Decode a 128-byte entry.
    pub fn parse(b: &[u8]) -> Entry {
        let mut type_guid = [0u8; 16];
        type_guid.copy_from_slice(&b[0..16]);
        let mut unique_guid = [0u8; 16];
        unique_guid.copy_from_slice(&b[16..32]);
        let units: Vec<u16> = b[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Entry {
            type_guid,
            unique_guid,
            first_lba: le64(b, 32),
            last_lba: le64(b, 40),
            attributes: le64(b, 48),
            name: String::from_utf16_lossy(&units),
        }
    }

    /// An unused slot (all-zero type GUID).
    pub fn is_unused(&self) -> bool {
        self.type_guid == [0; 16]
    }
}

/// A valid header with its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub header: Header,
    pub entries: Vec<Entry>,
}

/// Read and check the header at `lba` and its entry array.
pub fn read_table(d: &mut dyn Disk, lba: u64) -> Result<Table, GptFault> {
    let ss = u64::from(d.sector_size());
    let off = lba.checked_mul(ss).ok_or(GptFault::Unreadable)?;
    let sector = read_bytes(d, off, ss as usize).map_err(|_| GptFault::Unreadable)?;
    let header = Header::parse(&sector, lba)?;
    let len = header.num_entries as usize * ENTRY_SIZE as usize;
    let eoff = header
        .entries_lba
        .checked_mul(ss)
        .ok_or(GptFault::EntriesUnreadable)?;
    let raw = read_bytes(d, eoff, len).map_err(|_| GptFault::EntriesUnreadable)?;
    let computed = crc32(&raw);
    if computed != header.entries_crc {
        return Err(GptFault::EntriesCrc {
            found: header.entries_crc,
            computed,
        });
    }
    let entries = raw
        .chunks_exact(ENTRY_SIZE as usize)
        .map(Entry::parse)
        .collect();
    Ok(Table { header, entries })
}

/// kpartx's comparison of the two headers: one warning per disagreement.
fn compare(p: &Header, a: &Header, last_lba: u64, w: &mut Vec<String>) {
    let before = w.len();
    let mut warn = |cond: bool, s: String| {
        if cond {
            w.push(s);
        }
    };
    warn(
        p.my_lba != a.alternate_lba,
        "GPT:Primary header LBA != Alt. header alternate_lba".into(),
    );
    warn(
        p.alternate_lba != a.my_lba,
        "GPT:Primary header alternate_lba != Alt. header my_lba".into(),
    );
    warn(
        p.first_usable != a.first_usable,
        "GPT:first_usable_lbas don't match.".into(),
    );
    warn(
        p.last_usable != a.last_usable,
        "GPT:last_usable_lbas don't match.".into(),
    );
    warn(
        p.disk_guid != a.disk_guid,
        "GPT:disk_guids don't match.".into(),
    );
    warn(
        p.num_entries != a.num_entries,
        format!(
            "GPT:num_partition_entries don't match: {:#x} != {:#x}",
            p.num_entries, a.num_entries
        ),
    );
    warn(
        p.entry_size != a.entry_size,
        format!(
            "GPT:sizeof_partition_entry values don't match: {:#x} != {:#x}",
            p.entry_size, a.entry_size
        ),
    );
    warn(
        p.entries_crc != a.entries_crc,
        format!(
            "GPT:partition_entry_array_crc32 values don't match: {:#x} != {:#x}",
            p.entries_crc, a.entries_crc
        ),
    );
    warn(
        p.alternate_lba != last_lba,
        "GPT:Primary header thinks Alt. header is not at the end of the disk.".into(),
    );
    warn(
        a.my_lba != last_lba,
        "GPT:Alternate GPT header not at the end of the disk.".into(),
    );
    if w.len() > before {
        w.push("GPT: Use GNU Parted to correct GPT errors.".into());
    }
}

/// Choose the GPT kpartx would use, if any (see the module doc); warnings go to `w`.
pub fn find_valid(d: &mut dyn Disk, force: bool, w: &mut Vec<String>) -> Option<Table> {
    choose(d, force, w).ok().map(|(t, _)| t)
}

/// The disk's last LBA, or an error when the disk is under two sectors.
fn last_lba(d: &mut dyn Disk) -> Result<u64, PartError> {
    let sectors = d.size() / u64::from(d.sector_size());
    match sectors.checked_sub(1) {
        Some(l) if l > 0 => Ok(l),
        _ => Err(PartError::TooSmall),
    }
}

/// As [`find_valid`], saying why no GPT was chosen; also tells whether the backup was used.
pub fn choose(
    d: &mut dyn Disk,
    force: bool,
    w: &mut Vec<String>,
) -> Result<(Table, bool), PartError> {
    let last = last_lba(d)?;
    let primary = read_table(d, 1);
    let backup = match &primary {
        Ok(p) => read_table(d, p.header.alternate_lba).or_else(|_| read_table(d, last)),
        Err(_) => read_table(d, last),
    };
    let (p, a) = match (primary, backup) {
        (Err(p), Err(a)) => {
            return Err(PartError::NoGpt {
                primary: p.to_string(),
                backup: a.to_string(),
            })
        }
        (p, a) => (p.ok(), a.ok()),
    };
    let pmbr = read_bytes(d, 0, 512)
        .ok()
        .and_then(|s| Mbr::parse(&s))
        .is_some_and(|m| m.is_protective());
    if !pmbr {
        if !force {
            w.push("  Warning: Disk has a valid GPT signature but invalid PMBR.".into());
            w.push("  Assuming this disk is *not* a GPT disk anymore.".into());
            w.push("  Use gpt kernel option to override.  Use GNU Parted to correct disk.".into());
            return Err(PartError::NoProtectiveMbr);
        }
        w.push("  Warning: Disk has a valid GPT signature but invalid PMBR.".into());
        w.push("  Use GNU Parted to correct disk.".into());
        w.push("  gpt option taken, disk treated as GPT.".into());
    }
    if let (Some(p), Some(a)) = (&p, &a) {
        compare(&p.header, &a.header, last, w);
    }
    match (p, a) {
        (Some(p), a) => {
            if a.is_none() {
                w.push("Alternate GPT is invalid, using primary GPT.".into());
            }
            Ok((p, false))
        }
        (None, Some(a)) => {
            w.push("Primary GPT is invalid, using alternate GPT.".into());
            Ok((a, true))
        }
        (None, None) => Err(PartError::TooSmall),
    }
}

/// kpartx's slices of a GPT: one per entry up to the last used one (at most [`MAX_SLICES`]),
/// unused entries as empty slices; sectors converted to 512-byte units.
pub fn slices(t: &Table, sector_size: u32) -> Vec<Slice> {
    let mul = u64::from(sector_size / 512).max(1);
    let mut out: Vec<Slice> = t
        .entries
        .iter()
        .take(MAX_SLICES)
        .map(|e| {
            if e.is_unused() {
                Slice::default()
            } else {
                Slice {
                    start: mul.wrapping_mul(e.first_lba),
                    size: mul.wrapping_mul(e.last_lba.wrapping_sub(e.first_lba).wrapping_add(1)),
                    container: None,
                }
            }
        })
        .collect();
    let used = t
        .entries
        .iter()
        .take(MAX_SLICES)
        .rposition(|e| !e.is_unused())
        .map_or(0, |i| i + 1);
    out.truncate(used);
    out
}
