//! The `BlockDevice` conformance suite (udm-testkit) against udm-io's own devices: the RAM
//! disk, the pattern device, and the file device on its inline path (page-cache hits served
//! with RWF_NOWAIT on the submitting thread) and on its I/O-pool path, writable and read-only.

use std::sync::Arc;
use udm_io::{BlockDevice, FileDevice, MemDevice, PatternDevice, Sectors};
use udm_testkit::conformance::{run, zeroes, CompletionSites, Spec};

const SIZE: Sectors = Sectors(65536);

fn fresh() -> Spec {
    Spec {
        content: Some(zeroes),
        discard_zeroes: true,
        ..Spec::writable(SIZE)
    }
}

#[test]
fn mem_device_conforms() {
    run("mem", &MemDevice::new("m", SIZE), &fresh());
}

#[test]
fn pattern_device_conforms() {
    let size = Sectors(20480);
    run(
        "pattern",
        &PatternDevice::new(size),
        &Spec::read_only(size, PatternDevice::fill),
    );
}

/// A sparse file of `SIZE` (reads as zeroes; punched holes read as zeroes too).
fn sparse(dir: &tempfile::TempDir) -> std::path::PathBuf {
    udm_testkit::image(dir.path(), "f.img", SIZE.bytes().0)
}

#[test]
fn file_device_inline_path_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let f = FileDevice::open(&sparse(&dir), false).unwrap();
    let dev = CompletionSites::new(Arc::new(f));
    run("file (inline)", &dev, &fresh());
    let (inline, queued) = dev.counts();
    eprintln!("file (inline): {inline} bios completed inline, {queued} on the pool");
    // Reads of data just written come from the page cache, inline; big bios, flushes and
    // errors always take the pool.
    assert!(inline > 0, "no bio took the inline path");
    assert!(queued > 0, "no bio took the pool path");
}

#[test]
fn file_device_pool_path_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let f = FileDevice::open(&sparse(&dir), false).unwrap();
    f.set_inline(false);
    let dev = CompletionSites::new(Arc::new(f));
    run("file (pool)", &dev, &fresh());
    let (inline, queued) = dev.counts();
    assert_eq!(inline, 0, "a bio completed inline with the fast path off");
    assert!(queued > 0);
}

#[test]
fn read_only_file_device_conforms_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let size = Sectors(20480);
    let path = dir.path().join("ro.img");
    let mut data = vec![0u8; size.bytes().0 as usize];
    PatternDevice::fill(&mut data, 0);
    std::fs::write(&path, &data).unwrap();
    let spec = Spec::read_only(size, PatternDevice::fill);
    for inline in [true, false] {
        let f = FileDevice::open(&path, true).unwrap();
        f.set_inline(inline);
        let dev: Arc<dyn BlockDevice> = Arc::new(f);
        run(&format!("read-only file (inline {inline})"), &*dev, &spec);
    }
}
