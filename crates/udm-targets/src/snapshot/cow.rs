//! The exception store: where a snapshot keeps its copied chunks and the map from origin
//! chunks to COW chunks. Persistent (`P`, `PO`) in the kernel's on-disk COW format, or
//! transient (`N`) in memory.
//!
//! On-disk layout (chunk = the snapshot's chunk size in sectors):
//! * chunk 0: header, little-endian u32s `magic` (0x70416e53, "SnAp"), `valid`, `version` (1),
//!   `chunk_size` (sectors), rest zero;
//! * then repeating groups: one metadata area chunk holding `chunk*512/16` exception pairs
//!   (`old_chunk`, `new_chunk`, little-endian u64 each), followed by that many data chunks.
//!   Area `a` sits at chunk `1 + a*(per_area+1)`. An entry with `new_chunk == 0` ends the
//!   table; the area after a full one is zeroed before the full one is written.
//!
//! Commits: exceptions are added in memory (once their chunks are copied) and written by
//! commits (`PendingCommit::step`) that take every exception added so far: the areas after
//! the oldest one that filled since the last commit, a flush, which makes them and the
//! copied data stable (the kernel's PREFLUSH), then that oldest area (or the current one)
//! as a FUA write, so an area on disk is full only once every area after it up to the
//! current one reads valid (the kernel zeroes the next area first for the same reason). The
//! on-disk result is the kernel's.
//!
//! Every call doing I/O blocks: the store is used from worker threads only.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use udm_io::{sync, BlockDevice, IoError, Sectors};

pub const SNAP_MAGIC: u32 = 0x7041_6e53;
pub const SNAPSHOT_DISK_VERSION: u32 = 1;
/// Chunks before the first metadata area (the header).
const HDR_CHUNKS: u64 = 1;

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("Invalid or corrupt snapshot")]
    BadMagic,
    #[error("unable to handle snapshot disk version {0}")]
    BadVersion(u32),
    #[error("Invalid chunk size {0} in snapshot metadata")]
    BadChunk(u32),
    #[error("Chunk size not set")]
    NoChunkSize,
    #[error("COW device is too small")]
    TooSmall,
    #[error("I/O error on the COW device: {0}")]
    Io(#[from] IoError),
    #[error("COW device full")]
    Full,
}

impl StoreError {
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::BadMagic => libc::ENXIO,
            StoreError::Io(e) => e.errno(),
            StoreError::Full => libc::ENOSPC,
            _ => libc::EINVAL,
        }
    }
}

/// The header in chunk 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskHeader {
    pub magic: u32,
    pub valid: u32,
    pub version: u32,
    pub chunk_size: u32,
}

impl DiskHeader {
    pub fn decode(b: &[u8]) -> DiskHeader {
        let w = |i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        DiskHeader {
            magic: w(0),
            valid: w(1),
            version: w(2),
            chunk_size: w(3),
        }
    }
    pub fn encode(&self, b: &mut [u8]) {
        for (i, v) in [self.magic, self.valid, self.version, self.chunk_size]
            .into_iter()
            .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Exception `i` of an area buffer: (old chunk, new chunk).
pub fn area_entry(area: &[u8], i: usize) -> (u64, u64) {
    let o = i * 16;
    let r = |o: usize| u64::from_le_bytes(area[o..o + 8].try_into().expect("8 bytes"));
    (r(o), r(o + 8))
}

fn set_area_entry(area: &mut [u8], i: usize, old: u64, new: u64) {
    let o = i * 16;
    area[o..o + 8].copy_from_slice(&old.to_le_bytes());
    area[o + 8..o + 16].copy_from_slice(&new.to_le_bytes());
}

/// Exceptions per metadata area for a chunk size (sectors).
pub fn exceptions_per_area(chunk: u64) -> u64 {
    chunk * 512 / 16
}

/// Chunk number of metadata area `area`.
pub fn area_location(chunk: u64, area: u64) -> u64 {
    HDR_CHUNKS + (exceptions_per_area(chunk) + 1) * area
}

/// Persistent or transient, and whether userspace understands `Overflow` (`PO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Persistent { overflow: bool },
    Transient,
}

impl StoreKind {
    pub fn code(&self) -> &'static str {
        match self {
            StoreKind::Persistent { overflow: false } => "P",
            StoreKind::Persistent { overflow: true } => "PO",
            StoreKind::Transient => "N",
        }
    }
}

