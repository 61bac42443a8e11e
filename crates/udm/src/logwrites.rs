//! `udm log-writes replay|dump`: replay a dm-log-writes log (written by the kernel target or by
//! udm's) onto a device or image file, to any entry, flush or mark, optionally running a check
//! command (such as `e2fsck -fn`) at every flush, FUA write and mark — crash-consistency
//! testing in the spirit of xfstests' replay-log. The work is
//! `udm_targets::log_writes::checked`; this is its command line.

use udm_targets::log_writes::checked::{dump, replay_checked, CheckWhen, CheckedReplay};
use udm_targets::log_writes::format::{LOG_FLUSH_FLAG, LOG_FUA_FLAG};
use udm_targets::log_writes::reader::ReplayOptions;

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

fn num(flag: &str, v: Option<&String>) -> Result<u64, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| format!("{flag}: invalid number {v:?}"))
}

/// Parse the arguments after `replay`.
pub fn parse_replay(args: &[String]) -> Result<CheckedReplay, String> {
    let mut pos = Vec::new();
    let mut o = ReplayOptions::default();
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
                // replay-log's modes only: `sync` is what a plain `--check CMD` means.
                "sync" => return Err("--check: invalid mode \"sync\"".into()),
                m => m
                    .parse::<CheckWhen>()
                    .map_err(|e| format!("--check: {e}"))?,
            };
            (Some((cmd, false)), when)
        }
        (Some(_), None) => return Err("--fsck needs --check flush|fua|N".into()),
        (None, Some(cmd)) => (Some((cmd, true)), CheckWhen::Sync),
        (None, None) => (None, CheckWhen::Sync),
    };
    Ok(CheckedReplay {
        log,
        dev,
        opts: o,
        check,
        when,
        keep_going,
        verbose,
    })
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
            match replay_checked(&a, &mut out) {
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
