//! Commands that print: info (long layout or `-c` report), status/table/measure (`--target`,
//! `--concise`, key masking), deps, ls (plain, `--target`, `--exec`, `--tree`), targets, version.

use super::args::O;
use super::ctl::DevArg;
use super::{tree, Cmd, Ctx, DevName, LIB_VERSION};
use udm_proto::{Dep, DevInfo, DevSel, Reply, Request};

/// Whether the kernel would have a gendisk for the device (it gets one with its first table).
pub fn has_disk(i: &DevInfo) -> bool {
    i.live_table || i.inactive_table
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `lcm_not_zero`, as the block layer stacks `io_opt`.
fn lcm(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        _ => a / gcd(a, b) * b,
    }
}

/// Optimal I/O size (sectors) of a mapped device's table, as the kernel stacks queue limits:
/// striped sets chunk × stripes, other targets inherit it from the mapped devices they use.
fn io_opt(ctx: &mut Ctx, dev: DevSel, depth: u32) -> u64 {
    if depth > 16 {
        return 0;
    }
    let mut targets = Vec::new();
    for inactive in [false, true] {
        if let Ok(Reply::Status { targets: t, .. }) = ctx.ctl.raw(Request::Status {
            dev: dev.clone(),
            inactive,
            table: true,
            noflush: false,
        }) {
            if !t.is_empty() {
                targets = t;
                break;
            }
        }
    }
    let mut opt = 0;
    for t in targets {
        let w: Vec<&str> = t.params.split_whitespace().collect();
        let v = if t.ttype == "striped" {
            let n = w.first().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            let chunk = w.get(1).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            n * chunk
        } else {
            let mut o = 0;
            for word in w {
                if let Some((a, b)) = word.split_once(':') {
                    if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                        if a == udm_core::DM_MAJOR {
                            o = lcm(o, io_opt(ctx, DevSel::Dev(a, b), depth + 1));
                        }
                    }
                }
            }
            o
        };
        opt = lcm(opt, v);
    }
    opt
}

/// Read-ahead in sectors as the kernel sets it for a dm device: twice the optimal I/O size,
/// at least the 128 KiB default; 0 when there is no gendisk yet.
pub fn read_ahead(ctx: &mut Ctx, i: &DevInfo) -> u32 {
    if !has_disk(i) {
        return 0;
    }
    let opt = io_opt(ctx, DevSel::Dev(i.major, i.minor), 0);
    let pages = (opt * 512 * 2 / 4096).max(32);
    u32::try_from(pages * 8).unwrap_or(u32::MAX)
}

/// The node path libdm would open (`$DM_DEV_DIR/mapper/NAME`).
pub fn node_path(name: &str) -> String {
    let dir = std::env::var("DM_DEV_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/dev".into());
    format!("{}/mapper/{name}", dir.trim_end_matches('/'))
}

/// libdm's complaint when it cannot open a device without a disk to read its read-ahead:
/// no node before the first resume (ENOENT), a node without a disk after it (ENXIO).
pub fn open_failed(i: &DevInfo) {
    let errno = if i.resumed { libc::ENXIO } else { libc::ENOENT };
    eprintln!(
        "{}: open failed: {}",
        node_path(&i.name),
        super::ctl::strerror(errno)
    );
}

/// `_display_info_long`.
pub fn display_info_long(ctx: &mut Ctx, i: &DevInfo) {
    let mut s = String::new();
    s.push_str(&format!("Name:              {}\n", i.name));
    s.push_str(&format!(
        "State:             {}{}{}\n",
        if i.suspended { "SUSPENDED" } else { "ACTIVE" },
        if i.read_only { " (READ-ONLY)" } else { "" },
        if i.deferred_remove {
            " (DEFERRED REMOVE)"
        } else {
            ""
        }
    ));
    if has_disk(i) {
        s.push_str(&format!("Read Ahead:        {}\n", read_ahead(ctx, i)));
    } else {
        open_failed(i);
    }
    if !i.live_table && !i.inactive_table {
        s.push_str("Tables present:    None\n");
    } else {
        s.push_str(&format!(
            "Tables present:    {}{}{}\n",
            if i.live_table { "LIVE" } else { "" },
            if i.live_table && i.inactive_table {
                " & "
            } else {
                ""
            },
            if i.inactive_table { "INACTIVE" } else { "" }
        ));
    }
    if i.open_count != -1 {
        s.push_str(&format!("Open count:        {}\n", i.open_count));
    }
    s.push_str(&format!("Event number:      {}\n", i.event_nr));
    s.push_str(&format!("Major, minor:      {}, {}\n", i.major, i.minor));
    s.push_str(&format!("Number of targets: {}\n", i.target_count));
    if !i.uuid.is_empty() {
        s.push_str(&format!("UUID: {}\n", i.uuid));
    }
    s.push('\n');
    print!("{s}");
}

