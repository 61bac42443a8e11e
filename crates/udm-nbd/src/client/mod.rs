//! `NbdClient`: a small NBD client (fixed newstyle, OPT_GO, structured replies,
//! `base:allocation`, and on request extended headers with 64-bit lengths). It is `Sync`: requests from many threads are pipelined on one
//! connection and a reader thread routes replies by handle. Each request is available
//! blocking (`read`, `write`, …) or with a completion callback (`submit`).

mod replies;
mod wire;

use crate::proto::*;
use crate::sock::Sock;
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use replies::{Done, Kind, Slot};
use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use udm_io::IoError;
use wire::{go, hello, option_reply, refused, send_option};

/// Errors from the NBD client.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("NBD connection: {0}")]
    Io(#[from] io::Error),
    #[error("NBD protocol violation: {0}")]
    Protocol(String),
    #[error("NBD server refused option {option}: {message} (reply {reply:#x})")]
    Refused {
        option: u32,
        reply: u32,
        message: String,
    },
    #[error("NBD request failed: {message} (errno {errno})")]
    Remote { errno: i32, message: String },
    #[error("invalid NBD request: {0}")]
    Invalid(&'static str),
    #[error("NBD connection closed")]
    Closed,
    #[error("bad NBD URI {0:?}")]
    BadUri(String),
}

impl NbdError {
    /// The errno this error stands for.
    pub fn errno(&self) -> i32 {
        match self {
            NbdError::Remote { errno, .. } => *errno,
            NbdError::Invalid(_) => libc::EINVAL,
            NbdError::Refused { reply, .. } if *reply == REP_ERR_UNKNOWN => libc::ENXIO,
            _ => libc::EIO,
        }
    }
    /// As a bio error, for devices backed by a remote export.
    pub fn to_io_error(&self) -> IoError {
        IoError::from_errno(self.errno())
    }
}

fn proto_err<T>(msg: impl Into<String>) -> Result<T, NbdError> {
    Err(NbdError::Protocol(msg.into()))
}

/// Where an NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdAddr {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl NbdAddr {
    /// Parse `nbd://host[:port]/export` or `nbd+unix:///export?socket=/path`.
    /// Returns the address and the export name.
    pub fn parse_uri(uri: &str) -> Result<(NbdAddr, String), NbdError> {
        let bad = || NbdError::BadUri(uri.to_string());
        if let Some(rest) = uri.strip_prefix("nbd+unix://") {
            let rest = rest.strip_prefix('/').ok_or_else(bad)?;
            let (name, query) = rest.split_once('?').ok_or_else(bad)?;
            let socket = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("socket="))
                .ok_or_else(bad)?;
            if socket.is_empty() {
                return Err(bad());
            }
            return Ok((NbdAddr::Unix(PathBuf::from(socket)), name.to_string()));
        }
        if let Some(rest) = uri.strip_prefix("nbd://") {
            let (host, name) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() {
                return Err(bad());
            }
            let host = if host
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                && !host.ends_with(']')
            {
                host.to_string()
            } else {
                format!("{host}:10809")
            };
            return Ok((NbdAddr::Tcp(host), name.to_string()));
        }
        Err(bad())
    }

    fn connect(&self) -> Result<Sock, NbdError> {
        let s = match self {
            NbdAddr::Unix(p) => Sock::Unix(UnixStream::connect(p)?),
            NbdAddr::Tcp(a) => {
                // A host that is down must not hold a reconnect for minutes.
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                let mut sock = None;
                for addr in a.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            sock = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                Sock::Tcp(sock.ok_or(last)?)
            }
        };
        s.tune();
        Ok(s)
    }
}

/// What the server told us about the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    pub name: String,
    pub size: u64,
    /// Transmission flags (`proto::TF_*`).
    pub flags: u16,
    pub min_block: u32,
    pub preferred_block: u32,
    pub max_block: u32,
    pub structured: bool,
    /// Extended headers (NBD_OPT_EXTENDED_HEADERS) are in use: 64-bit request lengths.
    pub extended: bool,
    /// Context id of `base:allocation`, if the server has it.
    pub base_allocation: Option<u32>,
}

impl ExportInfo {
    pub fn read_only(&self) -> bool {
        self.flags & TF_READ_ONLY != 0
    }
}

/// One request for `NbdClient::submit`.
#[derive(Debug, Clone, Copy)]
pub enum Cmd<'a> {
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        data: &'a [u8],
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    WriteZeroes {
        offset: u64,
        len: u32,
        no_hole: bool,
        fua: bool,
    },
}

