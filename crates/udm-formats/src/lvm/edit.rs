//! Changing a VG as lvm2's commands do: size arguments (`-L` with units, `-l` with
//! `%VG/%FREE/%PVS/%ORIGIN`), extending, reducing, renaming and removing LVs, snapshots
//! (a hidden COW store plus a visible `snapshotN` LV), adding and removing PVs. Each edit
//! checks everything first and leaves the VG unchanged when it fails.

use super::label::{LvmId, PvHeader};
use super::model::{Lv, Pv, Segment, Vg};
use super::text::{Item, Value};
use super::{build::valid_name, LvmError};

fn invalid(m: impl Into<String>) -> LvmError {
    LvmError::Refused(m.into())
}

/// Whether a size argument sets, adds or takes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    Set,
    Plus,
    Minus,
}

/// A parsed `-L` / `-l` argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeArg {
    /// `-L`: a size in sectors (rounded up to whole sectors).
    Sectors(Sign, u64),
    /// `-l N`: extents.
    Extents(Sign, u64),
    /// `-l N%VG|%FREE|%PVS|%ORIGIN`.
    Percent(Sign, u64, PercentOf),
}

/// What a `-l N%…` percentage is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PercentOf {
    Vg,
    Free,
    Pvs,
    Origin,
}

fn split_sign(s: &str) -> (Sign, &str) {
    match s.as_bytes().first() {
        Some(b'+') => (Sign::Plus, &s[1..]),
        Some(b'-') => (Sign::Minus, &s[1..]),
        _ => (Sign::Set, s),
    }
}

/// Sectors for `-L SIZE[UNIT]` (default unit MiB; b/s/k/m/g/t/p/e in either case, all
/// powers of 1024, as lvm2 reads sizes).
pub fn parse_size(arg: &str) -> Result<SizeArg, LvmError> {
    let (sign, s) = split_sign(arg);
    let bad = || invalid(format!("Invalid argument for --size: {arg}"));
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "m"),
    };
    let shift = match unit.to_ascii_lowercase().as_str() {
        "b" => None,
        "s" => Some(0),
        "k" => Some(1),
        "m" => Some(11),
        "g" => Some(21),
        "t" => Some(31),
        "p" => Some(41),
        "e" => Some(51),
        _ => return Err(bad()),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    let sectors = match shift {
        None => (v / 512.0).ceil(),
        Some(sh) => (v * (1u64 << sh) as f64).ceil(),
    };
    if sectors > (u64::MAX >> 1) as f64 {
        return Err(bad());
    }
    Ok(SizeArg::Sectors(sign, sectors as u64))
}

/// `-l N` or `-l N%VG|%FREE|%PVS|%ORIGIN`.
pub fn parse_extents(arg: &str) -> Result<SizeArg, LvmError> {
    let (sign, s) = split_sign(arg);
    let bad = || invalid(format!("Invalid argument for --extents: {arg}"));
    let (num, pct) = match s.split_once('%') {
        Some((n, what)) => {
            let of = match what.to_ascii_uppercase().as_str() {
                "VG" => PercentOf::Vg,
                "FREE" => PercentOf::Free,
                "PVS" => PercentOf::Pvs,
                "ORIGIN" => PercentOf::Origin,
                _ => return Err(bad()),
            };
            (n, Some(of))
        }
        None => (s, None),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    Ok(match pct {
        Some(of) if n <= 100 || of == PercentOf::Origin => SizeArg::Percent(sign, n, of),
        Some(_) => return Err(bad()),
        None => SizeArg::Extents(sign, n),
    })
}

/// How a requested size became extents, for lvm2's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rounding {
    /// Requested sectors rounded up to a whole extent (`Rounding up size to full physical
    /// extent …`): the rounded size in sectors.
    pub to_extent: Option<u64>,
}

