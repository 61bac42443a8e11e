//! The `BlockDevice` trait every backend, mapped device and remote device implements.

use crate::{Bio, Sectors};
use std::fmt;

thread_local! {
    static MAY_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with the current thread marked as one that may wait in `BlockDevice::submit`: a
/// thread dedicated to its caller's requests (an NBD connection's request thread), where a
/// backend may serve a write synchronously instead of handing it to its I/O pool (a thread
/// hop per request that gains nothing when the thread would only wait for the reply). Other
/// threads (a shared completion thread, a single reader loop) keep the default: `submit`
/// must not block them. Nesting is allowed; the mark is restored when `f` returns or panics.
pub fn with_blocking_submit<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            MAY_BLOCK.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(MAY_BLOCK.with(|m| m.replace(true)));
    f()
}

/// Whether the current thread runs inside `with_blocking_submit`.
pub fn blocking_submit_allowed() -> bool {
    MAY_BLOCK.with(|m| m.get())
}

/// How a device is named in tables and `deps`: a `major:minor` pair (block devices, mapped
/// devices) or a path (a regular file used as backing, printed as given).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DevId {
    Num(u32, u32),
    Path(String),
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevId::Num(ma, mi) => write!(f, "{ma}:{mi}"),
            DevId::Path(p) => f.write_str(p),
        }
    }
}

/// I/O limits a device advertises (the kernel's `queue_limits`, the parts udm uses).
/// Byte sizes are bytes, lengths are sectors; for the `max_*` fields and `io_opt`, 0 means
/// "no limit" / "no preference" (stacking takes the smallest / least common multiple of the
/// non-zero values, as the kernel's `min_not_zero` / `lcm_not_zero`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Smallest addressable unit, bytes (512 or 4096 …).
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    /// Preferred minimum I/O, bytes.
    pub io_min: u32,
    /// Optimal I/O size, bytes (a full stripe); 0: none.
    pub io_opt: u32,
    /// Largest bio, sectors; 0: no limit.
    pub max_sectors: Sectors,
    /// Discards are done in units of this many bytes; 0: the logical block size.
    pub discard_granularity: u32,
    /// Largest discard, sectors; 0: no limit.
    pub max_discard_sectors: Sectors,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            logical_block_size: 512,
            physical_block_size: 512,
            io_min: 512,
            io_opt: 0,
            max_sectors: Sectors(0),
            discard_granularity: 0,
            max_discard_sectors: Sectors(0),
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Least common multiple, ignoring zeroes (the kernel's `lcm_not_zero`).
pub fn lcm_not_zero(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => {
            let l = (a as u64 / gcd(a as u64, b as u64)) * b as u64;
            u32::try_from(l).unwrap_or(0)
        }
    }
}

/// Smaller of two, ignoring zeroes (the kernel's `min_not_zero`).
pub fn min_not_zero(a: Sectors, b: Sectors) -> Sectors {
    match (a.0, b.0) {
        (0, _) => b,
        (_, 0) => a,
        _ => a.min(b),
    }
}

impl Limits {
    /// Limits with nothing to say yet, to stack lower devices into (the kernel's
    /// `blk_set_stacking_limits`): everything as permissive as possible.
    pub fn stacking() -> Limits {
        Limits {
            logical_block_size: 512,
            physical_block_size: 512,
            io_min: 0,
            io_opt: 0,
            max_sectors: Sectors(0),
            discard_granularity: 0,
            max_discard_sectors: Sectors(0),
        }
    }

    /// Combine `bottom` (a device below, or a target's limits) into `self` as the kernel's
    /// `blk_stack_limits` does: block sizes, `io_min` and discard granularity take the
    /// largest, `io_opt` the least common multiple, the `max_*` sizes the smallest.
    pub fn stack(&mut self, bottom: &Limits) {
        self.logical_block_size = self.logical_block_size.max(bottom.logical_block_size);
        self.physical_block_size = self
            .physical_block_size
            .max(bottom.physical_block_size)
            .max(self.logical_block_size);
        self.io_min = self.io_min.max(bottom.io_min).max(self.physical_block_size);
        self.io_opt = lcm_not_zero(self.io_opt, bottom.io_opt);
        self.max_sectors = min_not_zero(self.max_sectors, bottom.max_sectors);
        self.discard_granularity = self.discard_granularity.max(bottom.discard_granularity);
        self.max_discard_sectors =
            min_not_zero(self.max_discard_sectors, bottom.max_discard_sectors);
    }
}

/// What a zero-copy reader does with a file range (`BlockDevice::read_file_range`): given the
/// file and the byte offset where the device range starts, it reads (splices) what it needs
/// and returns how many bytes it took.
pub type FileReader<'a> = &'a mut dyn FnMut(&std::fs::File, u64) -> std::io::Result<usize>;

