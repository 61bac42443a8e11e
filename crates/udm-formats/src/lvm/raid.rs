//! RAID and mirror LVs as lvm2 writes them: a visible `raid0|raid1|raid4|raid5|raid6|raid10`
//! LV over hidden `LV_rmeta_N` (one extent each, none for raid0) and `LV_rimage_N` sub-LVs,
//! or a `mirror` LV over `LV_mimage_N` legs with a one-extent `LV_mlog` disk log.
//!
//! Placement follows lvm2's allocator: each leg (its metadata extent then its image) takes
//! one run on its own PV, PVs in VG order among those whose largest free run holds the leg;
//! a mirror's log goes to the PV with the largest free run the legs do not use.

use super::label::LvmId;
use super::model::{Lv, Segment, Vg};
use super::text::{Item, Value};
use super::LvmError;

/// lvm2's default region size (2 MiB, in sectors) for raid and mirror LVs.
pub const DEFAULT_REGION: u64 = 4096;

/// A RAID or mirror LV type as `lvcreate --type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaidKind {
    Raid0,
    Raid1,
    Raid4,
    Raid5,
    Raid6,
    Raid10,
    Mirror,
}

impl std::str::FromStr for RaidKind {
    type Err = LvmError;
    fn from_str(s: &str) -> Result<RaidKind, LvmError> {
        Ok(match s {
            "raid0" | "raid0_meta" => RaidKind::Raid0,
            "raid1" => RaidKind::Raid1,
            "raid4" => RaidKind::Raid4,
            "raid5" | "raid5_ls" => RaidKind::Raid5,
            "raid6" | "raid6_zr" => RaidKind::Raid6,
            "raid10" => RaidKind::Raid10,
            "mirror" => RaidKind::Mirror,
            _ => return Err(LvmError::Refused(format!("Unknown segment type {s}"))),
        })
    }
}

impl std::fmt::Display for RaidKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RaidKind::Raid0 => "raid0",
            RaidKind::Raid1 => "raid1",
            RaidKind::Raid4 => "raid4",
            RaidKind::Raid5 => "raid5",
            RaidKind::Raid6 => "raid6",
            RaidKind::Raid10 => "raid10",
            RaidKind::Mirror => "mirror",
        })
    }
}

impl RaidKind {
    /// Parity devices (raid4/5: 1, raid6: 2).
    pub fn parity(self) -> u64 {
        match self {
            RaidKind::Raid4 | RaidKind::Raid5 => 1,
            RaidKind::Raid6 => 2,
            _ => 0,
        }
    }

    /// True for the striped kinds (a stripe size, `-i`).
    pub fn striped(self) -> bool {
        !matches!(self, RaidKind::Raid1 | RaidKind::Mirror)
    }

    /// lvm2's default and smallest `-i` for the kind.
    pub fn stripes_default(self) -> (u64, u64) {
        match self {
            RaidKind::Raid6 => (3, 3),
            RaidKind::Raid1 | RaidKind::Mirror => (1, 1),
            _ => (2, 2),
        }
    }
}

/// The shape of a new RAID or mirror LV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaidShape {
    pub kind: RaidKind,
    /// Data stripes (`-i`; 1 for raid1 and mirror).
    pub stripes: u64,
    /// Extra copies (`-m`; raid1, raid10 and mirror).
    pub mirrors: u64,
    /// Stripe size in sectors (striped kinds).
    pub stripe_size: u64,
    /// Region size in sectors (not raid0).
    pub region_size: u64,
}

impl RaidShape {
    /// How many images the LV has.
    pub fn devices(&self) -> u64 {
        match self.kind {
            RaidKind::Raid1 | RaidKind::Mirror => self.mirrors + 1,
            RaidKind::Raid10 => self.stripes * (self.mirrors + 1),
            RaidKind::Raid0 => self.stripes,
            k => self.stripes + k.parity(),
        }
    }

    /// Extents of each image for an LV of `extents` extents (a multiple of the stripes).
    pub fn image_extents(&self, extents: u64) -> u64 {
        match self.kind {
            RaidKind::Raid1 | RaidKind::Mirror => extents,
            _ => extents / self.stripes,
        }
    }
}

