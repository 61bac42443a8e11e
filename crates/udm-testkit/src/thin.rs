//! Thin-provisioning test helpers: the real `thin_check` and `thin_dump` (parsed into
//! device → virtual block → data block maps), and a pool on image files in a Registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Devices → (virtual block → data block).
pub type Devs = BTreeMap<u64, BTreeMap<u64, u64>>;

/// Run the real `thin_check` on `meta`; Err with its output when it fails.
pub fn thin_check(meta: &Path) -> Result<(), String> {
    let out = Command::new("thin_check")
        .arg(meta)
        .output()
        .map_err(|e| format!("spawn thin_check: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "thin_check {} failed ({}): {}{}",
        meta.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn attr(line: &str, name: &str) -> Option<u64> {
    let pat = format!(" {name}=\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    line[start..end].parse().ok()
}

/// Parse `thin_dump` XML into its devices' mappings.
pub fn parse_dump(xml: &str) -> Devs {
    let mut devs = Devs::new();
    let mut cur = None;
    for l in xml.lines().map(str::trim) {
        if l.starts_with("<device ") {
            let d = attr(l, "dev_id").expect("dev_id");
            devs.insert(d, BTreeMap::new());
            cur = Some(d);
        } else if l.starts_with("<single_mapping ") {
            let m = devs.get_mut(&cur.expect("in a device")).expect("device");
            m.insert(
                attr(l, "origin_block").expect("origin_block"),
                attr(l, "data_block").expect("data_block"),
            );
        } else if l.starts_with("<range_mapping ") {
            let m = devs.get_mut(&cur.expect("in a device")).expect("device");
            let o = attr(l, "origin_begin").expect("origin_begin");
            let d = attr(l, "data_begin").expect("data_begin");
            for i in 0..attr(l, "length").expect("length") {
                m.insert(o + i, d + i);
            }
        }
    }
    devs
}

/// `thin_dump` of `meta` (XML) and its parsed mappings.
pub fn thin_dump(meta: &Path) -> (String, Devs) {
    let out = Command::new("thin_dump")
        .arg(meta)
        .output()
        .expect("spawn thin_dump");
    assert!(
        out.status.success(),
        "thin_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).expect("utf-8 XML");
    let devs = parse_dump(&xml);
    (xml, devs)
}

/// A metadata and a data image for a pool of `data_blocks` blocks of `block_size` sectors.
pub struct PoolFiles {
    pub meta: PathBuf,
    pub data: PathBuf,
    pub block_size: u64,
    pub data_blocks: u64,
}

impl PoolFiles {
    /// Sparse, zeroed images in `dir` (metadata of `meta_mib` MiB).
    pub fn new(dir: &Path, meta_mib: u64, block_size: u64, data_blocks: u64) -> PoolFiles {
        let meta = crate::image(dir, "meta.img", meta_mib << 20);
        let data = crate::image(dir, "data.img", data_blocks * block_size * 512);
        PoolFiles {
            meta,
            data,
            block_size,
            data_blocks,
        }
    }

    /// The pool's table line with `extra` appended (low water mark, features).
    pub fn table(&self, extra: &str) -> String {
        format!(
            "0 {} thin-pool {} {} {} {extra}",
            self.data_blocks * self.block_size,
            self.meta.display(),
            self.data.display(),
            self.block_size
        )
    }
}
