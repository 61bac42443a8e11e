//! The column report engine (libdm's `dm_report`): field lists with `all` groups, sort keys,
//! implicit `selected`/`help` fields, aligned/unaligned/name-prefixed/rows output, `-S` filtering.

use crate::select::Selection;

mod json;

/// Field value kinds (libdm `DM_REPORT_FIELD_TYPE_*` that dmsetup uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Num,
    Size,
}

/// One report field definition.
#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    pub ty: u32,
    pub kind: Kind,
    pub heading: &'static str,
    pub width: usize,
    pub id: &'static str,
    pub desc: &'static str,
}

/// A group of fields (`name_`, `info_`, …).
#[derive(Debug, Clone, Copy)]
pub struct TypeDef {
    pub id: u32,
    pub desc: &'static str,
    pub prefix: &'static str,
}

/// A field value: display text and sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Num(String, u64),
}

impl Value {
    pub fn text(&self) -> &str {
        match self {
            Value::Str(s) | Value::Num(s, _) => s,
        }
    }
    pub fn num(n: i64) -> Value {
        Value::Num(n.to_string(), n as u64)
    }
}

pub const SPECIAL: u32 = 0x8000_0000;
const ALL_TYPES: u32 = u32::MAX;

/// Implicit fields present in every report made with selection support.
pub const IMPLICIT: &[FieldDef] = &[
    FieldDef {
        ty: SPECIAL,
        kind: Kind::Num,
        heading: "Selected",
        width: 8,
        id: "selected",
        desc: "Set if item passes selection criteria.",
    },
    FieldDef {
        ty: SPECIAL,
        kind: Kind::Num,
        heading: "Help",
        width: 8,
        id: "help",
        desc: "Show help.",
    },
    FieldDef {
        ty: SPECIAL,
        kind: Kind::Num,
        heading: "Help",
        width: 8,
        id: "?",
        desc: "Show help.",
    },
];

/// Reference to a field: `(implicit, index)`.
pub type FieldRef = (bool, usize);

#[derive(Debug, Clone)]
struct Prop {
    field: FieldRef,
    width: usize,
    hidden: bool,
    sort_posn: Option<usize>,
    descending: bool,
}

struct Row {
    values: Vec<Value>,
    selected: bool,
}

/// Output flags (`DM_REPORT_OUTPUT_*`).
#[derive(Debug, Clone)]
pub struct Flags {
    pub aligned: bool,
    pub headings: bool,
    pub buffered: bool,
    pub prefixes: bool,
    pub quoted: bool,
    pub rows: bool,
    pub separator: String,
}

impl Default for Flags {
    fn default() -> Flags {
        Flags {
            aligned: true,
            headings: true,
            buffered: true,
            prefixes: false,
            quoted: true,
            rows: false,
            separator: " ".into(),
        }
    }
}

/// An object being reported: computes any field's value.
pub trait Obj {
    fn value(&self, f: usize) -> Value;
}

pub struct Report {
    pub fields: &'static [FieldDef],
    pub types: &'static [TypeDef],
    props: Vec<Prop>,
    keys: usize,
    rows: Vec<Row>,
    flags: Flags,
    field_prefix: &'static str,
    /// Types of all fields used (output, sort keys and selection).
    pub report_types: u32,
    selection: Option<Selection>,
    /// Help was shown instead of a report.
    pub already_reported: bool,
    headings_printed: bool,
    out: String,
}

fn canon(s: &str) -> String {
    s.chars().filter(|c| *c != '_').collect()
}

