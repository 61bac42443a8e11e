//! A read-only shared mapping of a regular file, for readers that transform the bytes anyway
//! (`BlockDevice::read_mapped`: crypt decrypts straight from the page cache into its reply
//! buffer, where a `pread` would first copy the page cache into that buffer — measured, that
//! copy cost more CPU than the AES-XTS decryption of the same bytes).
//!
//! Only ranges whose pages are all in the page cache are handed out (checked with `mincore`
//! first): a page that is not would be read from the disk in a page fault, blocking the
//! calling thread, which must not wait (`BlockDevice::submit`'s contract). Pages past the end
//! of a file that was truncated under the device are not in the page cache either, so a range
//! the file no longer has is read with bios (which see the short file). A truncation in the
//! microseconds between the check and the access faults (SIGBUS): the file device reads under
//! `sigbus::guarded`, which turns that into a refusal, and poisons the mapping (the fault left
//! zero pages in it), so it is never read again.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;

/// Pages checked at once with `mincore` (longer ranges are checked in steps).
const MINCORE_STEP: usize = 512;
const PAGE: u64 = 4096;

/// The whole file (its length when the device was opened), mapped read-only and shared.
pub(crate) struct FileMap {
    ptr: *mut u8,
    len: usize,
    /// A read faulted (the file shrank): the mapping holds zero pages now, never use it.
    poisoned: std::sync::atomic::AtomicBool,
}

// SAFETY: the mapping is read-only memory owned by this value; sharing `&[u8]` views of it
// between threads is as safe as sharing any immutable bytes.
unsafe impl Send for FileMap {}
// SAFETY: as above; no method mutates through the pointer.
unsafe impl Sync for FileMap {}

impl FileMap {
    /// Map `len` bytes of `file` from offset 0; `None` when that fails (or `len` is 0).
    pub(crate) fn new(file: &File, len: u64) -> Option<FileMap> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        // SAFETY: a fresh read-only shared mapping chosen by the kernel; the descriptor is
        // valid for the call (the mapping keeps its own reference to the file).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(FileMap {
            ptr: p.cast(),
            len,
            poisoned: Default::default(),
        })
    }

    /// The bytes `[off, off+len)` when every page of them is in the page cache now.
    pub(crate) fn resident(&self, off: u64, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len as u64)?;
        if len == 0 || end > self.len as u64 || self.poisoned.load(Relaxed) {
            return None;
        }
        let first = off / PAGE * PAGE;
        let pages = (end - first).div_ceil(PAGE) as usize;
        let mut vec = [0u8; MINCORE_STEP];
        let mut done = 0;
        while done < pages {
            let n = (pages - done).min(MINCORE_STEP);
            // The last page may reach past the mapping's length (a file not a whole number
            // of pages long); mincore takes whole pages of the mapping, which covers it.
            // SAFETY: the range lies within our mapping (page-aligned start, whole pages,
            // the mapping's pages cover `self.len` rounded up); `vec` has room for `n`.
            let r = unsafe {
                libc::mincore(
                    self.ptr.add((first + done as u64 * PAGE) as usize).cast(),
                    n * PAGE as usize,
                    vec.as_mut_ptr(),
                )
            };
            if r != 0 || vec[..n].iter().any(|v| v & 1 == 0) {
                return None;
            }
            done += n;
        }
        // SAFETY: within the mapping (checked above), read-only, alive as long as `self`.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(off as usize), len) })
    }
}

impl FileMap {
    /// Never hand out this mapping again (a guarded read of it faulted).
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Relaxed);
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `new` made; no view of it outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A file of `pages` pages of `byte`, open for reading and writing (the unit tests of this
/// module and of `sigbus`); the directory lives as long as the returned guard.
#[cfg(test)]
pub(crate) fn page_file(byte: u8, pages: usize) -> (tempfile::TempDir, File) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, vec![byte; pages * PAGE as usize]).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    (dir, f)
}

#[cfg(test)]
mod tests {
    use super::{page_file, FileMap};
    use crate::sigbus::{guarded, Truncated};

    #[test]
    fn a_range_truncated_after_its_residency_check_faults_into_a_refusal_and_poisons() {
        let (_dir, f) = page_file(9, 8);
        let m = FileMap::new(&f, 8 * 4096).unwrap();
        let b = m
            .resident(4096, 4 * 4096)
            .expect("just written: in the page cache");
        // Another program cuts the file between the check and the read.
        f.set_len(4096).unwrap();
        let r = guarded(b, |b| b.iter().map(|&x| x as u64).sum::<u64>());
        assert_eq!(r, Err(Truncated));
        m.poison();
        assert!(
            m.resident(0, 4096).is_none(),
            "a poisoned mapping is never handed out"
        );
    }
}
