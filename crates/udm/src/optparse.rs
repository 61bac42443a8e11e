//! One command-line tokenizer for the tool personalities. Two styles, as the real tools
//! parse: glibc `getopt_long` (dmsetup: permutation, `--opt=value`, bundled short options,
//! unique-prefix long options) and popt (cryptsetup, veritysetup: exact long names, one
//! short option per word with its value attached). The tokenizer yields options and
//! positional arguments in order; each tool applies them, so an option such as `--version`
//! acts before a later bad one is seen, and prints its own usage text and messages.

/// How a tool's switches are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// glibc `getopt_long`.
    Getopt,
    /// popt.
    Popt,
}

/// A tool's switches.
pub trait Spec {
    type Key: Clone;
    const STYLE: Style;
    /// A long option (name without `--`, before any `=`): its key, canonical name and
    /// whether it takes a value, or the candidate names when it is unknown or ambiguous.
    fn long(&self, name: &str) -> Result<(Self::Key, String, bool), Vec<String>>;
    /// A short option: its key, the name used in messages, and whether it takes a value.
    fn short(&self, c: char) -> Option<(Self::Key, String, bool)>;
}

/// One command-line item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<K> {
    /// A switch: its key, canonical name and value.
    Opt {
        key: K,
        name: String,
        value: Option<String>,
    },
    /// A positional argument.
    Arg(String),
}

/// A word the tokenizer cannot take; each tool words it as its original does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// `--BODY` names no option (getopt).
    Unrecognized { body: String },
    /// `--BODY` is a prefix of several options (getopt).
    Ambiguous {
        body: String,
        candidates: Vec<String>,
    },
    /// Long option `name` needs a value and none is left.
    NeedsValue { name: String },
    /// `--name=value` for a switch without a value (getopt).
    NoValueAllowed { name: String },
    /// Unknown short option `c` in the word `word`.
    UnknownShort { c: char, word: String },
    /// Short option `c` needs a value and none is left (getopt).
    ShortNeedsValue { c: char },
}

/// The tokenizer: an iterator over `args` (without the program name).
pub struct Parser<'a, S: Spec> {
    spec: &'a S,
    args: &'a [String],
    i: usize,
    /// Getopt: the rest of a bundle of short options.
    bundle: Vec<char>,
    /// After `--`: everything is positional.
    rest: bool,
}

impl<'a, S: Spec> Parser<'a, S> {
    pub fn new(spec: &'a S, args: &'a [String]) -> Self {
        Parser {
            spec,
            args,
            i: 0,
            bundle: Vec::new(),
            rest: false,
        }
    }

    /// The next word as an option value.
    fn take_next(&mut self) -> Option<String> {
        let v = self.args.get(self.i).cloned();
        if v.is_some() {
            self.i += 1;
        }
        v
    }

    fn long(&mut self, body: &str) -> Result<Item<S::Key>, ParseError> {
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let (key, name, takes) = self.spec.long(name).map_err(|c| match c.is_empty() {
            true => ParseError::Unrecognized { body: body.into() },
            false => ParseError::Ambiguous {
                body: body.into(),
                candidates: c,
            },
        })?;
        let value = match (takes, inline) {
            (true, Some(v)) => Some(v),
            (true, None) => match self.take_next() {
                Some(v) => Some(v),
                None => return Err(ParseError::NeedsValue { name }),
            },
            (false, Some(_)) if S::STYLE == Style::Getopt => {
                return Err(ParseError::NoValueAllowed { name })
            }
            (false, _) => None,
        };
        Ok(Item::Opt { key, name, value })
    }

    /// Getopt: the next short option of the current bundle.
    fn bundled(&mut self) -> Result<Item<S::Key>, ParseError> {
        let c = self.bundle.remove(0);
        let Some((key, name, takes)) = self.spec.short(c) else {
            let word = String::new();
            return Err(ParseError::UnknownShort { c, word });
        };
        if !takes {
            return Ok(Item::Opt {
                key,
                name,
                value: None,
            });
        }
        let rest: String = self.bundle.drain(..).collect();
        let value = if !rest.is_empty() {
            rest
        } else {
            self.take_next().ok_or(ParseError::ShortNeedsValue { c })?
        };
        Ok(Item::Opt {
            key,
            name,
            value: Some(value),
        })
    }