/// An open exception store.
pub struct Store {
    pub kind: StoreKind,
    /// Chunk size in sectors (the header's when it overrides the table).
    pub chunk: u64,
    map: HashMap<u64, u64>,
    /// Persistent: next free chunk; transient: next free sector.
    next_free: u64,
    current_area: u64,
    current_committed: u64,
    area: Vec<u8>,
    /// Areas that filled and may not be on disk yet: (area, contents, the generation that
    /// filled it), oldest first.
    full: Vec<(u64, Arc<Vec<u8>>, u64)>,
    /// Exceptions added so far (a generation number for commits).
    gen: u64,
    /// The generation whose exceptions are all on disk (may be set by a commit written
    /// outside the store's lock, see [`PendingCommit`]).
    durable: Arc<AtomicU64>,
    /// Held while metadata areas are written: one commit (or merge commit) at a time, so a
    /// stale copy of an area never overwrites a newer one.
    io: Arc<Mutex<()>>,
    cow_size: u64,
}

/// A metadata area write taken from the store (under its lock) to be written without it:
/// the group commit of exceptions made meanwhile by other batches.
pub struct PendingCommit {
    chunk: u64,
    /// Filled areas not known to be on disk yet, oldest first (see [`Store::add`]).
    full: Vec<(u64, Arc<Vec<u8>>, u64)>,
    /// The current area.
    area_no: u64,
    area: Vec<u8>,
    gen: u64,
    durable: Arc<AtomicU64>,
    io: Arc<Mutex<()>>,
}

impl PendingCommit {
    /// Write this commit: the areas after the first filled one that is not durable yet go
    /// as plain writes (that area still ends the table on disk, so none of them counts
    /// yet), then a flush, which makes them and the data of every exception in the commit
    /// stable (taken after their copies were written: the kernel's PREFLUSH), then that
    /// filled area, or the current one if none filled, as a FUA write. So an area on disk
    /// is full only once every area after it up to the current one reads valid (the kernel
    /// zeroes the next area before its PREFLUSH|FUA area write for the same reason), and a
    /// commit costs one flush and one FUA write however many areas it fills. Nothing is
    /// written when a newer commit already is durable.
    pub fn step(self, cow: &dyn BlockDevice) -> Result<(), IoError> {
        let _io = self.io.lock();
        let durable = self.durable.load(SeqCst);
        if self.gen <= durable {
            return Ok(());
        }
        let loc = |a: u64| Sectors(area_location(self.chunk, a).saturating_mul(self.chunk));
        let mut full = self.full.iter().filter(|f| f.2 > durable);
        let last = match full.next() {
            Some((first, buf, _)) => {
                for (a, b, _) in full {
                    sync::write_at(cow, loc(*a), b)?;
                }
                sync::write_at(cow, loc(self.area_no), &self.area)?;
                (*first, &buf[..])
            }
            None => (self.area_no, &self.area[..]),
        };
        sync::flush(cow)?;
        sync::write_fua_at(cow, loc(last.0), last.1)?;
        self.durable.fetch_max(self.gen, SeqCst);
        Ok(())
    }
}

/// A batch of merge runs planned by [`Store::plan_merge`].
#[derive(Debug, Default)]
pub struct MergePlan {
    /// `(first old chunk, first new chunk, count)`, newest first.
    pub runs: Vec<(u64, u64, u64)>,
    /// Areas after the merge, newest first: (area, contents, exceptions left, whether
    /// it changed and is written); the last one becomes the current area.
    areas: Vec<(u64, Vec<u8>, u64, bool)>,
    /// Origin chunks the runs merge.
    merged: Vec<u64>,
}

