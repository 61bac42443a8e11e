//! Server transmission phase: a reader loop that validates requests and submits bios without
//! waiting, and a writer thread that sends replies as bios complete.

use crate::handshake::Negotiated;
use crate::proto::*;
use crate::sock::Sock;
use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use udm_io::{Bio, BioFlags, BlockDevice, Extent, IoBuf, IoError, Sectors, SECTOR_SIZE};

/// Most requests one connection may have in flight (replies not yet written).
const MAX_INFLIGHT_REQS: usize = 1024;
/// Most payload bytes one connection may hold in flight.
const MAX_INFLIGHT_BYTES: u64 = 128 << 20;
/// Most descriptors in one block status reply.
const MAX_EXTENTS: usize = 1024;
/// Replies written before the writer flushes even if more are queued.
const WRITE_BATCH: usize = 64;

/// Bounds what one connection holds in memory: the reader waits for room before taking
/// on another request, and the writer gives room back as replies go out.
struct Budget {
    state: Mutex<(usize, u64)>,
    cv: Condvar,
}

impl Budget {
    fn acquire(&self, bytes: u64) {
        let mut st = self.state.lock();
        while st.0 >= MAX_INFLIGHT_REQS || (st.0 > 0 && st.1 + bytes > MAX_INFLIGHT_BYTES) {
            self.cv.wait(&mut st);
        }
        st.0 += 1;
        st.1 += bytes;
    }
    fn release(&self, bytes: u64) {
        let mut st = self.state.lock();
        st.0 = st.0.saturating_sub(1);
        st.1 = st.1.saturating_sub(bytes);
        drop(st);
        self.cv.notify_all();
    }
}

/// One reply for the writer; `cost` is the budget it gives back once written.
enum Msg {
    /// A fully encoded reply.
    Bytes { data: Vec<u8>, cost: u64 },
    /// A reply header followed by read data.
    Data {
        head: Vec<u8>,
        buf: IoBuf,
        cost: u64,
    },
}

/// What the reader does after a request.
enum Next {
    Continue,
    Stop,
}

struct Conn {
    dev: Arc<dyn BlockDevice>,
    read_only: bool,
    structured: bool,
    /// 32-byte extended requests and replies (64-bit lengths).
    extended: bool,
    base_allocation: Option<u32>,
    size: u64,
    min_block: u64,
    out: Replier,
    budget: Arc<Budget>,
}

/// A handle for sending replies: the shared output plus a sender to the writer thread (the
/// writer ends once every `Replier` — the reader's and one per in-flight bio — is gone).
#[derive(Clone)]
struct Replier {
    out: Arc<Out>,
    tx: Sender<Msg>,
}

impl Replier {
    fn send(&self, msg: Msg) {
        if std::thread::current().id() == self.out.reader {
            let mut w = self.out.w.lock();
            self.out.write(&mut w, msg);
            self.out
                .dirty
                .store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            let _ = self.tx.send(msg);
        }
    }
}

/// Where replies go. A reply produced on the connection's own reader thread (a bio that
/// completed inline, e.g. a page-cache hit) is written straight to the socket and flushed
/// before the reader next waits for input; replies from other threads go to the writer
/// thread, so a client that stops reading never blocks a shared I/O thread.
struct Out {
    w: Mutex<BufWriter<Sock>>,
    /// Set when a write failed: later replies are dropped and the socket is shut down.
    broken: std::sync::atomic::AtomicBool,
    /// The reader wrote replies that are not flushed yet.
    dirty: std::sync::atomic::AtomicBool,
    reader: std::thread::ThreadId,
    budget: Arc<Budget>,
    shut: Option<Sock>,
}

