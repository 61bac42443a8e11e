//! Building VG metadata as vgcreate and lvcreate do: a new VG over labelled PVs, and new
//! linear or striped LVs allocated from free extents (PVs in order, first fit).

use super::label::{LvmId, PvHeader};
use super::model::{Lv, Pv, Segment, Vg};
use super::{LvmError, SECTOR_SIZE};

/// True for a name lvm2 accepts for a VG or LV: `[a-zA-Z0-9+_.-]`, not starting with `-`,
/// not `.` or `..`, at most 127 characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
}

impl Vg {
    /// A new VG (seqno 1) over PVs given by their headers and device hints, with
    /// `extent_size` sectors per extent (lvm2's default is 8192, 4 MiB).
    pub fn create(
        name: &str,
        extent_size: u64,
        pvs: &[(PvHeader, Option<String>)],
    ) -> Result<Vg, LvmError> {
        if !valid_name(name) {
            return Err(LvmError::Invalid(format!("invalid VG name {name:?}")));
        }
        if extent_size < 8 || !extent_size.is_power_of_two() {
            return Err(LvmError::Invalid(format!(
                "extent size {extent_size} sectors must be a power of 2 of at least 4 KiB"
            )));
        }
        if pvs.is_empty() {
            return Err(LvmError::Invalid("a VG needs at least one PV".into()));
        }
        let mut out = Vec::new();
        for (i, (h, hint)) in pvs.iter().enumerate() {
            let data = h
                .data_areas
                .first()
                .ok_or_else(|| LvmError::Invalid(format!("PV {} has no data area", h.pv_uuid)))?;
            let pe_start = data.offset / SECTOR_SIZE;
            let dev_size = h.device_size / SECTOR_SIZE;
            // Extents end where the device or a metadata area after the data start ends.
            let data_end = h
                .metadata_areas
                .iter()
                .map(|m| m.offset / SECTOR_SIZE)
                .filter(|&m| m > pe_start)
                .fold(dev_size, u64::min);
            let pe_count = data_end.saturating_sub(pe_start) / extent_size;
            if pe_count == 0 {
                return Err(LvmError::TooSmall {
                    size: h.device_size,
                    need: data.offset + extent_size * SECTOR_SIZE,
                });
            }
            out.push(Pv {
                name: format!("pv{i}"),
                id: h.pv_uuid,
                device: hint.clone(),
                status: vec!["ALLOCATABLE".into()],
                flags: vec![],
                tags: vec![],
                dev_size,
                pe_start,
                pe_count,
                extra: vec![],
            });
        }
        let vg = Vg {
            name: name.into(),
            id: LvmId::random(),
            seqno: 1,
            format: "lvm2".into(),
            status: vec!["RESIZEABLE".into(), "READ".into(), "WRITE".into()],
            flags: vec![],
            tags: vec![],
            extent_size,
            max_lv: 0,
            max_pv: 0,
            metadata_copies: 0,
            pvs: out,
            lvs: vec![],
            extra: vec![],
            extra_sections: vec![],
        };
        vg.validate()?;
        Ok(vg)
    }

    /// Free extents in the whole VG.
    pub fn free_extents(&self) -> u64 {
        self.pvs
            .iter()
            .map(|p| self.free_runs(&p.name).iter().map(|r| r.1).sum::<u64>())
            .sum()
    }

    /// Add an LV of `extents` extents: linear when `stripes` is 1 (free runs of the PVs in
    /// order, one segment per run), else striped over `stripes` PVs with `stripe_size`
    /// sectors per chunk, each stripe one contiguous run. The seqno is not changed.
    pub fn create_lv(
        &mut self,
        name: &str,
        extents: u64,
        stripes: usize,
        stripe_size: u64,
        host: &str,
        time: i64,
    ) -> Result<&Lv, LvmError> {
        if !valid_name(name) || name.starts_with("snapshot") || name.starts_with("pvmove") {
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
        if extents == 0 || stripes == 0 {
            return Err(LvmError::Invalid("an LV needs at least one extent".into()));
        }
        let insufficient = |free: u64| {
            LvmError::Refused(format!(
                "Insufficient suitable allocatable extents for logical volume {name}: \
                 {extents} required, {free} free"
            ))
        };
        let mut segments = Vec::new();
        if stripes == 1 {
            let mut left = extents;
            for pv in &self.pvs {
                // lvm2 keeps each PV's free areas largest first.
                let mut runs = self.free_runs(&pv.name);
                runs.sort_by_key(|r| std::cmp::Reverse(r.1));
                for (start, len) in runs {
                    if left == 0 {
                        break;
                    }
                    let take = len.min(left);
                    segments.push(Segment::striped(
                        extents - left,
                        take,
                        0,
                        &[(&pv.name, start)],
                    ));
                    left -= take;
                }
            }
            if left > 0 {
                return Err(insufficient(self.free_extents()));
            }
        } else {
            if !stripe_size.is_power_of_two() || stripe_size < 8 {
                return Err(LvmError::Invalid(format!(
                    "stripe size {stripe_size} sectors must be a power of 2 of at least 4 KiB"
                )));
            }
            let per = extents.div_ceil(stripes as u64);
            let mut areas: Vec<(&str, u64)> = Vec::new();
            for pv in &self.pvs {
                if areas.len() == stripes {
                    break;
                }
                if let Some((start, _)) = self.free_runs(&pv.name).into_iter().find(|r| r.1 >= per)
                {
                    areas.push((&pv.name, start));
                }
            }
            if areas.len() < stripes {
                return Err(insufficient(self.free_extents()));
            }
            segments.push(Segment::striped(
                0,
                per * stripes as u64,
                stripe_size,
                &areas,
            ));
        }
        self.lvs.push(Lv {
            name: name.into(),
            id: LvmId::random(),
            status: vec!["READ".into(), "WRITE".into(), "VISIBLE".into()],
            flags: vec![],
            tags: vec![],
            creation_time: Some(time),
            creation_host: Some(host.into()),
            segments,
            extra: vec![],
        });
        if let Err(e) = self.validate() {
            self.lvs.pop();
            return Err(e);
        }
        Ok(self.lvs.last().expect("just pushed"))
    }
}
