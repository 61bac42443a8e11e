//! The data path: FUSE read/write/fsync/fallocate as bios, answered from bio completions
//! (so requests overlap). Offsets that are not aligned to the device's logical block size
//! are served by read-modify-write, which excludes aligned writes while it runs.

use fuser::{Errno, ReplyData, ReplyEmpty, ReplyWrite};
use parking_lot::{Mutex, RawRwLock, RwLock};
use std::sync::Arc;
use udm_io::{Bio, BioFlags, BlockDevice, IoBuf, IoError, Sectors, SECTOR_SIZE};

type Done = Box<dyn FnOnce(Result<(), IoError>) + Send>;
type ReadGuard = parking_lot::lock_api::ArcRwLockReadGuard<RawRwLock, ()>;
type WriteGuard = parking_lot::lock_api::ArcRwLockWriteGuard<RawRwLock, ()>;

/// One open of a device file. Each request in flight holds it, so the device stays open
/// until the last bio has completed even after `release`.
pub(crate) struct OpenFile {
    pub(crate) dev: Arc<dyn BlockDevice>,
    _guard: Box<dyn Send + Sync>,
    name: String,
    /// Shared by aligned writes, exclusive for read-modify-write.
    rmw: Arc<RwLock<()>>,
}

impl OpenFile {
    pub(crate) fn new(
        dev: Arc<dyn BlockDevice>,
        guard: Box<dyn Send + Sync>,
        name: String,
    ) -> Self {
        OpenFile {
            dev,
            _guard: guard,
            name,
            rmw: Arc::new(RwLock::new(())),
        }
    }
    fn block(&self) -> u64 {
        u64::from(self.dev.limits().logical_block_size.max(512))
    }
    fn size(&self) -> u64 {
        self.dev.size().bytes().0
    }
}

fn errno(e: IoError) -> Errno {
    Errno::from_i32(e.errno())
}

/// The aligned range covering `[start, end)`, within a device of `size` bytes.
fn cover(start: u64, end: u64, block: u64, size: u64) -> (u64, u64) {
    let a0 = start / block * block;
    let a1 = end.div_ceil(block) * block;
    let a1 = if a1 > size {
        end.div_ceil(SECTOR_SIZE) * SECTOR_SIZE
    } else {
        a1
    };
    (a0, a1)
}

fn sectors(bytes: u64) -> Sectors {
    Sectors(bytes / SECTOR_SIZE)
}

/// Read `size` bytes at `offset` (short at the end of the device, empty past it).
pub(crate) fn read(f: Arc<OpenFile>, offset: u64, size: u32, reply: ReplyData) {
    let dev_size = f.size();
    if offset >= dev_size || size == 0 {
        return reply.data(&[]);
    }
    let end = (offset + u64::from(size)).min(dev_size);
    let (a0, a1) = cover(offset, end, f.block(), dev_size);
    let (from, to) = ((offset - a0) as usize, (end - a0) as usize);
    let dev = f.dev.clone();
    let bio = Bio::read(
        sectors(a0),
        IoBuf::zeroed((a1 - a0) as usize),
        Box::new(move |res, buf| {
            match res {
                Ok(()) => reply.data(&buf[from..to]),
                Err(e) => {
                    tracing::debug!("fuse: read {} @{offset}: {e}", f.name);
                    reply.error(errno(e))
                }
            }
            drop(f);
        }),
    );
    dev.submit(bio);
}

/// Write `data` at `offset`: short at the end of the device, ENOSPC past it.
pub(crate) fn write(f: Arc<OpenFile>, offset: u64, data: &[u8], sync: bool, reply: ReplyWrite) {
    if f.dev.read_only() {
        return reply.error(Errno::EPERM);
    }
    let dev_size = f.size();
    if offset >= dev_size && !data.is_empty() {
        return reply.error(Errno::ENOSPC);
    }
    let len = (data.len() as u64).min(dev_size.saturating_sub(offset)) as usize;
    if len == 0 {
        return reply.written(0);
    }
    let buf = IoBuf::from_slice(&data[..len]);
    write_bytes(
        f,
        offset,
        buf,
        sync,
        Box::new(move |res| match res {
            Ok(()) => reply.written(len as u32),
            Err(e) => reply.error(errno(e)),
        }),
    );
}

/// Write `buf` at `offset` (inside the device), by read-modify-write when unaligned.
fn write_bytes(f: Arc<OpenFile>, offset: u64, buf: IoBuf, fua: bool, done: Done) {
    let block = f.block();
    let end = offset + buf.len() as u64;
    let flags = if fua { BioFlags::FUA } else { BioFlags::NONE };
    if offset % block == 0 && end % block == 0 {
        let g: ReadGuard = f.rmw.read_arc();
        let dev = f.dev.clone();
        let bio = Bio::write(
            sectors(offset),
            buf,
            Box::new(move |res, _| {
                drop(g);
                done(res);
                drop(f);
            }),
        )
        .with_flags(flags)
        // The buffer is not needed back: a target may keep it.
        .with_spare_buf();
        return dev.submit(bio);
    }
    let g: WriteGuard = f.rmw.write_arc();
    let (a0, a1) = cover(offset, end, block, f.size());
    let dev = f.dev.clone();
    let from = (offset - a0) as usize;
    let read = Bio::read(
        sectors(a0),
        IoBuf::zeroed((a1 - a0) as usize),
        Box::new(move |res, mut whole| {
            if let Err(e) = res {
                drop(g);
                return done(Err(e));
            }
            whole[from..from + buf.len()].copy_from_slice(&buf);
            let dev = f.dev.clone();
            let bio = Bio::write(
                sectors(a0),
                whole,
                Box::new(move |res, _| {
                    drop(g);
                    done(res);
                    drop(f);
                }),
            )
            .with_flags(flags);
            dev.submit(bio);
        }),
    );
    dev.submit(read);
}