impl Out {
    /// Flush what the reader wrote itself (before it blocks on the socket).
    fn flush_local(&self) {
        if self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let mut w = self.w.lock();
            if !self.is_broken() && w.flush().is_err() {
                self.set_broken();
            }
        }
    }

    fn is_broken(&self) -> bool {
        self.broken.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_broken(&self) {
        self.broken
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the reader: nobody will read our replies any more.
        if let Some(s) = &self.shut {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Write one reply (dropped if the socket already failed) and give back its budget.
    fn write(&self, w: &mut BufWriter<Sock>, msg: Msg) {
        let (res, cost) = match msg {
            Msg::Bytes { data, cost } => (
                if self.is_broken() {
                    Ok(())
                } else {
                    w.write_all(&data)
                },
                cost,
            ),
            Msg::Data { head, buf, cost } => (
                if self.is_broken() {
                    Ok(())
                } else {
                    w.write_all(&head).and_then(|_| w.write_all(&buf))
                },
                cost,
            ),
        };
        if res.is_err() {
            self.set_broken();
        }
        self.budget.release(cost);
    }
}

/// Serve requests until the client disconnects, sends garbage, or the socket is shut down.
/// Returns once every in-flight bio has completed and its reply was written (or the socket
/// failed); the export handle is dropped after that.
pub(crate) fn serve<R: Read>(
    mut reader: BufReader<R>,
    sock: &Sock,
    n: Negotiated,
) -> io::Result<()> {
    let (tx, rx) = unbounded();
    let budget = Arc::new(Budget {
        state: Mutex::new((0, 0)),
        cv: Condvar::new(),
    });
    let out = Arc::new(Out {
        w: Mutex::new(BufWriter::with_capacity(256 << 10, sock.try_clone()?)),
        broken: std::sync::atomic::AtomicBool::new(false),
        dirty: std::sync::atomic::AtomicBool::new(false),
        reader: std::thread::current().id(),
        budget: budget.clone(),
        shut: sock.try_clone().ok(),
    });
    let wout = out.clone();
    let writer = std::thread::Builder::new()
        .name("nbd-writer".into())
        .spawn(move || writer_loop(rx, wout))?;
    let conn = Conn {
        dev: n.handle.dev.clone(),
        read_only: n.read_only,
        structured: n.structured,
        extended: n.extended,
        base_allocation: n.base_allocation,
        size: n.size,
        min_block: n.min_block as u64,
        out: Replier { out, tx },
        budget,
    };
    tracing::debug!(
        "nbd: {} entering transmission (structured={}, extended={})",
        n.name,
        n.structured,
        n.extended
    );
    let res = reader_loop(&conn, &mut reader);
    conn.out.out.flush_local();
    // The writer ends when every sender is gone: ours here, and one per in-flight bio.
    drop(conn);
    let _ = writer.join();
    drop(n);
    res
}

fn reader_loop<R: Read>(conn: &Conn, r: &mut BufReader<R>) -> io::Result<()> {
    let hlen = if conn.extended {
        EXT_HEADER_LEN
    } else {
        REQUEST_LEN
    };
    loop {
        // Replies written on this thread go out when no further request is already buffered
        // (so pipelined requests get their replies batched), i.e. before we would block.
        if r.buffer().len() < hlen {
            conn.out.out.flush_local();
        }
        let mut hdr = [0u8; EXT_HEADER_LEN];
        match r.read_exact(&mut hdr[..hlen]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        // Once extended headers are negotiated only they are valid, and before only
        // compact ones.
        let req = if conn.extended {
            ExtRequest::decode(&hdr)
        } else {
            let mut compact = [0u8; REQUEST_LEN];
            compact.copy_from_slice(&hdr[..REQUEST_LEN]);
            Request::decode(&compact).map(ExtRequest::from)
        };
        let Some(req) = req else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad request magic",
            ));
        };
        match conn.request(r, req)? {
            Next::Continue => {}
            Next::Stop => return Ok(()),
        }
    }
}

fn writer_loop(rx: Receiver<Msg>, out: Arc<Out>) {
    while let Ok(msg) = rx.recv() {
        let mut w = out.w.lock();
        out.write(&mut w, msg);
        for _ in 1..WRITE_BATCH {
            match rx.try_recv() {
                Ok(m) => out.write(&mut w, m),
                Err(_) => break,
            }
        }
        if !out.is_broken() && w.flush().is_err() {
            out.set_broken();
        }
    }
    let mut w = out.w.lock();
    if !out.is_broken() {
        let _ = w.flush();
    }
}

