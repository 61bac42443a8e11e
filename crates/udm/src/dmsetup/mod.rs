//! The dmsetup-compatible command line (`udm <command>` or the binary invoked as `dmsetup`):
//! dmsetup's command table, switch post-processing, `-c` report set-up and the main loop.

mod args;
mod ctl;
mod devcmds;
mod misc;
mod show;

use udm_report::dm::info::DevName;
use udm_report::dm::{cnum, fields, info as dminfo, mangle, tree, udev};
use udm_report::report;

use args::{Opts, O};
use ctl::{Ctl, DevArg};
use fields::{InfoObj, SplitName, DR_DEPS, DR_NAME, DR_STATS, DR_STATS_META, DR_TREE};
use report::Report;
use std::io::Write;
use tree::{DepTree, TreeOpts};
use udm_proto::{DevInfo, Reply, Request};

/// Library version line dmsetup prints (the Debian dmsetup this CLI mirrors).
pub const LIB_VERSION: &str = "1.02.185 (2022-05-18)";

const USAGE: &str = include_str!("usage.txt");

type CmdFn = fn(&mut Ctx, &Cmd, &[String], Option<&DevInfo>, bool) -> bool;

/// One dmsetup command: argument bounds, repeatability (2 = also with `-S`), handler.
pub struct Cmd {
    pub name: &'static str,
    min: usize,
    max: i32,
    repeatable: u8,
    subcommands: bool,
    f: CmdFn,
}

const fn c(name: &'static str, min: usize, max: i32, repeatable: u8, f: CmdFn) -> Cmd {
    Cmd {
        name,
        min,
        max,
        repeatable,
        subcommands: false,
        f,
    }
}

static COMMANDS: &[Cmd] = &[
    c("help", 0, 0, 0, misc::help),
    c("create", 0, 2, 0, devcmds::create),
    c("remove", 0, -1, 2, devcmds::remove),
    c("remove_all", 0, 0, 0, devcmds::remove_all),
    c("suspend", 0, -1, 2, devcmds::suspend),
    c("resume", 0, -1, 2, devcmds::resume),
    c("load", 0, 2, 0, devcmds::load),
    c("clear", 0, -1, 2, devcmds::clear),
    c("reload", 0, 2, 0, devcmds::load),
    c("wipe_table", 0, -1, 2, devcmds::wipe_table),
    c("rename", 1, 2, 0, devcmds::rename),
    c("measure", 0, -1, 2, show::status),
    c("message", 2, -1, 0, devcmds::message),
    c("ls", 0, 0, 0, show::ls),
    c("info", 0, -1, 1, show::info),
    c("deps", 0, -1, 2, show::deps),
    Cmd {
        name: "stats",
        min: 1,
        max: -1,
        repeatable: 1,
        subcommands: true,
        f: misc::stats,
    },
    c("status", 0, -1, 2, show::status),
    c("table", 0, -1, 2, show::status),
    c("wait", 0, 2, 0, devcmds::wait),
    c("mknodes", 0, -1, 1, misc::mknodes),
    c("mangle", 0, -1, 1, misc::mangle_cmd),
    c("udevcreatecookie", 0, 0, 0, misc::udevcreatecookie),
    c("udevreleasecookie", 0, 1, 0, misc::udevreleasecookie),
    c("udevflags", 1, 1, 0, misc::udevflags),
    c("udevcomplete", 1, 1, 0, misc::udevcomplete),
    c("udevcomplete_all", 0, 1, 0, misc::udevcomplete_all),
    c("udevcookies", 0, 0, 0, misc::udevcookies),
    c("target-version", 1, -1, 1, show::target_version),
    c("targets", 0, 0, 0, show::targets),
    c("version", 0, 0, 0, show::version),
    c("setgeometry", 5, 5, 0, devcmds::setgeometry),
    c("splitname", 1, 2, 0, misc::splitname),
];

fn find(name: &str) -> Option<&'static Cmd> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// Everything a command sees: switches, the daemon connection, the report.
pub struct Ctx {
    pub o: Opts,
    pub ctl: Ctl,
    pub report: Option<Report>,
    pub report_type: u32,
    pub dev_name: DevName,
    pub tree: Option<TreeOpts>,
    pub dtree: Option<DepTree>,
    pub concise_produced: bool,
    pub selection_cmd: Option<&'static Cmd>,
    pub num_devices: usize,
}

