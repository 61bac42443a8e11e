//! Copying a range between two plain file ranges through one reused buffer, written with
//! `O_DIRECT`: the way the kernel's dm-snapshot copies a chunk into its COW (read the
//! origin, write the COW device, no page cache on the COW side). Next to `copy_file_range`
//! (`fcopy`) this costs a read into warm memory instead of filling fresh page-cache pages
//! and writing them back later, which is most of the copy's CPU time when the destination
//! is new (a COW file filling up). Ranges it cannot take (not 4 KiB aligned, not plain file
//! data, a file system without `O_DIRECT`) are declined, and the caller copies its own way.

use crate::{BlockDevice, Sectors, SECTOR_SIZE};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

/// The alignment `O_DIRECT` gets here: offsets, lengths and the buffer's address.
const ALIGN: usize = 4096;

/// A copier's buffer and the `O_DIRECT` descriptors it opened, per destination file.
#[derive(Default)]
pub struct DirectCopy {
    buf: Vec<u8>,
    /// `(device, inode)` → a second, `O_DIRECT` descriptor of that file (`None`: its file
    /// system refused one, or a direct write to it failed: use the caller's way from now on).
    fds: HashMap<(u64, u64), Option<File>>,
}

impl DirectCopy {
    pub fn new() -> DirectCopy {
        DirectCopy::default()
    }

    /// Copy `len` sectors from `src` at `from` to `dst` at `to`: read into the buffer, then
    /// one direct write. `false` when the range is declined or the copy fails; nothing is
    /// promised about the destination then (the caller copies the range again its own way).
    pub fn copy(
        &mut self,
        src: &dyn BlockDevice,
        from: Sectors,
        dst: &dyn BlockDevice,
        to: Sectors,
        len: Sectors,
    ) -> bool {
        let Some(bytes) = len
            .0
            .checked_mul(SECTOR_SIZE)
            .and_then(|b| usize::try_from(b).ok())
        else {
            return false;
        };
        if bytes == 0 || bytes % ALIGN != 0 {
            return false;
        }
        if self.buf.len() < bytes + ALIGN {
            self.buf = vec![0; bytes + ALIGN];
        }
        let skew = self.buf.as_ptr().align_offset(ALIGN);
        let data = &mut self.buf[skew..skew + bytes];
        let read = src.read_file_range(from, len, &mut |f, off| {
            f.read_exact_at(data, off).map(|()| bytes)
        });
        if !matches!(read, Some(Ok(n)) if n == bytes) {
            return false;
        }
        let fds = &mut self.fds;
        let wrote = dst.write_file_range(to, len, &mut |f, off| {
            if off % ALIGN as u64 != 0 {
                return Err(io::ErrorKind::Unsupported.into());
            }
            let m = f.metadata()?;
            let key = (m.dev(), m.ino());
            let direct = fds.entry(key).or_insert_with(|| reopen_direct(f).ok());
            let Some(d) = direct else {
                return Err(io::ErrorKind::Unsupported.into());
            };
            match d.write_all_at(data, off) {
                Ok(()) => Ok(bytes),
                Err(e) => {
                    // EINVAL: this file system wants other alignment; stop trying it.
                    if e.raw_os_error() == Some(libc::EINVAL) {
                        *direct = None;
                    }
                    Err(e)
                }
            }
        });
        matches!(wrote, Some(Ok(n)) if n == bytes)
    }
}

/// A new open file description of `f` for writing with `O_DIRECT` (the flag on `f` itself
/// would turn every I/O on its description direct).
fn reopen_direct(f: &File) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileDevice, MemDevice};
    use std::io::Write;
    use std::sync::Arc;

    fn file_dev(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<dyn BlockDevice>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let d = FileDevice::open(f.path(), false).unwrap();
        (f, Arc::new(d))
    }

    #[test]
    fn copies_aligned_ranges_and_declines_the_rest() {
        let src: Vec<u8> = (0..256 * 512).map(|i| (i * 7 % 251) as u8).collect();
        let (_a, a) = file_dev(&src);
        let (bf, b) = file_dev(&[0u8; 256 * 512]);
        let mut d = DirectCopy::new();
        assert!(d.copy(&*a, Sectors(3), &*b, Sectors(16), Sectors(64)));
        // The page cache of the destination sees the direct write.
        let got = std::fs::read(bf.path()).unwrap();
        assert_eq!(&got[16 * 512..80 * 512], &src[3 * 512..67 * 512]);
        assert!(got[..16 * 512].iter().all(|&x| x == 0));
        assert!(got[80 * 512..].iter().all(|&x| x == 0));
        // Not 4 KiB aligned at the destination, or in length; past the source's end.
        assert!(!d.copy(&*a, Sectors(0), &*b, Sectors(4), Sectors(8)));
        assert!(!d.copy(&*a, Sectors(0), &*b, Sectors(8), Sectors(4)));
        assert!(!d.copy(&*a, Sectors(248), &*b, Sectors(0), Sectors(16)));
        // Not a file range on either side.
        let m: Arc<dyn BlockDevice> = Arc::new(MemDevice::new("m", Sectors(64)));
        assert!(!d.copy(&*a, Sectors(0), &*m, Sectors(0), Sectors(8)));
        assert!(!d.copy(&*m, Sectors(0), &*b, Sectors(0), Sectors(8)));
    }
}
