//! The LVM2 label (`LABELONE` in one of the first four sectors) and the PV header behind it:
//! PV uuid, device size, data areas, metadata areas, and the extension (version 2: flags and
//! bootloader areas). All integers are little-endian.

use super::{calc_crc, LvmError, INITIAL_CRC, SECTOR_SIZE};
use std::fmt;
use std::str::FromStr;

/// The label id at the start of the label sector.
pub const LABEL_ID: [u8; 8] = *b"LABELONE";
/// The label type of the lvm2 text format.
pub const LABEL_TYPE: [u8; 8] = *b"LVM2 001";
/// Sectors scanned for a label (0..LABEL_SCAN_SECTORS).
pub const LABEL_SCAN_SECTORS: u64 = 4;
/// The sector pvcreate writes the label to.
pub const LABEL_SECTOR: u64 = 1;
/// Size of the label header; the PV header follows at this offset.
pub const LABEL_HEADER_SIZE: u32 = 32;
/// The PV header extension version lvm2 2.02.x+/2.03 writes.
pub const PV_HEADER_EXTENSION_VSN: u32 = 2;
/// Extension flag: the PV belongs to a VG.
pub const PV_EXT_USED: u32 = 0x1;
/// Length of an LVM id (PV, VG, LV uuid) without dashes.
pub const ID_LEN: usize = 32;

const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#";

/// An LVM id: 32 characters, printed in groups 6-4-4-4-4-4-6 joined by dashes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LvmId(pub [u8; ID_LEN]);

impl LvmId {
    /// A new random id (alphanumeric characters only, as lvm2 makes them).
    pub fn random() -> LvmId {
        let mut raw = [0u8; ID_LEN];
        getrandom::getrandom(&mut raw).expect("the OS random source failed");
        for b in raw.iter_mut() {
            *b = ID_CHARS[(*b as usize) % 62];
        }
        LvmId(raw)
    }

    /// The id from its 32 raw bytes, checked against lvm2's id alphabet.
    pub fn from_raw(raw: &[u8]) -> Result<LvmId, LvmError> {
        let arr: [u8; ID_LEN] = raw
            .try_into()
            .map_err(|_| LvmError::Invalid(format!("id must be {ID_LEN} characters")))?;
        if let Some(b) = arr.iter().find(|b| !ID_CHARS.contains(b)) {
            return Err(LvmError::Invalid(format!(
                "id contains invalid character 0x{b:02x}"
            )));
        }
        Ok(LvmId(arr))
    }
}

impl fmt::Display for LvmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = std::str::from_utf8(&self.0).unwrap_or("?");
        let mut pos = 0;
        for (i, n) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(s.get(pos..pos + n).unwrap_or(""))?;
            pos += n;
        }
        Ok(())
    }
}

impl fmt::Debug for LvmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LvmId({self})")
    }
}

impl FromStr for LvmId {
    type Err = LvmError;
    fn from_str(s: &str) -> Result<LvmId, LvmError> {
        let raw: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
        LvmId::from_raw(&raw)
    }
}

/// An area on the PV: offset and size in bytes (`disk_locn`). Size 0 means "to the end".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLocn {
    pub offset: u64,
    pub size: u64,
}

