//! A [`Disk`] over a file: an image file (512-byte sectors) or a block device (its own size
//! and logical sector size, from `BLKGETSIZE64`/`BLKSSZGET`).

use super::Disk;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

// BLKGETSIZE64 = _IOR(0x12, 114, size_t); BLKSSZGET = _IO(0x12, 104).
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKSSZGET: libc::c_ulong = 0x1268;

/// A disk read from a file or block device.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    size: u64,
    sector: u32,
}

impl FileDisk {
    /// An image file of `size` bytes (512-byte sectors).
    pub fn image(file: File, size: u64) -> FileDisk {
        FileDisk {
            file,
            size,
            sector: 512,
        }
    }

    /// An open block device: its size and logical sector size as the kernel reports them
    /// (size 0 and 512-byte sectors when it does not answer).
    pub fn block_device(file: File) -> FileDisk {
        let mut bytes: u64 = 0;
        let mut ss: libc::c_int = 512;
        let fd = file.as_raw_fd();
        // SAFETY: the fd is open for the duration of the calls; BLKGETSIZE64 writes one u64
        // and BLKSSZGET one int into the valid, properly aligned locals passed.
        unsafe {
            if libc::ioctl(fd, BLKGETSIZE64, &mut bytes as *mut u64) != 0 {
                bytes = 0;
            }
            if libc::ioctl(fd, BLKSSZGET, &mut ss as *mut libc::c_int) != 0 || ss <= 0 {
                ss = 512;
            }
        }
        FileDisk {
            file,
            size: bytes,
            sector: ss as u32,
        }
    }
}

impl Disk for FileDisk {
    fn sector_size(&self) -> u32 {
        self.sector
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_reads_and_short_reads_fail() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &[7u8; 1024]).unwrap();
        let mut d = FileDisk::image(f, 1024);
        assert_eq!((d.size(), d.sector_size()), (1024, 512));
        let mut b = [0u8; 4];
        d.read_at(1020, &mut b).unwrap();
        assert_eq!(b, [7; 4]);
        assert!(d.read_at(1022, &mut b).is_err());
        // A regular file answers no block ioctl: size 0, 512-byte sectors.
        let d = FileDisk::block_device(tempfile::tempfile().unwrap());
        assert_eq!((d.size(), d.sector_size()), (0, 512));
    }
}
