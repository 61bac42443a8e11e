//! `udm lvm COMMAND` and the `lvm`, `pvs`, `lvcreate`, … links: lvm2's command lines
//! (option spellings, clustered short options such as `-ay` and `-L10G`) parsed into
//! `udm_lvm`'s [`Cmdline`] and [`ReportOpts`], and run by the `udm_lvm` library.

use std::io::Write;
use udm_lvm::report::{ReportOpts, Style};
use udm_lvm::{Cmdline, EINVALID_CMD_LINE};

const USAGE: &str = "\
Usage: udm lvm COMMAND [ARGS…]   (also as `lvm` and as links named after each command)
  reports:  pvs|vgs|lvs [-o [+]FIELD,…] [--units U] [--nosuffix] [--noheadings]
            [--separator S] [--reportformat basic|json] [-a] [--segments] [NAME…]
            pvdisplay|vgdisplay|lvdisplay [-a] [NAME…]
  PVs, VGs: pvcreate|pvremove DEV…; vgcreate [-s SIZE] VG PV…; vgextend|vgreduce VG PV…;
            vgremove [-f] VG…; vgrename OLD NEW; vgchange -a y|n [--activationmode partial] [VG…]
  LVs:      lvcreate -L SIZE|-l N[%VG|%FREE|%PVS|%ORIGIN] [-n NAME] [-i N [-I SIZE]]
            [--type linear|striped|snapshot] [-s VG/ORIGIN] [-a y|n] VG [PV…];
            lvremove|lvchange -a y|n VG/LV…; lvrename VG OLD NEW;
            lvextend|lvreduce|lvresize -L|-l [+|-]SIZE VG/LV
  common:   --devices PV[,PV…] (image files, block devices, /dev/mapper/NAME udm devices),
            --devicesfile FILE (default: lvm.devices in udm's state directory, kept by
            pvcreate/vgcreate), --config STRING (global{activation=0}: metadata only), -y, -f
";

pub use udm_lvm::COMMANDS;

/// `udm lvm COMMAND ARGS…`.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("--help" | "-h" | "help") | None => {
            print!("{USAGE}");
            if args.is_empty() {
                EINVALID_CMD_LINE
            } else {
                0
            }
        }
        Some(cmd) => run(cmd, &args[1..]),
    }
}

/// Run one lvm command (`pvs`, `vgs`, `lvs`) with its arguments.
pub fn run(cmd: &str, args: &[String]) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let cmd = if cmd == "lvm" { return main(args) } else { cmd };
    match cmd {
        "pvs" | "vgs" | "lvs" => match parse_report(args) {
            Ok(o) => udm_lvm::report::report_cmd(cmd, &o, &mut out, &mut err),
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                EINVALID_CMD_LINE
            }
        },
        c if COMMANDS.contains(&c) => match parse(c, args) {
            Ok(cl) => udm_lvm::run(c, &cl, &mut out, &mut err),
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                EINVALID_CMD_LINE
            }
        },
        _ => {
            let _ = writeln!(
                err,
                "  udm lvm: no such command '{cmd}' ({})",
                COMMANDS.join(", ")
            );
            EINVALID_CMD_LINE
        }
    }
}

/// A `pvs`/`vgs`/`lvs` command line.
fn parse_report(args: &[String]) -> Result<ReportOpts, String> {
    let mut o = ReportOpts {
        style: Style {
            headings: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let (mut units, mut suffix) = (None, true);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut val = |name: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().cloned().ok_or(format!("{name} needs a value")),
            }
        };
        match flag {
            "--devicesfile" => o.devicesfile = Some(val(flag)?),
            "--config" => {
                if val(flag)?.replace(' ', "").contains("activation=0") {
                    o.noactivation = true;
                }
            }
            "--devices" => o.devices.extend(
                val(flag)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "-o" | "--options" => o.options.push(val(flag)?),
            s if s.starts_with("-o") && s.len() > 2 => o.options.push(s[2..].to_string()),
            "--units" => units = Some(val(flag)?),
            "--nosuffix" => suffix = false,
            "--noheadings" => o.style.headings = false,
            "--separator" => o.style.separator = Some(val(flag)?),
            "--reportformat" => match val(flag)?.as_str() {
                "json" => o.style.json = true,
                "basic" => o.style.json = false,
                f => return Err(format!("Invalid report format {f}")),
            },
            "-a" | "--all" => o.all = true,
            "--segments" => o.segments = true,
            "-S" | "--select" => o.select = Some(val(flag)?),
            s if s.starts_with('-') => return Err(format!("unrecognised option {s}")),
            s => o.names.push(s.to_string()),
        }
    }
    o.style.units = match units {
        None => udm_formats::lvm::report::Units {
            suffix,
            ..Default::default()
        },
        Some(u) => udm_formats::lvm::report::Units::parse(&u, suffix)
            .ok_or(format!("Invalid units {u}"))?,
    };
    Ok(o)
}

