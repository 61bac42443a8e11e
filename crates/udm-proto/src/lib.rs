//! udm-proto: the control protocol between `udm` CLI and `udm daemon` — requests that mirror
//! the dm ioctls, length-prefixed JSON frames, default socket paths and a blocking client.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub mod libdm;
mod types;
pub use types::{Dep, DevInfo, DevSel, TargetStatus};

/// Protocol version carried in every frame.
pub const PROTO_VERSION: u32 = 1;
/// Largest frame accepted (a table with many lines fits easily).
pub const MAX_FRAME: u32 = 64 << 20;

/// One table line as sent over the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub start: u64,
    pub len: u64,
    pub ttype: String,
    pub params: String,
}

/// A control request (one per dm ioctl, plus daemon queries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    Version,
    RemoveAll {
        deferred: bool,
    },
    List,
    Create {
        name: String,
        uuid: String,
    },
    Remove {
        dev: DevSel,
        deferred: bool,
    },
    Rename {
        dev: DevSel,
        new_name: String,
    },
    SetUuid {
        dev: DevSel,
        uuid: String,
    },
    Suspend {
        dev: DevSel,
        noflush: bool,
        nolockfs: bool,
    },
    Resume {
        dev: DevSel,
        noflush: bool,
        nolockfs: bool,
    },
    Info {
        dev: DevSel,
        inactive: bool,
    },
    /// Wait until the event number differs from `event_nr`; `timeout_ms` 0 = forever.
    Wait {
        dev: DevSel,
        event_nr: u32,
        inactive: bool,
        timeout_ms: u64,
    },
    Load {
        dev: DevSel,
        table: Vec<Line>,
        read_only: bool,
    },
    Clear {
        dev: DevSel,
    },
    Deps {
        dev: DevSel,
        inactive: bool,
    },
    /// Status strings (`table: false`) or table strings (`table: true`); `noflush` is passed
    /// to every target (`dmsetup status --noflush`, `DM_NOFLUSH_FLAG`).
    Status {
        dev: DevSel,
        inactive: bool,
        table: bool,
        #[serde(default)]
        noflush: bool,
    },
    ListVersions,
    /// `DM_GET_TARGET_VERSION`: one type's version, loading its module as the kernel's
    /// `request_module` does; EINVAL if there is no such type. Replies `Versions` (one entry).
    TargetVersion {
        name: String,
    },
    Message {
        dev: DevSel,
        sector: u64,
        argv: Vec<String>,
    },
    SetGeometry {
        dev: DevSel,
        cylinders: u32,
        heads: u32,
        sectors: u32,
        start: u64,
    },
    /// `SetGeometry` with the four numbers as the user typed them (the daemon parses them
    /// as the kernel does, and logs why it refuses).
    SetGeometryText {
        dev: DevSel,
        geometry: String,
    },
    /// Where the daemon exports devices.
    DaemonInfo,
    /// Store a key in the daemon's key store, for crypt tables' `:<size>:<type>:<desc>` keys
    /// (`udm key add`; the key never travels on a command line).
    KeyAdd {
        ktype: String,
        desc: String,
        key: SecretBytes,
    },
    /// Drop a key from the key store (cryptsetup unlinks a LUKS2 volume key on close).
    KeyRemove {
        ktype: String,
        desc: String,
    },
    /// The daemon's kernel-style log (`udm dmesg`); `clear` empties it after reading
    /// (`dmesg -c`).
    Dmesg {
        clear: bool,
    },
    /// Devices the daemon saved but could not restore yet, and why (`udm ls`).
    Pending,
    /// Shut the daemon down (drain and flush, as SIGTERM); refused while a device is open
    /// unless `force`.
    Stop {
        force: bool,
    },
}

/// Key material in a request: never printed (`Debug` says how long it is), wiped when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reply {
    Ok,
    Version([u32; 3]),
    Info(DevInfo),
    List(Vec<DevInfo>),
    Deps {
        info: DevInfo,
        deps: Vec<Dep>,
    },
    Status {
        info: DevInfo,
        targets: Vec<TargetStatus>,
    },
    Versions(Vec<(String, [u32; 3])>),
    Message(Option<String>),
    /// Devices still present after remove_all.
    Remaining(usize),
    /// Kernel-style log lines, oldest first.
    Dmesg(Vec<String>),
    Daemon {
        pid: u32,
        nbd_socket: Option<String>,
        nbd_tcp: Option<String>,
        fuse_dir: Option<String>,
    },
    /// Waiting devices: (name, why).
    Pending(Vec<(String, String)>),
}

/// A failure as the daemon reports it: errno, a kind word, and the kernel-style reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub errno: i32,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFrame {
    pub v: u32,
    pub req: Request,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReplyFrame {
    pub v: u32,
    pub reply: Result<Reply, RemoteError>,
}

