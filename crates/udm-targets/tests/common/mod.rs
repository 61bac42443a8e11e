//! Shared helpers for engine tests: a registry with the built-in targets and image files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use udm_core::{DevSel, DmError, Registry, TableLine};
use udm_io::{BlockDevice, Sectors};

pub fn registry() -> Registry {
    Registry::new(udm_targets::builtin())
}

pub fn sel(n: &str) -> DevSel {
    DevSel::Name(n.to_string())
}

/// Parse table text (panics on a parse error).
pub fn lines(t: &str) -> Vec<TableLine> {
    udm_core::parse_table_text(t).expect("table text parses")
}

/// create + load + resume, like `dmsetup create`.
pub fn create(reg: &Registry, name: &str, table: &str) -> Result<(), DmError> {
    reg.create(name, "")?;
    let r = reg
        .load(&sel(name), &lines(table), false)
        .and_then(|_| reg.resume(&sel(name)).map(|_| ()));
    if r.is_err() {
        let _ = reg.remove(&sel(name), false);
    }
    r
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
