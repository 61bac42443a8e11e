//! `writecache`: dm-writecache in SSD mode, a write-back cache on a fast device in the
//! kernel's on-disk format ([`format`]), so a cache device moves between the kernel and udm.
//!
//! `writecache s <origin> <cache> <block size> <#args> [start_sector N|high_watermark N|
//! low_watermark N|writeback_jobs N|autocommit_blocks N|autocommit_time MS|max_age MS|
//! cleaner|metadata_only|pause_writeback MS]*` ([`params`]). Writes go to free cache blocks
//! and are committed by flushes, FUA, autocommit (count or time) and suspend; blocks are
//! written back to the origin when free blocks fall to the high watermark (until the low
//! one), when they are older than max_age, and all of them on the `flush` message,
//! `cleaner`, or suspend after `flush_on_suspend`. `p` (persistent memory) is refused as a
//! kernel without DAX refuses it. Data path in [`core`], background work in [`work`].

mod core;
pub mod format;
pub mod params;
mod state;
mod work;

use self::core::{Config, Core, Timers};
use crate::kscan::ArgSet;
use format::{Superblock, MAGIC, NONE, REGION_BYTES, VERSION};
pub use params::WcOpts;
use parking_lot::{Condvar, Mutex};
use state::State;
use std::sync::Arc;
use std::time::Duration;
use udm_core::target::dev_label;
use udm_core::{
    Copier, DevHandle, MapResult, StatusFlags, StatusType, Target, TargetCtx, TargetError,
    TargetType,
};
use udm_io::{Bio, DevId, Sectors};

/// `MAX_AGE_DIV`: the max_age timer ticks this many times per max_age.
pub const MAX_AGE_DIV: u32 = 16;

/// Writeback copies move this much per I/O, with at most [`COPY_BUFFERS`] in flight: each
/// block of a scattered writeback is its own copy, so against a slow origin the number in
/// flight sets the writeback rate (the kernel's kcopyd has no fixed bound). The chunk is
/// small because the copier zero-fills a buffer back to its chunk size after every use: a
/// 4 KiB block copied with 512 KiB chunks cost a 508 KiB memset. 2 MiB at most.
const COPY_CHUNK: Sectors = Sectors(16);
const COPY_BUFFERS: usize = 256;

/// The `writecache` target type.
pub struct WritecacheType;

fn bad_arguments() -> TargetError {
    TargetError::invalid("Bad arguments")
}

/// `init_memory`: a fresh superblock (magic written last) and every entry free.
fn init_memory(cache: &DevHandle, start: u64, bs: u64, memory: u64) -> Result<(), TargetError> {
    let n = format::blocks_for(memory, bs)
        .ok_or_else(|| TargetError::invalid("Unable to initialize device"))?;
    let mut image = vec![0u8; format::metadata_bytes(n, bs) as usize];
    let mut sb = Superblock {
        magic: 0,
        version: VERSION,
        block_size: bs as u32,
        n_blocks: n,
        seq_count: 0,
    };
    sb.encode(&mut image);
    for i in 0..n {
        format::write_entry(&mut image, i, NONE, NONE);
    }
    let dev = &*cache.dev;
    let fail = |_| TargetError::with_errno(libc::EIO, "Unable to initialize device");
    udm_io::sync::write_at(dev, Sectors(start), &image).map_err(fail)?;
    udm_io::sync::flush(dev).map_err(fail)?;
    sb.magic = MAGIC;
    sb.encode(&mut image);
    let head = (REGION_BYTES as usize).min(image.len());
    udm_io::sync::write_at(dev, Sectors(start), &image[..head]).map_err(fail)?;
    udm_io::sync::flush(dev).map_err(fail)
}

