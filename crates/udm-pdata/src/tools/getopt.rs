//! GNU `getopt_long` as thin-provisioning-tools' commands use it: short options from an
//! option string (`"ho:V"`), long options with unique-prefix abbreviation, `--opt=value`
//! and `--opt value`, clustered short options, `-ovalue`, arguments permuted so operands
//! may come anywhere, `--` ending the options; and glibc's error messages
//! (`prog: unrecognized option '--foo'`, `prog: invalid option -- 'x'`, …). A reusable
//! parser for every tool personality.

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HasArg {
    No,
    Required,
}

/// One long option: its name, whether it takes a value, and the key reported for it.
#[derive(Debug, Clone, Copy)]
pub struct LongOpt {
    pub name: &'static str,
    pub has_arg: HasArg,
    pub key: Key,
}

/// What an option is reported as: a short option character or a numbered long-only option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Short(char),
    Long(u32),
}

/// One parsed option with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    pub key: Key,
    pub value: Option<String>,
}

/// The parse: options in order, then the operands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub opts: Vec<Opt>,
    pub operands: Vec<String>,
}

/// Parse `args` (without the program name). `Err` carries glibc's message (without the
/// newline) for the first bad option; the options before it are not returned, as a tool
/// stops at the first `?` from getopt.
pub fn getopt_long(
    prog: &str,
    args: &[String],
    short: &str,
    long: &[LongOpt],
) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            p.operands.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let o = find_long(prog, name, long)?;
            let value = match (o.has_arg, inline) {
                (HasArg::No, Some(_)) => {
                    return Err(format!(
                        "{prog}: option '--{}' doesn't allow an argument",
                        o.name
                    ))
                }
                (HasArg::No, None) => None,
                (HasArg::Required, Some(v)) => Some(v),
                (HasArg::Required, None) => {
                    let v = args.get(i).cloned().ok_or_else(|| {
                        format!("{prog}: option '--{}' requires an argument", o.name)
                    })?;
                    i += 1;
                    Some(v)
                }
            };
            p.opts.push(Opt { key: o.key, value });
            continue;
        }
        if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let Some(pos) = short.find(c).filter(|_| c != ':') else {
                    return Err(format!("{prog}: invalid option -- '{c}'"));
                };
                let takes = short[pos + c.len_utf8()..].starts_with(':');
                if !takes {
                    p.opts.push(Opt {
                        key: Key::Short(c),
                        value: None,
                    });
                    continue;
                }
                let value = if j < chars.len() {
                    chars[j..].iter().collect()
                } else {
                    let v = args
                        .get(i)
                        .cloned()
                        .ok_or_else(|| format!("{prog}: option requires an argument -- '{c}'"))?;
                    i += 1;
                    v
                };
                p.opts.push(Opt {
                    key: Key::Short(c),
                    value: Some(value),
                });
                break;
            }
            continue;
        }
        p.operands.push(a.clone());
    }
    Ok(p)
}

fn find_long<'a>(prog: &str, name: &str, long: &'a [LongOpt]) -> Result<&'a LongOpt, String> {
    if let Some(o) = long.iter().find(|o| o.name == name) {
        return Ok(o);
    }
    let cands: Vec<&LongOpt> = long.iter().filter(|o| o.name.starts_with(name)).collect();
    match cands.as_slice() {
        [] => Err(format!("{prog}: unrecognized option '--{name}'")),
        [o] => Ok(o),
        [first, rest @ ..]
            if rest
                .iter()
                .all(|o| o.has_arg == first.has_arg && o.key == first.key) =>
        {
            Ok(first)
        }
        _ => {
            let list: Vec<String> = cands.iter().map(|o| format!("'--{}'", o.name)).collect();
            Err(format!(
                "{prog}: option '--{name}' is ambiguous; possibilities: {}",
                list.join(" ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &[LongOpt] = &[
        LongOpt {
            name: "skip-mappings",
            has_arg: HasArg::No,
            key: Key::Long(2),
        },
        LongOpt {
            name: "skip-hints",
            has_arg: HasArg::No,
            key: Key::Long(3),
        },
        LongOpt {
            name: "output",
            has_arg: HasArg::Required,
            key: Key::Short('o'),
        },
    ];

    fn p(a: &[&str]) -> Result<Parsed, String> {
        let v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        getopt_long("t", &v, "qo:", LONG)
    }

    #[test]
    fn glibc_rules() {
        let r = p(&["x", "-qo", "f", "--skip-m", "--", "-q"]).unwrap();
        assert_eq!(r.operands, ["x", "-q"]);
        assert_eq!(r.opts.len(), 3);
        assert_eq!(r.opts[1].value.as_deref(), Some("f"));
        assert_eq!(r.opts[2].key, Key::Long(2));
        assert_eq!(
            p(&["-ofile"]).unwrap().opts[0].value.as_deref(),
            Some("file")
        );
        assert_eq!(p(&["--out=a"]).unwrap().opts[0].value.as_deref(), Some("a"));
        assert_eq!(p(&["--foo"]).unwrap_err(), "t: unrecognized option '--foo'");
        assert_eq!(p(&["-x"]).unwrap_err(), "t: invalid option -- 'x'");
        assert_eq!(
            p(&["-o"]).unwrap_err(),
            "t: option requires an argument -- 'o'"
        );
        assert_eq!(
            p(&["--output"]).unwrap_err(),
            "t: option '--output' requires an argument"
        );
        assert_eq!(
            p(&["--skip"]).unwrap_err(),
            "t: option '--skip' is ambiguous; possibilities: '--skip-mappings' '--skip-hints'"
        );
        assert_eq!(
            p(&["--skip-hints=1"]).unwrap_err(),
            "t: option '--skip-hints' doesn't allow an argument"
        );
        assert_eq!(p(&["-"]).unwrap().operands, ["-"]);
    }
}