/// `_display_info`: long layout, or a report row with `-c`.
pub fn display_info(ctx: &mut Ctx, i: &DevInfo) -> bool {
    if !ctx.o.has(O::Columns) {
        display_info_long(ctx, i);
        true
    } else {
        ctx.info_cols(i)
    }
}

/// The device a command works on: from the device list, an argument, `-u` or `-j/-m`.
fn target_dev(ctx: &mut Ctx, args: &[String], n: Option<&DevInfo>) -> Option<DevArg> {
    match n {
        Some(d) => Some(DevArg::name(&d.name)),
        None => ctx.dev_arg(args.first().map(|s| s.as_str())),
    }
}

fn all_wanted(ctx: &Ctx, args: &[String], n: Option<&DevInfo>) -> bool {
    n.is_none() && args.is_empty() && !ctx.o.has(O::Uuid) && !ctx.o.has(O::Major)
}

pub fn info(ctx: &mut Ctx, c: &Cmd, args: &[String], n: Option<&DevInfo>, m: bool) -> bool {
    if all_wanted(ctx, args, n) {
        return ctx.process_all(c, args, false, info);
    }
    let Some(dev) = target_dev(ctx, args, n) else {
        return false;
    };
    let req = Request::Info {
        dev: dev.sel(),
        inactive: ctx.o.has(O::Inactive),
    };
    let _ = m;
    match ctx.ctl.raw(req) {
        Ok(Reply::Info(i)) => display_info(ctx, &i),
        Ok(_) => false,
        Err(e) if e.errno == libc::ENXIO => {
            eprintln!("Device does not exist.");
            false
        }
        Err(e) => {
            ctx.ctl.report("info", &dev, &e, None);
            false
        }
    }
}

/// Crypt key masking for `table` (the second word of crypt params, unless a `:key` reference).
fn mask_keys(ttype: &str, params: &str) -> String {
    let mut p: Vec<u8> = params.as_bytes().to_vec();
    if ttype == "crypt" {
        let mut i = 0;
        while i < p.len() && p[i] != b' ' {
            i += 1;
        }
        if i < p.len() {
            i += 1;
        }
        if p.get(i) != Some(&b':') {
            while i < p.len() && p[i] != b' ' {
                p[i] = b'0';
                i += 1;
            }
        }
    } else if ttype == "integrity" {
        for key in ["internal_hash:", "journal_crypt:", "journal_mac:"] {
            let s = String::from_utf8_lossy(&p).into_owned();
            let Some(pos) = s.find(key) else { continue };
            let mut i = pos + key.len();
            while i < p.len() && p[i] != b' ' && p[i] != b':' {
                i += 1;
            }
            if i >= p.len() || p[i] != b':' {
                continue;
            }
            i += 1;
            while i < p.len() && p[i] != b' ' {
                p[i] = b'0';
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&p).into_owned()
}

fn quoted(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, ',' | ';' | '\\') {
            o.push('\\');
        }
        o.push(ch);
    }
    o
}