impl Report {
    /// `dm_report_init_with_selection`. Prints libdm's diagnostics on failure.
    pub fn new(
        fields: &'static [FieldDef],
        types: &'static [TypeDef],
        report_types: u32,
        options: &str,
        keys: &str,
        flags: Flags,
        selection: Option<&str>,
    ) -> Option<Report> {
        let mut flags = flags;
        if flags.rows {
            flags.buffered = true;
            flags.aligned = false;
        }
        let field_prefix = types
            .iter()
            .find(|t| t.id == report_types)
            .map(|t| t.prefix)
            .unwrap_or("");
        let mut rh = Report {
            fields,
            types,
            props: Vec::new(),
            keys: 0,
            rows: Vec::new(),
            flags,
            field_prefix,
            report_types,
            selection: None,
            already_reported: false,
            headings_printed: false,
            out: String::new(),
        };
        if !rh.parse_fields(options, true)
            || !rh.parse_keys(keys, true)
            || !rh.parse_fields(options, false)
            || !rh.parse_keys(keys, false)
        {
            return None;
        }
        if rh.props.iter().any(|p| p.field.0 && p.field.1 >= 1) {
            eprint!("{}", rh.fields_help(true, false));
            eprintln!(" ");
            rh.already_reported = true;
        }
        let Some(sel) = selection.filter(|s| !s.is_empty()) else {
            return Some(rh);
        };
        if sel.eq_ignore_ascii_case("help") || sel == "?" {
            eprint!("{}", rh.fields_help(false, true));
            eprintln!(" ");
            eprint!("{}", SELECTION_HELP);
            rh.already_reported = true;
            return Some(rh);
        }
        if sel.eq_ignore_ascii_case("all") {
            return Some(rh);
        }
        match Selection::parse(sel, &|name| rh.get_field(name)) {
            Ok(s) => {
                for f in s.fields() {
                    if !f.0 {
                        rh.report_types |= rh.fields[f.1].ty;
                    }
                }
                rh.selection = Some(s);
                Some(rh)
            }
            Err(msgs) => {
                for m in msgs {
                    eprintln!("{m}");
                }
                None
            }
        }
    }

    fn def(&self, f: FieldRef) -> &FieldDef {
        if f.0 {
            &IMPLICIT[f.1]
        } else {
            &self.fields[f.1]
        }
    }

    /// `_get_field`: implicit fields first, then the table; underscores and case ignored.
    pub fn get_field(&self, name: &str) -> Option<FieldRef> {
        if name.is_empty() {
            return None;
        }
        let want = canon(name);
        let plen = self.field_prefix.len().saturating_sub(1);
        let pfx = canon(&self.field_prefix[..plen.min(self.field_prefix.len())]);
        let same = |id: &str| {
            let id = canon(id);
            if id.eq_ignore_ascii_case(&want) {
                return true;
            }
            !self.field_prefix.is_empty()
                && id.len() >= pfx.len()
                && id[..pfx.len()].eq_ignore_ascii_case(&pfx)
                && id[pfx.len()..].eq_ignore_ascii_case(&want)
        };
        if let Some(i) = IMPLICIT.iter().position(|f| same(f.id)) {
            return Some((true, i));
        }
        self.fields
            .iter()
            .position(|f| same(f.id))
            .map(|i| (false, i))
    }

    fn all_match(&self, name: &str) -> u32 {
        let mut types = 0;
        let mut unprefixed = false;
        let mut field = canon(name);
        if name.eq_ignore_ascii_case("all") {
            if self.field_prefix.is_empty() {
                return if self.report_types != 0 {
                    self.report_types
                } else {
                    ALL_TYPES
                };
            }
            unprefixed = true;
            field = canon(self.field_prefix);
            types = self.report_types;
        }
        for t in self.types {
            let p = &t.prefix[..t.prefix.len() - 1];
            if field.len() >= p.len()
                && field[..p.len()].eq_ignore_ascii_case(p)
                && ((unprefixed && field.len() == p.len())
                    || (field.len() == p.len() + 3 && field[p.len()..].eq_ignore_ascii_case("all")))
            {
                types |= t.id;
            }
        }
        types
    }

    fn add_prop(&mut self, field: FieldRef, hidden: bool) -> usize {
        let p = Prop {
            field,
            width: self.def(field).width,
            hidden,
            sort_posn: None,
            descending: false,
        };
        if hidden {
            self.props.insert(0, p);
            0
        } else {
            self.props.push(p);
            self.props.len() - 1
        }
    }

    fn parse_fields(&mut self, format: &str, types_only: bool) -> bool {
        for word in format.split(',').filter(|w| !w.is_empty()) {
            if let Some(f) = self.get_field(word) {
                if types_only {
                    self.report_types |= self.def(f).ty;
                } else {
                    self.add_prop(f, false);
                }
                continue;
            }
            let ty = self.all_match(word);
            if ty != 0 {
                if types_only {
                    self.report_types |= ty;
                } else {
                    for i in 0..self.fields.len() {
                        if self.fields[i].ty & ty != 0 {
                            self.add_prop((false, i), false);
                        }
                    }
                }
                continue;
            }
            eprint!("{}", self.fields_help(true, false));
            eprintln!(" ");
            eprintln!("Unrecognised field: {word}");
            return false;
        }
        true
    }

