//! kpartx's rules for the mappings it makes from a partition table: partition names, the
//! order slices are handled in, the table line and UUID of each partition map (`-a`/`-u`),
//! the `-l` listing, the stale maps `-u` removes, and which existing maps `-d` may remove.

use super::{Slice, MAX_SLICES};

/// The tag kpartx ends the UUIDs it makes up for disks without one.
pub const NONDM_SUFFIX: &str = "Wh5pYvM";

/// The parent UUID of a block device without one: `devnode_<MAJ>:<MIN>_Wh5pYvM`.
pub fn devnode_uuid(major: u32, minor: u32) -> String {
    format!("devnode_{major}:{minor}_{NONDM_SUFFIX}")
}

/// The parent UUID of an image file: `file_<DEVMAJ>:<DEVMIN>:<INODE>_Wh5pYvM` (the device
/// the file lives on and its inode).
pub fn file_uuid(dev_major: u32, dev_minor: u32, ino: u64) -> String {
    format!("file_{dev_major}:{dev_minor}:{ino}_{NONDM_SUFFIX}")
}

/// The partition-number delimiter when `-p` is not given: `p` after a name ending in a
/// digit, else none.
pub fn default_delim(mapname: &str) -> &'static str {
    if mapname.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    }
}

/// kpartx's partition name: `/` after the first character becomes `!`.
pub fn partname(mapname: &str, delim: &str, n: usize) -> String {
    let s = format!("{mapname}{delim}{n}");
    s.char_indices()
        .map(|(i, c)| if i > 0 && c == '/' { '!' } else { c })
        .collect()
}

/// The order kpartx handles slices in: non-empty uncontained ones, then contained ones.
pub fn order(slices: &[Slice]) -> (Vec<usize>, Vec<usize>) {
    let used = || (0..slices.len()).filter(|&i| slices[i].size != 0);
    (
        used().filter(|&i| slices[i].container.is_none()).collect(),
        used().filter(|&i| slices[i].container.is_some()).collect(),
    )
}

/// kpartx's `check_uuid`: is `part_uuid` a kpartx partition UUID of `uuid`?
pub fn check_uuid(uuid: &str, part_uuid: &str) -> Result<(), &'static str> {
    match part_uuid.split_once('-') {
        Some((_, rest)) if part_uuid.starts_with("part") => {
            if rest == uuid {
                Ok(())
            } else {
                Err("a partition of a different device")
            }
        }
        _ => Err("not a kpartx partition"),
    }
}

/// kpartx's `dm_compare_uuid`: is `part_uuid` `part<digits>-<uuid>`?
pub fn is_part_of(uuid: &str, part_uuid: &str) -> bool {
    let Some(rest) = part_uuid.strip_prefix("part") else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest[digits..].strip_prefix('-') == Some(uuid)
}

/// Whether a table line's params map onto the disk named `devarg` (its first word).
pub fn maps_over(params: &str, devarg: &str) -> bool {
    params.split(' ').next() == Some(devarg)
}

/// The whole disk as kpartx names it in what it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// As `-l` prints it (the argument; an image file's real path).
    pub shown: String,
    /// The name partitions are named after.
    pub mapname: String,
    /// The UUID the partitions' `part<N>-` UUIDs extend.
    pub uuid: String,
    /// The device word in the partitions' tables.
    pub devarg: String,
}

/// One partition map `-a`/`-u` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartMap {
    /// The partition number (its slot, from 1).
    pub n: usize,
    pub name: String,
    /// `part<N>-<parent uuid>`.
    pub uuid: String,
    /// Sectors (the one `linear` line's length).
    pub len: u64,
    /// The `linear` line's params: the disk and the partition's start.
    pub params: String,
    /// A logical partition inside an extended one (its failures do not count).
    pub contained: bool,
}

impl Parent {
    /// `-l`: kpartx's listing; contained slices relative to their container, which is named
    /// `/dev/dm-<its position among the listed slices>` as kpartx prints it.
    pub fn list(&self, delim: &str, slices: &[Slice]) -> String {
        let (outer, inner) = order(slices);
        let mut minor = vec![None; slices.len()];
        let mut out = String::new();
        for (m, &j) in outer.iter().enumerate() {
            minor[j] = Some(m);
            let s = &slices[j];
            let name = format!("{}{delim}{}", self.mapname, j + 1);
            out.push_str(&format!(
                "{name} : 0 {} {} {}\n",
                s.size, self.shown, s.start
            ));
        }
        for &j in &inner {
            let s = &slices[j];
            let k = s.container.unwrap_or(0);
            let cstart = slices.get(k).map_or(0, |c| c.start);
            let cminor = minor.get(k).copied().flatten().unwrap_or(0);
            let name = format!("{}{delim}{}", self.mapname, j + 1);
            out.push_str(&format!(
                "{name} : 0 {} /dev/dm-{cminor} {}\n",
                s.size,
                s.start.wrapping_sub(cstart)
            ));
        }
        out
    }

