//! Commands that change devices: create (CREATE, LOAD, RESUME; REMOVE on failure), load,
//! remove (`-f`, `--retry`, `--deferred`), remove_all, suspend/resume/clear, wipe_table,
//! rename (`--setuuid`), message, wait, setgeometry — and table text parsing.

use super::args::O;
use super::ctl::DevArg;
use super::{show, Cmd, Ctx};
use std::io::Read;
use udm_proto::{DevInfo, Line, Reply, Request};

const DM_NAME_LEN: usize = 128;

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// `%llu` as sscanf reads it: optional space and sign, decimal digits (wrapping like strtoull).
fn scan_u64(s: &str) -> Option<(u64, &str)> {
    let t = s.trim_start_matches(is_space);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if end == 0 {
        return None;
    }
    let v = t[..end].parse::<u64>().unwrap_or(u64::MAX);
    Some((if neg { v.wrapping_neg() } else { v }, &t[end..]))
}

/// `_parse_line`: one table line into `out`; false (after logging) on a bad line.
///
/// Backslashes pass through unchanged to the daemon, which splits params as the kernel's
/// `dm_split_args` does, so `\ ` keeps a space inside a device path and `\\` is a backslash.
/// (libdm instead doubles every backslash before its ioctl: with the real dmsetup a backslash
/// is always literal and no table word can hold a space.)
pub fn parse_line(buf: &str, file: &str, line: usize, out: &mut Vec<Line>) -> bool {
    let p = buf.trim_matches(is_space);
    if p.is_empty() || p.starts_with('#') {
        return true;
    }
    let parsed = scan_u64(p).and_then(|(start, r)| {
        let (len, r) = scan_u64(r)?;
        let r = r.trim_start_matches(is_space);
        let end = r.find(is_space).unwrap_or(r.len());
        if end == 0 {
            return None;
        }
        Some((start, len, &r[..end], r[end..].trim_start_matches(is_space)))
    });
    let Some((start, len, ttype, params)) = parsed else {
        eprintln!("Invalid format on line {line} of table {file}.");
        return false;
    };
    let params = params.split('#').next().unwrap_or("");
    if ttype.len() >= 16 {
        eprintln!("Target type name {ttype} is too long.");
        return false;
    }
    out.push(Line {
        start,
        len,
        ttype: ttype.to_string(),
        // Relative paths name files in our directory, not the daemon's.
        params: crate::dmctl::absolute_words(params),
    });
    true
}

/// `_parse_file`: the table from `--table`, a file, or stdin.
fn read_table(ctx: &Ctx, file: Option<&str>) -> Option<Vec<Line>> {
    let mut out = Vec::new();
    if let Some(t) = ctx.o.str(O::Table) {
        for (i, l) in t.split('\n').enumerate() {
            if !parse_line(l, "", i + 1, &mut out) {
                return None;
            }
        }
        return Some(out);
    }
    let text = match file {
        Some(f) => match std::fs::read(f) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => {
                eprintln!("Couldn't open '{f}' for reading.");
                return None;
            }
        },
        None => {
            let mut b = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut b);
            String::from_utf8_lossy(&b).into_owned()
        }
    };
    let label = file.unwrap_or("on stdin");
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if !parse_line(l, label, i + 1, &mut out) {
            return None;
        }
    }
    Some(out)
}

fn check_name(name: &str) -> bool {
    if name.contains('/') {
        eprintln!("Name \"{name}\" invalid. It contains \"/\".");
        return false;
    }
    if name.len() >= DM_NAME_LEN {
        eprintln!("Name \"{name}\" too long.");
        return false;
    }
    true
}

fn reply_info(r: Reply) -> Option<DevInfo> {
    match r {
        Reply::Info(i) => Some(i),
        Reply::Status { info, .. } | Reply::Deps { info, .. } => Some(info),
        _ => None,
    }
}

/// Display the info block after a successful task when `-v` was given.
fn verbose_info(ctx: &mut Ctx, info: Option<DevInfo>) -> bool {
    match info {
        Some(i) if ctx.o.has(O::Verbose) => show::display_info(ctx, &i),
        _ => true,
    }
}

