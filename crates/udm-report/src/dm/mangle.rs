//! libdm's name and uuid mangling (`--manglename auto|hex|none`, default auto): names are
//! sent to the kernel mangled (bytes outside `0-9 A-Z a-z #+-.:=@_` as `\xNN`) and shown
//! unmangled; with `none` they go and come back as they are. A kernel name that holds
//! characters needing mangling but is not mangled cannot be shown in `auto` mode (libdm
//! refuses it: "should be mangled but it contains blacklisted characters").

use udm_proto::{DevInfo, DevSel, Reply, Request};

/// `dm_string_mangling_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    None,
    Auto,
    Hex,
}

impl Mode {
    /// From `--manglename` (already validated), default auto.
    pub fn from_opt(v: Option<&str>) -> Mode {
        match v.map(str::to_ascii_lowercase).as_deref() {
            Some("none") => Mode::None,
            Some("hex") => Mode::Hex,
            _ => Mode::Auto,
        }
    }
}

const WHITELIST: &[u8] = b"#+-.:=@_";

fn whitelisted(c: u8) -> bool {
    c.is_ascii_alphanumeric() || WHITELIST.contains(&c)
}

/// `\xNN` at `b[i..]`?
fn hex_seq(b: &[u8], i: usize) -> Option<u8> {
    if b.len() >= i + 4 && b[i] == b'\\' && b[i + 1] == b'x' {
        let h = std::str::from_utf8(&b[i + 2..i + 4]).ok()?;
        return u8::from_str_radix(h, 16).ok();
    }
    None
}

/// The form a name or uuid is sent in. In `auto` mode `\xNN` sequences already there are
/// kept (a mangled name can be typed as shown by `--manglename none`).
pub fn mangle(s: &str, mode: Mode) -> String {
    if mode == Mode::None {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut o = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if mode == Mode::Auto && hex_seq(b, i).is_some() {
            o.push_str(&s[i..i + 4]);
            i += 4;
            continue;
        }
        if whitelisted(c) {
            o.push(c as char);
        } else {
            o.push_str(&format!("\\x{c:02x}"));
        }
        i += 1;
    }
    o
}

/// A kernel name or uuid `auto` mode cannot show: it holds characters that need mangling but
/// is not mangled. The message is libdm's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The {what} \"{value}\" should be mangled but it contains blacklisted characters.")]
pub struct MangleError {
    /// `name` or `UUID`.
    pub what: &'static str,
    /// The name or uuid as the kernel holds it.
    pub value: String,
}

impl MangleError {
    /// The errno libdm fails with.
    pub fn errno(&self) -> i32 {
        libc::EINVAL
    }
}

/// The form a kernel name is shown in; `Err` with libdm's message when `auto` mode finds a
/// name that should have been mangled.
pub fn unmangle(s: &str, what: &'static str, mode: Mode) -> Result<String, MangleError> {
    if mode == Mode::None {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut o = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(v) = hex_seq(b, i) {
            o.push(v);
            i += 4;
            continue;
        }
        if mode == Mode::Auto && !whitelisted(b[i]) {
            return Err(MangleError {
                what,
                value: s.to_string(),
            });
        }
        o.push(b[i]);
        i += 1;
    }
    Ok(String::from_utf8_lossy(&o).into_owned())
}

fn sel(d: DevSel, mode: Mode) -> DevSel {
    match d {
        DevSel::Name(n) => DevSel::Name(mangle(&n, mode)),
        DevSel::Uuid(u) => DevSel::Uuid(mangle(&u, mode)),
        other => other,
    }
}

/// A request with its names and uuids mangled.
pub fn request(req: Request, mode: Mode) -> Request {
    if mode == Mode::None {
        return req;
    }
    let m = |s: String| mangle(&s, mode);
    match req {
        Request::Create { name, uuid } => Request::Create {
            name: m(name),
            uuid: m(uuid),
        },
        Request::Remove { dev, deferred } => Request::Remove {
            dev: sel(dev, mode),
            deferred,
        },
        Request::Rename { dev, new_name } => Request::Rename {
            dev: sel(dev, mode),
            new_name: m(new_name),
        },
        Request::SetUuid { dev, uuid } => Request::SetUuid {
            dev: sel(dev, mode),
            uuid: m(uuid),
        },
        Request::Suspend {
            dev,
            noflush,
            nolockfs,
        } => Request::Suspend {
            dev: sel(dev, mode),
            noflush,
            nolockfs,
        },
        Request::Resume {
            dev,
            noflush,
            nolockfs,
        } => Request::Resume {
            dev: sel(dev, mode),
            noflush,
            nolockfs,
        },
        Request::Info { dev, inactive } => Request::Info {
            dev: sel(dev, mode),
            inactive,
        },
        Request::Wait {
            dev,
            event_nr,
            inactive,
            timeout_ms,
        } => Request::Wait {
            dev: sel(dev, mode),
            event_nr,
            inactive,
            timeout_ms,
        },
        Request::Load {
            dev,
            table,
            read_only,
        } => Request::Load {
            dev: sel(dev, mode),
            table,
            read_only,
        },
        Request::Clear { dev } => Request::Clear {
            dev: sel(dev, mode),
        },
        Request::Deps { dev, inactive } => Request::Deps {
            dev: sel(dev, mode),
            inactive,
        },
        Request::Status {
            dev,
            inactive,
            table,
            noflush,
        } => Request::Status {
            dev: sel(dev, mode),
            inactive,
            table,
            noflush,
        },
        Request::Message { dev, sector, argv } => Request::Message {
            dev: sel(dev, mode),
            sector,
            argv,
        },
        Request::SetGeometry {
            dev,
            cylinders,
            heads,
            sectors,
            start,
        } => Request::SetGeometry {
            dev: sel(dev, mode),
            cylinders,
            heads,
            sectors,
            start,
        },
        Request::SetGeometryText { dev, geometry } => Request::SetGeometryText {
            dev: sel(dev, mode),
            geometry,
        },
        other => other,
    }
}

