//! Commands that change devices: create (CREATE, LOAD, RESUME; REMOVE on failure), load,
//! remove (`-f`, `--retry`, `--deferred`), remove_all, suspend/resume/clear, wipe_table,
//! rename (`--setuuid`), message, wait, setgeometry (table text, concise specs and names are
//! read by `udm_report::dm::table`).

use super::args::O;
use super::ctl::DevArg;
use super::{show, Cmd, Ctx};
use std::io::Read;
use udm_proto::{DevInfo, Line, Reply, Request};
use udm_report::dm::table::{self, TableError};
use udm_report::dm::task::{reply_info, Simple, TaskFlags, REMOVE_RETRY_DELAY};

/// A table text's lines, with relative paths made absolute (they name files in our
/// directory, not the daemon's); `None` after printing why it is refused.
fn parse_table(text: &str, file: &str) -> Option<Vec<Line>> {
    match table::parse_table(text, file) {
        Ok(mut lines) => {
            for l in &mut lines {
                l.params = crate::dmctl::absolute_words(&l.params);
            }
            Some(lines)
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// `_parse_file`: the table from `--table`, a file, or stdin.
fn read_table(ctx: &Ctx, file: Option<&str>) -> Option<Vec<Line>> {
    if let Some(t) = ctx.o.str(O::Table) {
        return parse_table(t, "");
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
    parse_table(&text, file.unwrap_or("on stdin"))
}

fn check(r: Result<(), TableError>) -> bool {
    r.map_err(|e| eprintln!("{e}")).is_ok()
}

/// Display the info block after a successful task when `-v` was given.
fn verbose_info(ctx: &mut Ctx, info: Option<DevInfo>) -> bool {
    match info {
        Some(i) if ctx.o.has(O::Verbose) => show::display_info(ctx, &i),
        _ => true,
    }
}

fn create_one(ctx: &mut Ctx, name: &str, file: Option<&str>) -> bool {
    if !check(table::check_name(name)) {
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
    let (devs, err) = table::parse_concise(&spec);
    for d in devs {
        let saved = ctx.o.clone();
        if !d.uuid.is_empty() {
            ctx.o.set_value(O::Uuid, &d.uuid);
        }
        if !d.minor.is_empty() {
            ctx.o.set_value(O::Minor, &d.minor);
        }
        if d.read_only {
            ctx.o.set(O::ReadOnly, true);
        }
        ctx.o.set_value(O::Table, &d.table);
        let ok = create_one(ctx, &d.name, None);
        ctx.o = saved;
        if !ok {
            return false;
        }
    }
    match err {
        Some(e) => {
            eprintln!("{e}");
            false
        }
        None => true,
    }
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

/// `_simple`: one device ioctl, `-v` info afterwards when `display`.
pub fn simple(ctx: &mut Ctx, task: Simple, name: Option<&str>, display: bool) -> bool {
    let Some(dev) = ctx.dev_arg(name) else {
        return false;
    };
    let flags = TaskFlags {
        noflush: ctx.o.has(O::NoFlush),
        nolockfs: ctx.o.has(O::NoLockfs),
        deferred: ctx.o.has(O::Deferred),
        inactive: ctx.o.has(O::Inactive),
        retry: ctx.o.has(O::Retry),
    };
    let (op, req) = (task.op(), task.request(dev.sel(), flags));
    let retries = task.retries(flags);
    let mut attempt = 0;
    let res = loop {
        match ctx.ctl.raw(req.clone()) {
            Err(e) if e.errno == libc::EBUSY && attempt < retries => {
                attempt += 1;
                std::thread::sleep(REMOVE_RETRY_DELAY);
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
        .map(|s| super::cnum::atoi(s) as u32)
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
        if !check(table::check_new_uuid(&new)) {
            return false;
        }
        Request::SetUuid {
            dev: dev.sel(),
            uuid: new,
        }
    } else {
        if !check(table::check_new_name(&new)) {
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
