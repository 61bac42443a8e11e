//! The devices lvm2 activates for thin and cache LVs, as it names and loads them:
//!
//! - a thin pool: `vg-P_tmeta` (uuid `-tmeta`) and `vg-P_tdata` (`-tdata`) under the
//!   `thin-pool` device (`-tpool`), which is `vg-P-tpool` with a `linear` `vg-P` (`-pool`)
//!   over it when thin volumes use the pool, and `vg-P` itself while none does;
//! - a thin volume: the pool's devices, then `thin <tpool> <device_id>`;
//! - a cache over a cache pool: `vg-C_cdata` (`-cdata`), `vg-C_cmeta` (`-cmeta`), the origin
//!   `vg-O_corig` (`-real`), then `cache`; over a cache volume: `vg-V` (`-cvol`) with
//!   `vg-V-cmeta` and `vg-V-cdata` carved from it, the origin, then `cache`. The policy is
//!   the cache pool's (`mq` when none is given, as lvm2 reads a cache volume's).

use super::{dm_name, dm_uuid, plain, DmDev, DmLine, Mode, PvDev};
use crate::lvm::edit::seg_str;
use crate::lvm::model::{Lv, Segment, Vg};
use crate::lvm::text::{Item, Value};
use crate::lvm::LvmError;

/// A segment type without lvm2's `+FLAG` suffixes.
pub fn base_type(seg: &Segment) -> &str {
    seg.seg_type.split('+').next().unwrap_or("")
}

fn lv_by<'a>(vg: &'a Vg, name: &str, what: &str) -> Result<&'a Lv, LvmError> {
    vg.lv(name)
        .ok_or_else(|| LvmError::Invalid(format!("{}: {what} {name} not found", vg.name)))
}

fn int(seg: &Segment, key: &str) -> Option<i64> {
    seg.get(key).and_then(Value::as_int)
}

/// Everything the callers need to build devices.
pub(super) struct Ctx<'a> {
    pub vg: &'a Vg,
    pub dev: PvDev<'a>,
    pub mode: Mode,
    pub mapper: &'a dyn Fn(&str) -> String,
    /// The visible LV being activated.
    pub top: &'a str,
}

impl Ctx<'_> {
    pub(super) fn dev(&self, name: String, uuid: String, table: Vec<DmLine>, owner: &str) -> DmDev {
        DmDev {
            name,
            uuid,
            table,
            read_only: false,
            lv: owner.into(),
            replace: false,
            shared: owner != self.top,
        }
    }

    /// A hidden sub-LV as one device of its own (`vg-NAME`, uuid with `layer`).
    fn sub(&self, name: &str, layer: &str, owner: &str) -> Result<DmDev, LvmError> {
        let lv = lv_by(self.vg, name, "sub-volume")?;
        Ok(self.dev(
            dm_name(&self.vg.name, name, None),
            dm_uuid(self.vg, lv, Some(layer)),
            plain(self.vg, lv, self.dev, self.mode)?,
            owner,
        ))
    }
}

/// True when some thin volume uses pool `pool`.
pub fn pool_used(vg: &Vg, pool: &str) -> bool {
    vg.lvs.iter().any(|l| {
        l.segments
            .iter()
            .any(|s| base_type(s) == "thin" && seg_str(s, "thin_pool") == Some(pool))
    })
}

/// The `thin-pool` parameters of a pool segment over the named devices.
fn pool_params(seg: &Segment, meta: &str, data: &str) -> String {
    let chunk = int(seg, "chunk_size").unwrap_or(128);
    let mut feats = Vec::new();
    if int(seg, "zero_new_blocks") == Some(0) {
        feats.push("skip_block_zeroing");
    }
    match seg_str(seg, "discards") {
        Some("ignore") => feats.push("ignore_discard"),
        Some("nopassdown") => feats.push("no_discard_passdown"),
        _ => {}
    }
    if int(seg, "error_when_full") == Some(1) {
        feats.push("error_if_no_space");
    }
    let mut p = format!("{meta} {data} {chunk} 0 {}", feats.len());
    for f in feats {
        p.push(' ');
        p.push_str(f);
    }
    p
}

