//! `NbdServer` and `ServerHandle`: listening sockets, the accept thread, per-connection
//! threads, and orderly shutdown.

use crate::handshake::{Outcome, Tls};
use crate::sock::{PeerKey, Sock};
use crate::tls::TlsServer;
use crate::{handshake, transmission, Exports};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A client must finish option haggling within this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections beyond this many are closed at once (each costs two to five threads: its
/// request threads, `transmission::MAX_WORKERS` at most, and a writer).
const MAX_CONNECTIONS: usize = 1024;
/// Connections past the handshake one client (uid of a unix peer, address of a TCP peer)
/// may hold.
const MAX_PER_PEER: usize = 256;
/// Connections one client may have in the handshake at once: a new one closes that
/// client's oldest, so idle connections never lock a well-behaved client out.
const MAX_HANDSHAKES_PER_PEER: usize = 16;
/// The send buffer asked for on established connections: a few of the largest replies.
const SEND_BUFFER: usize = 4 << 20;
/// How long shutdown lets connections finish their in-flight replies before it closes
/// their sockets outright.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An NBD server over a set of exports. Cheap: each `serve_*` call starts its own listener.
pub struct NbdServer {
    exports: Arc<dyn Exports>,
    tls: Option<Arc<TlsServer>>,
}

impl NbdServer {
    pub fn new(exports: Arc<dyn Exports>) -> NbdServer {
        NbdServer { exports, tls: None }
    }

    /// Offer TLS (NBD_OPT_STARTTLS) on the listeners started after this; with
    /// `tls.required`, clients that do not start TLS are refused (NBD_REP_ERR_TLS_REQD).
    pub fn with_tls(mut self, tls: TlsServer) -> NbdServer {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// Listen on a Unix socket at `path` (a stale socket file there is replaced).
    pub fn serve_unix(&self, path: &Path) -> io::Result<ServerHandle> {
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale_socket(path) => {
                std::fs::remove_file(path)?;
                UnixListener::bind(path)?
            }
            Err(e) => return Err(e),
        };
        listener.set_nonblocking(true)?;
        // The fd stays valid while the accept closure (which owns the listener) lives.
        let fd = listener.as_raw_fd();
        let accept = move || {
            let (s, _) = listener.accept()?;
            s.set_nonblocking(false)?;
            Ok(Sock::Unix(s))
        };
        self.start(fd, accept, None, Some(path.to_path_buf()))
    }

    /// Listen on a Unix socket at `path` that only this user (mode 0600) or, with `gid`,
    /// also that group (0660) may connect to, whatever the umask: the socket is bound under
    /// a temporary name, given its mode and group, then renamed into place. Only a stale
    /// socket at `path` is replaced.
    pub fn serve_unix_private(&self, path: &Path, gid: Option<u32>) -> io::Result<ServerHandle> {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !m.file_type().is_socket() || !is_stale_socket(path) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a stale socket", path.display()),
                ));
            }
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".new{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)?;
        let placed = (|| {
            let mode = if gid.is_some() { 0o660 } else { 0o600 };
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
            if let Some(g) = gid {
                std::os::unix::fs::chown(&tmp, None, Some(g))?;
            }
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        listener.set_nonblocking(true)?;
        let fd = listener.as_raw_fd();
        let accept = move || {
            let (s, _) = listener.accept()?;
            s.set_nonblocking(false)?;
            Ok(Sock::Unix(s))
        };
        self.start(fd, accept, None, Some(path.to_path_buf()))
    }

    /// Listen on a TCP address (port 0 picks a free port; see `ServerHandle::local_addr`).
    pub fn serve_tcp(&self, addr: SocketAddr) -> io::Result<ServerHandle> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let fd = listener.as_raw_fd();
        let accept = move || {
            let (s, _) = listener.accept()?;
            s.set_nonblocking(false)?;
            Ok(Sock::Tcp(s))
        };
        self.start(fd, accept, Some(local), None)
    }

    fn start<F>(
        &self,
        listen_fd: RawFd,
        accept: F,
        tcp: Option<SocketAddr>,
        unix: Option<PathBuf>,
    ) -> io::Result<ServerHandle>
    where
        F: FnMut() -> io::Result<Sock> + Send + 'static,
    {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        let shared = Arc::new(Shared {
            exports: self.exports.clone(),
            tls: self.tls.clone(),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(Conns {
                next: 0,
                socks: HashMap::new(),
                handshaking: Vec::new(),
            }),
            cv: Condvar::new(),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || accept_loop(sh, listen_fd, wake_rx, accept))?;
        Ok(ServerHandle {
            shared,
            wake: wake_tx,
            accept: Mutex::new(Some(thread)),
            tcp,
            unix,
        })
    }
}

