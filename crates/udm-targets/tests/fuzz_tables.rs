//! Fuzz-style property tests: arbitrary table text and arbitrary table lines never panic the
//! parser or the constructors; they load or fail with an errno, and the registry keeps working.

mod common;
use common::*;
use proptest::prelude::*;
use udm_core::{parse_table_text, TableLine};
use udm_io::Sectors;

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,22}",
        "-?[0-9]{1,5}",
        Just("linear".to_string()),
        Just("striped".to_string()),
        Just("zero".to_string()),
        Just("error".to_string()),
        Just("/dev/mapper/base".to_string()),
        Just("253:0".to_string()),
        Just("253:99".to_string()),
        Just("99999999999:1".to_string()),
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ]
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(400))]
    #[test]
    fn table_text_never_panics(text in "\\PC{0,300}") {
        let _ = parse_table_text(&text);
        let _ = udm_core::split_args(&text);
    }

    #[test]
    fn arbitrary_lines_load_or_fail_cleanly(
        lines in proptest::collection::vec((0u64..4096, 0u64..4096, word(), proptest::collection::vec(word(), 0..8)), 1..4)
    ) {
        let reg = registry();
        create(&reg, "base", "0 4096 zero").unwrap();
        reg.create("t", "").unwrap();
        let lines: Vec<TableLine> = lines
            .into_iter()
            .map(|(s, l, t, p)| TableLine { start: Sectors(s), len: Sectors(l), ttype: t, params: p.join(" ") })
            .collect();
        match reg.load(&sel("t"), &lines, false) {
            Ok(_) => {
                reg.resume(&sel("t")).unwrap();
                let (dev, _g) = open(&reg, "t");
                let _ = udm_io::sync::read_at(dev.as_ref(), Sectors(0), 4096);
            }
            Err(e) => prop_assert!(e.errno() > 0),
        }
        // The registry still serves the base device.
        let (dev, _g) = open(&reg, "base");
        prop_assert_eq!(read(dev.as_ref(), 0, 512), vec![0u8; 512]);
    }
}
