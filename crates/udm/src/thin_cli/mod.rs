//! `udm thin <tool>` and the thin-provisioning-tools names (`thin_dump`, `thin_check`,
//! `thin_restore`): argv handling and printing over `udm_pdata::thin_xml` and
//! `udm_pdata::check`, with the real tools' options, output and exit codes.

mod delta;
mod ls;
mod repair;
mod shrink;
mod size;
mod trim;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use udm_pdata::check::check_thin;
use udm_pdata::io::{FileIo, MetaIo};
use udm_pdata::thin::{ThinSuperblock, NEEDS_CHECK};
use udm_pdata::thin_xml::{parse_xml, read_dump, restore, write_human, write_xml, DumpOpts};
use udm_pdata::{PdataError, BLOCK_SIZE};

/// The tools, by their thin-provisioning-tools names.
pub const TOOLS: &[&str] = &[
    "thin_dump",
    "thin_check",
    "thin_restore",
    "thin_metadata_size",
    "thin_ls",
    "thin_repair",
    "thin_delta",
    "thin_trim",
];

const VERSION: &str = "0.9.0";

/// `udm thin <tool> …`.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(|s| s.as_str()) {
        Some("shrink") => shrink::main(&args[1..]),
        Some(t) if TOOLS.contains(&format!("thin_{t}").as_str()) => {
            run(&format!("thin_{t}"), &args[1..])
        }
        Some(t) if TOOLS.contains(&t) => run(t, &args[1..]),
        _ => {
            eprintln!(
                "Usage: udm thin {{dump|check|restore|repair|ls|delta|trim|metadata_size|shrink}} [options] …"
            );
            1
        }
    }
}

/// Run `tool` (one of [`TOOLS`]) with its arguments.
pub fn run(tool: &str, args: &[String]) -> i32 {
    match tool {
        "thin_dump" => dump(args),
        "thin_check" => check(args),
        "thin_restore" => restore_cmd(args),
        "thin_metadata_size" => size::main(args),
        "thin_ls" => ls::main(args),
        "thin_repair" => repair::main(args),
        "thin_delta" => delta::main(args),
        "thin_trim" => trim::main(args),
        _ => 1,
    }
}

pub(crate) fn open_io(path: &str, write: bool) -> std::io::Result<Arc<dyn MetaIo>> {
    let f = OpenOptions::new().read(true).write(write).open(path)?;
    Ok(Arc::new(FileIo::new(f)?))
}

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

fn dump(args: &[String]) -> i32 {
    let mut opts = DumpOpts::default();
    let (mut human, mut out, mut input) = (false, None, None);
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let mut value = || {
            i += 1;
            args.get(i).cloned()
        };
        match a {
            "-h" | "--help" => {
                print!("{DUMP_USAGE}");
                return 0;
            }
            "-V" | "--version" => {
                println!("{VERSION}");
                return 0;
            }
            "-r" | "--repair" => {}
            "--skip-mappings" => opts.skip_mappings = true,
            "-f" | "--format" => match value().as_deref() {
                Some("xml") => human = false,
                Some("human_readable") => human = true,
                f => {
                    eprintln!("unknown format '{}'", f.unwrap_or(""));
                    eprint!("{DUMP_USAGE}");
                    return 1;
                }
            },
            "-o" => out = value(),
            "--dev-id" => match value().and_then(|v| v.parse().ok()) {
                Some(d) => opts.dev_id = Some(d),
                None => {
                    eprintln!("couldn't parse --dev-id");
                    return 1;
                }
            },
            "-m" | "--metadata-snap" => {
                let at = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
                if at.is_some() {
                    i += 1;
                }
                opts.metadata_snap = Some(at);
            }
            _ if a.starts_with('-') => {
                eprint!("{DUMP_USAGE}");
                return 1;
            }
            _ => input = Some(a.to_string()),
        }
        i += 1;
    }
    let Some(input) = input else {
        eprintln!("No input file provided.");
        eprint!("{DUMP_USAGE}");
        return 1;
    };
    let d = match open_io(&input, false).map_err(PdataError::from_io) {
        Ok(io) => read_dump(io, &opts),
        Err(e) => Err(e),
    };
    let d = match d {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let mut w: Box<dyn Write> = match &out {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("{p}: {e}");
                return 1;
            }
        },
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let r = if human {
        write_human(&d, &mut w)
    } else {
        write_xml(&d, &mut w)
    };
    match r.and_then(|_| w.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

const CHECK_USAGE: &str = "Usage: thin_check [options] {device|file}
Options:
  {-q|--quiet}
  {-h|--help}
  {-V|--version}
  {-m|--metadata-snap}
  {--auto-repair}
  {--override-mapping-root}
  {--clear-needs-check-flag}
  {--ignore-non-fatal-errors}
  {--skip-mappings}
  {--super-block-only}
";

#[derive(Default)]
struct CheckOpts {
    quiet: bool,
    sb_only: bool,
    skip_mappings: bool,
    clear_needs_check: bool,
}

fn check(args: &[String]) -> i32 {
    let mut o = CheckOpts::default();
    let mut input = None;
    for a in args {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{CHECK_USAGE}");
                return 0;
            }
            "-V" | "--version" => {
                println!("{VERSION}");
                return 0;
            }
            "-q" | "--quiet" => o.quiet = true,
            "--super-block-only" => o.sb_only = true,
            "--skip-mappings" => o.skip_mappings = true,
            "--clear-needs-check-flag" => o.clear_needs_check = true,
            // Reference counts above what the trees hold (leaks) are the only non-fatal
            // problems and `check_thin` reports them as errors either way.
            "--ignore-non-fatal-errors" | "-m" | "--metadata-snap" => {}
            s if s.starts_with('-') => {
                eprint!("{CHECK_USAGE}");
                return 1;
            }
            s => input = Some(s.to_string()),
        }
    }
    let Some(input) = input else {
        eprintln!("No input file provided.");
        eprint!("{CHECK_USAGE}");
        return 1;
    };
    if o.clear_needs_check && (o.skip_mappings || o.sb_only) {
        eprintln!("cannot perform fix without a full examination");
        eprint!("{CHECK_USAGE}");
        return 1;
    }
    if std::fs::metadata(&input).is_err() {
        eprintln!("Couldn't stat path");
        return 1;
    }
    let io = match open_io(&input, o.clear_needs_check) {
        Ok(io) => io,
        Err(e) => {
            eprintln!("{input}: {e}");
            return 1;
        }
    };
    match check_io(&io, &o) {
        Ok(sb) => {
            if o.clear_needs_check && sb.flags & NEEDS_CHECK != 0 {
                let mut sb = sb;
                sb.flags &= !NEEDS_CHECK;
                if let Err(e) = io.write_block(0, &sb.encode()).and_then(|_| io.flush()) {
                    eprintln!("{e}");
                    return 1;
                }
            }
            0
        }
        Err(()) => 1,
    }
}

