//! `thin_repair -i IN -o OUT`: everything readable from IN written afresh to OUT, with
//! the superblock values the options give taking precedence. (Salvaging from a damaged
//! superblock by scanning for trees is not done: such input fails.)

use super::open_io;
use udm_pdata::thin_xml::{read_dump, restore, DumpOpts};
use udm_pdata::PdataError;

const USAGE: &str = "Usage: thin_repair [options] {device|file}
Options:
  {-h|--help}
  {-i|--input} <input metadata (binary format)>
  {-o|--output} <output metadata (binary format)>
  {--transaction-id} <natural>
  {--data-block-size} <natural>
  {--nr-data-blocks} <natural>
  {-V|--version}
";

/// `thin_repair [options]`.
pub fn main(args: &[String]) -> i32 {
    let (mut input, mut output) = (None, None);
    let (mut trans, mut dbs, mut nr): (Option<u64>, Option<u32>, Option<u64>) = (None, None, None);
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let mut value = || {
            i += 1;
            args.get(i).cloned()
        };
        let ok = match a {
            "-h" | "--help" => {
                print!("{USAGE}");
                return 0;
            }
            "-V" | "--version" => {
                println!("0.9.0");
                return 0;
            }
            "-i" | "--input" => value().map(|v| input = Some(v)).is_some(),
            "-o" | "--output" => value().map(|v| output = Some(v)).is_some(),
            "--transaction-id" => value()
                .and_then(|v| v.parse().ok())
                .map(|v| trans = Some(v))
                .is_some(),
            "--data-block-size" => value()
                .and_then(|v| v.parse().ok())
                .map(|v| dbs = Some(v))
                .is_some(),
            "--nr-data-blocks" => value()
                .and_then(|v| v.parse().ok())
                .map(|v| nr = Some(v))
                .is_some(),
            _ => false,
        };
        if !ok {
            eprint!("{USAGE}");
            return 1;
        }
        i += 1;
    }
    let Some(input) = input else {
        eprintln!("No input file provided.");
        eprint!("{USAGE}");
        return 1;
    };
    let Some(output) = output else {
        eprintln!("No output file provided.");
        eprint!("{USAGE}");
        return 1;
    };
    if std::fs::metadata(&input).is_err() {
        eprintln!("Couldn't stat file");
        return 1;
    }
    let r = open_io(&input, false)
        .map_err(PdataError::from_io)
        .and_then(|io| read_dump(io, &DumpOpts::default()))
        .and_then(|mut d| {
            d.transaction = trans.unwrap_or(d.transaction);
            d.data_block_size = dbs.unwrap_or(d.data_block_size);
            d.nr_data_blocks = nr.unwrap_or(d.nr_data_blocks);
            restore(open_io(&output, true).map_err(PdataError::from_io)?, &d)
        });
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
