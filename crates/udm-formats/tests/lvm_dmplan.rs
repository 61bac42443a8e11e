//! The devices and tables `dmplan` plans for thin pools, thin volumes, thin snapshots,
//! external origins, caches, raid and mirror LVs, against
//! what real lvm2 (2.03.16) loaded into the kernel in refvm for the same metadata (fixtures
//! in `tests/data`: lvm2's backup of the VG, and `dmsetup table` with device numbers
//! replaced by names). The live comparison is `kernel_lvm_activation_matches_lvm2`.

use std::collections::BTreeMap;
use udm_formats::lvm::dmplan::{activation_order, plan, Mode};
use udm_formats::lvm::Metadata;

/// name → (uuid, table lines) of every device lvm2 loaded.
fn lvm2_tables() -> BTreeMap<String, (String, String)> {
    tables_of(include_str!("data/lvm2_thin_cache.tables"))
}

fn tables_of(text: &str) -> BTreeMap<String, (String, String)> {
    let mut m: BTreeMap<String, (String, String)> = BTreeMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (head, table) = l.split_once(": ").unwrap();
        let (name, uuid) = head.split_once(' ').unwrap();
        let e = m.entry(name.into()).or_insert((uuid.into(), String::new()));
        e.1.push_str(table.trim_end());
        e.1.push('\n');
    }
    m
}

#[test]
fn thin_and_cache_plans_match_lvm2() {
    let meta = Metadata::parse(include_bytes!("data/lvm2_thin_cache.vg")).unwrap();
    let vg = &meta.vg;
    let kernel = lvm2_tables();
    let dev = |pv: &str| Some(pv.to_string());
    let mapper = |n: &str| format!("/dev/mapper/{n}");
    let order = activation_order(vg);
    assert_eq!(order, ["pool", "tp2", "thin", "lin", "corig", "porig"]);
    let mut seen: Vec<String> = Vec::new();
    for lv in &order {
        let devs = plan(vg, lv, &dev, Mode::Complete, &mapper).unwrap();
        for d in devs {
            let t: String = d
                .table
                .iter()
                .map(|l| format!("{} {} {} {}\n", l.start, l.len, l.ttype, l.params))
                .collect();
            let (uuid, table) = kernel
                .get(&d.name)
                .unwrap_or_else(|| panic!("lvm2 loaded no {} (for {lv})", d.name));
            assert_eq!(&t, table, "{} (for {lv})", d.name);
            assert_eq!(&d.uuid, uuid, "{}", d.name);
            // Lower devices come first: every device a table names is already planned.
            for w in t
                .split_whitespace()
                .filter(|w| w.starts_with("/dev/mapper/"))
            {
                let n = &w["/dev/mapper/".len()..];
                assert!(seen.iter().any(|s| s == n), "{} needs {n} first", d.name);
            }
            if !seen.contains(&d.name) {
                seen.push(d.name);
            }
        }
    }
    // Every device lvm2 loaded is planned.
    let all: Vec<&String> = kernel.keys().collect();
    seen.sort();
    assert_eq!(seen.iter().collect::<Vec<_>>(), all);
    // A thin volume's plan brings up its pool's devices without the pool's own top device,
    // and marks them as the pool's.
    let thin = plan(vg, "thin", &dev, Mode::Complete, &mapper).unwrap();
    let names: Vec<(&str, bool)> = thin.iter().map(|d| (d.name.as_str(), d.shared)).collect();
    assert_eq!(
        names,
        [
            ("vg-pool_tmeta", true),
            ("vg-pool_tdata", true),
            ("vg-pool-tpool", true),
            ("vg-thin", false)
        ]
    );
}

/// Every device `plan` makes for `lvs` has lvm2's table and uuid, and together they are
/// exactly the devices lvm2 loaded.
fn plans_match(
    vg: &udm_formats::lvm::Vg,
    lvs: &[&str],
    kernel: &BTreeMap<String, (String, String)>,
) {
    let dev = |pv: &str| Some(pv.to_string());
    let mapper = |n: &str| format!("/dev/mapper/{n}");
    let mut seen: Vec<String> = Vec::new();
    for lv in lvs {
        for d in plan(vg, lv, &dev, Mode::Complete, &mapper).unwrap() {
            let t: String = d
                .table
                .iter()
                .map(|l| format!("{} {} {} {}\n", l.start, l.len, l.ttype, l.params))
                .collect();
            let (uuid, table) = kernel
                .get(&d.name)
                .unwrap_or_else(|| panic!("lvm2 loaded no {} (for {lv})", d.name));
            assert_eq!(t.trim_end(), table.trim_end(), "{} (for {lv})", d.name);
            assert_eq!(&d.uuid, uuid, "{}", d.name);
            if !seen.contains(&d.name) {
                seen.push(d.name);
            }
        }
    }
    seen.sort();
    assert_eq!(
        seen.iter().collect::<Vec<_>>(),
        kernel.keys().collect::<Vec<_>>()
    );
}

#[test]
fn raid_and_mirror_plans_match_lvm2() {
    let meta = Metadata::parse(include_bytes!("data/lvm2_raid.vg")).unwrap();
    let kernel = tables_of(include_str!("data/lvm2_raid.tables"));
    let order = activation_order(&meta.vg);
    assert_eq!(order, ["r1", "r5", "r6", "r10", "mi", "r0"]);
    plans_match(&meta.vg, &["r1", "r5", "r6", "r10", "mi", "r0"], &kernel);
}

#[test]
fn thin_snapshot_and_external_origin_plans_match_lvm2() {
    let meta = Metadata::parse(include_bytes!("data/lvm2_thin_snap.vg")).unwrap();
    let kernel = tables_of(include_str!("data/lvm2_thin_snap.tables"));
    let order = activation_order(&meta.vg);
    assert_eq!(order, ["pool", "thin", "tsnap", "ro", "ext"]);
    // lvm2 had `ro` inactive: only its -real layer is up under `ext`.
    plans_match(&meta.vg, &["pool", "thin", "tsnap", "ext"], &kernel);
}
