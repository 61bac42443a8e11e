//! `-S/--select`: libdm's selection grammar (comparisons joined by `&&` `,` `||` `#`, `!`,
//! parentheses) over report fields, with a small regular-expression matcher for `=~`/`!~`.

use crate::report::{FieldRef, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Re,
    NotRe,
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
}

#[derive(Debug, Clone)]
enum Node {
    Cmp(FieldRef, Op, String),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

/// A parsed selection.
#[derive(Debug, Clone)]
pub struct Selection {
    root: Node,
}

const OPS: &[(&str, Op)] = &[
    ("=~", Op::Re),
    ("!~", Op::NotRe),
    ("=", Op::Eq),
    ("!=", Op::Ne),
    (">=", Op::Ge),
    (">", Op::Gt),
    ("<=", Op::Le),
    ("<", Op::Lt),
    ("since", Op::Ge),
    ("after", Op::Gt),
    ("until", Op::Le),
    ("before", Op::Lt),
];

struct P<'a, 'f> {
    s: &'a str,
    pos: usize,
    lookup: &'f dyn Fn(&str) -> Option<FieldRef>,
}

type PResult<T> = Result<T, Vec<String>>;

fn syntax(at: &str) -> Vec<String> {
    vec![
        format!("Selection syntax error at '{at}'."),
        "Use 'help' for selection to get more help.".into(),
    ]
}

impl<'a> P<'a, '_> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }
    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.rest().starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    fn or_ex(&mut self) -> PResult<Node> {
        let mut v = vec![self.and_ex()?];
        while self.eat("||") || self.eat("#") {
            v.push(self.and_ex()?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap()
        } else {
            Node::Or(v)
        })
    }
    fn and_ex(&mut self) -> PResult<Node> {
        let mut v = vec![self.ex()?];
        while self.eat("&&") || self.eat(",") {
            v.push(self.ex()?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap()
        } else {
            Node::And(v)
        })
    }
    fn ex(&mut self) -> PResult<Node> {
        if self.eat("!") {
            return Ok(Node::Not(Box::new(self.ex()?)));
        }
        if self.eat("(") {
            let n = self.or_ex()?;
            if !self.eat(")") {
                return Err(syntax(self.rest()));
            }
            return Ok(n);
        }
        self.cmp()
    }
    fn cmp(&mut self) -> PResult<Node> {
        self.ws();
        let r = self.rest();
        let end = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '?'))
            .unwrap_or(r.len());
        let name = &r[..end];
        if name.is_empty() {
            return Err(syntax(r));
        }
        let Some(f) = (self.lookup)(name) else {
            return Err(vec![format!("Unrecognised selection field: {name}")]);
        };
        self.pos += end;
        self.ws();
        let Some(&(t, op)) = OPS.iter().find(|(t, _)| self.rest().starts_with(t)) else {
            return Err(vec![
                format!("Unrecognised comparison operator: {}", self.rest()),
                "Use 'help' for selection to get more help.".into(),
            ]);
        };
        self.pos += t.len();
        self.ws();
        let v = self.value()?;
        Ok(Node::Cmp(f, op, v))
    }
    fn value(&mut self) -> PResult<String> {
        let r = self.rest();
        if let Some(q) = r.chars().next().filter(|c| *c == '\'' || *c == '"') {
            let Some(e) = r[1..].find(q) else {
                return Err(syntax(r));
            };
            self.pos += e + 2;
            return Ok(r[1..e + 1].to_string());
        }
        let end = r
            .find(|c: char| c.is_whitespace() || matches!(c, ',' | '#' | '&' | '|' | ')'))
            .unwrap_or(r.len());
        self.pos += end;
        Ok(r[..end].to_string())
    }
}

impl Selection {
    /// Parse a selection; `lookup` resolves field names.
    pub fn parse(
        s: &str,
        lookup: &dyn Fn(&str) -> Option<FieldRef>,
    ) -> Result<Selection, Vec<String>> {
        let mut p = P { s, pos: 0, lookup };
        let root = p.or_ex()?;
        p.ws();
        if !p.rest().is_empty() {
            let mut e = vec!["Expecting logical operator".to_string()];
            e.extend(syntax(p.rest()));
            return Err(e);
        }
        Ok(Selection { root })
    }

    /// Fields the selection refers to.
    pub fn fields(&self) -> Vec<FieldRef> {
        fn walk(n: &Node, out: &mut Vec<FieldRef>) {
            match n {
                Node::Cmp(f, _, _) => out.push(*f),
                Node::Not(x) => walk(x, out),
                Node::And(v) | Node::Or(v) => v.iter().for_each(|x| walk(x, out)),
            }
        }
        let mut v = Vec::new();
        walk(&self.root, &mut v);
        v
    }