fn create_one(ctx: &mut Ctx, name: &str, file: Option<&str>) -> bool {
    if !check_name(name) {
        return false;
    }
    let lines = if ctx.o.has(O::NoTable) {
        Vec::new()
    } else {
        match read_table(ctx, file) {
            Some(l) => l,
            None => return false,
        }
    };
    // A table too large for one control frame is refused before the device is created, so
    // no empty device is left behind.
    let len = udm_proto::request_len(&Request::Load {
        dev: DevArg::name(name).sel(),
        table: lines.clone(),
        read_only: false,
    });
    if len > udm_proto::MAX_FRAME as usize {
        eprintln!(
            "udm: the table for {name} is {len} bytes, over the control protocol's limit of {} MiB",
            udm_proto::MAX_FRAME >> 20
        );
        return false;
    }
    let uuid = ctx.o.str(O::Uuid).unwrap_or("").to_string();
    let dev = DevArg {
        name: name.to_string(),
        uuid: uuid.clone(),
        devno: None,
    };
    let created = match ctx.ctl.call(
        "create",
        &dev,
        Request::Create {
            name: name.to_string(),
            uuid,
        },
    ) {
        Ok(r) => reply_info(r),
        Err(_) => return false,
    };
    if lines.is_empty() {
        return verbose_info(ctx, created);
    }
    let by_name = DevArg::name(name);
    let load = Request::Load {
        dev: by_name.sel(),
        table: lines,
        read_only: ctx.o.has(O::ReadOnly),
    };
    if let Err(e) = ctx.ctl.raw(load) {
        // libdm loads the new device's table by name and device number.
        let with_devno = DevArg {
            devno: created.as_ref().map(|i| (i.major, i.minor)),
            ..by_name.clone()
        };
        ctx.ctl
            .report("reload", &with_devno, &e, created.as_ref().map(|i| i.minor));
        revert(ctx, &by_name);
        return false;
    }
    let resumed = match ctx.ctl.call(
        "resume",
        &by_name,
        Request::Resume {
            dev: by_name.sel(),
            noflush: false,
            nolockfs: false,
        },
    ) {
        Ok(r) => reply_info(r),
        Err(_) => {
            revert(ctx, &by_name);
            return false;
        }
    };
    verbose_info(ctx, resumed)
}

fn revert(ctx: &mut Ctx, dev: &DevArg) {
    let req = Request::Remove {
        dev: dev.sel(),
        deferred: false,
    };
    if ctx.ctl.call("remove", dev, req).is_err() {
        eprintln!("Failed to revert device creation.");
    }
}

/// `create --concise <spec>`: devices separated by `;`, five comma-separated fields each.
fn create_concise(ctx: &mut Ctx, args: &[String]) -> bool {
    if ctx.o.has(O::Table)
        || ctx.o.has(O::Minor)
        || ctx.o.has(O::Uuid)
        || ctx.o.has(O::NoTable)
        || ctx.o.has(O::Inactive)
    {
        eprintln!("--concise is incompatible with --[no]table, --minor, --uuid and --inactive.");
        return false;
    }
    let spec = match args.first() {
        Some(s) => s.clone(),
        None => {
            let mut s = String::new();
            let _ = std::io::stdin().read_to_string(&mut s);
            s
        }
    };
    let c: Vec<char> = spec.chars().collect();
    let mut fields: Vec<String> = vec![String::new()];
    let parsed_msg = |f: &[String]| {
        let g = |i: usize| f.get(i).map(|s| s.as_str()).unwrap_or("(null)");
        format!(
            "Parsed {} fields: name: {} uuid: {} minor: {} flags: {} table: {}",
            f.len(),
            g(0),
            g(1),
            g(2),
            g(3),
            g(4)
        )
    };
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\\' {
            i += 1;
            if i >= c.len() {
                eprintln!("Backslash must be followed by another character at end of string.");
                eprintln!("{}", parsed_msg(&fields));
                return false;
            }
            fields.last_mut().unwrap().push(c[i]);
            i += 1;
            continue;
        }
        if ch == ',' && fields.len() < 5 {
            fields.push(String::new());
            i += 1;
            while i < c.len() && c[i].is_whitespace() {
                i += 1;
            }
            continue;
        }
        if ch == ',' {
            fields.last_mut().unwrap().push('\n');
            i += 1;
            continue;
        }
        if ch == ';' || i + 1 == c.len() {
            if ch != ';' {
                fields.last_mut().unwrap().push(ch);
            }
            i += 1;
            if fields.len() != 5 {
                eprintln!("Five comma-separated fields are required for each device");
                eprintln!("{}", parsed_msg(&fields));
                return false;
            }
            let flags = fields[3].as_str();
            if !flags.is_empty() && flags != "ro" && flags != "rw" {
                eprintln!("Invalid flags parameter '{flags}' must be 'ro' or 'rw' or empty.");
                return false;
            }
            let saved = ctx.o.clone();
            if !fields[1].is_empty() {
                ctx.o.set_value(O::Uuid, &fields[1]);
            }
            if !fields[2].is_empty() {
                ctx.o.set_value(O::Minor, &fields[2]);
            }
            if flags == "ro" {
                ctx.o.set(O::ReadOnly, true);
            }
            ctx.o.set_value(O::Table, &fields[4]);
            let ok = create_one(ctx, &fields[0].clone(), None);
            ctx.o = saved;
            if !ok {
                return false;
            }
            fields = vec![String::new()];
            while i < c.len() && c[i].is_whitespace() {
                i += 1;
            }
            continue;
        }
        fields.last_mut().unwrap().push(ch);
        i += 1;
    }
    if fields.len() > 1 || !fields[0].is_empty() {
        eprintln!("Incomplete entry: five comma-separated fields are required for each device");
        eprintln!("{}", parsed_msg(&fields));
        return false;
    }
    true
}