/// What opening found: the store, whether the header said valid, and the table chunk size
/// the header overrode (the kernel warns about it).
pub struct Opened {
    pub store: Store,
    pub valid: bool,
    pub overridden: Option<u64>,
}

impl Store {
    /// Open (or format, if its header is all zero) the store on `cow`. `chunk` is the
    /// table's chunk size (0: take the header's).
    pub fn open(cow: &dyn BlockDevice, kind: StoreKind, chunk: u64) -> Result<Opened, StoreError> {
        let cow_size = cow.size().0;
        let mut st = Store {
            kind,
            chunk,
            map: HashMap::new(),
            next_free: 0,
            current_area: 0,
            current_committed: 0,
            area: Vec::new(),
            full: Vec::new(),
            gen: 0,
            durable: Arc::default(),
            io: Arc::default(),
            cow_size,
        };
        if kind == StoreKind::Transient {
            if chunk == 0 {
                return Err(StoreError::NoChunkSize);
            }
            return Ok(Opened {
                store: st,
                valid: true,
                overridden: None,
            });
        }
        let hdr = DiskHeader::decode(sync::read_at(cow, Sectors(0), 512)?.as_slice());
        let mut overridden = None;
        let mut valid = true;
        let new = hdr.magic == 0;
        if !new {
            if hdr.magic != SNAP_MAGIC {
                return Err(StoreError::BadMagic);
            }
            if hdr.version != SNAPSHOT_DISK_VERSION {
                return Err(StoreError::BadVersion(hdr.version));
            }
            let c = hdr.chunk_size as u64;
            if c == 0 || !c.is_power_of_two() || c > (i32::MAX as u64 >> 9) {
                return Err(StoreError::BadChunk(hdr.chunk_size));
            }
            if chunk != c {
                if chunk != 0 {
                    overridden = Some(chunk);
                }
                st.chunk = c;
            }
            valid = hdr.valid != 0;
        } else if chunk == 0 {
            return Err(StoreError::NoChunkSize);
        }
        if cow_size < (HDR_CHUNKS + 1) * st.chunk {
            return Err(StoreError::TooSmall);
        }
        st.area = vec![0; (st.chunk * 512) as usize];
        st.next_free = HDR_CHUNKS + 1;
        if new {
            st.write_header(cow, true)?;
            st.zero_disk_area(cow, 0)?;
        } else if valid {
            st.read_exceptions(cow)?;
        }
        Ok(Opened {
            store: st,
            valid,
            overridden,
        })
    }

    fn chunk_sector(&self, c: u64) -> Sectors {
        Sectors(c * self.chunk)
    }

    fn write_header(&self, cow: &dyn BlockDevice, valid: bool) -> Result<(), IoError> {
        let mut b = vec![0u8; (self.chunk * 512) as usize];
        DiskHeader {
            magic: SNAP_MAGIC,
            valid: valid as u32,
            version: SNAPSHOT_DISK_VERSION,
            chunk_size: self.chunk as u32,
        }
        .encode(&mut b);
        sync::write_fua_at(cow, Sectors(0), &b)
    }

    fn zero_disk_area(&self, cow: &dyn BlockDevice, area: u64) -> Result<(), IoError> {
        let b = vec![0u8; (self.chunk * 512) as usize];
        let loc = self.chunk_sector(area_location(self.chunk, area));
        sync::write_fua_at(cow, loc, &b)
    }

    fn read_area(&mut self, cow: &dyn BlockDevice, area: u64) -> Result<(), IoError> {
        let loc = self.chunk_sector(area_location(self.chunk, area));
        let b = sync::read_at(cow, loc, self.area.len())?;
        self.area.copy_from_slice(b.as_slice());
        Ok(())
    }