struct Pending {
    map: HashMap<u64, Slot>,
    /// Set once the reader has stopped; new requests fail at once.
    dead: bool,
}

struct Inner {
    /// Requests are written whole under this lock.
    writer: Mutex<Sock>,
    /// The same socket, for shutting it down without the writer lock.
    ctl: Sock,
    pending: Mutex<Pending>,
    next: AtomicU64,
    /// Runs `submit` callbacks off the reader thread, so they may submit more requests
    /// without stalling the replies those requests need.
    completer: Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

/// A connection to one export.
pub struct NbdClient {
    inner: Arc<Inner>,
    info: ExportInfo,
    reader: Option<JoinHandle<()>>,
    /// Disconnected (never sent on) when the reader thread ends.
    reader_gone: Receiver<()>,
}

/// How long closing waits for the server to answer requests still in flight.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TCP connect and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn fua_flag(fua: bool) -> u16 {
    if fua {
        CMD_FLAG_FUA
    } else {
        0
    }
}

impl NbdClient {
    /// Connect to `export` at `addr`.
    pub fn connect(addr: &NbdAddr, export: &str) -> Result<NbdClient, NbdError> {
        NbdClient::connect_opts(addr, export, None, false)
    }

    /// Connect to `export` at `addr` asking for extended headers (64-bit lengths); a
    /// server without them gives a compact connection (see `info().extended`).
    pub fn connect_extended(addr: &NbdAddr, export: &str) -> Result<NbdClient, NbdError> {
        NbdClient::connect_opts(addr, export, None, true)
    }

    /// Connect to `export` at `addr` over TLS (NBD_OPT_STARTTLS first).
    pub fn connect_tls(
        addr: &NbdAddr,
        export: &str,
        tls: &crate::tls::TlsClient,
    ) -> Result<NbdClient, NbdError> {
        NbdClient::connect_opts(addr, export, Some(tls), false)
    }

    /// Connect with every choice spelled out: TLS if `tls`, and `extended` to ask for
    /// extended headers.
    pub fn connect_opts(
        addr: &NbdAddr,
        export: &str,
        tls: Option<&crate::tls::TlsClient>,
        extended: bool,
    ) -> Result<NbdClient, NbdError> {
        let sock = addr.connect()?;
        sock.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        let mut r = BufReader::new(sock.try_clone()?);
        let mut w = sock;
        let no_zeroes = hello(&mut r, &mut w)?;
        if let Some(t) = tls {
            send_option(&mut w, OPT_STARTTLS, &[])?;
            let (typ, data) = option_reply(&mut r, OPT_STARTTLS)?;
            if typ != REP_ACK {
                return Err(refused(OPT_STARTTLS, typ, &data));
            }
            let plain = crate::tls::connect(w, t)?;
            plain.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            r = BufReader::new(plain.try_clone()?);
            w = plain;
        }
        let info = go(&mut r, &mut w, export, no_zeroes, extended)?;
        w.set_read_timeout(None)?;
        let (completer, jobs) = unbounded::<Job>();
        std::thread::Builder::new()
            .name("nbd-client-done".into())
            .spawn(move || {
                // Ends when the client and every pending request are gone.
                for job in jobs {
                    job();
                }
            })?;
        let inner = Arc::new(Inner {
            ctl: w.try_clone()?,
            writer: Mutex::new(w),
            pending: Mutex::new(Pending {
                map: HashMap::new(),
                dead: false,
            }),
            next: AtomicU64::new(1),
            completer,
        });
        let ri = inner.clone();
        let (structured, extended) = (info.structured, info.extended);
        let (gone_tx, reader_gone) = bounded::<()>(0);
        let reader = std::thread::Builder::new()
            .name("nbd-client".into())
            .spawn(move || {
                let _gone = gone_tx;
                replies::reader_loop(ri, r, structured, extended)
            })?;
        Ok(NbdClient {
            inner,
            info,
            reader: Some(reader),
            reader_gone,
        })
    }

    /// Connect to `export` on a Unix socket.
    pub fn connect_unix(path: &Path, export: &str) -> Result<NbdClient, NbdError> {
        NbdClient::connect(&NbdAddr::Unix(path.to_path_buf()), export)
    }

