//! Server transmission phase: a reader loop that validates requests and submits bios without
//! waiting; replies go out as bios complete (`reply.rs`).

use crate::handshake::Negotiated;
use crate::proto::*;
use crate::reply::*;
use crate::sock::Sock;
use crate::splice::{Pipe, SpliceGate, PIPE_SIZE, SPLICE_MIN};
use crossbeam_channel::unbounded;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::cell::Cell;
use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use udm_io::{Bio, BioFlags, BlockDevice, BufPool, Extent, IoBuf, IoError, Sectors, SECTOR_SIZE};

/// Most descriptors in one block status reply.
const MAX_EXTENTS: usize = 1024;

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

/// Most threads serving one connection's requests (see `Workers`) unless
/// `UDM_NBD_REQUEST_THREADS` says otherwise (1 to 64).
pub(crate) const MAX_WORKERS: usize = 4;
/// Most threads once writes find no thread waiting for the next request (each write is done
/// synchronously on its request thread, so this is how many a connection has in the file
/// system at once); `UDM_NBD_WRITE_THREADS` overrides. Measured side by side with nbdkit
/// (4k randwrite qd16): 4 per connection gave 1.40-1.94x nbdkit with 1 and 4 connections,
/// 16 gave 0.71-0.76x with 4 connections (64 writers contending in the file system).
pub(crate) const MAX_WRITE_WORKERS: usize = 4;

/// The request-thread cap in force for a request (`write`: a write), read once.
fn max_workers(write: bool) -> usize {
    static N: std::sync::OnceLock<[usize; 2]> = std::sync::OnceLock::new();
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(default, |n| n.clamp(1, 64))
    };
    let caps = N.get_or_init(|| {
        let any = env("UDM_NBD_REQUEST_THREADS", MAX_WORKERS);
        [
            any,
            env("UDM_NBD_WRITE_THREADS", MAX_WRITE_WORKERS).max(any),
        ]
    });
    caps[write as usize]
}

/// The threads that take a connection's requests in turn (leader/follower, as nbdkit's
/// parallel thread model): one holds the socket's read side and reads the next request (with
/// a write's payload), then lets go so the next thread is already waiting for the request
/// after it while this one serves its own, inline where the device allows, writing the reply
/// itself. A lone thread that reads, serves and replies in a loop is always the one the
/// scheduler must wake for the next request just after it ran; on a busy machine that doubled
/// the latency of queue-depth-1 reads, and pipelined writes (each a few tens of µs in the
/// file system) ran one after the other. Threads are added as requests find no thread
/// waiting, up to `MAX_WORKERS` (`MAX_WRITE_WORKERS` when the request is a write).
struct Workers<R> {
    reader: Mutex<BufReader<R>>,
    /// Set when one thread saw the end (EOF, NBD_CMD_DISC, an error): the others stop.
    stop: AtomicBool,
    /// Threads waiting for the read side.
    idle: AtomicUsize,
    /// Threads serving a request they took (from reading it until it is submitted or
    /// answered); the others are waiting for the read side or on their way there.
    serving: AtomicUsize,
    /// Threads started.
    started: AtomicUsize,
    /// The first error a thread ended with.
    err: Mutex<Option<io::Error>>,
    /// Whether a wait for the next request polls first.
    spin: crate::spin::Spin,
}

thread_local! {
    /// The connection (its `Out`) this thread serves requests of, if any.
    static SERVING: Cell<usize> = const { Cell::new(0) };
}

/// Whether the current thread is one of `out`'s request threads (which write replies
/// straight to the socket and flush them before they next wait).
pub(crate) fn serving(out: &Out) -> bool {
    SERVING.with(|s| s.get() == out as *const Out as usize)
}

