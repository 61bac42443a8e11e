//! Zero-copy sends of read data from memory: a large reply buffer (a bio's, filled by the
//! target: decrypted, verified, zeroed...) is moved into a pipe with `vmsplice` and from the
//! pipe into a Unix socket with `splice`, so the kernel's socket buffers reference the
//! buffer's pages instead of copying them (the send copy was a quarter to a half of the
//! server's CPU for 1 MiB computed reads).
//!
//! The pages are *lent*: the client reads them straight from our memory, so the buffer must
//! not be written or freed until the client has read every byte of it. A Unix stream
//! socket's `SIOCOUTQ` is the memory still charged to it (every queued skb's truesize, which
//! is at least its data), and the stream is in order, so a lent buffer followed by at least
//! `SIOCOUTQ` bytes of later lent buffers has been read whole. Such buffers go back to the
//! connection's pool; the others wait. When the connection ends with data still unread,
//! its lent buffers are leaked, never freed (memory the client may still read must never be
//! reused), and past `MAX_LEAKED` bytes in all the process stops lending. A probe checks
//! once per process that the kernel charges spliced pages to the socket as assumed; where
//! it does not (or `UDM_NBD_NO_LEND=1`), replies are copied as before.
//!
//! A client that splices the socket into a pipe of its own instead of reading it frees the
//! queued skbs while its pipe still references our pages, so it could see a later reuse of
//! them. Pages are therefore lent only to a peer running as the daemon's own user (who can
//! read the daemon's memory anyway); other users' connections (a socket shared with a
//! group) get copies.

use crate::sock::Sock;
use crate::splice::Pipe;
use std::collections::VecDeque;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use udm_io::{BufPool, IoBuf};

/// Reply bodies at least this long are lent rather than copied.
pub(crate) const LEND_MIN: usize = 256 << 10;
/// Most bytes of lent buffers leaked (connections that ended with replies unread) before
/// the process stops lending.
const MAX_LEAKED: usize = 64 << 20;

static LEAKED: AtomicUsize = AtomicUsize::new(0);

/// Whether this process lends reply buffers at all (checked once: env switch and probe).
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        !std::env::var("UDM_NBD_NO_LEND").is_ok_and(|v| v == "1") && probe().unwrap_or(false)
    }) && LEAKED.load(Relaxed) < MAX_LEAKED
}

