//! What dmsetup prints about one device: the long `info` layout, the read-ahead the kernel
//! gives a mapped device (stacked optimal I/O size), `table`'s key masking and `--concise`
//! quoting, `status --stats` counters, `deps`/`ls` device names and `targets` lines.

use udm_proto::{Dep, DevInfo, DevSel, TargetStatus};

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
pub fn lcm(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        _ => a / gcd(a, b) * b,
    }
}

/// Optimal I/O size (sectors) of a mapped device's table, as the kernel stacks queue limits:
/// striped sets chunk × stripes, other targets inherit it from the mapped devices (major
/// `dm_major`) they use. `table` answers a device's table lines (live, else inactive).
pub fn io_opt(
    dev: DevSel,
    dm_major: u32,
    table: &mut dyn FnMut(&DevSel) -> Vec<TargetStatus>,
) -> u64 {
    io_opt_at(dev, dm_major, table, 0)
}

fn io_opt_at(
    dev: DevSel,
    dm_major: u32,
    table: &mut dyn FnMut(&DevSel) -> Vec<TargetStatus>,
    depth: u32,
) -> u64 {
    if depth > 16 {
        return 0;
    }
    let mut opt = 0;
    for t in table(&dev) {
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
                        if a == dm_major {
                            let sub = io_opt_at(DevSel::Dev(a, b), dm_major, table, depth + 1);
                            o = lcm(o, sub);
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

/// Read-ahead in sectors as the kernel sets it for a dm device with optimal I/O size
/// `io_opt` (sectors): twice that, at least the 128 KiB default.
pub fn read_ahead(io_opt: u64) -> u32 {
    let pages = (io_opt * 512 * 2 / 4096).max(32);
    u32::try_from(pages * 8).unwrap_or(u32::MAX)
}

/// The node path libdm would open: `<dev_dir>/mapper/NAME` (`dev_dir` from `DM_DEV_DIR`,
/// `/dev` by default).
pub fn node_path(dev_dir: Option<&str>, name: &str) -> String {
    let dir = dev_dir.filter(|d| !d.is_empty()).unwrap_or("/dev");
    format!("{}/mapper/{name}", dir.trim_end_matches('/'))
}

/// libdm's complaint when it cannot open a device without a disk to read its read-ahead:
/// no node before the first resume (ENOENT), a node without a disk after it (ENXIO).
pub fn open_failed(dev_dir: Option<&str>, i: &DevInfo) -> String {
    let errno = if i.resumed { libc::ENXIO } else { libc::ENOENT };
    format!(
        "{}: open failed: {}",
        node_path(dev_dir, &i.name),
        udm_proto::strerror(errno)
    )
}

/// `_display_info_long`: the block `info` prints (`read_ahead` only for a device with a disk).
pub fn info_long(i: &DevInfo, read_ahead: Option<u32>) -> String {
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
    if let Some(ra) = read_ahead {
        s.push_str(&format!("Read Ahead:        {ra}\n"));
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
    s
}

/// Crypt key masking for `table` (the second word of crypt params, unless a `:key` reference;
/// integrity's `internal_hash:`/`journal_crypt:`/`journal_mac:` keys).
pub fn mask_keys(ttype: &str, params: &str) -> String {
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

/// A `--concise` field: `,`, `;` and `\` escaped with a backslash.
pub fn concise_quoted(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, ',' | ';' | '\\') {
            o.push('\\');
        }
        o.push(ch);
    }
    o
}

/// The device part of a `table --concise` entry: `name,uuid,minor,ro|rw` (quoted).
pub fn concise_device(name: &str, i: &DevInfo) -> String {
    format!(
        "{},{},{},{}",
        concise_quoted(name),
        concise_quoted(&i.uuid),
        i.minor,
        if i.read_only { "ro" } else { "rw" }
    )
}

/// One target of `status`/`table` output: `start len type params` (`mask`: crypt and
/// integrity keys zeroed; `concise`: a `,`-led, quoted `--concise` field).
pub fn target_text(t: &TargetStatus, mask: bool, concise: bool) -> String {
    let params = if mask {
        mask_keys(&t.ttype, &t.params)
    } else {
        t.params.clone()
    };
    let head = format!("{} {} {} ", t.start, t.len, t.ttype);
    if concise {
        format!(",{head}{}", concise_quoted(&params))
    } else {
        format!("{head}{params}")
    }
}

/// A device argument naming a node (it holds a `/`): `<dev_dir>/mapper/NAME` names NAME,
/// `…/dm-N` the device with minor N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeArg {
    Name(String),
    /// `dm-N`; the name is the fallback when no device has that minor.
    Minor(u32, String),
}

impl NodeArg {
    /// `None` for a plain name (no `/`).
    pub fn parse(arg: &str) -> Option<NodeArg> {
        if !arg.contains('/') {
            return None;
        }
        let base = arg.trim_end_matches('/').rsplit('/').next().unwrap_or(arg);
        Some(
            match base.strip_prefix("dm-").and_then(|m| m.parse::<u32>().ok()) {
                Some(minor) => NodeArg::Minor(minor, base.to_string()),
                None => NodeArg::Name(base.to_string()),
            },
        )
    }
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
pub fn format_diskstats(line: &str, prefix: &str) -> Option<String> {
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

/// How `deps` and `ls` name devices (`-o devno|blkdevname|devname`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevName {
    DevNo,
    Blk,
    Map,
}

impl DevName {
    /// `_process_options`'s `-o` words for `deps`/`ls` (unique prefixes, comma separated,
    /// the last one wins); `Err` carries the unrecognised rest of the option string.
    pub fn parse(options: &str) -> Result<DevName, String> {
        let mut d = DevName::DevNo;
        let mut pos = 0;
        while pos < options.len() {
            let rest = &options[pos..];
            let word = rest.split(',').next().unwrap_or("");
            if "devno".starts_with(word) {
                d = DevName::DevNo;
            } else if "blkdevname".starts_with(word) {
                d = DevName::Blk;
            } else if "devname".starts_with(word) {
                d = DevName::Map;
            } else {
                return Err(rest.to_string());
            }
            if word.len() == rest.len() {
                break;
            }
            pos += word.len() + 1;
        }
        Ok(d)
    }

    /// How `deps` shows one dependency (`sysfs` names a non-dm block device).
    pub fn dep(self, d: &Dep, sysfs: &dyn Fn(u32, u32) -> Option<String>) -> String {
        match (self, &d.dm_name, d.devno) {
            (DevName::DevNo, _, Some((a, b))) => format!("{a}, {b}"),
            (DevName::Map, Some(n), _) => n.clone(),
            (DevName::Blk, Some(_), Some((_, m))) => format!("dm-{m}"),
            (_, None, Some((a, b))) => sysfs(a, b).unwrap_or_else(|| format!("{a}, {b}")),
            _ => d.id.clone(),
        }
    }

    /// How `ls` shows a device.
    pub fn ls_line(self, d: &DevInfo) -> String {
        match self {
            DevName::Blk if has_disk(d) => format!("{}\t(dm-{})", d.name, d.minor),
            DevName::Map if has_disk(d) => format!("{}\t({})", d.name, d.name),
            _ => format!("{}\t({}:{})", d.name, d.major, d.minor),
        }
    }
}

/// `targets`/`target-version` lines: name padded to 16, then `vX.Y.Z`.
pub fn versions(v: &[(String, [u32; 3])]) -> String {
    let mut s = String::new();
    for (name, ver) in v {
        s.push_str(&format!("{name:<16} v{}.{}.{}\n", ver[0], ver[1], ver[2]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn dev(name: &str, minor: u32) -> DevInfo {
        DevInfo {
            name: name.into(),
            uuid: String::new(),
            major: 253,
            minor,
            open_count: 0,
            event_nr: 0,
            suspended: false,
            read_only: false,
            live_table: true,
            inactive_table: false,
            target_count: 1,
            deferred_remove: false,
            resumed: true,
        }
    }

    fn line(ttype: &str, params: &str) -> TargetStatus {
        TargetStatus {
            start: 0,
            len: 8,
            ttype: ttype.into(),
            params: params.into(),
        }
    }

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
        assert_eq!(concise_quoted("a,b;c\\"), "a\\,b\\;c\\\\");
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

    #[test]
    fn io_opt_stacks_like_the_block_layer() {
        // 253:1 is striped 2 × 64; 253:2 is striped 3 × 16; top concatenates both.
        let mut table = |d: &DevSel| match d {
            DevSel::Dev(253, 1) => vec![line("striped", "2 64 8:0 0 8:16 0")],
            DevSel::Dev(253, 2) => vec![line("striped", "3 16 8:0 0 8:16 0 8:32 0")],
            DevSel::Name(n) if n == "top" => {
                vec![line("linear", "253:1 0"), line("linear", "253:2 0")]
            }
            _ => vec![line("linear", "8:0 0")],
        };
        assert_eq!(io_opt(DevSel::Dev(253, 1), 253, &mut table), 128);
        assert_eq!(io_opt(DevSel::Name("top".into()), 253, &mut table), 384);
        assert_eq!(io_opt(DevSel::Name("other".into()), 253, &mut table), 0);
        assert_eq!(read_ahead(0), 256);
        assert_eq!(read_ahead(384), 768);
        assert_eq!(lcm(4, 6), 12);
    }

    #[test]
    fn status_entries() {
        let mut d = dev("a,b", 2);
        d.read_only = true;
        assert_eq!(concise_device("a,b", &d), "a\\,b,,2,ro");
        let t = TargetStatus {
            start: 0,
            len: 8,
            ttype: "crypt".into(),
            params: "aes 0123 0 8:0 0".into(),
        };
        assert_eq!(target_text(&t, true, false), "0 8 crypt aes 0000 0 8:0 0");
        assert_eq!(target_text(&t, false, true), ",0 8 crypt aes 0123 0 8:0 0");
        assert_eq!(NodeArg::parse("x"), None);
        assert_eq!(
            NodeArg::parse("/dev/mapper/x/"),
            Some(NodeArg::Name("x".into()))
        );
        assert_eq!(
            NodeArg::parse("/dev/dm-3"),
            Some(NodeArg::Minor(3, "dm-3".into()))
        );
    }

    #[test]
    fn long_info_and_names() {
        let mut d = dev("x", 3);
        d.uuid = "U".into();
        d.inactive_table = true;
        let s = info_long(&d, Some(256));
        assert!(s.starts_with("Name:              x\nState:             ACTIVE\n"));
        assert!(s.contains("Read Ahead:        256\nTables present:    LIVE & INACTIVE\n"));
        assert!(s.ends_with("Number of targets: 1\nUUID: U\n\n"));
        d.live_table = false;
        d.inactive_table = false;
        assert!(!info_long(&d, None).contains("Read Ahead"));
        assert_eq!(
            open_failed(Some("/tmp/d/"), &d),
            "/tmp/d/mapper/x: open failed: No such device or address"
        );
        assert_eq!(node_path(None, "y"), "/dev/mapper/y");
        assert_eq!(DevName::parse("b").unwrap(), DevName::Blk);
        assert_eq!(DevName::parse("devno,devna").unwrap(), DevName::Map);
        assert_eq!(DevName::parse("devno,x,y").unwrap_err(), "x,y");
        assert_eq!(DevName::Blk.ls_line(&d), "x\t(253:3)");
        let dep = Dep {
            id: "8:0".into(),
            devno: Some((8, 0)),
            dm_name: None,
        };
        assert_eq!(DevName::Map.dep(&dep, &|_, _| Some("sda".into())), "sda");
        assert_eq!(DevName::DevNo.dep(&dep, &|_, _| None), "8, 0");
        assert_eq!(
            versions(&[("linear".into(), [1, 4, 0])]),
            "linear           v1.4.0\n"
        );
    }
}
