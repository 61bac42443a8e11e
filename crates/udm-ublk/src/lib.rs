//! udm-ublk: export a udm block device as a kernel block device `/dev/ublkbN` through the
//! ublk driver (ublk_drv), with io_uring commands and no C library.
//!
//! One hardware queue per core (multi-queue: the block layer maps each CPU to a queue, so
//! submitters on different cores never share one), each served by its own thread owning
//! the queue's io_uring: it fetches requests, turns each into a bio on the device, and
//! commits the result when the bio completes (completions wake the ring through an eventfd,
//! so many requests are in flight). The kernel copies data to and from one buffer per tag
//! that the thread owns.

pub mod sys;

use crossbeam_channel::{unbounded, Receiver, Sender};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use udm_io::{Bio, BioFlags, BlockDevice, IoBuf, IoError, Sectors};

/// Errors from the ublk driver.
#[derive(Debug, thiserror::Error)]
pub enum UblkError {
    #[error("ublk: {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("ublk: {what} failed: {}", std::io::Error::from_raw_os_error(*.errno))]
    Cmd { what: &'static str, errno: i32 },
}

impl UblkError {
    pub fn errno(&self) -> i32 {
        match self {
            UblkError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            UblkError::Cmd { errno, .. } => *errno,
        }
    }
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> UblkError {
    move |source| UblkError::Io { what, source }
}

/// True when the kernel offers ublk (`/dev/ublk-control` exists).
pub fn available() -> bool {
    Path::new("/dev/ublk-control").exists()
}

/// Queue depth and the largest request, bytes.
const DEPTH: u16 = 64;
const MAX_IO: u32 = 512 << 10;
/// `user_data` of the eventfd read that wakes the queue thread.
const WAKE: u64 = u64::MAX;

/// The control device: one 128-byte-SQE ring for commands.
struct Ctrl {
    file: File,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
}

impl Ctrl {
    fn open() -> Result<Ctrl, UblkError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/ublk-control")
            .map_err(io_err("open /dev/ublk-control"))?;
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .build(4)
            .map_err(io_err("io_uring for ublk control"))?;
        Ok(Ctrl { file, ring })
    }

    /// Run one control command and wait for its result.
    fn cmd(&mut self, what: &'static str, op: u32, c: sys::CtrlCmd) -> Result<i32, UblkError> {
        let sqe = opcode::UringCmd80::new(types::Fd(self.file.as_raw_fd()), op)
            .cmd(sys::bytes::<_, 80>(&c))
            .build()
            .user_data(1);
        // SAFETY: the command and whatever its `addr` points at (owned by the caller, alive
        // until this returns) stay valid until the completion is reaped below.
        unsafe { self.ring.submission().push(&sqe) }.map_err(|_| UblkError::Cmd {
            what,
            errno: libc::EBUSY,
        })?;
        self.ring
            .submit_and_wait(1)
            .map_err(io_err("io_uring_enter (control)"))?;
        let cqe = self.ring.completion().next().ok_or(UblkError::Cmd {
            what,
            errno: libc::EIO,
        })?;
        if cqe.result() < 0 {
            return Err(UblkError::Cmd {
                what,
                errno: -cqe.result(),
            });
        }
        Ok(cqe.result())
    }
}

/// A udm device served as `/dev/ublkbN`. `remove` (or drop) stops and deletes it.
pub struct UblkDevice {
    id: u32,
    ctrl: Ctrl,
    queues: Vec<JoinHandle<()>>,
}

/// Hardware queues: one per core, at most `MAX_QUEUES`.
fn nr_queues() -> u16 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cores.clamp(1, MAX_QUEUES) as u16
}

/// Most hardware queues a device gets (each holds `DEPTH` buffers of `MAX_IO` bytes).
const MAX_QUEUES: usize = 16;
/// The kernel spaces the queues' descriptor areas in /dev/ublkcN by the largest area a
/// queue can have: `UBLK_MAX_QUEUE_DEPTH` (4096) descriptors of 24 bytes, page-rounded.
const DESC_AREA_STRIDE: usize = 4096 * std::mem::size_of::<sys::IoDesc>();

