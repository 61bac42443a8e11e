//! The daemon connection as libdm's ioctl layer: one call per dm "ioctl", failures printed the
//! way libdm prints them (`device-mapper: <op> ioctl on <name> <uuid> failed: <strerror>`),
//! followed, on a terminal only, by the daemon's reason in the form the kernel logged it.

use super::mangle::Mode;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use udm_core::DM_MAJOR;
use udm_proto::{Client, ClientError, DevInfo, RemoteError, Reply, Request};
use udm_report::dm::task;

pub use task::DevArg;

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
        eprintln!("{}", dev.failure_line(op, e.errno));
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
        task::reason_line(e, DM_MAJOR, &mut || minor.or_else(|| self.minor_of(dev)))
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
