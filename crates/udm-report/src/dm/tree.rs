//! The device dependency tree (libdm's `dm_tree` as dmsetup builds it) and `ls --tree`
//! drawing, ported from dmsetup's pstree-derived code (prefixes, compact mode, truncation).

use udm_proto::{Dep, DevInfo};

/// One tree node: a mapped device, or a device a table uses that is not one.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// `maj:min`, or the path of a file a table uses.
    pub key: String,
    /// Mapped device name; empty for other devices.
    pub name: String,
    /// `Some` for mapped devices (libdm's `info.exists`).
    pub info: Option<DevInfo>,
    /// Device number when there is one.
    pub devno: Option<(u32, u32)>,
    uses: Vec<usize>,
    used_by: Vec<usize>,
}

/// The whole tree; node 0 is the root.
#[derive(Debug, Default)]
pub struct DepTree {
    pub nodes: Vec<Node>,
}

const ROOT: usize = 0;

impl DepTree {
    /// Build the tree over all devices (`_build_whole_deptree`). Like libdm's
    /// `dm_tree_add_dev` it follows the live tables, also under `--inactive` (captured in
    /// refvm: `ls --tree --inactive` shows the live dependencies). `deps` answers a device's
    /// live-table dependencies (none when they cannot be read).
    pub fn build(devs: &[DevInfo], deps: &mut dyn FnMut(&DevInfo) -> Vec<Dep>) -> DepTree {
        let mut t = DepTree {
            nodes: vec![Node {
                key: "0:0".into(),
                ..Node::default()
            }],
        };
        for d in devs {
            t.add_dm(deps, devs, ROOT, d);
        }
        t
    }

    pub fn find(&self, key: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.key == key)
    }

    fn linked(&self, parent: usize, child: usize) -> bool {
        self.nodes[parent].uses.contains(&child)
    }

    fn link(&mut self, parent: usize, child: usize) {
        if !self.linked(parent, child) {
            self.nodes[parent].uses.push(child);
            self.nodes[child].used_by.push(parent);
        }
    }

    fn unlink(&mut self, parent: usize, child: usize) {
        self.nodes[parent].uses.retain(|&c| c != child);
        self.nodes[child].used_by.retain(|&p| p != parent);
    }

    /// `dm_tree_node_num_children`.
    pub fn num_children(&self, n: usize, inverted: bool) -> usize {
        if inverted {
            if self.linked(ROOT, n) {
                return 0;
            }
            self.nodes[n].used_by.len()
        } else {
            if self.linked(n, ROOT) {
                return 0;
            }
            self.nodes[n].uses.len()
        }
    }

    /// Children in iteration order (`dm_tree_next_child`).
    pub fn children(&self, n: usize, inverted: bool) -> &[usize] {
        if inverted {
            &self.nodes[n].used_by
        } else {
            &self.nodes[n].uses
        }
    }

    fn link_tree(&mut self, parent: usize, child: usize) {
        if parent == ROOT {
            if self.num_children(child, true) > 0 {
                return;
            }
        } else {
            self.unlink(ROOT, child);
        }
        self.link(parent, child);
    }

    fn add_dm(
        &mut self,
        get_deps: &mut dyn FnMut(&DevInfo) -> Vec<Dep>,
        devs: &[DevInfo],
        parent: usize,
        d: &DevInfo,
    ) {
        let key = format!("{}:{}", d.major, d.minor);
        if let Some(n) = self.find(&key) {
            self.link_tree(parent, n);
            return;
        }
        let deps = get_deps(d);
        self.nodes.push(Node {
            key,
            name: d.name.clone(),
            info: Some(d.clone()),
            devno: Some((d.major, d.minor)),
            ..Node::default()
        });
        let n = self.nodes.len() - 1;
        self.link_tree(parent, n);
        if deps.is_empty() {
            self.link(n, ROOT);
            return;
        }
        for dep in deps {
            let sub = dep
                .dm_name
                .as_ref()
                .and_then(|name| devs.iter().find(|x| &x.name == name));
            match sub {
                Some(sd) => self.add_dm(get_deps, devs, n, sd),
                None => self.add_other(n, &dep.id, dep.devno),
            }
        }
    }

    fn add_other(&mut self, parent: usize, key: &str, devno: Option<(u32, u32)>) {
        if let Some(c) = self.find(key) {
            self.link_tree(parent, c);
            return;
        }
        self.nodes.push(Node {
            key: key.to_string(),
            devno,
            ..Node::default()
        });
        let c = self.nodes.len() - 1;
        self.link_tree(parent, c);
        self.link(c, ROOT);
    }
}