    fn parse_keys(&mut self, keys: &str, types_only: bool) -> bool {
        for word in keys.split(',').filter(|w| !w.is_empty()) {
            let (desc, name) = match word.as_bytes()[0] {
                b'+' => (false, &word[1..]),
                b'-' => (true, &word[1..]),
                _ => (false, word),
            };
            if name.is_empty() {
                eprintln!("dm_report: Missing sort field name");
            } else if let Some(f) = self.get_field(name) {
                if types_only {
                    self.report_types |= self.def(f).ty;
                    continue;
                }
                let idx = match self.props.iter().position(|p| p.field == f) {
                    Some(i) => i,
                    None => self.add_prop(f, true),
                };
                let p = &mut self.props[idx];
                if p.sort_posn.is_some() {
                    eprintln!(
                        "dm_report: Ignoring duplicate sort field: {}.",
                        self.def(f).id
                    );
                    continue;
                }
                let p = &mut self.props[idx];
                p.sort_posn = Some(self.keys);
                p.descending = desc;
                self.keys += 1;
                continue;
            }
            eprint!("{}", self.fields_help(true, false));
            eprintln!(" ");
            eprintln!("dm_report: Unrecognised field: {word}");
            return false;
        }
        true
    }

    /// `_display_fields`: the field list (as `-o help` prints it).
    pub fn fields_help(&self, all_item: bool, with_types: bool) -> String {
        let id_len = self
            .fields
            .iter()
            .chain(IMPLICIT)
            .map(|f| f.id.len())
            .chain(self.types.iter().map(|t| t.prefix.len() + 3))
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        self.help_section(&mut out, self.fields, id_len, all_item, with_types);
        out.push_str(" \n");
        self.help_section(&mut out, IMPLICIT, id_len, all_item, with_types);
        out
    }

    fn help_section(
        &self,
        out: &mut String,
        fields: &[FieldDef],
        id_len: usize,
        all_item: bool,
        with_types: bool,
    ) {
        let mut last = "";
        for f in fields {
            let (desc, prefix) = if f.ty == SPECIAL {
                ("Special", "special_")
            } else {
                match self.types.iter().find(|t| t.id == f.ty) {
                    Some(t) => (t.desc, t.prefix),
                    None => continue,
                }
            };
            if desc != last {
                if !last.is_empty() {
                    out.push_str(" \n");
                }
                out.push_str(&format!("{desc} Fields\n{}\n", "-".repeat(desc.len() + 7)));
                if all_item && f.ty != SPECIAL {
                    let pad = id_len - 3 - prefix.len();
                    out.push_str(&format!(
                        "  {prefix}all{:pad$} - All fields in this section.\n",
                        ""
                    ));
                }
            }
            let ty = if with_types {
                let unsel = if f.ty == SPECIAL && f.id != "selected" {
                    "unselectable "
                } else {
                    ""
                };
                let k = match f.kind {
                    Kind::Str => "string",
                    Kind::Num => "number",
                    Kind::Size => "size",
                };
                format!(" [{unsel}{k}]")
            } else {
                String::new()
            };
            out.push_str(&format!("  {:<id_len$} - {}{ty}\n", f.id, f.desc));
            last = desc;
        }
    }

    /// True when a `selected` column is shown (rows are then kept whatever the selection).
    fn shows_selected(&self) -> bool {
        self.props.iter().any(|p| p.field == (true, 0))
    }

    /// `dm_report_object_is_selected`: evaluate the selection and (if `output`) add a row.
    pub fn object(&mut self, obj: &dyn Obj, output: bool) -> bool {
        let selected = match &self.selection {
            Some(s) => s.eval(&|f: FieldRef| {
                if f.0 {
                    Value::num(1)
                } else {
                    obj.value(f.1)
                }
            }),
            None => true,
        };
        if self.already_reported || !output {
            return selected;
        }
        if !selected && !self.shows_selected() {
            return selected;
        }
        let values = self
            .props
            .iter()
            .map(|p| match p.field {
                (true, 0) => Value::num(selected as i64),
                (true, _) => Value::Str(String::new()),
                (false, i) => obj.value(i),
            })
            .collect();
        self.rows.push(Row { values, selected });
        if !self.flags.buffered {
            self.output();
        }
        selected
    }

    /// Whether field `i` of the table is shown or sorted on.
    pub fn uses_field(&self, i: usize) -> bool {
        self.props.iter().any(|p| p.field == (false, i))
    }