/// The devices of thin pool `pool` up to its `thin-pool` device (and, when `with_top`,
/// the pool LV's own device); returns them and the name of the `thin-pool` device.
pub(super) fn thin_pool(
    c: &Ctx,
    pool: &str,
    with_top: bool,
) -> Result<(Vec<DmDev>, String), LvmError> {
    let vg = c.vg;
    let lv = lv_by(vg, pool, "thin pool")?;
    let seg = lv
        .segments
        .first()
        .ok_or_else(|| LvmError::Invalid(format!("thin pool {pool} has no segment")))?;
    let meta = seg_str(seg, "metadata").unwrap_or("");
    let data = seg_str(seg, "pool").unwrap_or("");
    let mut devs = vec![c.sub(meta, "tmeta", pool)?, c.sub(data, "tdata", pool)?];
    let size = lv.extents() * vg.extent_size;
    let used = pool_used(vg, pool);
    let tpool = if used {
        dm_name(&vg.name, pool, Some("tpool"))
    } else {
        dm_name(&vg.name, pool, None)
    };
    devs.push(c.dev(
        tpool.clone(),
        dm_uuid(vg, lv, Some("tpool")),
        vec![DmLine {
            start: 0,
            len: size,
            ttype: "thin-pool".into(),
            params: pool_params(seg, &(c.mapper)(&devs[0].name), &(c.mapper)(&devs[1].name)),
        }],
        pool,
    ));
    if used && with_top {
        devs.push(c.dev(
            dm_name(&vg.name, pool, None),
            dm_uuid(vg, lv, Some("pool")),
            vec![DmLine {
                start: 0,
                len: size,
                ttype: "linear".into(),
                params: format!("{} 0", (c.mapper)(&tpool)),
            }],
            pool,
        ));
    }
    Ok((devs, tpool))
}

/// A thin volume: its pool's devices, then its own `thin` device.
pub(super) fn thin(c: &Ctx, lv: &Lv, seg: &Segment) -> Result<Vec<DmDev>, LvmError> {
    let pool = seg_str(seg, "thin_pool").unwrap_or("");
    let (mut devs, tpool) = thin_pool(c, pool, false)?;
    let id = int(seg, "device_id")
        .ok_or_else(|| LvmError::Invalid(format!("thin volume {} has no device_id", lv.name)))?;
    let mut params = format!("{} {id}", (c.mapper)(&tpool));
    // An external origin is read through its own read-only `-real` layer.
    if let Some(ext) = seg_str(seg, "external_origin") {
        let o = lv_by(c.vg, ext, "external origin")?;
        let real = DmDev {
            read_only: true,
            ..c.dev(
                dm_name(&c.vg.name, ext, Some("real")),
                dm_uuid(c.vg, o, Some("real")),
                plain(c.vg, o, c.dev, c.mode)?,
                ext,
            )
        };
        params.push(' ');
        params.push_str(&(c.mapper)(&real.name));
        devs.push(real);
    }
    devs.push(c.dev(
        dm_name(&c.vg.name, &lv.name, None),
        dm_uuid(c.vg, lv, None),
        vec![DmLine {
            start: 0,
            len: lv.extents() * c.vg.extent_size,
            ttype: "thin".into(),
            params,
        }],
        &lv.name,
    ));
    Ok(devs)
}

/// The policy settings of a cache or cache-pool segment as `N key value …`.
fn settings(seg: &Segment) -> String {
    let kv: Vec<String> = seg
        .body
        .iter()
        .find_map(|i| match i {
            Item::Section { name, items } if name == "policy_settings" => Some(items),
            _ => None,
        })
        .into_iter()
        .flatten()
        .filter_map(|i| match i {
            Item::Pair { key, value, .. } => Some(format!(
                "{key} {}",
                value.as_int().map_or_else(
                    || value.as_str().unwrap_or("").to_string(),
                    |n| n.to_string()
                )
            )),
            _ => None,
        })
        .collect();
    let mut s = (kv.len() * 2).to_string();
    for p in kv {
        s.push(' ');
        s.push_str(&p);
    }
    s
}