/// `ls --tree -o …` switches.
#[derive(Debug, Clone)]
pub struct TreeOpts {
    pub device: bool,
    pub blkdevname: bool,
    pub active: bool,
    pub rw: bool,
    pub open: bool,
    pub uuid: bool,
    pub compact: bool,
    pub truncate: bool,
    pub inverted: bool,
    pub targets: bool,
    pub sym: &'static Sym,
    pub termwidth: usize,
}

/// Line-drawing symbols.
#[derive(Debug)]
pub struct Sym {
    empty_2: &'static str,
    branch_2: &'static str,
    vert_2: &'static str,
    last_2: &'static str,
    single_3: &'static str,
    first_3: &'static str,
}

pub static ASCII: Sym = Sym {
    empty_2: "  ",
    branch_2: "|-",
    vert_2: "| ",
    last_2: "`-",
    single_3: "---",
    first_3: "-+-",
};
pub static UTF: Sym = Sym {
    empty_2: "  ",
    branch_2: "\u{251c}\u{2500}",
    vert_2: "\u{2502} ",
    last_2: "\u{2514}\u{2500}",
    single_3: "\u{2500}\u{2500}\u{2500}",
    first_3: "\u{2500}\u{252c}\u{2500}",
};
pub static VT100: Sym = Sym {
    empty_2: "  ",
    branch_2: "\x1b(0\x0ftq\x1b(B",
    vert_2: "\x1b(0\x0fx\x1b(B ",
    last_2: "\x1b(0\x0fmq\x1b(B",
    single_3: "\x1b(0\x0fqqq\x1b(B",
    first_3: "\x1b(0\x0fqwq\x1b(B",
};

/// Where a tree is drawn: the locale's codeset and the terminal's width.
#[derive(Debug, Clone, Copy, Default)]
pub struct Terminal {
    /// The locale's codeset is UTF-8 (the default symbols are then box-drawing ones).
    pub utf8: bool,
    /// Columns of the terminal standard output is, if it is one.
    pub columns: Option<usize>,
}

impl TreeOpts {
    /// `_process_tree_options`; `Err` carries the unrecognised rest of the option string.
    pub fn parse(options: Option<&str>, term: Terminal) -> Result<TreeOpts, String> {
        let mut t = TreeOpts {
            device: true,
            blkdevname: false,
            active: false,
            rw: false,
            open: false,
            uuid: false,
            compact: false,
            truncate: true,
            inverted: false,
            targets: false,
            sym: if term.utf8 { &UTF } else { &ASCII },
            termwidth: 80,
        };
        let s = options.unwrap_or("");
        let mut pos = 0;
        while pos < s.len() {
            let rest = &s[pos..];
            let word = rest.split(',').next().unwrap_or("");
            let m = |name: &str| name.starts_with(word);
            if m("device") {
                t.device = true;
            } else if m("blkdevname") {
                t.blkdevname = true;
            } else if m("nodevice") {
                t.device = false;
            } else if m("status") || m("table") {
                t.targets = true;
            } else if m("active") {
                t.active = true;
            } else if m("open") {
                t.open = true;
            } else if m("uuid") {
                t.uuid = true;
            } else if m("rw") {
                t.rw = true;
            } else if m("utf") {
                t.sym = &UTF;
            } else if m("vt100") {
                t.sym = &VT100;
            } else if m("ascii") {
                t.sym = &ASCII;
            } else if m("inverted") {
                t.inverted = true;
            } else if m("compact") {
                t.compact = true;
            } else if m("notrunc") {
                t.truncate = false;
            } else {
                return Err(rest.to_string());
            }
            if word.len() == rest.len() {
                break;
            }
            pos += word.len() + 1;
        }
        if !std::ptr::eq(t.sym, &VT100) {
            if let Some(cols) = term.columns.filter(|&c| c > 3) {
                t.termwidth = cols - 3;
            }
        }
        Ok(t)
    }

    fn attrs(&self) -> bool {
        self.active || self.rw || self.open || self.uuid
    }
    fn compact_mode(&self) -> bool {
        self.compact && !self.attrs() && !self.targets
    }
}

/// The drawing state of dmsetup's tree printer.
struct Drawer<'a> {
    o: &'a TreeOpts,
    width: Vec<usize>,
    more: Vec<bool>,
    cur_x: usize,
    last_char: Option<u8>,
    out: Vec<u8>,
}

