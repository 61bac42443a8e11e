//! Fuzzing the cache and era tools. (1) `cache_restore` / `era_restore` input: valid XML
//! made by the real dump path (metadata built with udm-pdata, read back by `read_dump`,
//! printed by `write_xml`), its numbers set to 0 / 1 / all ones / huge / random, parsed and
//! restored into a 4 MiB metadata device. (2) `cache_check` / `cache_dump` / `era_check` /
//! `era_dump` over metadata whose live blocks are damaged with valid checksums. Every step
//! succeeds or returns an error: never a panic, and — checked by a recording allocator —
//! never one allocation larger than [`MAX_ALLOC`], whatever length the input claims.

mod common;

use proptest::prelude::*;
use std::sync::{Arc, OnceLock};
use udm_pdata::cache::{CacheMetadata, PolicyId};
use udm_pdata::era::EraMetadata;
use udm_pdata::io::MemIo;
use udm_pdata::tm::SUPERBLOCK;
use udm_pdata::tools::{cache_tools, era_tools, run};
use udm_testkit::alloc_peak::{self, PeakAlloc};
use udm_testkit::mutate::{hostile_number, mutated, mutations, replace_ranges, xml_numbers};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// The metadata device the XML is restored into: 4 MiB.
const META_BLOCKS: u64 = 1024;
/// No single allocation may be larger, whatever the input claims (the restore target is
/// 4 MiB; everything a valid input needs is far below this).
const MAX_ALLOC: usize = 64 << 20;

fn cache_image() -> &'static [u8] {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        let io = Arc::new(MemIo::new(256));
        let mut md = CacheMetadata::format(io.clone(), 128, 2).unwrap();
        md.resize(48).unwrap();
        for cb in (0..48).step_by(5) {
            md.insert(cb, cb * 7 + 3).unwrap();
            md.set_dirty(cb, cb % 2 == 0).unwrap();
        }
        let smq = PolicyId {
            name: "smq".into(),
            version: [2, 0, 0],
            hint_size: 4,
        };
        md.write_hints(&smq, &(0..48).collect::<Vec<u32>>())
            .unwrap();
        md.commit(true).unwrap();
        io.to_bytes()
    })
}

fn era_image() -> &'static [u8] {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        let io = Arc::new(MemIo::new(256));
        let mut md = EraMetadata::format(io.clone(), 64).unwrap();
        md.resize(24).unwrap();
        for era in 0..3u64 {
            md.rollover().unwrap();
            for b in (era..24).step_by(3 + era as usize) {
                md.mark(b).unwrap();
            }
        }
        md.digest_one().unwrap();
        md.commit().unwrap();
        io.to_bytes()
    })
}

fn cache_xml() -> &'static str {
    static XML: OnceLock<String> = OnceLock::new();
    XML.get_or_init(|| {
        let io = Arc::new(MemIo::from_bytes(cache_image()));
        cache_tools::write_xml(&cache_tools::read_dump(io, false).unwrap())
    })
}

fn era_xml() -> &'static str {
    static XML: OnceLock<String> = OnceLock::new();
    XML.get_or_init(|| {
        let io = Arc::new(MemIo::from_bytes(era_image()));
        era_tools::write_xml(&era_tools::read_dump(io, SUPERBLOCK, false).unwrap(), false)
    })
}

/// The numbers of the elements whose values are counts (superblock, writeset), which the
/// fuzzer hits more often than the many per-block values.
fn count_numbers(text: &str) -> Vec<(usize, usize)> {
    xml_numbers(text)
        .into_iter()
        .filter(|&(s, _)| {
            let line = text[..s].rfind('\n').map_or(0, |i| i + 1);
            let l = text[line..].trim_start();
            l.starts_with("<superblock") || l.starts_with("<writeset")
        })
        .collect()
}

/// `text` with the numbers picked by `edits` (from the count numbers when the flag is set,
/// else from all) replaced.
fn mutate(text: &str, edits: &[(bool, prop::sample::Index, String)]) -> String {
    let (all, counts) = (xml_numbers(text), count_numbers(text));
    let picks: Vec<_> = edits
        .iter()
        .map(|(c, i, v)| {
            let from = if *c { &counts } else { &all };
            (from[i.index(from.len())], v.clone())
        })
        .collect();
    replace_ranges(text, &picks)
}

/// Parse and restore cache XML into a fresh 4 MiB device; returns the error text if any.
fn cache_restore(text: &str) -> Result<(), String> {
    let d = cache_tools::parse_xml(text)?;
    cache_tools::restore_dump(Arc::new(MemIo::new(META_BLOCKS)), &d, 2, true)
}

fn era_restore(text: &str) -> Result<(), String> {
    let d = era_tools::parse_xml(text, META_BLOCKS)?;
    era_tools::restore_dump(Arc::new(MemIo::new(META_BLOCKS)), &d)
}

#[test]
fn the_valid_dumps_restore_and_dump_back() {
    let text = cache_xml();
    assert_eq!(cache_tools::parse_xml(text).unwrap().mappings.len(), 10);
    let io = Arc::new(MemIo::new(META_BLOCKS));
    cache_tools::restore_dump(io.clone(), &cache_tools::parse_xml(text).unwrap(), 2, true).unwrap();
    assert_eq!(
        cache_tools::write_xml(&cache_tools::read_dump(io, false).unwrap()),
        text
    );

    let text = era_xml();
    let d = era_tools::parse_xml(text, META_BLOCKS).unwrap();
    assert_eq!((d.nr_blocks, d.writesets.len()), (24, 1));
    let io = Arc::new(MemIo::new(META_BLOCKS));
    era_tools::restore_dump(io.clone(), &d).unwrap();
    let back = era_tools::read_dump(io, SUPERBLOCK, false).unwrap();
    assert_eq!(era_tools::write_xml(&back, false), text);
    assert!(count_numbers(text).len() >= 3 + 2);
}