/// Serve requests until the client disconnects, sends garbage, or the socket is shut down.
/// Returns once every in-flight bio has completed and its reply was written (or the socket
/// failed); the export handle is dropped after that.
pub(crate) fn serve<R: Read + Send + AsRawFd>(
    reader: BufReader<R>,
    sock: &Sock,
    n: Negotiated,
) -> io::Result<()> {
    let _counted = crate::spin::Counted::new();
    let (tx, rx) = unbounded();
    let budget = Arc::new(Budget {
        state: Mutex::new((0, 0)),
        cv: Condvar::new(),
    });
    let out = Arc::new(Out {
        w: Mutex::new(BufWriter::with_capacity(256 << 10, sock.try_clone()?)),
        broken: std::sync::atomic::AtomicBool::new(false),
        dirty: std::sync::atomic::AtomicBool::new(false),
        budget: budget.clone(),
        shut: sock.try_clone().ok(),
        dev: n.handle.dev.clone(),
        gate: SpliceGate::default(),
        wgate: SpliceGate::default(),
        wpipes: Mutex::new(Vec::new()),
        lender: crate::lend::Lender::new(sock).map(Mutex::new),
        // In flight at queue depth 16 plus the lent ones the client is still reading.
        bufs: BufPool::new(32),
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
    let workers = Workers {
        reader: Mutex::new(reader),
        stop: AtomicBool::new(false),
        idle: AtomicUsize::new(0),
        serving: AtomicUsize::new(0),
        started: AtomicUsize::new(1),
        err: Mutex::new(None),
        spin: Default::default(),
    };
    std::thread::scope(|s| work(&conn, &workers, s));
    conn.out.out.flush_local();
    // The writer ends when every sender is gone: ours here, and one per in-flight bio.
    drop(conn);
    let _ = writer.join();
    drop(n);
    match workers.err.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One request thread: take requests in turn with the others until the connection ends.
fn work<'s, R: Read + Send + AsRawFd>(
    conn: &'s Conn,
    w: &'s Workers<R>,
    scope: &'s std::thread::Scope<'s, '_>,
) {
    SERVING.with(|s| s.set(Arc::as_ptr(&conn.out.out) as usize));
    // This thread only serves this connection: a backend may do a write here synchronously
    // rather than hop to its pool and back (the reply is written here either way).
    let res = udm_io::with_blocking_submit(|| take_requests(conn, w, scope));
    SERVING.with(|s| s.set(0));
    // Flush what this thread wrote before it goes.
    conn.out.out.flush_local();
    if let Err(e) = res {
        w.err.lock().get_or_insert(e);
    }
    w.stop.store(true, Relaxed);
    // Another thread may have taken the read side the moment this one let it go, before
    // `stop` was set, and now waits for a request the client will never send (it waits for
    // the close): end that read, so every thread sees the stop.
    if let Some(s) = &conn.out.out.shut {
        let _ = s.shutdown(std::net::Shutdown::Read);
    }
}

fn take_requests<'s, R: Read + Send + AsRawFd>(
    conn: &'s Conn,
    w: &'s Workers<R>,
    scope: &'s std::thread::Scope<'s, '_>,
) -> io::Result<()> {
    let hlen = if conn.extended {
        EXT_HEADER_LEN
    } else {
        REQUEST_LEN
    };
    loop {
        // Replies written by these threads go out before one would wait: unless a request
        // is already buffered for us to take (pipelined requests get their replies
        // batched), flush, then take the read side.
        let mut r = match w.reader.try_lock() {
            Some(r) if r.buffer().len() >= hlen => r,
            Some(r) => {
                conn.out.out.flush_local();
                r
            }
            None => {
                conn.out.out.flush_local();
                w.idle.fetch_add(1, Relaxed);
                let r = w.reader.lock();
                w.idle.fetch_sub(1, Relaxed);
                r
            }
        };
        if w.stop.load(Relaxed) {
            return Ok(());
        }
        if r.buffer().len() < hlen {
            // About to wait for the client: flush what was written since.
            conn.out.out.flush_local();
        }
        // Nothing buffered: poll the socket a little before the read sleeps (`spin`).
        let waited = (r.buffer().len() < hlen).then(|| {
            // At most one request in flight, and that one served by another request thread
            // itself (see `spin`).
            let alone = || {
                let n = conn.budget.in_flight();
                n == 0 || n == 1 && w.serving.load(Relaxed) == 1
            };
            w.spin.before_wait(r.get_ref().as_raw_fd(), alone)
        });
        let mut hdr = [0u8; EXT_HEADER_LEN];
        match r.read_exact(&mut hdr[..hlen]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(waited) = waited {
            w.spin.waited(waited);
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
        // Small writes take the thread-count rule below that suits them (see `more`).
        let small = req.len < SPLICE_MIN;
        let more = |write: bool| {
            // Nobody is waiting to read the request after this one: add a thread (it
            // starts by waiting for the read side). For a small write, only when every
            // other thread is serving a request: one that has served its request and is
            // still sending the reply is on its way to the read side. Counting only threads
            // already waiting there made a thread whenever the next write came in while the
            // last reply was still being sent, as at queue depth 1, and the writes then went
            // round every thread, each woken cold: measured, 4 KiB writes at queue depth 1
            // ran 8-10% faster with this count. Reads and large writes keep the first count
            // (with the second, one of three runs of 4 KiB reads at queue depth 1 was 11%
            // slower, and 1 MiB writes at queue depth 16 were 5% slower in 4 of 5 rounds).
            let busy = if write && small {
                w.started.load(Relaxed) <= w.serving.load(Relaxed)
            } else {
                w.idle.load(Relaxed) == 0
            };
            if !busy || w.stop.load(Relaxed) {
                return;
            }
            let cap = max_workers(write);
            let room = |n: usize| (n < cap).then_some(n + 1);
            if w.started.fetch_update(Relaxed, Relaxed, room).is_err() {
                return;
            }
            let spawned = std::thread::Builder::new()
                .name("nbd-conn-req".into())
                .spawn_scoped(scope, move || work(conn, w, scope));
            if spawned.is_err() {
                w.started.fetch_sub(1, Relaxed);
            }
        };
        w.serving.fetch_add(1, Relaxed);
        let next = conn.request(r, req, more);
        w.serving.fetch_sub(1, Relaxed);
        match next? {
            Next::Continue => {}
            Next::Stop => return Ok(()),
        }
    }
}

/// Where a write's payload went (`Conn::splice_payload`).
enum Spliced {
    /// Not spliced: it is all still to be read.
    No,
    /// All of it is in the pipe.
    Whole(Pipe),
    /// The pipe filled up after this many bytes; the rest is still to be read.
    Part(Pipe, usize),
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

    /// Handle one request read from `r` (the read side, held by this thread): what the
    /// request carries is read before the read side is let go; `more` is called once this
    /// thread no longer holds it and serves the request (to start another thread when
    /// none waits for the next one).
    fn request<R: Read + AsRawFd>(
        &self,
        mut r: MutexGuard<'_, BufReader<R>>,
        mut req: ExtRequest,
        more: impl FnOnce(bool),
    ) -> io::Result<Next> {
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
                drain(&mut *r, req.len)?;
                drop(r);
                self.refuse(&req, (NBD_EINVAL, "this command takes no payload"));
                return Ok(Next::Continue);
            }
        }
        let h = &req;
        if req.cmd == CMD_WRITE {
            return self.write_cmd(r, req, more);
        }
        drop(r);
        if req.cmd == CMD_DISC {
            return Ok(Next::Stop);
        }
        more(false);
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
            _ => self.refuse(h, (NBD_EINVAL, "unknown command")),
        }
        Ok(Next::Continue)
    }

    /// NBD_CMD_WRITE: its payload is read (or drained when refused) before the read side
    /// is let go.
    fn write_cmd<R: Read + AsRawFd>(
        &self,
        mut r: MutexGuard<'_, BufReader<R>>,
        req: ExtRequest,
        more: impl FnOnce(bool),
    ) -> io::Result<Next> {
        let h = &req;
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
                drain(&mut *r, req.len)?;
                drop(r);
                more(false);
                self.refuse(h, e);
            }
            Ok(()) if req.len == 0 => {
                drop(r);
                more(false);
                self.ok(h);
            }
            Ok(()) => self.write(r, req, more)?,
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
        let fr = FileRead {
            out: self.out.clone(),
            style: self.style(),
            handle: req.handle,
            offset: req.offset,
            len,
        };
        // Large page-aligned reads go to the writer to be spliced (when the device is a plain
        // file range); the rest are bios, served inline from the page cache when they can be.
        if (SPLICE_MIN..=PIPE_SIZE as u64).contains(&len)
            && req.offset % 4096 == 0
            && self.out.out.gate.try_now()
        {
            let _ = self.out.tx.send(Msg::FileRead(fr));
        } else {
            submit_read(fr);
        }
    }

    fn write<R: Read + AsRawFd>(
        &self,
        mut r: MutexGuard<'_, BufReader<R>>,
        req: ExtRequest,
        more: impl FnOnce(bool),
    ) -> io::Result<()> {
        let len = req.len;
        self.budget.acquire(len);
        let buf = match self.splice_payload(&mut *r, &req) {
            Ok(Spliced::Whole(p)) => {
                drop(r);
                more(true);
                self.write_spliced(&req, p);
                return Ok(());
            }
            Ok(Spliced::Part(p, got)) => self.read_payload(&mut *r, len, Some((p, got))),
            Ok(Spliced::No) => self.read_payload(&mut *r, len, None),
            Err(e) => Err(e),
        };
        drop(r);
        let buf = match buf {
            Ok(buf) => buf,
            Err(e) => {
                self.budget.release(len);
                return Err(e);
            }
        };
        more(true);
        // The budget taken above is handed back by the writer with the reply.
        self.submit_write(&req, buf);
        Ok(())
    }

    /// A write's payload (`len` bytes) in a buffer: what a pipe that filled up took first
    /// (`part`: the pipe and its byte count), then the rest from the socket.
    fn read_payload<R: Read>(
        &self,
        r: &mut BufReader<R>,
        len: u64,
        part: Option<(Pipe, usize)>,
    ) -> io::Result<IoBuf> {
        let mut buf = self.out.out.bufs.get(len as usize);
        let mut got = 0;
        if let Some((mut p, n)) = part {
            p.take(&mut buf.as_mut_slice()[..n])?;
            self.out.out.wpipes.lock().push(p);
            got = n;
        }
        r.read_exact(&mut buf.as_mut_slice()[got..])?;
        Ok(buf)
    }

    /// Submit the write of `buf` (the payload of `req`), its budget already taken.
    fn submit_write(&self, req: &ExtRequest, buf: IoBuf) {
        let sector = Sectors(req.offset / SECTOR_SIZE);
        let flags = if req.flags & CMD_FLAG_FUA != 0 {
            BioFlags::FUA
        } else {
            BioFlags::NONE
        };
        // The buffer only goes back to the pool: a target may keep it.
        self.submit_costed(req, req.len, |d| {
            Bio::write(sector, buf, d)
                .with_flags(flags)
                .with_spare_buf()
        });
    }

    /// Large writes without FUA (which want a bio's durability handling) take their payload
    /// into a pipe, straight from the socket (`Pipe::fill_from_sock`), when the export's
    /// writes are spliced (see `write_spliced`).
    fn splice_payload<R: Read + AsRawFd>(
        &self,
        r: &mut BufReader<R>,
        req: &ExtRequest,
    ) -> io::Result<Spliced> {
        let out = &self.out.out;
        if !(SPLICE_MIN..=PIPE_SIZE as u64).contains(&req.len)
            || req.flags & CMD_FLAG_FUA != 0
            || !out.wgate.try_now()
        {
            return Ok(Spliced::No);
        }
        let pooled = out.wpipes.lock().pop();
        let Some(mut p) = pooled.or_else(|| Pipe::new().ok()) else {
            return Ok(Spliced::No);
        };
        let len = req.len as usize;
        if p.capacity() < len {
            out.wgate.missed();
            return Ok(Spliced::No);
        }
        let head = r.buffer().len().min(len);
        let mut got = 0;
        let whole = p.fill_from_sock(&r.buffer()[..head], r.get_ref().as_raw_fd(), len, &mut got);
        r.consume(head);
        Ok(if whole? {
            Spliced::Whole(p)
        } else {
            Spliced::Part(p, got)
        })
    }

    /// Write a payload that is in `p` to the device: from the pipe into the file below when
    /// the range is plain file data there (`BlockDevice::write_file_range`), else as a bio.
    fn write_spliced(&self, req: &ExtRequest, mut p: Pipe) {
        let len = req.len as usize;
        let (sector, n) = (
            Sectors(req.offset / SECTOR_SIZE),
            Sectors(req.len / SECTOR_SIZE),
        );
        let res = self.dev.write_file_range(sector, n, &mut |file, off| {
            p.drain_to_file(file, off, len).map(|()| len)
        });
        let res = match res {
            Some(Ok(w)) if w == len => Ok(()),
            Some(Ok(_)) => Err(io::Error::from_raw_os_error(libc::EIO)),
            Some(Err(e)) => Err(e),
            None => {
                // Not a plain file range (now): the payload goes as a bio after all.
                self.out.out.wgate.missed();
                let mut buf = self.out.out.bufs.get(len);
                match p.take(buf.as_mut_slice()) {
                    Ok(()) => {
                        self.out.out.wpipes.lock().push(p);
                        return self.submit_write(req, buf);
                    }
                    Err(e) => {
                        self.out.out.bufs.put(buf);
                        Err(e)
                    }
                }
            }
        };
        let style = self.style();
        let (h, off) = (req.handle, req.offset);
        let data = match res {
            Ok(()) => {
                self.out.out.wpipes.lock().push(p);
                style.done(h, off)
            }
            // What is left in the pipe is stale: the pipe goes with it.
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                style.error(h, off, errno_to_nbd(errno), "write failed")
            }
        };
        self.send(Msg::Bytes {
            data,
            cost: req.len,
        });
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
        let bio = make(Box::new(move |res: Result<(), IoError>, buf: IoBuf| {
            out.out.bufs.put(buf);
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