    /// `-a`/`-u`: the partition maps, in the order kpartx makes them.
    pub fn maps(&self, delim: &str, slices: &[Slice]) -> Vec<PartMap> {
        let (outer, inner) = order(slices);
        outer
            .iter()
            .map(|&j| (j, false))
            .chain(inner.iter().map(|&j| (j, true)))
            .map(|(j, contained)| {
                let s = &slices[j];
                let n = j + 1;
                PartMap {
                    n,
                    name: partname(&self.mapname, delim, n),
                    uuid: format!("part{n}-{}", self.uuid),
                    len: s.size,
                    params: format!("{} {}", self.devarg, s.start),
                    contained,
                }
            })
            .collect()
    }

    /// `-u`: the partition numbers and names of slots without a partition now, from the
    /// last possible one down (maps of theirs left from before are removed).
    pub fn stale(&self, delim: &str, slices: &[Slice]) -> Vec<(usize, String)> {
        (0..MAX_SLICES)
            .rev()
            .filter(|&j| slices.get(j).is_none_or(|s| s.size == 0))
            .map(|j| (j + 1, partname(&self.mapname, delim, j + 1)))
            .collect()
    }

    /// `-d`: whether an existing device (its one table line and its UUID) is one of this
    /// disk's partition maps. `Ok(false)`: it does not map this disk at all; `Err`: it does
    /// but must stay, with kpartx's `-v` reason (after the device name).
    pub fn deletable(
        &self,
        ttype: &str,
        params: &str,
        uuid: &str,
        force: bool,
    ) -> Result<bool, &'static str> {
        if !maps_over(params, &self.devarg) {
            return Ok(false);
        }
        if ttype != "linear" {
            return Err(": is not a linear target. Not removing");
        }
        if !force && !is_part_of(&self.uuid, uuid) {
            return Err(": is not a kpartx partition. Not removing");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> Parent {
        Parent {
            shown: "/img/disk1".into(),
            mapname: "disk1".into(),
            uuid: devnode_uuid(7, 3),
            devarg: "7:3".into(),
        }
    }

    /// Slot 1 primary, slot 2 extended holding slot 5; slots 3-4 empty.
    fn slices() -> Vec<Slice> {
        let s = |start, size, container| Slice {
            start,
            size,
            container,
        };
        vec![
            s(2048, 2048, None),
            s(4096, 2, None),
            s(0, 0, None),
            s(0, 0, None),
            s(6144, 1024, Some(1)),
        ]
    }

    #[test]
    fn names_and_uuids() {
        assert_eq!(default_delim("loop0"), "p");
        assert_eq!(default_delim("disk"), "");
        assert_eq!(partname("a/b", "p", 2), "a!bp2");
        assert_eq!(partname("/x", "", 1), "/x1");
        assert_eq!(devnode_uuid(7, 3), "devnode_7:3_Wh5pYvM");
        assert_eq!(file_uuid(8, 1, 42), "file_8:1:42_Wh5pYvM");
        assert!(is_part_of("U", "part12-U"));
        assert!(!is_part_of("U", "part-U"));
        assert!(!is_part_of("U", "part1-V"));
        assert_eq!(
            check_uuid("U", "part1-V"),
            Err("a partition of a different device")
        );
        assert_eq!(check_uuid("U", "LVM-x"), Err("not a kpartx partition"));
        assert!(check_uuid("U", "part3-U").is_ok());
    }

    #[test]
    fn listing_and_maps() {
        let p = parent();
        let sl = slices();
        assert_eq!(
            p.list("p", &sl),
            "disk1p1 : 0 2048 /img/disk1 2048\n\
             disk1p2 : 0 2 /img/disk1 4096\n\
             disk1p5 : 0 1024 /dev/dm-1 2048\n"
        );
        let maps = p.maps("p", &sl);
        let names: Vec<_> = maps.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["disk1p1", "disk1p2", "disk1p5"]);
        assert_eq!(maps[2].params, "7:3 6144");
        assert_eq!(maps[2].uuid, "part5-devnode_7:3_Wh5pYvM");
        assert!(maps[2].contained && !maps[0].contained);
        let stale = p.stale("p", &sl);
        assert_eq!(stale.len(), MAX_SLICES - 3);
        assert_eq!(stale[0], (256, "disk1p256".to_string()));
        assert_eq!(stale[stale.len() - 1], (3, "disk1p3".to_string()));
    }

    #[test]
    fn what_delete_removes() {
        let p = parent();
        let own = "part1-devnode_7:3_Wh5pYvM";
        assert_eq!(p.deletable("linear", "7:3 2048", own, false), Ok(true));
        assert_eq!(p.deletable("linear", "7:4 2048", own, false), Ok(false));
        assert!(p.deletable("striped", "7:3 2048", own, false).is_err());
        assert!(p.deletable("linear", "7:3 0", "other", false).is_err());
        assert_eq!(p.deletable("linear", "7:3 0", "other", true), Ok(true));
    }
}
