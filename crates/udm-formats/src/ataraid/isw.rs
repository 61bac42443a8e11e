//! Intel Matrix Storage (IMSM, dmraid's `isw`) metadata: the MPB ("Intel Raid ISM Cfg Sig. ")
//! whose first sector sits in the disk's second-to-last sector, with any extended sectors just
//! before it; a disk table (serial, size, status) and the RAID volumes with their maps.
//! Little-endian; a 32-bit additive checksum over `mpb_size` bytes excluding itself.

use super::AtaraidError;
use crate::part::Disk;

/// The MPB's signature prefix (a version string follows it).
pub const SIGNATURE: &[u8] = b"Intel Raid ISM Cfg Sig. ";
/// The length of a disk serial in the MPB.
pub const SERIAL_LEN: usize = 16;
/// The largest MPB we accept (bounds reads from hostile metadata).
pub const MAX_MPB_SIZE: u32 = 128 * 1024;

const DISK_TABLE: usize = 0xd8;
const DISK_SIZE: usize = 48;
const DEV_HEAD: usize = 112;
const MAP_HEAD: usize = 48;

/// Disk status bits (`status` in the disk table).
pub mod status {
    /// A spare.
    pub const SPARE: u32 = 0x01;
    /// A member of some volume.
    pub const CONFIGURED: u32 = 0x02;
    /// Permanently failed.
    pub const FAILED: u32 = 0x04;
    /// Usable unless failed.
    pub const USABLE: u32 = 0x08;
}

/// One disk-table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IswDisk {
    /// The serial as stored (NUL padding removed).
    pub serial: String,
    /// Total blocks (512-byte sectors).
    pub total_blocks: u32,
    /// SCSI id.
    pub scsi_id: u32,
    /// Status bits ([`status`]).
    pub status: u32,
}

impl IswDisk {
    /// dmraid's verdict: configured or usable, and not failed.
    pub fn ok(&self) -> bool {
        self.status & (status::CONFIGURED | status::USABLE) != 0
            && self.status & status::FAILED == 0
    }
}

/// A volume's (first) map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IswMap {
    /// Start of the volume's segment on each member (sectors).
    pub pba_of_lba0: u32,
    /// Sectors per member.
    pub blocks_per_member: u32,
    /// Data stripes.
    pub num_data_stripes: u32,
    /// Chunk size in sectors.
    pub blocks_per_strip: u16,
    /// Normal 0, uninitialised 1, degraded 2, failed 3.
    pub map_state: u8,
    /// 0 raid0, 1 raid1, 2 raid10, 5 raid5.
    pub raid_level: u8,
    /// Members in the map.
    pub num_members: u8,
    /// Domains (2 for raid1/raid10).
    pub num_domains: u8,
    /// Failed member index (255: none).
    pub failed_disk_num: u8,
    /// Disk-table indexes of the members in stripe order (low 24 bits of the ord table).
    pub members: Vec<u32>,
}

/// A RAID volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IswDev {
    /// The volume name as stored (NUL padding removed).
    pub volume: String,
    /// Size in sectors.
    pub size: u64,
    /// Persistent status bits.
    pub status: u32,
    /// Migration in progress (a second map follows).
    pub migr_state: u8,
    /// Dirty flag.
    pub dirty: u8,
    /// The current map.
    pub map: IswMap,
}

/// A parsed MPB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isw {
    /// The version string after the signature ("1.0.00" …).
    pub version: String,
    /// Stored checksum.
    pub checksum: u32,
    /// MPB size in bytes.
    pub mpb_size: u32,
    /// The family number (names the set).
    pub family_num: u32,
    /// Generation number.
    pub generation_num: u32,
    /// Attributes.
    pub attributes: u32,
    /// The disk table.
    pub disks: Vec<IswDisk>,
    /// The volumes.
    pub devs: Vec<IswDev>,
    /// Byte offset of the MPB's first sector on the disk.
    pub offset: u64,
}

fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The MPB's checksum: the 32-bit wrapping sum of its words, the checksum field excluded.
pub fn checksum(mpb: &[u8]) -> u32 {
    let words = mpb.len() / 4;
    let sum = (0..words).fold(0u32, |s, i| s.wrapping_add(u32le(mpb, i * 4)));
    sum.wrapping_sub(u32le(mpb, 0x20))
}

