//! The thin-provisioning-tools personalities over this crate (`thin_dump`, `thin_check`,
//! `thin_restore`, `thin_repair`, `thin_ls`, `thin_delta`, `thin_trim`,
//! `thin_metadata_size`, and udm's own `thin shrink`): option handling, messages, output
//! and exit codes as thin-provisioning-tools 0.9, writing to a [`Console`] so the binary
//! only hands over argv and its standard streams. [`opts`] is the option parser the
//! whole tool family (thin, cache, era) shares.

pub mod opts;
mod thin_check;
mod thin_delta;
mod thin_dump;
mod thin_ls;
mod thin_shrink;
mod thin_size;
mod thin_trim;

use crate::io::{FileIo, MetaIo};
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;

/// The version the tools report (`-V`), that of the thin-provisioning-tools they mimic.
pub const VERSION: &str = "0.9.0";

/// The thin tools, by their thin-provisioning-tools names.
pub const THIN_TOOLS: &[&str] = &[
    "thin_dump",
    "thin_check",
    "thin_restore",
    "thin_metadata_size",
    "thin_ls",
    "thin_repair",
    "thin_delta",
    "thin_trim",
];

/// Where a tool prints: its standard output and standard error.
pub struct Console<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

/// Run thin tool `tool` (one of [`THIN_TOOLS`], or `thin_shrink` for `udm thin shrink`)
/// with its arguments; the exit code.
pub fn run_thin(tool: &str, args: &[String], con: &mut Console<'_>) -> i32 {
    let rc = match tool {
        "thin_dump" => thin_dump::dump(args, con),
        "thin_check" => thin_check::main(args, con),
        "thin_restore" => thin_dump::restore(args, con),
        "thin_repair" => thin_dump::repair(args, con),
        "thin_metadata_size" => thin_size::main(args, con),
        "thin_ls" => thin_ls::main(args, con),
        "thin_delta" => thin_delta::main(args, con),
        "thin_trim" => thin_trim::main(args, con),
        "thin_shrink" => thin_shrink::main(args, con),
        _ => 1,
    };
    let _ = con.out.flush();
    let _ = con.err.flush();
    rc
}

/// Open a metadata device or file for the tools.
pub fn open_io(path: &str, write: bool) -> std::io::Result<Arc<dyn MetaIo>> {
    let f = OpenOptions::new().read(true).write(write).open(path)?;
    Ok(Arc::new(FileIo::new(f)?))
}
