//! The FUSE filesystem: a root directory listing every mapped device with a live table, one
//! regular file per device, inode numbers kept per name, open files holding device opens.

use crate::io::{self, OpenFile};
use crate::FuseOpts;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use udm_core::device::DmBlockDevice;
use udm_core::{DevSel, Registry};
use udm_io::BlockDevice;

/// The root directory's inode.
pub(crate) const ROOT: u64 = 1;
/// Attributes and entries are cached this long; device changes also invalidate them.
const TTL: Duration = Duration::from_secs(1);

/// Inode numbers by device name. Numbers are never reused, so generation 0 is enough.
struct Names {
    by_name: HashMap<String, u64>,
    by_ino: HashMap<u64, String>,
    next: u64,
}

/// Everything the filesystem knows, shared by its threads and the event thread.
pub(crate) struct State {
    reg: Registry,
    opts: FuseOpts,
    names: Mutex<Names>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    stopped: AtomicBool,
    uid: u32,
    gid: u32,
    born: SystemTime,
}

/// What a device file looks like right now.
struct DevView {
    size: u64,
}

impl State {
    pub(crate) fn new(reg: Registry, opts: FuseOpts) -> State {
        State {
            reg,
            opts,
            names: Mutex::new(Names {
                by_name: HashMap::new(),
                by_ino: HashMap::new(),
                next: ROOT + 1,
            }),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            // SAFETY: geteuid/getegid have no preconditions and cannot fail.
            uid: unsafe { libc::geteuid() },
            // SAFETY: as above.
            gid: unsafe { libc::getegid() },
            born: SystemTime::now(),
        }
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// The inode of a device name, allocating one.
    fn ino_for(&self, name: &str) -> u64 {
        let mut n = self.names.lock();
        if let Some(&i) = n.by_name.get(name) {
            return i;
        }
        let i = n.next;
        n.next += 1;
        n.by_name.insert(name.to_string(), i);
        n.by_ino.insert(i, name.to_string());
        i
    }
    pub(crate) fn ino_of(&self, name: &str) -> Option<u64> {
        self.names.lock().by_name.get(name).copied()
    }
    fn name_of(&self, ino: u64) -> Option<String> {
        self.names.lock().by_ino.get(&ino).cloned()
    }
    /// A device was removed: its inode goes with it.
    pub(crate) fn forget_name(&self, name: &str) -> Option<u64> {
        let mut n = self.names.lock();
        let i = n.by_name.remove(name)?;
        n.by_ino.remove(&i);
        Some(i)
    }
    /// A device was renamed: its file keeps its inode under the new name.
    pub(crate) fn renamed(&self, old: &str, new: &str) {
        let mut n = self.names.lock();
        if let Some(i) = n.by_name.remove(old) {
            n.by_name.insert(new.to_string(), i);
            n.by_ino.insert(i, new.to_string());
        }
    }

    /// The device behind a name (size 0 while it has no live table).
    fn view(&self, name: &str) -> Option<DevView> {
        let d = self.reg.get(&DevSel::Name(name.to_string())).ok()?;
        if d.live_table().is_none() {
            return Some(DevView { size: 0 });
        }
        let b = DmBlockDevice(d);
        Some(DevView {
            size: b.size().bytes().0,
        })
    }

    fn file_attr(&self, ino: u64, v: &DevView) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: v.size,
            blocks: v.size / 512,
            atime: self.born,
            mtime: self.born,
            ctime: self.born,
            crtime: self.born,
            kind: FileType::RegularFile,
            perm: 0o600,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn dir_attr(&self) -> FileAttr {
        FileAttr {
            ino: INodeNo(ROOT),
            size: 0,
            blocks: 0,
            atime: self.born,
            mtime: self.born,
            ctime: self.born,
            crtime: self.born,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Attributes of an inode: through the open file when there is one (it survives a
    /// rename the event thread has not seen yet), else by name.
    fn attr(&self, ino: u64, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        if ino == ROOT {
            return Ok(self.dir_attr());
        }
        if let Some(f) = fh.and_then(|fh| self.files.lock().get(&fh.0).cloned()) {
            let v = DevView {
                size: f.dev.size().bytes().0,
            };
            return Ok(self.file_attr(ino, &v));
        }
        let name = self.name_of(ino).ok_or(Errno::ENOENT)?;
        let v = self.view(&name).ok_or(Errno::ENOENT)?;
        Ok(self.file_attr(ino, &v))
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<OpenFile>, Errno> {
        self.files.lock().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }
}

/// The `fuser::Filesystem` over a `State`.
pub(crate) struct UdmFs(pub(crate) Arc<State>);

impl fuser::Filesystem for UdmFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // ATOMIC_O_TRUNC: O_TRUNC arrives as an open flag (ignored, as a block device ignores
        // it) instead of a truncating setattr.
        let want = InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ATOMIC_O_TRUNC;
        if let Err(missing) = config.add_capabilities(want) {
            let _ = config.add_capabilities(want & !missing);
        }
        let max = self.0.opts.max_io;
        if let Err(n) = config.set_max_write(max) {
            let _ = config.set_max_write(n);
        }
        if let Err(n) = config.set_max_readahead(max) {
            let _ = config.set_max_readahead(n);
        }
        let _ = config.set_max_background(128);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().filter(|_| parent.0 == ROOT) else {
            return reply.error(Errno::ENOENT);
        };
        match self.0.view(name) {
            Some(v) => {
                let ino = self.0.ino_for(name);
                reply.entry(&TTL, &self.0.file_attr(ino, &v), Generation(0))
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.attr(ino.0, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // A device file's size is its table's. Through an open file (ftruncate, or O_TRUNC
        // from a kernel without ATOMIC_O_TRUNC: `dd` without conv=notrunc, `cp`, `>`) a size
        // change is ignored, as a block device ignores O_TRUNC; truncate(2) by path is EINVAL
        // as on a block device. Mode, owner and time changes are accepted and ignored.
        match self.0.attr(ino.0, fh) {
            Ok(a) if size.map_or(true, |s| s == a.size) || fh.is_some() => reply.attr(&TTL, &a),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(name) = self.0.name_of(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let sel = DevSel::Name(name.clone());
        let Ok((dev, guard)) = self.0.reg.open(&sel) else {
            return reply.error(Errno::ENOENT);
        };
        // A device with no live table (never loaded, or resumed without one) has a file,
        // as the kernel has a node, but opening it fails with ENXIO.
        if self
            .0
            .reg
            .get(&sel)
            .map_or(true, |d| d.live_table().is_none())
        {
            return reply.error(Errno::ENXIO);
        }
        // A read-only device opens for writing too; its writes fail with EPERM (as the
        // kernel's). O_TRUNC is ignored.
        let _ = flags;
        let fh = self.0.next_fh.fetch_add(1, Ordering::Relaxed);
        let file = Arc::new(OpenFile::new(dev, Box::new(guard), name));
        self.0.files.lock().insert(fh, file);
        let f = if self.0.opts.direct_io {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(fh), f);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.0.file(fh) {
            Ok(f) => io::read(f, offset, size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let sync = flags.0 & (libc::O_SYNC | libc::O_DSYNC) != 0;
        match self.0.file(fh) {
            Ok(f) => io::write(f, offset, data, sync, reply),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // The device stays open until the last bio of this file has completed (each
        // in-flight request holds the file).
        self.0.files.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.0.file(fh) {
            Ok(f) => io::fsync(f, reply),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.0.file(fh) {
            Ok(f) => io::fallocate(f, offset, length, mode, reply),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self
            .0
            .file(fh)
            .and_then(|f| io::seek_data_hole(&f, offset, whence))
        {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }

    /// Block-device ioctls on a device file: `BLKGETSIZE64` answers the device size (as on
    /// a block device); everything else is "not a typewriter", quietly (a debug line, not
    /// fuser's warning: tools probe ioctls all the time).
    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        const BLKGETSIZE64: u32 = 0x8008_1272;
        if cmd == BLKGETSIZE64 && out_size as usize >= 8 {
            return match self.0.file(fh) {
                Ok(f) => reply.ioctl(0, &f.dev.size().bytes().0.to_ne_bytes()),
                Err(e) => reply.error(e),
            };
        }
        tracing::debug!("fuse: ioctl {cmd:#x} on inode {} not supported", ino.0);
        reply.error(Errno::ENOTTY);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (ROOT, FileType::Directory, ".".into()),
            (ROOT, FileType::Directory, "..".into()),
        ];
        for d in self.0.reg.list() {
            let ino = self.0.ino_for(&d.name);
            entries.push((ino, FileType::RegularFile, d.name));
        }
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
