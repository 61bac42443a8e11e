//! dmsetup's table text and names: table lines as `_parse_line` reads them from a file,
//! `--table` or stdin, the `create --concise` device list, and the name/uuid checks made
//! before a device is created or renamed.

use udm_proto::Line;

/// The kernel's `DM_NAME_LEN`: a name holds at most 127 bytes.
pub const DM_NAME_LEN: usize = 128;
/// The kernel's `DM_UUID_LEN`.
pub const DM_UUID_LEN: usize = 129;
/// The longest target type name (`DM_MAX_TYPE_NAME`, with its NUL).
const DM_MAX_TYPE_NAME: usize = 16;

/// A table text, concise spec or name dmsetup refuses. Messages are dmsetup's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    #[error("Invalid format on line {line} of table {file}.")]
    Format { line: usize, file: String },
    #[error("Target type name {0} is too long.")]
    TypeTooLong(String),
    #[error("Name \"{0}\" invalid. It contains \"/\".")]
    NameSlash(String),
    #[error("Name \"{0}\" too long.")]
    NameTooLong(String),
    /// (`rename` says it without the full stop.)
    #[error("Name \"{0}\" too long")]
    NewNameTooLong(String),
    #[error("Non empty new name is required.")]
    NewNameEmpty,
    #[error("New uuid \"{0}\" too long.")]
    NewUuidTooLong(String),
    #[error("Backslash must be followed by another character at end of string.\n{0}")]
    ConciseBackslash(String),
    #[error("Five comma-separated fields are required for each device\n{0}")]
    ConciseFields(String),
    #[error("Invalid flags parameter '{0}' must be 'ro' or 'rw' or empty.")]
    ConciseFlags(String),
    #[error("Incomplete entry: five comma-separated fields are required for each device\n{0}")]
    ConciseIncomplete(String),
}