impl UblkDevice {
    /// Create `/dev/ublkbN` for `dev` and start serving it.
    pub fn add(dev: Arc<dyn BlockDevice>) -> Result<UblkDevice, UblkError> {
        let mut ctrl = Ctrl::open()?;
        let nq = nr_queues();
        let mut info = sys::DevInfo {
            nr_hw_queues: nq,
            queue_depth: DEPTH,
            max_io_buf_bytes: MAX_IO,
            dev_id: u32::MAX,
            // SAFETY: getpid has no preconditions.
            ublksrv_pid: unsafe { libc::getpid() },
            ..Default::default()
        };
        ctrl.cmd(
            "ADD_DEV",
            sys::CMD_ADD_DEV,
            sys::CtrlCmd {
                dev_id: u32::MAX,
                queue_id: u16::MAX,
                len: std::mem::size_of::<sys::DevInfo>() as u16,
                addr: &mut info as *mut sys::DevInfo as u64,
                ..Default::default()
            },
        )?;
        let id = info.dev_id;
        let mut me = UblkDevice {
            id,
            ctrl,
            queues: Vec::new(),
        };
        let lim = dev.limits();
        let shift = |v: u32| (v.max(512).trailing_zeros()) as u8;
        let mut params = sys::Params {
            len: std::mem::size_of::<sys::Params>() as u32,
            types: sys::PARAM_TYPE_BASIC | sys::PARAM_TYPE_DISCARD,
            basic: sys::ParamBasic {
                attrs: sys::ATTR_VOLATILE_CACHE
                    | sys::ATTR_FUA
                    | if dev.read_only() {
                        sys::ATTR_READ_ONLY
                    } else {
                        0
                    },
                logical_bs_shift: shift(lim.logical_block_size).min(12),
                physical_bs_shift: shift(lim.physical_block_size).clamp(9, 12),
                io_opt_shift: 12,
                io_min_shift: shift(lim.io_min).clamp(9, 12),
                max_sectors: MAX_IO >> 9,
                dev_sectors: dev.size().0,
                ..Default::default()
            },
            discard: sys::ParamDiscard {
                discard_granularity: 4096,
                max_discard_sectors: u32::MAX >> 9,
                max_write_zeroes_sectors: u32::MAX >> 9,
                max_discard_segments: 1,
                ..Default::default()
            },
        };
        params.basic.physical_bs_shift = params
            .basic
            .physical_bs_shift
            .max(params.basic.logical_bs_shift);
        me.ctrl.cmd(
            "SET_PARAMS",
            sys::CMD_SET_PARAMS,
            sys::CtrlCmd {
                dev_id: id,
                queue_id: u16::MAX,
                len: params.len as u16,
                addr: &mut params as *mut sys::Params as u64,
                ..Default::default()
            },
        )?;
        // /dev/ublkcN opens once (exclusively); the queue threads share the descriptor.
        let cdev = Arc::new(open_char(id)?);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(usize::from(nq));
        for q in 0..nq {
            let (dev, cdev, ready_tx) = (dev.clone(), cdev.clone(), ready_tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("ublk{id}-q{q}"))
                .spawn(move || {
                    if let Err(e) = queue(&cdev, q, dev, &ready_tx) {
                        tracing::warn!("ublk{id}: queue {q} ended: {e}");
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(io_err("spawn ublk queue"))?;
            me.queues.push(t);
        }
        for _ in 0..nq {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(UblkError::Cmd {
                        what: "queue start",
                        errno: libc::ETIMEDOUT,
                    })
                }
            }
        }
        me.ctrl.cmd(
            "START_DEV",
            sys::CMD_START_DEV,
            sys::CtrlCmd {
                dev_id: id,
                queue_id: u16::MAX,
                // SAFETY: getpid has no preconditions.
                data: [unsafe { libc::getpid() } as u64],
                ..Default::default()
            },
        )?;
        tracing::info!("ublk: /dev/ublkb{id} started");
        Ok(me)
    }

    /// The kernel device number `N` of `/dev/ublkbN`.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// `/dev/ublkbN`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/ublkb{}", self.id))
    }

