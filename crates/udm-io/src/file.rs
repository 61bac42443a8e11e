//! `FileDevice`: a regular file or a real block device as backing, via pread/pwrite on the I/O pool.

use crate::device::Extent;
use crate::{
    Bio, BioFlags, BlockDevice, DevId, IoError, Limits, Op, Sectors, WorkerPool, SECTOR_SIZE,
};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Backing store on a file or block device. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct FileDevice(Arc<Inner>);

struct Inner {
    file: File,
    size: Sectors,
    id: DevId,
    read_only: bool,
    block: bool,
    limits: Limits,
    /// Whether RWF_NOWAIT works here, for [reads, writes].
    nowait: [AtomicBool; 2],
    /// `now_ns()` before which timed inline writes are off (after a slow one).
    inline_writes_after: AtomicU64,
    /// The inline fast path is allowed at all (`set_inline`).
    inline: AtomicBool,
    /// The file mapped for `read_mapped`, made on first use (`None` inside: mapping failed).
    map: std::sync::OnceLock<Option<crate::filemap::FileMap>>,
    /// Writes waiting for one of the few pool threads that write this file (regular files).
    writes: crate::writeq::WriteQueue,
}

/// How long inline writes stay off after one that blocked.
const INLINE_WRITE_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);
/// An inline write that slept at least this long turns inline writes off (see `try_nowait`);
/// a shorter sleep is a file lock another writer held for one write's time.
const INLINE_WRITE_SLOW_NS: u64 = 2_000_000;

/// Nanoseconds since the first call (a cheap monotonic clock for the back-off).
fn now_ns() -> u64 {
    static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    T0.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}

/// Times this thread gave up the CPU of its own accord (slept), from `getrusage`.
fn voluntary_switches() -> i64 {
    // SAFETY: a zeroed rusage is valid; getrusage fills it in and keeps no pointer.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru.ru_nvcsw
    }
}

/// Largest bio tried inline: bigger copies are better spread over the pool's threads (and
/// the submitter, e.g. an NBD connection, keeps reading requests meanwhile).
const NOWAIT_MAX_SECTORS: u64 = 256;

// BLKGETSIZE64 = _IOR(0x12, 114, size_t); BLKSSZGET = _IO(0x12, 104); BLKPBSZGET = _IO(0x12,123)
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKPBSZGET: libc::c_ulong = 0x127b;
const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKZEROOUT: libc::c_ulong = 0x127f;