/// The region size lvm2 uses for an LV of `sectors`: the asked one, lowered to the largest
/// power of two dividing the LV's size when that is smaller.
pub fn region_for(asked: u64, sectors: u64) -> u64 {
    let max = 1u64 << sectors.trailing_zeros().min(63);
    asked.min(max)
}

fn sub_lv(name: String, pv: &str, pe: u64, extents: u64, host: &str, time: i64) -> Lv {
    Lv {
        name,
        id: LvmId::random(),
        status: vec!["READ".into(), "WRITE".into()],
        flags: vec![],
        tags: vec![],
        creation_time: Some(time),
        creation_host: Some(host.into()),
        segments: vec![Segment::striped(0, extents, 0, &[(pv, pe)])],
        extra: vec![],
    }
}

fn int(v: u64) -> Value {
    Value::Int(v as i64)
}

impl Vg {
    /// The largest free run of each PV (the first of equal ones), in VG order.
    fn largest_runs(&self) -> Vec<(String, u64, u64)> {
        self.pvs
            .iter()
            .filter(|p| p.status.iter().any(|s| s == "ALLOCATABLE"))
            .filter_map(|p| {
                let runs = self.free_runs(&p.name);
                let best = runs.iter().map(|r| r.1).max()?;
                let r = runs.into_iter().find(|r| r.1 == best)?;
                Some((p.name.clone(), r.0, r.1))
            })
            .collect()
    }

    /// `lvcreate --type raid*|mirror -n NAME`: the LV of `extents` extents (a multiple of
    /// the data stripes) and its sub-LVs. Unchanged on failure.
    pub fn create_raid(
        &mut self,
        name: &str,
        extents: u64,
        shape: RaidShape,
        host: &str,
        time: i64,
    ) -> Result<(), LvmError> {
        if !super::build::valid_name(name) {
            return Err(LvmError::Refused(format!(
                "Logical volume name \"{name}\" is invalid."
            )));
        }
        if self.lv(name).is_some() {
            return Err(LvmError::Refused(format!(
                "Logical Volume \"{name}\" already exists in volume group \"{}\"",
                self.name
            )));
        }
        let devices = shape.devices();
        let image = shape.image_extents(extents);
        let meta = u64::from(!matches!(shape.kind, RaidKind::Raid0 | RaidKind::Mirror));
        let need = image + meta;
        // Each leg on its own PV, in VG order among the PVs whose largest run holds it.
        let legs: Vec<(String, u64, u64)> = self
            .largest_runs()
            .into_iter()
            .filter(|r| r.2 >= need)
            .take(devices as usize)
            .collect();
        if (legs.len() as u64) < devices {
            return Err(LvmError::Refused(format!(
                "Insufficient suitable allocatable extents for logical volume {name}: {} more required",
                (devices - legs.len() as u64) * need
            )));
        }
        let log = if shape.kind == RaidKind::Mirror {
            let mut other: Vec<(String, u64, u64)> = self
                .largest_runs()
                .into_iter()
                .filter(|r| !legs.iter().any(|l| l.0 == r.0))
                .collect();
            other.sort_by_key(|r| std::cmp::Reverse(r.2));
            let Some(l) = other.into_iter().next() else {
                return Err(LvmError::Refused(format!(
                    "Insufficient suitable allocatable extents for logical volume {name}_mlog: 1 more required"
                )));
            };
            Some(l)
        } else {
            None
        };
        let before = self.clone();
        let mut subs = Vec::new();
        let mut names = Vec::new();
        for (i, (pv, start, _)) in legs.iter().enumerate() {
            let (img, pe) = match shape.kind {
                RaidKind::Mirror => (format!("{name}_mimage_{i}"), *start),
                _ => (format!("{name}_rimage_{i}"), start + meta),
            };
            subs.push(sub_lv(img.clone(), pv, pe, image, host, time));
            if meta == 1 {
                let m = format!("{name}_rmeta_{i}");
                subs.push(sub_lv(m.clone(), pv, *start, 1, host, time));
                names.push(Value::str(m));
            }
            names.push(Value::str(img));
            if shape.kind == RaidKind::Mirror {
                names.push(Value::Int(0));
            }
        }
        let mut body = Vec::new();
        match shape.kind {
            RaidKind::Mirror => {
                body.push(Item::pair("mirror_count", int(devices)));
                if log.is_some() {
                    body.push(Item::pair("mirror_log", Value::str(format!("{name}_mlog"))));
                }
                body.push(Item::pair("region_size", int(shape.region_size)));
                body.push(Item::Blank);
                body.push(Item::pair("mirrors", Value::Array(names, 2)));
            }
            RaidKind::Raid0 => {
                body.push(Item::pair("stripe_count", int(devices)));
                body.push(Item::pair("stripe_size", int(shape.stripe_size)));
                body.push(Item::Blank);
                body.push(Item::pair("raid0_lvs", Value::Array(names, 1)));
            }
            k => {
                body.push(Item::pair("device_count", int(devices)));
                if k == RaidKind::Raid10 {
                    body.push(Item::pair("data_copies", int(shape.mirrors + 1)));
                }
                body.push(Item::pair("region_size", int(shape.region_size)));
                if k.striped() {
                    body.push(Item::pair("stripe_size", int(shape.stripe_size)));
                }
                body.push(Item::Blank);
                body.push(Item::pair("raids", Value::Array(names, 2)));
            }
        }
        self.lvs.push(Lv {
            name: name.into(),
            id: LvmId::random(),
            status: vec!["READ".into(), "WRITE".into(), "VISIBLE".into()],
            flags: vec![],
            tags: vec![],
            creation_time: Some(time),
            creation_host: Some(host.into()),
            segments: vec![Segment {
                start_extent: 0,
                extent_count: extents,
                seg_type: shape.kind.to_string(),
                body,
            }],
            extra: vec![],
        });
        self.lvs.extend(subs);
        if let Some((pv, start, _)) = log {
            self.lvs
                .push(sub_lv(format!("{name}_mlog"), &pv, start, 1, host, time));
        }
        if let Err(e) = self.validate() {
            *self = before;
            return Err(e);
        }
        Ok(())
    }
}