impl Ctx {
    /// `_set_task_device`: a name (or path), else `-u`, else `-j/-m`.
    pub fn dev_arg(&mut self, name: Option<&str>) -> Option<DevArg> {
        if let Some(n) = name {
            return Some(DevArg::name(&self.resolve_name(n)));
        }
        if let Some(u) = self.o.str(O::Uuid).filter(|_| self.o.has(O::Uuid)) {
            return Some(DevArg {
                uuid: u.to_string(),
                ..DevArg::default()
            });
        }
        if self.o.has(O::Major) && self.o.has(O::Minor) {
            return Some(DevArg {
                devno: Some((self.o.int(O::Major) as u32, self.o.int(O::Minor) as u32)),
                ..DevArg::default()
            });
        }
        eprintln!("No device specified.");
        None
    }

    /// A `/`-containing device argument names a node: `<dev_dir>/mapper/NAME` or `dm-N`.
    fn resolve_name(&mut self, n: &str) -> String {
        match dminfo::NodeArg::parse(n) {
            None => n.to_string(),
            Some(dminfo::NodeArg::Name(name)) => name,
            Some(dminfo::NodeArg::Minor(minor, base)) => {
                if let Ok(Reply::List(l)) = self.ctl.raw(Request::List) {
                    if let Some(d) = l.iter().find(|d| d.minor == minor) {
                        return d.name.clone();
                    }
                }
                base
            }
        }
    }

    /// `_process_all`: run `f` for every device (sorted by name).
    pub fn process_all(&mut self, cmd: &Cmd, args: &[String], silent: bool, f: CmdFn) -> bool {
        let Some(list) = self.ctl.list() else {
            return false;
        };
        if list.is_empty() {
            if !silent {
                println!("No devices found");
            }
            return true;
        }
        let mut r = true;
        for d in &list {
            if !f(self, cmd, args, Some(d), true) {
                r = false;
            }
        }
        r
    }

    /// The whole dependency tree, built once.
    pub fn deptree(&mut self) -> Option<&DepTree> {
        if self.dtree.is_none() {
            let list = self.ctl.list()?;
            let ctl = &mut self.ctl;
            self.dtree = Some(DepTree::build(
                &list,
                &mut |d| match ctl.raw(Request::Deps {
                    dev: DevArg::name(&d.name).sel(),
                    inactive: false,
                }) {
                    Ok(Reply::Deps { deps, .. }) => deps,
                    _ => Vec::new(),
                },
            ));
        }
        self.dtree.as_ref()
    }

    /// `_display_info_cols`: one report row (or, with `-S` on another command, run it).
    pub fn info_cols(&mut self, info: &DevInfo) -> bool {
        let key = format!("{}:{}", info.major, info.minor);
        let mut tree_node = None;
        if self.report_type & DR_TREE != 0 {
            let Some(n) = self.deptree().and_then(|t| t.find(&key)) else {
                eprintln!("Cannot find node {key}.");
                return false;
            };
            tree_node = Some(n);
        }
        let mut deps = None;
        if self.report_type & DR_DEPS != 0 {
            match self.ctl.raw(Request::Deps {
                dev: DevArg::name(&info.name).sel(),
                inactive: self.o.has(O::Inactive),
            }) {
                Ok(Reply::Deps { deps: d, .. }) => deps = Some(d),
                _ => {
                    eprintln!("Cannot get deps for {key}.");
                    return false;
                }
            }
        }
        let split = (self.report_type & DR_NAME != 0)
            .then(|| SplitName::for_device(&info.uuid, &info.name));
        if self.report_type & (DR_STATS | DR_STATS_META) != 0 {
            // udm keeps no statistics regions: nothing to report for this device.
            return true;
        }
        let rep_uses = |id: &str| {
            let i = fields::FIELDS.iter().position(|f| f.id == id);
            self.report
                .as_ref()
                .zip(i)
                .map(|(r, i)| r.uses_field(i))
                .unwrap_or(false)
        };
        if rep_uses("blkdevname") && !dminfo::has_disk(info) {
            eprintln!("Could not resolve block device name for {key}.");
            eprintln!("_do_report_object: report function failed for field blkdevname");
            return false;
        }
        let read_ahead = if rep_uses("read_ahead") {
            if !dminfo::has_disk(info) {
                show::open_failed(info);
            }
            show::read_ahead(self, info)
        } else {
            0
        };
        let obj = InfoObj {
            info: Some(info),
            read_ahead,
            deps: deps.as_deref(),
            tree: tree_node.and_then(|n| self.dtree.as_ref().map(|t| (t, n))),
            split: split.as_ref(),
        };
        let output = self.selection_cmd.is_none();
        let Some(rep) = self.report.as_mut() else {
            return false;
        };
        let selected = rep.object(&obj, output);
        if let (Some(sc), true) = (self.selection_cmd, selected) {
            return (sc.f)(self, sc, std::slice::from_ref(&info.name), None, true);
        }
        true
    }
}