impl Vg {
    /// Extents for a size argument, relative to `current` extents (`+`/`-`), with the
    /// origin's size for `%ORIGIN`.
    pub fn extents_for(
        &self,
        arg: SizeArg,
        current: u64,
        origin: Option<u64>,
    ) -> Result<(u64, Rounding), LvmError> {
        let mut r = Rounding::default();
        let (sign, n) = match arg {
            SizeArg::Sectors(sign, s) => {
                let e = s.div_ceil(self.extent_size);
                if e * self.extent_size != s {
                    r.to_extent = Some(e * self.extent_size);
                }
                (sign, e)
            }
            SizeArg::Extents(sign, e) => (sign, e),
            SizeArg::Percent(sign, p, of) => {
                let total = match of {
                    PercentOf::Vg | PercentOf::Pvs => self.pvs.iter().map(|p| p.pe_count).sum(),
                    PercentOf::Free => self.free_extents(),
                    PercentOf::Origin => origin.ok_or_else(|| {
                        invalid("Specified %ORIGIN only valid for snapshots and thin volumes.")
                    })?,
                };
                (sign, (total * p).div_ceil(100))
            }
        };
        let e = match sign {
            Sign::Set => n,
            Sign::Plus => current + n,
            Sign::Minus => current.checked_sub(n).ok_or_else(|| {
                invalid("Unable to reduce logical volume below 1 extent.".to_string())
            })?,
        };
        Ok((e, r))
    }

    /// Rename an LV, and the snapshot segments that name it.
    pub fn rename_lv(&mut self, old: &str, new: &str) -> Result<(), LvmError> {
        if !valid_name(new) || new.starts_with("snapshot") || new.starts_with("pvmove") {
            return Err(invalid(format!(
                "New logical volume name \"{new}\" is invalid."
            )));
        }
        if self.lv(new).is_some() {
            return Err(invalid(format!(
                "Logical Volume \"{new}\" already exists in volume group \"{}\"",
                self.name
            )));
        }
        let Some(i) = self.lvs.iter().position(|l| l.name == old) else {
            return Err(LvmError::NotFound(format!(
                "Existing logical volume \"{old}\" not found in volume group \"{}\"",
                self.name
            )));
        };
        self.lvs[i].name = new.into();
        for seg in self.lvs.iter_mut().flat_map(|l| l.segments.iter_mut()) {
            for it in seg.body.iter_mut() {
                if let Item::Pair { key, value, .. } = it {
                    if matches!(key.as_str(), "origin" | "cow_store" | "merging_store")
                        && value.as_str() == Some(old)
                    {
                        *value = Value::str(new);
                    }
                }
            }
        }
        Ok(())
    }

    /// The `snapshotN` LVs whose origin or COW store is `lv`.
    pub fn snapshots_of(&self, lv: &str) -> Vec<&Lv> {
        self.lvs
            .iter()
            .filter(|l| {
                l.segments.iter().any(|s| {
                    s.seg_type == "snapshot"
                        && (seg_str(s, "origin") == Some(lv) || seg_str(s, "cow_store") == Some(lv))
                })
            })
            .collect()
    }

    /// Remove an LV; a snapshot's COW store goes with its `snapshotN`. An origin with
    /// snapshots is refused unless `with_snapshots` (then they go too). Returns the names of
    /// the visible LVs removed.
    pub fn remove_lv(&mut self, name: &str, with_snapshots: bool) -> Result<Vec<String>, LvmError> {
        let Some(lv) = self.lv(name) else {
            return Err(LvmError::NotFound(format!(
                "Failed to find logical volume \"{}/{name}\"",
                self.name
            )));
        };
        let mut gone = vec![lv.name.clone()];
        let mut removed = vec![name.to_string()];
        for s in self.snapshots_of(name) {
            let seg = &s.segments[0];
            let cow = seg_str(seg, "cow_store").unwrap_or("").to_string();
            if cow == name {
                gone.push(s.name.clone());
            } else {
                if !with_snapshots {
                    return Err(invalid(format!(
                        "Can't remove logical volume \"{name}\" with snapshots: use -f."
                    )));
                }
                gone.push(s.name.clone());
                gone.push(cow.clone());
                removed.insert(0, cow);
            }
        }
        // A pool's or cache's hidden parts go with it; thin volumes keep a pool.
        let used_pool = self.lvs.iter().flat_map(|l| &l.segments).any(|s| {
            super::dmplan::pools::base_type(s) == "thin" && seg_str(s, "thin_pool") == Some(name)
        });
        if used_pool {
            return Err(invalid(format!(
                "Removing pool \"{name}\" will remove its thin volumes: remove them first."
            )));
        }
        let parts = self.parts_of(name);
        gone.extend(parts);
        self.lvs.retain(|l| !gone.contains(&l.name));
        self.drop_unused_spare();
        Ok(removed)
    }