/// Client-side failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to udm daemon at {path}: {err}")]
    Connect { path: String, err: io::Error },
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    #[error("bad frame: {0}")]
    Frame(String),
    #[error("{0}")]
    Remote(#[from] RemoteError),
    /// The daemon at the socket runs as another user (neither ours nor root): nothing was sent.
    #[error(
        "refusing to talk to the daemon at {path}: it runs as uid {uid}, not as uid {me} or root"
    )]
    NotTrusted { path: String, uid: u32, me: u32 },
    /// A request too large for one frame: nothing was sent.
    #[error("request of {len} bytes is over the control protocol's limit of {} MiB", MAX_FRAME >> 20)]
    TooLarge { len: usize },
}

impl ClientError {
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Connect { err, .. } | ClientError::Io(err) => {
                err.raw_os_error().unwrap_or(libc::EIO)
            }
            ClientError::Frame(_) => libc::EPROTO,
            ClientError::Remote(e) => e.errno,
            ClientError::NotTrusted { .. } => libc::EPERM,
            ClientError::TooLarge { .. } => libc::E2BIG,
        }
    }
}

/// The encoded length of a request's frame body (what `MAX_FRAME` limits).
pub fn request_len(req: &Request) -> usize {
    let frame = RequestFrame {
        v: PROTO_VERSION,
        req: req.clone(),
    };
    serde_json::to_vec(&frame).map(|b| b.len()).unwrap_or(0)
}

/// Write one frame: u32 big-endian length, then JSON.
pub fn write_frame<T: Serialize>(w: &mut impl Write, v: &T) -> io::Result<()> {
    let body = serde_json::to_vec(v).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes is too large", body.len()),
        ));
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    w.write_all(&out)?;
    w.flush()
}

/// Read one frame; `Ok(None)` on clean EOF before a frame.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too large"),
        ));
    }
    let mut body = vec![0; len as usize];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `strerror(3)` text for an errno, without Rust's " (os error N)" suffix (how libdm and
/// cryptsetup print a failed call).
pub fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(p) => s[..p].to_string(),
        None => s,
    }
}

/// The control socket path: `UDM_SOCKET`, else `$XDG_RUNTIME_DIR/udm/control`, else
/// `/run/udm/control` for root, else `/tmp/udm-<uid>/control` (a per-user directory the
/// daemon creates mode 0700, and refuses when another user owns it or others may write it).
pub fn default_socket() -> PathBuf {
    if let Some(p) = std::env::var_os("UDM_SOCKET").filter(|s| !s.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|s| !s.is_empty()) {
        return Path::new(&d).join("udm/control");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        PathBuf::from("/run/udm/control")
    } else {
        PathBuf::from(format!("/tmp/udm-{uid}/control"))
    }
}

/// A connection to the daemon.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connect to the daemon at `path`, and check (SO_PEERCRED) that it runs as this user or
    /// root before anything is sent: a socket another user put there never gets a request.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|err| ClientError::Connect {
            path: path.display().to_string(),
            err,
        })?;
        let uid = peer_uid(&stream).map_err(|err| ClientError::Connect {
            path: path.display().to_string(),
            err,
        })?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if uid != me && uid != 0 {
            return Err(ClientError::NotTrusted {
                path: path.display().to_string(),
                uid,
                me,
            });
        }
        Ok(Client { stream })
    }
    /// Send one request and wait for its reply.
    pub fn call(&mut self, req: Request) -> Result<Reply, ClientError> {
        let len = request_len(&req);
        if len > MAX_FRAME as usize {
            return Err(ClientError::TooLarge { len });
        }
        write_frame(
            &mut self.stream,
            &RequestFrame {
                v: PROTO_VERSION,
                req,
            },
        )?;
        let frame: ReplyFrame = read_frame(&mut self.stream)?
            .ok_or_else(|| ClientError::Frame("daemon closed the connection".into()))?;
        if frame.v != PROTO_VERSION {
            return Err(ClientError::Frame(format!(
                "protocol version {} (expected {PROTO_VERSION})",
                frame.v
            )));
        }
        Ok(frame.reply?)
    }
}

/// The uid of the process at the other end of a unix socket (SO_PEERCRED).
pub fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: ucred is plain data; getsockopt writes at most `len` bytes into it and `len`
    // is its size; the fd is valid for the borrow of `s`.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let r = libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        );
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_is_libc_text() {
        assert_eq!(strerror(libc::EINVAL), "Invalid argument");
        assert_eq!(strerror(libc::ENXIO), "No such device or address");
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let req = RequestFrame {
            v: PROTO_VERSION,
            req: Request::Info {
                dev: DevSel::Name("a".into()),
                inactive: true,
            },
        };
        write_frame(&mut buf, &req).unwrap();
        let back: RequestFrame = read_frame(&mut &buf[..]).unwrap().unwrap();
        assert_eq!(back.req, req.req);
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let huge = [0xffu8, 0xff, 0xff, 0xff];
        assert!(read_frame::<RequestFrame>(&mut &huge[..]).is_err());
        let junk = [0, 0, 0, 3, b'x', b'y', b'z'];
        assert!(read_frame::<RequestFrame>(&mut &junk[..]).is_err());
        let short = [0, 0, 0, 9, b'{'];
        assert!(read_frame::<RequestFrame>(&mut &short[..]).is_err());
        assert!(read_frame::<RequestFrame>(&mut &[][..]).unwrap().is_none());
    }
}
