//! Mutation fuzzing of table lines for every kind of target: a valid table per target type
//! (each checked to load first) has its words replaced by hostile ones (0, all ones, negative,
//! huge, empty-ish, other targets' keywords), deleted, duplicated or inserted, and its length
//! set to edge values. Each mutated line loads — and then serves a read, a write, a flush
//! (not through `delay`, whose mutated delay may hold I/O for hours), both status kinds and
//! a message — or fails with an errno; never a panic. (`queue_if_no_path` is left out of
//! the words for the same reason.)

mod common;
use common::*;
use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::OnceLock;
use udm_core::{StatusType, TableLine};
use udm_io::Sectors;
use udm_testkit::mutate::hostile_number;

struct Images {
    _dir: tempfile::TempDir,
    /// (target type, valid table line's params, length in sectors).
    tables: Vec<(&'static str, String, u64)>,
}

fn images() -> &'static Images {
    static I: OnceLock<Images> = OnceLock::new();
    I.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str, mib: u64| -> String {
            let p: PathBuf = zero_file(dir.path(), n, mib << 20);
            p.display().to_string()
        };
        let (a, b) = (f("a", 4), f("b", 4));
        let (log, cow) = (f("log", 4), f("cow", 2));
        let (meta, data) = (f("meta", 4), f("data", 8));
        let (cmeta, cfast, emeta, clmeta, wc) = (
            f("cmeta", 4),
            f("cfast", 4),
            f("emeta", 4),
            f("clmeta", 4),
            f("wc", 1),
        );
        let key = "0123456789abcdef".repeat(4);
        let tables = vec![
            ("zero", String::new(), 2048),
            ("error", String::new(), 2048),
            ("linear", format!("{a} 0"), 2048),
            ("striped", format!("2 8 {a} 0 {b} 0"), 2048),
            ("delay", format!("{a} 0 0"), 2048),
            ("flakey", format!("{a} 0 1 1 1 drop_writes"), 2048),
            ("dust", format!("{a} 0 512"), 2048),
            ("switch", format!("2 64 0 {a} 0 {b} 0"), 2048),
            ("unstriped", format!("2 16 1 {a} 0"), 2048),
            ("ebs", format!("{a} 0 1 8"), 2048),
            ("log-writes", format!("{a} {log}"), 2048),
            ("mirror", format!("core 1 1024 2 {a} 0 {b} 0"), 2048),
            (
                "multipath",
                format!("0 0 1 1 round-robin 0 2 1 {a} 1000 {b} 1000"),
                2048,
            ),
            ("snapshot-origin", a.clone(), 2048),
            ("snapshot", format!("{a} {cow} P 8"), 2048),
            (
                "thin-pool",
                format!("{meta} {data} 128 0 1 skip_block_zeroing"),
                16384,
            ),
            (
                "cache",
                format!("{cmeta} {cfast} {b} 64 1 writethrough default 0"),
                2048,
            ),
            ("era", format!("{emeta} {b} 128"), 2048),
            ("clone", format!("{clmeta} {b} {a} 8"), 2048),
            ("writecache", format!("s {b} {wc} 4096 0"), 2048),
            ("crypt", format!("aes-xts-plain64 {key} 0 {a} 0"), 2048),
            ("raid", format!("raid1 1 0 2 - {a} - {b}"), 2048),
        ];
        Images { _dir: dir, tables }
    })
}

