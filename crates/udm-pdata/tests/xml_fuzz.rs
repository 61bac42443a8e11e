//! Fuzzing `thin_restore`'s input: a valid thin_dump XML document (two devices, single and
//! range mappings) with its numbers set to 0 / 1 / all ones / huge / random, parsed and,
//! when it parses, restored into a 4 MiB metadata device. Each step succeeds or returns an
//! error; never a panic, and never an unbounded allocation from a hostile length.

use proptest::prelude::*;
use std::sync::Arc;
use udm_pdata::io::MemIo;
use udm_pdata::thin_xml::{parse_xml, restore};
use udm_testkit::mutate::{hostile_number, replace_ranges, xml_numbers as numbers};

const VALID: &str = r#"<superblock uuid="" time="1" transaction="2" flags="0" version="2" data_block_size="128" nr_data_blocks="1024">
  <device dev_id="0" mapped_blocks="12" transaction="0" creation_time="0" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="10" time="0"/>
    <single_mapping origin_block="20" data_block="30" time="1"/>
    <single_mapping origin_block="21" data_block="40" time="1"/>
  </device>
  <device dev_id="1" mapped_blocks="10" transaction="0" creation_time="1" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="10" time="0"/>
  </device>
</superblock>
"#;

#[test]
fn the_valid_dump_restores() {
    let d = parse_xml(VALID).unwrap();
    assert_eq!(d.devices[0].mappings.len(), 12);
    restore(Arc::new(MemIo::new(1024)), &d).unwrap();
    assert_eq!(numbers(VALID).len(), 30);
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(300))]

    #[test]
    fn mutated_dumps_restore_or_fail_cleanly(
        edits in prop::collection::vec((any::<prop::sample::Index>(), hostile_number()), 1..4),
    ) {
        let at = numbers(VALID);
        let picks: Vec<((usize, usize), String)> =
            edits.iter().map(|(i, v)| (at[i.index(at.len())], v.clone())).collect();
        let text = replace_ranges(VALID, &picks);
        match parse_xml(&text) {
            Ok(d) => {
                let total: usize = d.devices.iter().map(|x| x.mappings.len()).sum();
                prop_assert!(total as u64 <= d.nr_data_blocks.max(12).saturating_mul(2), "{} mappings", total);
                if let Err(e) = restore(Arc::new(MemIo::new(1024)), &d) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
