//! Zero-copy read replies: a pipe the writer thread moves file pages through. A read whose
//! range is plain file data (`BlockDevice::read_file_range`: linear over a file) is spliced
//! from the file's page cache into the pipe while the device pins the mapping (so a suspend
//! waits only for that step, never for the client), then from the pipe into the socket after
//! the reply header. The data is never copied in user space, and on kernels whose sockets
//! take spliced pages (Unix sockets since 6.5) not in the kernel either.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    r: OwnedFd,
    w: OwnedFd,
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
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array, which is valid for the call.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ / F_GETPIPE_SZ take an integer; the descriptor is valid.
        let cap = unsafe {
            libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int);
            libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        Ok(Pipe {
            r,
            w,
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

    /// Move `len` bytes from the pipe to `sock` (blocking on the socket as a write would).
    pub(crate) fn drain_to(&mut self, sock: &impl AsRawFd, len: usize) -> io::Result<()> {
        let mut left = len;
        while left > 0 {
            // SAFETY: as in `fill`: two valid descriptors, no offsets, no user memory.
            let r = unsafe {
                libc::splice(
                    self.r.as_raw_fd(),
                    std::ptr::null_mut(),
                    sock.as_raw_fd(),
                    std::ptr::null_mut(),
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