impl TargetType for WritecacheType {
    fn name(&self) -> &'static str {
        "writecache"
    }
    fn version(&self) -> [u32; 3] {
        [1, 6, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let mut as_ = ArgSet::new(args);
        match as_.shift().map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("s") => {}
            Some("p") => {
                return Err(TargetError::with_errno(
                    libc::EOPNOTSUPP,
                    "Persistent memory or DAX not supported on this system",
                ))
            }
            _ => return Err(bad_arguments()),
        }
        let spec = as_.shift().ok_or_else(bad_arguments)?;
        let origin = ctx.get_device(spec).map_err(|e| {
            TargetError::invalid("Origin data device lookup failed").with_detail(e.msg)
        })?;
        let spec = as_.shift().ok_or_else(bad_arguments)?;
        let cache = ctx.get_device(spec).map_err(|e| {
            TargetError::invalid("Cache data device lookup failed").with_detail(e.msg)
        })?;
        let bs_arg = as_.shift().ok_or_else(bad_arguments)?;
        let bs = crate::kscan::scan_u32(bs_arg)
            .filter(|&b| (512..=4096).contains(&b) && b.is_power_of_two())
            .ok_or_else(|| TargetError::invalid("Invalid block size"))? as u64;
        let lbs = |h: &DevHandle| h.dev.limits().logical_block_size as u64;
        if bs < lbs(&origin) || bs < lbs(&cache) {
            return Err(TargetError::invalid(
                "Block size is smaller than device logical block size",
            ));
        }
        let cache_sectors = cache.dev.size().0;
        let opts = WcOpts::parse(&mut as_, cache_sectors)?;
        let start = opts.start();
        let memory = (cache_sectors - start) * 512;
        if format::blocks_for(memory, bs).is_none() {
            return Err(TargetError::with_errno(libc::ENOSPC, "Invalid device size"));
        }
        let read_head = || udm_io::sync::read_at(&*cache.dev, Sectors(start), bs as usize);
        let head = read_head().map_err(|e| {
            TargetError::with_errno(e.errno(), "Unable to read first block of metadata")
        })?;
        let mut sb = Superblock::decode(head.as_slice());
        if sb.magic == 0 && sb.version == 0 {
            init_memory(&cache, start, bs, memory)?;
            let head = read_head().map_err(|e| {
                TargetError::with_errno(e.errno(), "Unable to read first block of metadata")
            })?;
            sb = Superblock::decode(head.as_slice());
        }
        if sb.magic != MAGIC {
            return Err(TargetError::invalid("Invalid magic in the superblock"));
        }
        if sb.version != VERSION {
            return Err(TargetError::invalid("Invalid version in the superblock"));
        }
        if sb.block_size as u64 != bs {
            return Err(TargetError::invalid("Block size does not match superblock"));
        }
        // All ones marks a free entry: a cache whose next sequence number is that could
        // never commit a write (and would overflow counting on).
        if sb.seq_count == NONE {
            return Err(TargetError::invalid("Invalid seq_count in the superblock"));
        }
        let n = sb.n_blocks;
        let overflow = || TargetError::invalid("Overflow in size calculation");
        let entries = n.checked_mul(format::ENTRY_BYTES).ok_or_else(overflow)?;
        let offset = entries
            .checked_add(format::SB_BYTES + bs - 1)
            .ok_or_else(overflow)?
            / bs
            * bs;
        let data = n.checked_mul(bs).ok_or_else(overflow)?;
        if offset.checked_add(data).ok_or_else(overflow)? > memory {
            return Err(TargetError::invalid("Memory area is too small"));
        }
        let wm = |pct: u32| (n * (100 - pct as u64) + 50) / 100;
        let ms = |v: u32| Duration::from_millis(v as u64);
        let cfg = Config {
            bs: bs / 512,
            start_sector: start,
            n_blocks: n,
            metadata_sectors: offset / 512,
            autocommit_blocks: opts.autocommit_blocks.unwrap_or(params::AUTOCOMMIT_BLOCKS),
            autocommit_time: ms(opts.autocommit_time.unwrap_or(params::AUTOCOMMIT_MSEC)),
            max_age: opts.max_age.map(ms),
            pause: ms(opts.pause_writeback.unwrap_or(params::PAUSE_MSEC)),
            writeback_jobs: opts.writeback_jobs.unwrap_or(0),
            metadata_only: opts.metadata_only,
        };
        let mut st = State::new(offset as usize, n);
        st.high_wm = wm(opts.high());
        st.low_wm = wm(opts.low());
        if opts.cleaner {
            activate_cleaner(&mut st, n);
        }
        let core = Arc::new(Core {
            cfg,
            origin: origin.dev.clone(),
            cache: cache.dev.clone(),
            worker: ctx.worker("writecache"),
            endio: ctx.worker("writecache-endio"),
            copier: Copier::new(COPY_CHUNK, COPY_BUFFERS),
            meta_io: Mutex::new(()),
            st: Mutex::new(st),
            idle: Condvar::new(),
            timers: Mutex::new(Timers::default()),
            timer_cv: Condvar::new(),
        });
        work::start_timers(&core);
        Ok(Box::new(WritecacheTarget {
            core,
            opts,
            bs,
            devs: [dev_label(&origin), dev_label(&cache)],
            _handles: [origin, cache],
        }))
    }
}

