//! `Sock`: one connected stream, Unix or TCP, so the server and client code is written once.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A connected stream socket.
#[derive(Debug)]
pub enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Sock {
    /// Another handle on the same socket (for a separate reader and writer).
    pub fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
        })
    }
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.shutdown(how),
            Sock::Tcp(s) => s.shutdown(how),
        }
    }
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.set_read_timeout(t),
            Sock::Tcp(s) => s.set_read_timeout(t),
        }
    }
    /// Low latency for TCP (replies are written whole, so Nagle only adds delay).
    pub fn tune(&self) {
        if let Sock::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }
    /// Ask for a send buffer of `bytes` (the kernel caps it at `net.core.wmem_max`): a
    /// server's 1 MiB read replies then go into the socket whole, instead of the sending
    /// thread sleeping several times per reply until the client has read a part.
    pub fn set_send_buffer(&self, bytes: usize) {
        let v = bytes.min(i32::MAX as usize) as libc::c_int;
        // SAFETY: SO_SNDBUF reads one int from the pointer, which is valid for the call and
        // whose size is passed; the descriptor is valid while `self` is borrowed.
        unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    /// The send buffer the kernel granted (what `SO_SNDBUF` reads back).
    #[cfg(test)]
    pub fn send_buffer(&self) -> io::Result<usize> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_SNDBUF writes one int through the pointer; `len` is its size; the
        // descriptor is valid while `self` is borrowed.
        let r = unsafe {
            libc::getsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v.max(0) as usize)
    }
    /// Peer description for logs.
    pub fn peer(&self) -> String {
        match self {
            Sock::Unix(_) => "unix".to_string(),
            Sock::Tcp(s) => s
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".into()),
        }
    }
}

/// Who is at the other end, for per-client limits: the uid of a unix peer (SO_PEERCRED),
/// the address of a TCP peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerKey {
    Uid(u32),
    Ip(std::net::IpAddr),
    Unknown,
}

impl Sock {
    pub fn peer_key(&self) -> PeerKey {
        match self {
            Sock::Unix(s) => {
                // SAFETY: ucred is plain data; getsockopt writes at most `len` bytes into it
                // and `len` is its size; the fd is valid while `s` is borrowed.
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
                    if r == 0 {
                        PeerKey::Uid(cred.uid)
                    } else {
                        PeerKey::Unknown
                    }
                }
            }
            Sock::Tcp(s) => s
                .peer_addr()
                .map(|a| PeerKey::Ip(a.ip()))
                .unwrap_or(PeerKey::Unknown),
        }
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Sock::Unix(s) => s.as_raw_fd(),
            Sock::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.read(buf),
            Sock::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write(buf),
            Sock::Tcp(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write_vectored(bufs),
            Sock::Tcp(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.flush(),
            Sock::Tcp(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_buffer_grows_to_what_was_asked() {
        let (a, _b) = UnixStream::pair().unwrap();
        let s = Sock::Unix(a);
        let before = s.send_buffer().unwrap();
        let want = (before * 4).min(1 << 20);
        s.set_send_buffer(want);
        // Linux doubles what it grants (bookkeeping overhead); the cap, wmem_max, is at
        // least 208 KiB everywhere, so asking for more than the default must show.
        assert!(
            s.send_buffer().unwrap() > before,
            "SO_SNDBUF stayed at {before}"
        );
    }
}
