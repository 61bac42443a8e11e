//! `NbdClient`: a small NBD client (fixed newstyle, OPT_GO, structured replies,
//! `base:allocation`). Calls block, but the client is `Sync`: requests from many threads are
//! pipelined on one connection and a reader thread routes replies by handle.

use crate::proto::*;
use crate::sock::Sock;
use crossbeam_channel::{bounded, Sender};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use udm_io::IoError;

/// Longest option reply the client reads.
const MAX_OPTION_REPLY: u32 = 1 << 20;
/// Longest non-data structured chunk the client reads.
const MAX_CHUNK: u32 = 1 << 20;

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
            NbdError::Refused { reply, .. } if *reply == REP_ERR_UNKNOWN => libc::ENOENT,
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
                let addrs: Vec<_> = a.to_socket_addrs()?.collect();
                Sock::Tcp(TcpStream::connect(&addrs[..])?)
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
    /// Context id of `base:allocation`, if the server has it.
    pub base_allocation: Option<u32>,
}

impl ExportInfo {
    pub fn read_only(&self) -> bool {
        self.flags & TF_READ_ONLY != 0
    }
}

/// What a request's reply carries.
enum Kind {
    Read { offset: u64, buf: Vec<u8> },
    BlockStatus { extents: Vec<(u32, u32)> },
    Other,
}

struct Slot {
    kind: Kind,
    error: Option<(u32, String)>,
    tx: Sender<Result<Kind, NbdError>>,
}

struct Pending {
    map: HashMap<u64, Slot>,
    /// Set once the reader has stopped; new requests fail at once.
    dead: bool,
}

struct Inner {
    writer: Mutex<Sock>,
    pending: Mutex<Pending>,
    next: AtomicU64,
}

/// A connection to one export.
pub struct NbdClient {
    inner: Arc<Inner>,
    info: ExportInfo,
    reader: Option<JoinHandle<()>>,
}