fn usage() {
    eprint!("{USAGE}");
}

/// Run a dmsetup command line (`args` excludes the program name); returns the exit code.
pub fn run(prog: &str, args: &[String]) -> i32 {
    // SAFETY: setlocale with a valid NUL-terminated string, before any other thread exists
    // that could read the locale.
    unsafe {
        libc::setlocale(libc::LC_ALL, c"".as_ptr());
    }
    let rc = run_inner(prog, args);
    let _ = std::io::stdout().flush();
    rc
}

fn run_inner(prog: &str, argv: &[String]) -> i32 {
    if let Ok(d) = std::env::var("DM_DEV_DIR") {
        if !d.is_empty() && !d.starts_with('/') {
            eprintln!("Invalid DM_DEV_DIR environment variable value.");
            return 1;
        }
    }
    let o = if prog == "devmap_name" {
        match devmap_name_opts(argv) {
            Some(o) => o,
            None => {
                eprint!("Usage: devmap_name <major> <minor>\n\n");
                eprintln!("Couldn't process command line.");
                return 1;
            }
        }
    } else {
        // getopt names the program by argv[0] exactly as invoked.
        let argv0 = std::env::args().next().unwrap_or_else(|| prog.to_string());
        match args::parse(&argv0, argv).and_then(check_switches) {
            Ok(o) => o,
            Err(m) => {
                if !m.is_empty() {
                    eprintln!("{m}");
                }
                eprintln!("Couldn't process command line.");
                return 1;
            }
        }
    };
    let forced_ok = o.has(O::Help) || o.has(O::Version);
    let mangling = mangle::Mode::from_opt(o.str(O::MangleName));
    let mut ctx = Ctx {
        o,
        ctl: Ctl::new(mangling),
        report: None,
        report_type: 0,
        dev_name: DevName::DevNo,
        tree: None,
        dtree: None,
        concise_produced: false,
        selection_cmd: None,
        num_devices: 0,
    };
    let mut args: Vec<String> = ctx.o.args.clone();
    let mut cmd: &'static Cmd;
    let mut subcommand = String::new();
    let direct = if ctx.o.has(O::Help) {
        cmd = find("help").expect("help");
        true
    } else if ctx.o.has(O::Version) {
        cmd = find("version").expect("version");
        true
    } else {
        if args.is_empty() {
            usage();
            return 1;
        }
        let name = args.remove(0);
        let Some(found) = find(&name) else {
            eprintln!("Unknown command.");
            usage();
            return 1;
        };
        cmd = found;
        false
    };
    if direct && !ctx.o.args.is_empty() && prog != "devmap_name" {
        // `dmsetup --version foo`: the command word is dropped like dmsetup does.
        args.remove(0);
    }
    let mut ret = 0;
    if !direct {
        if args.len() < cmd.min || (cmd.max >= 0 && args.len() > cmd.max as usize) {
            eprintln!("Incorrect number of arguments.");
            usage();
            return 1;
        }
        if cmd.name == "splitname" {
            ctx.o.set(O::Columns, true);
        }
        if let Err(m) = process_options(&mut ctx) {
            eprintln!("{m}");
            eprintln!("Couldn't process command line.");
            return 1;
        }
        if cmd.subcommands && !args.is_empty() {
            subcommand = args.remove(0);
        }
        if ctx.o.has(O::Select) && cmd.repeatable == 2 {
            ctx.selection_cmd = Some(cmd);
            ctx.o.set(O::Columns, true);
            cmd = find("info").expect("info");
        }
        if ctx.o.has(O::Columns) && !report_init(&mut ctx, cmd) {
            return 1;
        }
    }
    let _ = subcommand;
    let uuid_or_dev = ctx.o.has(O::Uuid) || ctx.o.has(O::Major);
    let multiple = cmd.repeatable != 0 && args.len() != 1 && (!args.is_empty() || !uuid_or_dev);
    let mut count = match ctx.o.str(O::Count).map(cnum::atoi) {
        Some(n) if n > 0 => n as u64,
        Some(_) => u64::MAX,
        None if ctx.o.has(O::Interval) => u64::MAX,
        None => 1,
    };
    loop {
        let r = perform(&mut ctx, cmd, &args, multiple);
        if ctx.concise_produced {
            println!();
            ctx.concise_produced = false;
        }
        if let Some(rep) = ctx.report.as_mut() {
            rep.output();
            if count > 1 && r {
                println!();
                let _ = std::io::stdout().flush();
                let secs = ctx.o.str(O::Interval).map(cnum::atoi).unwrap_or(1).max(1);
                std::thread::sleep(std::time::Duration::from_secs(secs as u64));
            }
        }
        if !r {
            ret = 1;
            break;
        }
        count -= 1;
        if count == 0 {
            break;
        }
    }
    if forced_ok {
        0
    } else {
        ret
    }
}