pub fn create(ctx: &mut Ctx, _c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    if ctx.o.has(O::Concise) {
        if args.len() > 1 {
            eprintln!("dmsetup create --concise takes at most one argument");
            return false;
        }
        return create_concise(ctx, args);
    }
    let Some(name) = args.first() else {
        eprintln!("Please provide a name for the new device.");
        return false;
    };
    create_one(ctx, name, args.get(1).map(|s| s.as_str()))
}

pub fn load(ctx: &mut Ctx, _c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    if ctx.o.has(O::NoTable) {
        eprintln!("--notable only available when creating new device.");
        return false;
    }
    let mut rest = args;
    let mut name = None;
    if !ctx.o.has(O::Uuid) && !ctx.o.has(O::Major) {
        let Some(n) = args.first() else {
            eprintln!("Please specify device.");
            return false;
        };
        name = Some(n.as_str());
        rest = &args[1..];
    } else if args.len() > 1 {
        eprintln!("Too many command line arguments.");
        return false;
    }
    let Some(dev) = ctx.dev_arg(name) else {
        return false;
    };
    let Some(lines) = read_table(ctx, rest.first().map(|s| s.as_str())) else {
        return false;
    };
    let req = Request::Load {
        dev: dev.sel(),
        table: lines,
        read_only: ctx.o.has(O::ReadOnly),
    };
    match ctx.ctl.call("reload", &dev, req) {
        Ok(r) => verbose_info(ctx, reply_info(r)),
        Err(_) => false,
    }
}

/// The ioctls `_simple` issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simple {
    Suspend,
    Resume,
    Remove,
    RemoveAll,
    Clear,
    Wait(u32),
}

/// `_simple`: one device ioctl, `-v` info afterwards when `display`.
pub fn simple(ctx: &mut Ctx, task: Simple, name: Option<&str>, display: bool) -> bool {
    let Some(dev) = ctx.dev_arg(name) else {
        return false;
    };
    let noflush = ctx.o.has(O::NoFlush);
    let nolockfs = ctx.o.has(O::NoLockfs);
    let sel = dev.sel();
    let (op, req) = match task {
        Simple::Suspend => (
            "suspend",
            Request::Suspend {
                dev: sel,
                noflush,
                nolockfs,
            },
        ),
        Simple::Resume => (
            "resume",
            Request::Resume {
                dev: sel,
                noflush,
                nolockfs,
            },
        ),
        Simple::Remove => (
            "remove",
            Request::Remove {
                dev: sel,
                deferred: ctx.o.has(O::Deferred),
            },
        ),
        Simple::RemoveAll => (
            "remove_all",
            Request::RemoveAll {
                deferred: ctx.o.has(O::Deferred),
            },
        ),
        Simple::Clear => ("clear", Request::Clear { dev: sel }),
        Simple::Wait(event_nr) => (
            "waitevent",
            Request::Wait {
                dev: sel,
                event_nr,
                inactive: ctx.o.has(O::Inactive),
                timeout_ms: 0,
            },
        ),
    };
    let retries = if task == Simple::Remove && ctx.o.has(O::Retry) {
        25
    } else {
        0
    };
    let mut attempt = 0;
    let res = loop {
        match ctx.ctl.raw(req.clone()) {
            Err(e) if e.errno == libc::EBUSY && attempt < retries => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            r => break r,
        }
    };
    match res {
        Ok(r) => {
            if display {
                verbose_info(ctx, reply_info(r))
            } else {
                true
            }
        }
        Err(e) => {
            ctx.ctl.report(op, &dev, &e, None);
            false
        }
    }
}