impl NbdClient {
    /// Connect to `export` at `addr`.
    pub fn connect(addr: &NbdAddr, export: &str) -> Result<NbdClient, NbdError> {
        let sock = addr.connect()?;
        let mut r = BufReader::new(sock.try_clone()?);
        let mut w = sock;
        let no_zeroes = hello(&mut r, &mut w)?;
        let info = go(&mut r, &mut w, export, no_zeroes)?;
        let inner = Arc::new(Inner {
            writer: Mutex::new(w),
            pending: Mutex::new(Pending {
                map: HashMap::new(),
                dead: false,
            }),
            next: AtomicU64::new(1),
        });
        let ri = inner.clone();
        let structured = info.structured;
        let reader = std::thread::Builder::new()
            .name("nbd-client".into())
            .spawn(move || reader_loop(ri, r, structured))?;
        Ok(NbdClient {
            inner,
            info,
            reader: Some(reader),
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
                    let mut c = Cursor::new(&data);
                    let name = c
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

    /// Read `buf.len()` bytes at `offset` (split into maximum-block-size requests).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let max = self.info.max_block.max(self.info.min_block) as usize;
        for (i, piece) in buf.chunks_mut(max).enumerate() {
            let off = offset + (i * max) as u64;
            let kind = Kind::Read {
                offset: off,
                buf: Vec::new(),
            };
            match self.request(CMD_READ, 0, off, piece.len() as u32, None, kind)? {
                Kind::Read { buf, .. } if buf.len() == piece.len() => piece.copy_from_slice(&buf),
                _ => return proto_err("read reply of the wrong length"),
            }
        }
        Ok(())
    }

    /// Write `data` at `offset`; `fua`: durable when this returns.
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), NbdError> {
        let max = self.info.max_block.max(self.info.min_block) as usize;
        let flags = if fua { CMD_FLAG_FUA } else { 0 };
        for (i, piece) in data.chunks(max).enumerate() {
            let off = offset + (i * max) as u64;
            self.request(
                CMD_WRITE,
                flags,
                off,
                piece.len() as u32,
                Some(piece),
                Kind::Other,
            )?;
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), NbdError> {
        self.request(CMD_FLUSH, 0, 0, 0, None, Kind::Other)
            .map(|_| ())
    }

    /// Discard `len` bytes at `offset`.
    pub fn trim(&self, offset: u64, len: u32, fua: bool) -> Result<(), NbdError> {
        let flags = if fua { CMD_FLAG_FUA } else { 0 };
        self.request(CMD_TRIM, flags, offset, len, None, Kind::Other)
            .map(|_| ())
    }

    /// Zero `len` bytes at `offset`; `no_hole`: keep the range allocated.
    pub fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), NbdError> {
        let flags = if fua { CMD_FLAG_FUA } else { 0 } | if no_hole { CMD_FLAG_NO_HOLE } else { 0 };
        self.request(CMD_WRITE_ZEROES, flags, offset, len, None, Kind::Other)
            .map(|_| ())
    }

    /// `base:allocation` status from `offset`: `(length, proto::STATE_* flags)` runs.
    pub fn block_status(&self, offset: u64, len: u32) -> Result<Vec<(u32, u32)>, NbdError> {
        if self.info.base_allocation.is_none() {
            return Err(NbdError::Invalid("server has no base:allocation context"));
        }
        match self.request(
            CMD_BLOCK_STATUS,
            0,
            offset,
            len,
            None,
            Kind::BlockStatus {
                extents: Vec::new(),
            },
        )? {
            Kind::BlockStatus { extents } if !extents.is_empty() => Ok(extents),
            _ => proto_err("block status reply without extents"),
        }
    }

    /// Send a raw request (for tests of server error paths); returns the result.
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
                buf: Vec::new(),
            }
        } else {
            Kind::Other
        };
        self.request(cmd, flags, offset, len, payload, kind)
            .map(|_| ())
    }

    fn request(
        &self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: Option<&[u8]>,
        mut kind: Kind,
    ) -> Result<Kind, NbdError> {
        if let Kind::Read { buf, .. } = &mut kind {
            // Reads larger than this never reach here: `read` splits them.
            *buf = vec![0; len as usize];
        }
        let handle = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(1);
        {
            let mut p = self.inner.pending.lock();
            if p.dead {
                return Err(NbdError::Closed);
            }
            p.map.insert(
                handle,
                Slot {
                    kind,
                    error: None,
                    tx,
                },
            );
        }
        let req = Request {
            flags,
            cmd,
            handle,
            offset,
            len,
        }
        .encode();
        let sent = {
            let mut w = self.inner.writer.lock();
            w.write_all(&req).and_then(|_| match payload {
                Some(p) => w.write_all(p),
                None => Ok(()),
            })
        };
        if let Err(e) = sent {
            self.inner.pending.lock().map.remove(&handle);
            return Err(e.into());
        }
        rx.recv().unwrap_or(Err(NbdError::Closed))
    }

    /// Send NBD_CMD_DISC and close.
    pub fn disconnect(mut self) -> Result<(), NbdError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), NbdError> {
        let Some(reader) = self.reader.take() else {
            return Ok(());
        };
        let req = Request {
            flags: 0,
            cmd: CMD_DISC,
            handle: 0,
            offset: 0,
            len: 0,
        }
        .encode();
        let res = {
            let mut w = self.inner.writer.lock();
            let r = w.write_all(&req);
            let _ = w.shutdown(Shutdown::Write);
            r
        };
        let _ = reader.join();
        res.map_err(NbdError::from)
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn refused(option: u32, reply: u32, data: &[u8]) -> NbdError {
    NbdError::Refused {
        option,
        reply,
        message: String::from_utf8_lossy(data).into_owned(),
    }
}

/// Read the server greeting and send client flags; returns whether NO_ZEROES is in effect.
fn hello(r: &mut impl Read, w: &mut impl Write) -> Result<bool, NbdError> {
    if read_u64(r)? != NBDMAGIC {
        return proto_err("not an NBD server");
    }
    if read_u64(r)? != IHAVEOPT {
        return proto_err("server does not speak newstyle NBD");
    }
    let flags = read_u16(r)?;
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return proto_err("server does not speak fixed newstyle NBD");
    }
    let no_zeroes = flags & FLAG_NO_ZEROES != 0;
    let cflags = FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 };
    w.write_all(&cflags.to_be_bytes())?;
    Ok(no_zeroes)
}

fn send_option(w: &mut impl Write, opt: u32, data: &[u8]) -> io::Result<()> {
    let mut v = Vec::with_capacity(16 + data.len());
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    w.write_all(&v)
}

/// One option reply: (type, data).
fn option_reply(r: &mut impl Read, opt: u32) -> Result<(u32, Vec<u8>), NbdError> {
    if read_u64(r)? != REPLY_MAGIC {
        return proto_err("bad option reply magic");
    }
    if read_u32(r)? != opt {
        return proto_err("option reply for another option");
    }
    let typ = read_u32(r)?;
    let len = read_u32(r)?;
    if len > MAX_OPTION_REPLY {
        return proto_err("option reply too long");
    }
    let mut data = vec![0; len as usize];
    r.read_exact(&mut data)?;
    Ok((typ, data))
}

