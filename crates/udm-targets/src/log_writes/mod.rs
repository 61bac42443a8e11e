//! `log-writes`: pass I/O through to a device and append every write, once it is known to be
//! on stable storage (after the next flush, or at once for FUA), to a log device in the kernel's
//! dm-log-writes format — so a workload can later be replayed to any flush or mark.
//!
//! Ordering follows the kernel: completed writes wait on an "unflushed" list; a flush's
//! completion moves them, then the flush entry itself, to the logging queue; FUA writes and
//! marks go to the queue directly. A logger thread writes the queue out in order and rewrites
//! the super block after every FUA write and mark.

pub mod checked;
pub mod format;
pub mod reader;

use format::*;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use udm_core::{
    DevHandle, Escaped, MapResult, StatusType, Target, TargetCtx, TargetError, TargetType,
};
use udm_io::{sync, Bio, BioFlags, Limits, Op, Sectors};

/// `log-writes <dev> <log_dev>` (further words are ignored, as by the kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWritesParams {
    pub dev: String,
    pub log_dev: String,
}

impl LogWritesParams {
    /// Parse the words the table gave (as split by `split_args`).
    pub fn from_args(a: &[String]) -> Result<Self, TargetError> {
        if a.len() < 2 {
            return Err(TargetError::invalid("Invalid argument count"));
        }
        Ok(LogWritesParams {
            dev: a[0].clone(),
            log_dev: a[1].clone(),
        })
    }
}

impl FromStr for LogWritesParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        LogWritesParams::from_args(&udm_core::split_args(s))
    }
}

impl fmt::Display for LogWritesParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", Escaped(&self.dev), Escaped(&self.log_dev))
    }
}

pub struct LogWritesType;

impl TargetType for LogWritesType {
    fn name(&self) -> &'static str {
        "log-writes"
    }
    fn version(&self) -> [u32; 3] {
        [1, 1, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = LogWritesParams::from_args(args)?;
        let dev = ctx
            .get_device_area(&p.dev, Sectors(0), ctx.len)
            .map_err(|e| TargetError {
                msg: "Device lookup failed".into(),
                ..e
            })?;
        let log = ctx.get_device(&p.log_dev).map_err(|e| TargetError {
            msg: "Log device lookup failed".into(),
            ..e
        })?;
        let sectorsize = dev.dev.limits().logical_block_size.max(512);
        let inner = Arc::new(Inner {
            log: log.clone(),
            sectorsize,
            st: Mutex::new(State {
                logging_enabled: true,
                unflushed: Vec::new(),
                queue: VecDeque::new(),
                next_sector: Sectors((sectorsize / 512) as u64),
                end_sector: log.dev.size(),
                logged_entries: 0,
                busy: false,
                stop: false,
            }),
            cv: Condvar::new(),
            idle: Condvar::new(),
        });
        let th = inner.clone();
        let thread = std::thread::Builder::new()
            .name("udm-log-writes".into())
            .spawn(move || th.run())
            .map_err(|e| {
                TargetError::with_errno(libc::ENOMEM, format!("Couldn't alloc kthread: {e}"))
            })?;
        Ok(Box::new(LogWrites {
            dev,
            begin: ctx.begin,
            inner,
            thread: Some(thread),
        }))
    }
}

/// A write (or flush, discard, mark) waiting to be logged.
struct Pending {
    flags: u64,
    /// In `sectorsize` blocks.
    sector: u64,
    nr_sectors: u64,
    data: Vec<u8>,
    /// Mark text.
    mark: Vec<u8>,
    /// For a flush: the writes it made stable, logged just before it.
    before: Vec<Pending>,
}

struct State {
    logging_enabled: bool,
    unflushed: Vec<Pending>,
    queue: VecDeque<Pending>,
    /// Next free 512-byte sector on the log device.
    next_sector: Sectors,
    end_sector: Sectors,
    logged_entries: u64,
    /// The logger is writing an entry it took off the queue.
    busy: bool,
    stop: bool,
}

