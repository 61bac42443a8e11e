//! Replies of one NBD connection: where they are written (by a request thread inline, by
//! the thread that completed a bio when the socket takes it at once, else by the
//! connection's writer thread), the in-flight budget, and the writer's spliced reads.

use crate::lend::{Lender, LEND_MIN};
use crate::proto::*;
use crate::sock::Sock;
use crate::splice::{Pipe, SpliceGate};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use std::io::{self, BufWriter, Write};
use std::net::Shutdown;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use udm_io::{Bio, BlockDevice, BufPool, IoBuf, IoError, Sectors, SECTOR_SIZE};

/// Most requests one connection may have in flight (replies not yet written).
pub(crate) const MAX_INFLIGHT_REQS: usize = 1024;
/// Most payload bytes one connection may hold in flight.
pub(crate) const MAX_INFLIGHT_BYTES: u64 = 128 << 20;
/// Replies written before the writer flushes even if more are queued.
pub(crate) const WRITE_BATCH: usize = 64;

/// Bounds what one connection holds in memory: the reader waits for room before taking
/// on another request, and the writer gives room back as replies go out.
pub(crate) struct Budget {
    pub(crate) state: Mutex<(usize, u64)>,
    pub(crate) cv: Condvar,
}

impl Budget {
    pub(crate) fn acquire(&self, bytes: u64) {
        let mut st = self.state.lock();
        while st.0 >= MAX_INFLIGHT_REQS || (st.0 > 0 && st.1 + bytes > MAX_INFLIGHT_BYTES) {
            self.cv.wait(&mut st);
        }
        st.0 += 1;
        st.1 += bytes;
    }
    pub(crate) fn release(&self, bytes: u64) {
        let mut st = self.state.lock();
        st.0 = st.0.saturating_sub(1);
        st.1 = st.1.saturating_sub(bytes);
        drop(st);
        self.cv.notify_all();
    }
    /// Requests taken whose replies are not written yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.state.lock().0
    }
}

/// One reply for the writer; `cost` is the budget it gives back once written.
pub(crate) enum Msg {
    /// A fully encoded reply.
    Bytes { data: Vec<u8>, cost: u64 },
    /// A reply header followed by read data.
    Data {
        head: Vec<u8>,
        buf: IoBuf,
        cost: u64,
    },
    /// A read for the writer to splice from the file below the device (see `splice.rs`),
    /// or to submit as a bio when the device cannot do that now.
    FileRead(FileRead),
    /// Nothing to write: the writer flushes what a completion thread left buffered.
    Flush,
}

