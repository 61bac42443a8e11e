//! Thin pools, thin volumes, cache pools and caches as lvm2 writes them: a thin pool is a
//! visible `thin-pool` LV over hidden `P_tmeta` and `P_tdata` with a spare `lvol0_pmspare`
//! as large as the biggest pool metadata; a thin volume a `thin` LV with the next
//! `device_id` (the pool's `transaction_id` counts the messages sent); a cache pool a hidden
//! `cache-pool` LV over `C_cdata`/`C_cmeta`; a cached LV a `cache` LV over its origin renamed
//! `O_corig`, with a cache pool (renamed `C_cpool`) or a cache volume (flag `CACHE_VOL`,
//! renamed `V_cvol`, metadata and data carved from it).

use super::dmplan::pools::base_type;
use super::edit::seg_str;
use super::label::LvmId;
use super::model::{Lv, Segment, Vg};
use super::text::{Item, Value};
use super::LvmError;

/// lvm2's smallest pool metadata (2 MiB, in sectors).
pub const MIN_POOL_METADATA: u64 = 4096;
/// lvm2's largest thin pool metadata without cropping (in sectors).
pub const MAX_THIN_METADATA: u64 = 33_292_800;

fn refused(m: String) -> LvmError {
    LvmError::Refused(m)
}

/// The thin pool metadata size lvm2 picks for `data` sectors in `chunk`-sector chunks
/// (64 bytes per chunk, at least 2 MiB), in whole extents of `extent` sectors.
pub fn thin_metadata_extents(data: u64, chunk: u64, extent: u64) -> u64 {
    let want = (data / (chunk * 8)).clamp(MIN_POOL_METADATA, MAX_THIN_METADATA);
    want.div_ceil(extent)
}

/// lvm2's smallest cache metadata for `data` sectors in `chunk`-sector chunks (sectors):
/// 4 MiB for the transaction plus 44 bytes per chunk.
pub fn cache_min_metadata(data: u64, chunk: u64) -> u64 {
    (4096 * 1024 + (data / chunk) * (16 + 20 + 8)).div_ceil(512)
}

/// The largest data a thin pool with `chunk`-sector chunks can address (sectors).
pub fn thin_max_data(chunk: u64) -> u64 {
    MAX_THIN_METADATA * chunk * 8
}

/// Options of a new thin pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinPoolOpts {
    /// Chunk size in sectors.
    pub chunk: u64,
    pub zero: bool,
    /// `passdown`, `nopassdown` or `ignore`.
    pub discards: &'static str,
}

impl Default for ThinPoolOpts {
    fn default() -> Self {
        ThinPoolOpts {
            chunk: 128,
            zero: true,
            discards: "passdown",
        }
    }
}

impl Vg {
    pub(crate) fn lv_mut(&mut self, name: &str) -> Result<&mut Lv, LvmError> {
        let vg = self.name.clone();
        self.lvs.iter_mut().find(|l| l.name == name).ok_or_else(|| {
            LvmError::NotFound(format!("Failed to find logical volume \"{vg}/{name}\""))
        })
    }

    fn lv_index(&self, name: &str) -> Option<usize> {
        self.lvs.iter().position(|l| l.name == name)
    }

    pub(crate) fn hide(&mut self, name: &str) -> Result<(), LvmError> {
        self.lv_mut(name)?.status.retain(|s| s != "VISIBLE");
        Ok(())
    }

    /// Make sure `lvol0_pmspare` (the pool metadata spare) has at least `extents`.
    pub(crate) fn ensure_spare(
        &mut self,
        extents: u64,
        host: &str,
        time: i64,
    ) -> Result<(), LvmError> {
        let spare = self
            .lvs
            .iter()
            .find(|l| l.name.ends_with("_pmspare"))
            .map(|l| (l.name.clone(), l.extents()));
        match spare {
            Some((_, have)) if have >= extents => Ok(()),
            Some((name, _)) => self.extend_lv(&name, extents, None),
            None => {
                self.create_lv("lvol0_pmspare", extents, 1, 0, host, time)?;
                self.hide("lvol0_pmspare")
            }
        }
    }

