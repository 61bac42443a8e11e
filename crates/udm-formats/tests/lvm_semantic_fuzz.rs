//! Semantic fuzzing of LVM2 metadata text (what a PV's metadata area hands `udm lvm`): the
//! lvm2-written fixtures (thin pools and volumes, caches, raid, snapshots) with numbers set to
//! 0 / 1 / all ones / huge and names swapped or dropped, then parsed and planned into dm
//! tables for every LV (complete and partial). Each step gives a value or an error with an
//! errno; never a panic. Byte-level damage is `lvm.rs`'s `mutated_text_never_panics`.

use proptest::prelude::*;
use udm_formats::lvm::dmplan::{activation_order, plan, Mode};
use udm_formats::lvm::Metadata;
use udm_testkit::mutate::hostile_number;

const FIXTURES: [&[u8]; 4] = [
    include_bytes!("data/lvm2_thin_cache.vg"),
    include_bytes!("data/lvm2_raid.vg"),
    include_bytes!("data/lvm2_thin_snap.vg"),
    include_bytes!("data/lvm2_resize.vg"),
];

/// Byte ranges `(start, end)`.
type Ranges = Vec<(usize, usize)>;

/// Byte ranges of the decimal numbers and of the quoted strings in `text`.
fn tokens(text: &[u8]) -> (Ranges, Ranges) {
    let (mut nums, mut strs) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'"' {
            let end = text[i + 1..]
                .iter()
                .position(|&c| c == b'"')
                .map_or(text.len(), |p| i + 1 + p);
            strs.push((i + 1, end));
            i = end + 1;
        } else if text[i].is_ascii_digit() && (i == 0 || !text[i - 1].is_ascii_alphanumeric()) {
            let end = text[i..]
                .iter()
                .position(|c| !c.is_ascii_digit())
                .map_or(text.len(), |p| i + p);
            nums.push((i, end));
            i = end;
        } else {
            i += 1;
        }
    }
    (nums, strs)
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "pool",
            "pool_tdata",
            "pool_tmeta",
            "thin",
            "thin-pool",
            "cache-pool",
            "raid5",
            "raid10",
            "mirror",
            "snapshot",
            "striped",
            "pv0",
            "pv9",
            "VISIBLE",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,10}",
    ]
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(400))]

    #[test]
    fn mutated_metadata_parses_and_plans_or_fails_cleanly(
        which in 0usize..FIXTURES.len(),
        nums in prop::collection::vec((any::<prop::sample::Index>(), hostile_number()), 0..5),
        strs in prop::collection::vec((any::<prop::sample::Index>(), string()), 0..3),
    ) {
        let base = FIXTURES[which];
        let (num_at, str_at) = tokens(base);
        // Replace from the back so earlier ranges stay valid.
        let mut edits: Vec<((usize, usize), String)> = Vec::new();
        for (i, v) in &nums {
            edits.push((num_at[i.index(num_at.len())], v.clone()));
        }
        for (i, v) in &strs {
            edits.push((str_at[i.index(str_at.len())], v.clone()));
        }
        edits.sort_by_key(|e| std::cmp::Reverse(e.0));
        edits.dedup_by(|a, b| a.0 .0 < b.0 .1 && b.0 .0 < a.0 .1);
        let mut text = base.to_vec();
        for ((s, e), v) in &edits {
            text.splice(*s..*e, v.bytes());
        }
        let meta = match Metadata::parse(&text) {
            Ok(m) => m,
            Err(e) => {
                prop_assert!(e.errno() > 0, "{}", e);
                return Ok(());
            }
        };
        let vg = &meta.vg;
        let mapper = |n: &str| format!("/dev/mapper/{n}");
        let all = |pv: &str| Some(pv.to_string());
        let some = |pv: &str| (!pv.ends_with('0')).then(|| pv.to_string());
        let mut names = activation_order(vg);
        names.extend(vg.lvs.iter().map(|l| l.name.clone()));
        for lv in &names {
            for (mode, dev) in [(Mode::Complete, &all as &dyn Fn(&str) -> Option<String>), (Mode::Partial, &some)] {
                match plan(vg, lv, dev, mode, &mapper) {
                    Ok(devs) => {
                        for d in devs {
                            prop_assert!(!d.name.is_empty());
                        }
                    }
                    Err(e) => prop_assert!(e.errno() > 0, "{}: {}", lv, e),
                }
            }
        }
    }
}

#[test]
fn the_fixtures_parse_and_plan() {
    for f in FIXTURES {
        let meta = Metadata::parse(f).unwrap();
        let (nums, strs) = tokens(f);
        assert!(nums.len() > 20 && strs.len() > 5);
        let order = activation_order(&meta.vg);
        assert!(!order.is_empty());
        for lv in order {
            plan(
                &meta.vg,
                &lv,
                &|pv: &str| Some(pv.to_string()),
                Mode::Complete,
                &|n: &str| n.to_string(),
            )
            .unwrap();
        }
    }
}

/// Sizes in sectors that overflow u64 are refused when the metadata is read, not computed
/// (the planner multiplied extents by the extent size and panicked in debug builds).
#[test]
fn sector_counts_past_u64_are_refused() {
    let text = String::from_utf8(FIXTURES[2].to_vec()).unwrap();
    for (from, to) in [
        ("extent_size = 8192", "extent_size = 9223372036854775807"),
        ("pe_count = 15", "pe_count = 9223372036854775807"),
    ] {
        assert!(text.contains(from));
        let e = Metadata::parse(text.replacen(from, to, 1).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{to}: {e}");
        assert!(e.errno() > 0);
    }
}
