//! Zero-copy read replies: a pipe the writer thread moves file pages through. A read whose
//! range is plain file data (`BlockDevice::read_file_range`: linear over a file) is spliced
//! from the file's page cache into the pipe while the device pins the mapping (so a suspend
//! waits only for that step, never for the client), then from the pipe into the socket after
//! the reply header. The data is never copied in user space, and on kernels whose sockets
//! take spliced pages (Unix sockets since 6.5) not in the kernel either.
//!
//! Large writes go the other way (`Pipe::fill_from_sock`, `Pipe::drain_to_file`): the
//! payload is moved from the socket into a pipe while the request is read (page references,
//! no copy), and from the pipe into the file's page cache once the device says the range is
//! plain file data (`BlockDevice::write_file_range`): one copy instead of two (into a
//! buffer, then into the page cache). The payload is all in the pipe before the device is
//! asked, so a suspend never waits for a client that is slow to send it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Reads at least this long take the splice path (shorter ones are served inline by the
/// reader from the page cache, which costs less than a hop to the writer).
pub(crate) const SPLICE_MIN: u64 = 256 << 10;
/// The pipe's size, and so the longest read spliced (longer ones use bios).
pub(crate) const PIPE_SIZE: usize = 1 << 20;
/// After a read that could not be spliced (not a plain file range), this many large reads
/// use bios before the splice path is tried again.
const SKIP_AFTER_MISS: u32 = 64;

/// Whether the splice path is worth trying on a connection.
#[derive(Default)]
pub(crate) struct SpliceGate {
    skip: AtomicU32,
}

impl SpliceGate {
    /// True when the next large read should try the splice path (never when
    /// `UDM_NBD_NO_SPLICE=1`: benchmarks measure the generic bio path with it).
    pub(crate) fn try_now(&self) -> bool {
        if splice_disabled() {
            return false;
        }
        let s = self.skip.load(Relaxed);
        if s == 0 {
            return true;
        }
        self.skip.store(s - 1, Relaxed);
        false
    }
    /// The device said no: use bios for a while.
    pub(crate) fn missed(&self) {
        self.skip.store(SKIP_AFTER_MISS, Relaxed);
    }
}

/// Whether `UDM_NBD_NO_SPLICE=1` switched the splice path off for this process (read once).
fn splice_disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("UDM_NBD_NO_SPLICE").is_ok_and(|v| v == "1"))
}

/// One pipe (read end, write end), sized to `PIPE_SIZE`.
pub(crate) struct Pipe {
    r: File,
    w: File,
    cap: usize,
}

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

impl Pipe {
    pub(crate) fn new() -> io::Result<Pipe> {
        Pipe::sized(PIPE_SIZE)
    }

