//! The LVM2 text metadata grammar as a lossless tree: sections (`name { … }`), assignments
//! (`key = value`) with strings, integers, floats and arrays, comments, blank lines and
//! trailing comments. Printing a parsed document gives back the same bytes (for text
//! without indentation, as lvm2 writes it on disk; indented text prints with tabs).

use super::LvmError;
use std::fmt::Write as _;

/// Deepest section/array nesting accepted (lvm2 metadata needs 5).
pub const MAX_DEPTH: usize = 32;

/// A value on the right of `=`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    /// A number with a fractional part, kept as written.
    Float(String),
    Str(String),
    /// Elements, and how many go on each line (0: all on the `[` line).
    Array(Vec<Value>, usize),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }
    /// A one-line array of strings.
    pub fn strs<S: AsRef<str>>(v: &[S]) -> Value {
        Value::Array(v.iter().map(|s| Value::str(s.as_ref())).collect(), 0)
    }
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// The strings of an array of strings.
    pub fn as_strs(&self) -> Option<Vec<String>> {
        match self {
            Value::Array(v, _) => v.iter().map(|x| x.as_str().map(str::to_string)).collect(),
            _ => None,
        }
    }
}

/// One line-level element of a section or of the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `key = value`, with the trailing comment as written (leading whitespace and `#`).
    Pair {
        key: String,
        value: Value,
        comment: Option<String>,
    },
    Section {
        name: String,
        items: Vec<Item>,
    },
    Blank,
    /// A whole-line comment, starting with `#`.
    Comment(String),
}

impl Item {
    /// A pair without a trailing comment.
    pub fn pair(key: &str, value: Value) -> Item {
        Item::Pair {
            key: key.to_string(),
            value,
            comment: None,
        }
    }
}

/// A parsed metadata text (or a backup file): the top-level items.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    pub items: Vec<Item>,
}

/// Find the value of `key` among `items`.
pub fn get<'a>(items: &'a [Item], key: &str) -> Option<&'a Value> {
    items.iter().find_map(|i| match i {
        Item::Pair { key: k, value, .. } if k == key => Some(value),
        _ => None,
    })
}

