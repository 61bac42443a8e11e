//! ATARAID (firmware/"fake" RAID) metadata as dmraid reads it: Intel Matrix ([`isw`]) and
//! SNIA DDF1 ([`ddf1`]). [`isw_sets`] and [`ddf1::ddf1_sets`] group members into dmraid's
//! RAID sets and [`Set::table`] writes the device-mapper table dmraid activates for a set
//! (`striped` for raid0, `mirror` with a core log for raid1, `linear` for one member, the
//! upstream `raid` target for raid5).
//!
//! raid5 sets: dmraid 1.0.0.rc16 as Debian ships it writes
//! `raid <type> 4 <chunk> nosync|sync region_size <R> <n> - <dev>…` (no metadata devices,
//! no per-device offsets) with `R` from its mirror rule, which is often smaller than the
//! chunk: the 6.1 kernel refuses such a line ("Region size is smaller than the chunk size"),
//! so the table here raises `R` to the chunk size and is otherwise dmraid's. A set with one
//! member missing (two for raid6) gets `- -` in that slot and `nosync` (md will not start a
//! dirty degraded array; the metadata says the parity was consistent), where dmraid would
//! name an error-target device; more missing members, or a volume that does not start at
//! sector 0 of its members (the raid target has no per-device offset), are refused with
//! dmraid's messages. Layouts: Intel raid5 is md's left-asymmetric (`raid5_la`); DDF's RAID
//! level qualifier 3 (rotating parity N with data continuation) is left-symmetric
//! (`raid5_ls`), 2 (parity N, data restart) left-asymmetric, 0 (parity 0, data restart)
//! right-asymmetric (`raid5_ra`), as mdadm maps them.
//!
//! Hostile bytes never panic: every count and length read from a disk is bounded first.

pub mod ddf1;
pub mod isw;

use crate::part::Disk;
pub use isw::Isw;

/// Why ATARAID metadata could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AtaraidError {
    /// Reading the disk failed.
    #[error("read error at byte {offset}: {source}")]
    Io {
        /// Byte offset of the failed read.
        offset: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No metadata of this format on the disk.
    #[error("no {0} metadata")]
    NotFound(&'static str),
    /// Metadata found but unusable.
    #[error("{format}: {why}")]
    Corrupt {
        /// The format's dmraid name.
        format: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A set has fewer members than its level can run without.
    #[error("{format}: {} of devices in RAID set \"{name}\" [{found}/{expected}]", if *format == "isw" { "wrong number" } else { "wrong #" })]
    WrongDevices {
        /// The format's dmraid name.
        format: &'static str,
        /// The set.
        name: String,
        /// Members found.
        found: usize,
        /// Members the metadata names.
        expected: usize,
    },
    /// No device-mapper table can express the set.
    #[error("no mapping possible for RAID set {name} ({why})")]
    NoMapping {
        /// The set.
        name: String,
        /// Why not.
        why: String,
    },
    /// The disk's serial is not in the metadata's disk table.
    #[error("{format}: Could not find disk {path} in the metadata")]
    NoDisk {
        /// The format's dmraid name.
        format: &'static str,
        /// The disk.
        path: String,
    },
}

impl AtaraidError {
    /// The errno a command reports for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            AtaraidError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            AtaraidError::NotFound(_) | AtaraidError::NoDisk { .. } => libc::ENODEV,
            AtaraidError::Corrupt { .. } | AtaraidError::NoMapping { .. } => libc::EINVAL,
            AtaraidError::WrongDevices { .. } => libc::ENXIO,
        }
    }
}

/// A disk that carries Intel metadata and was found in its disk table.
#[derive(Debug, Clone)]
pub struct IswMember {
    /// The path the disk was named by.
    pub path: String,
    /// The parsed MPB.
    pub isw: Isw,
    /// Its index in the MPB's disk table.
    pub index: usize,
}

impl IswMember {
    /// Read and match a disk: `serial` identifies it in the MPB's disk table.
    pub fn read(path: &str, disk: &mut dyn Disk, serial: &str) -> Result<IswMember, AtaraidError> {
        let isw = Isw::read(disk)?;
        let index = isw.disk_index(serial).ok_or_else(|| AtaraidError::NoDisk {
            format: "isw",
            path: path.to_string(),
        })?;
        Ok(IswMember {
            path: path.to_string(),
            isw,
            index,
        })
    }

    /// dmraid `-r`'s line for this disk (its size: the sectors before the MPB's first sector,
    /// however many extended sectors precede it, as dmraid counts).
    pub fn raid_dev_line(&self) -> String {
        let ok = if self.isw.disks[self.index].ok() {
            "ok"
        } else {
            "broken"
        };
        format!(
            "{}: isw, \"{}\", GROUP, {ok}, {} sectors, data@ 0",
            self.path,
            self.isw.group_name(),
            self.isw.offset / 512
        )
    }
}