/// `_status`: status, table, measure, and `ls --target/--exec`.
pub fn status(
    ctx: &mut Ctx,
    c: &Cmd,
    args: &[String],
    n: Option<&DevInfo>,
    multiple: bool,
) -> bool {
    if all_wanted(ctx, args, n) {
        return ctx.process_all(c, args, false, status);
    }
    let table = c.name == "table";
    let ls_only = c.name == "ls";
    let concise = table && ctx.o.has(O::Concise);
    let Some(dev) = target_dev(ctx, args, n) else {
        return false;
    };
    let name_arg = n.map(|d| d.name.clone()).or_else(|| args.first().cloned());
    let req = Request::Status {
        dev: dev.sel(),
        inactive: ctx.o.has(O::Inactive),
        table,
        noflush: ctx.o.has(O::NoFlush),
    };
    let (info, targets) = match ctx.ctl.raw(req) {
        Ok(Reply::Status { info, targets }) => (info, targets),
        Ok(_) => return false,
        Err(e) if e.errno == libc::ENXIO && !table => {
            eprintln!("Device does not exist.");
            return false;
        }
        Err(e) => {
            ctx.ctl
                .report(if table { "table" } else { "status" }, &dev, &e, None);
            return false;
        }
    };
    let name = name_arg.unwrap_or_else(|| info.name.clone());
    let verbose = ctx.o.has(O::Verbose);
    let exec = ctx.o.str(O::Exec).map(|s| s.to_string());
    let target_filter = ctx.o.str(O::Target).map(|s| s.to_string());
    let mut matched = false;
    let entries: Vec<Option<&udm_proto::TargetStatus>> = if targets.is_empty() {
        vec![None]
    } else {
        targets.iter().map(Some).collect()
    };
    let mut out = String::new();
    for t in entries {
        if let Some(tf) = &target_filter {
            if t.map(|t| &t.ttype != tf).unwrap_or(true) {
                continue;
            }
        }
        if ls_only {
            if exec.is_none() || verbose {
                out.push_str(&format!("{}\t({}, {})\n", name, info.major, info.minor));
            }
            matched = true;
            break;
        }
        if exec.is_none() || verbose {
            if !concise {
                if !matched && verbose {
                    print!("{out}");
                    out.clear();
                    display_info(ctx, &info);
                }
                if multiple && !verbose {
                    out.push_str(&format!("{name}: "));
                }
            } else if !matched {
                if ctx.concise_produced {
                    out.push(';');
                }
                ctx.concise_produced = true;
                out.push_str(&quoted(&name));
                out.push(',');
                out.push_str(&quoted(&info.uuid));
                out.push_str(&format!(
                    ",{},{}",
                    info.minor,
                    if info.read_only { "ro" } else { "rw" }
                ));
            }
            if let Some(t) = t {
                let params = if table && !ctx.o.has(O::ShowKeys) {
                    mask_keys(&t.ttype, &t.params)
                } else {
                    t.params.clone()
                };
                if concise {
                    out.push(',');
                }
                out.push_str(&format!("{} {} {} ", t.start, t.len, t.ttype));
                if concise {
                    out.push_str(&quoted(&params));
                } else {
                    out.push_str(&params);
                }
            }
            if !concise {
                out.push('\n');
            }
        }
        matched = true;
    }
    if multiple && verbose && matched && !ls_only && (!concise || ctx.o.count(O::Verbose) > 1) {
        out.push('\n');
    }
    print!("{out}");
    if matched && c.name == "status" && ctx.o.has(O::Stats) {
        let prefix = if multiple && !verbose {
            format!("{name}: ")
        } else {
            String::new()
        };
        if !print_stats(ctx, &dev, &prefix) {
            return false;
        }
    }
    if matched {
        if let Some(cmdline) = exec {
            exec_command(&cmdline, &name);
        }
    }
    true
}

/// Names of the 17 `/proc/diskstats` fields after the device name, in order.
const DISKSTATS_FIELDS: [&str; 17] = [
    "reads",
    "rd_merges",
    "rd_sectors",
    "rd_ms",
    "writes",
    "wr_merges",
    "wr_sectors",
    "wr_ms",
    "in_flight",
    "io_ms",
    "queue_ms",
    "discards",
    "dc_merges",
    "dc_sectors",
    "dc_ms",
    "flushes",
    "fl_ms",
];

