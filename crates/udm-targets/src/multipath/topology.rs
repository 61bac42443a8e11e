//! A multipath device's topology read back from its table and status lines (what a path
//! checker and `udm multipath -ll` need), and the `multipath -ll` rendering of it.

use udm_core::split_args;

/// One path as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTopo {
    pub dev: String,
    pub active: bool,
    pub fail_count: u32,
}

/// One priority group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTopo {
    /// Selector name and its table args, as `multipath -ll` shows the policy (`round-robin 0`).
    pub policy: String,
    /// `A` active, `E` enabled, `D` disabled.
    pub state: char,
    pub paths: Vec<PathTopo>,
}

/// A multipath device's groups and paths, and its table features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Table features as `multipath -ll` quotes them (`1 queue_if_no_path`).
    pub features: String,
    pub hwhandler: String,
    /// The group the next I/O goes to (1-based), 0 when there is none.
    pub next_group: u32,
    pub groups: Vec<GroupTopo>,
}

struct Words(std::vec::IntoIter<String>);

impl Words {
    fn word(&mut self) -> Result<String, String> {
        self.0
            .next()
            .ok_or_else(|| "truncated multipath line".to_string())
    }
    fn num(&mut self) -> Result<u32, String> {
        let w = self.word()?;
        w.parse().map_err(|_| format!("not a number: {w:?}"))
    }
    /// `<n> <word>...` as one string.
    fn group(&mut self) -> Result<String, String> {
        let n = self.num()?;
        let mut s = n.to_string();
        for _ in 0..n {
            s.push(' ');
            s.push_str(&self.word()?);
        }
        Ok(s)
    }
    fn skip(&mut self, n: u32) -> Result<(), String> {
        for _ in 0..n {
            self.word()?;
        }
        Ok(())
    }
}

/// Read a multipath target's table params and info status params.
pub fn parse(table: &str, status: &str) -> Result<Topology, String> {
    let mut t = Words(split_args(table).into_iter());
    let features = t.group()?;
    let hwhandler = t.group()?;
    let npgs = t.num()?;
    t.num()?;
    let mut policies = Vec::new();
    for _ in 0..npgs {
        let name = t.word()?;
        let sel = t.group()?;
        let args = sel.split_once(' ').map(|x| x.0).unwrap_or(&sel).to_string();
        policies.push(format!("{name} {args}"));
        let (np, na) = (t.num()?, t.num()?);
        for _ in 0..np {
            t.word()?;
            t.skip(na)?;
        }
    }
    let mut s = Words(split_args(status).into_iter());
    s.group()?;
    s.group()?;
    if s.num()? != npgs {
        return Err("table and status disagree on the groups".into());
    }
    let next_group = s.num()?;
    let mut groups = Vec::new();
    for policy in policies {
        let state = s.word()?.chars().next().unwrap_or('?');
        s.group()?;
        let (np, na) = (s.num()?, s.num()?);
        let mut paths = Vec::new();
        for _ in 0..np {
            let dev = s.word()?;
            let active = s.word()? == "A";
            let fail_count = s.num()?;
            s.skip(na)?;
            paths.push(PathTopo {
                dev,
                active,
                fail_count,
            });
        }
        groups.push(GroupTopo {
            policy,
            state,
            paths,
        });
    }
    Ok(Topology {
        features,
        hwhandler,
        next_group,
        groups,
    })
}

/// A size as `multipath -ll` prints it (`size=4.0M`, `1.0G`, `512K`).
pub fn human_size(sectors: u64) -> String {
    let bytes = sectors as f64 * 512.0;
    let units = ["K", "M", "G", "T", "P"];
    let mut v = bytes / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 && u == 0 {
        format!("{v:.0}{}", units[u])
    } else {
        format!("{v:.1}{}", units[u])
    }
}

/// What `multipath -ll` prints about a device besides its topology.
pub struct DeviceHead<'a> {
    pub name: &'a str,
    pub uuid: &'a str,
    pub minor: u32,
    pub sectors: u64,
    pub read_only: bool,
}

/// The `multipath -ll` block for one device.
pub fn format_ll(h: &DeviceHead<'_>, t: &Topology) -> String {
    let mut o = if h.uuid.is_empty() {
        format!("{} dm-{} udm,multipath\n", h.name, h.minor)
    } else {
        format!("{} ({}) dm-{} udm,multipath\n", h.name, h.uuid, h.minor)
    };
    o.push_str(&format!(
        "size={} features='{}' hwhandler='{}' wp={}\n",
        human_size(h.sectors),
        t.features,
        t.hwhandler,
        if h.read_only { "ro" } else { "rw" }
    ));
    let n = t.groups.len();
    for (gi, g) in t.groups.iter().enumerate() {
        let last_group = gi + 1 == n;
        let status = match g.state {
            'A' => "active",
            'D' => "disabled",
            _ => "enabled",
        };
        o.push_str(&format!(
            "{}-+- policy='{}' prio=0 status={status}\n",
            if last_group { '`' } else { '|' },
            g.policy
        ));
        let indent = if last_group { "  " } else { "| " };
        let np = g.paths.len();
        for (pi, p) in g.paths.iter().enumerate() {
            let (dm, chk) = if p.active {
                ("active", "ready")
            } else {
                ("failed", "faulty")
            };
            o.push_str(&format!(
                "{indent}{}- {} {dm} {chk} running\n",
                if pi + 1 == np { '`' } else { '|' },
                p.dev
            ));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str =
        "1 queue_if_no_path 0 2 1 round-robin 0 1 1 7:0 1 service-time 0 2 2 7:1 1 1 7:2 1 4 ";
    const STATUS: &str = "2 0 0 0 2 1 A 0 1 0 7:0 F 3 E 0 2 2 7:1 A 0 0 1 7:2 A 1 4096 4 ";

    #[test]
    fn parses_groups_and_paths() {
        let t = parse(TABLE, STATUS).unwrap();
        assert_eq!(t.features, "1 queue_if_no_path");
        assert_eq!(t.hwhandler, "0");
        assert_eq!(t.next_group, 1);
        assert_eq!(t.groups.len(), 2);
        assert_eq!(t.groups[0].policy, "round-robin 0");
        assert_eq!(t.groups[0].state, 'A');
        assert_eq!(
            t.groups[0].paths,
            [PathTopo {
                dev: "7:0".into(),
                active: false,
                fail_count: 3
            }]
        );
        assert_eq!(t.groups[1].paths[1].fail_count, 1);
        assert!(parse(TABLE, "2 0 0 0 3 1").is_err());
        assert!(parse("1", STATUS).is_err());
    }

    #[test]
    fn prints_as_multipath_ll() {
        let t = parse(TABLE, STATUS).unwrap();
        let h = DeviceHead {
            name: "mp",
            uuid: "",
            minor: 3,
            sectors: 8192,
            read_only: false,
        };
        assert_eq!(
            format_ll(&h, &t),
            "mp dm-3 udm,multipath\n\
             size=4.0M features='1 queue_if_no_path' hwhandler='0' wp=rw\n\
             |-+- policy='round-robin 0' prio=0 status=active\n\
             | `- 7:0 failed faulty running\n\
             `-+- policy='service-time 0' prio=0 status=enabled\n\
             \x20 |- 7:1 active ready running\n\
             \x20 `- 7:2 active ready running\n"
        );
        assert_eq!(human_size(2), "1K");
        assert_eq!(human_size(2 * 1024 * 1024), "1.0G");
    }
}