impl Vg {
    /// `lvextend` of a raid or mirror LV to `extents` (rounded up to whole stripes): each
    /// image grows on its own PV (continuing its area when free), the metadata sub-LVs and
    /// the log stay. Returns the new size. Unchanged on failure.
    pub fn extend_raid(&mut self, name: &str, extents: u64) -> Result<u64, LvmError> {
        let vgname = self.name.clone();
        let seg = self
            .lv(name)
            .and_then(|l| l.segments.first())
            .filter(|s| is_raid_type(super::dmplan::pools::base_type(s)))
            .cloned()
            .ok_or_else(|| LvmError::Refused(format!("{vgname}/{name} is not a raid LV.")))?;
        let kind: RaidKind = super::dmplan::pools::base_type(&seg).parse()?;
        let images: Vec<String> = sub_lvs(&seg)
            .into_iter()
            .filter(|n| !n.contains("_rmeta_") && !n.ends_with("_mlog"))
            .collect();
        let n = images.len() as u64;
        let data = match kind {
            RaidKind::Raid1 | RaidKind::Mirror => 1,
            RaidKind::Raid10 => {
                let copies = seg.get("data_copies").and_then(Value::as_int).unwrap_or(2) as u64;
                n / copies.max(1)
            }
            k => n - k.parity(),
        }
        .max(1);
        let extents = extents.div_ceil(data) * data;
        let per = extents / data;
        let before = self.clone();
        let r = (|| {
            for img in &images {
                let pv = self
                    .lv(img)
                    .and_then(|l| l.segments.last())
                    .and_then(|s| s.stripes().ok())
                    .and_then(|v| v.first().map(|a| a.0.clone()))
                    .ok_or_else(|| LvmError::Invalid(format!("raid image {img} has no area")))?;
                self.allocate_on(std::slice::from_ref(&pv), |vg| vg.extend_lv(img, per, None))?;
            }
            let lv = self.lvs.iter_mut().find(|l| l.name == name).expect("there");
            lv.segments[0].extent_count = extents;
            self.validate()
        })();
        if let Err(e) = r {
            *self = before;
            return Err(e);
        }
        Ok(extents)
    }
}

/// The sub-LV names of a raid or mirror segment (`raids`, `raid0_lvs`, `mirrors`), in
/// order, and its `mirror_log`.
pub fn sub_lvs(seg: &Segment) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["raids", "raid0_lvs", "mirrors"] {
        if let Some(Value::Array(v, _)) = seg.get(key) {
            out.extend(v.iter().filter_map(|x| x.as_str().map(str::to_string)));
        }
    }
    if let Some(l) = seg.get("mirror_log").and_then(Value::as_str) {
        out.push(l.to_string());
    }
    out
}

