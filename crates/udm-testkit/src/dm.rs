//! Helpers for target tests on an in-process Registry (the fault-injection targets,
//! log-writes): dmsetup-like create/table/status/message, the pattern images the refvm
//! captures use, POSIX `cksum`, and a runner that gates refvm tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use udm_core::registry::OpenGuard;
use udm_core::{DmError, Registry, StatusType, TargetTypes};
use udm_io::{BlockDevice, Sectors};

pub use crate::registry::{create, sel};

pub fn reg() -> Registry {
    Registry::new(udm_targets::builtin())
}

pub fn reg_with(types: TargetTypes) -> Registry {
    Registry::new(types)
}

/// `dmsetup table|status NAME` as dmsetup prints it.
pub fn lines(reg: &Registry, name: &str, ty: StatusType) -> Result<String, DmError> {
    let (_, st) = reg.status(&sel(name), false, ty)?;
    Ok(st
        .iter()
        .map(|s| format!("{} {} {} {}\n", s.start, s.len, s.ttype, s.params))
        .collect())
}

pub fn table(reg: &Registry, name: &str) -> String {
    lines(reg, name, StatusType::Table).expect("table")
}

pub fn status(reg: &Registry, name: &str) -> String {
    lines(reg, name, StatusType::Info).expect("status")
}

/// `dmsetup message NAME 0 WORDS` output (dmsetup adds a newline when missing).
pub fn message(reg: &Registry, name: &str, words: &str) -> Result<String, DmError> {
    let argv: Vec<String> = words.split_whitespace().map(String::from).collect();
    Ok(match reg.message(&sel(name), 0, &argv)? {
        Some(t) if t.is_empty() || t.ends_with('\n') => t,
        Some(t) => t + "\n",
        None => String::new(),
    })
}

pub fn open(reg: &Registry, name: &str) -> (Arc<dyn BlockDevice>, OpenGuard) {
    reg.open(&sel(name)).expect("open")
}

pub fn read(dev: &dyn BlockDevice, sector: u64, bytes: usize) -> Result<Vec<u8>, udm_io::IoError> {
    udm_io::sync::read_at(dev, Sectors(sector), bytes).map(|b| b.into_vec())
}

pub fn write(dev: &dyn BlockDevice, sector: u64, data: &[u8]) -> Result<(), udm_io::IoError> {
    udm_io::sync::write_at(dev, Sectors(sector), data)
}

/// The pattern disk refvm captures use: every u64 word holds its byte offset (xor `xor`).
pub fn pattern_image(path: &Path, bytes: u64, xor: u64) {
    let mut v = Vec::with_capacity(bytes as usize);
    for off in (0..bytes).step_by(8) {
        v.extend_from_slice(&(off ^ xor).to_le_bytes());
    }
    std::fs::write(path, v).expect("write image");
}

/// xor for the second disk (b.img).
pub const B_XOR: u64 = 0xFFFF_0000_0000_0000;

/// `pat.bin`: 1 MiB of write data.
pub fn pat() -> Vec<u8> {
    (0..1usize << 20)
        .map(|i| (((i / 512) * 31 + i * 7) % 251) as u8)
        .collect()
}

/// A zero-filled image of `sectors` sectors.
pub fn zero_image(dir: &Path, name: &str, sectors: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(sectors * 512).unwrap();
    p
}

/// POSIX `cksum`: CRC-32 (poly 0x04C11DB7, MSB first) over the data and its length.
pub fn cksum(data: &[u8]) -> String {
    fn step(mut crc: u32, b: u8) -> u32 {
        crc ^= (b as u32) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
        crc
    }
    let mut crc = data.iter().fold(0u32, |c, &b| step(c, b));
    let mut n = data.len() as u64;
    while n > 0 {
        crc = step(crc, n as u8);
        n >>= 8;
    }
    format!("{} {}", !crc, data.len())
}

/// The refvm runner when the reference VM is built; `None` (test skipped) otherwise, or a
/// panic under `UDM_REQUIRE_TOOLS=1`.
pub fn refvm() -> Option<PathBuf> {
    let cache = std::env::var("REFVM_CACHE").unwrap_or_else(|_| "/var/cache/refvm".into());
    let run = std::env::var("REFVM_RUN").unwrap_or_else(|_| "/work/shared/refvm/run.sh".into());
    let ok = Path::new(&cache).join("root.img").is_file() && Path::new(&run).is_file();
    if ok {
        return Some(PathBuf::from(run));
    }
    if std::env::var("UDM_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("refvm is not built ({cache}) and UDM_REQUIRE_TOOLS=1");
    }
    eprintln!("SKIP: refvm not built in {cache}");
    None
}

/// Run `script` in refvm with `disks` and `share` (at /mnt/share); panics on failure.
pub fn run_vm(run: &Path, disks: &[&Path], share: &Path, script: &str) -> String {
    let mut c = Command::new(run);
    c.env("REFVM_QUIET_TCG", "1").args(["--timeout", "300"]);
    for d in disks {
        c.arg("--disk").arg(d);
    }
    c.arg("--share").arg(share).arg("--").arg(script);
    let out = c.output().expect("run refvm");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "refvm failed ({}): {text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The repository root (for goldens).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn golden_dir() -> PathBuf {
    repo_root().join("tests/golden/kernel/targets4")
}