    /// Connect to an `nbd://` or `nbd+unix://` URI.
    pub fn connect_uri(uri: &str) -> Result<NbdClient, NbdError> {
        let (addr, name) = NbdAddr::parse_uri(uri)?;
        NbdClient::connect(&addr, &name)
    }

    /// The export names a server offers (NBD_OPT_LIST).
    pub fn list(addr: &NbdAddr) -> Result<Vec<String>, NbdError> {
        let sock = addr.connect()?;
        let mut r = BufReader::new(sock.try_clone()?);
        let mut w = sock;
        hello(&mut r, &mut w)?;
        send_option(&mut w, OPT_LIST, &[])?;
        let mut names = Vec::new();
        loop {
            let (typ, data) = option_reply(&mut r, OPT_LIST)?;
            match typ {
                REP_SERVER => {
                    let name = Cursor::new(&data)
                        .string()
                        .ok_or_else(|| NbdError::Protocol("bad NBD_REP_SERVER".into()))?;
                    names.push(name);
                }
                REP_ACK => break,
                t => return Err(refused(OPT_LIST, t, &data)),
            }
        }
        send_option(&mut w, OPT_ABORT, &[])?;
        let _ = option_reply(&mut r, OPT_ABORT);
        Ok(names)
    }

    pub fn info(&self) -> &ExportInfo {
        &self.info
    }
    pub fn size(&self) -> u64 {
        self.info.size
    }
    pub fn read_only(&self) -> bool {
        self.info.read_only()
    }

    /// Start one request; `done` gets the data for a read and an empty vector otherwise.
    /// `done` runs on the client's completion thread (inline when the connection is already
    /// gone): it may `submit` more requests but must not wait for one (a blocking call on
    /// this client would deadlock). A write's payload is sent before `submit` returns.
    /// Lengths are not split: keep them within `info().max_block`.
    pub fn submit<F>(&self, cmd: Cmd<'_>, done: F)
    where
        F: FnOnce(Result<Vec<u8>, NbdError>) + Send + 'static,
    {
        let completer = self.inner.completer.clone();
        let done: Done = Box::new(move |res| {
            let res = res.map(|k| match k {
                Kind::Read { buf, .. } => buf,
                _ => Vec::new(),
            });
            let job: Job = Box::new(move || done(res));
            // The completion thread outlives every sender; should it be gone, run here.
            if let Err(e) = completer.send(job) {
                (e.0)();
            }
        });
        let (code, flags, offset, len, payload, kind) = match cmd {
            Cmd::Read { offset, len } => (
                CMD_READ,
                0,
                offset,
                len,
                None,
                Kind::Read {
                    offset,
                    buf: vec![0; len as usize],
                },
            ),
            Cmd::Write { offset, data, fua } => {
                let Ok(len) = u32::try_from(data.len()) else {
                    return done(Err(NbdError::Invalid("write longer than 4 GiB")));
                };
                (
                    CMD_WRITE,
                    fua_flag(fua),
                    offset,
                    len,
                    Some(data),
                    Kind::Other,
                )
            }
            Cmd::Flush => (CMD_FLUSH, 0, 0, 0, None, Kind::Other),
            Cmd::Trim { offset, len, fua } => {
                (CMD_TRIM, fua_flag(fua), offset, len, None, Kind::Other)
            }
            Cmd::WriteZeroes {
                offset,
                len,
                no_hole,
                fua,
            } => {
                let flags = fua_flag(fua) | if no_hole { CMD_FLAG_NO_HOLE } else { 0 };
                (CMD_WRITE_ZEROES, flags, offset, len, None, Kind::Other)
            }
        };
        self.start(code, flags, offset, len.into(), payload, kind, done)
    }

    /// Read `buf.len()` bytes at `offset` (split into maximum-block-size requests).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let max = self.info.max_block.max(self.info.min_block) as usize;
        for (i, piece) in buf.chunks_mut(max).enumerate() {
            let offset = offset + (i * max) as u64;
            let kind = Kind::Read {
                offset,
                buf: vec![0; piece.len()],
            };
            match self.wait(CMD_READ, 0, offset, piece.len() as u64, None, kind)? {
                Kind::Read { buf, .. } => piece.copy_from_slice(&buf),
                _ => return proto_err("read reply without data"),
            }
        }
        Ok(())
    }