/// The PV header with its extension, as found in the label sector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvHeader {
    /// The sector holding the label (0..3).
    pub label_sector: u64,
    pub pv_uuid: LvmId,
    /// Device size in bytes as recorded when the label was written.
    pub device_size: u64,
    pub data_areas: Vec<DiskLocn>,
    pub metadata_areas: Vec<DiskLocn>,
    /// Extension version (0: no extension, as lvm2 before 2.02.110 wrote).
    pub ext_version: u32,
    pub ext_flags: u32,
    pub bootloader_areas: Vec<DiskLocn>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl PvHeader {
    /// Encode the label sector (512 bytes) with its checksum.
    pub fn encode(&self) -> Result<[u8; 512], LvmError> {
        let mut s = [0u8; 512];
        s[0..8].copy_from_slice(&LABEL_ID);
        s[8..16].copy_from_slice(&self.label_sector.to_le_bytes());
        s[20..24].copy_from_slice(&LABEL_HEADER_SIZE.to_le_bytes());
        s[24..32].copy_from_slice(&LABEL_TYPE);
        let mut o = LABEL_HEADER_SIZE as usize;
        s[o..o + ID_LEN].copy_from_slice(&self.pv_uuid.0);
        o += ID_LEN;
        s[o..o + 8].copy_from_slice(&self.device_size.to_le_bytes());
        o += 8;
        let lists: &[&[DiskLocn]] = if self.ext_version == 0 {
            &[&self.data_areas, &self.metadata_areas]
        } else {
            &[&self.data_areas, &self.metadata_areas, &[]]
        };
        for (i, list) in lists.iter().enumerate() {
            if i == 2 {
                if o + 8 > 512 {
                    return Err(LvmError::BadPvHeader(
                        "too many areas for one sector".into(),
                    ));
                }
                s[o..o + 4].copy_from_slice(&self.ext_version.to_le_bytes());
                s[o + 4..o + 8].copy_from_slice(&self.ext_flags.to_le_bytes());
                o += 8;
            }
            let list = if i == 2 {
                &self.bootloader_areas[..]
            } else {
                list
            };
            if o + 16 * (list.len() + 1) > 512 {
                return Err(LvmError::BadPvHeader(
                    "too many areas for one sector".into(),
                ));
            }
            for a in list {
                if a.offset == 0 {
                    return Err(LvmError::BadPvHeader(
                        "an area cannot start at offset 0".into(),
                    ));
                }
                s[o..o + 8].copy_from_slice(&a.offset.to_le_bytes());
                s[o + 8..o + 16].copy_from_slice(&a.size.to_le_bytes());
                o += 16;
            }
            o += 16; // the zero terminator
        }
        let crc = calc_crc(INITIAL_CRC, &s[20..]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        Ok(s)
    }

    /// Decode a label sector read from sector `sector`: the label header is checked (id,
    /// sector number, checksum, type) before the PV header is read.
    pub fn decode(sector: u64, s: &[u8]) -> Result<PvHeader, LvmError> {
        let bad = |reason: &str| LvmError::BadLabel {
            sector,
            reason: reason.to_string(),
        };
        if s.len() < 512 {
            return Err(bad("short sector"));
        }
        let s = &s[..512];
        if s[0..8] != LABEL_ID {
            return Err(bad("no LABELONE id"));
        }
        if u64_at(s, 8) != sector {
            return Err(bad(&format!(
                "label records sector {} but was found in sector {sector}",
                u64_at(s, 8)
            )));
        }
        let crc = calc_crc(INITIAL_CRC, &s[20..]);
        if crc != u32_at(s, 16) {
            return Err(bad(&format!(
                "checksum 0x{:08x} does not match 0x{crc:08x}",
                u32_at(s, 16)
            )));
        }
        if s[24..32] != LABEL_TYPE {
            return Err(bad(&format!(
                "unknown label type {:?}",
                String::from_utf8_lossy(&s[24..32])
            )));
        }
        let mut o = u32_at(s, 20) as usize;
        if !(LABEL_HEADER_SIZE as usize..=512 - ID_LEN - 8 - 32).contains(&o) {
            return Err(bad(&format!("PV header offset {o} is out of the sector")));
        }
        let pv_uuid = LvmId::from_raw(&s[o..o + ID_LEN])
            .map_err(|e| LvmError::BadPvHeader(format!("PV uuid: {e}")))?;
        o += ID_LEN;
        let device_size = u64_at(s, o);
        o += 8;
        let list = |o: &mut usize| -> Result<Vec<DiskLocn>, LvmError> {
            let mut v = Vec::new();
            loop {
                if *o + 16 > 512 {
                    return Err(LvmError::BadPvHeader(
                        "area list runs past the label sector".into(),
                    ));
                }
                let a = DiskLocn {
                    offset: u64_at(s, *o),
                    size: u64_at(s, *o + 8),
                };
                *o += 16;
                if a.offset == 0 {
                    return Ok(v);
                }
                v.push(a);
            }
        };
        let data_areas = list(&mut o)?;
        let metadata_areas = list(&mut o)?;
        let (mut ext_version, mut ext_flags, mut bootloader_areas) = (0, 0, Vec::new());
        if o + 8 <= 512 {
            ext_version = u32_at(s, o);
            if ext_version != 0 {
                ext_flags = u32_at(s, o + 4);
                o += 8;
                bootloader_areas = list(&mut o)?;
            }
        }
        Ok(PvHeader {
            label_sector: sector,
            pv_uuid,
            device_size,
            data_areas,
            metadata_areas,
            ext_version,
            ext_flags,
            bootloader_areas,
        })
    }

    /// Find and decode the label in the first four sectors (`head` holds at least 2048
    /// bytes). A sector with `LABELONE` whose header is damaged is an error, as in lvm2.
    pub fn find(head: &[u8]) -> Result<PvHeader, LvmError> {
        for sector in 0..LABEL_SCAN_SECTORS {
            let o = (sector * SECTOR_SIZE) as usize;
            let Some(s) = head.get(o..o + SECTOR_SIZE as usize) else {
                break;
            };
            if s[0..8] == LABEL_ID {
                return PvHeader::decode(sector, s);
            }
        }
        Err(LvmError::NoLabel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_text_form_round_trips() {
        let id: LvmId = "vMHcLQ-7Hlf-5pbq-7Emk-W007-sonM-xF4DPV".parse().unwrap();
        assert_eq!(&id.0, b"vMHcLQ7Hlf5pbq7EmkW007sonMxF4DPV");
        assert_eq!(id.to_string(), "vMHcLQ-7Hlf-5pbq-7Emk-W007-sonM-xF4DPV");
        assert!("short".parse::<LvmId>().is_err());
        assert!("vMHcLQ-7Hlf-5pbq-7Emk-W007-sonM-xF4DP?"
            .parse::<LvmId>()
            .is_err());
    }

    #[test]
    fn header_round_trips_and_checks_crc() {
        let h = PvHeader {
            label_sector: 1,
            pv_uuid: LvmId::random(),
            device_size: 64 << 20,
            data_areas: vec![DiskLocn {
                offset: 1 << 20,
                size: 0,
            }],
            metadata_areas: vec![DiskLocn {
                offset: 4096,
                size: (1 << 20) - 4096,
            }],
            ext_version: 2,
            ext_flags: PV_EXT_USED,
            bootloader_areas: vec![],
        };
        let mut head = vec![0u8; 2048];
        head[512..1024].copy_from_slice(&h.encode().unwrap());
        assert_eq!(PvHeader::find(&head).unwrap(), h);
        head[600] ^= 1;
        assert!(matches!(
            PvHeader::find(&head),
            Err(LvmError::BadLabel { sector: 1, .. })
        ));
    }
}