    /// Allocate a linear LV preferring PVs that `avoid` does not use (lvm2 keeps pool
    /// metadata off the data's PVs when it can).
    pub(crate) fn create_apart(
        &mut self,
        name: &str,
        extents: u64,
        avoid: &str,
        host: &str,
        time: i64,
    ) -> Result<(), LvmError> {
        let used: Vec<String> = self
            .lv(avoid)
            .map(|l| {
                l.segments
                    .iter()
                    .flat_map(|s| s.stripes().unwrap_or_default())
                    .map(|a| a.0)
                    .collect()
            })
            .unwrap_or_default();
        let others: Vec<String> = self
            .pvs
            .iter()
            .filter(|p| !used.contains(&p.name))
            .filter(|p| self.free_runs(&p.name).iter().map(|r| r.1).sum::<u64>() >= extents)
            .map(|p| p.name.clone())
            .collect();
        if others.is_empty() {
            self.create_lv(name, extents, 1, 0, host, time).map(|_| ())
        } else {
            self.allocate_on(&others, |vg| {
                vg.create_lv(name, extents, 1, 0, host, time).map(|_| ())
            })
        }
    }

    /// `lvcreate -T VG/NAME -L SIZE`: a thin pool of `extents` data extents (striped when
    /// `stripes` > 1), its metadata and the spare. Unchanged on failure.
    pub fn create_thin_pool(
        &mut self,
        name: &str,
        extents: u64,
        stripes: (usize, u64),
        opts: ThinPoolOpts,
        host: &str,
        time: i64,
    ) -> Result<(), LvmError> {
        let before = self.clone();
        let r = self.thin_pool_inner(name, extents, stripes, opts, host, time);
        if r.is_err() {
            *self = before;
        }
        r
    }

    fn thin_pool_inner(
        &mut self,
        name: &str,
        extents: u64,
        stripes: (usize, u64),
        opts: ThinPoolOpts,
        host: &str,
        time: i64,
    ) -> Result<(), LvmError> {
        if self.lv(name).is_some() {
            return Err(refused(format!(
                "Logical Volume \"{name}\" already exists in volume group \"{}\"",
                self.name
            )));
        }
        if opts.chunk > extents * self.extent_size {
            return Err(refused(format!(
                "Size of thin-pool data volume cannot be smaller than chunk size {}.",
                crate::lvm::report::long_size(opts.chunk)
            )));
        }
        let meta = thin_metadata_extents(extents * self.extent_size, opts.chunk, self.extent_size);
        self.ensure_spare(meta, host, time)?;
        let (tdata, tmeta) = (format!("{name}_tdata"), format!("{name}_tmeta"));
        self.create_lv(&tdata, extents, stripes.0, stripes.1, host, time)?;
        self.create_apart(&tmeta, meta, &tdata, host, time)?;
        self.hide(&tdata)?;
        self.hide(&tmeta)?;
        // lvm2 lists the metadata before the data.
        let (d, m) = (self.lv_index(&tdata), self.lv_index(&tmeta));
        if let (Some(d), Some(m)) = (d, m) {
            let lv = self.lvs.remove(m);
            self.lvs.insert(d, lv);
        }
        let body = vec![
            Item::pair("metadata", Value::str(&tmeta)),
            Item::pair("pool", Value::str(&tdata)),
            Item::pair("transaction_id", Value::Int(0)),
            Item::pair("chunk_size", Value::Int(opts.chunk as i64)),
            Item::pair("discards", Value::str(opts.discards)),
            Item::pair("zero_new_blocks", Value::Int(i64::from(opts.zero))),
        ];
        self.push_virtual(name, extents, "thin-pool", body, host, time);
        self.validate()
    }