    /// Grow `name` to `extents`: with its last segment's stripe count and size (or the
    /// given ones), continuing its last area when free, else from free runs as lvcreate.
    pub fn extend_lv(
        &mut self,
        name: &str,
        extents: u64,
        stripes: Option<(usize, u64)>,
    ) -> Result<(), LvmError> {
        let Some(i) = self.lvs.iter().position(|l| l.name == name) else {
            return Err(LvmError::NotFound(format!(
                "Logical volume {name} not found"
            )));
        };
        let cur = self.lvs[i].extents();
        if extents <= cur {
            return Err(invalid(format!(
                "New size given ({extents} extents) not larger than existing size ({cur} extents)"
            )));
        }
        let last = self.lvs[i].segments.last().cloned();
        if last.as_ref().is_some_and(|s| s.seg_type != "striped") {
            return Err(invalid(format!(
                "Extending {} segments of {name} is not supported",
                last.map(|s| s.seg_type).unwrap_or_default()
            )));
        }
        let (n, size) = stripes.unwrap_or_else(|| {
            last.as_ref().map_or((1, 0), |s| {
                (
                    s.stripes().map(|v| v.len()).unwrap_or(1),
                    s.stripe_size().unwrap_or(0),
                )
            })
        });
        let add = extents - cur;
        let add = add.div_ceil(n as u64) * n as u64;
        // Linear: continue right after the last area when those extents are free.
        let mut new = Vec::new();
        let mut left = add;
        if n == 1 {
            let next = last.as_ref().and_then(|s| {
                let v = s.stripes().ok()?;
                v.first().map(|(p, e)| (p.clone(), e + s.extent_count))
            });
            if let Some((pv, pe)) = next {
                if let Some(&(st, len)) = self.free_runs(&pv).iter().find(|r| r.0 == pe) {
                    let take = len.min(left);
                    new.push(Segment::striped(cur, take, 0, &[(&pv, st)]));
                    left -= take;
                }
            }
        }
        if left > 0 {
            // What is taken so far sits in a placeholder LV; the rest is allocated as
            // lvcreate would.
            let mut tmp = self.clone();
            tmp.lvs.push(Lv {
                name: "udmplaceholder".into(),
                id: LvmId::random(),
                status: vec![],
                flags: vec![],
                tags: vec![],
                creation_time: None,
                creation_host: None,
                segments: renumber(&new, 0),
                extra: vec![],
            });
            let free = tmp.free_extents();
            tmp.create_lv_unchecked("udmrest", left, n, size)
                .map_err(|_| {
                    invalid(format!(
                        "Insufficient free space: {left} extents needed, but only {free} available"
                    ))
                })?;
            let rest = tmp.lvs.pop().expect("just made");
            new.extend(renumber(&rest.segments, cur + add - left));
        }
        let lv = &mut self.lvs[i];
        lv.segments.extend(new);
        merge_segments(lv);
        self.validate()
    }

