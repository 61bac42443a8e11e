//! A libdm task as dmsetup prints it: how it names its device (name, uuid or `-j/-m`, in the
//! kernel's lookup precedence) and the lines a failed ioctl leaves on stderr — libdm's own,
//! and the kernel-style reason udm adds on a terminal.

use std::time::Duration;
use udm_proto::{strerror, DevInfo, DevSel, RemoteError, Reply, Request};

/// The one-ioctl tasks dmsetup's `_simple` issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simple {
    Suspend,
    Resume,
    Remove,
    RemoveAll,
    Clear,
    /// Wait for an event after this event number.
    Wait(u32),
}

/// The switches a simple task passes on.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskFlags {
    pub noflush: bool,
    pub nolockfs: bool,
    pub deferred: bool,
    pub inactive: bool,
    /// `--retry`: a busy `remove` is tried again.
    pub retry: bool,
}

/// How often and how far apart libdm retries a busy `remove` with `--retry`.
pub const REMOVE_RETRIES: u32 = 25;
pub const REMOVE_RETRY_DELAY: Duration = Duration::from_millis(200);

impl Simple {
    /// libdm's name for the ioctl (in failure lines).
    pub fn op(self) -> &'static str {
        match self {
            Simple::Suspend => "suspend",
            Simple::Resume => "resume",
            Simple::Remove => "remove",
            Simple::RemoveAll => "remove_all",
            Simple::Clear => "clear",
            Simple::Wait(_) => "waitevent",
        }
    }

    /// The request for device `dev`.
    pub fn request(self, dev: DevSel, f: TaskFlags) -> Request {
        match self {
            Simple::Suspend => Request::Suspend {
                dev,
                noflush: f.noflush,
                nolockfs: f.nolockfs,
            },
            Simple::Resume => Request::Resume {
                dev,
                noflush: f.noflush,
                nolockfs: f.nolockfs,
            },
            Simple::Remove => Request::Remove {
                dev,
                deferred: f.deferred,
            },
            Simple::RemoveAll => Request::RemoveAll {
                deferred: f.deferred,
            },
            Simple::Clear => Request::Clear { dev },
            Simple::Wait(event_nr) => Request::Wait {
                dev,
                event_nr,
                inactive: f.inactive,
                timeout_ms: 0,
            },
        }
    }

    /// How many times a busy device is tried again.
    pub fn retries(self, f: TaskFlags) -> u32 {
        if self == Simple::Remove && f.retry {
            REMOVE_RETRIES
        } else {
            0
        }
    }
}

/// The device info a reply carries, if any (shown by `-v` after a task).
pub fn reply_info(r: Reply) -> Option<DevInfo> {
    match r {
        Reply::Info(i) => Some(i),
        Reply::Status { info, .. } | Reply::Deps { info, .. } => Some(info),
        _ => None,
    }
}

/// How a task names its device (what libdm put into the ioctl header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevArg {
    pub name: String,
    pub uuid: String,
    /// `-j/-m` given by the user.
    pub devno: Option<(u32, u32)>,
}

impl DevArg {
    pub fn name(n: &str) -> DevArg {
        DevArg {
            name: n.to_string(),
            ..DevArg::default()
        }
    }

    /// The kernel's lookup precedence: uuid, then name, then dev.
    pub fn sel(&self) -> DevSel {
        if !self.uuid.is_empty() {
            DevSel::Uuid(self.uuid.clone())
        } else if !self.name.is_empty() {
            DevSel::Name(self.name.clone())
        } else if let Some((a, b)) = self.devno {
            DevSel::Dev(a, b)
        } else {
            DevSel::Name(String::new())
        }
    }

    /// `<name> <uuid>[(<maj>:<min>)]` as in libdm's ioctl failure message.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.name, self.uuid);
        if let Some((a, b)) = self.devno {
            s.push_str(&format!("({a}:{b})"));
        }
        s
    }

    /// libdm's line for a failed ioctl `op` on this device.
    pub fn failure_line(&self, op: &str, errno: i32) -> String {
        format!(
            "device-mapper: {op} ioctl on {} failed: {}",
            self.describe(),
            strerror(errno)
        )
    }
}