impl FileDevice {
    /// Open `path` (a regular file or a block device). `label` is how it prints in tables
    /// for regular files; block devices print as their `major:minor`.
    pub fn open(path: &Path, read_only: bool) -> io::Result<FileDevice> {
        let file = match OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            // A file we may only read still makes a read-only backing device.
            Err(e)
                if !read_only
                    && matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)) =>
            {
                return FileDevice::open(path, true);
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let ft = meta.file_type();
        let (size, id, block, limits) = if ft.is_block_device() {
            let fd = file.as_raw_fd();
            let mut bytes: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid for the call.
            let r = unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut bytes as *mut u64) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut lbs: libc::c_int = 512;
            let mut pbs: libc::c_uint = 512;
            // SAFETY: BLKSSZGET writes one int through the pointer, valid for the call.
            unsafe { libc::ioctl(fd, BLKSSZGET, &mut lbs as *mut libc::c_int) };
            // SAFETY: BLKPBSZGET writes one unsigned int through the pointer, valid for the call.
            unsafe { libc::ioctl(fd, BLKPBSZGET, &mut pbs as *mut libc::c_uint) };
            let rdev = meta.rdev();
            let id = DevId::Num(libc::major(rdev), libc::minor(rdev));
            let lbs = lbs.max(512) as u32;
            (
                Bytes64(bytes).sectors(),
                id,
                true,
                queue_limits(libc::major(rdev), libc::minor(rdev), lbs, pbs.max(lbs)),
            )
        } else if ft.is_file() {
            let label = path.to_string_lossy().into_owned();
            (
                Bytes64(meta.len()).sectors(),
                DevId::Path(label),
                false,
                Limits::default(),
            )
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            ));
        };
        let ro = read_only || file_is_read_only(&file);
        Ok(FileDevice(Arc::new(Inner {
            file,
            size,
            id,
            read_only: ro,
            block,
            limits,
            nowait: [AtomicBool::new(true), AtomicBool::new(true)],
            inline_writes_after: AtomicU64::new(0),
            inline: AtomicBool::new(true),
            map: std::sync::OnceLock::new(),
            writes: Default::default(),
        })))
    }

    /// Allow or forbid the inline fast path (allowed by default). Forbidden, every bio goes
    /// through the I/O pool: for tests that must cover that path, and for benchmarks.
    pub fn set_inline(&self, allowed: bool) {
        self.0.inline.store(allowed, Relaxed);
    }

    /// (st_dev, st_ino) identity, so one file opened twice is shared.
    pub fn identity(path: &Path) -> io::Result<(u64, u64)> {
        let m = std::fs::metadata(path)?;
        if m.file_type().is_block_device() {
            Ok((0, m.rdev()))
        } else {
            Ok((m.dev(), m.ino()))
        }
    }

    fn run(inner: &Inner, bio: &mut Bio) -> Result<(), IoError> {
        if bio.op != Op::Flush && bio.end() > inner.size {
            return Err(IoError::Io);
        }
        let off = bio.sector.0 * SECTOR_SIZE;
        if bio.op.is_write() && inner.read_only {
            return Err(IoError::ReadOnly);
        }
        if bio.flags.contains(BioFlags::PREFLUSH) {
            inner.file.sync_data()?;
        }
        match bio.op {
            Op::Read => {
                let buf = bio.buf_mut();
                let mut done = 0;
                while done < buf.len() {
                    match inner.file.read_at(&mut buf[done..], off + done as u64) {
                        Ok(0) => {
                            buf[done..].fill(0);
                            break;
                        }
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Op::Write if bio.flags.contains(BioFlags::FUA) => {
                // Durable on return, and only this range: a flush of the whole file would
                // also wait for every other dirty page (a metadata target's FUA commit
                // behind the data writes it does not depend on).
                return inner.write_dsync(bio.buf(), off);
            }
            Op::Write => inner.file.write_all_at(bio.buf(), off)?,
            Op::Flush => inner.file.sync_data()?,
            Op::Discard => inner.deallocate(off, bio.len().bytes().0, false)?,
            Op::WriteZeroes => {
                let len = bio.len().bytes().0;
                let keep = bio.flags.contains(BioFlags::NOUNMAP);
                inner
                    .deallocate(off, len, true)
                    .or_else(|_| inner.zero_fill(off, len))?;
                if keep && !inner.block {
                    // NOUNMAP: the range must stay allocated.
                    inner.zero_fill(off, len)?;
                }
            }
        }
        if bio.flags.contains(BioFlags::FUA) && bio.op.is_write() {
            inner.file.sync_data()?;
        }
        Ok(())
    }
}

/// A block device's limits: sizes from the ioctls, the rest from its sysfs queue directory
/// (a partition's is its disk's); what sysfs does not say keeps the defaults.
fn queue_limits(major: u32, minor: u32, lbs: u32, pbs: u32) -> Limits {
    let base = format!("/sys/dev/block/{major}:{minor}");
    let read = |name: &str| -> Option<u64> {
        ["queue", "../queue"].iter().find_map(|q| {
            std::fs::read_to_string(format!("{base}/{q}/{name}"))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
    };
    let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Limits {
        logical_block_size: lbs,
        physical_block_size: pbs,
        io_min: read("minimum_io_size").map(u32_of).unwrap_or(pbs).max(pbs),
        io_opt: read("optimal_io_size").map(u32_of).unwrap_or(0),
        max_sectors: Sectors(read("max_sectors_kb").unwrap_or(0) * 2),
        discard_granularity: read("discard_granularity").map(u32_of).unwrap_or(0),
        max_discard_sectors: Sectors(read("discard_max_bytes").unwrap_or(0) / SECTOR_SIZE),
    }
}

struct Bytes64(u64);
impl Bytes64 {
    fn sectors(self) -> Sectors {
        Sectors(self.0 / SECTOR_SIZE)
    }
}

fn file_is_read_only(f: &File) -> bool {
    let fd = f.as_raw_fd();
    // SAFETY: F_GETFL takes no pointer argument; fd is a valid open descriptor.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0 && fl & libc::O_ACCMODE == libc::O_RDONLY
}

impl Inner {
    /// Whether a caller may work on the file itself for `[sector, sector+len)`
    /// (`read_file_range`, `write_file_range`, `read_mapped`): a regular file (a block
    /// device's page cache is not worth the special case), the range inside the device, and
    /// inline paths allowed (tests and benchmarks turn them off to measure the pool path).
    fn direct_ok(&self, sector: Sectors, len: Sectors) -> bool {
        !self.block && self.inline.load(Relaxed) && sector.0.saturating_add(len.0) <= self.size.0
    }

    /// Write `data` at `off` with RWF_DSYNC (the range's data and what reading it back
    /// needs are stable when this returns), falling back to a write and a flush of the
    /// file where the flag is refused.
    fn write_dsync(&self, data: &[u8], off: u64) -> Result<(), IoError> {
        let fd = self.file.as_raw_fd();
        let mut done = 0;
        while done < data.len() {
            let rest = &data[done..];
            let iov = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            let Ok(at) = libc::off_t::try_from(off + done as u64) else {
                return Err(IoError::Io);
            };
            // SAFETY: the iovec points into `data`, borrowed for the whole call and
            // `rest.len()` bytes long; pwritev2 only reads that range.
            let n = unsafe { libc::pwritev2(fd, &iov, 1, at, libc::RWF_DSYNC) };
            if n > 0 {
                done += n as usize;
                continue;
            }
            if n == 0 {
                return Err(IoError::Io);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                    self.file.write_all_at(rest, off + done as u64)?;
                    self.file.sync_data()?;
                    return Ok(());
                }
                _ => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Try the bio inline; true when it completed in full (the caller completes it). Partial
    /// or refused attempts leave nothing that the pool's full retry would not redo.
    ///
    /// Reads use RWF_NOWAIT: the kernel serves them only from the page cache. Buffered writes
    /// use RWF_NOWAIT where the file system supports it; where it does not (EOPNOTSUPP, as
    /// ext4 on many kernels), page-aligned writes are tried with a plain pwrite, watched: one
    /// that slept (a voluntary context switch of this thread) for over 2 ms (dirty-page
    /// throttling, I/O under a lock) turns inline writes off for a while, so a submitter is
    /// held up at most once per back-off period. (Wall time alone would also count
    /// preemption, which on a busy machine turned the inline path off most of the time; a
    /// sleep alone would count a short wait for the inode lock.)
    fn try_nowait(&self, bio: &mut Bio) -> bool {
        if self.block
            || !self.inline.load(Relaxed)
            || !matches!(bio.op, Op::Read | Op::Write)
            || bio.flags != BioFlags::NONE
            || bio.len().0 > NOWAIT_MAX_SECTORS
            || bio.end() > self.size
            || (bio.op == Op::Write && self.read_only)
        {
            return false;
        }
        let write = bio.op == Op::Write;
        let nowait = self.nowait[write as usize].load(Relaxed);
        let timed = write && !nowait;
        if timed && !self.timed_writes_allowed(bio) {
            return false;
        }
        if !write && !nowait {
            return false;
        }
        let off = (bio.sector.0 * SECTOR_SIZE) as libc::off_t;
        let fd = self.file.as_raw_fd();
        let (ptr, len) = match bio.op {
            Op::Read => {
                let b = bio.buf_mut();
                (b.as_mut_ptr(), b.len())
            }
            _ => {
                let b = bio.buf();
                (b.as_ptr() as *mut u8, b.len())
            }
        };
        let iov = libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        };
        let before = timed.then(|| (voluntary_switches(), now_ns()));
        let flags = if timed { 0 } else { libc::RWF_NOWAIT };
        // SAFETY: the iovec points into the bio's buffer, which we own for the whole call and
        // which is `len` bytes long; preadv2/pwritev2 only access that range.
        let n = unsafe {
            if write {
                libc::pwritev2(fd, &iov, 1, off, flags)
            } else {
                libc::preadv2(fd, &iov, 1, off, flags)
            }
        };
        if let Some((switches, t0)) = before {
            // The write slept for long (dirty-page throttling, a lock held across I/O): that
            // is the blocking the submitter must not see. Being preempted on a busy machine
            // is not, nor is a short wait for the inode lock while another connection's
            // write holds it (with several writers that happened on most writes, and sent
            // them all to the pool for an extra thread hop each).
            if voluntary_switches() != switches && now_ns() - t0 >= INLINE_WRITE_SLOW_NS {
                self.inline_writes_after
                    .store(now_ns() + INLINE_WRITE_BACKOFF.as_nanos() as u64, Relaxed);
            }
        }
        if n < 0 && !timed {
            let e = io::Error::last_os_error().raw_os_error();
            if matches!(
                e,
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS)
            ) {
                // This file system can't do it: stop trying for this direction.
                self.nowait[write as usize].store(false, Relaxed);
            }
        }
        n >= 0 && n as usize == len
    }

    /// Whether a write is done synchronously on the submitting thread, whatever its flags or
    /// alignment: only on a thread that may block (`with_blocking_submit`, e.g. an NBD request
    /// thread, which would otherwise hand the write to the pool and wait for its reply), and
    /// unless the inline path was turned off (`set_inline`). There the timed inline write's
    /// back-off has nothing to protect: a write that sleeps in the file system holds up only
    /// the request it serves, as it would on a pool thread, without the hop there and back.
    /// Flushes too (the thread would only wait for the pool's fdatasync). Writes over
    /// `NOWAIT_MAX_SECTORS` still go to the pool: measured, 1 MiB writes did better spread
    /// over its threads while the request thread reads on.
    fn write_here(&self, bio: &Bio) -> bool {
        (bio.op == Op::Flush || bio.op == Op::Write && bio.len().0 <= NOWAIT_MAX_SECTORS)
            && self.inline.load(Relaxed)
            && crate::blocking_submit_allowed()
    }

    /// Timed inline writes: whole pages only (no read-modify-write of a page), and not during
    /// a back-off after a slow one.
    fn timed_writes_allowed(&self, bio: &Bio) -> bool {
        let page = 4096 / SECTOR_SIZE;
        bio.sector.0.is_multiple_of(page)
            && bio.len().0.is_multiple_of(page)
            && now_ns() >= self.inline_writes_after.load(Relaxed)
    }

    /// Discard a byte range (`zero`: it must read back as zeroes afterwards). Files punch a
    /// hole, which reads as zeroes; block devices use BLKDISCARD or BLKZEROOUT.
    fn deallocate(&self, off: u64, len: u64, zero: bool) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let r = if self.block {
            let range = [off, len];
            let req = if zero { BLKZEROOUT } else { BLKDISCARD };
            // SAFETY: both ioctls read two u64 from the pointer, which is valid for the call.
            unsafe { libc::ioctl(fd, req, range.as_ptr()) }
        } else {
            let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            // SAFETY: fallocate takes plain integers; fd is valid.
            unsafe { libc::fallocate(fd, mode, off as libc::off_t, len as libc::off_t) }
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn zero_fill(&self, mut off: u64, len: u64) -> io::Result<()> {
        let end = off + len;
        let zeros = vec![0u8; (1 << 20).min(len as usize)];
        while off < end {
            let n = (end - off).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], off)?;
            off += n as u64;
        }
        Ok(())
    }
}

impl FileDevice {
    /// A writer of `inner`'s write queue (on the I/O pool): runs queued writes in order
    /// until none is left, handing its pool thread back after `WRITER_BATCH` of them.
    fn write_queued(inner: Arc<Inner>) {
        /// Still counted as a writer when dropped while a completion panics: a new writer
        /// takes over the queue (else the file would lose a writer for good).
        struct Takeover<'a>(&'a Arc<Inner>);
        impl Drop for Takeover<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let inner = self.0.clone();
                    WorkerPool::io().spawn(move || FileDevice::write_queued(inner));
                }
            }
        }
        for _ in 0..crate::writeq::WRITER_BATCH {
            let Some(mut bio) = inner.writes.pop() else {
                return;
            };
            let guard = Takeover(&inner);
            let r = FileDevice::run(&inner, &mut bio);
            bio.complete(r);
            std::mem::forget(guard);
        }
        // Still counted as a writer: come back behind the jobs queued meanwhile.
        WorkerPool::io().spawn(move || FileDevice::write_queued(inner));
    }
}