    /// Popt: `-cVALUE` or `-c [VALUE]`.
    fn popt_short(&mut self, word: &str) -> Result<Item<S::Key>, ParseError> {
        let mut chars = word[1..].chars();
        let c = chars.next().unwrap_or('?');
        let attached = chars.as_str();
        let Some((key, name, takes)) = self.spec.short(c) else {
            let word = word.to_string();
            return Err(ParseError::UnknownShort { c, word });
        };
        let value = match takes {
            false => None,
            true if !attached.is_empty() => Some(attached.to_string()),
            true => match self.take_next() {
                Some(v) => Some(v),
                None => return Err(ParseError::NeedsValue { name }),
            },
        };
        Ok(Item::Opt { key, name, value })
    }
}

impl<S: Spec> Iterator for Parser<'_, S> {
    type Item = Result<Item<S::Key>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.bundle.is_empty() {
            return Some(self.bundled());
        }
        let a = self.args.get(self.i)?.clone();
        self.i += 1;
        if self.rest {
            return Some(Ok(Item::Arg(a)));
        }
        if a == "--" {
            self.rest = true;
            return self.next();
        }
        if let Some(body) = a.strip_prefix("--") {
            return Some(self.long(body));
        }
        let short = match S::STYLE {
            Style::Getopt => a.len() > 1,
            Style::Popt => a.len() >= 2,
        };
        if short && a.starts_with('-') {
            return Some(match S::STYLE {
                Style::Getopt => {
                    self.bundle = a[1..].chars().collect();
                    self.bundled()
                }
                Style::Popt => self.popt_short(&a),
            });
        }
        Some(Ok(Item::Arg(a)))
    }
}

/// A popt tool's switches: long options are passed through by name (the tool rejects the
/// ones it does not know); `takes_value` lists those with a value; `short` maps letters to
/// long names.
pub struct PoptSpec {
    pub takes_value: &'static [&'static str],
    pub short: fn(char) -> Option<&'static str>,
}

impl Spec for PoptSpec {
    type Key = String;
    const STYLE: Style = Style::Popt;
    fn long(&self, name: &str) -> Result<(String, String, bool), Vec<String>> {
        Ok((name.into(), name.into(), self.takes_value.contains(&name)))
    }
    fn short(&self, c: char) -> Option<(String, String, bool)> {
        let l = (self.short)(c)?;
        Some((l.into(), l.into(), self.takes_value.contains(&l)))
    }
}

/// Why a popt tool stops reading its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoptStop {
    /// A word or value the tool cannot take: it prints its usage line and this message,
    /// and exits 1.
    Usage(String),
    /// An option that ends the run by itself (`--version`, `--help`), with this exit code.
    Exit(i32),
}

impl PoptSpec {
    /// Reads `args` in order and returns the positional arguments. Each option goes to
    /// `set` as it comes, with its name, its value (empty when it has none) and the
    /// positional arguments so far (a tool may add to them); the first error stops the
    /// reading.
    pub fn read<F>(&self, args: &[String], mut set: F) -> Result<Vec<String>, PoptStop>
    where
        F: FnMut(&str, String, &mut Vec<String>) -> Result<(), PoptStop>,
    {
        let mut pos = Vec::new();
        for item in Parser::new(self, args) {
            match item.map_err(|e| PoptStop::Usage(e.popt_message()))? {
                Item::Arg(a) => pos.push(a),
                Item::Opt { name, value, .. } => set(&name, value.unwrap_or_default(), &mut pos)?,
            }
        }
        Ok(pos)
    }
}

/// The value `val` of option `--name` as a number, or popt's complaint.
pub fn popt_num<T: std::str::FromStr>(name: &str, val: &str) -> Result<T, PoptStop> {
    val.parse()
        .map_err(|_| PoptStop::Usage(format!("--{name}: invalid numeric value")))
}

/// popt's complaint about a long option the tool does not know.
pub fn popt_unknown(name: &str) -> PoptStop {
    PoptStop::Usage(format!("--{name}: unknown option"))
}

impl ParseError {
    /// The message a popt tool prints under its usage line.
    pub fn popt_message(&self) -> String {
        match self {
            ParseError::UnknownShort { word, .. } => format!("{word}: unknown option"),
            ParseError::NeedsValue { name } => format!("--{name}: missing argument"),
            ParseError::Unrecognized { body } | ParseError::Ambiguous { body, .. } => {
                format!("--{body}: unknown option")
            }
            ParseError::NoValueAllowed { name } => format!("--{name}: unknown option"),
            ParseError::ShortNeedsValue { c } => format!("-{c}: missing argument"),
        }
    }