    /// The current area (and any filled ones not on disk yet) as a commit of everything
    /// added so far.
    fn pending(&self) -> PendingCommit {
        PendingCommit {
            chunk: self.chunk,
            full: self.full.clone(),
            area_no: self.current_area,
            area: self.area.clone(),
            gen: self.gen,
            durable: self.durable.clone(),
            io: self.io.clone(),
        }
    }

    fn read_exceptions(&mut self, cow: &dyn BlockDevice) -> Result<(), StoreError> {
        let epa = exceptions_per_area(self.chunk) as usize;
        let mut area = 0;
        loop {
            if self.chunk_sector(area_location(self.chunk, area) + 1).0 > self.cow_size {
                // No room for this area: the previous one was the last.
                break;
            }
            self.read_area(cow, area)?;
            let mut full = true;
            for i in 0..epa {
                let (old, new) = area_entry(&self.area, i);
                if new == 0 {
                    self.current_committed = i as u64;
                    full = false;
                    break;
                }
                if self.next_free <= new {
                    self.next_free = new.saturating_add(1);
                }
                self.map.insert(old, new);
            }
            self.current_area = area;
            if !full {
                break;
            }
            area += 1;
        }
        // The areas read are on disk (full ones and the current one).
        self.skip_metadata();
        Ok(())
    }

    /// Step `next_free` over a metadata area's chunk.
    fn skip_metadata(&mut self) {
        let stride = exceptions_per_area(self.chunk) + 1;
        if self.next_free % stride == HDR_CHUNKS {
            self.next_free += 1;
        }
    }

    /// The COW chunk holding origin chunk `old`, if copied.
    pub fn lookup(&self, old: u64) -> Option<u64> {
        self.map.get(&old).copied()
    }

    /// How many exceptions the store holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Reserve a COW chunk for a new exception.
    pub fn prepare(&mut self) -> Result<u64, StoreError> {
        match self.kind {
            StoreKind::Transient => {
                if self.cow_size < self.next_free.saturating_add(self.chunk) {
                    return Err(StoreError::Full);
                }
                let c = self.next_free / self.chunk;
                self.next_free += self.chunk;
                Ok(c)
            }
            StoreKind::Persistent { .. } => {
                let end = self
                    .next_free
                    .checked_add(1)
                    .and_then(|n| n.checked_mul(self.chunk));
                if end.is_none_or(|e| self.cow_size < e) {
                    return Err(StoreError::Full);
                }
                let c = self.next_free;
                self.next_free += 1;
                self.skip_metadata();
                Ok(c)
            }
        }
    }

    /// Add `old → new` (its data already on the COW) to the table, in memory only: the next
    /// commit (`take_pending`, `commit_pending`) writes it, so exceptions made together
    /// share one metadata write (the kernel's batching of pending exceptions). A full area is
    /// kept for that commit and the next one starts empty (no I/O here).
    pub fn add(&mut self, old: u64, new: u64) {
        self.map.insert(old, new);
        if self.kind == StoreKind::Transient {
            return;
        }
        let epa = exceptions_per_area(self.chunk);
        set_area_entry(&mut self.area, self.current_committed as usize, old, new);
        self.current_committed += 1;
        self.gen += 1;
        if self.current_committed == epa {
            let durable = self.durable.load(SeqCst);
            self.full.retain(|f| f.2 > durable);
            let fresh = vec![0; self.area.len()];
            let buf = std::mem::replace(&mut self.area, fresh);
            self.full.push((self.current_area, Arc::new(buf), self.gen));
            self.current_committed = 0;
            self.current_area += 1;
        }
    }

    /// Make every exception added so far durable: pipeline steps until one is (the
    /// first may also complete a group commit's step in flight).
    pub fn commit_pending(&mut self, cow: &dyn BlockDevice) -> Result<(), IoError> {
        while let Some(p) = self.take_pending() {
            p.step(cow)?;
        }
        Ok(())
    }

    /// Exceptions added so far (the generation a commit must reach to cover them).
    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// The durable generation, readable without the store (see [`Store::is_durable`]).
    pub fn durable_handle(&self) -> Arc<AtomicU64> {
        self.durable.clone()
    }

