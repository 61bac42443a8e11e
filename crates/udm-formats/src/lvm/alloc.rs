//! `--alloc` policies as lvm2 applies them to new and extended LVs: `contiguous` (one run:
//! the first PV's largest area that fits, extensions only right after the last area), `cling` (extensions
//! only on the PVs the last segment uses), `normal`, and `anywhere` (as normal, but when
//! there are too few PVs stripes take separate free areas of one PV, or cut one area).
//! A policy given is stored in the LV (`allocation_policy`), as lvm2 writes it; an LV's
//! stored policy applies to its extensions.

use super::model::{Lv, Segment, Vg};
use super::text::{Item, Value};
use super::LvmError;

/// An allocation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alloc {
    #[default]
    Inherit,
    Normal,
    Contiguous,
    Cling,
    Anywhere,
}

impl std::str::FromStr for Alloc {
    type Err = LvmError;
    fn from_str(s: &str) -> Result<Alloc, LvmError> {
        Ok(match s {
            "inherit" => Alloc::Inherit,
            "normal" => Alloc::Normal,
            "contiguous" => Alloc::Contiguous,
            "cling" | "cling_by_tags" => Alloc::Cling,
            "anywhere" => Alloc::Anywhere,
            _ => {
                return Err(LvmError::Refused(format!(
                    "Invalid argument for --alloc: {s}"
                )))
            }
        })
    }
}

impl std::fmt::Display for Alloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Alloc::Inherit => "inherit",
            Alloc::Normal => "normal",
            Alloc::Contiguous => "contiguous",
            Alloc::Cling => "cling",
            Alloc::Anywhere => "anywhere",
        })
    }
}

/// The policy stored in `lv` (inherit when none).
pub fn policy_of(lv: &Lv) -> Alloc {
    lv.extra
        .iter()
        .find_map(|i| match i {
            Item::Pair { key, value, .. } if key == "allocation_policy" => {
                value.as_str().and_then(|s| s.parse().ok())
            }
            _ => None,
        })
        .unwrap_or_default()
}

fn set_policy(lv: &mut Lv, p: Alloc) {
    lv.extra
        .retain(|i| !matches!(i, Item::Pair { key, .. } if key == "allocation_policy"));
    if p != Alloc::Inherit {
        lv.extra
            .push(Item::pair("allocation_policy", Value::str(p.to_string())));
    }
}

fn short(name: &str, what: &str, more: u64) -> LvmError {
    LvmError::Refused(format!(
        "Insufficient suitable {what}allocatable extents for logical volume {name}: {more} more required"
    ))
}

/// The PVs the last segment of `lv` uses.
fn last_pvs(lv: &Lv) -> Vec<String> {
    lv.segments
        .last()
        .and_then(|s| s.stripes().ok())
        .map(|v| v.into_iter().map(|a| a.0).collect())
        .unwrap_or_default()
}

impl Vg {
    /// `lvcreate --alloc POLICY`: [`Vg::create_lv`] under the policy, which is stored.
    #[allow(clippy::too_many_arguments)]
    pub fn create_lv_alloc(
        &mut self,
        name: &str,
        extents: u64,
        stripes: usize,
        stripe_size: u64,
        policy: Alloc,
        host: &str,
        time: i64,
    ) -> Result<(), LvmError> {
        if policy == Alloc::Contiguous && stripes == 1 {
            // The first PV's largest area that holds it all (lvm2 keeps areas largest first).
            let run = self.pvs.iter().find_map(|p| {
                let mut runs = self.free_runs(&p.name);
                runs.sort_by_key(|r| std::cmp::Reverse(r.1));
                runs.into_iter()
                    .find(|r| r.1 >= extents)
                    .map(|r| (p.name.clone(), r.0))
            });
            let Some((pv, start)) = run else {
                return Err(short(name, "contiguous ", extents));
            };
            // Allocate exactly there: everything else is held meanwhile.
            self.allocate_on(std::slice::from_ref(&pv), |vg| {
                let mut tmp = vg.clone();
                tmp.create_lv(name, extents, 1, 0, host, time)?;
                let lv = tmp.lvs.last_mut().expect("just made");
                lv.segments = vec![Segment::striped(0, extents, 0, &[(&pv, start)])];
                tmp.validate()?;
                *vg = tmp;
                Ok(())
            })?;
        } else if policy == Alloc::Anywhere && stripes > 1 {
            // As normal when the stripes find PVs of their own; else stripes may share a
            // PV, each taking the next free extents of the PVs' runs in order.
            let before = self.clone();
            if self
                .create_lv(name, extents, stripes, stripe_size, host, time)
                .is_err()
            {
                *self = before;
                self.anywhere_striped(name, extents, stripes, stripe_size, host, time)?;
            }
        } else {
            self.create_lv(name, extents, stripes, stripe_size, host, time)?;
        }
        let lv = self.lvs.last_mut().expect("just made");
        set_policy(lv, policy);
        Ok(())
    }

