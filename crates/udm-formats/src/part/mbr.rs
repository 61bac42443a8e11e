//! The DOS (MBR) partition table: four primary entries at byte 446 of sector 0 with the
//! 0x55 0xaa signature at 510, extended partitions (types 0x05, 0x0f, 0x85) holding a chain of
//! EBRs, each with a logical partition (relative to the EBR) and a link to the next EBR
//! (relative to the start of the extended partition), and the protective MBR of a GPT disk
//! (an entry of type 0xee).
//!
//! [`dos_slices`] gives kpartx's slices: slots 1–4 are the primary entries (an extended one
//! mapped as its first 1 KiB — two 512-byte sectors, or one larger sector — for boot loaders),
//! then every non-link entry of every EBR in chain order, from slot 5.

use super::{read_bytes, Disk, PartError, Slice, MAX_SLICES};

/// Byte offset of the first partition entry in an MBR/EBR.
pub const ENTRIES_OFFSET: usize = 0x1be;
/// Partition type of a GPT's protective MBR entry.
pub const TYPE_GPT_PROTECTIVE: u8 = 0xee;
/// How many EBRs in a row may hold no partition before the chain is abandoned (kpartx's).
const MAX_EMPTY_EBRS: u32 = 100;

/// One 16-byte partition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    pub boot: u8,
    pub sys_type: u8,
    /// First sector (in the disk's logical sectors), relative as the table kind says.
    pub start: u32,
    pub sectors: u32,
}

impl Entry {
    /// Decode a 16-byte entry.
    pub fn parse(b: &[u8; 16]) -> Entry {
        Entry {
            boot: b[0],
            sys_type: b[4],
            start: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            sectors: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// Whether the type is one of the extended-partition types kpartx follows.
    pub fn is_extended(&self) -> bool {
        matches!(self.sys_type, 0x05 | 0x0f | 0x85)
    }
}

/// A decoded MBR or EBR sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mbr {
    pub entries: [Entry; 4],
}

impl Mbr {
    /// Decode a sector; `None` without the 0x55 0xaa signature (or when shorter than 512).
    pub fn parse(sector: &[u8]) -> Option<Mbr> {
        if sector.len() < 512 || sector[510] != 0x55 || sector[511] != 0xaa {
            return None;
        }
        let mut entries = [Entry::default(); 4];
        for (i, e) in entries.iter_mut().enumerate() {
            let off = ENTRIES_OFFSET + 16 * i;
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&sector[off..off + 16]);
            *e = Entry::parse(&raw);
        }
        Some(Mbr { entries })
    }

    /// A protective MBR: signed, with an entry of type 0xee (what kpartx and the kernel ask of
    /// a GPT disk).
    pub fn is_protective(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.sys_type == TYPE_GPT_PROTECTIVE)
    }
}

/// The 512-byte block at 512-byte block `blk`, read as kpartx's `getblock` does (its block
/// number is a 32-bit unsigned int).
fn block(d: &mut dyn Disk, blk: u64) -> Result<Vec<u8>, PartError> {
    read_bytes(d, (blk as u32 as u64) * 512, 512)
}

/// kpartx's slices of a DOS table (empty if sector 0 is protective: that disk is GPT's).
pub fn dos_slices(d: &mut dyn Disk, warnings: &mut Vec<String>) -> Result<Vec<Slice>, PartError> {
    let mul = u64::from(d.sector_size() / 512).max(1);
    let mbr = Mbr::parse(&block(d, 0)?).ok_or(PartError::NoSignature(0))?;
    let mut slices = vec![Slice::default(); 4];
    for (i, p) in mbr.entries.iter().enumerate() {
        if p.sys_type == TYPE_GPT_PROTECTIVE {
            return Err(PartError::Protective);
        }
        slices[i] = Slice {
            start: mul * u64::from(p.start),
            size: mul * u64::from(p.sectors),
            container: None,
        };
        if p.is_extended() {
            // Only the first 1 KiB is mapped, for boot loaders.
            slices[i].size = if mul == 1 { 2 } else { mul };
            let room = MAX_SLICES.saturating_sub(slices.len());
            let logicals = extended_chain(d, p, i, mul, room, warnings);
            slices.extend(logicals);
        }
    }
    Ok(slices)
}

/// Follow the EBR chain of the extended partition `ep` (primary slot `slot`): every entry of an
/// EBR that is not a link becomes a slice (start relative to its EBR); the first non-empty link
/// (relative to the extended partition's start) leads on. Stops at a missing signature, a read
/// error, `room` slices, or [`MAX_EMPTY_EBRS`] EBRs in a row with nothing in them.
fn extended_chain(
    d: &mut dyn Disk,
    ep: &Entry,
    slot: usize,
    mul: u64,
    room: usize,
    warnings: &mut Vec<String>,
) -> Vec<Slice> {
    let base = mul * u64::from(ep.start);
    let mut next = base;
    let mut out = Vec::new();
    let mut empty_run = 0u32;
    loop {
        let here = next;
        empty_run += 1;
        if empty_run > MAX_EMPTY_EBRS {
            return out;
        }
        let Ok(sector) = block(d, here) else {
            return out;
        };
        let Some(ebr) = Mbr::parse(&sector) else {
            return out;
        };
        let mut more = false;
        for p in &ebr.entries[..2] {
            if p.is_extended() {
                if p.start != 0 && p.sectors != 0 && !more {
                    next = base + mul * u64::from(p.start);
                    more = true;
                }
                continue;
            }
            if out.len() >= room {
                warnings.push("dos_extd_partition: too many slices".into());
                return out;
            }
            out.push(Slice {
                start: here + mul * u64::from(p.start),
                size: mul * u64::from(p.sectors),
                container: Some(slot),
            });
            empty_run = 0;
        }
        if !more {
            return out;
        }
    }
}
