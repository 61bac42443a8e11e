//! `udm log-writes replay|dump`: replay a dm-log-writes log (written by the kernel target or by
//! udm's) onto a device or image file, to any entry, flush or mark, optionally running a check
//! command (such as `e2fsck -fn`) at every flush, FUA write and mark — crash-consistency
//! testing in the spirit of xfstests' replay-log.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use udm_io::{BlockDevice, FileDevice};
use udm_targets::log_writes::format::{flags_str, LogError, LOG_FLUSH_FLAG, LOG_FUA_FLAG};
use udm_targets::log_writes::reader::{replay, LogEntry, LogReader, Next, ReplayOptions};

const USAGE: &str = "\
Usage:
  udm log-writes dump LOG
  udm log-writes replay LOG DEV [options]
      --limit N           replay N entries
      --start-entry N     start at entry N (0-based)
      --start-mark NAME   start just after mark NAME (entries before it are not replayed)
      --end-mark NAME     stop after mark NAME
      --next-flush        stop after the next flush
      --next-fua          stop after the next FUA write
      --no-discard        skip discards
      --check CMD         run `CMD DEV` after every flush, FUA write and mark; stop at the
                          first failure (exit 1)
      --fsck CMD --check flush|fua|N
                          replay-log style: run CMD (as given) at every flush, FUA write, or
                          every N entries
      --keep-going        run every check even after one fails (exit 1 at the end)
      -v, --verbose       print each replayed entry
LOG and DEV may be block devices or image files.
";

/// When to run the check command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckWhen {
    /// After every flush, FUA write and mark.
    Sync,
    Flush,
    Fua,
    Every(u64),
}

/// Parsed `replay` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayArgs {
    pub log: String,
    pub dev: String,
    pub opts: ReplayOptionsLite,
    /// The check command, and whether the device path is appended to it.
    pub check: Option<(String, bool)>,
    pub when: CheckWhen,
    pub keep_going: bool,
    pub verbose: bool,
}

/// `ReplayOptions` fields, comparable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayOptionsLite {
    pub start_entry: u64,
    pub start_mark: Option<String>,
    pub limit: Option<u64>,
    pub end_mark: Option<String>,
    pub stop_flags: u64,
    pub no_discard: bool,
}

impl ReplayOptionsLite {
    fn to_opts(&self) -> ReplayOptions {
        ReplayOptions {
            start_entry: self.start_entry,
            start_mark: self.start_mark.clone(),
            limit: self.limit,
            end_mark: self.end_mark.clone(),
            stop_flags: self.stop_flags,
            no_discard: self.no_discard,
        }
    }
}

fn num(flag: &str, v: Option<&String>) -> Result<u64, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| format!("{flag}: invalid number {v:?}"))
}

/// Parse the arguments after `replay`.
pub fn parse_replay(args: &[String]) -> Result<ReplayArgs, String> {
    let mut pos = Vec::new();
    let mut o = ReplayOptionsLite::default();
    let (mut check, mut fsck, mut keep_going, mut verbose) = (None, None, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--limit" => o.limit = Some(num(a, Some(&val(a)?))?),
            "--start-entry" => o.start_entry = num(a, Some(&val(a)?))?,
            "--start-mark" => o.start_mark = Some(val(a)?),
            "--end-mark" => o.end_mark = Some(val(a)?),
            "--next-flush" => o.stop_flags |= LOG_FLUSH_FLAG,
            "--next-fua" => o.stop_flags |= LOG_FUA_FLAG,
            "--no-discard" => o.no_discard = true,
            "--check" => check = Some(val(a)?),
            "--fsck" => fsck = Some(val(a)?),
            "--keep-going" => keep_going = true,
            "-v" | "--verbose" => verbose = true,
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            _ => pos.push(a.clone()),
        }
    }
    let [log, dev] = <[String; 2]>::try_from(pos).map_err(|_| "need LOG and DEV".to_string())?;
    let (check, when) = match (fsck, check) {
        (Some(cmd), Some(mode)) => {
            let when = match mode.as_str() {
                "flush" => CheckWhen::Flush,
                "fua" => CheckWhen::Fua,
                n => CheckWhen::Every(
                    n.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("--check: invalid mode {n:?}"))?,
                ),
            };
            (Some((cmd, false)), when)
        }
        (Some(_), None) => return Err("--fsck needs --check flush|fua|N".into()),
        (None, Some(cmd)) => (Some((cmd, true)), CheckWhen::Sync),
        (None, None) => (None, CheckWhen::Sync),
    };
    Ok(ReplayArgs {
        log,
        dev,
        opts: o,
        check,
        when,
        keep_going,
        verbose,
    })
}

fn open(path: &str, read_only: bool) -> Result<Arc<dyn BlockDevice>, String> {
    FileDevice::open(Path::new(path), read_only)
        .map(|d| Arc::new(d) as Arc<dyn BlockDevice>)
        .map_err(|e| format!("{path}: {e}"))
}