impl BlockDevice for FileDevice {
    fn submit(&self, mut bio: Bio) {
        // Fast path: data already in the page cache (or a write that needs no waiting) is
        // served inline with RWF_NOWAIT, saving the thread hop; anything that would block
        // goes to the I/O pool.
        if self.0.write_here(&bio) {
            let r = FileDevice::run(&self.0, &mut bio);
            return bio.complete(r);
        }
        if self.0.try_nowait(&mut bio) {
            return bio.complete(Ok(()));
        }
        let inner = self.0.clone();
        let writers = crate::writeq::file_writers();
        if bio.op == Op::Write && !inner.block && writers > 0 {
            // One file's writes take at most `writers` pool threads (see `writeq`).
            if inner.writes.push(bio, writers) {
                WorkerPool::io().spawn(move || FileDevice::write_queued(inner));
            }
            return;
        }
        WorkerPool::io().spawn(move || {
            let r = FileDevice::run(&inner, &mut bio);
            bio.complete(r);
        });
    }
    fn size(&self) -> Sectors {
        self.0.size
    }
    fn id(&self) -> DevId {
        self.0.id.clone()
    }
    fn limits(&self) -> Limits {
        self.0.limits
    }
    fn read_only(&self) -> bool {
        self.0.read_only
    }
    fn read_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: crate::FileReader<'_>,
    ) -> Option<io::Result<usize>> {
        self.0
            .direct_ok(sector, len)
            .then(|| f(&self.0.file, sector.0 * SECTOR_SIZE))
    }
    fn write_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: crate::FileWriter<'_>,
    ) -> Option<io::Result<usize>> {
        (!self.0.read_only && self.0.direct_ok(sector, len))
            .then(|| f(&self.0.file, sector.0 * SECTOR_SIZE))
    }
    fn start_writeback(&self, sector: Sectors, len: Sectors) {
        let (Some(off), Some(n)) = (
            sector.0.checked_mul(SECTOR_SIZE),
            len.0.checked_mul(SECTOR_SIZE),
        ) else {
            return;
        };
        if self.0.read_only || n == 0 {
            return;
        }
        // SAFETY: plain syscall on a file descriptor this device owns for its lifetime; no
        // memory is passed. SYNC_FILE_RANGE_WRITE only queues the dirty pages for writeback.
        // A failure is only a lost hint: the next flush writes the pages anyway.
        unsafe {
            libc::sync_file_range(
                self.0.file.as_raw_fd(),
                off as libc::off64_t,
                n as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    fn read_mapped(&self, sector: Sectors, len: Sectors, f: crate::MappedReader<'_>) -> bool {
        let inner = &self.0;
        if !inner.direct_ok(sector, len) {
            return false;
        }
        let Some(map) = inner
            .map
            .get_or_init(|| crate::filemap::FileMap::new(&inner.file, inner.size.0 * SECTOR_SIZE))
        else {
            return false;
        };
        let bytes = usize::try_from(len.0 * SECTOR_SIZE).unwrap_or(usize::MAX);
        let Some(b) = map.resident(sector.0 * SECTOR_SIZE, bytes) else {
            return false;
        };
        // A truncation between the residency check and the read faults: the guard turns
        // that into a refusal (the caller reads with bios, which see the short file) and
        // the mapping, now holding zero pages, is never read again.
        let done = crate::sigbus::guarded(b, |b| f(b)).is_ok();
        if !done {
            map.poison();
        }
        done
    }
    fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        if self.0.block {
            return vec![(len, Extent::Data)];
        }
        file_extents(&self.0.file, sector, len)
    }
}

/// Data/hole runs of a regular file via SEEK_DATA/SEEK_HOLE.
fn file_extents(file: &File, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
    let fd = file.as_raw_fd();
    let start = sector.0 * SECTOR_SIZE;
    let end = (sector + len).0 * SECTOR_SIZE;
    let mut out: Vec<(Sectors, Extent)> = Vec::new();
    let mut push = |bytes: u64, e: Extent| {
        let s = Sectors(bytes / SECTOR_SIZE);
        if s.0 == 0 {
            return;
        }
        match out.last_mut() {
            Some((l, le)) if *le == e => *l += s,
            _ => out.push((s, e)),
        }
    };
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek takes plain integers; fd is valid.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            // ENXIO: no data after pos (hole to EOF); anything else: say data.
            let e = io::Error::last_os_error().raw_os_error();
            push(
                end - pos,
                if e == Some(libc::ENXIO) {
                    Extent::Hole
                } else {
                    Extent::Data
                },
            );
            break;
        }
        let data = (data as u64).min(end);
        if data > pos {
            push(data - pos, Extent::Hole);
            pos = data;
            continue;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        let hole = hole.max(pos + SECTOR_SIZE).min(end);
        push(hole - pos, Extent::Data);
        pos = hole;
    }
    // Sector rounding may leave the total short; pad with data.
    let total: u64 = out.iter().map(|(l, _)| l.0).sum();
    if total < len.0 {
        out.push((Sectors(len.0 - total), Extent::Data));
    }
    out
}