    fn value_line(&self, p: &Prop, v: &Value) -> String {
        let mut s = String::new();
        let def = self.def(p.field);
        if self.flags.prefixes {
            s.push_str("DM_");
            s.push_str(&def.id.to_uppercase());
            s.push('=');
            if self.flags.quoted {
                s.push('\'');
            }
        }
        if self.flags.aligned {
            s.push_str(&pad_bytes(v.text(), p.width, def.kind != Kind::Str));
        } else {
            s.push_str(v.text());
        }
        if self.flags.prefixes && self.flags.quoted {
            s.push('\'');
        }
        s
    }

    /// `dm_report_output`: print (and drop) the buffered rows.
    pub fn output(&mut self) {
        let out = self.render();
        print!("{out}");
    }

    /// The text `output` prints.
    pub fn render(&mut self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        for row in &self.rows {
            if row.selected || self.shows_selected() {
                for (p, v) in self.props.iter_mut().zip(&row.values) {
                    p.width = p.width.max(v.text().len());
                }
            }
        }
        if self.keys > 0 {
            let mut order: Vec<(usize, bool)> = Vec::new();
            for k in 0..self.keys {
                if let Some(i) = self.props.iter().position(|p| p.sort_posn == Some(k)) {
                    order.push((i, self.props[i].descending));
                }
            }
            self.rows.sort_by(|a, b| {
                for &(i, desc) in &order {
                    let c = match (&a.values[i], &b.values[i]) {
                        (Value::Num(_, x), Value::Num(_, y)) => x.cmp(y),
                        (x, y) => x.text().cmp(y.text()),
                    };
                    if c != std::cmp::Ordering::Equal {
                        return if desc { c.reverse() } else { c };
                    }
                }
                std::cmp::Ordering::Equal
            });
        }
        let mut out = std::mem::take(&mut self.out);
        let sep = self.flags.separator.clone();
        if self.flags.rows {
            let shown: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.selected || self.shows_selected())
                .collect();
            for (i, p) in self.props.iter().enumerate() {
                if p.hidden {
                    continue;
                }
                let mut line = String::new();
                if self.flags.headings {
                    line.push_str(self.def(p.field).heading);
                    line.push_str(&sep);
                }
                let vals: Vec<String> = shown
                    .iter()
                    .map(|r| self.value_line(p, &r.values[i]))
                    .collect();
                line.push_str(&vals.join(&sep));
                out.push_str(&line);
                out.push('\n');
            }
        } else {
            if self.flags.headings && (self.flags.buffered || !self.headings_printed) {
                let hs: Vec<String> = self
                    .props
                    .iter()
                    .filter(|p| !p.hidden)
                    .map(|p| {
                        let h = self.def(p.field).heading;
                        if self.flags.aligned {
                            pad_bytes(h, p.width, false)
                        } else {
                            h.to_string()
                        }
                    })
                    .collect();
                out.push_str(&hs.join(&sep));
                out.push('\n');
                self.headings_printed = true;
            }
            for row in &self.rows {
                if !(row.selected || self.shows_selected()) {
                    continue;
                }
                let vs: Vec<String> = self
                    .props
                    .iter()
                    .zip(&row.values)
                    .filter(|(p, _)| !p.hidden)
                    .map(|(p, v)| self.value_line(p, v))
                    .collect();
                out.push_str(&vs.join(&sep));
                out.push('\n');
            }
        }
        self.rows.clear();
        let widths: Vec<usize> = self.props.iter().map(|p| self.def_width(p.field)).collect();
        for (p, w) in self.props.iter_mut().zip(widths) {
            p.width = w;
        }
        out
    }

    fn def_width(&self, f: FieldRef) -> usize {
        self.def(f).width
    }
}

pub const SELECTION_HELP: &str = include_str!("select_help_ops.txt");

#[cfg(test)]
mod tests {
    use super::*;

    static F: &[FieldDef] = &[
        FieldDef {
            ty: 1,
            kind: Kind::Str,
            heading: "Name",
            width: 6,
            id: "name",
            desc: "Name.",
        },
        FieldDef {
            ty: 1,
            kind: Kind::Num,
            heading: "Num",
            width: 3,
            id: "some_num",
            desc: "A number.",
        },
        FieldDef {
            ty: 2,
            kind: Kind::Str,
            heading: "Other",
            width: 2,
            id: "other",
            desc: "Other.",
        },
    ];
    static T: &[TypeDef] = &[
        TypeDef {
            id: 1,
            desc: "First",
            prefix: "first_",
        },
        TypeDef {
            id: 2,
            desc: "Second",
            prefix: "second_",
        },
    ];

