//! Resizing layered LVs and taking caches apart, as lvm2 does: a thin volume's virtual size
//! changes in place; a thin pool grows through its data sub-LV (`P_tdata`), its metadata
//! through `--poolmetadatasize` (`P_tmeta`, with the spare grown first to match); a cached
//! LV grows through its origin (`LV_corig`). `lvconvert --splitcache` gives the origin its
//! extents back and the cache pool or cache volume its own name; `--uncache` also removes it.

use super::dmplan::pools::base_type;
use super::edit::seg_str;
use super::model::{Segment, Vg};
use super::LvmError;

fn refused(m: String) -> LvmError {
    LvmError::Refused(m)
}

/// How a layered LV is resized: the sub-LV whose extents change (None for a thin volume).
pub fn resized_through(vg: &Vg, lv: &str) -> Option<Option<String>> {
    let seg = vg.lv(lv)?.segments.first()?;
    match base_type(seg) {
        "thin" => Some(None),
        "thin-pool" => Some(seg_str(seg, "pool").map(String::from)),
        "cache" => Some(seg_str(seg, "origin").map(String::from)),
        _ => None,
    }
}

impl Vg {
    /// Resize layered LV `name` (thin volume, thin pool, cached LV) to `extents`.
    /// Unchanged on failure.
    pub fn resize_layered(&mut self, name: &str, extents: u64) -> Result<(), LvmError> {
        let vgname = self.name.clone();
        let Some(through) = resized_through(self, name) else {
            return Err(refused(format!("{vgname}/{name} is not a layered LV.")));
        };
        let cur = self.lv(name).map_or(0, |l| l.extents());
        let before = self.clone();
        let r = (|| {
            match &through {
                None => {}
                Some(sub) if extents > cur => {
                    let have = self.lv(sub).map_or(0, |l| l.extents());
                    self.extend_lv(sub, have + extents - cur, None)?;
                }
                Some(_) => {
                    let what =
                        if base_type(&self.lv(name).expect("there").segments[0]) == "thin-pool" {
                            "Thin pool volumes"
                        } else {
                            "Cached volumes"
                        };
                    return Err(refused(format!("{what} cannot be reduced in size yet.")));
                }
            }
            let lv = self.lv_mut(name)?;
            lv.segments[0].extent_count = extents;
            self.validate()
        })();
        if r.is_err() {
            *self = before;
        }
        r
    }

    /// `lvextend --poolmetadatasize +SIZE VG/POOL`: the pool's metadata grows by `add`
    /// extents, the spare first to the new size (on the PVs the data does not use, the
    /// smallest free area that holds it), then the metadata itself, kept off the data's PVs
    /// when it can be. Returns the metadata LV's name. Unchanged on failure.
    pub fn extend_pool_metadata(&mut self, pool: &str, add: u64) -> Result<String, LvmError> {
        let vgname = self.name.clone();
        let seg = self
            .lv(pool)
            .and_then(|l| l.segments.first())
            .filter(|s| base_type(s) == "thin-pool")
            .ok_or_else(|| {
                refused(format!(
                    "Logical volume {vgname}/{pool} is not a thin pool."
                ))
            })?;
        let meta = seg_str(seg, "metadata").unwrap_or("").to_string();
        let data = seg_str(seg, "pool").unwrap_or("").to_string();
        let want = self.lv(&meta).map_or(0, |l| l.extents()) + add;
        let before = self.clone();
        let r = (|| {
            let data_pvs = self.pvs_of(&data);
            if let Some(spare) = self
                .lvs
                .iter()
                .find(|l| l.name.ends_with("_pmspare"))
                .map(|l| (l.name.clone(), l.extents()))
                .filter(|s| s.1 < want)
            {
                let need = want - spare.1;
                let fit = self
                    .pvs
                    .iter()
                    .filter(|p| !data_pvs.contains(&p.name))
                    .flat_map(|p| {
                        self.free_runs(&p.name)
                            .into_iter()
                            .map(|r| (r.1, p.name.clone(), r.0))
                            .collect::<Vec<_>>()
                    })
                    .filter(|r| r.0 >= need)
                    .min_by_key(|r| r.0);
                match fit {
                    Some((_, pv, start)) => {
                        let s = self.lv_mut(&spare.0)?;
                        s.segments
                            .push(Segment::striped(spare.1, need, 0, &[(&pv, start)]));
                    }
                    None => self.extend_lv(&spare.0, want, None)?,
                }
            }
            let others: Vec<String> = self
                .pvs
                .iter()
                .filter(|p| !data_pvs.contains(&p.name))
                .map(|p| p.name.clone())
                .collect();
            let have: u64 = others
                .iter()
                .map(|p| self.free_runs(p).iter().map(|r| r.1).sum::<u64>())
                .sum();
            if have >= add && !others.is_empty() {
                self.allocate_on(&others, |vg| vg.extend_lv(&meta, want, None))?;
            } else {
                self.extend_lv(&meta, want, None)?;
            }
            self.validate()
        })();
        if r.is_err() {
            *self = before;
        }
        r.map(|_| meta)
    }

