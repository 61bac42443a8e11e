//! SNIA DDF 1.x metadata (dmraid's `ddf1`): the anchor header in the disk's last sector
//! (magic 0xDE11DE11, big-endian; a byte-swapped magic means little-endian), the primary
//! header at `primary_table_lba`, and the sections it locates (sector offsets from that LBA):
//! physical disk records, virtual disk records, configuration records (one per virtual disk
//! and member disk set: element count, stripe size, RAID level, per-member sectors, then the
//! members' references and their start LBAs) and this disk's own data (its reference).
//! Every header and section carries a CRC: the reflected CRC-32 polynomial with a zero seed
//! and no final inversion (as mdadm computes it), over the block with its CRC field all ones.

use super::{set_status, AtaraidError, Set, SetDev, SetKind};
use crate::part::Disk;

/// The header magic.
pub const HEADER_MAGIC: u32 = 0xDE11_DE11;
const PD_MAGIC: u32 = 0x2222_2222;
const VD_MAGIC: u32 = 0xDDDD_DDDD;
const CR_MAGIC: u32 = 0xEEEE_EEEE;
const DISK_DATA_MAGIC: u32 = 0x3333_3333;
/// The largest metadata section we read (bounds hostile lengths).
pub const MAX_SECTION: u64 = 4 << 20;
/// dmraid's group name for DDF disks.
pub const GROUP: &str = ".ddf1_disks";

/// A physical disk record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysDisk {
    /// GUID.
    pub guid: [u8; 24],
    /// Reference number (what config records name).
    pub reference: u32,
    /// State bits (bit 1: failed).
    pub state: u16,
    /// Configured size in sectors.
    pub size: u64,
}

/// A virtual disk record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtDisk {
    /// GUID (config records name it).
    pub guid: [u8; 24],
    /// State (low 3 bits: 0 optimal, 1 degraded, …).
    pub state: u8,
    /// Init state (low 2 bits: 2 fully initialised).
    pub init_state: u8,
    /// Name (16 bytes, may be empty).
    pub name: [u8; 16],
}

/// A virtual disk configuration record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The virtual disk's GUID.
    pub guid: [u8; 24],
    /// Members in this record.
    pub primary_element_count: u16,
    /// Stripe size: 2^n sectors.
    pub stripe_size: u8,
    /// 0 raid0, 1 raid1, 5 raid5, 0x1f concat, 0x0f jbod, …
    pub raid_level: u8,
    /// RAID level qualifier (raid5: 0 parity 0 with data restart, 2 parity N with data
    /// restart, 3 parity N with data continuation).
    pub raid_qualifier: u8,
    /// Sectors each member gives.
    pub sectors: u64,
    /// The members' references, in element order (0xffffffff: empty).
    pub refs: Vec<u32>,
    /// Each member's start LBA.
    pub offsets: Vec<u64>,
}

/// One disk's DDF metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ddf1 {
    /// Big-endian (false: the byte-swapped variant).
    pub big_endian: bool,
    /// Start of the primary metadata (sectors).
    pub primary_lba: u64,
    /// Physical disk records.
    pub pds: Vec<PhysDisk>,
    /// Virtual disk records.
    pub vds: Vec<VirtDisk>,
    /// Configuration records.
    pub configs: Vec<Config>,
    /// This disk's reference.
    pub reference: u32,
}

struct Rd<'a> {
    b: &'a [u8],
    be: bool,
}

impl Rd<'_> {
    fn u16(&self, o: usize) -> u16 {
        let a = [self.b[o], self.b[o + 1]];
        if self.be {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }
    fn u32(&self, o: usize) -> u32 {
        let a = [self.b[o], self.b[o + 1], self.b[o + 2], self.b[o + 3]];
        if self.be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }
    fn u64(&self, o: usize) -> u64 {
        let hi = u64::from(self.u32(o));
        let lo = u64::from(self.u32(o + 4));
        if self.be {
            hi << 32 | lo
        } else {
            lo << 32 | hi
        }
    }
}

fn bad(why: impl Into<String>) -> AtaraidError {
    AtaraidError::Corrupt {
        format: "ddf1",
        why: why.into(),
    }
}

/// The DDF CRC of a block (at least 8 bytes): the reflected CRC-32 polynomial, seed 0, no
/// final inversion, with the CRC field (bytes 4..8) taken as all ones.
pub fn block_crc(b: &[u8]) -> u32 {
    b.iter().enumerate().fold(0u32, |mut c, (i, &x)| {
        c ^= u32::from(if (4..8).contains(&i) { 0xff } else { x });
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
        c
    })
}