impl TableError {
    /// The errno libdm fails with.
    pub fn errno(&self) -> i32 {
        libc::EINVAL
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// `%llu` as sscanf reads it: optional space and sign, decimal digits (wrapping like strtoull).
fn scan_u64(s: &str) -> Option<(u64, &str)> {
    let t = s.trim_start_matches(is_space);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if end == 0 {
        return None;
    }
    let v = t[..end].parse::<u64>().unwrap_or(u64::MAX);
    Some((if neg { v.wrapping_neg() } else { v }, &t[end..]))
}

/// `_parse_line`: one table line (`None` for a blank or comment line). `file` and `line`
/// name it in the error.
///
/// Backslashes pass through unchanged to the daemon, which splits params as the kernel's
/// `dm_split_args` does, so `\ ` keeps a space inside a device path and `\\` is a backslash.
/// (libdm instead doubles every backslash before its ioctl: with the real dmsetup a backslash
/// is always literal and no table word can hold a space.)
pub fn parse_line(buf: &str, file: &str, line: usize) -> Result<Option<Line>, TableError> {
    let p = buf.trim_matches(is_space);
    if p.is_empty() || p.starts_with('#') {
        return Ok(None);
    }
    let parsed = scan_u64(p).and_then(|(start, r)| {
        let (len, r) = scan_u64(r)?;
        let r = r.trim_start_matches(is_space);
        let end = r.find(is_space).unwrap_or(r.len());
        if end == 0 {
            return None;
        }
        Some((start, len, &r[..end], r[end..].trim_start_matches(is_space)))
    });
    let Some((start, len, ttype, params)) = parsed else {
        return Err(TableError::Format {
            line,
            file: file.to_string(),
        });
    };
    let params = params.split('#').next().unwrap_or("");
    if ttype.len() >= DM_MAX_TYPE_NAME {
        return Err(TableError::TypeTooLong(ttype.to_string()));
    }
    Ok(Some(Line {
        start,
        len,
        ttype: ttype.to_string(),
        params: params.to_string(),
    }))
}

/// `_parse_file`: every line of a table text (`file` names it in errors: the path, `on
/// stdin`, or empty for `--table`).
pub fn parse_table(text: &str, file: &str) -> Result<Vec<Line>, TableError> {
    let mut out = Vec::new();
    for (i, l) in text.split('\n').enumerate() {
        if let Some(line) = parse_line(l, file, i + 1)? {
            out.push(line);
        }
    }
    Ok(out)
}

/// A name `create` accepts.
pub fn check_name(name: &str) -> Result<(), TableError> {
    if name.contains('/') {
        return Err(TableError::NameSlash(name.to_string()));
    }
    if name.len() >= DM_NAME_LEN {
        return Err(TableError::NameTooLong(name.to_string()));
    }
    Ok(())
}

/// A new name `rename` accepts.
pub fn check_new_name(name: &str) -> Result<(), TableError> {
    if name.contains('/') {
        return Err(TableError::NameSlash(name.to_string()));
    }
    if name.len() >= DM_NAME_LEN {
        return Err(TableError::NewNameTooLong(name.to_string()));
    }
    if name.is_empty() {
        return Err(TableError::NewNameEmpty);
    }
    Ok(())
}

/// A new uuid `rename --setuuid` accepts.
pub fn check_new_uuid(uuid: &str) -> Result<(), TableError> {
    if uuid.len() >= DM_UUID_LEN {
        return Err(TableError::NewUuidTooLong(uuid.to_string()));
    }
    Ok(())
}

/// One device of a `create --concise` spec: `name,uuid,minor,flags,table`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConciseDev {
    pub name: String,
    pub uuid: String,
    pub minor: String,
    pub read_only: bool,
    /// The table, its lines separated by `\n` (the spec separates them with `,`).
    pub table: String,
}

fn parsed_msg(f: &[String]) -> String {
    let g = |i: usize| f.get(i).map(|s| s.as_str()).unwrap_or("(null)");
    format!(
        "Parsed {} fields: name: {} uuid: {} minor: {} flags: {} table: {}",
        f.len(),
        g(0),
        g(1),
        g(2),
        g(3),
        g(4)
    )
}

/// A `create --concise` spec: devices separated by `;`, five comma-separated fields each,
/// `\` escaping the next character. dmsetup creates each device as soon as it is parsed, so
/// the devices before a bad one come back with the error.
pub fn parse_concise(spec: &str) -> (Vec<ConciseDev>, Option<TableError>) {
    let c: Vec<char> = spec.chars().collect();
    let mut devs = Vec::new();
    let mut fields: Vec<String> = vec![String::new()];
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let cur = fields.len() - 1;
        if ch == '\\' {
            i += 1;
            if i >= c.len() {
                return (
                    devs,
                    Some(TableError::ConciseBackslash(parsed_msg(&fields))),
                );
            }
            fields[cur].push(c[i]);
            i += 1;
            continue;
        }
        if ch == ',' && fields.len() < 5 {
            fields.push(String::new());
            i += 1;
            while i < c.len() && c[i].is_whitespace() {
                i += 1;
            }
            continue;
        }
        if ch == ',' {
            fields[cur].push('\n');
            i += 1;
            continue;
        }
        if ch == ';' || i + 1 == c.len() {
            if ch != ';' {
                fields[cur].push(ch);
            }
            i += 1;
            if fields.len() != 5 {
                return (devs, Some(TableError::ConciseFields(parsed_msg(&fields))));
            }
            let flags = fields[3].as_str();
            if !flags.is_empty() && flags != "ro" && flags != "rw" {
                return (devs, Some(TableError::ConciseFlags(flags.to_string())));
            }
            let f = std::mem::replace(&mut fields, vec![String::new()]);
            let [name, uuid, minor, flags, table]: [String; 5] = f.try_into().unwrap_or_default();
            devs.push(ConciseDev {
                name,
                uuid,
                minor,
                read_only: flags == "ro",
                table,
            });
            while i < c.len() && c[i].is_whitespace() {
                i += 1;
            }
            continue;
        }
        fields[cur].push(ch);
        i += 1;
    }
    if fields.len() > 1 || !fields[0].is_empty() {
        return (
            devs,
            Some(TableError::ConciseIncomplete(parsed_msg(&fields))),
        );
    }
    (devs, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Option<Line> {
        parse_line(s, "", 1).unwrap()
    }

    #[test]
    fn table_lines() {
        let l = one("  0 2048 linear /dev/vda 0  # comment\n").unwrap();
        assert_eq!((l.start, l.len, l.ttype.as_str()), (0, 2048, "linear"));
        assert_eq!(l.params, "/dev/vda 0  ");
        let l = one("0 8 error").unwrap();
        assert_eq!(l.params, "");
        assert!(one("# just a comment").is_none());
        assert!(one("   ").is_none());
        assert_eq!(
            parse_line("x 8 zero", "t", 3).unwrap_err().to_string(),
            "Invalid format on line 3 of table t."
        );
        assert!(parse_line("0 8", "", 1).is_err());
        assert_eq!(
            parse_line("0 8 abcdefghijklmnop", "", 1).unwrap_err(),
            TableError::TypeTooLong("abcdefghijklmnop".into())
        );
        let t = parse_table("0 8 zero\n\n# c\n8 8 error\n", "on stdin").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].start, 8);
        assert_eq!(
            parse_table("0 8 zero\n8\n", "f").unwrap_err().to_string(),
            "Invalid format on line 2 of table f."
        );
    }

    #[test]
    fn names() {
        assert!(check_name("a").is_ok());
        assert_eq!(
            check_name("a/b").unwrap_err().to_string(),
            "Name \"a/b\" invalid. It contains \"/\"."
        );
        let long = "x".repeat(128);
        assert!(check_name(&long[..127]).is_ok());
        assert_eq!(
            check_new_name(&long).unwrap_err().to_string(),
            format!("Name \"{long}\" too long")
        );
        assert_eq!(check_new_name("").unwrap_err(), TableError::NewNameEmpty);
        assert!(check_new_uuid(&"u".repeat(128)).is_ok());
        assert!(check_new_uuid(&"u".repeat(129)).is_err());
    }

    #[test]
    fn concise_specs() {
        let (d, e) = parse_concise("a,U,,ro,0 8 zero,8 8 error;b\\,c,,3,rw,0 1 zero");
        assert_eq!(e, None);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].table, "0 8 zero\n8 8 error");
        assert!(d[0].read_only);
        assert_eq!((d[1].name.as_str(), d[1].minor.as_str()), ("b,c", "3"));
        let (d, e) = parse_concise("a,,,,0 8 zero;b,,x");
        assert_eq!(d.len(), 1);
        assert_eq!(
            e.unwrap().to_string(),
            "Five comma-separated fields are required for each device\n\
             Parsed 3 fields: name: b uuid:  minor: x flags: (null) table: (null)"
        );
        let (_, e) = parse_concise("a,,,xx,0 8 zero");
        assert_eq!(e, Some(TableError::ConciseFlags("xx".into())));
        let (_, e) = parse_concise("a\\");
        assert!(matches!(e, Some(TableError::ConciseBackslash(_))));
        let (d, e) = parse_concise("");
        assert!(d.is_empty() && e.is_none());
    }
}
