//! `thin_dump`, `thin_restore` and `thin_repair`: the XML family over
//! [`crate::thin_xml`]. `thin_repair` writes everything readable from its input afresh
//! to its output, the superblock values its options give taking precedence (salvaging
//! from a damaged superblock by scanning for trees is not done: such input fails).

use super::opts::{parse, Arg, Item, Spec, HELP, INPUT, OUTPUT, QUIET, VERSION};
use super::{open_io, Console};
use crate::thin_xml::{
    parse_xml, read_dump, restore as restore_xml, write_human, write_xml, DumpOpts,
};
use crate::PdataError;
use std::io::Write;
use std::path::Path;

const DUMP_USAGE: &str = "Usage: thin_dump [options] {device|file}
Options:
  {-h|--help}
  {-f|--format} {xml|human_readable|custom}
  {-r|--repair}
  {-m|--metadata-snap} [block#]
  {-o <xml file>}
  {--dev-id} <dev-id>
  {--skip-mappings}
  {-V|--version}
";

const DUMP_SPECS: &[Spec] = &[
    HELP,
    VERSION,
    Spec::new("repair", &["-r", "--repair"], Arg::Flag),
    Spec::new("skip-mappings", &["--skip-mappings"], Arg::Flag),
    Spec::new("format", &["-f", "--format"], Arg::Value),
    Spec::new("output", &["-o"], Arg::Value),
    Spec::new("dev-id", &["--dev-id"], Arg::Value),
    Spec::new("snap", &["-m", "--metadata-snap"], Arg::OptionalNumber),
];

/// `thin_dump [options] DEV`.
pub fn dump(args: &[String], con: &mut Console<'_>) -> i32 {
    let mut opts = DumpOpts::default();
    let (mut human, mut out, mut input) = (false, None, None);
    for item in parse(args, DUMP_SPECS, false) {
        match item {
            Item::Opt { id: "help", .. } => return con.help(DUMP_USAGE),
            Item::Opt { id: "version", .. } => return con.version(),
            Item::Opt {
                id: "skip-mappings",
                ..
            } => opts.skip_mappings = true,
            Item::Opt {
                id: "format",
                value,
                ..
            } => match value.as_deref() {
                Some("xml") => human = false,
                Some("human_readable") => human = true,
                f => {
                    let m = format!("unknown format '{}'", f.unwrap_or(""));
                    return con.usage_error(Some(&m), DUMP_USAGE);
                }
            },
            Item::Opt {
                id: "output",
                value,
                ..
            } => out = value,
            Item::Opt {
                id: "dev-id",
                value,
                ..
            } => match value.and_then(|v| v.parse().ok()) {
                Some(d) => opts.dev_id = Some(d),
                None => return con.fail("couldn't parse --dev-id"),
            },
            Item::Opt {
                id: "snap", value, ..
            } => {
                opts.metadata_snap = Some(value.and_then(|v| v.parse().ok()));
            }
            Item::Opt { .. } => {} // -r: reading repairs nothing more than it does
            Item::Unknown(_) => return con.usage_error(None, DUMP_USAGE),
            Item::Positional(p) => input = Some(p),
        }
    }
    let Some(input) = input else {
        return con.usage_error(Some("No input file provided."), DUMP_USAGE);
    };
    let d = match open_io(&input, false).map_err(PdataError::from_io) {
        Ok(io) => read_dump(io, &opts),
        Err(e) => Err(e),
    };
    let d = match d {
        Ok(d) => d,
        Err(e) => return con.fail(e),
    };
    let Console { out: stdout, err } = con;
    let mut w: Box<dyn Write + '_> = match &out {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                let _ = writeln!(err, "{p}: {e}");
                return 1;
            }
        },
        None => Box::new(std::io::BufWriter::new(&mut **stdout)),
    };
    let r = if human {
        write_human(&d, &mut w)
    } else {
        write_xml(&d, &mut w)
    };
    match r.and_then(|_| w.flush()) {
        Ok(()) => 0,
        Err(e) => {
            drop(w);
            let _ = writeln!(err, "{e}");
            1
        }
    }
}

const RESTORE_USAGE: &str = "Usage: thin_restore [options]
Options:
  {-h|--help}
  {-i|--input} <input xml file>
  {-o|--output} <output device or file>
  {-q|--quiet}
  {-V|--version}
";