fn check(b: &[u8], be: bool, magic: u32, what: &str) -> Result<(), AtaraidError> {
    let r = Rd { b, be };
    if b.len() < 8 || r.u32(0) != magic {
        return Err(bad(format!("{what}: bad signature")));
    }
    if block_crc(b) != r.u32(4) {
        return Err(bad(format!("{what}: CRC mismatch")));
    }
    Ok(())
}

fn read(disk: &mut dyn Disk, sector: u64, sectors: u64) -> Result<Vec<u8>, AtaraidError> {
    if sectors * 512 > MAX_SECTION {
        return Err(bad("section too large"));
    }
    let offset = sector
        .checked_mul(512)
        .ok_or_else(|| bad("LBA out of range"))?;
    if offset.saturating_add(sectors * 512) > disk.size() {
        return Err(bad("section past the end of the disk"));
    }
    let mut b = vec![0u8; (sectors * 512) as usize];
    disk.read_at(offset, &mut b)
        .map_err(|source| AtaraidError::Io { offset, source })?;
    Ok(b)
}

fn guid(b: &[u8]) -> [u8; 24] {
    let mut g = [0u8; 24];
    g.copy_from_slice(&b[..24]);
    g
}

impl Ddf1 {
    /// Read a disk's DDF metadata (anchor, primary header, sections; CRCs checked).
    pub fn read(disk: &mut dyn Disk) -> Result<Ddf1, AtaraidError> {
        let sectors = disk.size() / 512;
        if sectors < 2 {
            return Err(AtaraidError::NotFound("ddf1"));
        }
        let anchor = read(disk, sectors - 1, 1)?;
        let be = match u32::from_be_bytes([anchor[0], anchor[1], anchor[2], anchor[3]]) {
            HEADER_MAGIC => true,
            m if m == HEADER_MAGIC.swap_bytes() => false,
            _ => return Err(AtaraidError::NotFound("ddf1")),
        };
        check(&anchor, be, HEADER_MAGIC, "anchor header")?;
        let a = Rd { b: &anchor, be };
        let primary_lba = a.u64(96);
        if primary_lba >= sectors {
            return Err(bad("primary header past the end of the disk"));
        }
        let hb = read(disk, primary_lba, 1)?;
        check(&hb, be, HEADER_MAGIC, "primary header")?;
        let h = Rd { b: &hb, be };
        let max_pds = h.u16(128) as usize;
        let cr_len = u64::from(h.u16(134));
        let mppe = match h.u16(136) {
            0xffff => max_pds,
            n => n as usize,
        };
        let section = |disk: &mut dyn Disk, at: usize| -> Result<Vec<u8>, AtaraidError> {
            let (off, len) = (u64::from(h.u32(at)), u64::from(h.u32(at + 4)));
            read(disk, primary_lba + off, len)
        };
        // Physical disks.
        let pb = section(disk, 200)?;
        let n = Rd { b: &pb, be }.u16(8) as usize;
        let rec_end = 64 + 64 * n;
        if rec_end > pb.len() {
            return Err(bad("physical disk records past their section"));
        }
        check(&pb, be, PD_MAGIC, "physical disk records")?;
        let p = Rd { b: &pb, be };
        let pds = (0..n)
            .map(|i| {
                let o = 64 + 64 * i;
                PhysDisk {
                    guid: guid(&pb[o..]),
                    reference: p.u32(o + 24),
                    state: p.u16(o + 30),
                    size: p.u64(o + 32),
                }
            })
            .collect();
        // Virtual disks.
        let vb = section(disk, 208)?;
        let n = Rd { b: &vb, be }.u16(8) as usize;
        if 64 + 64 * n > vb.len() {
            return Err(bad("virtual disk records past their section"));
        }
        check(&vb, be, VD_MAGIC, "virtual disk records")?;
        let vds = (0..n)
            .map(|i| {
                let o = 64 + 64 * i;
                let mut name = [0u8; 16];
                name.copy_from_slice(&vb[o + 48..o + 64]);
                VirtDisk {
                    guid: guid(&vb[o..]),
                    state: vb[o + 32],
                    init_state: vb[o + 33],
                    name,
                }
            })
            .collect();
        // Configuration records: one every `cr_len` sectors; the VD ones checked and kept.
        let cb = section(disk, 216)?;
        let mut configs = Vec::new();
        let rec = (cr_len * 512) as usize;
        if rec >= 512 + 12 * mppe {
            for chunk in cb.chunks_exact(rec) {
                let c = Rd { b: chunk, be };
                if c.u32(0) != CR_MAGIC {
                    continue;
                }
                check(chunk, be, CR_MAGIC, "configuration record")?;
                configs.push(Config {
                    guid: guid(&chunk[8..]),
                    primary_element_count: c.u16(64),
                    stripe_size: chunk[66],
                    raid_level: chunk[67],
                    raid_qualifier: chunk[68],
                    sectors: c.u64(72),
                    refs: (0..mppe).map(|i| c.u32(512 + 4 * i)).collect(),
                    offsets: (0..mppe).map(|i| c.u64(512 + 4 * mppe + 8 * i)).collect(),
                });
            }
        }
        // This disk.
        let db = section(disk, 224)?;
        check(&db, be, DISK_DATA_MAGIC, "disk data")?;
        let reference = Rd { b: &db, be }.u32(32);
        Ok(Ddf1 {
            big_endian: be,
            primary_lba,
            pds,
            vds,
            configs,
            reference,
        })
    }