/// True for a raid or mirror segment type.
pub fn is_raid_type(ty: &str) -> bool {
    ty.starts_with("raid") || ty == "mirror"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vg(pvs: usize, mib: u64) -> Vg {
        let hs: Vec<_> = (0..pvs)
            .map(|_| crate::lvm::edit::tests::hdr(mib))
            .collect();
        Vg::create("vg", 8192, &hs).unwrap()
    }

    fn shape(kind: RaidKind, stripes: u64, mirrors: u64) -> RaidShape {
        RaidShape {
            kind,
            stripes,
            mirrors,
            stripe_size: 128,
            region_size: DEFAULT_REGION,
        }
    }

    /// Legs take one run each on their own PVs (metadata extent first), a mirror log the
    /// largest run the legs leave; too few PVs is refused with nothing changed; removing
    /// the LV takes its sub-LVs.
    #[test]
    fn placement_refusal_and_removal() {
        let mut v = vg(3, 64);
        v.create_raid("r", 4, shape(RaidKind::Raid5, 2, 0), "h", 1)
            .unwrap();
        let area = |v: &Vg, n: &str| v.lv(n).unwrap().segments[0].stripes().unwrap()[0].clone();
        assert_eq!(area(&v, "r_rmeta_2"), ("pv2".to_string(), 0));
        assert_eq!(area(&v, "r_rimage_2"), ("pv2".to_string(), 1));
        assert_eq!(v.lv("r_rimage_0").unwrap().extents(), 2);
        v.create_raid("m", 2, shape(RaidKind::Mirror, 1, 1), "h", 1)
            .unwrap();
        assert_eq!(area(&v, "m_mimage_1"), ("pv1".to_string(), 3));
        assert_eq!(area(&v, "m_mlog"), ("pv2".to_string(), 3));
        let before = v.clone();
        let e = v.create_raid("x", 2, shape(RaidKind::Raid6, 3, 0), "h", 1);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("Insufficient suitable allocatable extents"));
        assert_eq!(v, before);
        let gone = v.remove_lv("r", false).unwrap();
        assert_eq!(gone, ["r"]);
        assert!(v.lvs.iter().all(|l| !l.name.starts_with("r_")));
        assert_eq!(v.lvs.len(), 4);
    }

    /// `--alloc anywhere` cuts one PV's area into stripes when there is no other, as lvm2.
    #[test]
    fn anywhere_stripes_share_a_pv() {
        let mut v = vg(1, 64);
        v.create_lv("a", 2, 1, 0, "h", 1).unwrap();
        assert!(v.create_lv("s", 2, 2, 128, "h", 1).is_err());
        v.create_lv_alloc("s", 2, 2, 128, crate::lvm::alloc::Alloc::Anywhere, "h", 1)
            .unwrap();
        let st = v.lv("s").unwrap().segments[0].stripes().unwrap();
        assert_eq!(st, [("pv0".to_string(), 2), ("pv0".to_string(), 3)]);
    }

    #[test]
    fn shapes_count_devices_and_images_as_lvm2() {
        let s = |kind, stripes, mirrors| RaidShape {
            kind,
            stripes,
            mirrors,
            stripe_size: 128,
            region_size: DEFAULT_REGION,
        };
        assert_eq!(s(RaidKind::Raid1, 1, 1).devices(), 2);
        assert_eq!(s(RaidKind::Raid5, 2, 0).devices(), 3);
        assert_eq!(s(RaidKind::Raid6, 3, 0).devices(), 5);
        assert_eq!(s(RaidKind::Raid10, 2, 1).devices(), 4);
        assert_eq!(s(RaidKind::Raid10, 2, 1).image_extents(4), 2);
        assert_eq!(s(RaidKind::Mirror, 1, 2).image_extents(4), 4);
        assert_eq!(region_for(4096, 8192), 4096);
        assert_eq!(region_for(4096, 3 * 1024), 1024);
        assert_eq!("raid5_ls".parse::<RaidKind>().unwrap(), RaidKind::Raid5);
        assert!("raid7".parse::<RaidKind>().is_err());
    }
}