/// `-i IN -o OUT` for restore and repair: both paths, or the tool's complaint.
fn in_out(
    input: Option<String>,
    output: Option<String>,
    usage: &str,
    con: &mut Console<'_>,
) -> Result<(String, String), i32> {
    let Some(input) = input else {
        return Err(con.usage_error(Some("No input file provided."), usage));
    };
    let Some(output) = output else {
        return Err(con.usage_error(Some("No output file provided."), usage));
    };
    Ok((input, output))
}

/// `thin_restore -i XML -o DEV`.
pub fn restore(args: &[String], con: &mut Console<'_>) -> i32 {
    let (mut input, mut output) = (None, None);
    for item in parse(args, &[HELP, VERSION, QUIET, INPUT, OUTPUT], false) {
        match item {
            Item::Opt { id: "help", .. } => return con.help(RESTORE_USAGE),
            Item::Opt { id: "version", .. } => return con.version(),
            Item::Opt { id: "quiet", .. } => {}
            Item::Opt {
                id: "input", value, ..
            } => input = value,
            Item::Opt {
                id: "output",
                value,
                ..
            } => output = value,
            _ => return con.usage_error(None, RESTORE_USAGE),
        }
    }
    let (input, output) = match in_out(input, output, RESTORE_USAGE, con) {
        Ok(p) => p,
        Err(rc) => return rc,
    };
    let text = match std::fs::read_to_string(&input) {
        Ok(t) => t,
        Err(_) => return con.fail("Couldn't stat file"),
    };
    if !Path::new(&output).exists() {
        return con.fail("Couldn't stat path");
    }
    let r = open_io(&output, true)
        .map_err(PdataError::from_io)
        .and_then(|io| {
            let d = parse_xml(&text, io.nr_blocks())?;
            restore_xml(io, &d)
        });
    match r {
        Ok(()) => 0,
        Err(e) => con.fail(e),
    }
}

const REPAIR_USAGE: &str = "Usage: thin_repair [options] {device|file}
Options:
  {-h|--help}
  {-i|--input} <input metadata (binary format)>
  {-o|--output} <output metadata (binary format)>
  {--transaction-id} <natural>
  {--data-block-size} <natural>
  {--nr-data-blocks} <natural>
  {-V|--version}
";

const REPAIR_SPECS: &[Spec] = &[
    HELP,
    VERSION,
    INPUT,
    OUTPUT,
    Spec::new("transaction-id", &["--transaction-id"], Arg::Value),
    Spec::new("data-block-size", &["--data-block-size"], Arg::Value),
    Spec::new("nr-data-blocks", &["--nr-data-blocks"], Arg::Value),
];

/// `thin_repair -i IN -o OUT [overrides]`.
pub fn repair(args: &[String], con: &mut Console<'_>) -> i32 {
    let (mut input, mut output) = (None, None);
    let (mut trans, mut dbs, mut nr): (Option<u64>, Option<u32>, Option<u64>) = (None, None, None);
    for item in parse(args, REPAIR_SPECS, false) {
        let ok = match item {
            Item::Opt { id: "help", .. } => return con.help(REPAIR_USAGE),
            Item::Opt { id: "version", .. } => return con.version(),
            Item::Opt {
                id, value: Some(v), ..
            } => match id {
                "input" => {
                    input = Some(v);
                    true
                }
                "output" => {
                    output = Some(v);
                    true
                }
                "transaction-id" => v.parse().map(|v| trans = Some(v)).is_ok(),
                "data-block-size" => v.parse().map(|v| dbs = Some(v)).is_ok(),
                _ => v.parse().map(|v| nr = Some(v)).is_ok(),
            },
            _ => false,
        };
        if !ok {
            return con.usage_error(None, REPAIR_USAGE);
        }
    }
    let (input, output) = match in_out(input, output, REPAIR_USAGE, con) {
        Ok(p) => p,
        Err(rc) => return rc,
    };
    if std::fs::metadata(&input).is_err() {
        return con.fail("Couldn't stat file");
    }
    let r = open_io(&input, false)
        .map_err(PdataError::from_io)
        .and_then(|io| read_dump(io, &DumpOpts::default()))
        .and_then(|mut d| {
            d.transaction = trans.unwrap_or(d.transaction);
            d.data_block_size = dbs.unwrap_or(d.data_block_size);
            d.nr_data_blocks = nr.unwrap_or(d.nr_data_blocks);
            restore_xml(open_io(&output, true).map_err(PdataError::from_io)?, &d)
        });
    match r {
        Ok(()) => 0,
        Err(e) => con.fail(e),
    }
}
