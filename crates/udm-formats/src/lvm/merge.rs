//! Snapshot merges and the removal bookkeeping of layered LVs, as lvm2 writes them:
//! `lvconvert --merge` turns the snapshot's `cow_store` into `merging_store` and hides its
//! `snapshotN` (the origin then activates as `snapshot-merge`); when the merge is done both
//! go. Removing a thin volume costs its pool a transaction (`delete N`); removing a pool or
//! a cached LV takes its hidden sub-LVs with it.

use super::dmplan::pools::base_type;
use super::edit::seg_str;
use super::model::{Segment, Vg};
use super::text::{Item, Value};
use super::LvmError;

/// The snapshot segment (in its `snapshotN`) whose COW store, merging or not, is `cow`.
fn snap_index(vg: &Vg, cow: &str) -> Option<usize> {
    vg.lvs.iter().position(|l| {
        l.segments.first().is_some_and(|s| {
            s.seg_type == "snapshot"
                && (seg_str(s, "cow_store") == Some(cow)
                    || seg_str(s, "merging_store") == Some(cow))
        })
    })
}

/// The merging snapshot segment of `origin`, if one is merging into it.
pub fn merging_into<'a>(vg: &'a Vg, origin: &str) -> Option<&'a Segment> {
    vg.lvs.iter().flat_map(|l| &l.segments).find(|s| {
        s.seg_type == "snapshot"
            && seg_str(s, "origin") == Some(origin)
            && seg_str(s, "merging_store").is_some()
    })
}

impl Vg {
    /// `lvconvert --merge VG/SNAP`: mark snapshot `cow` merging into its origin. Returns
    /// the origin's name; `Ok` also when it was merging already.
    pub fn start_merge(&mut self, cow: &str) -> Result<String, LvmError> {
        let vg = self.name.clone();
        let i = snap_index(self, cow).ok_or_else(|| {
            LvmError::Refused(format!(
                "Command on LV {vg}/{cow} uses options that require LV types snapshot ."
            ))
        })?;
        if let Some(o) = seg_str(&self.lvs[i].segments[0], "origin") {
            if let Some(m) = merging_into(self, o) {
                let other = seg_str(m, "merging_store").unwrap_or("");
                if other != cow {
                    return Err(LvmError::Refused(format!(
                        "Cannot merge snapshot {vg}/{cow} into the origin {vg}/{o} with merging snapshot {vg}/{other}."
                    )));
                }
            }
        }
        let snap = &mut self.lvs[i];
        snap.status.retain(|s| s != "VISIBLE");
        let seg = &mut snap.segments[0];
        for it in &mut seg.body {
            if let Item::Pair { key, .. } = it {
                if key == "cow_store" {
                    *key = "merging_store".into();
                }
            }
        }
        let origin = seg_str(seg, "origin").unwrap_or("").to_string();
        self.validate()?;
        Ok(origin)
    }

    /// The merge into `origin` is done: its snapshot and COW store go.
    pub fn finish_merge(&mut self, origin: &str) -> Result<String, LvmError> {
        let seg = merging_into(self, origin).ok_or_else(|| {
            LvmError::Invalid(format!("{}/{origin} has no merging snapshot", self.name))
        })?;
        let cow = seg_str(seg, "merging_store").unwrap_or("").to_string();
        let i = snap_index(self, &cow).expect("found above");
        let snap = self.lvs[i].name.clone();
        self.lvs.retain(|l| l.name != snap && l.name != cow);
        self.validate()?;
        Ok(cow)
    }

    /// Before removing thin volume `name`: its pool's transaction id goes up by one.
    /// Returns the messages for the pool (`delete ID`, `set_transaction_id OLD NEW`) and the
    /// pool's name; None for other LVs.
    pub fn thin_delete(&mut self, name: &str) -> Option<(String, Vec<Vec<String>>)> {
        let seg = self.lv(name)?.segments.first()?;
        if base_type(seg) != "thin" {
            return None;
        }
        let pool = seg_str(seg, "thin_pool")?.to_string();
        let id = seg.get("device_id").and_then(Value::as_int)?;
        let p = self.lvs.iter_mut().find(|l| l.name == pool)?;
        let ps = p.segments.first_mut()?;
        let mut old = 0;
        for it in &mut ps.body {
            if let Item::Pair { key, value, .. } = it {
                if key == "transaction_id" {
                    old = value.as_int().unwrap_or(0);
                    *value = Value::Int(old + 1);
                }
            }
        }
        let msgs = vec![
            vec!["delete".into(), id.to_string()],
            vec![
                "set_transaction_id".into(),
                old.to_string(),
                (old + 1).to_string(),
            ],
        ];
        Some((pool, msgs))
    }

    /// The hidden LVs that go with `name` (a pool's data and metadata, a cache's origin and
    /// pool with its parts); the spare when no pool is left is dropped by
    /// [`Vg::drop_unused_spare`].
    pub fn parts_of(&self, name: &str) -> Vec<String> {
        let Some(seg) = self.lv(name).and_then(|l| l.segments.first()) else {
            return Vec::new();
        };
        let keys: &[&str] = match base_type(seg) {
            "thin-pool" => &["metadata", "pool"],
            "cache-pool" => &["metadata", "data"],
            "cache" => &["origin", "cache_pool"],
            t if super::raid::is_raid_type(t) => return super::raid::sub_lvs(seg),
            _ => &[],
        };
        let mut out = Vec::new();
        for k in keys {
            if let Some(sub) = seg_str(seg, k) {
                out.push(sub.to_string());
                out.extend(self.parts_of(sub));
            }
        }
        out
    }

    /// Drop `lvol0_pmspare` when no pool needs it any more.
    pub fn drop_unused_spare(&mut self) {
        let pools = self
            .lvs
            .iter()
            .flat_map(|l| &l.segments)
            .any(|s| matches!(base_type(s), "thin-pool" | "cache-pool"));
        if !pools {
            self.lvs.retain(|l| !l.name.ends_with("_pmspare"));
        }
    }
}