fn activate_cleaner(st: &mut State, n: u64) {
    st.flush_on_suspend = true;
    st.cleaner = true;
    st.high_wm = n;
    st.low_wm = n;
}

/// One `writecache` table line.
pub struct WritecacheTarget {
    core: Arc<Core>,
    opts: WcOpts,
    /// Block size, bytes.
    bs: u64,
    devs: [DevId; 2],
    _handles: [Arc<DevHandle>; 2],
}

impl Drop for WritecacheTarget {
    /// The kernel suspends a device before removing it: commit what is uncommitted.
    fn drop(&mut self) {
        {
            let mut t = self.core.timers.lock();
            t.stop = true;
            self.core.timer_cv.notify_all();
        }
        let st = self.core.st.lock();
        if st.loaded && !st.suspended {
            drop(st);
            let c = self.core.clone();
            self.core.worker.call(move || {
                c.flush();
                c.wait_writeback_idle();
            });
        }
    }
}

fn einval(msg: &str) -> TargetError {
    TargetError::with_errno(libc::EINVAL, msg)
}

impl Target for WritecacheTarget {
    fn map(&self, bio: Bio) -> MapResult {
        self.core.map(bio)
    }

    fn num_flush_bios(&self) -> u32 {
        2
    }

    fn io_hints(&self, limits: &mut udm_io::Limits) {
        let bs = self.bs as u32;
        limits.logical_block_size = limits.logical_block_size.max(bs);
        limits.physical_block_size = limits.physical_block_size.max(bs);
        limits.io_min = limits.io_min.max(bs);
    }

    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        match ty {
            StatusType::Info => {
                let st = self.core.st.lock();
                let s = &st.stats;
                format!(
                    "{} {} {} {} {} {} {} {} {} {} {} {} {} {}",
                    st.error as u8,
                    self.core.cfg.n_blocks,
                    st.free_count(),
                    st.writeback_size,
                    s.reads,
                    s.read_hits,
                    s.writes,
                    s.write_hits_uncommitted,
                    s.write_hits_committed,
                    s.writes_around,
                    s.writes_allocate,
                    s.writes_blocked_on_freelist,
                    s.flushes,
                    s.discards
                )
            }
            StatusType::Table => {
                let e = |d: &DevId| udm_core::escape_arg(&d.to_string()).into_owned();
                format!(
                    "s {} {} {} {}",
                    e(&self.devs[0]),
                    e(&self.devs[1]),
                    self.bs,
                    self.opts
                )
            }
        }
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        let c = &self.core;
        let word = argv[0].to_ascii_lowercase();
        let known = ["flush", "flush_on_suspend", "cleaner", "clear_stats"];
        if !known.contains(&word.as_str()) {
            udm_core::klog::err(
                "writecache",
                &format!("unrecognised message received: {}", argv[0]),
            );
            return Err(einval("unrecognised message"));
        }
        if argv.len() != 1 {
            return Err(einval("Invalid argument count"));
        }
        let mut st = c.st.lock();
        match word.as_str() {
            "flush" => {
                if st.suspended || !st.loaded {
                    return Err(TargetError::with_errno(libc::EBUSY, "device is suspended"));
                }
                if st.error {
                    return Err(TargetError::with_errno(libc::EIO, "writecache has failed"));
                }
                drop(st);
                let me = c.clone();
                if !c.worker.call(move || me.writeback_all()) {
                    return Err(TargetError::with_errno(libc::EIO, "writecache has failed"));
                }
            }
            "flush_on_suspend" => st.flush_on_suspend = true,
            "cleaner" => {
                activate_cleaner(&mut st, c.cfg.n_blocks);
                if !st.suspended && st.loaded {
                    c.verify_watermark(&mut st);
                }
            }
            _ => st.stats = Default::default(),
        }
        Ok(None)
    }

    fn postsuspend(&self) {
        if self.core.st.lock().loaded {
            let c = self.core.clone();
            self.core.worker.call(move || c.suspend());
        }
    }

    fn resume(&self) {
        let c = self.core.clone();
        self.core.worker.call(move || c.load());
    }
}