/// What a zero-copy writer does with a file range (`BlockDevice::write_file_range`): given the
/// file and the byte offset where the device range starts, it writes (splices) the range's new
/// bytes there and returns how many it wrote.
pub type FileWriter<'a> = &'a mut dyn FnMut(&std::fs::File, u64) -> std::io::Result<usize>;

/// What a reader of page-cache bytes mapped in memory does with them
/// (`BlockDevice::read_mapped`): it gets the range's bytes, read-only, all of them resident.
pub type MappedReader<'a> = &'a mut dyn FnMut(&[u8]);

/// A block device: accepts bios and completes them.
///
/// # The `submit` contract
/// `submit` never blocks the caller: it never waits for the bio, for another bio, for a
/// suspended device to resume, for a lock held across I/O, or for a worker thread. The one
/// exception is the *inline fast path*: an implementation may do the I/O on the caller's
/// thread when that cannot wait (a RAM copy, a page-cache hit with `RWF_NOWAIT`, a timed
/// page-aligned write that turns itself off after one slow attempt) and complete the bio
/// before returning. Everything else is queued (to a worker pool, a target's worker, a
/// device's deferred list) and completed later, possibly on another thread. Code that must
/// wait uses `udm_io::sync` helpers, and only on a thread it owns (never on the I/O pool).
///
/// The contract every implementation keeps (checked for each one by the conformance suite in
/// `udm_testkit::conformance`): every bio completes exactly once and hands its buffer back;
/// I/O reaching past `size()` fails with `IoError::Io` (EIO, as the kernel's end-of-device
/// check) and never panics; a `read_only()` device fails writes, discards and write-zeroes
/// with `IoError::ReadOnly` (EROFS) and keeps its data; a write-zeroes that succeeds leaves
/// the range reading as zeroes.
pub trait BlockDevice: Send + Sync {
    /// Start the bio; its completion runs later (possibly on another thread, possibly inline
    /// on the fast path). Never blocks; see the trait documentation.
    fn submit(&self, bio: Bio);
    /// Size in sectors.
    fn size(&self) -> Sectors;
    /// How the device prints in tables.
    fn id(&self) -> DevId;
    fn limits(&self) -> Limits {
        Limits::default()
    }
    fn read_only(&self) -> bool {
        false
    }
    /// Report allocation of `[sector, sector+len)`: runs of `(len, Extent)`. The default says
    /// everything is allocated data.
    fn extents(&self, _sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        vec![(len, Extent::Data)]
    }
    /// A hint: start writing `[sector, sector+len)` back to stable storage now, without
    /// waiting for it, so a later flush has less left to wait for (a metadata target that
    /// flushes after copying a batch starts each copied run's writeback as it lands). Never
    /// blocks for the write-back itself; the default does nothing.
    fn start_writeback(&self, _sector: Sectors, _len: Sectors) {}
    /// Zero-copy reads: when `[sector, sector+len)` reads, right now, as the bytes of a
    /// regular file from some offset on (a file backing; linear over one, stacked or not),
    /// run `f(file, byte_offset)` while that holds and return its result. A mapped device
    /// counts the call as I/O in flight (a suspend waits for it) and in its statistics.
    /// `None`: the range is no such file range, or the device wants bios now (suspended,
    /// inline fast paths off); the caller reads with a bio instead. The default says `None`.
    fn read_file_range(
        &self,
        _sector: Sectors,
        _len: Sectors,
        _f: FileReader<'_>,
    ) -> Option<std::io::Result<usize>> {
        None
    }
    /// Zero-copy writes, as `read_file_range` for reads: when `[sector, sector+len)` is,
    /// right now, the bytes of a writable regular file from some offset on (a file backing;
    /// linear over one, stacked or not), run `f(file, byte_offset)`, which writes the range's
    /// new bytes there as a plain write would (in the page cache: durable after a flush), and
    /// return its result. A mapped device counts the call as a write in flight (a suspend
    /// waits for it) and in its statistics. `None` (the default): write with a bio instead.
    fn write_file_range(
        &self,
        _sector: Sectors,
        _len: Sectors,
        _f: FileWriter<'_>,
    ) -> Option<std::io::Result<usize>> {
        None
    }
    /// Reads without a copy for a reader that transforms the bytes anyway (crypt decrypts
    /// them into its buffer): when `[sector, sector+len)` reads, right now, as bytes of a
    /// regular file that are all in its page cache, run `f` over them (mapped in memory) and
    /// return true. A mapped device counts the call as I/O in flight and in its statistics,
    /// as `read_file_range`. False (the default): read with a bio instead.
    fn read_mapped(&self, _sector: Sectors, _len: Sectors, _f: MappedReader<'_>) -> bool {
        false
    }
}

/// Allocation state of a range, for NBD block status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    Data,
    /// Allocated but reads as zeroes.
    Zero,
    /// Not allocated and reads as zeroes.
    Hole,
}