const MAX_DEPTH: usize = 100;

impl Drawer<'_> {
    fn out_char(&mut self, c: u8) {
        if c & 0xc0 != 0x80 {
            self.cur_x += 1;
        }
        if !self.o.truncate {
            self.out.push(c);
            return;
        }
        if self.cur_x <= self.o.termwidth {
            self.out.push(c);
        }
        if self.cur_x == self.o.termwidth + 1 && c & 0xc0 != 0x80 {
            if self.last_char.is_some() || c & 0x80 != 0 {
                self.out.extend_from_slice(b"...");
            } else {
                self.last_char = Some(c);
                self.cur_x -= 1;
            }
        }
    }
    fn out_str(&mut self, s: &str) {
        for b in s.bytes() {
            self.out_char(b);
        }
    }
    fn newline(&mut self) {
        if let Some(c) = self.last_char {
            if self.cur_x == self.o.termwidth {
                self.out.push(c);
            }
        }
        self.last_char = None;
        self.out.push(b'\n');
        self.cur_x = 1;
    }
    fn prefix(&mut self, depth: usize) {
        for d in 0..depth {
            for _ in 0..self.width[d] + 1 {
                self.out_char(b' ');
            }
            let s = if d == depth - 1 {
                if !self.more[depth] {
                    self.o.sym.last_2
                } else {
                    self.o.sym.branch_2
                }
            } else if self.more[d + 1] {
                self.o.sym.vert_2
            } else {
                self.o.sym.empty_2
            };
            self.out_str(s);
        }
    }

    fn node(&mut self, t: &DepTree, n: usize, depth: usize, last: bool, has_children: bool) {
        if depth + 2 > MAX_DEPTH {
            return;
        }
        let node = &t.nodes[n];
        if node.name.is_empty() && !self.o.device && !self.o.blkdevname {
            return;
        }
        self.more[depth] = !last;
        self.width[depth] = 0;
        let first_on_line = self.cur_x == 1;
        let compact = self.o.compact_mode();
        if !compact || first_on_line {
            self.prefix(depth);
        }
        let offset = self.cur_x;
        if compact && !first_on_line {
            let s = if self.more[depth] {
                self.o.sym.first_3
            } else {
                self.o.sym.single_3
            };
            self.out_str(s);
        }
        self.out_str(&node.name);
        if self.o.blkdevname {
            if let Some(b) = blk_name(node) {
                self.out_str(" <");
                self.out_str(&b);
                self.out_char(b'>');
            }
        }
        if self.o.device {
            self.out_str(" (");
            match node.devno {
                Some((a, b)) => self.out_str(&format!("{a}:{b}")),
                None => self.out_str(&node.key),
            }
            self.out_char(b')');
        }
        if self.o.attrs() {
            if let Some(info) = &node.info {
                let mut parts: Vec<String> = Vec::new();
                if self.o.active {
                    parts.push(
                        if info.suspended {
                            "SUSPENDED"
                        } else {
                            "ACTIVE"
                        }
                        .into(),
                    );
                }
                if self.o.rw {
                    parts.push(if info.read_only { "RO" } else { "RW" }.into());
                }
                if self.o.open {
                    parts.push((info.open_count.max(0) as u32).to_string());
                }
                if self.o.uuid {
                    parts.push(info.uuid.clone());
                }
                self.out_str(" [");
                self.out_str(&parts.join(", "));
                self.out_char(b']');
            }
        }
        if compact {
            self.width[depth] = self.cur_x - offset;
        }
        if !compact || !has_children {
            self.newline();
        }
    }

    fn walk(&mut self, t: &DepTree, n: usize, depth: usize) {
        let inv = self.o.inverted;
        let kids = t.children(n, inv).to_vec();
        for (i, &c) in kids.iter().enumerate() {
            let has = t.num_children(c, inv) > 0;
            self.node(t, c, depth, i + 1 == kids.len(), has);
            if has {
                self.walk(t, c, depth + 1);
            }
        }
    }
}

/// The kernel block device name of a node (`dm-N`, a sysfs name, or nothing for files).
pub fn blk_name(n: &Node) -> Option<String> {
    if let Some(i) = &n.info {
        if !super::info::has_disk(i) {
            return None;
        }
        return n.devno.map(|(_, m)| format!("dm-{m}"));
    }
    let (a, b) = n.devno?;
    sysfs_name(a, b)
}

