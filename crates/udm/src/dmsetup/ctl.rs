//! The daemon connection as libdm's ioctl layer: one call per dm "ioctl", failures printed the
//! way libdm prints them (`device-mapper: <op> ioctl on <name> <uuid> failed: <strerror>`),
//! followed, on a terminal only, by the daemon's reason in the form the kernel logged it.

use super::mangle::Mode;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use udm_core::DM_MAJOR;
use udm_proto::{strerror, Client, ClientError, DevInfo, DevSel, RemoteError, Reply, Request};

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
}

/// A lazily opened control connection.
pub struct Ctl {
    path: PathBuf,
    client: Option<Client>,
    /// How names and uuids are sent and shown (`--manglename`).
    pub mangling: Mode,
    /// Kernel-style reasons for failures, shown after dmsetup's own lines on a terminal.
    reasons: Vec<String>,
}

impl Ctl {
    pub fn new(mangling: Mode) -> Ctl {
        Ctl {
            path: udm_proto::default_socket(),
            client: None,
            mangling,
            reasons: Vec::new(),
        }
    }

    /// Print the reasons gathered so far (only ever gathered when stderr is a terminal).
    pub fn flush_reasons(&mut self) {
        for r in std::mem::take(&mut self.reasons) {
            eprintln!("{r}");
        }
    }

    fn client(&mut self) -> &mut Client {
        if self.client.is_none() {
            match Client::connect(&self.path) {
                Ok(c) => self.client = Some(c),
                Err(e) => no_daemon(&self.path, &e),
            }
        }
        self.client.as_mut().expect("connected")
    }

    /// Send a request; transport failures end the process (there is nothing to retry).
    pub fn raw(&mut self, req: Request) -> Result<Reply, RemoteError> {
        let mode = self.mangling;
        match self.client().call(super::mangle::request(req, mode)) {
            Ok(r) => match super::mangle::reply(r, mode) {
                Ok(r) => Ok(r),
                // libdm cannot name the device: the command fails there.
                Err(msg) => {
                    let _ = std::io::stdout().flush();
                    eprintln!("{msg}");
                    eprintln!("Command failed.");
                    std::process::exit(1);
                }
            },
            Err(ClientError::Remote(e)) => Err(e),
            Err(e) => {
                let _ = std::io::stdout().flush();
                eprintln!("udm: control socket {}: {e}", self.path.display());
                std::process::exit(1);
            }
        }
    }

    /// Run an "ioctl" and print libdm's failure lines (plus the daemon's reason) on error.
    pub fn call(&mut self, op: &str, dev: &DevArg, req: Request) -> Result<Reply, RemoteError> {
        let r = self.raw(req);
        if let Err(e) = &r {
            self.report(op, dev, e, None);
        }
        r
    }

    /// Print the failure of `op` on `dev`. `minor` is the device's minor when known (for the
    /// kernel-style `table: 253:N:` reason line).
    pub fn report(&mut self, op: &str, dev: &DevArg, e: &RemoteError, minor: Option<u32>) {
        eprintln!(
            "device-mapper: {op} ioctl on {} failed: {}",
            dev.describe(),
            strerror(e.errno)
        );
        // The kernel's reason goes to its log (`udm dmesg`), never into a script's stderr;
        // a person at a terminal is spared the trip there.
        if std::io::stderr().is_terminal() {
            if let Some(line) = self.reason_line(dev, e, minor) {
                self.reasons.push(line);
            }
        }
    }

    /// The kernel log line shown on a terminal, if the reason adds anything.
    fn reason_line(&mut self, dev: &DevArg, e: &RemoteError, minor: Option<u32>) -> Option<String> {
        if e.message.is_empty() || e.message == strerror(e.errno) {
            return None;
        }
        if e.kind == "table" {
            let msg = strip_line_prefix(&e.message);
            let minor = minor.or_else(|| self.minor_of(dev));
            return Some(match minor {
                Some(m) => format!("device-mapper: table: {DM_MAJOR}:{m}: {msg}"),
                None => format!("device-mapper: table: {msg}"),
            });
        }
        Some(format!("device-mapper: ioctl: {}", e.message))
    }

    fn minor_of(&mut self, dev: &DevArg) -> Option<u32> {
        match self.raw(Request::Info {
            dev: dev.sel(),
            inactive: false,
        }) {
            Ok(Reply::Info(i)) => Some(i.minor),
            _ => None,
        }
    }

    /// All devices, sorted by name.
    pub fn list(&mut self) -> Option<Vec<DevInfo>> {
        match self.call("names", &DevArg::default(), Request::List) {
            Ok(Reply::List(l)) => Some(l),
            Ok(_) => Some(Vec::new()),
            Err(_) => None,
        }
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

fn no_daemon(path: &std::path::Path, e: &ClientError) -> ! {
    let _ = std::io::stdout().flush();
    let errno = e.errno();
    if errno == libc::ENOENT || errno == libc::ECONNREFUSED || errno == libc::ENOTDIR {
        eprintln!("udm: no udm daemon is listening on {}", path.display());
        eprintln!("udm: start one with: udm daemon   (or set UDM_SOCKET)");
    } else {
        eprintln!("udm: {e}");
    }
    std::process::exit(1);
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
        assert_eq!(
            strip_line_prefix("line 2: linear: Invalid argument count"),
            "linear: Invalid argument count"
        );
        assert_eq!(strip_line_prefix("line x: y"), "line x: y");
    }
}