    /// Add a visible LV of one non-striped segment.
    fn push_virtual(
        &mut self,
        name: &str,
        extents: u64,
        ty: &str,
        body: Vec<Item>,
        host: &str,
        time: i64,
    ) {
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
                seg_type: ty.into(),
                body,
            }],
            extra: vec![],
        });
    }

    /// `lvcreate -V SIZE -T VG/POOL -n NAME`: a thin volume of `extents` virtual extents
    /// with the next free device id; the pool's transaction id goes up by one. Returns the
    /// device id and the pool's transaction id before (for `create_thin ID` and
    /// `set_transaction_id OLD OLD+1`).
    pub fn create_thin(
        &mut self,
        name: &str,
        pool: &str,
        extents: u64,
        host: &str,
        time: i64,
    ) -> Result<(u64, u64), LvmError> {
        let vgname = self.name.clone();
        let p = self.lv(pool).ok_or_else(|| {
            LvmError::NotFound(format!("Failed to find logical volume \"{vgname}/{pool}\""))
        })?;
        if p.segments.first().map(base_type) != Some("thin-pool") {
            return Err(refused(format!(
                "Logical volume {vgname}/{pool} is not a thin pool."
            )));
        }
        if self.lv(name).is_some() {
            return Err(refused(format!(
                "Logical Volume \"{name}\" already exists in volume group \"{vgname}\""
            )));
        }
        let id = self
            .lvs
            .iter()
            .flat_map(|l| &l.segments)
            .filter(|s| base_type(s) == "thin" && seg_str(s, "thin_pool") == Some(pool))
            .filter_map(|s| s.get("device_id").and_then(Value::as_int))
            .max()
            .map_or(1, |m| m as u64 + 1);
        let seg = &mut self.lv_mut(pool)?.segments[0];
        let tid = seg
            .get("transaction_id")
            .and_then(Value::as_int)
            .unwrap_or(0) as u64;
        set_int(seg, "transaction_id", tid as i64 + 1);
        let body = vec![
            Item::pair("thin_pool", Value::str(pool)),
            Item::pair("transaction_id", Value::Int(tid as i64)),
            Item::pair("device_id", Value::Int(id as i64)),
        ];
        self.push_virtual(name, extents, "thin", body, host, time);
        self.validate()?;
        Ok((id, tid))
    }

    /// `lvcreate -s VG/THIN` (no size): a thin snapshot of thin volume `origin` in its
    /// pool, or with `external` set, `lvcreate -s --thinpool POOL VG/LV`: a thin volume in
    /// `pool` whose unprovisioned blocks read from the read-only LV `origin`. Either is as
    /// large as its origin; a thin snapshot is skipped by activation (`ACTIVATION_SKIP`),
    /// as lvm2 makes them. Returns the new device id, the pool's transaction id before, and the origin's
    /// device id for a thin snapshot (for `create_snap ID ORIGIN_ID`).
    pub fn create_thin_snapshot(
        &mut self,
        name: &str,
        origin: &str,
        external: Option<&str>,
        host: &str,
        time: i64,
    ) -> Result<(u64, u64, Option<u64>), LvmError> {
        let vgname = self.name.clone();
        let o = self.lv(origin).ok_or_else(|| {
            LvmError::NotFound(format!(
                "Failed to find logical volume \"{vgname}/{origin}\""
            ))
        })?;
        let seg = o.segments.first();
        let (pool, origin_id) = match external {
            Some(p) => {
                if o.status.iter().any(|s| s == "WRITE") {
                    return Err(refused(format!(
                        "Cannot use writable LV as the external origin {vgname}/{origin}."
                    )));
                }
                (p.to_string(), None)
            }
            None => match seg {
                Some(s) if base_type(s) == "thin" => (
                    seg_str(s, "thin_pool").unwrap_or("").to_string(),
                    s.get("device_id").and_then(Value::as_int).map(|i| i as u64),
                ),
                _ => {
                    return Err(refused(format!(
                        "Please specify either size or extents with snapshots of {vgname}/{origin}."
                    )))
                }
            },
        };
        let extents = o.extents();
        let before = self.clone();
        let (id, tid) = match self.create_thin(name, &pool, extents, host, time) {
            Ok(x) => x,
            Err(e) => {
                *self = before;
                return Err(e);
            }
        };
        let lv = self.lv_mut(name)?;
        let key = if external.is_some() {
            "external_origin"
        } else {
            lv.flags.push("ACTIVATION_SKIP".into());
            "origin"
        };
        lv.segments[0]
            .body
            .push(Item::pair(key, Value::str(origin)));
        Ok((id, tid, origin_id))
    }

    /// `lvcreate --type cache-pool -n NAME -L SIZE`: a cache pool over `NAME_cdata` and
    /// `NAME_cmeta` (lvm2's minimum cache metadata in whole extents), after the spare.
    pub fn create_cache_pool(
        &mut self,
        name: &str,
        extents: u64,
        chunk: u64,
        host: &str,
        time: i64,
    ) -> Result<(), LvmError> {
        let before = self.clone();
        let r = (|| {
            let meta =
                cache_min_metadata(extents * self.extent_size, chunk).div_ceil(self.extent_size);
            self.ensure_spare(meta, host, time)?;
            let (cdata, cmeta) = (format!("{name}_cdata"), format!("{name}_cmeta"));
            self.create_lv(&cmeta, meta, 1, 0, host, time)?;
            self.create_lv(&cdata, extents, 1, 0, host, time)?;
            self.hide(&cdata)?;
            self.hide(&cmeta)?;
            let body = vec![
                Item::pair("data", Value::str(&cdata)),
                Item::pair("metadata", Value::str(&cmeta)),
                Item::pair("metadata_format", Value::Int(2)),
                Item::pair("chunk_size", Value::Int(chunk as i64)),
                Item::pair("cache_mode", Value::str("writethrough")),
                Item::pair("policy", Value::str("smq")),
            ];
            self.push_virtual(
                name,
                extents,
                "cache-pool+METADATA_FORMAT",
                body,
                host,
                time,
            );
            self.validate()
        })();
        if r.is_err() {
            *self = before;
        }
        r
    }

    /// `lvconvert --type cache --cachepool POOL LV` or `--cachevol VOL LV`: LV becomes a
    /// `cache` LV over its data (renamed `LV_corig`), with the pool (renamed `POOL_cpool`)
    /// or the volume (renamed `VOL_cvol`, metadata first then data, each half as lvm2
    /// splits a small one) hidden under it.
    pub fn attach_cache(&mut self, lv: &str, pool: &str, chunk: u64) -> Result<(), LvmError> {
        let before = self.clone();
        let r = self.attach_inner(lv, pool, chunk);
        if r.is_err() {
            *self = before;
        }
        r
    }

    fn attach_inner(&mut self, lv: &str, pool: &str, chunk: u64) -> Result<(), LvmError> {
        let vgname = self.name.clone();
        let target = self.lv(lv).ok_or_else(|| {
            LvmError::NotFound(format!("Failed to find logical volume \"{vgname}/{lv}\""))
        })?;
        if target.segments.iter().any(|s| s.seg_type != "striped") {
            return Err(refused(format!(
                "Cache is not supported on {vgname}/{lv} (only linear and striped LVs)."
            )));
        }
        let p = self.lv(pool).ok_or_else(|| {
            LvmError::NotFound(format!("Failed to find logical volume \"{vgname}/{pool}\""))
        })?;
        let is_pool = p.segments.first().map(base_type) == Some("cache-pool");
        if !is_pool && p.segments.iter().any(|s| s.seg_type != "striped") {
            return Err(refused(format!(
                "{vgname}/{pool} is neither a cache pool nor a linear or striped LV."
            )));
        }
        let pool_extents = p.extents();
        let size = target.extents();
        let corig = format!("{lv}_corig");
        let new_pool = if is_pool {
            format!("{pool}_cpool")
        } else {
            format!("{pool}_cvol")
        };
        // The data moves to LV_corig; LV keeps its id and becomes the cache.
        let es = self.extent_size;
        let t = self.lv_mut(lv)?;
        let segments = std::mem::take(&mut t.segments);
        let orig = Lv {
            name: corig.clone(),
            id: LvmId::random(),
            status: vec!["READ".into(), "WRITE".into()],
            flags: vec![],
            tags: vec![],
            creation_time: t.creation_time,
            creation_host: t.creation_host.clone(),
            segments,
            extra: vec![],
        };
        let mut body = vec![
            Item::pair("cache_pool", Value::str(&new_pool)),
            Item::pair("origin", Value::str(&corig)),
        ];
        let seg_type = if is_pool {
            "cache".to_string()
        } else {
            // lvm2 splits a cache volume: metadata first (the cache minimum, at most half,
            // at least an extent, in whole extents), the rest data.
            let total = pool_extents * es;
            if pool_extents < 2 {
                return Err(refused(format!(
                    "The minimum cache size is two extents ({} bytes).",
                    crate::lvm::report::long_size(es * 2)
                )));
            }
            let meta = cache_min_metadata(total, chunk)
                .min(total / 2)
                .max(es)
                .div_ceil(es)
                * es;
            body.extend([
                Item::pair("metadata_format", Value::Int(2)),
                Item::pair("chunk_size", Value::Int(chunk as i64)),
                Item::pair("cache_mode", Value::str("writethrough")),
                Item::pair("policy", Value::str("smq")),
                Item::pair("metadata_start", Value::Int(0)),
                Item::pair("metadata_len", Value::Int(meta as i64)),
                Item::pair("data_start", Value::Int(meta as i64)),
                Item::pair("data_len", Value::Int((total - meta) as i64)),
            ]);
            "cache+CACHE_USES_CACHEVOL".to_string()
        };
        t.segments = vec![Segment {
            start_extent: 0,
            extent_count: size,
            seg_type,
            body,
        }];
        self.lvs.push(orig);
        let p = self.lv_mut(pool)?;
        p.name = new_pool.clone();
        p.status.retain(|s| s != "VISIBLE");
        if !is_pool {
            p.flags.push("CACHE_VOL".into());
        }
        // The pool's sub-LVs keep their names (`POOL_cdata` → as lvm2: `POOL_cpool_cdata`).
        if is_pool {
            for key in ["data", "metadata"] {
                let sub = self
                    .lv(&new_pool)
                    .and_then(|l| l.segments.first())
                    .and_then(|s| seg_str(s, key))
                    .map(String::from)
                    .unwrap_or_default();
                let renamed = sub.replacen(pool, &new_pool, 1);
                self.lv_mut(&sub)?.name = renamed.clone();
                let seg = &mut self.lv_mut(&new_pool)?.segments[0];
                set_str(seg, key, &renamed);
            }
        }
        self.validate()
    }
}