/// `/sys/dev/block/M:m` → its kernel name.
pub fn sysfs_name(major: u32, minor: u32) -> Option<String> {
    let l = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    l.file_name().map(|s| s.to_string_lossy().into_owned())
}

/// Draw the tree as `ls --tree` does.
pub fn draw(t: &DepTree, o: &TreeOpts) -> Vec<u8> {
    let mut d = Drawer {
        o,
        width: vec![0; MAX_DEPTH + 2],
        more: vec![false; MAX_DEPTH + 2],
        cur_x: 1,
        last_char: None,
        out: Vec::new(),
    };
    d.walk(t, ROOT, 0);
    d.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, minor: u32) -> DevInfo {
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
            resumed: false,
        }
    }

    fn opts(s: &str) -> TreeOpts {
        let mut o = TreeOpts::parse(Some(s), Terminal::default()).unwrap();
        o.termwidth = 80;
        o
    }

    /// top (253:2) uses mid (253:1) uses 8:16; solo (253:0) uses nothing.
    fn sample() -> DepTree {
        let mut t = DepTree {
            nodes: vec![Node {
                key: "0:0".into(),
                ..Node::default()
            }],
        };
        let mk = |d: DevInfo| Node {
            key: format!("253:{}", d.minor),
            name: d.name.clone(),
            devno: Some((253, d.minor)),
            info: Some(d),
            ..Node::default()
        };
        t.nodes.push(mk(dev("mid", 1)));
        t.link_tree(ROOT, 1);
        t.add_other(1, "8:16", Some((8, 16)));
        t.nodes.push(mk(dev("solo", 0)));
        t.link_tree(ROOT, 3);
        t.link(3, ROOT);
        t.nodes.push(mk(dev("top", 2)));
        t.link_tree(ROOT, 4);
        t.link_tree(4, 1);
        t
    }

    #[test]
    fn ascii_tree() {
        let t = sample();
        let out = String::from_utf8(draw(&t, &opts("ascii"))).unwrap();
        assert_eq!(
            out,
            "solo (253:0)\ntop (253:2)\n `-mid (253:1)\n    `- (8:16)\n"
        );
        let out = String::from_utf8(draw(&t, &opts("ascii,inverted,nodevice"))).unwrap();
        // The nameless leaf prints nothing but its users still hang below it.
        assert_eq!(out, " `-mid\n    `-top\nsolo\n");
        let out = String::from_utf8(draw(&t, &opts("ascii,active,rw,open"))).unwrap();
        assert!(out.starts_with("solo (253:0) [ACTIVE, RW, 0]\n"), "{out}");
    }

    #[test]
    fn compact_and_truncation() {
        let t = sample();
        let out = String::from_utf8(draw(&t, &opts("ascii,compact"))).unwrap();
        assert_eq!(out, "solo (253:0)\ntop (253:2)---mid (253:1)--- (8:16)\n");
        let mut o = opts("ascii");
        o.termwidth = 8;
        let out = String::from_utf8(draw(&t, &o)).unwrap();
        assert_eq!(out.lines().next(), Some("solo (2..."));
    }

    #[test]
    fn option_prefixes() {
        let p = |s| TreeOpts::parse(Some(s), Terminal::default());
        assert!(p("nod").map(|o| !o.device).unwrap());
        assert!(p("b").unwrap().blkdevname);
        assert_eq!(p("ascii,bogus").unwrap_err(), "bogus");
        let term = Terminal {
            utf8: true,
            columns: Some(100),
        };
        let o = TreeOpts::parse(None, term).unwrap();
        assert!(std::ptr::eq(o.sym, &UTF));
        assert_eq!(o.termwidth, 97);
        let o = TreeOpts::parse(Some("vt100"), term).unwrap();
        assert_eq!(o.termwidth, 80);
    }

    #[test]
    fn built_from_deps() {
        let devs = [dev("a", 0), dev("b", 1)];
        // b uses a, a uses 8:0.
        let t = DepTree::build(&devs, &mut |d| match d.name.as_str() {
            "b" => vec![Dep {
                id: "253:0".into(),
                devno: Some((253, 0)),
                dm_name: Some("a".into()),
            }],
            _ => vec![Dep {
                id: "8:0".into(),
                devno: Some((8, 0)),
                dm_name: None,
            }],
        });
        let out = String::from_utf8(draw(&t, &opts("ascii"))).unwrap();
        assert_eq!(out, "b (253:1)\n `-a (253:0)\n    `- (8:0)\n");
        let a = t.find("253:0").unwrap();
        assert_eq!(t.num_children(a, true), 1);
    }
}