/// Find the section `name` among `items`.
pub fn section<'a>(items: &'a [Item], name: &str) -> Option<&'a [Item]> {
    items.iter().find_map(|i| match i {
        Item::Section { name: n, items } if n == name => Some(&items[..]),
        _ => None,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
    line_start: bool,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_.+-/@:".contains(&b)
}

impl<'a> Parser<'a> {
    fn err<T>(&self, reason: impl Into<String>) -> Result<T, LvmError> {
        Err(LvmError::Parse {
            line: self.line,
            reason: reason.into(),
        })
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn skip_inline_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
    }
    /// Skip whitespace, newlines and comments (inside arrays).
    fn skip_all_ws(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r') => self.pos += 1,
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                }
                Some(b'#') => {
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }
    /// The rest of the line after an item: whitespace, maybe a comment, then `\n` or the end.
    fn end_of_line(&mut self) -> Result<Option<String>, LvmError> {
        let ws = self.pos;
        self.skip_inline_ws();
        let mut comment = None;
        if self.peek() == Some(b'#') {
            while !matches!(self.peek(), None | Some(b'\n')) {
                self.pos += 1;
            }
            comment = Some(self.text(ws, self.pos)?);
        }
        match self.peek() {
            None => {}
            Some(b'\n') => {
                self.pos += 1;
                self.line += 1;
            }
            Some(b'}') => {}
            Some(c) => return self.err(format!("unexpected {:?} after value", c as char)),
        }
        self.line_start = true;
        Ok(comment)
    }
    fn text(&self, a: usize, b: usize) -> Result<String, LvmError> {
        match std::str::from_utf8(&self.s[a..b]) {
            Ok(t) => Ok(t.to_string()),
            Err(_) => self.err("text is not UTF-8"),
        }
    }

    fn items(&mut self, depth: usize) -> Result<Vec<Item>, LvmError> {
        if depth > MAX_DEPTH {
            return self.err("sections nested too deeply");
        }
        let mut items = Vec::new();
        loop {
            self.skip_inline_ws();
            let Some(c) = self.peek() else {
                if depth > 0 {
                    return self.err("unterminated section (missing '}')");
                }
                return Ok(items);
            };
            match c {
                b'\n' => {
                    if self.line_start {
                        items.push(Item::Blank);
                    }
                    self.pos += 1;
                    self.line += 1;
                    self.line_start = true;
                }
                b'#' => {
                    let start = self.pos;
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.pos += 1;
                    }
                    items.push(Item::Comment(self.text(start, self.pos)?));
                    self.line_start = false;
                }
                b'}' => {
                    if depth == 0 {
                        return self.err("unexpected '}'");
                    }
                    self.pos += 1;
                    self.end_of_line()?;
                    return Ok(items);
                }
                c if is_ident(c) => {
                    let start = self.pos;
                    while self.peek().is_some_and(is_ident) {
                        self.pos += 1;
                    }
                    let key = self.text(start, self.pos)?;
                    self.skip_inline_ws();
                    match self.peek() {
                        Some(b'{') => {
                            self.pos += 1;
                            self.end_of_line()?;
                            let sub = self.items(depth + 1)?;
                            items.push(Item::Section {
                                name: key,
                                items: sub,
                            });
                        }
                        Some(b'=') => {
                            self.pos += 1;
                            self.skip_inline_ws();
                            let value = self.value(depth)?;
                            let comment = self.end_of_line()?;
                            items.push(Item::Pair {
                                key,
                                value,
                                comment,
                            });
                        }
                        _ => return self.err(format!("expected '=' or '{{' after {key:?}")),
                    }
                }
                c => return self.err(format!("unexpected character {:?}", c as char)),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, LvmError> {
        if depth > MAX_DEPTH {
            return self.err("arrays nested too deeply");
        }
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.peek() {
                        None => return self.err("unterminated string"),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            self.pos += 1;
                            match self.peek() {
                                None => return self.err("unterminated string"),
                                Some(c) => out.push(c),
                            }
                        }
                        Some(c) => {
                            if c == b'\n' {
                                self.line += 1;
                            }
                            out.push(c)
                        }
                    }
                    self.pos += 1;
                }
                self.pos += 1;
                match String::from_utf8(out) {
                    Ok(s) => Ok(Value::Str(s)),
                    Err(_) => self.err("string is not UTF-8"),
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut v = Vec::new();
                let mut per_line = 0;
                let mut broke_first = false;
                loop {
                    let before = self.line;
                    self.skip_all_ws();
                    if v.is_empty() && self.line > before {
                        broke_first = true;
                    }
                    if per_line == 0 && broke_first && !v.is_empty() && self.line > before {
                        per_line = v.len();
                    }
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        break;
                    }
                    v.push(self.value(depth + 1)?);
                    self.skip_all_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {}
                        None => return self.err("unterminated array"),
                        Some(c) => return self.err(format!("unexpected {:?} in array", c as char)),
                    }
                }
                if broke_first && per_line == 0 {
                    per_line = v.len().max(1);
                }
                Ok(Value::Array(v, per_line))
            }
            Some(c) if c == b'-' || c == b'+' || c.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'.') {
                    self.pos += 1;
                }
                let t = self.text(start, self.pos)?;
                if t.contains('.') {
                    if t.parse::<f64>().is_err() {
                        return self.err(format!("bad number {t:?}"));
                    }
                    return Ok(Value::Float(t));
                }
                match t.parse::<i64>() {
                    Ok(i) => Ok(Value::Int(i)),
                    Err(_) => self.err(format!("bad integer {t:?}")),
                }
            }
            _ => self.err("expected a value"),
        }
    }
}