    struct Row3(&'static str, i64, &'static str);
    impl Obj for Row3 {
        fn value(&self, f: usize) -> Value {
            match f {
                0 => Value::Str(self.0.into()),
                1 => Value::num(self.1),
                _ => Value::Str(self.2.into()),
            }
        }
    }

    fn render(opts: &str, keys: &str, flags: Flags, sel: Option<&str>) -> String {
        let mut r = Report::new(F, T, 0, opts, keys, flags, sel).expect("report");
        for row in [
            Row3("b", 7, "x"),
            Row3("a-long-name", 12345, ""),
            Row3("c", 0, "yy"),
        ] {
            r.object(&row, true);
        }
        r.render()
    }

    #[test]
    fn aligned_columns_grow_and_pad_the_last_one() {
        let out = render("name,some_num,other", "", Flags::default(), None);
        // Widths: max(minimum, longest value); headings are cut to the width ("Other" → "Ot").
        assert_eq!(
            out,
            "Name        Num   Ot\n\
             b               7 x \n\
             a-long-name 12345   \n\
             c               0 yy\n"
        );
    }

    #[test]
    fn separators_noheadings_prefixes_rows() {
        let f = Flags {
            aligned: false,
            separator: ",".into(),
            ..Flags::default()
        };
        assert_eq!(
            render("name,somenum", "", f, None),
            "Name,Num\nb,7\na-long-name,12345\nc,0\n"
        );
        let f = Flags {
            aligned: false,
            headings: false,
            separator: ":".into(),
            ..Flags::default()
        };
        assert_eq!(
            render("name,other", "", f, None),
            "b:x\na-long-name:\nc:yy\n"
        );
        let f = Flags {
            aligned: false,
            prefixes: true,
            ..Flags::default()
        };
        assert_eq!(
            render("NAME,some_num", "", f.clone(), Some("some_num>100")),
            "Name Num\nDM_NAME='a-long-name' DM_SOME_NUM='12345'\n"
        );
        let f = Flags { quoted: false, ..f };
        assert_eq!(
            render("other", "", f, Some("name=c")),
            "Other\nDM_OTHER=yy\n"
        );
        let f = Flags {
            rows: true,
            ..Flags::default()
        };
        assert_eq!(
            render("name,other", "", f, None),
            "Name b a-long-name c\nOther x  yy\n"
        );
    }

    #[test]
    fn sorting_groups_and_selected() {
        let f = Flags::default();
        assert_eq!(
            render("name", "-some_num", f.clone(), None),
            "Name       \na-long-name\nb          \nc          \n"
        );
        assert_eq!(
            render("name", "other,name", f.clone(), None),
            "Name       \na-long-name\nb          \nc          \n"
        );
        // `first_all` = every field of type 1; `+` after the prefix-less default is the caller's.
        assert_eq!(
            render("first_all", "", f.clone(), Some("name=b")),
            "Name   Num\nb        7\n"
        );
        assert_eq!(
            render("name,selected", "", f.clone(), Some("some_num<10")),
            "Name        Selected\nb                  1\na-long-name        0\nc                  1\n"
        );
        assert!(Report::new(F, T, 0, "bogus", "", f.clone(), None).is_none());
        assert!(Report::new(F, T, 0, "name", "-bogus", f, None).is_none());
    }
}

/// libdm's `%-*.*s` / `%*.*s`: cut to `w` bytes and pad with spaces to `w` bytes (so a
/// UTF-8 name takes as many columns as it has bytes, as with dmsetup).
fn pad_bytes(t: &str, w: usize, right: bool) -> String {
    let b = &t.as_bytes()[..t.len().min(w)];
    let text = String::from_utf8_lossy(b);
    let fill = " ".repeat(w - b.len());
    if right {
        format!("{fill}{text}")
    } else {
        format!("{text}{fill}")
    }
}

#[cfg(test)]
mod pad_tests {
    #[test]
    fn pads_by_bytes() {
        assert_eq!(super::pad_bytes("ñämé", 10, false), "ñämé   ");
        assert_eq!(super::pad_bytes("12", 4, true), "  12");
        assert_eq!(super::pad_bytes("Name", 2, false), "Na");
    }
}