    /// A striped LV whose stripes may share PVs (`--alloc anywhere`).
    fn anywhere_striped(
        &mut self,
        name: &str,
        extents: u64,
        stripes: usize,
        stripe_size: u64,
        host: &str,
        time: i64,
    ) -> Result<(), LvmError> {
        let per = extents.div_ceil(stripes as u64);
        // Each free area that holds a stripe takes one (PVs in order, areas by address);
        // only when there are too few are areas cut into several stripes.
        let runs: Vec<(String, u64)> = self
            .pvs
            .iter()
            .flat_map(|p| {
                self.free_runs(&p.name)
                    .into_iter()
                    .filter(|r| r.1 >= per)
                    .map(|r| (p.name.clone(), r.0))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut areas: Vec<(String, u64)> = Vec::new();
        if runs.len() >= stripes {
            areas = runs.into_iter().take(stripes).collect();
        }
        let cut = areas.is_empty();
        'pvs: for p in self.pvs.iter().filter(|_| cut) {
            for (mut start, mut len) in self.free_runs(&p.name) {
                while len >= per {
                    areas.push((p.name.clone(), start));
                    start += per;
                    len -= per;
                    if areas.len() == stripes {
                        break 'pvs;
                    }
                }
            }
        }
        if areas.len() < stripes {
            return Err(short(name, "", (stripes - areas.len()) as u64 * per));
        }
        // Made as one stripe, then given its areas.
        self.create_lv(name, 1, 1, 0, host, time)?;
        let refs: Vec<(&str, u64)> = areas.iter().map(|(p, e)| (p.as_str(), *e)).collect();
        let lv = self.lvs.last_mut().expect("just made");
        lv.segments = vec![Segment::striped(
            0,
            per * stripes as u64,
            stripe_size,
            &refs,
        )];
        if let Err(e) = self.validate() {
            self.lvs.pop();
            return Err(e);
        }
        Ok(())
    }

    /// `lvextend` under `policy` (or the LV's own): contiguous extensions must continue
    /// the last area, cling ones stay on the last segment's PVs.
    pub fn extend_lv_alloc(
        &mut self,
        name: &str,
        extents: u64,
        stripes: Option<(usize, u64)>,
        policy: Alloc,
    ) -> Result<(), LvmError> {
        let lv = self
            .lv(name)
            .ok_or_else(|| LvmError::NotFound(format!("Logical volume {name} not found")))?;
        let policy = match policy {
            Alloc::Inherit => policy_of(lv),
            p => p,
        };
        let cur = lv.extents();
        let segs = lv.segments.len();
        match policy {
            Alloc::Contiguous => {
                let before = self.clone();
                self.extend_lv(name, extents, stripes)?;
                let l = self.lv(name).expect("still there");
                // Contiguous: the old last segment grew in place, nothing new appeared.
                if l.segments.len() != segs {
                    *self = before;
                    return Err(short(name, "contiguous ", extents - cur));
                }
                Ok(())
            }
            Alloc::Cling => {
                let pvs = last_pvs(lv);
                let free: u64 = pvs
                    .iter()
                    .map(|p| self.free_runs(p).iter().map(|r| r.1).sum::<u64>())
                    .sum();
                if free < extents - cur {
                    return Err(short(name, "", extents - cur - free));
                }
                self.allocate_on(&pvs, |vg| vg.extend_lv(name, extents, stripes))
            }
            _ => self.extend_lv(name, extents, stripes),
        }
    }
}