fn first(args: &[String]) -> Option<&str> {
    args.first().map(|s| s.as_str())
}

pub fn suspend(ctx: &mut Ctx, _c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    simple(ctx, Simple::Suspend, first(args), true)
}

pub fn resume(ctx: &mut Ctx, _c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    simple(ctx, Simple::Resume, first(args), true)
}

pub fn clear(ctx: &mut Ctx, _c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    simple(ctx, Simple::Clear, first(args), true)
}

pub fn wait(ctx: &mut Ctx, _c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    let mut rest = args;
    let mut name = None;
    if !ctx.o.has(O::Uuid) && !ctx.o.has(O::Major) {
        let Some(n) = args.first() else {
            eprintln!("No device specified.");
            return false;
        };
        name = Some(n.as_str());
        rest = &args[1..];
    }
    let nr = rest
        .last()
        .map(|s| super::args::atoi(s) as u32)
        .unwrap_or(0);
    simple(ctx, Simple::Wait(nr), name, true)
}

/// Size of a device's table (`_get_device_size`), 0 if it cannot be read.
fn device_size(ctx: &mut Ctx, name: &str) -> u64 {
    let Some(dev) = ctx.dev_arg(Some(name)) else {
        return 0;
    };
    let req = Request::Status {
        dev: dev.sel(),
        inactive: ctx.o.has(O::Inactive),
        table: true,
        noflush: false,
    };
    match ctx.ctl.call("table", &dev, req) {
        Ok(Reply::Status { targets, .. }) => targets.iter().map(|t| t.len).sum(),
        _ => 0,
    }
}

/// `_error_device`: load `0 <size> error`, resume (clear again if that fails).
pub fn error_device(
    ctx: &mut Ctx,
    _c: &Cmd,
    args: &[String],
    n: Option<&DevInfo>,
    _m: bool,
) -> bool {
    let name = match n {
        Some(d) => d.name.clone(),
        None => args.first().cloned().unwrap_or_default(),
    };
    if name.is_empty() {
        eprintln!("No device specified.");
        return false;
    }
    let size = device_size(ctx, &name);
    let Some(dev) = ctx.dev_arg(Some(&name)) else {
        return false;
    };
    let req = Request::Load {
        dev: dev.sel(),
        table: vec![Line {
            start: 0,
            len: size,
            ttype: "error".into(),
            params: String::new(),
        }],
        read_only: ctx.o.has(O::ReadOnly),
    };
    if ctx.ctl.call("reload", &dev, req).is_err() {
        return false;
    }
    if ctx.o.has(O::Force) {
        ctx.o.set(O::NoLockfs, true);
        ctx.o.set(O::NoFlush, true);
    }
    if !simple(ctx, Simple::Resume, Some(&name), false) {
        simple(ctx, Simple::Clear, Some(&name), false);
        return false;
    }
    true
}

pub fn wipe_table(ctx: &mut Ctx, c: &Cmd, args: &[String], n: Option<&DevInfo>, m: bool) -> bool {
    error_device(ctx, c, args, n, m)
}

pub fn remove(ctx: &mut Ctx, c: &Cmd, args: &[String], _n: Option<&DevInfo>, m: bool) -> bool {
    if ctx.o.has(O::Force) && !args.is_empty() {
        let _ = error_device(ctx, c, args, None, m);
    }
    simple(ctx, Simple::Remove, first(args), false)
}

fn count_devices(ctx: &mut Ctx, _c: &Cmd, _a: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    ctx.num_devices += 1;
    true
}