/// The RAID type of a set, in dmraid's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// raid0: `stripe`.
    Stripe,
    /// raid1: `mirror`.
    Mirror,
    /// raid5 left-asymmetric: `raid5_la`.
    Raid5La,
    /// raid5 left-symmetric: `raid5_ls`.
    Raid5Ls,
    /// raid5 right-asymmetric: `raid5_ra`.
    Raid5Ra,
    /// A level dmraid cannot map (`unknown`).
    Unknown,
}

impl SetKind {
    /// Parity members (raid5: one).
    pub fn parity(self) -> usize {
        match self {
            SetKind::Raid5La | SetKind::Raid5Ls | SetKind::Raid5Ra => 1,
            _ => 0,
        }
    }
}

impl std::fmt::Display for SetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SetKind::Stripe => "stripe",
            SetKind::Mirror => "mirror",
            SetKind::Raid5La => "raid5_la",
            SetKind::Raid5Ls => "raid5_ls",
            SetKind::Raid5Ra => "raid5_ra",
            SetKind::Unknown => "unknown",
        })
    }
}

/// A member's segment in a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDev {
    /// The disk's path.
    pub path: String,
    /// Start of the segment (sectors).
    pub offset: u64,
    /// Length of the segment (sectors).
    pub sectors: u64,
}

/// A RAID set (one Intel volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// The format's dmraid name (`isw`, `ddf1`).
    pub format: &'static str,
    /// The group (superset) the set belongs to (`isw_<family>`).
    pub group: String,
    /// dmraid's name (`isw_<family>_<volume>`), also the dm device name.
    pub name: String,
    /// The RAID type.
    pub kind: SetKind,
    /// Chunk size in sectors.
    pub stride: u64,
    /// Members found, in stripe order.
    pub devs: Vec<SetDev>,
    /// Each found member's slot in the stripe order (parallel to `devs`).
    pub slots: Vec<usize>,
    /// Members the metadata says the set has.
    pub expected: usize,
    /// `ok`, `nosync`, `inconsistent` or `broken`.
    pub status: &'static str,
}

/// dmraid's status word for a set: members missing make it `inconsistent` (`broken` when
/// its level is unknown), else the metadata's `word`.
pub(crate) fn set_status(
    kind: SetKind,
    found: usize,
    expected: usize,
    word: &'static str,
) -> &'static str {
    match (found < expected, kind) {
        (true, SetKind::Unknown) => "broken",
        (true, _) => "inconsistent",
        (false, _) => word,
    }
}

fn region_size(sectors: u64) -> u64 {
    let max = (sectors / 1024).min(128 * 2 * 1024);
    let mut r = 128u64;
    while r < max {
        r <<= 1;
    }
    r >> 1
}

impl Set {
    /// The set's size in sectors as dmraid computes it for its table.
    pub fn size(&self) -> u64 {
        let min = self.devs.iter().map(|d| d.sectors).min().unwrap_or(0);
        match self.kind {
            SetKind::Stripe if self.devs.len() > 1 => {
                (min / self.stride.max(1)) * self.stride.max(1) * self.devs.len() as u64
            }
            SetKind::Raid5La | SetKind::Raid5Ls | SetKind::Raid5Ra => {
                (min / self.stride.max(1))
                    * self.stride.max(1)
                    * (self.devs.len() as u64).saturating_sub(1)
            }
            SetKind::Unknown => min * self.devs.len() as u64,
            _ => min,
        }
    }

    fn wrong_devices(&self) -> AtaraidError {
        AtaraidError::WrongDevices {
            format: self.format,
            name: self.name.clone(),
            found: self.devs.len(),
            expected: self.expected,
        }
    }

    fn no_mapping(&self, why: impl Into<String>) -> AtaraidError {
        AtaraidError::NoMapping {
            name: self.name.clone(),
            why: why.into(),
        }
    }

