//! Offline and housekeeping commands: help, splitname, the udev cookie helpers (udm has no
//! udev handshake, so these are exact offline outputs or harmless no-ops), mknodes, mangle, stats.

use super::args::O;
use super::ctl::DevArg;
use super::fields::{self, SplitName};
use super::report::{self, Report};
use super::{udev, usage, Cmd, Ctx};
use std::io::{BufRead, Write};
use udm_proto::{DevInfo, Reply, Request};

pub fn help(ctx: &mut Ctx, _c: &Cmd, _a: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    usage();
    if ctx.o.has(O::Columns) {
        ctx.report = None;
        let flags = report::Flags {
            headings: false,
            ..report::Flags::default()
        };
        let _ = Report::new(fields::FIELDS, fields::TYPES, 0, "help", "", flags, None);
    }
    true
}

pub fn splitname(ctx: &mut Ctx, _c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    let sub = args.get(1).map(|s| s.as_str()).unwrap_or("LVM");
    let split = SplitName::new(sub, &args[0]);
    let obj = fields::InfoObj {
        info: None,
        read_ahead: 0,
        deps: None,
        tree: None,
        split: Some(&split),
    };
    let Some(rep) = ctx.report.as_mut() else {
        return false;
    };
    for (i, f) in fields::FIELDS.iter().enumerate() {
        if f.ty & (fields::DR_NAME) == 0 && rep_uses(rep, i) {
            eprintln!("_do_report_object: no data assigned to field {}", f.id);
            return false;
        }
    }
    rep.object(&obj, true);
    true
}

/// Whether the report shows or sorts by a non-name field (splitname has no device data).
fn rep_uses(rep: &Report, i: usize) -> bool {
    rep.uses_field(i)
}

fn cookie_arg(s: &str) -> Option<u32> {
    let v = udev::cookie_value(s);
    if v.is_none() {
        eprintln!("Incorrect cookie value.");
    }
    v
}

pub fn udevflags(
    _ctx: &mut Ctx,
    _c: &Cmd,
    args: &[String],
    _n: Option<&DevInfo>,
    _m: bool,
) -> bool {
    let Some(cookie) = cookie_arg(&args[0]) else {
        return false;
    };
    print!("{}", udev::flags_text(cookie));
    true
}

pub fn udevcomplete(
    _ctx: &mut Ctx,
    _c: &Cmd,
    args: &[String],
    _n: Option<&DevInfo>,
    _m: bool,
) -> bool {
    let Some(cookie) = cookie_arg(&args[0]) else {
        return false;
    };
    print!("{}", udev::complete_text(cookie));
    true
}

pub fn udevcreatecookie(
    _ctx: &mut Ctx,
    _c: &Cmd,
    _a: &[String],
    _n: Option<&DevInfo>,
    _m: bool,
) -> bool {
    // udm sends no uevents, so there is no transaction to wait for: no cookie is made.
    true
}

pub fn udevreleasecookie(
    ctx: &mut Ctx,
    _c: &Cmd,
    args: &[String],
    _n: Option<&DevInfo>,
    _m: bool,
) -> bool {
    let cookie = match args.first() {
        Some(a) => match cookie_arg(a) {
            Some(c) => Some(c),
            None => return false,
        },
        None => ctx
            .o
            .str(O::UdevCookie)
            .and_then(udev::cookie_value)
            .or_else(|| {
                std::env::var("DM_UDEV_COOKIE")
                    .ok()
                    .and_then(|v| udev::cookie_value(&v))
            }),
    };
    if cookie.is_none() {
        eprintln!("No udev transaction cookie given.");
        return false;
    }
    true
}