/// Lay out a diskstats line (the daemon's `@diskstats` answer) under a header of field
/// names, each column right-aligned to the wider of name and value, both lines starting
/// with `prefix`. `None` if the line does not hold 17 numbers.
pub(crate) fn format_diskstats(line: &str, prefix: &str) -> Option<String> {
    let vals: Vec<&str> = line.split_whitespace().collect();
    if vals.len() < DISKSTATS_FIELDS.len() || vals.iter().any(|v| v.parse::<u64>().is_err()) {
        return None;
    }
    let (mut head, mut row) = (prefix.to_string(), prefix.to_string());
    for (i, (h, v)) in DISKSTATS_FIELDS.iter().zip(&vals).enumerate() {
        let w = h.len().max(v.len());
        let sep = if i == 0 { "" } else { " " };
        head.push_str(&format!("{sep}{h:>w$}"));
        row.push_str(&format!("{sep}{v:>w$}"));
    }
    Some(format!("{head}\n{row}\n"))
}

/// `status --stats`: the device's I/O counters (udm's `@diskstats` message).
fn print_stats(ctx: &mut Ctx, dev: &DevArg, prefix: &str) -> bool {
    let req = Request::Message {
        dev: dev.sel(),
        sector: 0,
        argv: vec!["@diskstats".to_string()],
    };
    match ctx.ctl.call("message", dev, req) {
        Ok(Reply::Message(Some(line))) => match format_diskstats(&line, prefix) {
            Some(s) => {
                print!("{s}");
                true
            }
            None => {
                eprintln!("Bad I/O counters from the daemon: {line:?}");
                false
            }
        },
        Ok(_) => {
            eprintln!("No I/O counters from the daemon.");
            false
        }
        Err(_) => false,
    }
}

/// `--exec`: run the command with the device node path appended.
fn exec_command(cmdline: &str, name: &str) {
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let Some((prog, rest)) = words.split_first() else {
        return;
    };
    let path = node_path(name);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::process::Command::new(prog)
        .args(rest)
        .arg(path)
        .status();
}

fn dep_name(ctx: &Ctx, d: &Dep) -> String {
    match (ctx.dev_name, &d.dm_name, d.devno) {
        (DevName::DevNo, _, Some((a, b))) => format!("{a}, {b}"),
        (DevName::Map, Some(n), _) => n.clone(),
        (DevName::Blk, Some(_), Some((_, m))) => format!("dm-{m}"),
        (_, None, Some((a, b))) => tree::sysfs_name(a, b).unwrap_or_else(|| format!("{a}, {b}")),
        _ => d.id.clone(),
    }
}

pub fn deps(ctx: &mut Ctx, c: &Cmd, args: &[String], n: Option<&DevInfo>, multiple: bool) -> bool {
    if all_wanted(ctx, args, n) {
        return ctx.process_all(c, args, false, deps);
    }
    let Some(dev) = target_dev(ctx, args, n) else {
        return false;
    };
    let name = n.map(|d| d.name.clone()).or_else(|| args.first().cloned());
    let req = Request::Deps {
        dev: dev.sel(),
        inactive: ctx.o.has(O::Inactive),
    };
    let (info, deps) = match ctx.ctl.raw(req) {
        Ok(Reply::Deps { info, deps }) => (info, deps),
        Ok(_) => return false,
        Err(e) => {
            ctx.ctl.report("deps", &dev, &e, None);
            return false;
        }
    };
    let verbose = ctx.o.has(O::Verbose);
    if verbose {
        display_info(ctx, &info);
    }
    let mut s = String::new();
    if multiple && !verbose {
        s.push_str(&format!("{}: ", name.unwrap_or_else(|| info.name.clone())));
    }
    s.push_str(&format!("{} dependencies\t:", deps.len()));
    for d in &deps {
        s.push_str(&format!(" ({})", dep_name(ctx, d)));
    }
    s.push('\n');
    if multiple && verbose {
        s.push('\n');
    }
    print!("{s}");
    true
}

fn display_name(ctx: &mut Ctx, _c: &Cmd, _a: &[String], n: Option<&DevInfo>, _m: bool) -> bool {
    let Some(d) = n else { return true };
    match ctx.dev_name {
        DevName::Blk if has_disk(d) => println!("{}\t(dm-{})", d.name, d.minor),
        DevName::Map if has_disk(d) => println!("{}\t({})", d.name, d.name),
        _ => println!("{}\t({}:{})", d.name, d.major, d.minor),
    }
    true
}

