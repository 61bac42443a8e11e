//! Commands that print: info (long layout or `-c` report), status/table/measure (`--target`,
//! `--concise`, key masking), deps, ls (plain, `--target`, `--exec`, `--tree`), targets, version.

use super::args::O;
use super::ctl::DevArg;
use super::{dminfo, tree, Cmd, Ctx, LIB_VERSION};
use udm_proto::{Dep, DevInfo, DevSel, Reply, Request};

/// The locale's codeset (after `setlocale(LC_ALL, "")`) and standard output's terminal width.
pub fn terminal() -> tree::Terminal {
    // SAFETY: nl_langinfo returns a pointer to a static NUL-terminated string (or NULL).
    let utf8 = unsafe {
        let p = libc::nl_langinfo(libc::CODESET);
        !p.is_null() && std::ffi::CStr::from_ptr(p).to_bytes() == b"UTF-8"
    };
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let r = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    tree::Terminal {
        utf8,
        columns: (r >= 0).then_some(ws.ws_col as usize),
    }
}

/// Read-ahead in sectors of a mapped device as the kernel sets it (0 without a disk).
pub fn read_ahead(ctx: &mut Ctx, i: &DevInfo) -> u32 {
    if !dminfo::has_disk(i) {
        return 0;
    }
    let ctl = &mut ctx.ctl;
    let mut table = |dev: &DevSel| {
        for inactive in [false, true] {
            if let Ok(Reply::Status { targets, .. }) = ctl.raw(Request::Status {
                dev: dev.clone(),
                inactive,
                table: true,
                noflush: false,
            }) {
                if !targets.is_empty() {
                    return targets;
                }
            }
        }
        Vec::new()
    };
    let opt = dminfo::io_opt(
        DevSel::Dev(i.major, i.minor),
        udm_core::DM_MAJOR,
        &mut table,
    );
    dminfo::read_ahead(opt)
}

fn dev_dir() -> Option<String> {
    std::env::var("DM_DEV_DIR").ok()
}

/// libdm's complaint when it cannot open a device without a disk to read its read-ahead.
pub fn open_failed(i: &DevInfo) {
    eprintln!("{}", dminfo::open_failed(dev_dir().as_deref(), i));
}

/// `_display_info_long`.
pub fn display_info_long(ctx: &mut Ctx, i: &DevInfo) {
    let ra = if dminfo::has_disk(i) {
        Some(read_ahead(ctx, i))
    } else {
        open_failed(i);
        None
    };
    print!("{}", dminfo::info_long(i, ra));
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
                out.push_str(&dminfo::concise_device(&name, &info));
            }
            if let Some(t) = t {
                let mask = table && !ctx.o.has(O::ShowKeys);
                out.push_str(&dminfo::target_text(t, mask, concise));
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

/// `status --stats`: the device's I/O counters (udm's `@diskstats` message).
fn print_stats(ctx: &mut Ctx, dev: &DevArg, prefix: &str) -> bool {
    let req = Request::Message {
        dev: dev.sel(),
        sector: 0,
        argv: vec!["@diskstats".to_string()],
    };
    match ctx.ctl.call("message", dev, req) {
        Ok(Reply::Message(Some(line))) => match dminfo::format_diskstats(&line, prefix) {
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
    let path = dminfo::node_path(dev_dir().as_deref(), name);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::process::Command::new(prog)
        .args(rest)
        .arg(path)
        .status();
}

fn dep_name(ctx: &Ctx, d: &Dep) -> String {
    ctx.dev_name.dep(d, &tree::sysfs_name)
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
    println!("{}", ctx.dev_name.ls_line(d));
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
            tree::TreeOpts::parse(None, terminal())
                .unwrap_or_else(|_| unreachable!("default tree options"))
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
    print!("{}", dminfo::versions(v));
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
                udm_proto::strerror(libc::EINVAL)
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
