//! `thin_ls`: argv and the right-aligned table over `udm_pdata::thin_ls`.

use super::open_io;
use udm_pdata::thin_ls::{human_size, rows, LsRow};
use udm_pdata::thin_xml::{read_dump, DumpOpts};

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
pub fn main(args: &[String]) -> i32 {
    let mut fields: Vec<String> = ["DEV", "MAPPED", "CREATE_TIME", "SNAP_TIME"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (mut headers, mut snap, mut input) = (true, false, None);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-h" | "--help" => {
                print!("{}", usage());
                return 0;
            }
            "-V" | "--version" => {
                println!("0.9.0");
                return 0;
            }
            "--no-headers" => headers = false,
            "-m" | "--metadata-snap" => snap = true,
            "-o" | "--format" => {
                i += 1;
                let Some(v) = args.get(i) else {
                    eprint!("{}", usage());
                    return 1;
                };
                fields = v.split(',').map(str::to_string).collect();
                if fields.iter().any(|f| !FIELDS.contains(&f.as_str())) {
                    eprintln!("unknown field");
                    return 1;
                }
            }
            a if a.starts_with('-') => {
                eprint!("{}", usage());
                return 1;
            }
            a => input = Some(a.to_string()),
        }
        i += 1;
    }
    let Some(input) = input else {
        eprintln!("No input file provided.");
        eprint!("{}", usage());
        return 1;
    };
    let opts = DumpOpts {
        metadata_snap: snap.then_some(None),
        ..Default::default()
    };
    let d = match open_io(&input, false)
        .map_err(udm_pdata::PdataError::from_io)
        .and_then(|io| read_dump(io, &opts))
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
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
    print!("{out}");
    0
}
