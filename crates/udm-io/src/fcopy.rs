//! Copying a range from one device to another inside the kernel (`copy_file_range`), when
//! both ranges are plain file data: one copy from page cache to page cache, where a copy
//! through a buffer reads into it and writes out of it.

use crate::{BlockDevice, Sectors, SECTOR_SIZE};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Copy `len` sectors from `src` at `from` to `dst` at `to` with `copy_file_range`, when
/// both devices give their range as a plain file range (`read_file_range` and
/// `write_file_range`). `false` when either declines, the kernel refuses the call, or the
/// source ends early: nothing is promised about the destination then, and the caller
/// copies the range its own way.
pub fn copy_in_kernel(
    src: &dyn BlockDevice,
    from: Sectors,
    dst: &dyn BlockDevice,
    to: Sectors,
    len: Sectors,
) -> bool {
    let Some(bytes) = len.0.checked_mul(SECTOR_SIZE) else {
        return false;
    };
    let done = src.read_file_range(from, len, &mut |sf, soff| {
        dst.write_file_range(to, len, &mut |df, doff| {
            copy_range(sf, soff, df, doff, bytes)
        })
        .unwrap_or_else(|| Err(io::ErrorKind::Unsupported.into()))
    });
    matches!(done, Some(Ok(n)) if n as u64 == bytes)
}

/// `copy_file_range` until `len` bytes are copied or the source ends; the bytes copied.
fn copy_range(src: &File, soff: u64, dst: &File, doff: u64, len: u64) -> io::Result<usize> {
    let (Ok(mut so), Ok(mut d_o)) = (i64::try_from(soff), i64::try_from(doff)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        // SAFETY: both descriptors are open files borrowed for the call; the two offsets are
        // locals the kernel reads and advances; no other memory is passed.
        let n = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d_o, want, 0)
        };
        match n {
            0 => break,
            n if n > 0 => done += n as u64,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(done as usize)
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
    fn copies_a_range_between_files() {
        let src: Vec<u8> = (0..64 * 512).map(|i| (i * 7 % 251) as u8).collect();
        let (_a, a) = file_dev(&src);
        let (bf, b) = file_dev(&[0u8; 64 * 512]);
        assert!(copy_in_kernel(
            &*a,
            Sectors(3),
            &*b,
            Sectors(10),
            Sectors(20)
        ));
        let got = std::fs::read(bf.path()).unwrap();
        assert_eq!(&got[10 * 512..30 * 512], &src[3 * 512..23 * 512]);
        assert!(got[..10 * 512].iter().all(|&x| x == 0));
        assert!(got[30 * 512..].iter().all(|&x| x == 0));
    }

    #[test]
    fn declines_what_is_not_a_file_range() {
        let (_a, a) = file_dev(&[1u8; 16 * 512]);
        let m: Arc<dyn BlockDevice> = Arc::new(MemDevice::new("m", Sectors(16)));
        assert!(!copy_in_kernel(
            &*a,
            Sectors(0),
            &*m,
            Sectors(0),
            Sectors(8)
        ));
        assert!(!copy_in_kernel(
            &*m,
            Sectors(0),
            &*a,
            Sectors(0),
            Sectors(8)
        ));
        // Past the end of the source.
        let (_b, b) = file_dev(&[0u8; 16 * 512]);
        assert!(!copy_in_kernel(
            &*a,
            Sectors(12),
            &*b,
            Sectors(0),
            Sectors(8)
        ));
    }
}
