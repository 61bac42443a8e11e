//! `thin_delta --thin1 A --thin2 B [--verbose] [-m [block]] DEV` over [`crate::thin_delta`].

use super::opts::{parse, Arg, Item, Spec, HELP, VERSION};
use super::{open_io, Console};
use crate::thin_delta::{compare, write_delta};
use crate::thin_xml::{read_dump, DumpOpts};
use crate::PdataError;
use std::io::Write;

const USAGE: &str = "Usage: thin_delta [options] <device or file>
Options:
  {--thin1, --snap1}
  {--thin2, --snap2}
  {-m, --metadata-snap} [block#]
  {--verbose}
  {-h|--help}
  {-V|--version}
";

const SPECS: &[Spec] = &[
    HELP,
    VERSION,
    Spec::new("verbose", &["--verbose"], Arg::Flag),
    Spec::new("thin1", &["--thin1", "--snap1"], Arg::Value),
    Spec::new("thin2", &["--thin2", "--snap2"], Arg::Value),
    Spec::new("snap", &["-m", "--metadata-snap"], Arg::OptionalNumber),
];

/// `thin_delta [options] DEV`.
pub fn main(args: &[String], con: &mut Console<'_>) -> i32 {
    let (mut a, mut b, mut verbose, mut snap, mut input) = (None, None, false, None, None);
    for item in parse(args, SPECS, false) {
        match item {
            Item::Opt { id: "help", .. } => return con.help(USAGE),
            Item::Opt { id: "version", .. } => return con.version(),
            Item::Opt { id: "verbose", .. } => verbose = true,
            Item::Opt {
                id: "snap", value, ..
            } => {
                snap = Some(value.and_then(|v| v.parse::<u64>().ok()));
            }
            Item::Opt { id, name, value } => {
                let Some(v) = value.and_then(|v| v.parse::<u64>().ok()) else {
                    return con.usage_error(Some(&format!("Couldn't parse {name}")), USAGE);
                };
                if id == "thin1" {
                    a = Some(v);
                } else {
                    b = Some(v);
                }
            }
            Item::Unknown(_) => return con.usage_error(None, USAGE),
            Item::Positional(p) => input = Some(p),
        }
    }
    let Some(input) = input else {
        return con.usage_error(Some("No input device provided."), USAGE);
    };
    let Some(a) = a else {
        return con.usage_error(Some("--snap1 not specified."), USAGE);
    };
    let Some(b) = b else {
        return con.usage_error(Some("--snap2 not specified."), USAGE);
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
        Err(e) => return con.usage_error(Some(&e.to_string()), USAGE),
    };
    let find = |dev: u64| d.devices.iter().find(|x| x.dev_id == dev);
    let Some(left) = find(a) else {
        let m = format!("Unable to find mapping tree for snap1 ({a})");
        return con.usage_error(Some(&m), USAGE);
    };
    let Some(right) = find(b) else {
        let m = format!("Unable to find mapping tree for snap2 ({b})");
        return con.usage_error(Some(&m), USAGE);
    };
    let entries = compare(&left.mappings, &right.mappings);
    let mut w = std::io::BufWriter::new(&mut *con.out);
    let r = write_delta(&d, a, b, &entries, verbose, &mut w).and_then(|_| w.flush());
    drop(w);
    match r {
        Ok(()) => 0,
        Err(e) => con.fail(e),
    }
}