pub fn ls(ctx: &mut Ctx, c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    if ctx.o.has(O::Target) || ctx.o.has(O::Exec) {
        return status(ctx, c, args, None, false);
    }
    if ctx.o.has(O::Tree) {
        if ctx.ctl.list().map(|l| l.is_empty()).unwrap_or(false) {
            println!("No devices found");
            return true;
        }
        let opts = ctx.tree.clone().unwrap_or_else(|| {
            tree::TreeOpts::parse(None).unwrap_or_else(|_| unreachable!("default tree options"))
        });
        let Some(t) = ctx.deptree() else {
            return false;
        };
        let out = tree::draw(t, &opts);
        use std::io::Write;
        let _ = std::io::stdout().write_all(&out);
        return true;
    }
    let ok = ctx.process_all(c, args, false, display_name);
    if args.is_empty() {
        // Saved devices the daemon could not bring back yet (none on a fresh daemon).
        if let Ok(udm_proto::Reply::Pending(p)) = ctx.ctl.raw(Request::Pending) {
            for (name, why) in p {
                println!("{name}\t(not restored: {why})");
            }
        }
    }
    ok
}

fn print_versions(v: &[(String, [u32; 3])]) {
    let mut s = String::new();
    for (name, ver) in v {
        s.push_str(&format!("{name:<16} v{}.{}.{}\n", ver[0], ver[1], ver[2]));
    }
    print!("{s}");
}

pub fn targets(ctx: &mut Ctx, _c: &Cmd, _a: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    match ctx
        .ctl
        .call("versions", &DevArg::default(), Request::ListVersions)
    {
        Ok(Reply::Versions(v)) => {
            print_versions(&v);
            true
        }
        _ => false,
    }
}

pub fn target_version(
    ctx: &mut Ctx,
    _c: &Cmd,
    args: &[String],
    _n: Option<&DevInfo>,
    _m: bool,
) -> bool {
    let Some(want) = args.first() else {
        return false;
    };
    let dev = DevArg::name(want);
    let req = Request::TargetVersion { name: want.clone() };
    match ctx.ctl.raw(req) {
        Ok(Reply::Versions(v)) if v.len() == 1 => {
            print_versions(&v);
            true
        }
        _ => {
            eprintln!(
                "device-mapper: target-version ioctl on {} failed: {}",
                dev.describe(),
                super::ctl::strerror(libc::EINVAL)
            );
            false
        }
    }
}

pub fn version(ctx: &mut Ctx, _c: &Cmd, _a: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    println!("Library version:   {LIB_VERSION}");
    match ctx
        .ctl
        .call("version", &DevArg::default(), Request::Version)
    {
        Ok(Reply::Version(v)) => {
            println!("Driver version:    {}.{}.{}", v[0], v[1], v[2]);
            ctx.report = None;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypt_keys_are_masked() {
        assert_eq!(
            mask_keys("crypt", "aes-xts-plain64 0123abcd 0 /dev/vda 0"),
            "aes-xts-plain64 00000000 0 /dev/vda 0"
        );
        assert_eq!(
            mask_keys("crypt", "aes-xts-plain64 :32:logon:k 0 8:0 0"),
            "aes-xts-plain64 :32:logon:k 0 8:0 0"
        );
        assert_eq!(
            mask_keys(
                "integrity",
                "8:0 0 4 J 2 internal_hash:hmac(sha256):abcd journal_mac:x"
            ),
            "8:0 0 4 J 2 internal_hash:hmac(sha256):0000 journal_mac:x"
        );
        assert_eq!(mask_keys("linear", "8:0 0"), "8:0 0");
        assert_eq!(quoted("a,b;c\\"), "a\\,b\\;c\\\\");
    }
    #[test]
    fn diskstats_layout() {
        let line = "3 0 48 1 1 0 16 0 0 2 3 0 0 0 0 1 0";
        let s = format_diskstats(line, "z: ").unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("z: reads rd_merges rd_sectors"));
        assert!(lines[1].starts_with("z:     3         0         48"));
        assert_eq!(lines[0].len(), lines[1].len());
        let vals: Vec<&str> = lines[1][3..].split_whitespace().collect();
        assert_eq!(vals.join(" "), line);
        assert!(format_diskstats("1 2 3", "").is_none());
        assert!(format_diskstats(&"x ".repeat(17), "").is_none());
    }
}