/// True when `path` is a socket nobody is listening on.
fn is_stale_socket(path: &Path) -> bool {
    let is_sock = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    is_sock
        && matches!(UnixStream::connect(path), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
}

struct Conns {
    next: u64,
    /// A handle on every live connection's socket, to shut it down, its client, and whether
    /// it finished the handshake.
    socks: HashMap<u64, (Sock, PeerKey, bool)>,
    /// Connections still in the handshake, oldest first.
    handshaking: Vec<(u64, PeerKey)>,
}

impl Conns {
    /// No longer in the handshake (finished, closed, or closed to make room).
    fn handshake_done(&mut self, id: u64) {
        self.handshaking.retain(|(i, _)| *i != id);
    }
    /// The handshake finished: the connection now counts against its client's cap.
    fn established(&mut self, id: u64) {
        self.handshake_done(id);
        if let Some(c) = self.socks.get_mut(&id) {
            c.2 = true;
        }
    }
}

struct Shared {
    exports: Arc<dyn Exports>,
    tls: Option<Arc<TlsServer>>,
    stopping: AtomicBool,
    conns: Mutex<Conns>,
    cv: Condvar,
}

/// A running listener. `shutdown` (or dropping the handle) stops accepting, lets every
/// connection finish the replies for requests already in flight, and closes them.
pub struct ServerHandle {
    shared: Arc<Shared>,
    wake: UnixStream,
    accept: Mutex<Option<JoinHandle<()>>>,
    tcp: Option<SocketAddr>,
    unix: Option<PathBuf>,
}

impl ServerHandle {
    /// The bound TCP address (useful after binding port 0); `None` for Unix sockets.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The Unix socket path; `None` for TCP.
    pub fn socket_path(&self) -> Option<&Path> {
        self.unix.as_deref()
    }

    /// Number of open client connections.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().socks.len()
    }

    /// Stop accepting, stop reading new requests, wait for in-flight requests to be
    /// answered, then close every connection. Idempotent. Requests held by a device (for
    /// example while it is suspended) are waited for: connections close once they complete.
    pub fn shutdown(&self) {
        self.shutdown_with_grace(SHUTDOWN_GRACE)
    }

    /// `shutdown`, giving connections `grace` to finish before their sockets are closed
    /// under them (a client that stopped reading replies would otherwise hold things up).
    pub fn shutdown_with_grace(&self, grace: Duration) {
        let Some(thread) = self.accept.lock().take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = (&self.wake).write_all(&[1]);
        let _ = thread.join();
        if let Some(p) = &self.unix {
            let _ = std::fs::remove_file(p);
        }
        let mut conns = self.shared.conns.lock();
        for (s, _, _) in conns.socks.values() {
            let _ = s.shutdown(Shutdown::Read);
        }
        let deadline = Instant::now() + grace;
        while !conns.socks.is_empty() {
            if self.shared.cv.wait_until(&mut conns, deadline).timed_out() {
                break;
            }
        }
        // Clients that do not read their replies lose them now.
        for (s, _, _) in conns.socks.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        while !conns.socks.is_empty() {
            self.shared.cv.wait(&mut conns);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn poll_in(fds: &mut [libc::pollfd]) -> io::Result<()> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd for the whole call and
    // its length is passed alongside.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

fn accept_loop<F>(shared: Arc<Shared>, listen_fd: RawFd, wake: UnixStream, mut accept: F)
where
    F: FnMut() -> io::Result<Sock>,
{
    let mut fds = [
        libc::pollfd {
            fd: listen_fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        if let Err(e) = poll_in(&mut fds) {
            tracing::error!("nbd: poll on listener failed: {e}");
            return;
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match accept() {
            Ok(sock) => spawn_conn(&shared, sock),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!("nbd: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn spawn_conn(shared: &Arc<Shared>, sock: Sock) {
    let Ok(handle) = sock.try_clone() else { return };
    let key = sock.peer_key();
    let id = {
        let mut c = shared.conns.lock();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let same = |k: &PeerKey| *k == key;
        let waiting: Vec<u64> = (c.handshaking.iter())
            .filter(|(_, k)| same(k))
            .map(|(i, _)| *i)
            .collect();
        if waiting.len() >= MAX_HANDSHAKES_PER_PEER {
            // This client's oldest connection still in the handshake makes room.
            let oldest = waiting[0];
            if let Some((s, _, _)) = c.socks.get(&oldest) {
                let _ = s.shutdown(Shutdown::Both);
            }
            c.handshake_done(oldest);
            tracing::debug!("nbd: {key:?} has too many handshakes; closed the oldest");
        }
        if c.socks.len() >= MAX_CONNECTIONS
            || (c.socks.values())
                .filter(|(_, k, established)| *established && same(k))
                .count()
                >= MAX_PER_PEER
        {
            tracing::warn!("nbd: too many connections; refusing {}", sock.peer());
            return;
        }
        c.next += 1;
        let id = c.next;
        c.socks.insert(id, (handle, key.clone(), false));
        c.handshaking.push((id, key));
        id
    };
    let sh = shared.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("nbd-conn-{id}"))
        .spawn(move || {
            let _done = ConnDone {
                shared: sh.clone(),
                id,
            };
            if let Err(e) = connection(&sh, sock, id) {
                tracing::debug!("nbd: connection {id} ended: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("nbd: cannot start connection thread: {e}");
        remove_conn(shared, id);
    }
}

fn remove_conn(shared: &Shared, id: u64) {
    let mut c = shared.conns.lock();
    c.socks.remove(&id);
    c.handshake_done(id);
    drop(c);
    shared.cv.notify_all();
}

/// Unregisters a connection when its thread ends, even by panic.
struct ConnDone {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ConnDone {
    fn drop(&mut self) {
        remove_conn(&self.shared, self.id);
    }
}

fn connection(shared: &Shared, mut sock: Sock, id: u64) -> io::Result<()> {
    sock.tune();
    sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let peer = sock.peer();
    // The network socket (under TLS, `sock` becomes the plaintext end of the pump).
    let net = sock.try_clone()?;
    let mut reader = BufReader::with_capacity(128 << 10, sock.try_clone()?);
    let mut tls = Tls {
        offered: shared.tls.is_some(),
        required: shared.tls.as_ref().is_some_and(|t| t.required),
        ..Tls::default()
    };
    let neg = loop {
        match handshake::negotiate(&mut reader, &mut sock, &*shared.exports, tls)? {
            Outcome::Done(None) => return Ok(()),
            Outcome::Done(Some(n)) => break n,
            Outcome::StartTls { no_zeroes } => {
                let cfg = shared
                    .tls
                    .as_ref()
                    .ok_or_else(|| io::Error::other("no TLS"))?;
                if !reader.buffer().is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "client sent data before the TLS handshake",
                    ));
                }
                let plain = crate::tls::accept(sock, cfg)?;
                plain.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
                reader = BufReader::with_capacity(128 << 10, plain.try_clone()?);
                sock = plain;
                tls = Tls {
                    active: true,
                    no_zeroes,
                    ..tls
                };
            }
        }
    };
    shared.conns.lock().established(id);
    let how = if tls.active { "over TLS " } else { "" };
    tracing::info!("nbd: {peer} opened export {:?} {how}", neg.name);
    sock.set_read_timeout(None)?;
    net.set_send_buffer(SEND_BUFFER);
    let res = transmission::serve(reader, &sock, neg);
    let _ = sock.shutdown(Shutdown::Both);
    if tls.active {
        // Ends the TLS pump's receive side even if the client never closes.
        let _ = net.shutdown(Shutdown::Read);
    }
    res
}
