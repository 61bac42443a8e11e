//! `udm stats`: the dmstats equivalent over the daemon's `@stats_*` messages — create,
//! list, print, clear, delete regions — plus `report` (whole-device counters for every
//! device, /proc/diskstats style) and `device NAME` (the raw 17-field diskstats line).

use anyhow::{bail, Context, Result};
use udm_proto::{Client, DevSel, Reply, Request};
use udm_report::dm::stats::{self, CreateArgs};

const USAGE: &str = "\
Usage: udm stats COMMAND
  create NAME [--start SECTOR --length SECTORS] [--areas N | --areasize SECTORS]
              [--programid ID] [--auxdata TEXT]     add a region (whole device, 1 area)
  list [NAME]                                       regions of one or every device
  print [--clear] NAME [--regionid ID]              per-area counters (kernel @stats_print)
  clear NAME [--regionid ID]                        zero the counters
  delete NAME (--regionid ID | --allregions)        drop regions
  report [NAME]                                     whole-device counters of every device
  device NAME                                       the /proc/diskstats fields of one device
";

fn message(c: &mut Client, name: &str, argv: &[String]) -> Result<String> {
    let r = c
        .call(Request::Message {
            dev: DevSel::Name(name.to_string()),
            sector: 0,
            argv: argv.to_vec(),
        })
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    match r {
        Reply::Message(m) => Ok(m.unwrap_or_default()),
        r => bail!("unexpected reply {r:?}"),
    }
}

fn names(c: &mut Client, only: Option<&str>) -> Result<Vec<String>> {
    if let Some(n) = only {
        return Ok(vec![n.to_string()]);
    }
    match c.call(Request::List).map_err(|e| anyhow::anyhow!("{e}"))? {
        Reply::List(v) => Ok(v.into_iter().map(|d| d.name).collect()),
        r => bail!("unexpected reply {r:?}"),
    }
}

/// Options after the command: `--key value` pairs and flags, one positional name.
struct Args {
    name: Option<String>,
    kv: Vec<(String, String)>,
    flags: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        name: None,
        kv: Vec::new(),
        flags: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "--clear" | "--allregions" => a.flags.push(w.clone()),
            k if k.starts_with("--") => {
                let v = it.next().with_context(|| format!("{k} needs a value"))?;
                a.kv.push((k.to_string(), v.clone()));
            }
            n if a.name.is_none() => a.name = Some(n.to_string()),
            x => bail!("unexpected argument {x:?}"),
        }
    }
    Ok(a)
}

impl Args {
    fn get(&self, k: &str) -> Option<&str> {
        self.kv
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    fn need_name(&self) -> Result<&str> {
        self.name.as_deref().context("a device name is needed")
    }
}

/// Region ids of a device, from `@stats_list`.
fn region_ids(c: &mut Client, name: &str) -> Result<Vec<String>> {
    let l = message(c, name, &["@stats_list".into()])?;
    Ok(stats::region_ids(&l))
}

pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("udm stats: {e:#}");
            1
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some(cmd) = args.first() else {
        print!("{USAGE}");
        return Ok(());
    };
    if cmd == "help" || cmd == "--help" || cmd == "-h" {
        print!("{USAGE}");
        return Ok(());
    }
    let a = parse(&args[1..])?;
    let socket = udm_proto::default_socket();
    let mut c = Client::connect(&socket)
        .map_err(|e| anyhow::anyhow!("{}: {e} (is `udm daemon` running?)", socket.display()))?;
    match cmd.as_str() {
        "create" => {
            let name = a.need_name()?;
            let argv = stats::create_argv(&CreateArgs {
                start: a.get("--start"),
                length: a.get("--length"),
                areas: a.get("--areas"),
                area_size: a.get("--areasize"),
                program_id: a.get("--programid"),
                aux_data: a.get("--auxdata"),
            })?;
            let id = message(&mut c, name, &argv)?;
            let list = message(&mut c, name, &["@stats_list".into()])?;
            let areas = stats::created_areas(&list, id.trim());
            println!(
                "{name}: Created new region with {areas} area(s) as region ID {}",
                id.trim()
            );
        }
        "list" => {
            println!("{}", stats::list_header());
            for n in names(&mut c, a.name.as_deref())? {
                let list = message(&mut c, &n, &["@stats_list".into()])?;
                for row in stats::list_rows(&n, &list) {
                    println!("{row}");
                }
            }
        }
        "print" => {
            let name = a.need_name()?;
            let verb = if a.flag("--clear") {
                "@stats_print_clear"
            } else {
                "@stats_print"
            };
            let ids = match a.get("--regionid") {
                Some(id) => vec![id.to_string()],
                None => region_ids(&mut c, name)?,
            };
            for id in ids {
                print!("{}", message(&mut c, name, &[verb.into(), id])?);
            }
        }
        "clear" | "delete" => {
            let name = a.need_name()?;
            let verb = if cmd == "clear" {
                "@stats_clear"
            } else {
                "@stats_delete"
            };
            let ids = match a.get("--regionid") {
                Some(id) => vec![id.to_string()],
                None if cmd == "clear" || a.flag("--allregions") => region_ids(&mut c, name)?,
                None => bail!("delete needs --regionid ID or --allregions"),
            };
            for id in ids {
                message(&mut c, name, &[verb.into(), id])?;
            }
        }
        "report" => {
            println!("{}", stats::report_header());
            for n in names(&mut c, a.name.as_deref())? {
                let line = message(&mut c, &n, &["@diskstats".into()])?;
                println!("{}", stats::report_row(&n, &line)?);
            }
        }
        "device" => {
            let name = a.need_name()?;
            println!("{}", message(&mut c, name, &["@diskstats".into()])?);
        }
        other => bail!("unknown stats command {other:?}\n{USAGE}"),
    }
    Ok(())
}