    /// This disk's physical disk record.
    pub fn this_disk(&self) -> Option<&PhysDisk> {
        self.pds.iter().find(|p| p.reference == self.reference)
    }

    /// dmraid `-r`'s line for this disk.
    pub fn raid_dev_line(&self, path: &str) -> String {
        let (ok, size) = match self.this_disk() {
            Some(p) => (if p.state & 0x02 == 0 { "ok" } else { "broken" }, p.size),
            None => ("broken", 0),
        };
        format!("{path}: ddf1, \"{GROUP}\", GROUP, {ok}, {size} sectors, data@ 0")
    }

    /// dmraid's set name for a virtual disk: `ddf1_` and its name (trailing blanks cut,
    /// made alphanumeric), or its GUID in hex when unnamed.
    pub fn set_name(vd: &VirtDisk) -> String {
        if vd.name[0] != 0 {
            let end = vd
                .name
                .iter()
                .rposition(|c| c.is_ascii_graphic())
                .map_or(0, |i| i + 1);
            let n: String = vd.name[..end]
                .iter()
                .map(|&c| {
                    if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
                        c as char
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("ddf1_{n}")
        } else {
            let hex: String = vd.guid.iter().map(|b| format!("{b:02x}")).collect();
            format!("ddf1_{hex}")
        }
    }
}

/// Group DDF disks (path, metadata) into sets: one per virtual disk (in record order),
/// members in element order, each at its start LBA; members clamped to whole stripes (but
/// raid1's) as dmraid does. raid5 maps by its RAID level qualifier to md's layout; levels
/// dmraid cannot map (raid6, concat, …) are listed as `unknown`.
pub fn ddf1_sets(disks: &[(String, Ddf1)]) -> Result<Vec<Set>, AtaraidError> {
    let mut sets: Vec<Set> = Vec::new();
    for (_, meta) in disks {
        // In virtual disk record order, as dmraid lists them.
        for vd in &meta.vds {
            let Some(cr) = meta.configs.iter().find(|c| c.guid == vd.guid) else {
                continue;
            };
            let name = Ddf1::set_name(vd);
            if sets.iter().any(|s| s.name == name) {
                continue;
            }
            let kind = match (cr.raid_level, cr.raid_qualifier) {
                (0x00, _) => SetKind::Stripe,
                (0x01, _) => SetKind::Mirror,
                // md's equivalents (mdadm's DDF mapping).
                (0x05, 3) => SetKind::Raid5Ls,
                (0x05, 2) => SetKind::Raid5La,
                (0x05, 0) => SetKind::Raid5Ra,
                _ => SetKind::Unknown,
            };
            // dmraid shows (and tables) a stride for every level but raid1.
            let stride = if kind == SetKind::Mirror {
                0
            } else {
                1u64 << cr.stripe_size.min(30)
            };
            let sectors = cr.sectors - cr.sectors % stride.max(1);
            let mut devs = Vec::new();
            let mut slots = Vec::new();
            for (i, r) in cr
                .refs
                .iter()
                .enumerate()
                .take(cr.primary_element_count as usize)
            {
                if let Some((path, _)) = disks.iter().find(|(_, m)| m.reference == *r) {
                    slots.push(i);
                    devs.push(SetDev {
                        path: path.clone(),
                        offset: cr.offsets[i],
                        sectors,
                    });
                }
            }
            let word = match (vd.state & 7, vd.init_state & 3) {
                (0, 2) => "ok",
                (0, _) => "nosync",
                _ => "inconsistent",
            };
            let expected = cr.primary_element_count as usize;
            let status = set_status(kind, devs.len(), expected, word);
            sets.push(Set {
                format: "ddf1",
                slots,
                group: GROUP.to_string(),
                name,
                kind,
                stride,
                devs,
                expected,
                status,
            });
        }
    }
    Ok(sets)
}
