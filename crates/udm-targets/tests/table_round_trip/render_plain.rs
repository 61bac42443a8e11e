//! Rendering the lines of targets without metadata or keys of their own — error, zero,
//! linear, striped, delay, flakey, dust, log-writes, unstriped, switch, ebs, the snapshot
//! family, mirror and multipath — to the canonical params `status(Table)` must print.

use super::spec::*;
use super::Files;
use udm_core::Escaped;
use udm_io::Sectors;
use udm_targets::delay::{DelayClassParams, DelayParams};
use udm_targets::dust::DustParams;
use udm_targets::ebs::EbsParams;
use udm_targets::flakey::FlakeyParams;
use udm_targets::linear::LinearParams;
use udm_targets::log_writes::LogWritesParams;
use udm_targets::mirror::log::{LogParams, SyncMode};
use udm_targets::mirror::MirrorParams;
use udm_targets::striped::StripedParams;
use udm_targets::switch::SwitchParams;
use udm_targets::unstriped::UnstripedParams;

/// The line's type, length and canonical params, or `None` for a type of the other family.
pub(crate) fn render(s: &Spec, f: &mut Files<'_>) -> Option<(&'static str, u64, String)> {
    Some(match s {
        Spec::SnapOrigin(len) => {
            let p = udm_targets::snapshot::OriginParams {
                origin: f.image(*len),
            };
            ("snapshot-origin", *len, p.to_string())
        }
        Spec::Snapshot(kind, chunk, feats, merge, len) => {
            let origin = f.image(*len);
            let cow = f.image(4096);
            let line = format!(
                "{} {} {kind} {}{}",
                udm_core::Escaped(&origin),
                udm_core::Escaped(&cow),
                1u64 << chunk,
                match feats {
                    0 => "",
                    1 => " 1 discard_zeroes_cow",
                    _ => " 2 discard_zeroes_cow discard_passdown_origin",
                }
            );
            let p: udm_targets::snapshot::SnapshotParams = line.parse().unwrap();
            let ty = if *merge { "snapshot-merge" } else { "snapshot" };
            (ty, *len, p.to_string())
        }
        Spec::Error(l) => ("error", *l, String::new()),
        Spec::Zero(l) => ("zero", *l, String::new()),
        Spec::Linear(off, len) => {
            let dev = f.image(off + len);
            (
                "linear",
                *len,
                LinearParams {
                    dev,
                    offset: Sectors(*off),
                }
                .to_string(),
            )
        }
        Spec::Striped {
            n,
            chunk,
            rows,
            offs,
        } => {
            let legs = offs[..*n]
                .iter()
                .map(|o| (f.image(o + chunk * rows), Sectors(*o)))
                .collect();
            let len = *n as u64 * chunk * rows;
            (
                "striped",
                len,
                StripedParams {
                    chunk: Sectors(*chunk),
                    legs,
                }
                .to_string(),
            )
        }
        Spec::Delay(classes, len) => {
            let classes = classes
                .iter()
                .map(|(o, ms)| DelayClassParams {
                    dev: f.image(o + len),
                    offset: Sectors(*o),
                    delay_ms: *ms,
                })
                .collect();
            ("delay", *len, DelayParams { classes }.to_string())
        }
        Spec::Flakey {
            off,
            up,
            down,
            feat,
            len,
        } => {
            let p = FlakeyParams {
                dev: f.image(off + len),
                offset: Sectors(*off),
                up: *up,
                down: *down,
                features: *feat,
            };
            ("flakey", *len, p.to_string())
        }
        Spec::Mirror {
            disk,
            region,
            sync,
            offs,
            features,
            len,
        } => {
            let sync = [SyncMode::Default, SyncMode::NoSync, SyncMode::Force][*sync as usize];
            let p = MirrorParams {
                log: LogParams {
                    dev: disk.then(|| f.image(8)),
                    region_size: 1 << region,
                    sync,
                },
                legs: offs.iter().map(|o| (f.image(o + len), *o)).collect(),
                handle_errors: *features > 0,
                keep_log: *features > 1,
            };
            ("mirror", *len, p.to_string())
        }
        Spec::Multipath { qinp, groups, len } => {
            let mut p = format!(
                "{} {}0 {} 1 ",
                *qinp as u32,
                if *qinp { "queue_if_no_path " } else { "" },
                groups.len()
            );
            for (sel, n) in groups {
                let (name, group, path) = SELECTORS[*sel];
                let nargs = path.split_whitespace().count();
                p.push_str(&format!("{name} {group}{n} {nargs} "));
                for _ in 0..*n {
                    p.push_str(&format!("{} {path}", Escaped(&f.image(*len))));
                }
            }
            ("multipath", *len, p)
        }
        Spec::Dust { off, shift, len } => {
            let p = DustParams {
                dev: f.image(off + len),
                offset: Sectors(*off),
                blksz: 512 << shift,
            };
            ("dust", *len, p.to_string())
        }
        Spec::LogWrites(len) => {
            let p = LogWritesParams {
                dev: f.image(*len),
                log_dev: f.image(256),
            };
            ("log-writes", *len, p.to_string())
        }
        Spec::Unstriped {
            stripes,
            chunk,
            stripe,
            off,
            rows,
        } => {
            let len = *chunk as u64 * rows;
            let dev = f.image(off + len * *stripes as u64);
            let p = UnstripedParams {
                stripes: *stripes,
                chunk: *chunk,
                stripe: *stripe,
                dev,
                offset: Sectors(*off),
            };
            ("unstriped", len, p.to_string())
        }
        Spec::Switch { region, offs, len } => {
            let paths = offs
                .iter()
                .map(|o| (f.image(o + len), Sectors(*o)))
                .collect();
            (
                "switch",
                *len,
                SwitchParams {
                    region: *region,
                    paths,
                }
                .to_string(),
            )
        }
        Spec::Ebs {
            off,
            e_bs,
            u_bs,
            len,
        } => {
            let p = EbsParams {
                dev: f.image(off + len),
                offset: Sectors(*off),
                e_bs: *e_bs,
                u_bs: *u_bs,
            };
            ("ebs", *len, p.to_string())
        }
        _ => return None,
    })
}