struct Inner {
    log: Arc<DevHandle>,
    sectorsize: u32,
    st: Mutex<State>,
    cv: Condvar,
    idle: Condvar,
}

impl Inner {
    fn blocks_to_sectors(&self, blocks: u64) -> Sectors {
        Sectors(blocks * (self.sectorsize / 512) as u64)
    }

    fn enqueue(&self, p: Pending) {
        let mut st = self.st.lock();
        st.queue.push_back(p);
        drop(st);
        self.cv.notify_one();
    }

    /// The logger thread.
    fn run(&self) {
        let mut st = self.st.lock();
        loop {
            let Some(p) = st.queue.pop_front() else {
                if st.stop {
                    return;
                }
                self.idle.notify_all();
                self.cv.wait(&mut st);
                continue;
            };
            if !st.logging_enabled {
                continue;
            }
            let sector = st.next_sector;
            if p.flags & LOG_DISCARD_FLAG == 0 {
                st.next_sector += self.blocks_to_sectors(p.nr_sectors);
            }
            st.next_sector += self.blocks_to_sectors(1);
            if st.next_sector >= st.end_sector {
                udm_core::klog::err("log-writes", "Ran out of space on the logdev");
                st.logging_enabled = false;
                continue;
            }
            st.logged_entries += 1;
            let entries = st.logged_entries;
            let super_after = p.flags & (LOG_FUA_FLAG | LOG_MARK_FLAG) != 0;
            st.busy = true;
            drop(st);
            let mut ok = self.write_entry(&p, sector).is_ok();
            if ok && super_after {
                ok = self.write_super(entries).is_ok();
            }
            st = self.st.lock();
            st.busy = false;
            if !ok {
                udm_core::klog::err("log-writes", "Error writing log block");
                st.logging_enabled = false;
            }
        }
    }

    fn write_entry(&self, p: &Pending, sector: Sectors) -> Result<(), udm_io::IoError> {
        let h = EntryHeader {
            sector: p.sector,
            nr_sectors: p.nr_sectors,
            flags: p.flags,
            data_len: p.mark.len() as u64,
        };
        let mut block = h.encode(&p.mark, self.sectorsize as usize);
        if p.flags & LOG_DISCARD_FLAG == 0 && !p.data.is_empty() {
            block.extend_from_slice(&p.data);
        }
        sync::write_at(&*self.log.dev, sector, &block)
    }

    fn write_super(&self, nr_entries: u64) -> Result<(), udm_io::IoError> {
        let s = LogSuper {
            nr_entries,
            sectorsize: self.sectorsize,
        };
        sync::write_at(&*self.log.dev, Sectors(0), &s.encode())
    }

    /// A logged write completed: file it as the kernel's `normal_end_io` does.
    fn completed(&self, mut p: Pending) {
        let mut st = self.st.lock();
        if p.flags & LOG_FLUSH_FLAG != 0 {
            let before = std::mem::take(&mut p.before);
            st.queue.extend(before);
            st.queue.push_back(p);
        } else if p.flags & LOG_FUA_FLAG != 0 {
            st.queue.push_back(p);
        } else {
            st.unflushed.push(p);
            return;
        }
        drop(st);
        self.cv.notify_one();
    }
}