fn name_and_queries(export: &str, items: &[&[u8]], count16: bool) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(export.len() as u32).to_be_bytes());
    v.extend_from_slice(export.as_bytes());
    if count16 {
        v.extend_from_slice(&(items.len() as u16).to_be_bytes());
        for i in items {
            v.extend_from_slice(i);
        }
    } else {
        v.extend_from_slice(&(items.len() as u32).to_be_bytes());
        for i in items {
            v.extend_from_slice(&(i.len() as u32).to_be_bytes());
            v.extend_from_slice(i);
        }
    }
    v
}

/// Negotiate structured replies and `base:allocation`, then NBD_OPT_GO.
fn go(
    r: &mut impl Read,
    w: &mut impl Write,
    export: &str,
    no_zeroes: bool,
) -> Result<ExportInfo, NbdError> {
    send_option(w, OPT_STRUCTURED_REPLY, &[])?;
    let structured = match option_reply(r, OPT_STRUCTURED_REPLY)? {
        (REP_ACK, _) => true,
        (t, _) if t & 0x8000_0000 != 0 => false,
        (t, _) => {
            return proto_err(format!(
                "unexpected reply {t:#x} to NBD_OPT_STRUCTURED_REPLY"
            ))
        }
    };
    let mut base_allocation = None;
    if structured {
        send_option(
            w,
            OPT_SET_META_CONTEXT,
            &name_and_queries(export, &[BASE_ALLOCATION.as_bytes()], false),
        )?;
        loop {
            match option_reply(r, OPT_SET_META_CONTEXT)? {
                (REP_META_CONTEXT, d) if d.len() >= 4 => {
                    if &d[4..] == BASE_ALLOCATION.as_bytes() {
                        base_allocation = Some(be32(&d[0..4]));
                    }
                }
                (REP_ACK, _) => break,
                (t, _) if t & 0x8000_0000 != 0 => {
                    base_allocation = None;
                    break;
                }
                (t, _) => {
                    return proto_err(format!(
                        "unexpected reply {t:#x} to NBD_OPT_SET_META_CONTEXT"
                    ))
                }
            }
        }
    }
    let reqs = [INFO_BLOCK_SIZE.to_be_bytes(), INFO_NAME.to_be_bytes()];
    let items: Vec<&[u8]> = reqs.iter().map(|b| &b[..]).collect();
    send_option(w, OPT_GO, &name_and_queries(export, &items, true))?;
    let mut info = ExportInfo {
        name: export.to_string(),
        size: 0,
        flags: 0,
        min_block: 1,
        preferred_block: 4096,
        max_block: MAX_BLOCK,
        structured,
        base_allocation,
    };
    let mut have_export = false;
    loop {
        let (typ, d) = option_reply(r, OPT_GO)?;
        match typ {
            REP_INFO if d.len() >= 2 => match be16(&d[0..2]) {
                INFO_EXPORT if d.len() == 12 => {
                    info.size = be64(&d[2..10]);
                    info.flags = be16(&d[10..12]);
                    have_export = true;
                }
                INFO_BLOCK_SIZE if d.len() == 14 => {
                    info.min_block = be32(&d[2..6]).max(1);
                    info.preferred_block = be32(&d[6..10]);
                    info.max_block = be32(&d[10..14]).min(MAX_BLOCK).max(info.min_block);
                }
                INFO_NAME => info.name = String::from_utf8_lossy(&d[2..]).into_owned(),
                _ => {}
            },
            REP_ACK if have_export => return Ok(info),
            REP_ACK => return proto_err("NBD_OPT_GO succeeded without NBD_INFO_EXPORT"),
            REP_ERR_UNSUP => return export_name(r, w, export, no_zeroes, info),
            t if t & 0x8000_0000 != 0 => return Err(refused(OPT_GO, t, &d)),
            t => return proto_err(format!("unexpected reply {t:#x} to NBD_OPT_GO")),
        }
    }
}

/// Fallback for servers without NBD_OPT_GO.
fn export_name(
    r: &mut impl Read,
    w: &mut impl Write,
    export: &str,
    no_zeroes: bool,
    mut info: ExportInfo,
) -> Result<ExportInfo, NbdError> {
    send_option(w, OPT_EXPORT_NAME, export.as_bytes())?;
    info.size = read_u64(r)?;
    info.flags = read_u16(r)?;
    if !no_zeroes {
        drain(r, 124)?;
    }
    info.min_block = 512;
    Ok(info)
}