    /// Stop the device (its queue ends) and delete it.
    pub fn remove(mut self) -> Result<(), UblkError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), UblkError> {
        if self.queues.is_empty() {
            return Ok(());
        }
        let cmd = sys::CtrlCmd {
            dev_id: self.id,
            queue_id: u16::MAX,
            ..Default::default()
        };
        let stopped = self.ctrl.cmd("STOP_DEV", sys::CMD_STOP_DEV, cmd);
        for q in self.queues.drain(..) {
            let _ = q.join();
        }
        let deleted = self.ctrl.cmd("DEL_DEV", sys::CMD_DEL_DEV, cmd);
        stopped.and(deleted).map(|_| ())
    }
}

impl Drop for UblkDevice {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("ublk{}: stop: {e}", self.id);
        }
    }
}

/// A finished bio: tag, result for the kernel, and the buffer (reads).
type Done = (u16, i32, Option<IoBuf>);

/// The descriptors the kernel fills, mapped read-only from /dev/ublkcN.
struct Descs {
    ptr: *const sys::IoDesc,
    len: usize,
}

impl Descs {
    fn map(fd: &File, q: u16) -> std::io::Result<Descs> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = (DEPTH as usize * std::mem::size_of::<sys::IoDesc>()).div_ceil(page) * page;
        let off = usize::from(q) * DESC_AREA_STRIDE.div_ceil(page) * page;
        // SAFETY: a fresh shared read-only mapping of queue `q`'s descriptor area (queue q
        // starts at q strides); the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                off as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Descs {
            ptr: p as *const sys::IoDesc,
            len,
        })
    }
    fn get(&self, tag: u16) -> sys::IoDesc {
        assert!((tag as usize) < DEPTH as usize);
        // SAFETY: `tag < DEPTH` keeps the read inside the mapping; the kernel writes a
        // descriptor before completing the fetch for its tag, and we read it after.
        unsafe { std::ptr::read_volatile(self.ptr.add(tag as usize)) }
    }
}

impl Drop for Descs {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Open /dev/ublkcN (the node may take a moment to appear).
fn open_char(id: u32) -> Result<File, UblkError> {
    let path = format!("/dev/ublkc{id}");
    let t = Instant::now();
    loop {
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => return Ok(f),
            Err(e)
                if t.elapsed() < Duration::from_secs(5)
                    && e.kind() == std::io::ErrorKind::NotFound =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => {
                return Err(UblkError::Io {
                    what: "open /dev/ublkcN",
                    source: e,
                })
            }
        }
    }
}

fn io_cmd(fd: &File, q: u16, op: u32, tag: u16, result: i32, buf: &[u8]) -> squeue::Entry {
    let c = sys::IoCmd {
        q_id: q,
        tag,
        result,
        addr: buf.as_ptr() as u64,
    };
    opcode::UringCmd16::new(types::Fd(fd.as_raw_fd()), op)
        .cmd(sys::bytes::<_, 16>(&c))
        .build()
        .user_data(u64::from(tag))
}