    /// The device-mapper table for the set, one `start len target args` line per segment:
    /// dmraid's for linear, striped and mirror sets, the `raid` target for raid5 (see the
    /// module doc for where it differs from dmraid's line). Members missing beyond what the
    /// level survives, an unknown level, or a raid5 volume at a member offset are refused.
    pub fn table(&self) -> Result<Vec<String>, AtaraidError> {
        let parity = self.kind.parity();
        if self.kind == SetKind::Unknown {
            return Err(self.no_mapping(format!("undefined RAID type {}", self.kind)));
        }
        if self.devs.is_empty()
            || self.devs.len() > self.expected
            || self.devs.len() + parity < self.expected
            || (parity == 0 && self.devs.len() != self.expected)
        {
            return Err(self.wrong_devices());
        }
        if parity > 0 {
            return self.raid_table().map(|l| vec![l]);
        }
        let size = self.size();
        let pairs: String = self
            .devs
            .iter()
            .map(|d| format!(" {} {}", d.path, d.offset))
            .collect();
        let n = self.devs.len();
        Ok(vec![match self.kind {
            _ if n == 1 => format!("0 {} linear{pairs}", self.devs[0].sectors),
            SetKind::Stripe => format!("0 {size} striped {n} {}{pairs}", self.stride),
            _ => format!(
                "0 {size} mirror core 2 {} {} {n}{pairs} 1 handle_errors",
                region_size(size),
                if self.status == "ok" {
                    "nosync"
                } else {
                    "sync"
                }
            ),
        }])
    }

    /// A raid5 set's `raid` line: every slot in stripe order, `- -` where a member is missing.
    fn raid_table(&self) -> Result<String, AtaraidError> {
        if let Some(d) = self.devs.iter().find(|d| d.offset != 0) {
            return Err(self.no_mapping(format!(
                "{} starts at sector {}: the raid target has no per-device offset",
                d.path, d.offset
            )));
        }
        let stride = self.stride;
        if stride == 0 || !stride.is_power_of_two() {
            return Err(self.no_mapping(format!("chunk size {stride} is not a power of 2")));
        }
        let n = self.expected;
        let min = self.devs.iter().map(|d| d.sectors).min().unwrap_or(0);
        let len = (min / stride) * stride * (n - self.kind.parity()) as u64;
        if len == 0 {
            return Err(self.no_mapping("no whole chunk per member"));
        }
        let degraded = self.devs.len() < n;
        let sync = if degraded || self.status == "ok" {
            "nosync"
        } else {
            "sync"
        };
        let region = region_size(len / n as u64).max(stride);
        let mut line = format!(
            "0 {len} raid {} 4 {stride} {sync} region_size {region} {n}",
            self.kind
        );
        for slot in 0..n {
            match self.slots.iter().position(|&s| s == slot) {
                Some(i) => line.push_str(&format!(" - {}", self.devs[i].path)),
                None => line.push_str(" - -"),
            }
        }
        Ok(line)
    }
}

/// Group Intel members into sets: one per volume of each family (the family's newest MPB
/// speaks for it), members in the map's stripe order; sorted by group, then volume order.
pub fn isw_sets(members: &[IswMember]) -> Result<Vec<Set>, AtaraidError> {
    let mut families: Vec<u32> = members.iter().map(|m| m.isw.family_num).collect();
    families.dedup();
    families.sort_unstable();
    families.dedup();
    let mut sets = Vec::new();
    for fam in families {
        let group: Vec<&IswMember> = members.iter().filter(|m| m.isw.family_num == fam).collect();
        // The newest metadata of the family speaks for it.
        let best = group
            .iter()
            .max_by_key(|m| m.isw.generation_num)
            .map(|m| &m.isw)
            .ok_or(AtaraidError::NotFound("isw"))?;
        for dev in &best.devs {
            let map = &dev.map;
            let kind = match map.raid_level {
                0 => SetKind::Stripe,
                1 | 2 => SetKind::Mirror,
                5 => SetKind::Raid5La,
                l => {
                    return Err(AtaraidError::Corrupt {
                        format: "isw",
                        why: format!("RAID type {l} not supported"),
                    })
                }
            };
            let (slots, devs): (Vec<usize>, Vec<SetDev>) = map
                .members
                .iter()
                .enumerate()
                .filter_map(|(slot, &idx)| {
                    let m = group.iter().find(|m| m.index == idx as usize)?;
                    Some((
                        slot,
                        SetDev {
                            path: m.path.clone(),
                            offset: u64::from(map.pba_of_lba0),
                            sectors: u64::from(map.blocks_per_member),
                        },
                    ))
                })
                .unzip();
            let word = match (dev.migr_state, map.map_state) {
                (_, 2) => "inconsistent",
                (0, _) => "ok",
                _ => "nosync",
            };
            let status = set_status(kind, devs.len(), map.num_members as usize, word);
            sets.push(Set {
                format: "isw",
                slots,
                group: best.group_name(),
                name: best.volume_name(dev),
                kind,
                stride: u64::from(map.blocks_per_strip),
                devs,
                expected: map.num_members as usize,
                status,
            });
        }
    }
    sets.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(sets)
}
