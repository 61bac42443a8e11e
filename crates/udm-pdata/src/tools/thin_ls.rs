//! `thin_ls`: the right-aligned table of devices over [`crate::thin_ls`].

use super::opts::{parse, Arg, Item, Spec, HELP, VERSION};
use super::{open_io, Console};
use crate::thin_ls::{human_size, rows, LsRow};
use crate::thin_xml::{read_dump, DumpOpts};

const FIELDS: [&str; 16] = [
    "DEV",
    "MAPPED_BLOCKS",
    "EXCLUSIVE_BLOCKS",
    "SHARED_BLOCKS",
    "MAPPED_SECTORS",
    "EXCLUSIVE_SECTORS",
    "SHARED_SECTORS",
    "MAPPED_BYTES",
    "EXCLUSIVE_BYTES",
    "SHARED_BYTES",
    "MAPPED",
    "EXCLUSIVE",
    "SHARED",
    "TRANSACTION",
    "CREATE_TIME",
    "SNAP_TIME",
];

const SPECS: &[Spec] = &[
    HELP,
    VERSION,
    Spec::new("no-headers", &["--no-headers"], Arg::Flag),
    Spec::new("snap", &["-m", "--metadata-snap"], Arg::Flag),
    Spec::new("format", &["-o", "--format"], Arg::Value),
];

fn usage() -> String {
    let mut s = String::from(
        "Usage: thin_ls [options] {metadata device}
Options:
  {-h|--help}
  {-m|--metadata-snap}
  {--no-headers}
  {-o|--format <fields>}
  {-V|--version}

where <fields> is a comma separated list from:
",
    );
    for f in FIELDS {
        s += &format!("  {f}\n");
    }
    s
}

fn cell(field: &str, r: &LsRow, block_sectors: u64) -> String {
    let blocks = |kind: &str| match kind {
        "MAPPED" => r.mapped,
        "EXCLUSIVE" => r.exclusive,
        _ => r.shared(),
    };
    match field {
        "DEV" => r.dev.to_string(),
        "TRANSACTION" => r.transaction.to_string(),
        "CREATE_TIME" => r.create_time.to_string(),
        "SNAP_TIME" => r.snap_time.to_string(),
        f => match f.split_once('_') {
            Some((k, "BLOCKS")) => blocks(k).to_string(),
            Some((k, "SECTORS")) => (blocks(k) * block_sectors).to_string(),
            Some((k, "BYTES")) => (blocks(k) * block_sectors * 512).to_string(),
            _ => human_size(blocks(f) * block_sectors * 512),
        },
    }
}

/// `thin_ls [options] DEV`.
pub fn main(args: &[String], con: &mut Console<'_>) -> i32 {
    let mut fields: Vec<String> = ["DEV", "MAPPED", "CREATE_TIME", "SNAP_TIME"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (mut headers, mut snap, mut input) = (true, false, None);
    for item in parse(args, SPECS, false) {
        match item {
            Item::Opt { id: "help", .. } => return con.help(&usage()),
            Item::Opt { id: "version", .. } => return con.version(),
            Item::Opt {
                id: "no-headers", ..
            } => headers = false,
            Item::Opt { id: "snap", .. } => snap = true,
            Item::Opt { value, .. } => {
                let Some(v) = value else {
                    return con.usage_error(None, &usage());
                };
                fields = v.split(',').map(str::to_string).collect();
                if fields.iter().any(|f| !FIELDS.contains(&f.as_str())) {
                    return con.fail("unknown field");
                }
            }
            Item::Unknown(_) => return con.usage_error(None, &usage()),
            Item::Positional(p) => input = Some(p),
        }
    }
    let Some(input) = input else {
        return con.usage_error(Some("No input file provided."), &usage());
    };
    let opts = DumpOpts {
        metadata_snap: snap.then_some(None),
        ..Default::default()
    };
    let d = match open_io(&input, false)
        .map_err(crate::PdataError::from_io)
        .and_then(|io| read_dump(io, &opts))
    {
        Ok(d) => d,
        Err(e) => return con.fail(e),
    };
    let bs = u64::from(d.data_block_size);
    let mut table: Vec<Vec<String>> = Vec::new();
    if headers {
        table.push(fields.clone());
    }
    for r in rows(&d) {
        table.push(fields.iter().map(|f| cell(f, &r, bs)).collect());
    }
    let widths: Vec<usize> = (0..fields.len())
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &table {
        for (c, v) in row.iter().enumerate() {
            out += &format!("{v:>w$} ", w = widths[c]);
        }
        out.push('\n');
    }
    let _ = write!(con.out, "{out}");
    0
}
