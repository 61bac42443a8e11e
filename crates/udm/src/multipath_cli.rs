//! `udm multipath -ll|-l [NAME]` (and `multipath` as a link name): argv parsing and printing;
//! the topology comes from `udm_targets::multipath::topology`.

use udm_proto::{Client, DevSel, Reply, Request};
use udm_targets::multipath::topology::{self, DeviceHead};

const USAGE: &str =
    "Usage: udm multipath -ll|-l [NAME]   (the topology of udm's multipath devices)\n";

fn status(c: &mut Client, name: &str, table: bool) -> Option<(u64, String, String)> {
    match c.call(Request::Status {
        dev: DevSel::Name(name.into()),
        inactive: false,
        table,
        noflush: true,
    }) {
        Ok(Reply::Status { targets, .. }) if targets.len() == 1 => {
            let t = &targets[0];
            Some((t.len, t.ttype.clone(), t.params.clone()))
        }
        _ => None,
    }
}

pub fn main(args: &[String]) -> i32 {
    let mut name = None;
    let mut listed = false;
    for a in args {
        match a.as_str() {
            "-ll" | "-l" => listed = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return 0;
            }
            s if !s.starts_with('-') && name.is_none() => name = Some(s.to_string()),
            _ => {
                eprint!("{USAGE}");
                return 1;
            }
        }
    }
    if !listed {
        eprint!("{USAGE}");
        return 1;
    }
    let socket = udm_proto::default_socket();
    let mut c = match Client::connect(&socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "udm multipath: cannot reach the udm daemon at {} ({e})",
                socket.display()
            );
            return 1;
        }
    };
    let devs = match c.call(Request::List) {
        Ok(Reply::List(l)) => l,
        Ok(_) => Vec::new(),
        Err(e) => {
            eprintln!("udm multipath: {e}");
            return 1;
        }
    };
    let mut found = false;
    for d in devs
        .iter()
        .filter(|d| name.as_ref().is_none_or(|n| *n == d.name))
    {
        let Some((len, ttype, table)) = status(&mut c, &d.name, true) else {
            continue;
        };
        if ttype != "multipath" {
            continue;
        }
        let Some((_, _, st)) = status(&mut c, &d.name, false) else {
            continue;
        };
        match topology::parse(&table, &st) {
            Ok(t) => {
                found = true;
                let head = DeviceHead {
                    name: &d.name,
                    uuid: &d.uuid,
                    minor: d.minor,
                    sectors: len,
                    read_only: d.read_only,
                };
                print!("{}", topology::format_ll(&head, &t));
            }
            Err(e) => eprintln!("udm multipath: {}: {e}", d.name),
        }
    }
    if name.is_some() && !found {
        return 1;
    }
    0
}