fn reader_loop(inner: Arc<Inner>, mut r: BufReader<Sock>, structured: bool) {
    let err = loop {
        if let Err(e) = read_reply(&inner, &mut r, structured) {
            break e;
        }
    };
    let mut p = inner.pending.lock();
    p.dead = true;
    for (_, slot) in p.map.drain() {
        let e = match &err {
            NbdError::Protocol(m) => NbdError::Protocol(m.clone()),
            _ => NbdError::Closed,
        };
        let _ = slot.tx.send(Err(e));
    }
    drop(p);
    // Unblock anyone still writing.
    let _ = inner.writer.lock().shutdown(Shutdown::Both);
}

/// Hand a finished request its result.
fn complete(slot: Slot) {
    let res = match slot.error {
        Some((e, message)) => Err(NbdError::Remote {
            errno: nbd_to_errno(e),
            message,
        }),
        None => Ok(slot.kind),
    };
    let _ = slot.tx.send(res);
}

/// Take a request's slot out of the table while its reply is read (so other threads can
/// register requests meanwhile). A slot dropped on error fails its caller with `Closed`.
fn take_slot(inner: &Inner, handle: u64) -> Result<Slot, NbdError> {
    match inner.pending.lock().map.remove(&handle) {
        Some(s) => Ok(s),
        None => proto_err(format!("reply for unknown handle {handle}")),
    }
}

fn read_reply(inner: &Inner, r: &mut impl Read, structured: bool) -> Result<(), NbdError> {
    let magic = read_u32(r)?;
    match magic {
        SIMPLE_REPLY_MAGIC => {
            let error = read_u32(r)?;
            let handle = read_u64(r)?;
            let mut slot = take_slot(inner, handle)?;
            if error != 0 {
                slot.error = Some((error, String::new()));
            } else if let Kind::Read { buf, .. } = &mut slot.kind {
                if structured {
                    return proto_err(
                        "simple reply to a read after structured replies were negotiated",
                    );
                }
                r.read_exact(buf)?;
            }
            complete(slot);
            Ok(())
        }
        STRUCTURED_REPLY_MAGIC if structured => {
            let flags = read_u16(r)?;
            let typ = read_u16(r)?;
            let handle = read_u64(r)?;
            let len = read_u32(r)?;
            let mut slot = take_slot(inner, handle)?;
            chunk(&mut slot, r, typ, len)?;
            if flags & REPLY_FLAG_DONE != 0 {
                complete(slot);
            } else {
                inner.pending.lock().map.insert(handle, slot);
            }
            Ok(())
        }
        m => proto_err(format!("bad reply magic {m:#x}")),
    }
}

fn chunk(slot: &mut Slot, r: &mut impl Read, typ: u16, len: u32) -> Result<(), NbdError> {
    match (typ, &mut slot.kind) {
        (REPLY_TYPE_NONE, _) if len == 0 => {}
        (REPLY_TYPE_OFFSET_DATA, Kind::Read { offset, buf }) if len > 8 => {
            let off = read_u64(r)?;
            let n = (len - 8) as u64;
            let start = off
                .checked_sub(*offset)
                .filter(|s| s + n <= buf.len() as u64);
            let Some(start) = start else {
                return proto_err("data chunk outside the request");
            };
            r.read_exact(&mut buf[start as usize..(start + n) as usize])?;
        }
        (REPLY_TYPE_OFFSET_HOLE, Kind::Read { offset, buf }) if len == 12 => {
            let off = read_u64(r)?;
            let n = read_u32(r)? as u64;
            let start = off
                .checked_sub(*offset)
                .filter(|s| s + n <= buf.len() as u64);
            let Some(start) = start else {
                return proto_err("hole chunk outside the request");
            };
            buf[start as usize..(start + n) as usize].fill(0);
        }
        (REPLY_TYPE_BLOCK_STATUS, Kind::BlockStatus { extents })
            if len >= 12 && (len - 4) % 8 == 0 =>
        {
            if len > MAX_CHUNK {
                return proto_err("block status chunk too long");
            }
            let _ctx = read_u32(r)?;
            for _ in 0..(len - 4) / 8 {
                let l = read_u32(r)?;
                let f = read_u32(r)?;
                extents.push((l, f));
            }
        }
        (t, _) if t & 0x8000 != 0 && len >= 6 => {
            if len > MAX_CHUNK {
                return proto_err("error chunk too long");
            }
            let mut d = vec![0; len as usize];
            r.read_exact(&mut d)?;
            let err = be32(&d[0..4]);
            let mlen = (be16(&d[4..6]) as usize).min(d.len() - 6);
            let msg = String::from_utf8_lossy(&d[6..6 + mlen]).into_owned();
            slot.error
                .get_or_insert((if err == 0 { NBD_EINVAL } else { err }, msg));
        }
        (t, _) => return proto_err(format!("unexpected chunk type {t} (length {len})")),
    }
    Ok(())
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
