//! Reads decrypted straight from the lower file's page cache. When the lower range is plain
//! file data (`BlockDevice::read_file_range`: a file device, or linear over one) and every
//! page of it is in the page cache, the ciphertext is read through a shared read-only
//! mapping of the file and decrypted from there into the bio's buffer: one pass over the
//! data, where a `pread` first copies it into the buffer and then decrypts it in place.
//!
//! The mapping covers the whole file and is kept (per crypt table line) while the lower
//! file stays the same one (device and inode) and is long enough; it is never written.
//! Anything else (a page not cached, a range past the end of the file, another file) says
//! `WouldBlock` and the caller reads with a bio. A page evicted between the residency check
//! and the decryption is read in by a page fault on the calling thread (rare, and what the
//! splice path of linear does too). Truncating a lower file under a live table is as unsafe
//! here as for any mapping (`SIGBUS`); the file device's size is fixed at open anyway.

use super::cipher::SectorCipher;
use parking_lot::Mutex;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// A shared read-only mapping of a whole file.
struct Map {
    ptr: *mut libc::c_void,
    len: usize,
    dev: u64,
    ino: u64,
}

// SAFETY: the mapping is read-only memory owned by this value until it is dropped; any
// thread may read it.
unsafe impl Send for Map {}
// SAFETY: as above; nothing writes through it.
unsafe impl Sync for Map {}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; no reference into the mapping
        // outlives the `Arc<Map>` that the reader holds.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The mapping of the lower file of one crypt table line.
#[derive(Default)]
pub(crate) struct FileMaps {
    cur: Mutex<Option<Arc<Map>>>,
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

fn page_size() -> usize {
    // SAFETY: sysconf takes a plain integer.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl FileMaps {
    /// A mapping of `file` (as `st` describes it) reaching at least `end` bytes.
    fn map_for(&self, file: &File, st: &libc::stat, end: usize) -> io::Result<Arc<Map>> {
        let (dev, ino) = (st.st_dev, st.st_ino);
        let mut cur = self.cur.lock();
        if let Some(m) = cur.as_ref() {
            if m.dev == dev && m.ino == ino && m.len >= end {
                return Ok(m.clone());
            }
        }
        let len = st.st_size as usize;
        if len < end || len == 0 {
            return Err(would_block());
        }
        // SAFETY: a fresh read-only shared mapping of an open file descriptor; the kernel
        // picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let m = Arc::new(Map { ptr, len, dev, ino });
        *cur = Some(m.clone());
        Ok(m)
    }

    /// Decrypt `dst.len()` bytes of `file` from byte `off` (crypt sector `iv_sector` on) into
    /// `dst` when all of them are in the page cache; `WouldBlock` when not (or when the range
    /// is not inside the file), and the caller reads with a bio.
    pub(crate) fn decrypt(
        &self,
        engine: &SectorCipher,
        file: &File,
        off: u64,
        dst: &mut [u8],
        iv_sector: u64,
    ) -> io::Result<usize> {
        // SAFETY: fstat fills a plain struct for a valid descriptor.
        let st = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(file.as_raw_fd(), &mut st) != 0 {
                return Err(io::Error::last_os_error());
            }
            st
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(would_block());
        }
        let off = usize::try_from(off).map_err(|_| would_block())?;
        let end = off.checked_add(dst.len()).ok_or_else(would_block)?;
        if end as u64 > st.st_size as u64 {
            return Err(would_block());
        }
        let map = self.map_for(file, &st, end)?;
        if !resident(&map, off, end) {
            return Err(would_block());
        }
        // SAFETY: [off, end) lies inside the mapping (len >= end), which `map` keeps alive
        // for the call; the mapping is read-only and is not the bio's buffer. Concurrent
        // writes to the file may change it under the call, which `decrypt_from` allows.
        unsafe {
            engine.decrypt_from((map.ptr as *const u8).add(off), dst, iv_sector);
        }
        Ok(dst.len())
    }
}

/// Whether every page of `[off, end)` of the mapped file is in the page cache.
fn resident(map: &Map, off: usize, end: usize) -> bool {
    let page = page_size();
    let start = off & !(page - 1);
    let pages = (end - start).div_ceil(page);
    let mut vec = [0u8; 512];
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(vec.len());
        // SAFETY: the range lies inside the mapping (page-aligned start, end <= len rounded
        // up to a page, which the mapping covers); `vec` has room for `n` entries.
        let r = unsafe {
            libc::mincore(
                (map.ptr as *mut u8).add(start + done * page).cast(),
                n * page,
                vec.as_mut_ptr().cast(),
            )
        };
        if r != 0 || vec[..n].iter().any(|v| v & 1 == 0) {
            return false;
        }
        done += n;
    }
    true
}
