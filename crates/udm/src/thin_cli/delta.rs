//! `thin_delta --thin1 A --thin2 B [--verbose] [-m [block]] DEV`: argv and output over
//! `udm_pdata::thin_delta`.

use super::open_io;
use std::io::Write;
use udm_pdata::thin_delta::{compare, write_delta};
use udm_pdata::thin_xml::{read_dump, DumpOpts};
use udm_pdata::PdataError;

const USAGE: &str = "Usage: thin_delta [options] <device or file>
Options:
  {--thin1, --snap1}
  {--thin2, --snap2}
  {-m, --metadata-snap} [block#]
  {--verbose}
  {-h|--help}
  {-V|--version}
";

fn fail(m: &str) -> i32 {
    eprintln!("{m}");
    eprint!("{USAGE}");
    1
}

/// `thin_delta [options] DEV`.
pub fn main(args: &[String]) -> i32 {
    let (mut a, mut b, mut verbose, mut snap, mut input) = (None, None, false, None, None);
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        match arg {
            "-h" | "--help" => {
                print!("{USAGE}");
                return 0;
            }
            "-V" | "--version" => {
                println!("0.9.0");
                return 0;
            }
            "--verbose" => verbose = true,
            "--thin1" | "--snap1" | "--thin2" | "--snap2" => {
                i += 1;
                let Some(v) = args.get(i).and_then(|v| v.parse::<u64>().ok()) else {
                    return fail(&format!("Couldn't parse {arg}"));
                };
                if arg.ends_with('1') {
                    a = Some(v);
                } else {
                    b = Some(v);
                }
            }
            "-m" | "--metadata-snap" => {
                let at = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
                if at.is_some() {
                    i += 1;
                }
                snap = Some(at);
            }
            s if s.starts_with('-') => {
                eprint!("{USAGE}");
                return 1;
            }
            s => input = Some(s.to_string()),
        }
        i += 1;
    }
    let Some(input) = input else {
        return fail("No input device provided.");
    };
    let Some(a) = a else {
        return fail("--snap1 not specified.");
    };
    let Some(b) = b else {
        return fail("--snap2 not specified.");
    };
    let opts = DumpOpts {
        metadata_snap: snap,
        ..Default::default()
    };
    let d = match open_io(&input, false)
        .map_err(PdataError::from_io)
        .and_then(|io| read_dump(io, &opts))
    {
        Ok(d) => d,
        Err(e) => return fail(&e.to_string()),
    };
    let find = |dev: u64| d.devices.iter().find(|x| x.dev_id == dev);
    let Some(left) = find(a) else {
        return fail(&format!("Unable to find mapping tree for snap1 ({a})"));
    };
    let Some(right) = find(b) else {
        return fail(&format!("Unable to find mapping tree for snap2 ({b})"));
    };
    let entries = compare(&left.mappings, &right.mappings);
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    match write_delta(&d, a, b, &entries, verbose, &mut w).and_then(|_| w.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