impl Document {
    /// Parse metadata text. A trailing NUL (as stored in a metadata area) ends the text.
    pub fn parse(text: &[u8]) -> Result<Document, LvmError> {
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        let mut p = Parser {
            s: &text[..end],
            pos: 0,
            line: 1,
            line_start: true,
        };
        Ok(Document { items: p.items(0)? })
    }

    /// Print the document; `indent` puts one tab per nesting level (backup-file style).
    pub fn print(&self, indent: bool) -> String {
        let mut out = String::new();
        print_items(&self.items, 0, indent, &mut out);
        out
    }
}

fn tabs(out: &mut String, depth: usize, indent: bool) {
    if indent {
        for _ in 0..depth {
            out.push('\t');
        }
    }
}

fn print_items(items: &[Item], depth: usize, indent: bool, out: &mut String) {
    for it in items {
        match it {
            Item::Pair {
                key,
                value,
                comment,
            } => {
                tabs(out, depth, indent);
                let _ = write!(out, "{key} = ");
                print_value(value, depth, indent, out);
                if let Some(c) = comment {
                    out.push_str(c);
                }
                out.push('\n');
            }
            Item::Section { name, items } => {
                tabs(out, depth, indent);
                let _ = writeln!(out, "{name} {{");
                print_items(items, depth + 1, indent, out);
                tabs(out, depth, indent);
                out.push_str("}\n");
            }
            Item::Blank => out.push('\n'),
            Item::Comment(c) => {
                tabs(out, depth, indent);
                out.push_str(c);
                out.push('\n');
            }
        }
    }
}

fn print_value(v: &Value, depth: usize, indent: bool, out: &mut String) {
    match v {
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(f),
        Value::Str(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Value::Array(items, 0) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                print_value(x, depth, indent, out);
            }
            out.push(']');
        }
        Value::Array(items, per_line) => {
            out.push_str("[\n");
            let n = items.len();
            for (i, x) in items.iter().enumerate() {
                if i % per_line == 0 {
                    tabs(out, depth + 1, indent);
                }
                print_value(x, depth + 1, indent, out);
                if i + 1 < n {
                    out.push(',');
                    out.push(if (i + 1) % per_line == 0 { '\n' } else { ' ' });
                }
            }
            out.push('\n');
            tabs(out, depth, indent);
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_lvm2_layout() {
        let t = "vg {\nid = \"a\\\"b\"\nseqno = 3\n\nflags = []\nx = 1.5\nstripes = [\n\"pv0\", 0,\n\"pv1\", 0\n]\nsub {\n}\n}\n# Generated\n\nhost = \"vm\"\t# Linux\n\n";
        let d = Document::parse(t.as_bytes()).unwrap();
        assert_eq!(d.print(false), t);
        let vg = section(&d.items, "vg").unwrap();
        assert_eq!(get(vg, "id").unwrap().as_str(), Some("a\"b"));
        assert_eq!(get(vg, "seqno").unwrap().as_int(), Some(3));
        assert_eq!(
            get(vg, "stripes"),
            Some(&Value::Array(
                vec![
                    Value::str("pv0"),
                    Value::Int(0),
                    Value::str("pv1"),
                    Value::Int(0)
                ],
                2
            ))
        );
        let indented = d.print(true);
        assert!(indented.contains("\tseqno = 3\n"));
        assert!(indented.contains("\tstripes = [\n\t\t\"pv0\", 0,\n\t\t\"pv1\", 0\n\t]\n"));
        assert_eq!(Document::parse(indented.as_bytes()).unwrap(), d);
    }

    #[test]
    fn errors_name_the_line() {
        let e = Document::parse(b"vg {\nid = \n}").unwrap_err();
        assert!(matches!(e, LvmError::Parse { line: 2, .. }), "{e}");
        assert!(Document::parse(b"vg {\n").is_err());
        assert!(Document::parse(b"}").is_err());
        assert!(Document::parse(b"a = \"x").is_err());
        assert!(Document::parse("a = [".repeat(100).as_bytes()).is_err());
    }
}
