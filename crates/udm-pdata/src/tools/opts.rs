//! The option parser shared by the persistent-data tool family (`thin_*`, `cache_*`,
//! `era_*`, as thin-provisioning-tools 0.9 spells them): a tool lists its switches as
//! [`Spec`]s, [`parse`] turns argv into [`Item`]s in order (it never fails: a missing
//! value is `None`, an unknown switch an [`Item::Unknown`]), and the tool applies them,
//! answering with its own usage text through the [`Console`] helpers (`-h` prints the
//! usage to stdout and exits 0, `-V` the version, a bad switch the usage to stderr).
//!
//! A cache or era tool reuses it as:
//! ```
//! use udm_pdata::tools::opts::{parse, Arg, Item, Spec, HELP, VERSION};
//! const SPECS: &[Spec] = &[HELP, VERSION, Spec::new("output", &["-o", "--output"], Arg::Value)];
//! let args: Vec<String> = ["-o", "out.xml", "meta.img"].iter().map(|s| s.to_string()).collect();
//! let items = parse(&args, SPECS, false);
//! assert!(matches!(&items[0], Item::Opt { id: "output", value: Some(v), .. } if v == "out.xml"));
//! assert!(matches!(&items[1], Item::Positional(p) if p == "meta.img"));
//! ```

use super::Console;

/// What a switch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// Nothing.
    Flag,
    /// The next word (or, with inline parsing, `--name=value` / `-xvalue`).
    Value,
    /// The next word only when it is a number (`-m [block#]`).
    OptionalNumber,
    /// A value only when written inline (`--numeric-only=short`, `-nshort`).
    InlineOnly,
}

/// One switch of a tool.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// What the tool matches on.
    pub id: &'static str,
    /// Every spelling (`-o`, `--output`).
    pub names: &'static [&'static str],
    pub arg: Arg,
}

impl Spec {
    /// A switch.
    pub const fn new(id: &'static str, names: &'static [&'static str], arg: Arg) -> Spec {
        Spec { id, names, arg }
    }
}

/// `-h|--help`.
pub const HELP: Spec = Spec::new("help", &["-h", "--help"], Arg::Flag);
/// `-V|--version`.
pub const VERSION: Spec = Spec::new("version", &["-V", "--version"], Arg::Flag);
/// `-i|--input <file>`.
pub const INPUT: Spec = Spec::new("input", &["-i", "--input"], Arg::Value);
/// `-o|--output <file>`.
pub const OUTPUT: Spec = Spec::new("output", &["-o", "--output"], Arg::Value);
/// `-q|--quiet`.
pub const QUIET: Spec = Spec::new("quiet", &["-q", "--quiet"], Arg::Flag);

/// One command-line item, in argv order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A known switch as written (`name`) and its value, if it took one.
    Opt {
        id: &'static str,
        name: String,
        value: Option<String>,
    },
    /// A word starting with `-` that names no switch.
    Unknown(String),
    /// Anything else.
    Positional(String),
}

/// Tokenize `args` (without the program name) against `specs`. With `inline`, values may
/// be attached as `--name=value` or `-xvalue` (getopt style); without it every word
/// stands alone, as most of the tools compare them.
pub fn parse(args: &[String], specs: &[Spec], inline: bool) -> Vec<Item> {
    let find = |n: &str| specs.iter().find(|s| s.names.contains(&n));
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (name, attached) = if inline {
            match a.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
                _ if a.len() > 2 && a.starts_with('-') && !a.starts_with("--") => {
                    (&a[..2], Some(a[2..].to_string()))
                }
                _ => (a, None),
            }
        } else {
            (a, None)
        };
        match find(name) {
            Some(s) => {
                let value = match s.arg {
                    Arg::Flag => None,
                    Arg::InlineOnly => attached,
                    Arg::Value => attached.or_else(|| {
                        i += 1;
                        args.get(i).cloned()
                    }),
                    Arg::OptionalNumber => attached.or_else(|| {
                        let next = args.get(i + 1).filter(|v| v.parse::<u64>().is_ok());
                        if next.is_some() {
                            i += 1;
                        }
                        next.cloned()
                    }),
                };
                out.push(Item::Opt {
                    id: s.id,
                    name: name.to_string(),
                    value,
                });
            }
            None if a.starts_with('-') => out.push(Item::Unknown(a.to_string())),
            None => out.push(Item::Positional(a.to_string())),
        }
        i += 1;
    }
    out
}

impl Console<'_> {
    /// `-h`: the usage on stdout, exit 0.
    pub fn help(&mut self, usage: &str) -> i32 {
        let _ = write!(self.out, "{usage}");
        0
    }

    /// `-V`: the tools' version on stdout, exit 0.
    pub fn version(&mut self) -> i32 {
        let _ = writeln!(self.out, "{}", super::VERSION);
        0
    }

    /// A usage error: `msg` (when given) then the usage on stderr, exit 1.
    pub fn usage_error(&mut self, msg: Option<&str>, usage: &str) -> i32 {
        if let Some(m) = msg {
            let _ = writeln!(self.err, "{m}");
        }
        let _ = write!(self.err, "{usage}");
        1
    }

    /// An error line on stderr, exit 1.
    pub fn fail(&mut self, msg: impl std::fmt::Display) -> i32 {
        let _ = writeln!(self.err, "{msg}");
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    const SPECS: &[Spec] = &[
        HELP,
        OUTPUT,
        Spec::new("snap", &["-m", "--metadata-snap"], Arg::OptionalNumber),
        Spec::new("numeric", &["-n"], Arg::InlineOnly),
    ];

    #[test]
    fn values_optional_numbers_unknown_and_positional() {
        let items = parse(
            &v(&["-m", "x", "-m", "7", "-o", "--bogus", "-z"]),
            SPECS,
            false,
        );
        let opt = |id, name: &str, value: Option<&str>| Item::Opt {
            id,
            name: name.into(),
            value: value.map(String::from),
        };
        assert_eq!(
            items,
            vec![
                opt("snap", "-m", None),
                Item::Positional("x".into()),
                opt("snap", "-m", Some("7")),
                opt("output", "-o", Some("--bogus")),
                Item::Unknown("-z".into()),
            ]
        );
        assert_eq!(
            parse(&v(&["-o"]), SPECS, false),
            vec![opt("output", "-o", None)]
        );
    }

    #[test]
    fn inline_values() {
        let items = parse(
            &v(&["--output=a", "-ob", "-nshort", "-n", "c"]),
            SPECS,
            true,
        );
        let vals: Vec<Option<String>> = items
            .iter()
            .map(|i| match i {
                Item::Opt { value, .. } => value.clone(),
                Item::Positional(p) => Some(format!("pos {p}")),
                Item::Unknown(u) => Some(format!("unknown {u}")),
            })
            .collect();
        assert_eq!(
            vals,
            vec![
                Some("a".into()),
                Some("b".into()),
                Some("short".into()),
                None,
                Some("pos c".into())
            ]
        );
    }
}