    /// Whether every exception up to generation `gen` is on disk.
    pub fn is_durable(&self, gen: u64) -> bool {
        self.kind == StoreKind::Transient || self.durable.load(SeqCst) >= gen
    }

    /// The metadata write that makes every exception added so far durable, if one is
    /// needed; written by [`PendingCommit::write`], possibly after the lock is dropped.
    pub fn take_pending(&mut self) -> Option<PendingCommit> {
        let durable = self.durable.load(SeqCst);
        self.full.retain(|f| f.2 > durable);
        (!self.is_durable(self.gen)).then(|| self.pending())
    }

    /// Record `old → new` durably now.
    pub fn commit(&mut self, cow: &dyn BlockDevice, old: u64, new: u64) -> Result<(), IoError> {
        self.add(old, new);
        self.commit_pending(cow)
    }

    /// Mark the snapshot invalid on disk (a full or failing COW).
    pub fn drop_snapshot(&self, cow: &dyn BlockDevice) -> Result<(), IoError> {
        match self.kind {
            StoreKind::Transient => Ok(()),
            _ => self.write_header(cow, false),
        }
    }

    /// `(sectors allocated, total sectors, metadata sectors)` as the kernel counts them.
    pub fn usage(&self) -> (u64, u64, u64) {
        match self.kind {
            StoreKind::Transient => (self.next_free, self.cow_size, 0),
            StoreKind::Persistent { .. } => (
                self.next_free.wrapping_mul(self.chunk),
                self.cow_size,
                (self.current_area + 1 + HDR_CHUNKS) * self.chunk,
            ),
        }
    }

    /// The next batch to merge: runs of the newest exception and the consecutive ones
    /// before it in its area (the kernel's merge order), newest first, going back through
    /// earlier areas, until `max_chunks` chunks are taken.
    /// Nothing changes until [`Store::commit_merge_plan`].
    pub fn plan_merge(
        &self,
        cow: &dyn BlockDevice,
        max_chunks: u64,
    ) -> Result<Option<MergePlan>, IoError> {
        let epa = exceptions_per_area(self.chunk);
        let (mut area, mut committed) = (self.current_area, self.current_committed);
        let mut buf = self.area.clone();
        let mut plan = MergePlan::default();
        let mut touched = false;
        let mut total = 0;
        loop {
            if committed == 0 {
                if area == 0 {
                    break;
                }
                if touched {
                    plan.areas.push((area, std::mem::take(&mut buf), 0, true));
                }
                area -= 1;
                let loc = self.chunk_sector(area_location(self.chunk, area));
                buf = sync::read_at(cow, loc, self.area.len())?
                    .as_slice()
                    .to_vec();
                committed = epa;
                touched = false;
            }
            if total >= max_chunks {
                break;
            }
            let last = (committed - 1) as usize;
            let (lo, ln) = area_entry(&buf, last);
            let mut n = 1u64;
            while n < committed && total + n < max_chunks {
                let (o, nw) = area_entry(&buf, last - n as usize);
                if o != lo.wrapping_sub(n) || nw != ln.wrapping_sub(n) {
                    break;
                }
                n += 1;
            }
            for i in 0..n as usize {
                plan.merged.push(area_entry(&buf, last - i).0);
                set_area_entry(&mut buf, last - i, 0, 0);
            }
            plan.runs
                .push((lo.wrapping_sub(n - 1), ln.wrapping_sub(n - 1), n));
            committed -= n;
            total += n;
            touched = true;
        }
        if plan.runs.is_empty() {
            return Ok(None);
        }
        // The area the batch ends in becomes current; written only if the batch took from
        // it (it may have just stepped back into it).
        plan.areas.push((area, buf, committed, touched));
        Ok(Some(plan))
    }

