//! The metadata area: a 512-byte header (`mda_header`: checksum, magic, version, start,
//! size, two raw locations) followed by a circular buffer of text metadata. Slot 0 locates
//! the committed text, slot 1 the precommitted one; new text goes after the old, aligned to
//! 512 bytes, wrapping to just past the header.

use super::{calc_crc, LvmError, INITIAL_CRC};

/// The metadata area header's magic.
pub const FMTT_MAGIC: [u8; 16] = *b" LVM2 x[5A%r0N*>";
/// The metadata area header version.
pub const FMTT_VERSION: u32 = 1;
/// Size of the header; the circular buffer starts here (relative to the area).
pub const MDA_HEADER_SIZE: u64 = 512;
/// Alignment of each metadata text copy in the buffer.
pub const MDA_ALIGNMENT: u64 = 512;
/// Raw location flag: this metadata area is ignored (`--metadataignore y`).
pub const RAW_LOCN_IGNORED: u32 = 0x1;

/// Where one copy of the text metadata lies in the circular buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawLocn {
    /// Offset of the text from the start of the metadata area.
    pub offset: u64,
    /// Text length in bytes, including its trailing NUL.
    pub size: u64,
    /// [`calc_crc`] of the text (over both pieces when it wraps).
    pub checksum: u32,
    pub flags: u32,
}

impl RawLocn {
    /// True when this slot points at nothing.
    pub fn is_empty(&self) -> bool {
        self.offset == 0 && self.size == 0
    }
    /// True when the ignored flag is set.
    pub fn is_ignored(&self) -> bool {
        self.flags & RAW_LOCN_IGNORED != 0
    }
}

