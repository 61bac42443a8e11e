//! `thin_check`: the stages thin_check prints, over [`crate::check::check_thin`], and
//! `--clear-needs-check-flag`.

use super::opts::{parse, Arg, Item, Spec, HELP, QUIET, VERSION};
use super::{open_io, Console};
use crate::check::check_thin;
use crate::io::MetaIo;
use crate::thin::{ThinSuperblock, NEEDS_CHECK};
use crate::{PdataError, BLOCK_SIZE};
use std::sync::Arc;

const USAGE: &str = "Usage: thin_check [options] {device|file}
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

const SPECS: &[Spec] = &[
    HELP,
    VERSION,
    QUIET,
    Spec::new("sb-only", &["--super-block-only"], Arg::Flag),
    Spec::new("skip-mappings", &["--skip-mappings"], Arg::Flag),
    Spec::new(
        "clear-needs-check",
        &["--clear-needs-check-flag"],
        Arg::Flag,
    ),
    // Reference counts above what the trees hold (leaks) are the only non-fatal
    // problems and `check_thin` reports them as errors either way.
    Spec::new(
        "ignored",
        &["--ignore-non-fatal-errors", "-m", "--metadata-snap"],
        Arg::Flag,
    ),
];

#[derive(Default)]
struct CheckOpts {
    quiet: bool,
    sb_only: bool,
    skip_mappings: bool,
    clear_needs_check: bool,
}

/// `thin_check [options] DEV`.
pub fn main(args: &[String], con: &mut Console<'_>) -> i32 {
    let mut o = CheckOpts::default();
    let mut input = None;
    for item in parse(args, SPECS, false) {
        match item {
            Item::Opt { id: "help", .. } => return con.help(USAGE),
            Item::Opt { id: "version", .. } => return con.version(),
            Item::Opt { id: "quiet", .. } => o.quiet = true,
            Item::Opt { id: "sb-only", .. } => o.sb_only = true,
            Item::Opt {
                id: "skip-mappings",
                ..
            } => o.skip_mappings = true,
            Item::Opt {
                id: "clear-needs-check",
                ..
            } => o.clear_needs_check = true,
            Item::Opt { .. } => {}
            Item::Unknown(_) => return con.usage_error(None, USAGE),
            Item::Positional(p) => input = Some(p),
        }
    }
    let Some(input) = input else {
        return con.usage_error(Some("No input file provided."), USAGE);
    };
    if o.clear_needs_check && (o.skip_mappings || o.sb_only) {
        return con.usage_error(Some("cannot perform fix without a full examination"), USAGE);
    }
    if std::fs::metadata(&input).is_err() {
        return con.fail("Couldn't stat path");
    }
    let io = match open_io(&input, o.clear_needs_check) {
        Ok(io) => io,
        Err(e) => return con.fail(format!("{input}: {e}")),
    };
    match check_io(&io, &o, con) {
        Ok(sb) => {
            if o.clear_needs_check && sb.flags & NEEDS_CHECK != 0 {
                let mut sb = sb;
                sb.flags &= !NEEDS_CHECK;
                if let Err(e) = io.write_block(0, &sb.encode()).and_then(|_| io.flush()) {
                    return con.fail(e);
                }
            }
            0
        }
        Err(()) => 1,
    }
}

/// Run the stages, printing them as thin_check does unless quiet; the superblock on success.
fn check_io(
    io: &Arc<dyn MetaIo>,
    o: &CheckOpts,
    con: &mut Console<'_>,
) -> Result<ThinSuperblock, ()> {
    let quiet = o.quiet;
    let say = |con: &mut Console<'_>, m: &str| {
        if !quiet {
            let _ = writeln!(con.err, "{m}");
        }
    };
    say(con, "examining superblock");
    let mut buf = [0u8; BLOCK_SIZE];
    let sb = io
        .read_block(0, &mut buf)
        .map_err(PdataError::from_io)
        .and_then(|_| ThinSuperblock::decode(&buf, 0));
    let sb = match sb {
        Ok(sb) => sb,
        Err(e) => {
            say(con, "  superblock is corrupt");
            match e {
                PdataError::Checksum { computed, .. } => say(
                    con,
                    &format!("    bad checksum in superblock, wanted {computed}"),
                ),
                e => say(con, &format!("    {e}")),
            }
            return Err(());
        }
    };
    if !quiet {
        // thin_check prints these once the superblock reads: the metadata device's blocks
        // other than the superblock count as free.
        let _ = writeln!(con.out, "TRANSACTION_ID={}", sb.trans_id);
        let _ = writeln!(
            con.out,
            "METADATA_FREE_BLOCKS={}",
            io.nr_blocks().saturating_sub(1)
        );
        let _ = con.out.flush();
    }
    if o.sb_only {
        return Ok(sb);
    }
    say(con, "examining devices tree");
    say(
        con,
        if o.skip_mappings {
            "examining top level of mapping tree"
        } else {
            "examining mapping tree"
        },
    );
    if !o.skip_mappings {
        say(con, "checking space map counts");
    }
    match check_thin(io.clone()) {
        Ok(_) => Ok(sb),
        Err(e) => {
            say(con, &format!("    {e}"));
            Err(())
        }
    }
}