/// "line 3: linear: ..." → "linear: ...".
fn strip_line_prefix(m: &str) -> &str {
    if let Some(rest) = m.strip_prefix("line ") {
        if let Some((num, tail)) = rest.split_once(": ") {
            if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
                return tail;
            }
        }
    }
    m
}

/// The kernel log line for a failure, if the daemon's reason adds anything to the errno's
/// text: table errors as `device-mapper: table: <maj>:<min>: <reason>` (`minor` answers the
/// device's minor when it is known), others as `device-mapper: ioctl: <reason>`.
pub fn reason_line(
    e: &RemoteError,
    dm_major: u32,
    minor: &mut dyn FnMut() -> Option<u32>,
) -> Option<String> {
    if e.message.is_empty() || e.message == strerror(e.errno) {
        return None;
    }
    if e.kind == "table" {
        let msg = strip_line_prefix(&e.message);
        return Some(match minor() {
            Some(m) => format!("device-mapper: table: {dm_major}:{m}: {msg}"),
            None => format!("device-mapper: table: {msg}"),
        });
    }
    Some(format!("device-mapper: ioctl: {}", e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_matches_libdm() {
        assert_eq!(DevArg::name("dust1").describe(), "dust1 ");
        let d = DevArg {
            name: String::new(),
            uuid: String::new(),
            devno: Some((253, 0)),
        };
        assert_eq!(d.describe(), " (253:0)");
        assert_eq!(d.sel(), DevSel::Dev(253, 0));
        assert_eq!(
            d.failure_line("info", libc::ENXIO),
            "device-mapper: info ioctl on  (253:0) failed: No such device or address"
        );
        let u = DevArg {
            uuid: "U".into(),
            ..DevArg::name("n")
        };
        assert_eq!(u.sel(), DevSel::Uuid("U".into()));
        assert_eq!(
            strip_line_prefix("line 2: linear: Invalid argument count"),
            "linear: Invalid argument count"
        );
        assert_eq!(strip_line_prefix("line x: y"), "line x: y");
    }

    #[test]
    fn simple_tasks() {
        let f = TaskFlags {
            noflush: true,
            deferred: true,
            retry: true,
            ..TaskFlags::default()
        };
        let sel = DevSel::Name("d".into());
        assert_eq!(
            Simple::Suspend.request(sel.clone(), f),
            Request::Suspend {
                dev: sel.clone(),
                noflush: true,
                nolockfs: false
            }
        );
        assert_eq!(
            Simple::Remove.request(sel.clone(), f),
            Request::Remove {
                dev: sel.clone(),
                deferred: true
            }
        );
        assert_eq!(
            Simple::Wait(3).request(sel.clone(), f),
            Request::Wait {
                dev: sel,
                event_nr: 3,
                inactive: false,
                timeout_ms: 0
            }
        );
        assert_eq!(Simple::Wait(3).op(), "waitevent");
        assert_eq!(Simple::Remove.retries(f), REMOVE_RETRIES);
        assert_eq!(Simple::Resume.retries(f), 0);
        assert_eq!(Simple::Remove.retries(TaskFlags::default()), 0);
        assert_eq!(reply_info(Reply::Version([4, 0, 0])), None);
    }

    #[test]
    fn reasons() {
        let e = |kind: &str, message: &str| RemoteError {
            errno: libc::EINVAL,
            kind: kind.into(),
            message: message.into(),
        };
        let mut asked = 0;
        let mut minor = || {
            asked += 1;
            Some(4)
        };
        assert_eq!(
            reason_line(&e("table", "line 1: zero: bad"), 253, &mut minor).as_deref(),
            Some("device-mapper: table: 253:4: zero: bad")
        );
        assert_eq!(
            reason_line(&e("table", "x"), 253, &mut || None).as_deref(),
            Some("device-mapper: table: x")
        );
        assert_eq!(
            reason_line(&e("ioctl", "busy"), 253, &mut minor).as_deref(),
            Some("device-mapper: ioctl: busy")
        );
        assert_eq!(
            reason_line(&e("table", "Invalid argument"), 253, &mut minor),
            None
        );
        assert_eq!(asked, 1);
    }
}
