//! ATARAID (firmware/"fake" RAID) metadata as dmraid reads it: Intel Matrix ([`isw`]) and
//! SNIA DDF1 ([`ddf1`]). [`isw_sets`] and [`ddf1::ddf1_sets`] group members into dmraid's
//! RAID sets and [`Set::table`] writes the device-mapper table dmraid activates for a set
//! (`striped` for raid0, `mirror` with a core log for raid1, `linear` for one member).
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
            AtaraidError::Corrupt { .. } => libc::EINVAL,
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
}

impl std::fmt::Display for SetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SetKind::Stripe => "stripe",
            SetKind::Mirror => "mirror",
            SetKind::Raid5La => "raid5_la",
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
    /// Members the metadata says the set has.
    pub expected: usize,
    /// `ok`, `nosync` or `inconsistent`.
    pub status: &'static str,
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
            SetKind::Raid5La => {
                (min / self.stride.max(1))
                    * self.stride.max(1)
                    * (self.devs.len() as u64).saturating_sub(1)
            }
            _ => min,
        }
    }

    /// The device-mapper table dmraid loads for the set, one `start len target args` line
    /// per segment; `None` when members are missing.
    pub fn table(&self) -> Option<Vec<String>> {
        if self.devs.len() != self.expected || self.devs.is_empty() {
            return None;
        }
        let size = self.size();
        let pairs: String = self
            .devs
            .iter()
            .map(|d| format!(" {} {}", d.path, d.offset))
            .collect();
        let n = self.devs.len();
        Some(vec![match self.kind {
            _ if n == 1 => format!("0 {} linear{pairs}", self.devs[0].sectors),
            SetKind::Stripe => format!("0 {size} striped {n} {}{pairs}", self.stride),
            SetKind::Mirror => format!(
                "0 {size} mirror core 2 {} {} {n}{pairs} 1 handle_errors",
                region_size(size),
                if self.status == "ok" {
                    "nosync"
                } else {
                    "sync"
                }
            ),
            // dmraid's `raid45` line (that target never reached mainline kernels, so this
            // line is not checked against a kernel; the region size is taken per member).
            SetKind::Raid5La => format!(
                "0 {size} raid45 core 2 {} {} raid5_la 1 {} {n} -1{pairs}",
                region_size(self.devs.iter().map(|d| d.sectors).min().unwrap_or(0)),
                if self.status == "ok" {
                    "nosync"
                } else {
                    "sync"
                },
                self.stride
            ),
        }])
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
            let devs = map
                .members
                .iter()
                .filter_map(|&idx| group.iter().find(|m| m.index == idx as usize))
                .map(|m| SetDev {
                    path: m.path.clone(),
                    offset: u64::from(map.pba_of_lba0),
                    sectors: u64::from(map.blocks_per_member),
                })
                .collect();
            let status = match (dev.migr_state, map.map_state) {
                (_, 2) => "inconsistent",
                (0, _) => "ok",
                _ => "nosync",
            };
            sets.push(Set {
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
