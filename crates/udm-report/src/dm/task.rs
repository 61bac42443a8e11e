//! A libdm task as dmsetup prints it: how it names its device (name, uuid or `-j/-m`, in the
//! kernel's lookup precedence) and the lines a failed ioctl leaves on stderr — libdm's own,
//! and the kernel-style reason udm adds on a terminal.

use udm_proto::{strerror, DevSel, RemoteError};

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