/// A large read handed to the writer thread; its budget (`len`) is already taken.
pub(crate) struct FileRead {
    pub(crate) out: Replier,
    pub(crate) style: Style,
    pub(crate) handle: u64,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// A handle for sending replies: the shared output plus a sender to the writer thread (the
/// writer ends once every `Replier` — the reader's and one per in-flight bio — is gone).
#[derive(Clone)]
pub(crate) struct Replier {
    pub(crate) out: Arc<Out>,
    pub(crate) tx: Sender<Msg>,
}

impl Replier {
    pub(crate) fn send(&self, msg: Msg) {
        if crate::transmission::serving(&self.out) {
            let mut w = self.out.w.lock();
            self.out.write(&mut w, msg);
            self.out
                .dirty
                .store(true, std::sync::atomic::Ordering::Relaxed);
        } else if let Some(msg) = self.out.try_direct(msg, &self.tx) {
            let _ = self.tx.send(msg);
        }
    }
}

/// Replies up to this long may be sent by the thread that completed the bio.
pub(crate) const DIRECT_MAX: usize = 64 << 10;

impl Out {
    /// Send a short reply from a completion thread without the hop to the writer: only when
    /// nobody holds the output and nothing is buffered ahead of it, and only as much as the
    /// socket takes without blocking (a shared I/O thread must never wait for a client); the
    /// rest is buffered for the writer, which is told to flush it. Gives the message back
    /// when it must go the usual way.
    pub(crate) fn try_direct(&self, msg: Msg, tx: &Sender<Msg>) -> Option<Msg> {
        let (head, body, cost): (&[u8], &[u8], u64) = match &msg {
            Msg::Bytes { data, cost } => (data, &[], *cost),
            Msg::Data { head, buf, cost } => (head, buf, *cost),
            _ => return Some(msg),
        };
        let total = head.len() + body.len();
        if total > DIRECT_MAX || self.is_broken() {
            return Some(msg);
        }
        let Some(mut w) = self.w.try_lock() else {
            return Some(msg);
        };
        if !w.buffer().is_empty() {
            return Some(msg);
        }
        let iov = [
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: body.as_ptr() as *mut libc::c_void,
                iov_len: body.len(),
            },
        ];
        // SAFETY: a zeroed msghdr is valid; it points at two iovecs over buffers we hold
        // borrowed for the whole call, and sendmsg only reads them.
        let sent = unsafe {
            let mut mh: libc::msghdr = std::mem::zeroed();
            mh.msg_iov = iov.as_ptr() as *mut libc::iovec;
            mh.msg_iovlen = 2;
            libc::sendmsg(
                w.get_ref().as_raw_fd(),
                &mh,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        let sent = if sent < 0 {
            match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => 0,
                _ => {
                    self.set_broken();
                    drop(w);
                    self.budget.release(cost);
                    self.recycle(msg);
                    return None;
                }
            }
        } else {
            sent as usize
        };
        if sent < total {
            // Fits: the buffer is empty and larger than DIRECT_MAX.
            let rest = |from: usize, b: &[u8]| b[from.min(b.len())..].to_vec();
            let _ = w.write_all(&rest(sent, head));
            let _ = w.write_all(&rest(sent.saturating_sub(head.len()), body));
            drop(w);
            let _ = tx.send(Msg::Flush);
        } else {
            drop(w);
        }
        self.budget.release(cost);
        self.recycle(msg);
        None
    }