    /// Shrink `name` to `extents` (at least 1), cutting its last segments.
    pub fn reduce_lv(&mut self, name: &str, extents: u64) -> Result<(), LvmError> {
        let Some(lv) = self.lvs.iter_mut().find(|l| l.name == name) else {
            return Err(LvmError::NotFound(format!(
                "Logical volume {name} not found"
            )));
        };
        let cur = lv.extents();
        if extents >= cur {
            return Err(invalid(format!(
                "New size ({extents} extents) matches existing size ({cur} extents)."
            )));
        }
        if extents == 0 {
            return Err(invalid("Unable to reduce logical volume below 1 extent."));
        }
        let mut segs = Vec::new();
        for s in &lv.segments {
            if s.start_extent >= extents {
                break;
            }
            let mut s = s.clone();
            let end = s.start_extent + s.extent_count;
            if end > extents {
                let n = s.stripes()?.len() as u64;
                let keep = extents - s.start_extent;
                if !keep.is_multiple_of(n) {
                    return Err(invalid(format!(
                        "Size must be a multiple of the stripe count {n}"
                    )));
                }
                let areas = s.stripes()?;
                let refs: Vec<(&str, u64)> = areas.iter().map(|(p, e)| (p.as_str(), *e)).collect();
                s = Segment::striped(s.start_extent, keep, s.stripe_size().unwrap_or(0), &refs);
            }
            segs.push(s);
        }
        lv.segments = segs;
        Ok(())
    }

    /// Add a COW store `name` of `extents` (linear, hidden) and a visible `snapshotN`
    /// over `origin` with `chunk` sectors per chunk, as `lvcreate -s` writes them.
    pub fn create_snapshot(
        &mut self,
        name: &str,
        origin: &str,
        extents: u64,
        chunk: u64,
        host: &str,
        time: i64,
    ) -> Result<(), LvmError> {
        let Some(o) = self.lv(origin) else {
            return Err(LvmError::NotFound(format!(
                "Failed to find logical volume \"{}/{origin}\"",
                self.name
            )));
        };
        if o.segments.iter().any(|s| s.seg_type != "striped") || !o.visible() {
            return Err(invalid(format!(
                "Snapshots of {origin} are not supported (only linear and striped origins)."
            )));
        }
        if !chunk.is_power_of_two() || !(8..=1024).contains(&chunk) {
            return Err(invalid(
                "Chunk size must be a power of 2 in the range 4K to 512K.",
            ));
        }
        let origin_extents = o.extents();
        let before = self.clone();
        self.create_lv(name, extents, 1, 0, host, time)?;
        let cow = self.lvs.last_mut().expect("just made");
        cow.status.retain(|s| s != "VISIBLE");
        let n = (0..)
            .find(|n| self.lv(&format!("snapshot{n}")).is_none())
            .expect("a free name");
        let body = vec![
            Item::pair("chunk_size", Value::Int(chunk as i64)),
            Item::pair("origin", Value::str(origin)),
            Item::pair("cow_store", Value::str(name)),
        ];
        self.lvs.push(Lv {
            name: format!("snapshot{n}"),
            id: LvmId::random(),
            status: vec!["READ".into(), "WRITE".into(), "VISIBLE".into()],
            flags: vec![],
            tags: vec![],
            creation_time: Some(time),
            creation_host: Some(host.into()),
            segments: vec![Segment {
                start_extent: 0,
                extent_count: origin_extents,
                seg_type: "snapshot".into(),
                body,
            }],
            extra: vec![],
        });
        if let Err(e) = self.validate() {
            *self = before;
            return Err(e);
        }
        Ok(())
    }

    /// Add labelled PVs (vgextend).
    pub fn add_pvs(&mut self, pvs: &[(PvHeader, Option<String>)]) -> Result<(), LvmError> {
        let mut tmp = Vg::create(&self.name, self.extent_size, pvs)?;
        for p in &tmp.pvs {
            if self.pvs.iter().any(|q| q.id == p.id) {
                return Err(invalid(format!(
                    "Physical volume {} is already in volume group {}",
                    p.device.as_deref().unwrap_or("?"),
                    self.name
                )));
            }
        }
        let base = self.pvs.len();
        for (i, mut p) in tmp.pvs.drain(..).enumerate() {
            p.name = format!("pv{}", base + i);
            self.pvs.push(p);
        }
        self.validate()
    }