/// `devmap_name <maj> <min>` / `devmap_name <maj>:<min>` = `info -c --noheadings -o name -j -m`.
fn devmap_name_opts(argv: &[String]) -> Option<Opts> {
    let (ma, mi) = match argv {
        [a, b] => (cnum::atoi(a), cnum::atoi(b)),
        [ab] => {
            let (a, b) = ab.split_once(':')?;
            (a.trim().parse().ok()?, b.trim().parse().ok()?)
        }
        _ => return None,
    };
    let mut o = Opts::default();
    o.set(O::Columns, true);
    o.set(O::NoHeadings, true);
    o.set_value(O::Options, "name");
    o.set_value(O::Major, &ma.to_string());
    o.set_value(O::Minor, &mi.to_string());
    o.args = vec!["info".into()];
    Some(o)
}

/// The checks dmsetup makes right after option parsing.
fn check_switches(o: Opts) -> Result<Opts, String> {
    if let Some(m) = o.str(O::Mode) {
        let ok = cnum::strtoul_full(m, 8).filter(|v| *v != 0 && !m.trim().starts_with('-'));
        if ok.is_none() {
            return Err(format!("Invalid argument for --mode: {m}. "));
        }
    }
    if o.has(O::Count) && o.int(O::Count) < 0 {
        return Err("Count must be zero or greater.".into());
    }
    if o.has(O::Interval) && o.int(O::Interval) <= 0 {
        return Err("Interval must be a positive integer.".into());
    }
    if let Some(m) = o.str(O::MangleName) {
        if !["none", "auto", "hex"]
            .iter()
            .any(|x| x.eq_ignore_ascii_case(m))
        {
            return Err("Unknown name mangling mode.".into());
        }
    }
    if let Some(ra) = o.str(O::ReadAhead) {
        if !ra.eq_ignore_ascii_case("auto") && !ra.eq_ignore_ascii_case("none") {
            let v = cnum::atoi(ra);
            if v < -1 {
                return Err(format!(
                    "Negative read ahead value ({v}) is not understood."
                ));
            }
        }
    }
    if let Some(c) = o.str(O::UdevCookie) {
        if udev::cookie_value(c).is_none() {
            eprintln!("Incorrect cookie value.");
        }
    }
    if o.has(O::Major) != o.has(O::Minor) {
        return Err("Please specify both major number and minor number.".into());
    }
    if o.has(O::Table) && o.has(O::NoTable) {
        return Err("--table and --notable are incompatible.".into());
    }
    if o.has(O::AddNodeOnResume) && o.has(O::AddNodeOnCreate) {
        return Err("--addnodeonresume and --addnodeoncreate are incompatible.".into());
    }
    Ok(o)
}

