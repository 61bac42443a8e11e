//! Every registered target type round-trips its table line: a generated valid table (one to
//! three lines, any target types, every device an image file whose path holds spaces, tabs,
//! backslashes and non-ASCII) is created, `status(Table)` prints each line's canonical params
//! (devices escaped as `dm_split_args` reads them), the printed text parses to the same lines,
//! and reloading the device with it constructs the same table again.
//!
//! The seed is fixed (`UDM_PROPTEST_SEED` overrides it) and printed; failures are kept in
//! `table_round_trip.proptest-regressions`. The generator is in `table_round_trip/spec.rs`,
//! the expected params of each target family in `render_plain.rs` and `render_meta.rs`.

mod common;
#[path = "table_round_trip/render_meta.rs"]
mod render_meta;
#[path = "table_round_trip/render_plain.rs"]
mod render_plain;
#[path = "table_round_trip/spec.rs"]
mod spec;

use common::*;
use proptest::prelude::*;
use spec::{awkward_name, spec, Spec, COVERED};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use udm_core::{parse_table_text, StatusType, TableLine};

/// Makes the image files a case needs, each under a new awkward name.
pub(crate) struct Files<'a> {
    dir: &'a Path,
    names: &'a [String],
    used: usize,
}

impl Files<'_> {
    /// A sparse image of `sectors` sectors; its path as the table names it (unescaped).
    pub(crate) fn image(&mut self, sectors: u64) -> String {
        let name = format!(
            "{}{}.img",
            self.used,
            self.names[self.used % self.names.len()]
        );
        self.used += 1;
        let p: PathBuf = self.dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .set_len(sectors * 512)
            .unwrap();
        p.to_str().unwrap().to_string()
    }
}

/// The line's type, length and canonical params (what `status(Table)` must print).
fn render(s: &Spec, f: &mut Files<'_>) -> (&'static str, u64, String) {
    render_plain::render(s, f)
        .or_else(|| render_meta::render(s, f))
        .expect("every Spec is rendered by one family")
}

/// The table text of `status(Table)` output, as `dmsetup table` prints it.
fn printed(reg: &udm_core::Registry, name: &str) -> (Vec<String>, String) {
    let (_, st) = reg.status(&sel(name), false, StatusType::Table).unwrap();
    let params = st.iter().map(|t| t.params.clone()).collect();
    let text = st
        .iter()
        .map(|t| format!("{} {} {} {}\n", t.start, t.len, t.ttype, t.params))
        .collect();
    (params, text)
}

#[test]
fn the_generator_covers_every_registered_target() {
    // Every type, the modules' too (they register on first use otherwise).
    let types = udm_targets::builtin();
    types.load_all();
    let registered: BTreeSet<String> = types.list().into_iter().map(|(n, _)| n).collect();
    let covered: BTreeSet<String> = COVERED.iter().map(|s| s.to_string()).collect();
    assert_eq!(registered, covered);
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(48))]
    #[test]
    fn every_target_round_trips_its_table_line(
        specs in proptest::collection::vec(spec(), 1..4).prop_filter(
            "verity makes the table read-only; cache, era, clone and writecache need write access",
            |v| !(v.iter().any(|s| matches!(s, Spec::Verity(_)))
                && v.iter().any(|s| matches!(s, Spec::Cache { .. } | Spec::Era { .. } | Spec::Clone { .. } | Spec::Mirror { .. } | Spec::Writecache { .. } | Spec::Raid { .. })))
        ),
        names in proptest::collection::vec(awkward_name(), 1..6),
        dir_name in awkward_name(),
    ) {
        // thin-pool, multipath and integrity must be alone in their tables (singletons, as in the kernel).
        let specs = match specs.iter().find(|s| matches!(s, Spec::ThinPool(..) | Spec::Multipath { .. } | Spec::Integrity(..))) {
            Some(p) => vec![p.clone()],
            None => specs,
        };
        // A verity line makes the table read-only, where a persistent snapshot cannot write
        // its COW header (refused, as by the kernel): not a round-trip case.
        prop_assume!(!(specs.iter().any(|s| matches!(s, Spec::Verity(_)))
            && specs.iter().any(|s| matches!(s, Spec::Snapshot(k, ..) if *k != "N"))));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(format!("d {dir_name}\\"));
        std::fs::create_dir(&dir).unwrap();
        let mut files = Files { dir: &dir, names: &names, used: 0 };
        let mut text = String::new();
        let mut want = Vec::new();
        let mut start = 0;
        for s in &specs {
            let (ty, len, params) = render(s, &mut files);
            text.push_str(&format!("{start} {len} {ty} {params}\n"));
            want.push(params);
            start += len;
        }
        let read_only = specs.iter().any(|s| matches!(s, Spec::Verity(_)));
        let lines: Vec<TableLine> = parse_table_text(&text).unwrap();
        let reg = registry();
        if specs.iter().any(|s| matches!(s, Spec::Thin(..))) {
            // The pool the thin lines name (253:0), with devices 0..4.
            let meta = dir.join("pool meta");
            let data = dir.join("pool data");
            std::fs::File::create(&meta).unwrap().set_len(4 << 20).unwrap();
            std::fs::File::create(&data).unwrap().set_len(8 << 20).unwrap();
            let pool = format!(
                "0 16384 thin-pool {} {} 128 0",
                udm_core::Escaped(meta.to_str().unwrap()),
                udm_core::Escaped(data.to_str().unwrap())
            );
            reg.create("pool", "").unwrap();
            reg.load(&sel("pool"), &parse_table_text(&pool).unwrap(), false).unwrap();
            reg.resume(&sel("pool")).unwrap();
            for id in 0..4 {
                reg.message(&sel("pool"), 0, &["create_thin".into(), id.to_string()]).unwrap();
            }
        }
        reg.create("a", "").unwrap();
        reg.load(&sel("a"), &lines, read_only).unwrap_or_else(|e| panic!("{text}: {e}"));
        reg.resume(&sel("a")).unwrap();
        let (got, out) = printed(&reg, "a");
        prop_assert_eq!(&got, &want, "table {:?}", text);
        // The printed text parses to the lines it was made from...
        let reparsed = parse_table_text(&out).unwrap();
        prop_assert_eq!(&reparsed, &lines);
        // ...and reloading the device with it builds the same table.
        reg.load(&sel("a"), &reparsed, read_only).unwrap_or_else(|e| panic!("{out}: {e}"));
        reg.suspend(&sel("a"), false, false).unwrap();
        reg.resume(&sel("a")).unwrap();
        let (again, _) = printed(&reg, "a");
        prop_assert_eq!(&again, &want);
        reg.remove(&sel("a"), false).unwrap();
    }
}