pub fn udevcomplete_all(
    ctx: &mut Ctx,
    _c: &Cmd,
    args: &[String],
    _n: Option<&DevInfo>,
    _m: bool,
) -> bool {
    let mut age = 0u32;
    if let Some(a) = args.first() {
        match a.trim().parse::<u32>() {
            Ok(v) => age = v,
            Err(_) => {
                eprintln!("Failed to read age_in_minutes parameter.");
                return false;
            }
        }
    }
    if !ctx.o.has(O::Yes) {
        let older = if age > 0 {
            format!("older than {age} minutes ")
        } else {
            String::new()
        };
        eprintln!(
            "WARNING: This operation will destroy all semaphores {older}with keys that have a prefix 3405 (0xd4d)."
        );
        if yes_no("Do you really want to continue? [y/n]: ") == 'n' {
            println!("Semaphores with keys prefixed by 3405 (0xd4d) NOT destroyed.");
            return true;
        }
    }
    println!("0 semaphores with keys prefixed by 3405 (0xd4d) destroyed. 0 skipped.");
    true
}

/// `_yes_no_prompt`: repeat the prompt per line until a line holding y or n.
fn yes_no(prompt: &str) -> char {
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    loop {
        print!("{prompt}");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        match lock.read_line(&mut line) {
            Ok(0) | Err(_) => {
                println!();
                return 'n';
            }
            Ok(_) => {}
        }
        let mut ans = None;
        for ch in line.chars() {
            let c = ch.to_ascii_lowercase();
            if c == 'y' || c == 'n' {
                ans = Some(c);
            }
        }
        if let Some(a) = ans {
            return a;
        }
    }
}

pub fn udevcookies(
    _ctx: &mut Ctx,
    _c: &Cmd,
    _a: &[String],
    _n: Option<&DevInfo>,
    _m: bool,
) -> bool {
    println!("Cookie       Semid      Value      Last semop time           Last change time");
    true
}

pub fn mknodes(ctx: &mut Ctx, _c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    // udm keeps no /dev/mapper nodes; checking the daemon is reachable is all there is to do.
    let _ = args;
    ctx.ctl.list().is_some()
}

/// The auto-mode mangled form (what `mangle` renames a device to).
fn mangle(s: &str) -> String {
    super::mangle::mangle(s, super::mangle::Mode::Auto)
}

pub fn mangle_cmd(ctx: &mut Ctx, c: &Cmd, args: &[String], n: Option<&DevInfo>, _m: bool) -> bool {
    // `mangle` works on the names as the kernel holds them.
    ctx.ctl.mangling = super::mangle::Mode::None;
    if n.is_none() && args.is_empty() && !ctx.o.has(O::Uuid) && !ctx.o.has(O::Major) {
        return ctx.process_all(c, args, false, mangle_cmd);
    }
    let dev = match n {
        Some(d) => Some(DevArg::name(&d.name)),
        None => ctx.dev_arg(args.first().map(|s| s.as_str())),
    };
    let Some(dev) = dev else { return false };
    let info = match ctx.ctl.call(
        "info",
        &dev,
        Request::Info {
            dev: dev.sel(),
            inactive: false,
        },
    ) {
        Ok(Reply::Info(i)) => i,
        _ => return false,
    };
    let name = info.name.clone();
    let new_name = mangle(&name);
    if mangle(&info.uuid) != info.uuid {
        eprintln!("{name}: {}: UUID in incorrect form. ", info.uuid);
        eprintln!("Unable to change device UUID. The device must be deactivated first.");
        return false;
    }
    if new_name == name {
        let (u, and) = if info.uuid.is_empty() {
            ("[no UUID]".to_string(), "")
        } else {
            (info.uuid.clone(), "and UUID ")
        };
        println!("{name}: {u}: name {and}already in correct form");
        return true;
    }
    println!("{name}: renaming to {new_name}");
    let by_name = DevArg::name(&name);
    let req = Request::Rename {
        dev: by_name.sel(),
        new_name,
    };
    ctx.ctl.call("rename", &by_name, req).is_ok()
}

pub fn stats(_ctx: &mut Ctx, _c: &Cmd, _a: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    eprintln!("udm: dmsetup stats is not supported yet.");
    false
}
