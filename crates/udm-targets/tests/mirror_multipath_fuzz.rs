//! Fuzz-style property tests (fixed, printed seed) of the `mirror` and `multipath`
//! constructors: word sequences biased towards their grammars either load (and then serve
//! a read, a write, a flush and their status lines) or fail with an errno, never panic.

mod common;
use common::*;
use proptest::prelude::*;
use udm_core::{StatusType, TableLine};
use udm_io::Sectors;

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..12).prop_map(|n| n.to_string()),
        Just("1024".to_string()),
        Just("512".to_string()),
        "[0-9]{1,12}",
        Just("core".to_string()),
        Just("disk".to_string()),
        Just("sync".to_string()),
        Just("nosync".to_string()),
        Just("handle_errors".to_string()),
        Just("keep_log".to_string()),
        Just("/dev/mapper/base".to_string()),
        Just("/dev/mapper/log".to_string()),
        Just("round-robin".to_string()),
        Just("queue-length".to_string()),
        Just("service-time".to_string()),
        Just("historical-service-time".to_string()),
        Just("queue_if_no_path".to_string()),
        Just("queue_mode".to_string()),
        Just("bio".to_string()),
        Just("pg_init_retries".to_string()),
        "[ -~]{0,6}",
    ]
}

/// Valid tables to mutate, so many cases get past the first words.
const TEMPLATES: &[(bool, &str)] = &[
    (true, "core 2 1024 nosync 2 /dev/mapper/base 0 /dev/mapper/base 8 1 handle_errors"),
    (true, "disk 2 /dev/mapper/log 512 3 /dev/mapper/base 0 /dev/mapper/base 0 /dev/mapper/base 0"),
    (true, "core 1 8 2 /dev/mapper/base 0 /dev/mapper/base 0 2 handle_errors keep_log"),
    (false, "1 queue_if_no_path 0 2 1 round-robin 0 1 1 /dev/mapper/base 1 service-time 0 1 2 /dev/mapper/base 1 1"),
    (false, "2 queue_mode bio 0 1 1 historical-service-time 2 900 2 1 1 /dev/mapper/base 0"),
    (false, "0 0 1 1 queue-length 0 2 1 /dev/mapper/base 1 /dev/mapper/base 1"),
];

fn table() -> impl Strategy<Value = (bool, Vec<String>)> {
    prop_oneof![
        (any::<bool>(), proptest::collection::vec(word(), 0..24)),
        (
            0..TEMPLATES.len(),
            proptest::collection::vec((0usize..32, proptest::option::of(word())), 0..3)
        )
            .prop_map(|(t, edits)| {
                let (m, text) = TEMPLATES[t];
                let mut w: Vec<String> = text.split(' ').map(String::from).collect();
                for (i, e) in edits {
                    let i = i % (w.len() + 1);
                    match e {
                        Some(x) if i < w.len() => w[i] = x,
                        Some(x) => w.push(x),
                        None if i < w.len() => {
                            w.remove(i);
                        }
                        None => {}
                    }
                }
                (m, w)
            }),
    ]
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(300))]
    #[test]
    fn mirror_and_multipath_tables_load_or_fail_cleanly(
        (mirror, words) in table(),
    ) {
        let reg = registry();
        create(&reg, "base", "0 4096 zero").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = image(dir.path(), "log", 16, 0);
        create(&reg, "log", &format!("0 16 linear {} 0", log.display())).unwrap();
        reg.create("t", "").unwrap();
        let line = TableLine {
            start: Sectors(0),
            len: Sectors(4096),
            ttype: if mirror { "mirror" } else { "multipath" }.into(),
            params: words.join(" "),
        };
        match reg.load(&sel("t"), &[line], false) {
            Ok(_) => {
                reg.resume(&sel("t")).unwrap();
                for ty in [StatusType::Info, StatusType::Table] {
                    let (_, st) = reg.status(&sel("t"), false, ty).unwrap();
                    prop_assert_eq!(st.len(), 1);
                }
                let (dev, _g) = open(&reg, "t");
                let _ = udm_io::sync::read_at(dev.as_ref(), Sectors(8), 4096);
                let _ = udm_io::sync::write_at(dev.as_ref(), Sectors(8), &[7u8; 4096]);
                let _ = udm_io::sync::flush(dev.as_ref());
                let _ = reg.message(&sel("t"), 0, &["fail_path".into(), "/dev/mapper/base".into()]);
                let _ = reg.message(&sel("t"), 0, &["fail_if_no_path".into()]);
                let _ = udm_io::sync::read_at(dev.as_ref(), Sectors(0), 512);
            }
            Err(e) => prop_assert!(e.errno() > 0),
        }
        let _ = reg.remove(&sel("t"), false);
        let (dev, _g) = open(&reg, "base");
        prop_assert_eq!(read(dev.as_ref(), 0, 512), vec![0u8; 512]);
    }
}