    /// glibc's diagnostic for `prog` (without the newline).
    pub fn getopt_message(&self, prog: &str) -> String {
        match self {
            ParseError::Unrecognized { body } => format!("{prog}: unrecognized option '--{body}'"),
            ParseError::Ambiguous { body, candidates } => {
                let list: Vec<String> = candidates.iter().map(|c| format!(" '--{c}'")).collect();
                format!(
                    "{prog}: option '--{body}' is ambiguous; possibilities:{}",
                    list.concat()
                )
            }
            ParseError::NeedsValue { name } => {
                format!("{prog}: option '--{name}' requires an argument")
            }
            ParseError::NoValueAllowed { name } => {
                format!("{prog}: option '--{name}' doesn't allow an argument")
            }
            ParseError::UnknownShort { c, .. } => format!("{prog}: invalid option -- '{c}'"),
            ParseError::ShortNeedsValue { c } => {
                format!("{prog}: option requires an argument -- '{c}'")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    const POPT: PoptSpec = PoptSpec {
        takes_value: &["hash", "salt"],
        short: |c| match c {
            'h' => Some("hash"),
            'v' => Some("verbose"),
            _ => None,
        },
    };

    fn popt(args: &[&str]) -> Vec<Result<Item<String>, ParseError>> {
        let a = v(args);
        Parser::new(&POPT, &a).collect()
    }

    fn opt(name: &str, value: Option<&str>) -> Result<Item<String>, ParseError> {
        Ok(Item::Opt {
            key: name.into(),
            name: name.into(),
            value: value.map(String::from),
        })
    }

    #[test]
    fn popt_values_attached_inline_or_next() {
        assert_eq!(
            popt(&[
                "-hsha1",
                "x",
                "--salt=ab",
                "--hash",
                "sha256",
                "-v",
                "--bogus=1"
            ]),
            vec![
                opt("hash", Some("sha1")),
                Ok(Item::Arg("x".into())),
                opt("salt", Some("ab")),
                opt("hash", Some("sha256")),
                opt("verbose", None),
                opt("bogus", None),
            ]
        );
        assert_eq!(popt(&["--", "-v"]), vec![Ok(Item::Arg("-v".into()))]);
        let e = popt(&["--salt"]).remove(0).unwrap_err();
        assert_eq!(e.popt_message(), "--salt: missing argument");
        let e = popt(&["-h"]).remove(0).unwrap_err();
        assert_eq!(e.popt_message(), "--hash: missing argument");
        let e = popt(&["-xyz"]).remove(0).unwrap_err();
        assert_eq!(e.popt_message(), "-xyz: unknown option");
        // "-" alone is an argument.
        assert_eq!(popt(&["-"]), vec![Ok(Item::Arg("-".into()))]);
    }

    #[test]
    fn popt_read_applies_options_in_order_and_stops_at_the_first_error() {
        let args = v(&["a", "-hsha1", "b", "--salt=x", "-v", "c"]);
        let mut seen = Vec::new();
        let pos = POPT
            .read(&args, |name, val, pos| {
                seen.push(format!("{name}={val}@{}", pos.len()));
                if name == "salt" {
                    pos.push("from-salt".into());
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(pos, ["a", "b", "from-salt", "c"]);
        assert_eq!(seen, ["hash=sha1@1", "salt=x@2", "verbose=@3"]);

        let num = |args: &[&str]| {
            POPT.read(&v(args), |name, val, _| match name {
                "hash" => popt_num::<u32>(name, &val).map(|_| ()),
                "verbose" => Err(PoptStop::Exit(0)),
                _ => Err(popt_unknown(name)),
            })
        };
        assert_eq!(num(&["--hash", "12", "x"]), Ok(vec!["x".to_string()]));
        let bad = PoptStop::Usage("--hash: invalid numeric value".into());
        assert_eq!(num(&["--hash", "z", "-v"]), Err(bad));
        assert_eq!(num(&["-v", "--bogus"]), Err(PoptStop::Exit(0)));
        let unknown = PoptStop::Usage("--bogus: unknown option".into());
        assert_eq!(num(&["--bogus", "-v"]), Err(unknown));
        let missing = PoptStop::Usage("--salt: missing argument".into());
        assert_eq!(num(&["--salt"]), Err(missing));
    }
}