    /// Write `data` at `offset` (split likewise); `fua`: durable when this returns.
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), NbdError> {
        let max = self.info.max_block.max(self.info.min_block) as usize;
        for (i, piece) in data.chunks(max).enumerate() {
            let off = offset + (i * max) as u64;
            self.wait(
                CMD_WRITE,
                fua_flag(fua),
                off,
                piece.len() as u64,
                Some(piece),
                Kind::Other,
            )?;
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), NbdError> {
        self.wait(CMD_FLUSH, 0, 0, 0, None, Kind::Other).map(|_| ())
    }

    /// Discard `len` bytes at `offset`.
    pub fn trim(&self, offset: u64, len: u32, fua: bool) -> Result<(), NbdError> {
        self.trim64(offset, len.into(), fua)
    }

    /// Discard `len` bytes at `offset`: one request with extended headers, else split
    /// into pieces a 32-bit length can carry.
    pub fn trim64(&self, offset: u64, len: u64, fua: bool) -> Result<(), NbdError> {
        self.each_piece(offset, len, |off, n| {
            self.wait(CMD_TRIM, fua_flag(fua), off, n, None, Kind::Other)
                .map(|_| ())
        })
    }

    /// Run `f` over `[offset, offset + len)` in one piece with extended headers, else in
    /// pieces of at most 4 GiB less one block (and at least one call, for `len == 0`).
    fn each_piece(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, u64) -> Result<(), NbdError>,
    ) -> Result<(), NbdError> {
        if self.info.extended || len <= u64::from(u32::MAX) {
            return f(offset, len);
        }
        let min = u64::from(self.info.min_block.max(1)).next_power_of_two();
        let max = u64::from(u32::MAX) / min * min;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(max);
            f(offset + done, n)?;
            done += n;
        }
        Ok(())
    }

    /// Zero `len` bytes at `offset`; `no_hole`: keep the range allocated.
    pub fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), NbdError> {
        self.write_zeroes64(offset, len.into(), no_hole, fua)
    }

    /// Zero `len` bytes at `offset` (one request with extended headers, else split).
    pub fn write_zeroes64(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), NbdError> {
        let flags = fua_flag(fua) | if no_hole { CMD_FLAG_NO_HOLE } else { 0 };
        self.each_piece(offset, len, |off, n| {
            self.wait(CMD_WRITE_ZEROES, flags, off, n, None, Kind::Other)
                .map(|_| ())
        })
    }

    /// `base:allocation` status from `offset`: `(length, proto::STATE_* flags)` runs.
    pub fn block_status(&self, offset: u64, len: u32) -> Result<Vec<(u32, u32)>, NbdError> {
        // Runs sum to at most `len`, so each fits; flags above 32 bits are not defined.
        Ok(self
            .block_status64(offset, len.into())?
            .into_iter()
            .map(|(l, f)| (l.min(u64::from(len)) as u32, f as u32))
            .collect())
    }

    /// As `block_status` with a 64-bit length (one request with extended headers; a
    /// compact connection asks for at most 4 GiB less one block, and the server may
    /// always answer for less than asked).
    pub fn block_status64(&self, offset: u64, len: u64) -> Result<Vec<(u64, u64)>, NbdError> {
        let len = if self.info.extended {
            len
        } else {
            let min = u64::from(self.info.min_block.max(1)).next_power_of_two();
            len.min(u64::from(u32::MAX) / min * min)
        };
        if self.info.base_allocation.is_none() {
            return Err(NbdError::Invalid("server has no base:allocation context"));
        }
        let kind = Kind::BlockStatus {
            extents: Vec::new(),
        };
        match self.wait(CMD_BLOCK_STATUS, 0, offset, len, None, kind)? {
            Kind::BlockStatus { extents } if !extents.is_empty() => Ok(extents),
            _ => proto_err("block status reply without extents"),
        }
    }

    /// Send any request, checked by nobody (for testing servers' error paths).
    pub fn raw_request(
        &self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: Option<&[u8]>,
    ) -> Result<(), NbdError> {
        let kind = if cmd == CMD_READ {
            Kind::Read {
                offset,
                buf: vec![0; len as usize],
            }
        } else {
            Kind::Other
        };
        self.wait(cmd, flags, offset, len.into(), payload, kind)
            .map(|_| ())
    }

    /// Send a request and wait for its reply.
    fn wait(
        &self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u64,
        payload: Option<&[u8]>,
        kind: Kind,
    ) -> Result<Kind, NbdError> {
        let (tx, rx) = bounded(1);
        let done: Done = Box::new(move |res| {
            let _ = tx.send(res);
        });
        self.start(cmd, flags, offset, len, payload, kind, done);
        rx.recv().unwrap_or(Err(NbdError::Closed))
    }

    /// Register a request and send it; `done` always runs exactly once.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u64,
        payload: Option<&[u8]>,
        kind: Kind,
        done: Done,
    ) {
        // Compact headers carry 32-bit lengths only.
        let compact_len = u32::try_from(len);
        if !self.info.extended && compact_len.is_err() {
            return done(Err(NbdError::Invalid(
                "length above 4 GiB needs extended headers",
            )));
        }
        let handle = self.inner.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut p = self.inner.pending.lock();
            if p.dead {
                drop(p);
                return done(Err(NbdError::Closed));
            }
            p.map.insert(
                handle,
                Slot {
                    kind,
                    error: None,
                    done: Some(done),
                },
            );
        }
        let mut hdr = [0u8; EXT_HEADER_LEN];
        let req: &[u8] = if self.info.extended {
            // Extended writes must say their length is a payload length.
            let flags = if payload.is_some() {
                flags | CMD_FLAG_PAYLOAD_LEN
            } else {
                flags
            };
            hdr = ExtRequest {
                flags,
                cmd,
                handle,
                offset,
                len,
            }
            .encode();
            &hdr
        } else {
            hdr[..REQUEST_LEN].copy_from_slice(
                &Request {
                    flags,
                    cmd,
                    handle,
                    offset,
                    len: compact_len.unwrap_or(0),
                }
                .encode(),
            );
            &hdr[..REQUEST_LEN]
        };
        let sent = {
            let mut w = self.inner.writer.lock();
            w.write_all(req).and_then(|_| match payload {
                Some(p) => w.write_all(p),
                None => Ok(()),
            })
        };
        if let Err(e) = sent {
            // A half-sent request leaves the stream unusable: end the connection. The reader
            // then fails every pending request, this one included (unless a reply raced in).
            tracing::debug!("nbd client: send failed: {e}");
            let _ = self.inner.ctl.shutdown(Shutdown::Both);
        }
    }

    /// Cut the connection at once (a server that stopped answering): every request in
    /// flight fails with `Closed`, and so does every later one.
    pub fn abort(&self) {
        let _ = self.inner.ctl.shutdown(Shutdown::Both);
    }

    /// True once the connection has failed or closed.
    pub fn is_closed(&self) -> bool {
        self.inner.pending.lock().dead
    }

    /// Send NBD_CMD_DISC and close. Requests still in flight (from `submit`) get their
    /// replies if the server sends them within a few seconds, else fail with `Closed`.
    pub fn disconnect(mut self) -> Result<(), NbdError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), NbdError> {
        let Some(reader) = self.reader.take() else {
            return Ok(());
        };
        let disc = ExtRequest {
            flags: 0,
            cmd: CMD_DISC,
            handle: 0,
            offset: 0,
            len: 0,
        };
        let req = if self.info.extended {
            disc.encode().to_vec()
        } else {
            Request {
                flags: 0,
                cmd: CMD_DISC,
                handle: 0,
                offset: 0,
                len: 0,
            }
            .encode()
            .to_vec()
        };
        let res = self.inner.writer.lock().write_all(&req);
        // The server answers what is in flight, then closes; the reader sees EOF.
        let _ = self.inner.ctl.shutdown(Shutdown::Write);
        if let Err(RecvTimeoutError::Timeout) = self.reader_gone.recv_timeout(CLOSE_TIMEOUT) {
            let _ = self.inner.ctl.shutdown(Shutdown::Both);
        }
        // The last reference may be dropped by a callback on the reader thread itself.
        if reader.thread().id() != std::thread::current().id() {
            let _ = reader.join();
        }
        res.map_err(NbdError::from)
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_uris() {
        assert_eq!(
            NbdAddr::parse_uri("nbd+unix:///disk?socket=/run/udm.sock").unwrap(),
            (NbdAddr::Unix("/run/udm.sock".into()), "disk".into())
        );
        assert_eq!(
            NbdAddr::parse_uri("nbd://host/e").unwrap(),
            (NbdAddr::Tcp("host:10809".into()), "e".into())
        );
        assert_eq!(
            NbdAddr::parse_uri("nbd://h:99").unwrap(),
            (NbdAddr::Tcp("h:99".into()), "".into())
        );
        assert!(NbdAddr::parse_uri("nbd+unix:///x").is_err());
        assert!(NbdAddr::parse_uri("http://x").is_err());
    }
}