    /// A pipe of (at least, where the kernel rounds up) `size` bytes.
    fn sized(size: usize) -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array, which is valid for the call.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ / F_GETPIPE_SZ take an integer; the descriptor is valid.
        let cap = unsafe {
            libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int);
            libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        Ok(Pipe {
            r: r.into(),
            w: w.into(),
            cap: cap.max(0) as usize,
        })
    }

    /// The write end (for `vmsplice`).
    pub(crate) fn write_fd(&self) -> std::os::fd::RawFd {
        self.w.as_raw_fd()
    }

    /// Longest range one fill can take.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Move `len` bytes of `file` from `off` into the (empty) pipe. Returns the bytes moved:
    /// fewer than `len` only at the end of the file. Never blocks on the pipe: a pipe that
    /// would fill up is an error (`WouldBlock`), and the caller throws the pipe away.
    pub(crate) fn fill(&mut self, file: &File, off: u64, len: usize) -> io::Result<usize> {
        let mut done = 0;
        let mut pos = off as libc::loff_t;
        while done < len {
            // SAFETY: splice takes two valid descriptors and a pointer to our offset, which
            // is valid for the call; it moves page references, no user memory is touched.
            let r = unsafe {
                libc::splice(
                    file.as_raw_fd(),
                    &mut pos,
                    self.w.as_raw_fd(),
                    std::ptr::null_mut(),
                    len - done,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                )
            };
            match cvt(r) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Take a write's payload: `head` (the part the request reader had buffered already),
    /// then the rest, up to `len` bytes in all, straight from the socket `sock`. True when
    /// the whole payload is in the (empty before) pipe. False when the pipe filled up first
    /// (the socket's data came in pieces smaller than the pipe's pages): the `got` bytes
    /// taken so far stay in the pipe for `take` and the rest is still in the socket. Blocks
    /// on the socket as a read would, never on the pipe; an error or the end of the stream
    /// is the connection's end.
    pub(crate) fn fill_from_sock(
        &mut self,
        head: &[u8],
        sock: RawFd,
        len: usize,
        got: &mut usize,
    ) -> io::Result<bool> {
        // The pipe is empty and holds at least `len >= head.len()` bytes: this never waits.
        *got = 0;
        (&self.w).write_all(head)?;
        *got = head.len();
        let mut waited = false;
        while *got < len {
            // SAFETY: two valid descriptors, no offsets, no user memory. Non-blocking, so a
            // full pipe is an error here rather than a wait nobody would end.
            let r = unsafe {
                libc::splice(
                    sock,
                    std::ptr::null_mut(),
                    self.w.as_raw_fd(),
                    std::ptr::null_mut(),
                    len - *got,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                )
            };
            match cvt(r) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    *got += n;
                    waited = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The socket had nothing, or the pipe is full. Wait for the socket;
                    // readable and still refused after that wait: the pipe is full.
                    if waited {
                        return Ok(false);
                    }
                    wait_readable(sock)?;
                    waited = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Read the pipe's first `buf.len()` bytes into `buf` (bytes `fill_from_sock` put there).
    pub(crate) fn take(&mut self, buf: &mut [u8]) -> io::Result<()> {
        (&self.r).read_exact(buf)
    }

    /// Move `len` bytes from the pipe into `file` at byte `off` (the page cache, as a write).
    pub(crate) fn drain_to_file(&mut self, file: &File, off: u64, len: usize) -> io::Result<()> {
        self.drain(file.as_raw_fd(), Some(off), len)
    }

    /// Move `len` bytes from the pipe to `sock` (blocking on the socket as a write would).
    pub(crate) fn drain_to(&mut self, sock: &impl AsRawFd, len: usize) -> io::Result<()> {
        self.drain(sock.as_raw_fd(), None, len)
    }

    /// Move `len` bytes from the pipe to `to`, at byte `off` of it when given (a file).
    fn drain(&mut self, to: RawFd, off: Option<u64>, len: usize) -> io::Result<()> {
        let mut pos = off.map(|o| o as libc::loff_t);
        let mut left = len;
        while left > 0 {
            let at = pos
                .as_mut()
                .map_or(std::ptr::null_mut(), |p| p as *mut libc::loff_t);
            // SAFETY: two valid descriptors and, for a file, a pointer to our offset, valid
            // for the call; the kernel moves or copies the pipe's pages, no user memory is
            // touched.
            let r = unsafe {
                libc::splice(
                    self.r.as_raw_fd(),
                    std::ptr::null_mut(),
                    to,
                    at,
                    left,
                    libc::SPLICE_F_MOVE,
                )
            };
            match cvt(r) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Wait until `sock` has data to read (or its peer closed it, or it was shut down).
fn wait_readable(sock: RawFd) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd: sock,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd, valid and exclusively borrowed for the call.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::os::unix::net::UnixStream;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_whole_payload_goes_from_the_socket_through_the_pipe_into_the_file() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let data = bytes(512 << 10, 7);
        let (head, rest) = data.split_at(3000);
        let rest = rest.to_vec();
        let t = std::thread::spawn(move || a.write_all(&rest).unwrap());
        let mut p = Pipe::new().unwrap();
        let mut got = 0;
        assert!(p
            .fill_from_sock(head, b.as_raw_fd(), data.len(), &mut got)
            .unwrap());
        assert_eq!(got, data.len());
        t.join().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        p.drain_to_file(&f, 1234, data.len()).unwrap();
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, 1234).unwrap();
        assert!(back == data);
    }

    #[test]
    fn a_full_pipe_hands_back_what_it_took_and_the_rest_stays_in_the_socket() {
        // A one-page pipe cannot take a 64 KiB payload sent in small pieces: the fill stops
        // where the pipe is full, never blocks, and nothing is lost or reordered.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let data = bytes(64 << 10, 3);
        let (head, rest) = data.split_at(100);
        let rest = rest.to_vec();
        let t = std::thread::spawn(move || {
            for piece in rest.chunks(100) {
                a.write_all(piece).unwrap();
            }
        });
        let mut p = Pipe::sized(4096).unwrap();
        let mut got = 0;
        let whole = p
            .fill_from_sock(head, b.as_raw_fd(), data.len(), &mut got)
            .unwrap();
        assert!(!whole);
        assert!(got >= head.len() && got < data.len(), "took {got}");
        let mut back = vec![0u8; data.len()];
        p.take(&mut back[..got]).unwrap();
        b.read_exact(&mut back[got..]).unwrap();
        t.join().unwrap();
        assert!(back == data);
    }

    #[test]
    fn a_payload_cut_short_by_the_peer_is_an_error() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[1u8; 1000]).unwrap();
        drop(a);
        let mut p = Pipe::new().unwrap();
        let mut got = 0;
        let e = p
            .fill_from_sock(&[], b.as_raw_fd(), 256 << 10, &mut got)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got, 1000);
    }
}