/// fsync: an empty flush of the device.
pub(crate) fn fsync(f: Arc<OpenFile>, reply: ReplyEmpty) {
    let dev = f.dev.clone();
    dev.submit(Bio::flush(Box::new(move |res, _| {
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
        drop(f);
    })));
}

/// Completes a reply once every part of an operation has (first error wins).
struct Parts {
    left: usize,
    err: Option<IoError>,
    reply: Option<ReplyEmpty>,
}

fn part(p: &Arc<Mutex<Parts>>) -> Done {
    let p = p.clone();
    Box::new(move |res| {
        let mut g = p.lock();
        if let Err(e) = res {
            g.err.get_or_insert(e);
        }
        g.left -= 1;
        if g.left == 0 {
            if let Some(r) = g.reply.take() {
                match g.err {
                    Some(e) => r.error(errno(e)),
                    None => r.ok(),
                }
            }
        }
    })
}

/// fallocate: PUNCH_HOLE (with KEEP_SIZE) discards, ZERO_RANGE writes zeroes, plain
/// allocation inside the device succeeds; unaligned edges are zeroed by read-modify-write.
pub(crate) fn fallocate(f: Arc<OpenFile>, offset: u64, len: u64, mode: i32, reply: ReplyEmpty) {
    const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
    const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
    const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
    let size = f.size();
    let Some(end) = offset.checked_add(len).filter(|_| len > 0) else {
        return reply.error(Errno::EINVAL);
    };
    if mode & !(PUNCH | KEEP | ZERO) != 0 || (mode & PUNCH != 0 && mode & ZERO != 0) {
        return reply.error(Errno::EOPNOTSUPP);
    }
    if mode & (PUNCH | ZERO) == 0 {
        // Allocation: everything inside the device already exists; it cannot grow.
        return if end <= size || mode & KEEP != 0 {
            reply.ok()
        } else {
            reply.error(Errno::EOPNOTSUPP)
        };
    }
    if mode & PUNCH != 0 && mode & KEEP == 0 {
        return reply.error(Errno::EOPNOTSUPP);
    }
    if f.dev.read_only() {
        return reply.error(Errno::EPERM);
    }
    if end > size && mode & KEEP == 0 {
        return reply.error(Errno::ENOSPC);
    }
    let end = end.min(size);
    if offset >= end {
        return reply.ok();
    }
    let block = f.block();
    let m0 = offset.div_ceil(block) * block;
    let m1 = end / block * block;
    let mut ranges: Vec<(u64, u64, bool)> = Vec::new();
    if m0 < m1 {
        if offset < m0 {
            ranges.push((offset, m0, false));
        }
        ranges.push((m0, m1, true));
        if m1 < end {
            ranges.push((m1, end, false));
        }
    } else {
        ranges.push((offset, end, false));
    }
    let parts = Arc::new(Mutex::new(Parts {
        left: ranges.len(),
        err: None,
        reply: Some(reply),
    }));
    for (s, e, aligned) in ranges {
        let done = part(&parts);
        if !aligned {
            write_bytes(f.clone(), s, IoBuf::zeroed((e - s) as usize), false, done);
            continue;
        }
        let (sec, n) = (sectors(s), sectors(e - s));
        let g: ReadGuard = f.rmw.read_arc();
        let keep = f.clone();
        let end_fn: udm_io::Completion = Box::new(move |res, _| {
            drop(g);
            done(res);
            drop(keep);
        });
        let bio = if mode & PUNCH != 0 {
            Bio::discard(sec, n, end_fn)
        } else {
            Bio::write_zeroes(sec, n, end_fn).with_flags(BioFlags::NOUNMAP)
        };
        f.dev.submit(bio);
    }
}

/// lseek SEEK_DATA / SEEK_HOLE from the device's extents (a thin device's unprovisioned
/// blocks are holes; `Zero` extents are allocated, so data). The end of the device counts
/// as a hole; offsets at or past it are ENXIO. Other whences are the kernel's business.
pub(crate) fn seek_data_hole(f: &OpenFile, offset: i64, whence: i32) -> Result<i64, Errno> {
    let want_hole = match whence {
        libc::SEEK_DATA => false,
        libc::SEEK_HOLE => true,
        _ => return Err(Errno::EINVAL),
    };
    let size = f.size();
    let Ok(off) = u64::try_from(offset) else {
        return Err(Errno::ENXIO);
    };
    if off >= size {
        return Err(Errno::ENXIO);
    }
    let start = off / SECTOR_SIZE;
    let total = size.div_ceil(SECTOR_SIZE);
    let mut pos = start;
    for (len, x) in f.dev.extents(Sectors(start), Sectors(total - start)) {
        if (x == udm_io::Extent::Hole) == want_hole {
            return Ok((pos * SECTOR_SIZE).max(off).min(size) as i64);
        }
        pos += len.0;
    }
    if want_hole {
        Ok(size as i64)
    } else {
        Err(Errno::ENXIO)
    }
}

#[cfg(test)]
mod tests {
    use super::cover;

    #[test]
    fn cover_rounds_out_within_the_device() {
        assert_eq!(cover(0, 512, 512, 4096), (0, 512));
        assert_eq!(cover(100, 700, 512, 4096), (0, 1024));
        assert_eq!(cover(5000, 6000, 4096, 16384), (4096, 8192));
        // A 4 KiB-block device whose size is not a multiple of 4 KiB.
        assert_eq!(cover(4100, 4600, 4096, 5120), (4096, 4608));
    }
}