    /// Remove an unused PV (vgreduce); the rest are renamed `pv0…` in order, as lvm2 names
    /// them when it writes.
    pub fn remove_pv(&mut self, id: &LvmId) -> Result<Pv, LvmError> {
        let Some(i) = self.pvs.iter().position(|p| &p.id == id) else {
            return Err(LvmError::NotFound(format!(
                "PV {id} is not in VG {}",
                self.name
            )));
        };
        let pname = self.pvs[i].name.clone();
        let used = self
            .lvs
            .iter()
            .flat_map(|l| &l.segments)
            .filter(|s| s.seg_type == "striped")
            .any(|s| {
                s.stripes()
                    .is_ok_and(|v| v.iter().any(|(p, _)| *p == pname))
            });
        if used {
            return Err(invalid(format!(
                "Physical volume \"{}\" still in use",
                self.pvs[i].device.as_deref().unwrap_or(&pname)
            )));
        }
        if self.pvs.len() == 1 {
            return Err(invalid(format!(
                "Can't remove final physical volume from volume group \"{}\"",
                self.name
            )));
        }
        let gone = self.pvs.remove(i);
        let map: Vec<(String, String)> = self
            .pvs
            .iter()
            .enumerate()
            .map(|(k, p)| (p.name.clone(), format!("pv{k}")))
            .collect();
        for (p, (_, new)) in self.pvs.iter_mut().zip(&map) {
            p.name = new.clone();
        }
        for s in self.lvs.iter_mut().flat_map(|l| l.segments.iter_mut()) {
            if s.seg_type != "striped" {
                continue;
            }
            for it in s.body.iter_mut() {
                if let Item::Pair {
                    key,
                    value: Value::Array(v, _),
                    ..
                } = it
                {
                    if key == "stripes" {
                        for x in v.iter_mut() {
                            if let Some((_, new)) =
                                map.iter().find(|m| Some(m.0.as_str()) == x.as_str())
                            {
                                *x = Value::str(new);
                            }
                        }
                    }
                }
            }
        }
        self.validate()?;
        Ok(gone)
    }

    /// Run an allocation `f` that may only use the PVs named in `pvs` (all when empty):
    /// the free extents of the others are held meanwhile. Unchanged when `f` fails.
    pub fn allocate_on<T>(
        &mut self,
        pvs: &[String],
        f: impl FnOnce(&mut Vg) -> Result<T, LvmError>,
    ) -> Result<T, LvmError> {
        if pvs.is_empty() {
            return f(self);
        }
        let mut tmp = self.clone();
        let mut segments = Vec::new();
        let mut at = 0;
        for p in self.pvs.iter().filter(|p| !pvs.contains(&p.name)) {
            for (start, len) in self.free_runs(&p.name) {
                segments.push(Segment::striped(at, len, 0, &[(&p.name, start)]));
                at += len;
            }
        }
        let hold = "udm\u{1}held";
        tmp.lvs.push(Lv {
            name: hold.into(),
            id: LvmId::random(),
            status: vec![],
            flags: vec![],
            tags: vec![],
            creation_time: None,
            creation_host: None,
            segments,
            extra: vec![],
        });
        let r = f(&mut tmp)?;
        tmp.lvs.retain(|l| l.name != hold);
        *self = tmp;
        Ok(r)
    }

    /// [`Vg::create_lv`] with no name checks (internal scratch allocations).
    fn create_lv_unchecked(
        &mut self,
        name: &str,
        extents: u64,
        stripes: usize,
        stripe_size: u64,
    ) -> Result<(), LvmError> {
        let mut tmp = self.clone();
        tmp.create_lv(name, extents, stripes, stripe_size, "", 0)?;
        let lv = tmp.lvs.pop().expect("just made");
        self.lvs.push(lv);
        Ok(())
    }
}