/// Bytes queued in a socket and not yet read by its peer (for Unix sockets: the truesize
/// of its skbs still alive).
fn outq(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which is valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// Move up to `buf.len()` bytes of our memory into `pipe` (page references, no copy).
/// Returns the bytes moved; never blocks on a full pipe.
fn vmsplice(pipe: &Pipe, buf: &[u8]) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the iovec describes `buf`, valid for the call; without SPLICE_F_GIFT the
    // kernel only takes references to the pages and never writes them. The caller keeps
    // the memory unchanged until the reader is done with it (the lending rule above).
    let r = unsafe { libc::vmsplice(pipe.write_fd(), &iov, 1, libc::SPLICE_F_NONBLOCK) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Lend 64 KiB through a socket pair and check that the socket counts it until it is read,
/// and that it arrives intact.
fn probe() -> io::Result<bool> {
    let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    let mut pipe = Pipe::new()?;
    let data: Vec<u8> = (0..64u32 << 10).map(|i| (i * 7 + 3) as u8).collect();
    let mut done = 0;
    while done < data.len() {
        let n = vmsplice(&pipe, &data[done..])?;
        pipe.drain_to(&a, n)?;
        done += n;
    }
    let charged = outq(&a)? >= data.len();
    let mut back = vec![0u8; data.len()];
    io::Read::read_exact(&mut b, &mut back)?;
    Ok(charged && back == data && outq(&a)? == 0)
}

/// One connection's lending state: the pipe the lent pages pass through and the buffers
/// the client may still be reading. Used with the connection's output lock held.
pub(crate) struct Lender {
    sock: Sock,
    pipe: Option<Pipe>,
    lent: VecDeque<IoBuf>,
}

impl Lender {
    /// A lender for replies written to `sock` (Unix sockets only: on TCP the queue empties
    /// once the peer's kernel has the data, before the client has read it; and only to a
    /// peer of the daemon's own user, see the module doc).
    pub(crate) fn new(sock: &Sock) -> Option<Lender> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if !matches!(sock, Sock::Unix(_))
            || sock.peer_key() != crate::sock::PeerKey::Uid(me)
            || !enabled()
        {
            return None;
        }
        Some(Lender {
            sock: sock.try_clone().ok()?,
            pipe: None,
            lent: VecDeque::new(),
        })
    }

    /// Write `head` then `body` to `w`'s socket, lending `body`'s pages where it can and
    /// copying the rest. `body` is kept until the client has read it (then it goes back to
    /// `bufs`). On an error the stream is broken (part of a reply may have gone out).
    pub(crate) fn send(
        &mut self,
        w: &mut BufWriter<Sock>,
        head: &[u8],
        body: IoBuf,
        bufs: &BufPool,
    ) -> io::Result<()> {
        w.write_all(head)?;
        w.flush()?;
        if self.pipe.is_none() {
            self.pipe = Pipe::new().ok();
        }
        let mut done = 0;
        let mut lent = false;
        let res = (|| {
            while done < body.len() {
                let Some(p) = self.pipe.as_mut() else { break };
                let n = match vmsplice(p, &body[done..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                lent = true;
                if let Err(e) = p.drain_to(w.get_ref(), n) {
                    // Whatever is left in the pipe must never reach the socket.
                    self.pipe = None;
                    return Err(e);
                }
                done += n;
            }
            // Anything the pipe did not take is copied.
            w.get_mut().write_all(&body[done..])
        })();
        if lent {
            self.lent.push_back(body);
        } else {
            bufs.put(body);
        }
        self.reclaim(bufs);
        res
    }

    /// Give back to `bufs` every lent buffer the client has read whole.
    fn reclaim(&mut self, bufs: &BufPool) {
        let Ok(q) = outq(&self.sock) else { return };
        // Walking from the newest: once the buffers after one cover the queue, it and all
        // before it were read.
        let mut after = 0usize;
        let mut read = 0;
        for (i, b) in self.lent.iter().enumerate().rev() {
            if after >= q {
                read = i + 1;
                break;
            }
            after += b.len();
        }
        // `read` counts the buffers from the front that were read whole (none if the
        // buffers did not cover the queue).
        for b in self.lent.drain(..read) {
            bufs.put(b);
        }
    }

    /// Buffers still lent (tests).
    #[cfg(test)]
    pub(crate) fn lent(&self) -> usize {
        self.lent.len()
    }
}

impl Drop for Lender {
    fn drop(&mut self) {
        if self.lent.is_empty() {
            return;
        }
        // A client that sent its last request may still be reading the replies: give it
        // a moment.
        for _ in 0..10 {
            match outq(&self.sock) {
                // Everything was read: the buffers are ours again.
                Ok(0) => return,
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                Err(_) => break,
            }
        }
        // The client may still read these pages: never let the allocator reuse them.
        for b in self.lent.drain(..) {
            LEAKED.fetch_add(b.len(), Relaxed);
            std::mem::forget(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn pattern(len: usize, seed: u8) -> IoBuf {
        let v: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        IoBuf::from_vec(v)
    }

    #[test]
    fn the_kernel_charges_lent_pages_until_read() {
        assert!(probe().unwrap(), "vmsplice/SIOCOUTQ probe failed");
    }

    #[test]
    fn lent_buffers_come_back_only_once_read() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let sock = Sock::Unix(a);
        sock.set_send_buffer(8 << 20);
        let mut l = Lender::new(&sock).expect("lending enabled");
        let mut w = BufWriter::new(sock.try_clone().unwrap());
        let bufs = BufPool::new(8);
        let bodies: Vec<Vec<u8>> = (0..3).map(|i| pattern(1 << 20, i).to_vec()).collect();
        for (i, body) in bodies.iter().enumerate() {
            l.send(&mut w, &[i as u8; 16], IoBuf::from_slice(body), &bufs)
                .unwrap();
        }
        // Nothing read yet: all three are still lent.
        assert_eq!(l.lent(), 3);
        // Read the first reply whole: only it may come back.
        let mut got = vec![0u8; 16 + (1 << 20)];
        b.read_exact(&mut got).unwrap();
        assert!(got[..16] == [0u8; 16] && got[16..] == bodies[0][..]);
        l.reclaim(&bufs);
        assert!(l.lent() >= 1, "a buffer the client has not read came back");
        // Overwrite what came back (as a reuse would): the unread replies stay intact.
        while let Some(mut x) = bufs_take(&bufs) {
            x.fill(0xee);
        }
        for (i, body) in bodies.iter().enumerate().skip(1) {
            b.read_exact(&mut got).unwrap();
            assert!(
                got[..16] == [i as u8; 16] && got[16..] == body[..],
                "reply {i}"
            );
        }
        l.reclaim(&bufs);
        assert_eq!(l.lent(), 0);
    }

    #[test]
    fn only_peers_of_our_own_user_get_lent_pages() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let open = std::fs::Permissions::from_mode(0o777);
        std::fs::set_permissions(dir.path(), open.clone()).unwrap();
        let path = dir.path().join("s");
        let l = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, open).unwrap();
        // A peer of our own user: lent.
        let _c = UnixStream::connect(&path).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(Lender::new(&Sock::Unix(s)).is_some());
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: the other-user case needs to switch users; not run");
            return;
        }
        // A peer running as nobody: copies only.
        let mut child = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["/usr/bin/python3", "-c"])
            .arg(
                "import socket, sys, time\n\
                 s = socket.socket(socket.AF_UNIX)\n\
                 s.connect(sys.argv[1])\n\
                 time.sleep(30)",
            )
            .arg(&path)
            .spawn()
            .expect("setpriv (util-linux) and /usr/bin/python3 run");
        let (s, _) = l.accept().unwrap();
        let copies = Lender::new(&Sock::Unix(s)).is_none();
        child.kill().ok();
        child.wait().ok();
        assert!(copies, "a peer of another user got lent pages");
    }

    fn bufs_take(p: &BufPool) -> Option<IoBuf> {
        // A pooled buffer is handed out before a fresh one; a fresh one is all zeroes.
        let b = p.get(1 << 20);
        (!b.iter().all(|&x| x == 0)).then_some(b)
    }
}
