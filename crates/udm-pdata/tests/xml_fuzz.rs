//! Fuzzing `thin_restore`'s input: a valid thin_dump XML document (two devices, single and
//! range mappings) with its numbers set to 0 / 1 / all ones / huge / random, parsed and,
//! when it parses, restored into a 4 MiB metadata device. Each step succeeds or returns an
//! error; never a panic, and never an unbounded allocation from a hostile length.

use proptest::prelude::*;
use std::sync::Arc;
use udm_pdata::io::MemIo;
use udm_pdata::thin_xml::{parse_xml, restore};
use udm_testkit::alloc_peak::{self, PeakAlloc};
use udm_testkit::mutate::{
    hostile_number, mutated, mutations, replace_ranges, xml_numbers as numbers,
};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// The metadata device restored into: 4 MiB.
const META_BLOCKS: u64 = 1024;
/// No single allocation may be larger, whatever the XML claims.
const MAX_ALLOC: usize = 64 << 20;

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
    let d = parse_xml(VALID, META_BLOCKS).unwrap();
    assert_eq!(d.devices[0].mappings.len(), 12);
    restore(Arc::new(MemIo::new(META_BLOCKS)), &d).unwrap();
    assert_eq!(numbers(VALID).len(), 30);
}

/// A range as long as the data device says it may be, where the data device is itself
/// huge: refused because the mappings cannot fit the metadata device, not expanded
/// (found by the fuzzer: a 2^32-block range asked for 96 GiB).
#[test]
fn ranges_past_the_metadata_device_are_refused() {
    let text = VALID
        .replace(
            "nr_data_blocks=\"1024\"",
            "nr_data_blocks=\"18446744073709551615\"",
        )
        .replacen("length=\"10\"", "length=\"4294967296\"", 1);
    alloc_peak::reset();
    let e = parse_xml(&text, META_BLOCKS).unwrap_err().to_string();
    assert!(
        e.contains("cannot fit a metadata device of 1024 blocks"),
        "{e}"
    );
    assert!(alloc_peak::peak() <= MAX_ALLOC, "{}", alloc_peak::peak());
    // The bound is exact: the first range grown so all 22 mappings come to one leaf slot
    // per mapping in every block is accepted, one more is refused.
    let max = META_BLOCKS * udm_pdata::btree::max_entries(8) as u64;
    let with_range = |len: u64| {
        VALID
            .replace("nr_data_blocks=\"1024\"", "nr_data_blocks=\"1000000\"")
            .replacen("length=\"10\"", &format!("length=\"{len}\""), 1)
    };
    assert_eq!(
        parse_xml(&with_range(max - 12), META_BLOCKS)
            .unwrap()
            .devices
            .iter()
            .map(|d| d.mappings.len() as u64)
            .sum::<u64>(),
        max
    );
    assert!(parse_xml(&with_range(max - 11), META_BLOCKS).is_err());
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
        alloc_peak::reset();
        match parse_xml(&text, META_BLOCKS) {
            Ok(d) => {
                let total: usize = d.devices.iter().map(|x| x.mappings.len()).sum();
                prop_assert!(total as u64 <= d.nr_data_blocks.max(12).saturating_mul(2), "{} mappings", total);
                if let Err(e) = restore(Arc::new(MemIo::new(META_BLOCKS)), &d) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        prop_assert!(alloc_peak::peak() <= MAX_ALLOC, "{} bytes", alloc_peak::peak());
    }

    /// The XML as bytes: flips, overwritten bytes, truncation — broken tags, quotes and
    /// names reach the tokenizer, not only hostile numbers.
    #[test]
    fn byte_mutated_dumps_restore_or_fail_cleanly(muts in mutations(Vec::new(), 1, 6)) {
        let text = String::from_utf8_lossy(&mutated(VALID.as_bytes(), &muts)).into_owned();
        alloc_peak::reset();
        match parse_xml(&text, META_BLOCKS) {
            Ok(d) => {
                if let Err(e) = restore(Arc::new(MemIo::new(META_BLOCKS)), &d) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        prop_assert!(alloc_peak::peak() <= MAX_ALLOC, "{} bytes", alloc_peak::peak());
    }
}