/// The thread of queue `q`: fetch, map to bios, commit.
fn queue(
    cdev: &File,
    q: u16,
    dev: Arc<dyn BlockDevice>,
    ready: &Sender<Result<(), UblkError>>,
) -> Result<(), UblkError> {
    let descs = Descs::map(cdev, q).map_err(io_err("mmap ublk descriptors"))?;
    let mut ring: IoUring = IoUring::builder()
        .build(u32::from(DEPTH) * 2 + 4)
        .map_err(io_err("io_uring for ublk queue"))?;
    // SAFETY: eventfd with valid flags; the descriptor is owned by `wake` below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(io_err("eventfd")(std::io::Error::last_os_error()));
    }
    // SAFETY: `efd` is a fresh descriptor nobody else owns.
    let wake = Arc::new(unsafe { File::from_raw_fd(efd) });
    let mut bufs: Vec<Box<[u8]>> = (0..DEPTH)
        .map(|_| vec![0u8; MAX_IO as usize].into_boxed_slice())
        .collect();
    let mut counter = [0u8; 8];
    let (tx, rx): (Sender<Done>, Receiver<Done>) = unbounded();
    let push = |ring: &mut IoUring, e: &squeue::Entry| -> Result<(), UblkError> {
        loop {
            // SAFETY: every buffer an entry points at (tag buffers, the eventfd counter)
            // lives in this function until the ring is dropped at its end.
            if unsafe { ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            ring.submit().map_err(io_err("io_uring_enter (queue)"))?;
        }
    };
    for tag in 0..DEPTH {
        push(
            &mut ring,
            &io_cmd(cdev, q, sys::IO_FETCH_REQ, tag, -1, &bufs[tag as usize]),
        )?;
    }
    let arm = |counter: &mut [u8; 8]| {
        opcode::Read::new(types::Fd(wake.as_raw_fd()), counter.as_mut_ptr(), 8)
            .build()
            .user_data(WAKE)
    };
    push(&mut ring, &arm(&mut counter))?;
    ring.submit().map_err(io_err("io_uring_enter (queue)"))?;
    let _ = ready.send(Ok(()));
    let mut live = DEPTH as usize;
    let mut inflight = 0usize;
    while live > 0 || inflight > 0 {
        if let Err(e) = ring.submit_and_wait(1) {
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(io_err("io_uring_enter (queue)")(e));
        }
        let cqes: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (ud, res) in cqes {
            if ud == WAKE {
                for (tag, result, buf) in rx.try_iter() {
                    inflight -= 1;
                    if let Some(b) = buf {
                        bufs[tag as usize][..b.len()].copy_from_slice(&b);
                    }
                    if live > 0 {
                        let e = io_cmd(
                            cdev,
                            q,
                            sys::IO_COMMIT_AND_FETCH_REQ,
                            tag,
                            result,
                            &bufs[tag as usize],
                        );
                        push(&mut ring, &e)?;
                    }
                }
                if live > 0 || inflight > 0 {
                    push(&mut ring, &arm(&mut counter))?;
                }
                continue;
            }
            let tag = ud as u16;
            if res != sys::IO_RES_OK {
                // Aborted (device stopping) or refused: this tag is done.
                live -= 1;
                continue;
            }
            inflight += 1;
            start(&dev, descs.get(tag), tag, &bufs[tag as usize], &tx, &wake);
        }
    }
    Ok(())
}

/// Turn one request into a bio; its completion queues the result and wakes the ring.
fn start(
    dev: &Arc<dyn BlockDevice>,
    d: sys::IoDesc,
    tag: u16,
    buf: &[u8],
    tx: &Sender<Done>,
    wake: &Arc<File>,
) {
    let op = d.op_flags & 0xff;
    let sector = Sectors(d.start_sector);
    let len = Sectors(u64::from(d.nr_sectors));
    let bytes = (len.0 * 512) as usize;
    let (tx, wake) = (tx.clone(), wake.clone());
    let done: udm_io::Completion = Box::new(move |res: Result<(), IoError>, b: IoBuf| {
        let result = match res {
            Ok(()) if op == sys::OP_READ || op == sys::OP_WRITE => bytes as i32,
            Ok(()) => 0,
            Err(e) => -e.errno(),
        };
        let buf = (op == sys::OP_READ && result > 0).then_some(b);
        let _ = tx.send((tag, result, buf));
        let one = 1u64.to_ne_bytes();
        let _ = (&*wake).write_all_compat(&one);
    });
    let mut flags = BioFlags::NONE;
    if d.op_flags & sys::IO_F_FUA != 0 {
        flags = flags.with(BioFlags::FUA);
    }
    let bio = match op {
        sys::OP_READ if bytes <= buf.len() => Bio::read(sector, IoBuf::zeroed(bytes), done),
        sys::OP_WRITE if bytes <= buf.len() => {
            Bio::write(sector, IoBuf::from_slice(&buf[..bytes]), done).with_flags(flags)
        }
        sys::OP_FLUSH => Bio::flush(done),
        sys::OP_DISCARD => Bio::discard(sector, len, done),
        sys::OP_WRITE_ZEROES => {
            let b = Bio::write_zeroes(sector, len, done);
            if d.op_flags & sys::IO_F_NOUNMAP != 0 {
                b.with_flags(BioFlags::NOUNMAP)
            } else {
                b
            }
        }
        _ => return done(Err(IoError::NotSupported), IoBuf::empty()),
    };
    dev.submit(bio);
}

/// `write_all` on `&File` without needing `mut`.
trait WriteAllCompat {
    fn write_all_compat(&self, b: &[u8]) -> std::io::Result<()>;
}

impl WriteAllCompat for &File {
    fn write_all_compat(&self, b: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let mut f: &File = self;
        f.write_all(b)
    }
}
