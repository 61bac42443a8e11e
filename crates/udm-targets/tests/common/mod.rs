//! Shared helpers for engine tests: a registry with the built-in targets and image files.

// Each test binary uses a different part of these helpers (and of the re-exports).
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use udm_core::{Registry, TableLine};
use udm_io::{BlockDevice, Sectors};
pub use udm_testkit::registry::{create, create_with, sel};

pub mod integrity;

pub fn registry() -> Registry {
    Registry::new(udm_targets::builtin())
}

/// Parse table text (panics on a parse error).
pub fn lines(t: &str) -> Vec<TableLine> {
    udm_core::parse_table_text(t).expect("table text parses")
}

/// An image file of `sectors` sectors filled with `byte`.
pub fn image(dir: &Path, name: &str, sectors: u64, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, vec![byte; (sectors * 512) as usize]).unwrap();
    p
}

pub fn open(reg: &Registry, name: &str) -> (Arc<dyn BlockDevice>, udm_core::registry::OpenGuard) {
    reg.open(&sel(name)).expect("open device")
}

pub fn read(dev: &dyn BlockDevice, sector: u64, bytes: usize) -> Vec<u8> {
    udm_io::sync::read_at(dev, Sectors(sector), bytes)
        .expect("read")
        .into_vec()
}

pub fn write(dev: &dyn BlockDevice, sector: u64, data: &[u8]) {
    udm_io::sync::write_at(dev, Sectors(sector), data).expect("write")
}

/// The space-separated fields of `name`'s info status line in udm.
pub fn status_fields(reg: &Registry, name: &str) -> Vec<String> {
    let (_, st) = reg
        .status(&sel(name), false, udm_core::StatusType::Info)
        .unwrap();
    st[0].params.split(' ').map(String::from).collect()
}

/// Wait (up to two minutes) until raid set `name` is idle and fully in sync with every leg
/// alive; its status fields then.
pub fn wait_idle(reg: &Registry, name: &str) -> Vec<String> {
    let t = std::time::Instant::now();
    loop {
        let f = status_fields(reg, name);
        let (a, b) = f[3].split_once('/').unwrap();
        if f[4] == "idle" && a == b && !f[2].contains('a') {
            return f;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(120),
            "never idle: {f:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The status fields (after start, length and target name) of the refvm output line
/// `<tag> <dmsetup status line>`.
pub fn kernel_status(out: &str, tag: &str) -> Vec<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{tag} ")))
        .unwrap_or_else(|| panic!("no {tag} in:\n{out}"))
        .split_whitespace()
        .skip(3)
        .map(String::from)
        .collect()
}

/// A sparse all-zero file of `bytes` named `name` in `dir`.
pub fn zero_file(dir: &Path, name: &str, bytes: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(bytes).unwrap();
    p
}

/// A numeric XML attribute of an `era_dump` line.
pub fn attr(line: &str, name: &str) -> Option<u64> {
    let pat = format!(" {name}=\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    line[start..end].parse().ok()
}

/// Last era each block was written in, from `era_dump` (archived writesets over the era
/// array); blocks never written are absent.
pub fn logical_eras(meta: &std::path::Path) -> std::collections::BTreeMap<u64, u64> {
    let out = std::process::Command::new("era_dump")
        .arg(meta)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).unwrap();
    let mut last = std::collections::BTreeMap::new();
    let mut cur = 0;
    for l in xml.lines().map(str::trim) {
        if l.starts_with("<writeset ") {
            cur = attr(l, "era").unwrap();
        } else if l.starts_with("<bit ") && l.contains("value=\"true\"") {
            let b = attr(l, "block").unwrap();
            let e = last.entry(b).or_insert(0);
            *e = (*e).max(cur);
        } else if l.starts_with("<era ") {
            let (b, e) = (attr(l, "block").unwrap(), attr(l, "era").unwrap());
            if e > 0 {
                let v = last.entry(b).or_insert(0);
                *v = (*v).max(e);
            }
        }
    }
    last
}