pub struct LogWrites {
    dev: Arc<DevHandle>,
    /// The kernel logs and remaps absolute sectors (it never subtracts the target start).
    begin: Sectors,
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogWrites {
    fn to_blocks(&self, s: Sectors) -> u64 {
        s.0 / (self.inner.sectorsize / 512) as u64
    }
    fn remap(&self, mut bio: Bio) -> MapResult {
        if bio.op != Op::Flush {
            bio.sector += self.begin;
        }
        MapResult::Remap(self.dev.dev.clone(), bio)
    }
}

impl Target for LogWrites {
    fn map(&self, bio: Bio) -> MapResult {
        let inner = &self.inner;
        if !inner.st.lock().logging_enabled || bio.op == Op::Read {
            return self.remap(bio);
        }
        let flush = bio.op == Op::Flush || bio.flags.contains(BioFlags::PREFLUSH);
        if bio.is_empty() && !flush {
            return self.remap(bio);
        }
        let mut flags = 0;
        if flush {
            flags |= LOG_FLUSH_FLAG;
        }
        if bio.flags.contains(BioFlags::FUA) {
            flags |= LOG_FUA_FLAG;
        }
        if bio.op == Op::Discard {
            flags |= LOG_DISCARD_FLAG;
        }
        let abs = bio.sector + self.begin;
        let data = match bio.op {
            Op::Write => bio.buf().to_vec(),
            // The kernel target takes no write-zeroes: the block layer turns them into writes
            // of zeroes, and those are what it logs.
            Op::WriteZeroes => vec![0u8; (bio.len().0 * 512) as usize],
            _ => Vec::new(),
        };
        let mut p = Pending {
            flags,
            sector: if bio.op == Op::Flush {
                0
            } else {
                self.to_blocks(abs)
            },
            nr_sectors: self.to_blocks(bio.len()),
            data,
            mark: Vec::new(),
            before: Vec::new(),
        };
        if flush {
            p.before = std::mem::take(&mut inner.st.lock().unflushed);
        }
        let me = inner.clone();
        let bio = bio.on_end(move |r, _| {
            me.completed(p);
            r
        });
        self.remap(bio)
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        match ty {
            StatusType::Info => {
                let st = self.inner.st.lock();
                let mut s = format!("{} {}", st.logged_entries, st.next_sector.0 - 1);
                if !st.logging_enabled {
                    s.push_str(" logging_disabled");
                }
                s
            }
            StatusType::Table => LogWritesParams {
                dev: self.dev.id.to_string(),
                log_dev: self.inner.log.id.to_string(),
            }
            .to_string(),
        }
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        if argv.len() != 2 {
            return Err(TargetError::invalid(format!(
                "Invalid log-writes message arguments, expect 2 arguments, got {}",
                argv.len()
            )));
        }
        if !argv[0].eq_ignore_ascii_case("mark") {
            return Err(TargetError::invalid(format!(
                "Unrecognised log writes target message received: {}",
                argv[0]
            )));
        }
        self.mark(&argv[1]);
        Ok(None)
    }

    fn io_hints(&self, limits: &mut Limits) {
        let l = self.dev.dev.limits();
        limits.logical_block_size = l.logical_block_size;
        limits.physical_block_size = l.physical_block_size;
        limits.io_min = l.physical_block_size;
    }
}

impl LogWrites {
    /// Queue a mark (its text is cut to fit the header block, as the kernel does).
    pub fn mark(&self, text: &str) {
        let max = self.inner.sectorsize as usize - ENTRY_LEN - 1;
        let bytes = text.as_bytes();
        let mark = bytes[..bytes.len().min(max)].to_vec();
        self.inner.enqueue(Pending {
            flags: LOG_MARK_FLAG,
            sector: 0,
            nr_sectors: 0,
            data: Vec::new(),
            mark,
            before: Vec::new(),
        });
    }

    /// Block until the logger has written everything queued so far.
    pub fn wait_logged(&self) {
        let mut st = self.inner.st.lock();
        while !st.queue.is_empty() || st.busy {
            self.inner
                .idle
                .wait_for(&mut st, std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for LogWrites {
    /// The destructor logs the unflushed writes and an end mark, then waits for the log.
    fn drop(&mut self) {
        {
            let mut st = self.inner.st.lock();
            let un = std::mem::take(&mut st.unflushed);
            st.queue.extend(un);
        }
        self.mark(END_MARK);
        self.wait_logged();
        self.inner.st.lock().stop = true;
        self.inner.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