/// Run the stages, printing them as thin_check does unless quiet; the superblock on success.
fn check_io(io: &Arc<dyn MetaIo>, o: &CheckOpts) -> Result<ThinSuperblock, ()> {
    let say = |m: &str| {
        if !o.quiet {
            eprintln!("{m}");
        }
    };
    say("examining superblock");
    let mut buf = [0u8; BLOCK_SIZE];
    let sb = io
        .read_block(0, &mut buf)
        .map_err(PdataError::from_io)
        .and_then(|_| ThinSuperblock::decode(&buf, 0));
    let sb = match sb {
        Ok(sb) => sb,
        Err(e) => {
            say("  superblock is corrupt");
            match e {
                PdataError::Checksum { computed, .. } => say(&format!(
                    "    bad checksum in superblock, wanted {computed}"
                )),
                e => say(&format!("    {e}")),
            }
            return Err(());
        }
    };
    if !o.quiet {
        // thin_check prints these once the superblock reads: the metadata device's blocks
        // other than the superblock count as free.
        println!("TRANSACTION_ID={}", sb.trans_id);
        println!("METADATA_FREE_BLOCKS={}", io.nr_blocks().saturating_sub(1));
        let _ = std::io::stdout().flush();
    }
    if o.sb_only {
        return Ok(sb);
    }
    say("examining devices tree");
    say(if o.skip_mappings {
        "examining top level of mapping tree"
    } else {
        "examining mapping tree"
    });
    if !o.skip_mappings {
        say("checking space map counts");
    }
    match check_thin(io.clone()) {
        Ok(_) => Ok(sb),
        Err(e) => {
            say(&format!("    {e}"));
            Err(())
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

fn restore_cmd(args: &[String]) -> i32 {
    let (mut input, mut output) = (None, None);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-h" | "--help" => {
                print!("{RESTORE_USAGE}");
                return 0;
            }
            "-V" | "--version" => {
                println!("{VERSION}");
                return 0;
            }
            "-q" | "--quiet" => {}
            "-i" | "--input" => {
                i += 1;
                input = args.get(i).cloned();
            }
            "-o" | "--output" => {
                i += 1;
                output = args.get(i).cloned();
            }
            _ => {
                eprint!("{RESTORE_USAGE}");
                return 1;
            }
        }
        i += 1;
    }
    let Some(input) = input else {
        eprintln!("No input file provided.");
        eprint!("{RESTORE_USAGE}");
        return 1;
    };
    let Some(output) = output else {
        eprintln!("No output file provided.");
        eprint!("{RESTORE_USAGE}");
        return 1;
    };
    let text = match std::fs::read_to_string(&input) {
        Ok(t) => t,
        Err(_) => {
            eprintln!("Couldn't stat file");
            return 1;
        }
    };
    if !Path::new(&output).exists() {
        eprintln!("Couldn't stat path");
        return 1;
    }
    let r = parse_xml(&text).and_then(|d| {
        let io = open_io(&output, true).map_err(PdataError::from_io)?;
        restore(io, &d)
    });
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