/// Options that take a value, long spellings mapped to their short ones; per command some
/// letters differ (`-s` is a snapshot for lvcreate, the extent size for vgcreate).
fn canonical_opt(cmd: &str, o: &str) -> Option<(&'static str, bool)> {
    let r = match o {
        "-a" | "--all" if cmd.ends_with("display") || cmd == "lvscan" => ("--all", false),
        "-s" | "--short" if cmd == "pvscan" => ("--short", false),
        "--cache" if cmd == "pvscan" => ("--cache", false),
        "-e" | "--exported" if cmd == "pvscan" => ("--exported", false),
        "-n" | "--novolumegroup" if cmd == "pvscan" => ("--novolumegroup", false),
        "-u" | "--uuid" if cmd == "pvscan" => ("-u", false),
        "-f" | "--file" if cmd.starts_with("vgcfg") => ("-f", true),
        "-l" | "--list" if cmd == "vgcfgrestore" => ("--list", false),
        "--setphysicalvolumesize" => ("--setphysicalvolumesize", true),
        "-T" | "--thin" => ("-T", false),
        "-V" | "--virtualsize" => ("-V", true),
        "--thinpool" => ("--thinpool", true),
        "--cachepool" => ("--cachepool", true),
        "--cachevol" => ("--cachevol", true),
        "--discards" => ("--discards", true),
        "--merge" => ("--merge", false),
        "--alloc" => ("--alloc", true),
        "-L" | "--size" => ("-L", true),
        "-l" | "--extents" => ("-l", true),
        "-n" | "--name" => ("-n", true),
        "-i" | "--stripes" => ("-i", true),
        "-I" | "--stripesize" => ("-I", true),
        "-m" | "--mirrors" => ("-m", true),
        "-R" | "--regionsize" => ("-R", true),
        "--mirrorlog" => ("--mirrorlog", true),
        "-K" | "--ignoreactivationskip" => ("-K", false),
        "-p" | "--permission" => ("-p", true),
        "--poolmetadatasize" => ("--poolmetadatasize", true),
        "--splitcache" => ("--splitcache", false),
        "--uncache" => ("--uncache", false),
        "-a" | "--activate" => ("-a", true),
        "--type" => ("--type", true),
        "-c" | "--chunksize" => ("-c", true),
        "--config" => ("--config", true),
        "--devices" => ("--devices", true),
        "--devicesfile" => ("--devicesfile", true),
        "--activationmode" => ("--activationmode", true),
        "--metadatacopies" | "--pvmetadatacopies" => ("--metadatacopies", true),
        "--dataalignment" => ("--dataalignment", true),
        "-u" | "--uuid" => ("-u", true),
        "-s" | "--physicalextentsize" if cmd == "vgcreate" => ("-s", true),
        "-s" | "--snapshot" => ("-s", false),
        "-y" | "--yes" => ("-y", false),
        "-f" | "--force" => ("-f", false),
        "-v" | "--verbose" => ("-v", false),
        "-q" | "--quiet" => ("-q", false),
        "-Z" | "--zero" => ("-Z", true),
        "-W" | "--wipesignatures" => ("-W", true),
        "-r" | "--resizefs" => ("-r", false),
        "-A" | "--autobackup" => ("-A", true),
        _ => return None,
    };
    Some(r)
}

/// One changing command's line: options under their canonical names, and positionals.
fn parse(cmd: &str, args: &[String]) -> Result<Cmdline, String> {
    let mut c = Cmdline {
        typed: std::iter::once(cmd.to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
        ..Default::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            c.pos.extend(it.by_ref().cloned());
            break;
        }
        if !a.starts_with('-') || a.len() == 1 || a.parse::<f64>().is_ok() {
            c.pos.push(a.clone());
            continue;
        }
        let (flag, inline) = if a.starts_with("--") {
            match a.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            }
        } else if a.len() > 2 {
            (a[..2].to_string(), Some(a[2..].to_string()))
        } else {
            (a.clone(), None)
        };
        let Some((name, takes)) = canonical_opt(cmd, &flag) else {
            return Err(format!("{cmd}: unrecognized option '{flag}'"));
        };
        if takes {
            let v = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or(format!("{cmd}: option '{flag}' requires an argument"))?,
            };
            c.vals.push((name.into(), v));
        } else if let Some(rest) = inline {
            // Clustered flags such as -fy.
            c.flags.push(name.into());
            for ch in rest.chars() {
                let f = format!("-{ch}");
                match canonical_opt(cmd, &f) {
                    Some((n, false)) => c.flags.push(n.into()),
                    _ => return Err(format!("{cmd}: unrecognized option '{a}'")),
                }
            }
        } else {
            c.flags.push(name.into());
        }
    }
    Ok(c)
}