impl Isw {
    /// Decode an MPB from its bytes (first sector first, then the extended sectors).
    pub fn parse(mpb: &[u8], offset: u64) -> Result<Isw, AtaraidError> {
        let bad = |why: &str| AtaraidError::Corrupt {
            format: "isw",
            why: why.to_string(),
        };
        if mpb.len() < DISK_TABLE || !mpb.starts_with(SIGNATURE) {
            return Err(AtaraidError::NotFound("isw"));
        }
        let mpb_size = u32le(mpb, 0x24);
        if (mpb_size as usize) < DISK_TABLE || mpb_size as usize > mpb.len() {
            return Err(bad("mpb_size out of range"));
        }
        let body = &mpb[..mpb_size as usize];
        let stored = u32le(body, 0x20);
        if checksum(body) != stored {
            return Err(bad("checksum mismatch"));
        }
        let num_disks = body[0x38] as usize;
        let num_devs = body[0x39] as usize;
        let mut disks = Vec::with_capacity(num_disks);
        for i in 0..num_disks {
            let o = DISK_TABLE + i * DISK_SIZE;
            let d = body
                .get(o..o + DISK_SIZE)
                .ok_or_else(|| bad("disk table past mpb_size"))?;
            disks.push(IswDisk {
                serial: cstr(&d[..SERIAL_LEN]),
                total_blocks: u32le(d, 16),
                scsi_id: u32le(d, 20),
                status: u32le(d, 24),
            });
        }
        let mut o = DISK_TABLE + num_disks * DISK_SIZE;
        let mut devs = Vec::with_capacity(num_devs);
        for _ in 0..num_devs {
            let head = body
                .get(o..o + DEV_HEAD + MAP_HEAD)
                .ok_or_else(|| bad("volume past mpb_size"))?;
            let m = &head[DEV_HEAD..];
            let num_members = m[16];
            let ord_at = o + DEV_HEAD + MAP_HEAD;
            let ord_len = 4 * num_members as usize;
            let ord = body
                .get(ord_at..ord_at + ord_len)
                .ok_or_else(|| bad("ord table past mpb_size"))?;
            let members = (0..num_members as usize)
                .map(|k| u32le(ord, 4 * k) & 0x00ff_ffff)
                .collect();
            let migr_state = head[88];
            let map_len = MAP_HEAD + 4 * (num_members.max(1) as usize);
            devs.push(IswDev {
                volume: cstr(&head[..SERIAL_LEN]),
                size: u64::from(u32le(head, 16)) | (u64::from(u32le(head, 20)) << 32),
                status: u32le(head, 24),
                migr_state,
                dirty: head[90],
                map: IswMap {
                    pba_of_lba0: u32le(m, 0),
                    blocks_per_member: u32le(m, 4),
                    num_data_stripes: u32le(m, 8),
                    blocks_per_strip: u16le(m, 12),
                    map_state: m[14],
                    raid_level: m[15],
                    num_members,
                    num_domains: m[17],
                    failed_disk_num: m[18],
                    members,
                },
            });
            o += DEV_HEAD + map_len * if migr_state != 0 { 2 } else { 1 };
        }
        Ok(Isw {
            version: cstr(&body[SIGNATURE.len()..SIGNATURE.len() + 6]),
            checksum: stored,
            mpb_size,
            family_num: u32le(body, 0x28),
            generation_num: u32le(body, 0x2c),
            attributes: u32le(body, 0x34),
            disks,
            devs,
            offset,
        })
    }

    /// Read the MPB from a disk: its first sector at `size - 2` sectors, extended sectors before.
    pub fn read(disk: &mut dyn Disk) -> Result<Isw, AtaraidError> {
        let sectors = disk.size() / 512;
        if sectors < 3 {
            return Err(AtaraidError::NotFound("isw"));
        }
        let first_at = (sectors - 2) * 512;
        let mut first = vec![0u8; 512];
        disk.read_at(first_at, &mut first)
            .map_err(|e| AtaraidError::Io {
                offset: first_at,
                source: e,
            })?;
        if !first.starts_with(SIGNATURE) {
            return Err(AtaraidError::NotFound("isw"));
        }
        let mpb_size = u32le(&first, 0x24);
        if mpb_size > MAX_MPB_SIZE {
            return Err(AtaraidError::Corrupt {
                format: "isw",
                why: format!("mpb_size {mpb_size} too large"),
            });
        }
        let blocks = (u64::from(mpb_size)).div_ceil(512).max(1);
        if blocks > sectors - 2 {
            return Err(AtaraidError::Corrupt {
                format: "isw",
                why: "mpb larger than the disk".into(),
            });
        }
        let mut all = first;
        if blocks > 1 {
            let ext_at = first_at - (blocks - 1) * 512;
            let mut ext = vec![0u8; ((blocks - 1) * 512) as usize];
            disk.read_at(ext_at, &mut ext)
                .map_err(|e| AtaraidError::Io {
                    offset: ext_at,
                    source: e,
                })?;
            all.extend_from_slice(&ext);
        }
        Isw::parse(&all, first_at)
    }

    /// The index of the disk-table entry with `serial` (dmraid's rule: whitespace removed,
    /// `:` read as `;`, the last 16 characters kept).
    pub fn disk_index(&self, serial: &str) -> Option<usize> {
        let s: String = serial
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| if c == ':' { ';' } else { c })
            .collect();
        let s = if s.len() > SERIAL_LEN {
            &s[s.len() - SERIAL_LEN..]
        } else {
            &s[..]
        };
        self.disks.iter().position(|d| d.serial == s)
    }

    /// dmraid's set name: `isw_` and the family number's decimal digits spelled as letters.
    pub fn group_name(&self) -> String {
        let digits: String = self
            .family_num
            .to_string()
            .chars()
            .map(|c| (c as u8 - b'0' + b'a') as char)
            .collect();
        format!("isw_{digits}")
    }

    /// A volume's set name: the group name, `_`, the volume name made alphanumeric.
    pub fn volume_name(&self, dev: &IswDev) -> String {
        let vol: String = dev
            .volume
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}_{}", self.group_name(), vol)
    }
}