/// A decoded metadata area header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdaHeader {
    /// Absolute byte offset of the metadata area on the PV.
    pub start: u64,
    /// Size of the whole area (header + buffer) in bytes.
    pub size: u64,
    /// Slot 0 (committed) and slot 1 (precommitted).
    pub raw_locns: [RawLocn; 2],
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl MdaHeader {
    /// An empty header for a new area (as pvcreate writes it).
    pub fn new(start: u64, size: u64) -> MdaHeader {
        MdaHeader {
            start,
            size,
            raw_locns: [RawLocn::default(); 2],
        }
    }

    /// Encode the 512-byte header with its checksum.
    pub fn encode(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[4..20].copy_from_slice(&FMTT_MAGIC);
        b[20..24].copy_from_slice(&FMTT_VERSION.to_le_bytes());
        b[24..32].copy_from_slice(&self.start.to_le_bytes());
        b[32..40].copy_from_slice(&self.size.to_le_bytes());
        for (i, r) in self.raw_locns.iter().enumerate() {
            let o = 40 + 24 * i;
            b[o..o + 8].copy_from_slice(&r.offset.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&r.size.to_le_bytes());
            b[o + 16..o + 20].copy_from_slice(&r.checksum.to_le_bytes());
            b[o + 20..o + 24].copy_from_slice(&r.flags.to_le_bytes());
        }
        let crc = calc_crc(INITIAL_CRC, &b[4..]);
        b[0..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and check a header read at absolute offset `start` (checksum, magic, version,
    /// recorded start, sane raw locations).
    pub fn decode(start: u64, b: &[u8]) -> Result<MdaHeader, LvmError> {
        let bad = |reason: String| LvmError::BadMdaHeader {
            offset: start,
            reason,
        };
        if b.len() < MDA_HEADER_SIZE as usize {
            return Err(bad("short read".into()));
        }
        let crc = calc_crc(INITIAL_CRC, &b[4..512]);
        if crc != u32_at(b, 0) {
            return Err(bad(format!(
                "incorrect checksum 0x{:08x} (computed 0x{crc:08x})",
                u32_at(b, 0)
            )));
        }
        if b[4..20] != FMTT_MAGIC {
            return Err(bad("wrong magic number".into()));
        }
        let version = u32_at(b, 20);
        if version != FMTT_VERSION {
            return Err(bad(format!("incompatible version {version}")));
        }
        let rec_start = u64_at(b, 24);
        if rec_start != start {
            return Err(bad(format!("incorrect start sector {}", rec_start / 512)));
        }
        let size = u64_at(b, 32);
        if size < 2 * MDA_HEADER_SIZE {
            return Err(bad(format!("area size {size} is too small")));
        }
        let mut raw_locns = [RawLocn::default(); 2];
        for (i, r) in raw_locns.iter_mut().enumerate() {
            let o = 40 + 24 * i;
            *r = RawLocn {
                offset: u64_at(b, o),
                size: u64_at(b, o + 8),
                checksum: u32_at(b, o + 16),
                flags: u32_at(b, o + 20),
            };
        }
        let h = MdaHeader {
            start,
            size,
            raw_locns,
        };
        for r in &h.raw_locns {
            if !r.is_empty() {
                h.check_locn(r).map_err(bad)?;
            }
        }
        Ok(h)
    }

    /// Why `r` cannot lie in this area, if it cannot.
    fn check_locn(&self, r: &RawLocn) -> Result<(), String> {
        if r.offset < MDA_HEADER_SIZE || r.offset >= self.size {
            return Err(format!("metadata offset {} is outside the area", r.offset));
        }
        if r.size == 0 || r.size > self.size - MDA_HEADER_SIZE {
            return Err(format!("metadata size {} does not fit the area", r.size));
        }
        Ok(())
    }

    /// The two pieces of the text at `r`: (offset, length) relative to the area, the second
    /// one starting just past the header when the text wraps.
    pub fn pieces(&self, r: &RawLocn) -> [(u64, u64); 2] {
        let end = r.offset + r.size;
        if end > self.size {
            let wrap = end - self.size;
            [(r.offset, r.size - wrap), (MDA_HEADER_SIZE, wrap)]
        } else {
            [(r.offset, r.size), (MDA_HEADER_SIZE, 0)]
        }
    }

    /// The largest text one copy may be: two copies must fit, each aligned to a sector.
    pub fn max_text_size(&self) -> u64 {
        ((self.size - MDA_HEADER_SIZE) / 2).saturating_sub(512)
    }

    /// Where the next copy of the metadata goes (relative offset): after the committed copy,
    /// rounded up to the next 512-byte boundary (a full step when already aligned), back at
    /// the start of the buffer when too close to the end.
    pub fn next_offset(&self) -> u64 {
        let old = self.raw_locns[0];
        if old.is_empty() || old.is_ignored() {
            return MDA_HEADER_SIZE;
        }
        let [(_, _), (wstart, wlen)] = self.pieces(&old);
        let old_last = if wlen > 0 {
            wstart + wlen - 1
        } else {
            old.offset + old.size - 1
        };
        if self.size - old_last < MDA_ALIGNMENT {
            return MDA_HEADER_SIZE;
        }
        let next = old_last + 1;
        let new_start = next + (MDA_ALIGNMENT - next % MDA_ALIGNMENT);
        if new_start > self.size - MDA_ALIGNMENT {
            return MDA_HEADER_SIZE;
        }
        new_start
    }

    /// A new raw location for `text` (with its NUL) after the committed copy; refuses text
    /// larger than [`MdaHeader::max_text_size`] so the committed copy is never overwritten.
    pub fn place(&self, vg: &str, text: &[u8]) -> Result<RawLocn, LvmError> {
        let size = text.len() as u64;
        if size > self.max_text_size() {
            return Err(LvmError::MetadataTooLarge {
                vg: vg.to_string(),
                size,
                max: self.max_text_size(),
            });
        }
        Ok(RawLocn {
            offset: self.next_offset(),
            size,
            checksum: calc_crc(INITIAL_CRC, text),
            flags: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let mut h = MdaHeader::new(4096, 1044480);
        h.raw_locns[0] = RawLocn {
            offset: 3072,
            size: 1544,
            checksum: 0xcc2f_a778,
            flags: 0,
        };
        let b = h.encode();
        assert_eq!(MdaHeader::decode(4096, &b).unwrap(), h);
        assert!(MdaHeader::decode(8192, &b).is_err());
        let mut d = b;
        d[45] ^= 0x40;
        assert!(MdaHeader::decode(4096, &d).is_err());
    }

    #[test]
    fn next_offset_follows_lvm2_rules() {
        let mut h = MdaHeader::new(4096, 8192);
        assert_eq!(h.next_offset(), 512);
        // 512..2055 used → next is 2560; exactly aligned end still steps a full sector.
        h.raw_locns[0] = RawLocn {
            offset: 512,
            size: 1544,
            checksum: 0,
            flags: 0,
        };
        assert_eq!(h.next_offset(), 2560);
        h.raw_locns[0] = RawLocn {
            offset: 512,
            size: 1536,
            checksum: 0,
            flags: 0,
        };
        assert_eq!(h.next_offset(), 2560);
        // Near the end: back to the start of the buffer.
        h.raw_locns[0] = RawLocn {
            offset: 7168,
            size: 600,
            checksum: 0,
            flags: 0,
        };
        assert_eq!(h.next_offset(), 512);
        // A wrapped copy: the next goes after its tail.
        h.raw_locns[0] = RawLocn {
            offset: 7680,
            size: 1000,
            checksum: 0,
            flags: 0,
        };
        assert_eq!(h.pieces(&h.raw_locns[0]), [(7680, 512), (512, 488)]);
        assert_eq!(h.next_offset(), 1024);
        assert_eq!(h.max_text_size(), 3328);
        assert!(h.place("vg", &[b'x'; 4000]).is_err());
    }
}