/// Run a check command; true when it succeeded.
pub fn run_check(cmd: &str, append_dev: bool, dev: &str) -> bool {
    let mut c = Command::new("sh");
    if append_dev {
        c.arg("-c")
            .arg(format!("{cmd} \"$1\""))
            .arg("udm-check")
            .arg(dev);
    } else {
        c.arg("-c").arg(cmd);
    }
    c.status().map(|s| s.success()).unwrap_or(false)
}

/// One line of `dump` / `-v` output, as replay-log prints entries.
pub fn entry_line(e: &LogEntry, sectorsize: u64) -> String {
    let mut s = format!(
        "{}@{}: sector {}, size {}, flags 0x{:x}({})",
        e.index,
        e.block,
        e.header.sector,
        e.header.nr_sectors * sectorsize,
        e.header.flags,
        flags_str(e.header.flags)
    );
    if let Some(m) = &e.mark {
        s.push_str(&format!(", mark {m:?}"));
    }
    s
}

/// The result of a replay with checks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayReport {
    pub replayed: u64,
    pub checks: u64,
    /// Entries after which the check failed.
    pub failed: Vec<u64>,
}

/// Replay per `a`, running checks; errors are reported as text.
pub fn do_replay(a: &ReplayArgs, out: &mut dyn std::io::Write) -> Result<ReplayReport, String> {
    let log = open(&a.log, true)?;
    let dev = open(&a.dev, false)?;
    let mut r = LogReader::open(log).map_err(|e: LogError| format!("{}: {e}", a.log))?;
    let ss = r.sectorsize();
    let mut rep = ReplayReport::default();
    let mut n = 0u64;
    let sum = replay(&mut r, &*dev, &a.opts.to_opts(), |e, d| {
        n += 1;
        if a.verbose {
            let _ = writeln!(out, "replaying {}", entry_line(e, ss));
        }
        let Some((cmd, append)) = &a.check else {
            return Ok(Next::Continue);
        };
        let due = match a.when {
            CheckWhen::Sync => e.is_flush() || e.is_fua() || e.is_mark(),
            CheckWhen::Flush => e.is_flush(),
            CheckWhen::Fua => e.is_fua(),
            CheckWhen::Every(k) => n.is_multiple_of(k),
        };
        if !due {
            return Ok(Next::Continue);
        }
        udm_io::sync::flush(d)?;
        rep.checks += 1;
        if run_check(cmd, *append, &a.dev) {
            return Ok(Next::Continue);
        }
        let _ = writeln!(out, "check failed after entry {}", e.index);
        rep.failed.push(e.index);
        Ok(if a.keep_going {
            Next::Continue
        } else {
            Next::Stop
        })
    })
    .map_err(|e| format!("{}: {e}", a.log))?;
    rep.replayed = sum.replayed;
    Ok(rep)
}

/// `dump LOG`: the super block and every entry.
pub fn dump(log: &str, out: &mut dyn std::io::Write) -> Result<(), String> {
    let dev = open(log, true)?;
    let mut r = LogReader::open(dev).map_err(|e| format!("{log}: {e}"))?;
    let _ = writeln!(
        out,
        "Log version=1, sectorsize={}, entries={}",
        r.sectorsize(),
        r.sup.nr_entries
    );
    let ss = r.sectorsize();
    while let Some(e) = r.next_entry().map_err(|e| format!("{log}: {e}"))? {
        let _ = writeln!(out, "{}", entry_line(&e, ss));
    }
    Ok(())
}

/// Entry point: `udm log-writes ARGS...`.
pub fn main(args: &[String]) -> i32 {
    let mut out = std::io::stdout();
    match args.first().map(|s| s.as_str()) {
        Some("dump") if args.len() == 2 => match dump(&args[1], &mut out) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("udm log-writes: {e}");
                1
            }
        },
        Some("replay") => {
            let a = match parse_replay(&args[1..]) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("udm log-writes: {e}\n{USAGE}");
                    return 2;
                }
            };
            match do_replay(&a, &mut out) {
                Ok(rep) => {
                    if a.verbose || a.check.is_some() {
                        println!(
                            "replayed {} entries, {} checks, {} failed",
                            rep.replayed,
                            rep.checks,
                            rep.failed.len()
                        );
                    }
                    i32::from(!rep.failed.is_empty())
                }
                Err(e) => {
                    eprintln!("udm log-writes: {e}");
                    1
                }
            }
        }
        Some("--help") | Some("help") => {
            print!("{USAGE}");
            0
        }
        _ => {
            eprint!("{USAGE}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_both_check_styles() {
        let a = parse_replay(&v("log dev --check e2fsck --end-mark m --limit 3")).unwrap();
        assert_eq!(a.check, Some(("e2fsck".into(), true)));
        assert_eq!(a.when, CheckWhen::Sync);
        assert_eq!(a.opts.limit, Some(3));
        assert_eq!(a.opts.end_mark.as_deref(), Some("m"));
        let a = parse_replay(&v("--fsck fsck.sh --check fua log dev")).unwrap();
        assert_eq!(a.check, Some(("fsck.sh".into(), false)));
        assert_eq!(a.when, CheckWhen::Fua);
        assert!(parse_replay(&v("log")).is_err());
        assert!(parse_replay(&v("log dev --bogus")).is_err());
        assert!(parse_replay(&v("log dev --fsck x")).is_err());
    }
}