/// `_process_options`: tree options, or `deps`/`ls` device naming.
fn process_options(ctx: &mut Ctx) -> Result<(), String> {
    if ctx.o.has(O::Tree) {
        let t = TreeOpts::parse(ctx.o.str(O::Options), show::terminal())
            .map_err(|rest| format!("Tree options not recognised: {rest}."))?;
        ctx.tree = Some(t);
        return Ok(());
    }
    if ctx.o.has(O::Columns) || !ctx.o.has(O::Options) {
        return Ok(());
    }
    ctx.dev_name = DevName::parse(ctx.o.str(O::Options).unwrap_or(""))
        .map_err(|rest| format!("Option not recognised: {rest}."))?;
    Ok(())
}

/// `_report_init`.
fn report_init(ctx: &mut Ctx, cmd: &Cmd) -> bool {
    let mut options = "name,major,minor,attr,open,segments,events,uuid".to_string();
    if cmd.name == "splitname" {
        options = "vg_name,lv_name,lv_layer".into();
        ctx.report_type |= DR_NAME;
    }
    let mut flags = report::Flags::default();
    let o = &ctx.o;
    if o.has(O::NoHeadings) {
        flags.separator = ":".into();
        flags.aligned = false;
        flags.headings = false;
    }
    if o.has(O::Unbuffered) {
        flags.buffered = false;
    }
    flags.rows = o.has(O::Rows);
    flags.quoted = !o.has(O::Unquoted);
    if o.has(O::NamePrefixes) {
        flags.aligned = false;
        flags.prefixes = true;
    }
    if let Some(opt) = o.str(O::Options) {
        if opt.contains("help") {
            flags.headings = false;
        }
        options = match opt.strip_prefix('+') {
            Some(extra) => format!("{options},{extra}"),
            None => opt.to_string(),
        };
    }
    let mut keys = String::new();
    if let Some(k) = o.str(O::Sort) {
        keys = k.to_string();
        flags.buffered = true;
        if cmd.name == "status" || cmd.name == "table" {
            eprintln!("--sort is not yet supported with status and table.");
            return false;
        }
    }
    if let Some(sep) = o.str(O::Separator) {
        flags.separator = sep.to_string();
        flags.aligned = false;
    }
    let selection = o.str(O::Select).map(|s| s.to_string());
    let Some(rep) = Report::new(
        fields::FIELDS,
        fields::TYPES,
        ctx.report_type,
        &options,
        &keys,
        flags,
        selection.as_deref(),
    ) else {
        return false;
    };
    ctx.report_type = rep.report_types;
    ctx.report = Some(rep);
    if ctx.report_type & DR_TREE != 0 && ctx.deptree().is_none() {
        eprintln!("Internal device dependency tree creation failed.");
        return false;
    }
    true
}

/// `_perform_command_for_all_repeatable_args`.
fn perform(ctx: &mut Ctx, cmd: &Cmd, args: &[String], multiple: bool) -> bool {
    let mut i = 0;
    loop {
        let rest = if i < args.len() { &args[i..] } else { &[][..] };
        if !(cmd.f)(ctx, cmd, rest, None, multiple) {
            eprintln!("Command failed.");
            ctx.ctl.flush_reasons();
            return false;
        }
        ctx.ctl.flush_reasons();
        i += 1;
        if !(cmd.repeatable != 0 && args.len() > i) {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_texts_are_the_real_ones() {
        let rep = Report::new(
            fields::FIELDS,
            fields::TYPES,
            0,
            "name",
            "",
            report::Flags::default(),
            None,
        )
        .unwrap();
        let mut want = include_str!("fields_help.txt").to_string();
        assert!(want.ends_with(" \n"));
        want.truncate(want.len() - 2);
        assert_eq!(rep.fields_help(true, false), want);
        let sel = include_str!("select_help.txt");
        let ops = udm_report::report::SELECTION_HELP;
        let typed = format!("{} \n{ops}", rep.fields_help(false, true));
        assert_eq!(typed, sel);
        assert!(USAGE.starts_with("Usage:\n\ndmsetup\n"));
    }
}