/// Words that break numeric parsing, counts and device lookups.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => hostile_number(),
        1 => prop::sample::select(vec!["0x10", "-", "253:0", "/dev/null", "/nonexistent"])
            .prop_map(str::to_string),
        2 => prop::sample::select(vec![
            "core",
            "disk",
            "P",
            "N",
            "writeback",
            "passthrough",
            "J",
            "B",
            "s",
            "p",
            "round-robin",
            "no_discard_passdown",
            "metadata_only",
            "sync",
            "nosync",
            "raid5_ls",
            "default",
            "smq",
            "cleaner",
            "drop_writes",
            "corrupt_bio_byte",
            "error_writes"
        ])
        .prop_map(str::to_string),
        1 => "[ -~]{1,10}",
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, String),
    Delete(usize),
    Insert(usize, String),
    Duplicate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), hostile()).prop_map(|(i, w)| Edit::Replace(i, w)),
        1 => any::<usize>().prop_map(Edit::Delete),
        1 => (any::<usize>(), hostile()).prop_map(|(i, w)| Edit::Insert(i, w)),
        1 => any::<usize>().prop_map(Edit::Duplicate),
    ]
}

fn apply(words: &mut Vec<String>, e: &Edit) {
    let n = words.len();
    match e {
        Edit::Replace(i, w) if n > 0 => words[i % n] = w.clone(),
        Edit::Delete(i) if n > 0 => {
            words.remove(i % n);
        }
        Edit::Insert(i, w) => words.insert(i % (n + 1), w.clone()),
        Edit::Duplicate(i) if n > 0 => {
            let w = words[i % n].clone();
            words.insert(i % n, w)
        }
        _ => {}
    }
}

#[test]
fn every_base_table_loads() {
    let reg = registry();
    for (ty, params, len) in &images().tables {
        create(&reg, "t", &format!("0 {len} {ty} {params}"))
            .unwrap_or_else(|e| panic!("{ty} {params}: {e}"));
        reg.remove(&sel("t"), false).unwrap();
    }
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(2000))]

    #[test]
    fn mutated_tables_load_or_fail_cleanly(
        which in any::<usize>(),
        edits in prop::collection::vec(edit(), 1..4),
        len in prop_oneof![4 => Just(None), 1 => prop_oneof![Just(0u64), Just(1), Just(7), Just(1 << 40), Just(u64::MAX >> 9)].prop_map(Some)],
        msg in prop::collection::vec(hostile(), 0..4),
    ) {
        let im = images();
        let (ty, params, base_len) = &im.tables[which % im.tables.len()];
        let mut words: Vec<String> = params.split_whitespace().map(str::to_string).collect();
        for e in &edits {
            apply(&mut words, e);
        }
        let line = TableLine {
            start: Sectors(0),
            len: Sectors(len.unwrap_or(*base_len)),
            ttype: ty.to_string(),
            params: words.join(" "),
        };
        let reg = registry();
        reg.create("t", "").unwrap();
        match reg.load(&sel("t"), &[line], false) {
            Ok(_) => {
                let resumed = match reg.resume(&sel("t")) {
                    Ok(_) => true,
                    Err(e) => {
                        prop_assert!(e.errno() > 0, "resume {}: {}", ty, e);
                        false
                    }
                };
                // A delay line may legitimately hold I/O for hours: no I/O through it. Nor
                // through a device whose resume failed: it stays suspended, and I/O to a
                // suspended device waits for a resume, as in the kernel.
                let io = *ty != "delay" && resumed;
                if let Some((dev, _g)) = reg.open(&sel("t")).ok().filter(|_| io) {
                    let _ = udm_io::sync::read_at(dev.as_ref(), Sectors(8), 4096);
                    let _ = udm_io::sync::write_at(dev.as_ref(), Sectors(16), &[7u8; 4096]);
                    let _ = udm_io::sync::flush(dev.as_ref());
                }
                for st in [StatusType::Info, StatusType::Table] {
                    let _ = reg.status(&sel("t"), false, st);
                }
                if !msg.is_empty() {
                    if let Err(e) = reg.message(&sel("t"), 0, &msg) {
                        prop_assert!(e.errno() > 0, "message {:?}: {}", msg, e);
                    }
                }
            }
            Err(e) => prop_assert!(e.errno() > 0, "{}: {}", ty, e),
        }
        let _ = reg.remove(&sel("t"), false);
    }
}