impl Vg {
    /// `lvconvert --type thin-pool|cache-pool VG/LV`: LV's extents become the data of a
    /// pool of the same name (the LV renamed `LV_tdata`/`LV_cdata`, hidden), with new
    /// metadata and the spare. Unchanged on failure.
    pub fn convert_to_pool(
        &mut self,
        lv: &str,
        thin: Option<ThinPoolOpts>,
        chunk: u64,
        host: &str,
        time: i64,
    ) -> Result<(), LvmError> {
        let before = self.clone();
        let r = (|| {
            let l = self.lv(lv).ok_or_else(|| {
                LvmError::NotFound(format!(
                    "Failed to find logical volume \"{}/{lv}\"",
                    self.name
                ))
            })?;
            if l.segments.iter().any(|s| s.seg_type != "striped") || !l.visible() {
                return Err(refused(format!(
                    "Converting {}/{lv} is not supported (only visible linear and striped LVs).",
                    self.name
                )));
            }
            let extents = l.extents();
            let data_sectors = extents * self.extent_size;
            let (data, meta_name, meta) = match thin {
                Some(o) => (
                    format!("{lv}_tdata"),
                    format!("{lv}_tmeta"),
                    thin_metadata_extents(data_sectors, o.chunk, self.extent_size),
                ),
                None => (
                    format!("{lv}_cdata"),
                    format!("{lv}_cmeta"),
                    cache_min_metadata(data_sectors, chunk).div_ceil(self.extent_size),
                ),
            };
            self.rename_lv(lv, &data)?;
            self.hide(&data)?;
            self.ensure_spare(meta, host, time)?;
            self.create_apart(&meta_name, meta, &data, host, time)?;
            self.hide(&meta_name)?;
            let body = match thin {
                Some(o) => vec![
                    Item::pair("metadata", Value::str(&meta_name)),
                    Item::pair("pool", Value::str(&data)),
                    Item::pair("transaction_id", Value::Int(0)),
                    Item::pair("chunk_size", Value::Int(o.chunk as i64)),
                    Item::pair("discards", Value::str(o.discards)),
                    Item::pair("zero_new_blocks", Value::Int(i64::from(o.zero))),
                ],
                None => vec![
                    Item::pair("data", Value::str(&data)),
                    Item::pair("metadata", Value::str(&meta_name)),
                    Item::pair("metadata_format", Value::Int(2)),
                    Item::pair("chunk_size", Value::Int(chunk as i64)),
                    Item::pair("cache_mode", Value::str("writethrough")),
                    Item::pair("policy", Value::str("smq")),
                ],
            };
            let ty = if thin.is_some() {
                "thin-pool"
            } else {
                "cache-pool+METADATA_FORMAT"
            };
            self.push_virtual(lv, extents, ty, body, host, time);
            self.validate()
        })();
        if r.is_err() {
            *self = before;
        }
        r
    }
}

fn set_int(seg: &mut Segment, key: &str, v: i64) {
    for i in &mut seg.body {
        if let Item::Pair { key: k, value, .. } = i {
            if k == key {
                *value = Value::Int(v);
                return;
            }
        }
    }
    seg.body.push(Item::pair(key, Value::Int(v)));
}

fn set_str(seg: &mut Segment, key: &str, v: &str) {
    for i in &mut seg.body {
        if let Item::Pair { key: k, value, .. } = i {
            if k == key {
                *value = Value::str(v);
                return;
            }
        }
    }
    seg.body.push(Item::pair(key, Value::str(v)));
}