/// A string key of a segment.
pub fn seg_str<'a>(s: &'a Segment, key: &str) -> Option<&'a str> {
    s.get(key).and_then(Value::as_str)
}

/// Segments moved to start at extent `off`.
fn renumber(segs: &[Segment], off: u64) -> Vec<Segment> {
    let mut at = off;
    segs.iter()
        .map(|s| {
            let mut s = s.clone();
            s.start_extent = at;
            at += s.extent_count;
            s
        })
        .collect()
}

/// Join neighbouring linear segments that continue on the same PV, as lvm2 does.
fn merge_segments(lv: &mut Lv) {
    let mut out: Vec<Segment> = Vec::new();
    for s in lv.segments.drain(..) {
        if let Some(prev) = out.last_mut() {
            let a = prev.stripes().ok();
            let b = s.stripes().ok();
            if let (Some(a), Some(b)) = (a, b) {
                if prev.seg_type == "striped"
                    && s.seg_type == "striped"
                    && a.len() == b.len()
                    && prev.stripe_size() == s.stripe_size()
                    && a.iter()
                        .zip(&b)
                        .all(|(x, y)| x.0 == y.0 && x.1 + prev.extent_count / a.len() as u64 == y.1)
                {
                    let refs: Vec<(&str, u64)> = a.iter().map(|(p, e)| (p.as_str(), *e)).collect();
                    *prev = Segment::striped(
                        prev.start_extent,
                        prev.extent_count + s.extent_count,
                        prev.stripe_size().unwrap_or(0),
                        &refs,
                    );
                    continue;
                }
            }
        }
        out.push(s);
    }
    lv.segments = out;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::lvm::label::DiskLocn;

    /// A PV header for a `mib` MiB PV with one 1 MiB metadata area (lvm2's default layout).
    pub(crate) fn hdr(mib: u64) -> (PvHeader, Option<String>) {
        let h = PvHeader {
            label_sector: 1,
            pv_uuid: LvmId::random(),
            device_size: mib << 20,
            data_areas: vec![DiskLocn {
                offset: 1 << 20,
                size: 0,
            }],
            metadata_areas: vec![DiskLocn {
                offset: 4096,
                size: (1 << 20) - 4096,
            }],
            ext_version: 2,
            ext_flags: 0,
            bootloader_areas: vec![],
        };
        (h, None)
    }

    #[test]
    fn sizes_and_extents_parse_as_lvm2_reads_them() {
        assert_eq!(
            parse_size("20").unwrap(),
            SizeArg::Sectors(Sign::Set, 40960)
        );
        assert_eq!(
            parse_size("+1.5g").unwrap(),
            SizeArg::Sectors(Sign::Plus, 3 << 20)
        );
        assert_eq!(
            parse_size("-4M").unwrap(),
            SizeArg::Sectors(Sign::Minus, 8192)
        );
        assert_eq!(parse_size("64K").unwrap(), SizeArg::Sectors(Sign::Set, 128));
        assert_eq!(parse_size("1000b").unwrap(), SizeArg::Sectors(Sign::Set, 2));
        assert!(parse_size("12Q").is_err() && parse_size("x").is_err());
        assert_eq!(
            parse_extents("100%FREE").unwrap(),
            SizeArg::Percent(Sign::Set, 100, PercentOf::Free)
        );
        assert_eq!(
            parse_extents("+3").unwrap(),
            SizeArg::Extents(Sign::Plus, 3)
        );
        assert!(parse_extents("150%VG").is_err());
        let mut vg = Vg::create("vg", 8192, &[hdr(101), hdr(101)]).unwrap();
        assert_eq!(vg.free_extents(), 50);
        let (e, r) = vg.extents_for(parse_size("30M").unwrap(), 0, None).unwrap();
        assert_eq!((e, r.to_extent), (8, Some(8 * 8192)));
        vg.create_lv("a", 10, 1, 0, "h", 0).unwrap();
        let (e, _) = vg
            .extents_for(parse_extents("50%FREE").unwrap(), 0, None)
            .unwrap();
        assert_eq!(e, 20);
        let (e, _) = vg
            .extents_for(parse_extents("50%VG").unwrap(), 0, None)
            .unwrap();
        assert_eq!(e, 25);
        assert!(vg
            .extents_for(parse_extents("-11").unwrap(), 10, None)
            .is_err());
    }

    #[test]
    fn extend_continues_then_allocates_and_reduce_cuts() {
        let mut vg = Vg::create("vg", 8192, &[hdr(41), hdr(41)]).unwrap();
        vg.create_lv("a", 2, 1, 0, "h", 0).unwrap();
        vg.extend_lv("a", 4, None).unwrap();
        // Contiguous growth merges into one segment.
        assert_eq!(vg.lv("a").unwrap().segments.len(), 1);
        vg.create_lv("b", 1, 1, 0, "h", 0).unwrap();
        vg.extend_lv("a", 12, None).unwrap();
        let a = vg.lv("a").unwrap();
        let areas: Vec<_> = a.segments.iter().map(|s| s.stripes().unwrap()).collect();
        assert_eq!(
            areas,
            [
                vec![("pv0".to_string(), 0)],
                vec![("pv0".to_string(), 5)],
                vec![("pv1".to_string(), 0)]
            ]
        );
        assert_eq!(a.extents(), 12);
        let before = vg.clone();
        assert!(vg.extend_lv("a", 100, None).is_err());
        assert_eq!(vg, before, "a failed extend changes nothing");
        vg.reduce_lv("a", 3).unwrap();
        assert_eq!(vg.lv("a").unwrap().extents(), 3);
        assert_eq!(vg.lv("a").unwrap().segments.len(), 1);
    }

    #[test]
    fn snapshots_rename_remove_and_pv_removal() {
        let mut vg = Vg::create("vg", 8192, &[hdr(41), hdr(41), hdr(41)]).unwrap();
        vg.create_lv("o", 2, 1, 0, "h", 0).unwrap();
        vg.create_snapshot("s", "o", 1, 8, "h", 0).unwrap();
        assert!(!vg.lv("s").unwrap().visible());
        let snap = vg.lv("snapshot0").unwrap();
        assert!(snap.visible());
        assert_eq!(seg_str(&snap.segments[0], "cow_store"), Some("s"));
        assert_eq!(snap.segments[0].extent_count, 2);
        vg.rename_lv("o", "origin").unwrap();
        let snap = vg.lv("snapshot0").unwrap();
        assert_eq!(seg_str(&snap.segments[0], "origin"), Some("origin"));
        assert!(vg.rename_lv("origin", "snapshot9").is_err());
        assert!(vg.remove_lv("origin", false).is_err());
        assert_eq!(vg.remove_lv("s", false).unwrap(), ["s"]);
        assert!(vg.lv("snapshot0").is_none());
        // A PV in the middle goes: the others become pv0, pv1 and segments follow.
        vg.remove_lv("origin", false).unwrap();
        vg.create_lv("x", 2, 1, 0, "h", 0).unwrap();
        vg.create_lv("y", 12, 1, 0, "h", 0).unwrap();
        let third = vg.pvs[2].id;
        let second = vg.pvs[1].id;
        assert!(vg.remove_pv(&second).is_err(), "pv1 holds y");
        vg.remove_lv("y", false).unwrap();
        let mut w = vg.lv("x").unwrap().clone();
        w.name = "w".into();
        w.segments = vec![Segment::striped(0, 1, 0, &[("pv2", 3)])];
        vg.lvs.push(w);
        vg.remove_pv(&second).unwrap();
        assert_eq!(vg.pvs[1].id, third);
        assert_eq!(vg.pvs[1].name, "pv1");
        let w = vg.lv("w").unwrap();
        assert_eq!(w.segments[0].stripes().unwrap(), [("pv1".to_string(), 3)]);
    }
}