/// A cached LV: the cache pool's (or cache volume's) devices, the origin, then `cache`.
pub(super) fn cache(c: &Ctx, lv: &Lv, seg: &Segment) -> Result<Vec<DmDev>, LvmError> {
    let vg = c.vg;
    let pool_name = seg_str(seg, "cache_pool").unwrap_or("");
    let pool = lv_by(vg, pool_name, "cache pool")?;
    let origin_name = seg_str(seg, "origin").unwrap_or("");
    let origin = lv_by(vg, origin_name, "cache origin")?;
    let me = lv.name.as_str();
    let mut devs = Vec::new();
    let pool_seg = pool.segments.first();
    let cachevol = pool.flags.iter().any(|f| f == "CACHE_VOL");
    // Settings come from the cache segment with a cache volume, else from the pool.
    let setting = if cachevol { Some(seg) } else { pool_seg };
    let (meta, data) = if cachevol {
        let v = c.dev(
            dm_name(&vg.name, pool_name, None),
            dm_uuid(vg, pool, Some("cvol")),
            plain(vg, pool, c.dev, c.mode)?,
            me,
        );
        let over = (c.mapper)(&v.name);
        let part = |layer: &str, start: &str, len: &str| -> Result<DmDev, LvmError> {
            let (s, l) = (int(seg, start), int(seg, len));
            let (Some(s), Some(l)) = (s, l) else {
                return Err(LvmError::Invalid(format!(
                    "cache {me}: {start}/{len} missing for cache volume {pool_name}"
                )));
            };
            Ok(c.dev(
                dm_name(&vg.name, pool_name, Some(layer)),
                dm_uuid(vg, pool, Some(layer)),
                vec![DmLine {
                    start: 0,
                    len: l as u64,
                    ttype: "linear".into(),
                    params: format!("{over} {s}"),
                }],
                me,
            ))
        };
        let m = part("cmeta", "metadata_start", "metadata_len")?;
        let d = part("cdata", "data_start", "data_len")?;
        devs.push(v);
        devs.push(d);
        devs.push(m);
        let (dn, mn) = (devs[1].name.clone(), devs[2].name.clone());
        (mn, dn)
    } else {
        let ps = pool_seg
            .ok_or_else(|| LvmError::Invalid(format!("cache pool {pool_name} has no segment")))?;
        let d = c.sub(seg_str(ps, "data").unwrap_or(""), "cdata", me)?;
        let m = c.sub(seg_str(ps, "metadata").unwrap_or(""), "cmeta", me)?;
        let (dn, mn) = (d.name.clone(), m.name.clone());
        devs.push(d);
        devs.push(m);
        (mn, dn)
    };
    let o = c.dev(
        dm_name(&vg.name, origin_name, None),
        dm_uuid(vg, origin, Some("real")),
        plain(vg, origin, c.dev, c.mode)?,
        me,
    );
    let oname = o.name.clone();
    devs.push(o);
    let st = setting.ok_or_else(|| LvmError::Invalid(format!("cache {me}: no settings")))?;
    let chunk = int(st, "chunk_size").unwrap_or(128);
    let mode = seg_str(st, "cache_mode").unwrap_or("writethrough");
    let feats = if int(st, "metadata_format") == Some(2) {
        format!("2 metadata2 {mode}")
    } else {
        format!("1 {mode}")
    };
    // lvm2 takes the policy name from the pool's first segment: a cache volume has none.
    let policy = if int(seg, "cleaner") == Some(1) {
        "cleaner"
    } else {
        pool_seg.and_then(|s| seg_str(s, "policy")).unwrap_or("mq")
    };
    let m = &c.mapper;
    devs.push(c.dev(
        dm_name(&vg.name, me, None),
        dm_uuid(vg, lv, None),
        vec![DmLine {
            start: 0,
            len: lv.extents() * vg.extent_size,
            ttype: "cache".into(),
            params: format!(
                "{} {} {} {chunk} {feats} {policy} {}",
                m(&meta),
                m(&data),
                m(&oname),
                settings(st)
            ),
        }],
        me,
    ));
    Ok(devs)
}