    pub fn eval(&self, value: &dyn Fn(FieldRef) -> Value) -> bool {
        fn ev(n: &Node, value: &dyn Fn(FieldRef) -> Value) -> bool {
            match n {
                Node::Not(x) => !ev(x, value),
                Node::And(v) => v.iter().all(|x| ev(x, value)),
                Node::Or(v) => v.iter().any(|x| ev(x, value)),
                Node::Cmp(f, op, want) => {
                    let have = value(*f);
                    match op {
                        Op::Re => regex_match(want, have.text()),
                        Op::NotRe => !regex_match(want, have.text()),
                        _ => {
                            let ord = match &have {
                                Value::Num(_, n) => match want.trim().parse::<u64>() {
                                    Ok(w) => n.cmp(&w),
                                    Err(_) => return false,
                                },
                                Value::Str(s) => s.as_str().cmp(want.as_str()),
                            };
                            use std::cmp::Ordering::*;
                            match op {
                                Op::Eq => ord == Equal,
                                Op::Ne => ord != Equal,
                                Op::Ge => ord != Less,
                                Op::Gt => ord == Greater,
                                Op::Le => ord != Greater,
                                Op::Lt => ord == Less,
                                Op::Re | Op::NotRe => unreachable!(),
                            }
                        }
                    }
                }
            }
        }
        ev(&self.root, value)
    }
}

/// Unanchored search with a small POSIX-ERE subset: literals, `.`, `[...]` (ranges, `^`
/// negation), `*` `+` `?`, `^` and `$` anchors, `\` escapes and top-level `|`.
pub fn regex_match(re: &str, text: &str) -> bool {
    re.split('|').any(|alt| {
        let pat = compile(alt);
        let t: Vec<char> = text.chars().collect();
        (0..=t.len()).any(|i| matches_at(&pat, 0, &t, i, i == 0))
    })
}

#[derive(Debug, Clone)]
enum Atom {
    Start,
    End,
    Any,
    Ch(char),
    Class(bool, Vec<(char, char)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rep {
    One,
    Star,
    Plus,
    Opt,
}

fn compile(re: &str) -> Vec<(Atom, Rep)> {
    let c: Vec<char> = re.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let atom = match c[i] {
            '^' => Atom::Start,
            '$' => Atom::End,
            '.' => Atom::Any,
            '\\' if i + 1 < c.len() => {
                i += 1;
                Atom::Ch(c[i])
            }
            '[' => {
                let mut j = i + 1;
                let neg = c.get(j) == Some(&'^');
                if neg {
                    j += 1;
                }
                let mut set = Vec::new();
                let mut first = true;
                while j < c.len() && (c[j] != ']' || first) {
                    first = false;
                    if j + 2 < c.len() && c[j + 1] == '-' && c[j + 2] != ']' {
                        set.push((c[j], c[j + 2]));
                        j += 3;
                    } else {
                        set.push((c[j], c[j]));
                        j += 1;
                    }
                }
                i = j;
                Atom::Class(neg, set)
            }
            ch => Atom::Ch(ch),
        };
        i += 1;
        let rep = match c.get(i) {
            Some('*') => Rep::Star,
            Some('+') => Rep::Plus,
            Some('?') => Rep::Opt,
            _ => Rep::One,
        };
        if rep != Rep::One {
            i += 1;
        }
        out.push((atom, rep));
    }
    out
}

fn one(a: &Atom, t: &[char], i: usize) -> bool {
    let Some(&ch) = t.get(i) else { return false };
    match a {
        Atom::Any => true,
        Atom::Ch(c) => *c == ch,
        Atom::Class(neg, set) => set.iter().any(|(lo, hi)| (*lo..=*hi).contains(&ch)) != *neg,
        Atom::Start | Atom::End => false,
    }
}

fn matches_at(p: &[(Atom, Rep)], k: usize, t: &[char], i: usize, at_start: bool) -> bool {
    let Some((a, rep)) = p.get(k) else {
        return true;
    };
    match a {
        Atom::Start => return i == 0 && at_start && matches_at(p, k + 1, t, i, at_start),
        Atom::End => return i == t.len() && matches_at(p, k + 1, t, i, at_start),
        _ => {}
    }
    let (min, max) = match rep {
        Rep::One => (1, 1),
        Rep::Opt => (0, 1),
        Rep::Star => (0, usize::MAX),
        Rep::Plus => (1, usize::MAX),
    };
    let mut n = 0;
    while n < max && one(a, t, i + n) {
        n += 1;
    }
    if n < min {
        return false;
    }
    (min..=n)
        .rev()
        .any(|m| matches_at(p, k + 1, t, i + m, at_start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(n: &str) -> Option<FieldRef> {
        match n {
            "name" => Some((false, 0)),
            "minor" => Some((false, 1)),
            _ => None,
        }
    }

    fn val(f: FieldRef) -> Value {
        match f.1 {
            0 => Value::Str("vg-lv".into()),
            _ => Value::num(3),
        }
    }

    #[test]
    fn grammar() {
        let t = |s: &str| Selection::parse(s, &look).unwrap().eval(&val);
        assert!(t("name=vg-lv"));
        assert!(t("name = 'vg-lv' && minor>=3"));
        assert!(!t("name!=vg-lv || minor<3"));
        assert!(t("!(minor=4), name=~^vg"));
        assert!(t("minor=1 # minor=3"));
        assert!(Selection::parse("bogus=1", &look).is_err());
        assert!(Selection::parse("name=a b", &look).is_err());
    }

    #[test]
    fn regex_subset() {
        assert!(regex_match("^vg-", "vg-lv"));
        assert!(regex_match("l.$", "vg-lv"));
        assert!(!regex_match("^lv", "vg-lv"));
        assert!(regex_match("[0-9]+", "dm-12"));
        assert!(regex_match("x|lv", "vg-lv"));
        assert!(regex_match("a*", ""));
    }
}