pub fn remove_all(ctx: &mut Ctx, c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    simple(ctx, Simple::RemoveAll, Some(""), false);
    if !ctx.o.has(O::Force) {
        return true;
    }
    ctx.num_devices = 0;
    ctx.process_all(c, args, true, count_devices);
    if ctx.num_devices == 0 {
        return true;
    }
    ctx.process_all(c, args, true, error_device);
    simple(ctx, Simple::RemoveAll, Some(""), false);
    ctx.num_devices = 0;
    ctx.process_all(c, args, true, count_devices);
    if ctx.num_devices > 0 {
        eprintln!("Unable to remove {} device(s).", ctx.num_devices);
    }
    true
}

pub fn rename(ctx: &mut Ctx, _c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    let name = (args.len() == 2).then(|| args[0].clone());
    let Some(dev) = ctx.dev_arg(name.as_deref()) else {
        return false;
    };
    let new = args[args.len() - 1].clone();
    let req = if ctx.o.has(O::SetUuid) {
        if new.len() >= 129 {
            eprintln!("New uuid \"{new}\" too long.");
            return false;
        }
        Request::SetUuid {
            dev: dev.sel(),
            uuid: new,
        }
    } else {
        if new.contains('/') {
            eprintln!("Name \"{new}\" invalid. It contains \"/\".");
            return false;
        }
        if new.len() >= DM_NAME_LEN {
            eprintln!("Name \"{new}\" too long");
            return false;
        }
        if new.is_empty() {
            eprintln!("Non empty new name is required.");
            return false;
        }
        Request::Rename {
            dev: dev.sel(),
            new_name: new,
        }
    };
    ctx.ctl.call("rename", &dev, req).is_ok()
}

pub fn message(ctx: &mut Ctx, _c: &Cmd, args: &[String], _n: Option<&DevInfo>, _m: bool) -> bool {
    let mut rest = args;
    let dev = if ctx.o.has(O::Uuid) || ctx.o.has(O::Major) {
        ctx.dev_arg(None)
    } else {
        rest = &args[1..];
        ctx.dev_arg(Some(&args[0]))
    };
    let Some(dev) = dev else {
        return false;
    };
    let Some(sector) = rest
        .first()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
    else {
        eprintln!("Invalid sector.");
        return false;
    };
    let words = &rest[1..];
    if words.is_empty() {
        eprintln!("No message supplied.");
    }
    let msg = words.join(" ");
    let req = Request::Message {
        dev: dev.sel(),
        sector,
        argv: udm_core::split_args(&msg),
    };
    match ctx.ctl.call("message", &dev, req) {
        Ok(Reply::Message(Some(resp))) => {
            if resp.is_empty() || resp.ends_with('\n') {
                print!("{resp}");
            } else {
                println!("{resp}");
            }
            true
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

pub fn setgeometry(
    ctx: &mut Ctx,
    _c: &Cmd,
    args: &[String],
    _n: Option<&DevInfo>,
    _m: bool,
) -> bool {
    let mut rest = args;
    let dev = if ctx.o.has(O::Uuid) || ctx.o.has(O::Major) {
        ctx.dev_arg(None)
    } else {
        rest = &args[1..];
        ctx.dev_arg(Some(&args[0]))
    };
    let Some(dev) = dev else {
        return false;
    };
    // libdm passes the four words on as one string; the kernel parses (and refuses) it.
    let req = Request::SetGeometryText {
        dev: dev.sel(),
        geometry: rest.iter().take(4).cloned().collect::<Vec<_>>().join(" "),
    };
    ctx.ctl.call("setgeometry", &dev, req).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Option<Line> {
        let mut v = Vec::new();
        parse_line(s, "", 1, &mut v).then(|| v.pop()).flatten()
    }

    #[test]
    fn table_lines() {
        let l = one("  0 2048 linear /dev/vda 0  # comment\n").unwrap();
        assert_eq!((l.start, l.len, l.ttype.as_str()), (0, 2048, "linear"));
        assert_eq!(l.params, "/dev/vda 0  ");
        let l = one("0 8 error").unwrap();
        assert_eq!(l.params, "");
        assert!(one("# just a comment").is_none());
        assert!(one("   ").is_none());
        let mut v = Vec::new();
        assert!(!parse_line("x 8 zero", "", 1, &mut v));
        assert!(!parse_line("0 8", "", 1, &mut v));
    }
}