    /// The runs of `plan` are in the origin (and flushed there): clear them from the
    /// areas on disk, newest area first, and from the table. The areas go as plain writes
    /// and one flush after them (the kernel clears one run per commit, each area write
    /// PREFLUSH | FUA): any subset of them reaching the disk before that flush reads back
    /// as a table whose remaining entries are all unmerged or merged already (their COW
    /// data unchanged, the origin flushed), so a resume merges them again to the same
    /// result; the batch holds the store's lock until the flush is done, so no write to a
    /// merged chunk is acknowledged before its entry is cleared for good.
    pub fn commit_merge_plan(
        &mut self,
        cow: &dyn BlockDevice,
        plan: MergePlan,
    ) -> Result<(), IoError> {
        debug_assert!(
            self.is_durable(self.gen),
            "a merge starts from a committed store"
        );
        let _io = self.io.lock();
        let mut written = false;
        for (area, buf, committed, write) in plan.areas {
            if write {
                let loc = self.chunk_sector(area_location(self.chunk, area));
                sync::write_at(cow, loc, &buf)?;
                written = true;
            }
            self.current_area = area;
            self.current_committed = committed;
            self.area = buf;
        }
        if written {
            sync::flush(cow)?;
        }
        for old in plan.merged {
            self.map.remove(&old);
        }
        self.next_free = area_location(self.chunk, self.current_area) + self.current_committed + 1;
        Ok(())
    }

    /// Every exception, for `snapshot dump` and tests: (old, new) sorted by old chunk.
    pub fn exceptions(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<_> = self.map.iter().map(|(a, b)| (*a, *b)).collect();
        v.sort_unstable();
        v
    }
}

/// The header and exception table of a persistent COW, in on-disk order, as text (for
/// `udm snapshot dump`). Reads only; a COW that was never written says so.
pub fn dump(cow: &dyn BlockDevice) -> Result<String, StoreError> {
    use std::fmt::Write;
    let hdr = DiskHeader::decode(sync::read_at(cow, Sectors(0), 512)?.as_slice());
    let mut out = String::new();
    if hdr.magic == 0 {
        return Ok("no snapshot header (a new, unformatted COW)\n".into());
    }
    let _ = writeln!(
        out,
        "magic {:#010x} valid {} version {} chunk_size {}",
        hdr.magic, hdr.valid, hdr.version, hdr.chunk_size
    );
    if hdr.magic != SNAP_MAGIC {
        return Err(StoreError::BadMagic);
    }
    if hdr.version != SNAPSHOT_DISK_VERSION {
        return Err(StoreError::BadVersion(hdr.version));
    }
    let chunk = hdr.chunk_size as u64;
    if chunk == 0 || !chunk.is_power_of_two() || chunk > (i32::MAX as u64 >> 9) {
        return Err(StoreError::BadChunk(hdr.chunk_size));
    }
    let epa = exceptions_per_area(chunk) as usize;
    let mut total = 0usize;
    for area in 0.. {
        let loc = area_location(chunk, area);
        if (loc + 1).saturating_mul(chunk) > cow.size().0 {
            break;
        }
        let b = sync::read_at(cow, Sectors(loc * chunk), (chunk * 512) as usize)?;
        let n = (0..epa)
            .position(|i| area_entry(b.as_slice(), i).1 == 0)
            .unwrap_or(epa);
        let _ = writeln!(out, "area {area} (chunk {loc}): {n} exceptions");
        for i in 0..n {
            let (old, new) = area_entry(b.as_slice(), i);
            let _ = writeln!(out, "  {old} -> {new}");
        }
        total += n;
        if n < epa {
            break;
        }
    }
    let _ = writeln!(out, "{total} exceptions");
    Ok(out)
}

/// `dump` of a COW given by path (image file or block device), opened read-only.
pub fn dump_file(path: &std::path::Path) -> Result<String, StoreError> {
    let dev = udm_io::FileDevice::open(path, true)
        .map_err(|e| StoreError::Io(IoError::Os(e.raw_os_error().unwrap_or(libc::EIO))))?;
    dump(&dev)
}