    /// The PVs LV `name` has extents on.
    fn pvs_of(&self, name: &str) -> Vec<String> {
        self.lv(name)
            .map(|l| {
                l.segments
                    .iter()
                    .flat_map(|s| s.stripes().unwrap_or_default())
                    .map(|a| a.0)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `lvconvert --splitcache VG/LV` (`remove`: `--uncache`): LV takes its origin's
    /// extents back; the cache pool or cache volume gets its own name back and shows again,
    /// or goes. Returns the pool's name as restored. Unchanged on failure.
    pub fn split_cache(&mut self, lv: &str, remove: bool) -> Result<String, LvmError> {
        let vgname = self.name.clone();
        let seg = self
            .lv(lv)
            .and_then(|l| l.segments.first())
            .filter(|s| base_type(s) == "cache")
            .ok_or_else(|| refused(format!("Logical volume {vgname}/{lv} is not cached.")))?;
        let origin = seg_str(seg, "origin").unwrap_or("").to_string();
        let pool = seg_str(seg, "cache_pool").unwrap_or("").to_string();
        let before = self.clone();
        let r = (|| {
            let segments = self
                .lv(&origin)
                .map(|l| l.segments.clone())
                .ok_or_else(|| refused(format!("cache origin {origin} of {lv} not found")))?;
            self.lv_mut(lv)?.segments = segments;
            self.lvs.retain(|l| l.name != origin);
            let cachevol = self
                .lv(&pool)
                .is_some_and(|l| l.flags.iter().any(|f| f == "CACHE_VOL"));
            let base = pool
                .strip_suffix(if cachevol { "_cvol" } else { "_cpool" })
                .unwrap_or(&pool)
                .to_string();
            if remove {
                self.remove_lv(&pool, false)?;
                return Ok(base);
            }
            if !cachevol {
                // The pool's sub-LVs lose the `_cpool` part too.
                for key in ["data", "metadata"] {
                    let sub = self
                        .lv(&pool)
                        .and_then(|l| l.segments.first())
                        .and_then(|s| seg_str(s, key))
                        .map(String::from)
                        .unwrap_or_default();
                    let renamed = sub.replacen(&pool, &base, 1);
                    self.lv_mut(&sub)?.name = renamed.clone();
                    let s = &mut self.lv_mut(&pool)?.segments[0];
                    for it in &mut s.body {
                        if let super::text::Item::Pair { key: k, value, .. } = it {
                            if k == key {
                                *value = super::text::Value::str(&renamed);
                            }
                        }
                    }
                }
            }
            let p = self.lv_mut(&pool)?;
            p.name = base.clone();
            p.flags.retain(|f| f != "CACHE_VOL");
            if !p.status.iter().any(|s| s == "VISIBLE") {
                p.status.push("VISIBLE".into());
            }
            self.validate()?;
            Ok(base)
        })();
        if r.is_err() {
            *self = before;
        }
        r
    }
}