    /// Give a written reply's read buffer back to the pool (see `submit_read`).
    fn recycle(&self, msg: Msg) {
        if let Msg::Data { buf, .. } = msg {
            self.bufs.put(buf);
        }
    }
}

/// Where replies go. A reply produced on one of the connection's own request threads (a bio
/// that completed inline, e.g. a page-cache hit) is written straight to the socket and
/// flushed before that thread next waits; replies from other threads go to the writer
/// thread, so a client that stops reading never blocks a shared I/O thread.
pub(crate) struct Out {
    pub(crate) w: Mutex<BufWriter<Sock>>,
    /// Set when a write failed: later replies are dropped and the socket is shut down.
    pub(crate) broken: std::sync::atomic::AtomicBool,
    /// A request thread wrote replies that are not flushed yet.
    pub(crate) dirty: std::sync::atomic::AtomicBool,
    pub(crate) budget: Arc<Budget>,
    pub(crate) shut: Option<Sock>,
    /// The export's device, for spliced reads.
    pub(crate) dev: Arc<dyn BlockDevice>,
    /// Whether large reads try the splice path.
    pub(crate) gate: SpliceGate,
    /// Whether large writes try the splice path (`transmission`'s `write`).
    pub(crate) wgate: SpliceGate,
    /// Pipes for spliced writes, reused (one per write being served).
    pub(crate) wpipes: Mutex<Vec<Pipe>>,
    /// Lends large read replies' buffers to the socket instead of copying them (Unix
    /// sockets, when the kernel allows; see `lend.rs`).
    pub(crate) lender: Option<Mutex<Lender>>,
    /// Payload buffers, reused: a write's, filled from the socket before use, and a read's
    /// (`submit_read`), filled by the device before its reply is sent.
    pub(crate) bufs: BufPool,
}

impl Out {
    /// Flush what the request threads wrote themselves (before one waits).
    pub(crate) fn flush_local(&self) {
        if self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let mut w = self.w.lock();
            if !self.is_broken() && w.flush().is_err() {
                self.set_broken();
            }
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_broken(&self) {
        self.broken
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the reader: nobody will read our replies any more.
        if let Some(s) = &self.shut {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Write one reply (dropped if the socket already failed) and give back its budget.
    pub(crate) fn write(&self, w: &mut BufWriter<Sock>, msg: Msg) {
        let (res, cost) = match msg {
            Msg::Bytes { data, cost } => (
                if self.is_broken() {
                    Ok(())
                } else {
                    w.write_all(&data)
                },
                cost,
            ),
            Msg::Data { head, buf, cost } => {
                let res = match &self.lender {
                    _ if self.is_broken() => {
                        self.bufs.put(buf);
                        Ok(())
                    }
                    // Large bodies are lent to the socket (see `lend.rs`), not copied.
                    Some(l) if buf.len() >= LEND_MIN => l.lock().send(w, &head, buf, &self.bufs),
                    _ => {
                        let res = write_all_vectored(w, &head, &buf);
                        self.bufs.put(buf);
                        res
                    }
                };
                (res, cost)
            }
            Msg::FileRead(fr) => {
                // Only the writer thread splices (it owns the pipe); elsewhere use a bio.
                submit_read(fr);
                return;
            }
            Msg::Flush => return,
        };
        if res.is_err() {
            self.set_broken();
        }
        self.budget.release(cost);
    }
}

pub(crate) fn writer_loop(rx: Receiver<Msg>, out: Arc<Out>) {
    let mut pipe: Option<Pipe> = None;
    while let Ok(msg) = rx.recv() {
        let mut w = out.w.lock();
        out.write_msg(&mut w, &mut pipe, msg);
        for _ in 1..WRITE_BATCH {
            match rx.try_recv() {
                Ok(m) => out.write_msg(&mut w, &mut pipe, m),
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

impl Out {
    /// The writer thread's `write`: spliced reads go through `pipe`.
    pub(crate) fn write_msg(&self, w: &mut BufWriter<Sock>, pipe: &mut Option<Pipe>, msg: Msg) {
        match msg {
            Msg::FileRead(fr) => self.splice_read(w, pipe, fr),
            m => self.write(w, m),
        }
    }

    /// Serve a large read by splicing file pages: pinned by the device, the range goes into
    /// the pipe; then the reply header and the pipe go to the socket. A device that cannot
    /// (suspended, not a plain file range) gets a bio instead, whose reply comes back here.
    pub(crate) fn splice_read(
        &self,
        w: &mut BufWriter<Sock>,
        pipe: &mut Option<Pipe>,
        fr: FileRead,
    ) {
        if self.is_broken() {
            return self.budget.release(fr.len);
        }
        if pipe.is_none() {
            *pipe = Pipe::new().ok();
        }
        let Some(p) = pipe.as_mut().filter(|p| p.capacity() as u64 >= fr.len) else {
            self.gate.missed();
            return submit_read(fr);
        };
        let len = fr.len as usize;
        let got = self.dev.read_file_range(
            Sectors(fr.offset / SECTOR_SIZE),
            Sectors(fr.len / SECTOR_SIZE),
            &mut |file, off| p.fill(file, off, len),
        );
        let n = match got {
            None => {
                self.gate.missed();
                return submit_read(fr);
            }
            Some(Err(e)) => {
                // Whatever reached the pipe is stale: start the next read with a new one.
                *pipe = None;
                if e.kind() == io::ErrorKind::WouldBlock {
                    return submit_read(fr);
                }
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let data = fr
                    .style
                    .error(fr.handle, fr.offset, errno_to_nbd(errno), "read failed");
                return self.write(w, Msg::Bytes { data, cost: fr.len });
            }
            Some(Ok(n)) => n,
        };
        let head = data_head(fr.style, fr.handle, fr.offset, fr.len);
        let res = w
            .write_all(&head)
            .and_then(|_| w.flush())
            .and_then(|_| p.drain_to(w.get_ref(), n))
            // Past the end of the file a file device reads zeroes.
            .and_then(|_| w.write_all(&vec![0u8; len - n]));
        if res.is_err() {
            *pipe = None;
            self.set_broken();
        }
        self.budget.release(fr.len);
    }
}

/// Write `head` then `body`. A body at least as long as the buffer, with nothing buffered
/// ahead of it, goes out with the header in one `writev`, never copied into the buffer;
/// anything else through the buffer (which writes a long body past itself after a flush).
fn write_all_vectored(w: &mut BufWriter<Sock>, head: &[u8], body: &[u8]) -> io::Result<()> {
    if body.len() < w.capacity() || !w.buffer().is_empty() {
        return w.write_all(head).and_then(|_| w.write_all(body));
    }
    let sock = w.get_mut();
    let mut done = 0;
    while done < head.len() + body.len() {
        let h = &head[done.min(head.len())..];
        let b = &body[done.saturating_sub(head.len())..];
        match sock.write_vectored(&[io::IoSlice::new(h), io::IoSlice::new(b)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The reply header in front of `len` bytes of read data.
pub(crate) fn data_head(style: Style, h: u64, off: u64, len: u64) -> Vec<u8> {
    if style.extended {
        let mut v =
            ext_reply_header(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, h, off, 8 + len).to_vec();
        v.extend_from_slice(&off.to_be_bytes());
        v
    } else if style.structured {
        let mut v =
            chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, h, 8 + len as u32).to_vec();
        v.extend_from_slice(&off.to_be_bytes());
        v
    } else {
        simple_reply(h, 0).to_vec()
    }
}

/// Submit a read bio whose completion sends the reply through `fr.out` (the budget, `len`,
/// is already taken and goes back with the reply).
pub(crate) fn submit_read(fr: FileRead) {
    let FileRead {
        out,
        style,
        handle: h,
        offset: off,
        len,
    } = fr;
    let dev = out.out.dev.clone();
    // A recycled buffer holds older data of this connection (a large one is zeroed only
    // when first made): a read that completes without error has filled all of it (the bio
    // contract), and only then is it sent; a failed read's buffer is never sent.
    let buf = out.out.bufs.get(len as usize);
    let done = Box::new(move |res: Result<(), IoError>, buf: IoBuf| {
        let msg = match res {
            Ok(()) => Msg::Data {
                head: data_head(style, h, off, buf.len() as u64),
                buf,
                cost: len,
            },
            Err(e) => {
                out.out.bufs.put(buf);
                let data = style.error(h, off, errno_to_nbd(e.errno()), "read failed");
                Msg::Bytes { data, cost: len }
            }
        };
        out.send(msg);
    });
    dev.submit(Bio::read(Sectors(off / SECTOR_SIZE), buf, done));
}

/// Which reply headers the connection negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    pub(crate) structured: bool,
    pub(crate) extended: bool,
}

impl Style {
    /// A data-less success reply: a simple reply, or with extended headers a final
    /// NBD_REPLY_TYPE_NONE chunk (simple replies are not allowed there).
    pub(crate) fn done(self, handle: u64, offset: u64) -> Vec<u8> {
        if self.extended {
            ext_reply_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, handle, offset, 0).to_vec()
        } else {
            simple_reply(handle, 0).to_vec()
        }
    }

    /// An error reply: an error chunk if structured replies (or extended headers) were
    /// negotiated, else a simple reply.
    pub(crate) fn error(self, handle: u64, offset: u64, err: u32, msg: &str) -> Vec<u8> {
        if self.extended {
            ext_error_chunk(handle, offset, err, msg)
        } else if self.structured {
            error_chunk(handle, err, msg)
        } else {
            simple_reply(handle, err).to_vec()
        }
    }
}