/// Why a request is refused, with the NBD error and a message for structured replies.
type Refusal = (u32, &'static str);

impl Conn {
    fn send(&self, msg: Msg) {
        self.out.send(msg);
    }

    fn style(&self) -> Style {
        Style {
            structured: self.structured,
            extended: self.extended,
        }
    }

    /// Reply to a request that failed before reaching the device.
    fn refuse(&self, req: &ExtRequest, (err, msg): Refusal) {
        self.budget.acquire(0);
        self.send(Msg::Bytes {
            data: self.style().error(req.handle, req.offset, err, msg),
            cost: 0,
        });
    }

    fn ok(&self, req: &ExtRequest) {
        self.budget.acquire(0);
        self.send(Msg::Bytes {
            data: self.style().done(req.handle, req.offset),
            cost: 0,
        });
    }

    /// Check flags, range and alignment; `range_err` is the error for a range past the end.
    fn check(&self, req: &ExtRequest, allowed: u16, range_err: u32) -> Result<(), Refusal> {
        if req.flags & !allowed != 0 {
            return Err((NBD_EINVAL, "command flag not valid here"));
        }
        match req.offset.checked_add(req.len) {
            Some(end) if end <= self.size => {}
            _ => return Err((range_err, "request beyond the end of the export")),
        }
        if req.offset % self.min_block != 0 || req.len % self.min_block != 0 {
            return Err((NBD_EINVAL, "request not aligned to the minimum block size"));
        }
        Ok(())
    }

    fn request(&self, r: &mut impl Read, mut req: ExtRequest) -> io::Result<Next> {
        if self.extended && req.flags & CMD_FLAG_PAYLOAD_LEN != 0 {
            if req.cmd == CMD_WRITE {
                // Required on writes with extended headers; the length is the payload.
                req.flags &= !CMD_FLAG_PAYLOAD_LEN;
            } else {
                // No other command takes a payload here: consume it, then refuse.
                if req.len > MAX_BLOCK as u64 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request payload absurdly long",
                    ));
                }
                drain(r, req.len)?;
                self.refuse(&req, (NBD_EINVAL, "this command takes no payload"));
                return Ok(Next::Continue);
            }
        }
        let h = &req;
        match req.cmd {
            CMD_READ => {
                let res = if req.len > MAX_BLOCK as u64 {
                    Err((NBD_EINVAL, "read longer than the maximum block size"))
                } else {
                    self.check(&req, CMD_FLAG_FUA | CMD_FLAG_DF, NBD_EINVAL)
                };
                match res {
                    Err(e) => self.refuse(h, e),
                    Ok(()) if req.len == 0 => self.empty_read(h),
                    Ok(()) => self.read(req),
                }
            }
            CMD_WRITE => {
                if req.len > MAX_DRAIN as u64 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "write payload absurdly long",
                    ));
                }
                let res = if self.read_only {
                    Err((NBD_EPERM, "export is read-only"))
                } else if req.len > MAX_BLOCK as u64 {
                    Err((NBD_EINVAL, "write longer than the maximum block size"))
                } else {
                    self.check(&req, CMD_FLAG_FUA, NBD_ENOSPC)
                };
                match res {
                    Err(e) => {
                        drain(r, req.len)?;
                        self.refuse(h, e);
                    }
                    Ok(()) if req.len == 0 => self.ok(h),
                    Ok(()) => self.write(r, req)?,
                }
            }
            CMD_FLUSH => {
                if req.flags & !CMD_FLAG_FUA != 0 {
                    self.refuse(h, (NBD_EINVAL, "command flag not valid here"));
                } else {
                    self.submit(h, 0, Bio::flush);
                }
            }
            CMD_TRIM | CMD_WRITE_ZEROES => {
                let zero = req.cmd == CMD_WRITE_ZEROES;
                let res = if self.read_only {
                    Err((NBD_EPERM, "export is read-only"))
                } else if zero {
                    self.check(&req, CMD_FLAG_FUA | CMD_FLAG_NO_HOLE, NBD_ENOSPC)
                } else {
                    self.check(&req, CMD_FLAG_FUA, NBD_EINVAL)
                };
                match res {
                    Err(e) => self.refuse(h, e),
                    Ok(()) if req.len == 0 => self.ok(h),
                    Ok(()) => {
                        let sector = Sectors(req.offset / SECTOR_SIZE);
                        let len = Sectors(req.len / SECTOR_SIZE);
                        let mut flags = BioFlags::NONE;
                        if req.flags & CMD_FLAG_FUA != 0 {
                            flags = flags.with(BioFlags::FUA);
                        }
                        if req.flags & CMD_FLAG_NO_HOLE != 0 {
                            flags = flags.with(BioFlags::NOUNMAP);
                        }
                        if zero {
                            self.submit(h, 0, |d| {
                                Bio::write_zeroes(sector, len, d).with_flags(flags)
                            });
                        } else {
                            self.submit(h, 0, |d| Bio::discard(sector, len, d).with_flags(flags));
                        }
                    }
                }
            }
            CMD_BLOCK_STATUS => {
                let res = match self.base_allocation {
                    None => Err((NBD_EINVAL, "no metadata context negotiated")),
                    Some(_) if req.len == 0 => Err((NBD_EINVAL, "zero-length block status")),
                    Some(_) => self.check(&req, CMD_FLAG_FUA | CMD_FLAG_REQ_ONE, NBD_EINVAL),
                };
                match res {
                    Err(e) => self.refuse(h, e),
                    Ok(()) => self.block_status(req),
                }
            }
            CMD_DISC => return Ok(Next::Stop),
            _ => self.refuse(h, (NBD_EINVAL, "unknown command")),
        }
        Ok(Next::Continue)
    }

    fn empty_read(&self, req: &ExtRequest) {
        self.budget.acquire(0);
        let (h, off) = (req.handle, req.offset);
        let data = if self.extended {
            ext_reply_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, h, off, 0).to_vec()
        } else if self.structured {
            chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, h, 0).to_vec()
        } else {
            simple_reply(h, 0).to_vec()
        };
        self.send(Msg::Bytes { data, cost: 0 });
    }

    fn read(&self, req: ExtRequest) {
        let len = req.len;
        self.budget.acquire(len);
        let out = self.out.clone();
        let style = self.style();
        let (h, off) = (req.handle, req.offset);
        let done = Box::new(move |res: Result<(), IoError>, buf: IoBuf| {
            let msg = match res {
                Ok(()) => {
                    let head = if style.extended {
                        let mut v = ext_reply_header(
                            REPLY_FLAG_DONE,
                            REPLY_TYPE_OFFSET_DATA,
                            h,
                            off,
                            8 + buf.len() as u64,
                        )
                        .to_vec();
                        v.extend_from_slice(&off.to_be_bytes());
                        v
                    } else if style.structured {
                        let mut v = chunk_header(
                            REPLY_FLAG_DONE,
                            REPLY_TYPE_OFFSET_DATA,
                            h,
                            8 + buf.len() as u32,
                        )
                        .to_vec();
                        v.extend_from_slice(&off.to_be_bytes());
                        v
                    } else {
                        simple_reply(h, 0).to_vec()
                    };
                    Msg::Data {
                        head,
                        buf,
                        cost: len,
                    }
                }
                Err(e) => {
                    let data = style.error(h, off, errno_to_nbd(e.errno()), "read failed");
                    Msg::Bytes { data, cost: len }
                }
            };
            out.send(msg);
        });
        self.dev.submit(Bio::read(
            Sectors(off / SECTOR_SIZE),
            IoBuf::zeroed(len as usize),
            done,
        ));
    }

    fn write(&self, r: &mut impl Read, req: ExtRequest) -> io::Result<()> {
        let len = req.len;
        self.budget.acquire(len);
        let mut buf = IoBuf::zeroed(len as usize);
        if let Err(e) = r.read_exact(buf.as_mut_slice()) {
            self.budget.release(len);
            return Err(e);
        }
        let sector = Sectors(req.offset / SECTOR_SIZE);
        let flags = if req.flags & CMD_FLAG_FUA != 0 {
            BioFlags::FUA
        } else {
            BioFlags::NONE
        };
        // The budget taken above is handed back by the writer with the reply.
        self.submit_costed(&req, len, |d| Bio::write(sector, buf, d).with_flags(flags));
        Ok(())
    }

    /// Submit a bio whose reply carries no data.
    fn submit(&self, req: &ExtRequest, cost: u64, make: impl FnOnce(udm_io::Completion) -> Bio) {
        self.budget.acquire(cost);
        self.submit_costed(req, cost, make)
    }

    /// As `submit`, with the budget already taken.
    fn submit_costed(
        &self,
        req: &ExtRequest,
        cost: u64,
        make: impl FnOnce(udm_io::Completion) -> Bio,
    ) {
        let out = self.out.clone();
        let style = self.style();
        let (h, off) = (req.handle, req.offset);
        let bio = make(Box::new(move |res: Result<(), IoError>, _buf: IoBuf| {
            let data = match res {
                Ok(()) => style.done(h, off),
                Err(e) => style.error(h, off, errno_to_nbd(e.errno()), "I/O failed"),
            };
            out.send(Msg::Bytes { data, cost });
        }));
        self.dev.submit(bio);
    }

    fn block_status(&self, req: ExtRequest) {
        let Some(ctx) = self.base_allocation else {
            return;
        };
        let raw = self.dev.extents(
            Sectors(req.offset / SECTOR_SIZE),
            Sectors(req.len / SECTOR_SIZE),
        );
        let mut ext = extents_to_descriptors(&raw, req.len, self.min_block as u32);
        if req.flags & CMD_FLAG_REQ_ONE != 0 {
            ext.truncate(1);
        }
        let v = if self.extended {
            // NBD_REPLY_TYPE_BLOCK_STATUS_EXT: context id, descriptor count, then
            // (u64 length, u64 flags) pairs.
            let mut v = Vec::with_capacity(EXT_HEADER_LEN + 8 + 16 * ext.len());
            v.extend_from_slice(&ext_reply_header(
                REPLY_FLAG_DONE,
                REPLY_TYPE_BLOCK_STATUS_EXT,
                req.handle,
                req.offset,
                8 + 16 * ext.len() as u64,
            ));
            v.extend_from_slice(&ctx.to_be_bytes());
            v.extend_from_slice(&(ext.len() as u32).to_be_bytes());
            for (len, flags) in ext {
                v.extend_from_slice(&len.to_be_bytes());
                v.extend_from_slice(&u64::from(flags).to_be_bytes());
            }
            v
        } else {
            // The request length was 32 bits, so every descriptor fits in 32 bits.
            let mut v = Vec::with_capacity(CHUNK_HEADER_LEN + 4 + 8 * ext.len());
            v.extend_from_slice(&chunk_header(
                REPLY_FLAG_DONE,
                REPLY_TYPE_BLOCK_STATUS,
                req.handle,
                4 + 8 * ext.len() as u32,
            ));
            v.extend_from_slice(&ctx.to_be_bytes());
            for (len, flags) in ext {
                v.extend_from_slice(&(len as u32).to_be_bytes());
                v.extend_from_slice(&flags.to_be_bytes());
            }
            v
        };
        self.budget.acquire(0);
        self.send(Msg::Bytes { data: v, cost: 0 });
    }
}