fn info(i: &mut DevInfo, mode: Mode) -> Result<(), MangleError> {
    i.name = unmangle(&i.name, "name", mode)?;
    i.uuid = unmangle(&i.uuid, "UUID", mode)?;
    Ok(())
}

/// A reply with its names and uuids as libdm shows them.
pub fn reply(mut r: Reply, mode: Mode) -> Result<Reply, MangleError> {
    match &mut r {
        Reply::Info(i) => info(i, mode)?,
        Reply::List(l) => {
            for i in l.iter_mut() {
                info(i, mode)?;
            }
        }
        Reply::Deps { info: i, deps } => {
            info(i, mode)?;
            for d in deps.iter_mut() {
                if let Some(n) = &d.dm_name {
                    d.dm_name = Some(unmangle(n, "name", mode)?);
                }
            }
        }
        Reply::Status { info: i, .. } => info(i, mode)?,
        _ => {}
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_libdm() {
        // As captured in refvm (dmsetup 1.02.185): the kernel holds the mangled names.
        for (shown, kernel) in [
            ("a b", "a\\x20b"),
            ("a;b", "a\\x3bb"),
            ("a$b", "a\\x24b"),
            ("a\u{1}b", "a\\x01b"),
            ("ñämé", "\\xc3\\xb1\\xc3\\xa4m\\xc3\\xa9"),
            ("vg-lv_1.x", "vg-lv_1.x"),
        ] {
            assert_eq!(mangle(shown, Mode::Auto), kernel);
            assert_eq!(mangle(shown, Mode::Hex), kernel);
            assert_eq!(unmangle(kernel, "name", Mode::Auto).unwrap(), shown);
            assert_eq!(mangle(shown, Mode::None), shown);
            assert_eq!(unmangle(kernel, "name", Mode::None).unwrap(), kernel);
        }
        // A mangled name typed by the user stays as it is in auto mode, not in hex mode.
        assert_eq!(mangle("a\\x20b", Mode::Auto), "a\\x20b");
        assert_eq!(mangle("a\\x20b", Mode::Hex), "a\\x5cx20b");
        assert_eq!(
            unmangle("c;d", "name", Mode::Auto).unwrap_err().to_string(),
            "The name \"c;d\" should be mangled but it contains blacklisted characters."
        );
    }

    #[test]
    fn requests_and_replies_are_mangled() {
        let req = request(
            Request::Rename {
                dev: DevSel::Name("a b".into()),
                new_name: "c;d".into(),
            },
            Mode::Auto,
        );
        match req {
            Request::Rename { dev, new_name } => {
                assert_eq!(dev, DevSel::Name("a\\x20b".into()));
                assert_eq!(new_name, "c\\x3bd");
            }
            other => panic!("{other:?}"),
        }
        let dev = |name: &str| DevInfo {
            name: name.into(),
            uuid: String::new(),
            major: 253,
            minor: 0,
            open_count: 0,
            event_nr: 0,
            suspended: false,
            read_only: false,
            live_table: true,
            inactive_table: false,
            target_count: 1,
            deferred_remove: false,
            resumed: true,
        };
        match reply(Reply::List(vec![dev("a\\x20b")]), Mode::Auto).unwrap() {
            Reply::List(l) => assert_eq!(l[0].name, "a b"),
            other => panic!("{other:?}"),
        }
        let e = reply(Reply::Info(dev("a;b")), Mode::Auto).unwrap_err();
        assert_eq!((e.what, e.errno()), ("name", libc::EINVAL));
        assert!(reply(Reply::Info(dev("a;b")), Mode::None).is_ok());
    }
}