/// Counts that cannot fit the metadata device are refused with a message saying so,
/// before anything is allocated for them.
#[test]
fn counts_past_the_metadata_device_are_refused() {
    let sb = |t: &str, attr: &str, v: &str| {
        let at = t.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
        let end = at + t[at..].find('"').unwrap();
        format!("{}{v}{}", &t[..at], &t[end..])
    };
    for n in ["4294967295", "2000000"] {
        alloc_peak::reset();
        let e = cache_restore(&sb(cache_xml(), "nr_cache_blocks", n)).unwrap_err();
        assert!(e.contains("metadata blocks"), "{n}: {e}");
        assert!(alloc_peak::peak() <= MAX_ALLOC);
    }
    // Past u32: refused as a count the format cannot hold.
    assert!(cache_restore(&sb(cache_xml(), "nr_cache_blocks", "1099511627776")).is_err());

    for (attr, n) in [("nr_blocks", "4294967295"), ("nr_bits", "4294967295")] {
        alloc_peak::reset();
        let e = era_restore(&sb(era_xml(), attr, n)).unwrap_err();
        assert!(e.contains("metadata blocks"), "{attr}={n}: {e}");
        assert!(
            alloc_peak::peak() <= MAX_ALLOC,
            "{attr}: {}",
            alloc_peak::peak()
        );
    }
    // An era entry past the era array (here usize::MAX: no overflow on `block + 1`).
    let e = era_restore(&sb(era_xml(), "block", "18446744073709551615")).unwrap_err();
    assert!(e.contains("out of range"), "{e}");
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(200))]

    #[test]
    fn mutated_cache_xml_restores_or_fails_cleanly(
        edits in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>(), hostile_number()), 1..4),
    ) {
        let text = mutate(cache_xml(), &edits);
        alloc_peak::reset();
        if let Err(e) = cache_restore(&text) {
            prop_assert!(!e.is_empty());
        }
        prop_assert!(alloc_peak::peak() <= MAX_ALLOC, "{} bytes", alloc_peak::peak());
    }

    #[test]
    fn mutated_era_xml_restores_or_fails_cleanly(
        edits in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>(), hostile_number()), 1..4),
    ) {
        let text = mutate(era_xml(), &edits);
        alloc_peak::reset();
        if let Err(e) = era_restore(&text) {
            prop_assert!(!e.is_empty());
        }
        prop_assert!(alloc_peak::peak() <= MAX_ALLOC, "{} bytes", alloc_peak::peak());
    }
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(300))]

    /// The XML as bytes: flips, overwritten bytes, truncation — broken tags, quotes and
    /// names reach the tokenizer, not only hostile numbers.
    #[test]
    fn byte_mutated_xml_restores_or_fails_cleanly(
        cache in any::<bool>(),
        muts in mutations(Vec::new(), 1, 6),
    ) {
        let base = if cache { cache_xml() } else { era_xml() };
        let text = String::from_utf8_lossy(&mutated(base.as_bytes(), &muts)).into_owned();
        alloc_peak::reset();
        let r = if cache { cache_restore(&text) } else { era_restore(&text) };
        if let Err(e) = r {
            prop_assert!(!e.is_empty());
        }
        prop_assert!(alloc_peak::peak() <= MAX_ALLOC, "{} bytes", alloc_peak::peak());
    }
}

/// Run `tool` on `image` (as a file) with `args` before the path; returns the exit code.
fn tool_on(tool: &str, args: &[&str], image: &[u8]) -> i32 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta");
    std::fs::write(&path, image).unwrap();
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(path.display().to_string());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    run(tool, tool, &args, &mut out, &mut err)
}

#[test]
fn undamaged_metadata_checks_clean() {
    assert_eq!(tool_on("cache_check", &[], cache_image()), 0);
    assert_eq!(tool_on("era_check", &[], era_image()), 0);
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(40))]

    /// Damaged cache and era metadata (checksums kept valid) through the check and dump
    /// tools, with and without --repair.
    #[test]
    fn damaged_metadata_checks_and_dumps_cleanly(
        hits in prop::collection::vec((0usize..64, 0usize..udm_pdata::BLOCK_SIZE, 1u8..=255), 1..5),
    ) {
        for (image, check, dump) in [
            (cache_image(), "cache_check", "cache_dump"),
            (era_image(), "era_check", "era_dump"),
        ] {
            let io = MemIo::from_bytes(image);
            common::damage_resealed(&io, &hits);
            let img = io.to_bytes();
            alloc_peak::reset();
            let codes = [
                tool_on(check, &[], &img),
                tool_on(dump, &[], &img),
                tool_on(dump, &["--repair"], &img),
            ];
            prop_assert!(codes.iter().all(|&c| c == 0 || c == 1), "{check}: {codes:?}");
            prop_assert!(alloc_peak::peak() <= MAX_ALLOC, "{check}: {} bytes", alloc_peak::peak());
        }
    }
}