/// Which reply headers the connection negotiated.
#[derive(Debug, Clone, Copy)]
struct Style {
    structured: bool,
    extended: bool,
}

impl Style {
    /// A data-less success reply: a simple reply, or with extended headers a final
    /// NBD_REPLY_TYPE_NONE chunk (simple replies are not allowed there).
    fn done(self, handle: u64, offset: u64) -> Vec<u8> {
        if self.extended {
            ext_reply_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, handle, offset, 0).to_vec()
        } else {
            simple_reply(handle, 0).to_vec()
        }
    }

    /// An error reply: an error chunk if structured replies (or extended headers) were
    /// negotiated, else a simple reply.
    fn error(self, handle: u64, offset: u64, err: u32, msg: &str) -> Vec<u8> {
        if self.extended {
            ext_error_chunk(handle, offset, err, msg)
        } else if self.structured {
            error_chunk(handle, err, msg)
        } else {
            simple_reply(handle, err).to_vec()
        }
    }
}

fn state_flags(e: Extent) -> u32 {
    match e {
        Extent::Data => 0,
        Extent::Zero => STATE_ZERO,
        Extent::Hole => STATE_HOLE | STATE_ZERO,
    }
}

/// Turn device extents into `base:allocation` descriptors: nonzero lengths that are
/// multiples of `min_block`, merged when equal, summing to at most `want` bytes, never
/// empty. A run shorter than `min_block` is merged into its neighbour keeping only the
/// flags both share (clearing status bits is always safe).
pub(crate) fn extents_to_descriptors(
    raw: &[(Sectors, Extent)],
    want: u64,
    min_block: u32,
) -> Vec<(u64, u32)> {
    let min = min_block.max(1) as u64;
    let mut out: Vec<(u64, u32)> = Vec::new();
    let mut total: u64 = 0;
    let mut pending: Option<(u64, u32)> = None;
    let push = |out: &mut Vec<(u64, u32)>, len: u64, flags: u32| match out.last_mut() {
        Some((l, f)) if *f == flags => *l += len,
        _ => out.push((len, flags)),
    };
    for &(len, e) in raw {
        let mut bytes = len.0.saturating_mul(SECTOR_SIZE).min(want - total);
        if bytes == 0 {
            continue;
        }
        total += bytes;
        let flags = state_flags(e);
        // First complete a partial block left over from earlier runs.
        if let Some((plen, pflags)) = pending.take() {
            let take = (min - plen).min(bytes);
            let (plen, pflags) = (plen + take, pflags & flags);
            bytes -= take;
            if plen == min {
                push(&mut out, plen, pflags);
            } else {
                pending = Some((plen, pflags));
            }
        }
        let whole = bytes / min * min;
        if whole > 0 {
            push(&mut out, whole, flags);
        }
        if bytes > whole {
            pending = Some((bytes - whole, flags));
        }
        if total >= want || out.len() >= MAX_EXTENTS {
            break;
        }
    }
    if out.is_empty() {
        out.push((want, 0));
    }
    out.truncate(MAX_EXTENTS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_merge_and_clamp() {
        let raw = [
            (Sectors(8), Extent::Data),
            (Sectors(8), Extent::Data),
            (Sectors(16), Extent::Hole),
        ];
        assert_eq!(
            extents_to_descriptors(&raw, 32 * 512, 512),
            vec![(8192, 0), (8192, 3)]
        );
        assert_eq!(extents_to_descriptors(&raw, 16 * 512, 512), vec![(8192, 0)]);
        // Clamped to the request.
        assert_eq!(extents_to_descriptors(&raw, 4096, 512), vec![(4096, 0)]);
        // Empty input still gives one descriptor.
        assert_eq!(extents_to_descriptors(&[], 4096, 512), vec![(4096, 0)]);
    }

    #[test]
    fn descriptors_respect_min_block() {
        // 1 sector of data then 15 of hole, with 4 KiB blocks: first block mixes → flags 0.
        let raw = [(Sectors(1), Extent::Data), (Sectors(15), Extent::Hole)];
        let d = extents_to_descriptors(&raw, 8192, 4096);
        assert_eq!(d, vec![(4096, 0), (4096, 3)]);
        for (l, _) in d {
            assert_eq!(l % 4096, 0);
        }
        // Zero and hole mix to zero only.
        let raw = [(Sectors(4), Extent::Zero), (Sectors(4), Extent::Hole)];
        assert_eq!(
            extents_to_descriptors(&raw, 4096, 4096),
            vec![(4096, STATE_ZERO)]
        );
    }
}
