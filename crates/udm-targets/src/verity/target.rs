//! The running `verity` target: reads go to the data device; when they complete, the blocks
//! are verified against the hash tree (verified hash blocks are cached; where the hashing
//! runs is in `io.rs`), and failures are corrected with FEC when configured, or handled by
//! the corruption mode.

use super::cache::{self, BlockCache, Kind};
use super::fec::FecRuntime;
use super::params::{Mode, VerityParams};
use super::store::DataStore;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use udm_core::{DevHandle, MapResult, StatusType, Target};
use udm_crypto::sha256x2;
use udm_formats::verity::{BlockHasher, Digest, Geometry, HashAlg, HashType};
use udm_io::{Bio, IoBuf, IoError, Limits, Op, Sectors};

/// The kernel stops logging (but keeps counting) after this many corrupted blocks.
const MAX_CORRUPTED_ERRS: u32 = 100;

/// Why verification stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The I/O fails with this error.
    Fail(IoError),
    /// Going on needs blocking I/O (a hash block not in the cache, or FEC), which the CPU
    /// pool must not do: start again on the I/O pool.
    NeedIo,
}

impl Stop {
    /// The error the bio ends with.
    pub(crate) fn errno(self) -> IoError {
        match self {
            Stop::Fail(e) => e,
            Stop::NeedIo => IoError::Io,
        }
    }
}

impl From<IoError> for Stop {
    fn from(e: IoError) -> Stop {
        Stop::Fail(e)
    }
}

/// Which kind of block failed (the `type` of `DM_VERITY_ERR_BLOCK_NR=type,block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockType {
    Data = 0,
    Metadata = 1,
}

/// Shared state of one verity target.
pub struct Inner {
    pub(crate) params: VerityParams,
    pub(crate) geo: Geometry,
    pub(crate) hasher: BlockHasher,
    pub(crate) root: Digest,
    pub(crate) zero_digest: Option<Digest>,
    pub(crate) data: Arc<DevHandle>,
    pub(crate) hash: Arc<DevHandle>,
    pub(crate) fec: Option<FecRuntime>,
    /// This target's key in the process-wide verified-block cache.
    pub(crate) owner: u64,
    pub(crate) cache: &'static BlockCache,
    /// Verified data blocks in a memfd (spliced by NBD replies), where usable; otherwise
    /// data blocks go to `cache`.
    store: Option<Arc<DataStore>>,
    validated: Option<Vec<AtomicU64>>,
    hash_failed: AtomicBool,
    /// Set by `restart_on_corruption` / `panic_on_corruption`: every later I/O fails.
    dead: AtomicBool,
    corrupted_errs: AtomicU32,
    /// Every corruption event (the kernel's uevents), counted even after logging stops.
    events: AtomicU64,
    /// Raises a dm event on the device when restart/panic mode kills it.
    pub(crate) event: Option<udm_core::EventTrigger>,
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        params: VerityParams,
        geo: Geometry,
        hasher: BlockHasher,
        root: Digest,
        data: Arc<DevHandle>,
        hash: Arc<DevHandle>,
        fec: Option<FecRuntime>,
    ) -> Inner {
        let zero_digest = params
            .ignore_zero_blocks
            .then(|| hasher.digest(&vec![0u8; geo.data_block_size as usize]));
        let validated = params.check_at_most_once.then(|| {
            (0..geo.data_blocks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        let cache = cache::global();
        let store = if cache.data_enabled() {
            DataStore::new(geo.data_blocks, geo.data_block_size as usize)
        } else {
            None
        };
        Inner {
            params,
            geo,
            hasher,
            root,
            zero_digest,
            data,
            hash,
            fec,
            owner: cache::new_owner(),
            cache,
            store,
            validated,
            hash_failed: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            corrupted_errs: AtomicU32::new(0),
            events: AtomicU64::new(0),
            event: None,
        }
    }

    fn is_validated(&self, b: u64) -> bool {
        self.validated
            .as_ref()
            .is_some_and(|v| v[(b / 64) as usize].load(Ordering::Relaxed) & (1 << (b % 64)) != 0)
    }
    fn set_validated(&self, b: u64) {
        if let Some(v) = &self.validated {
            v[(b / 64) as usize].fetch_or(1 << (b % 64), Ordering::Relaxed);
        }
    }

    /// True once corruption was seen (status `C`).
    pub fn corrupted(&self) -> bool {
        self.hash_failed.load(Ordering::Relaxed)
    }

    /// The kernel's `verity_handle_err`: record the failure; true when the I/O must fail.
    fn handle_err(&self, ty: BlockType, block: u64) -> bool {
        self.hash_failed.store(true, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
        let n = self.corrupted_errs.load(Ordering::Relaxed);
        if n < MAX_CORRUPTED_ERRS {
            let n = self.corrupted_errs.fetch_add(1, Ordering::Relaxed) + 1;
            let kind = match ty {
                BlockType::Data => "data",
                BlockType::Metadata => "metadata",
            };
            udm_core::klog::err(
                "verity",
                &format!(
                    "{}: {kind} block {block} is corrupted (DM_VERITY_ERR_BLOCK_NR={},{block})",
                    self.data.id, ty as u32
                ),
            );
            if n == MAX_CORRUPTED_ERRS {
                udm_core::klog::err(
                    "verity",
                    &format!("{}: reached maximum errors", self.data.id),
                );
            }
        }
        match self.params.mode {
            Mode::Logging => false,
            Mode::Eio => true,
            Mode::Restart | Mode::Panic => {
                if !self.dead.swap(true, Ordering::Relaxed) {
                    // Visible to `dmsetup wait`/`info` as a new event number.
                    if let Some(ev) = &self.event {
                        ev();
                    }
                }
                udm_core::klog::err(
                    "verity",
                    &format!(
                        "{}: dm-verity device corrupted ({}): failing all further I/O",
                        self.data.id,
                        self.params.mode.keyword().unwrap_or_default()
                    ),
                );
                true
            }
        }
    }

    /// Read one hash block (blocking; worker-pool code only).
    fn read_hash_block(&self, hb: u64) -> Result<Vec<u8>, IoError> {
        let hbs = self.geo.hash_block_size as u64;
        udm_io::sync::read_at(
            self.hash.dev.as_ref(),
            Sectors(hb * hbs / 512),
            hbs as usize,
        )
        .map(|b| b.into_vec())
    }

    /// A hash block whose digest must equal `want`: from the cache, or read, checked (and
    /// corrected with FEC) and cached. `quiet` checks without side effects (for FEC's erasure
    /// search) and fails instead of handling corruption. Without `may_block`, a cache miss
    /// stops with `NeedIo`.
    fn verified_hash_block(
        &self,
        hb: u64,
        want: &Digest,
        quiet: bool,
        may_block: bool,
    ) -> Result<Arc<[u8]>, Stop> {
        if let Some(b) = self.cache.get(self.owner, Kind::Hash, hb) {
            return Ok(b);
        }
        if !may_block {
            return Err(Stop::NeedIo);
        }
        let data = self.read_hash_block(hb);
        if let Ok(d) = &data {
            if self.hasher.digest(d) == *want {
                let a: Arc<[u8]> = Arc::from(d.as_slice());
                self.cache.insert(self.owner, Kind::Hash, hb, a.clone());
                return Ok(a);
            }
        }
        if quiet {
            return Err(Stop::Fail(IoError::Io));
        }
        if let Some(fec) = &self.fec {
            if let Some(vb) = fec.layout.virtual_of_hash(hb) {
                if let Some(fixed) = fec.correct(self, vb, want) {
                    let a: Arc<[u8]> = Arc::from(fixed);
                    self.cache.insert(self.owner, Kind::Hash, hb, a.clone());
                    return Ok(a);
                }
            }
        }
        let data = data?;
        if self.handle_err(BlockType::Metadata, hb) {
            return Err(Stop::Fail(IoError::Io));
        }
        // Logging mode: use the unverified block (not cached as verified).
        Ok(Arc::from(data))
    }

    /// The expected digest of data block `block` (the kernel's `verity_hash_for_block`).
    pub(crate) fn want_digest(
        &self,
        block: u64,
        quiet: bool,
        may_block: bool,
    ) -> Result<Digest, Stop> {
        self.want_digest_memo(block, quiet, may_block, &mut None)
    }

    /// As `want_digest`; `memo` keeps the last level-0 hash block used, so a run of
    /// consecutive data blocks (which share one) looks the cache up once.
    fn want_digest_memo(
        &self,
        block: u64,
        quiet: bool,
        may_block: bool,
        memo: &mut Option<(u64, Arc<[u8]>)>,
    ) -> Result<Digest, Stop> {
        let levels = self.geo.levels();
        let ds = self.geo.digest_size();
        if levels > 0 {
            let (hb, off) = self.geo.position(block, 0);
            if let Some((m, b)) = memo.as_ref() {
                if *m == hb {
                    return Ok(Digest::from_slice(&b[off..off + ds]));
                }
            }
            if let Some(b) = self.cache.get(self.owner, Kind::Hash, hb) {
                let d = Digest::from_slice(&b[off..off + ds]);
                *memo = Some((hb, b));
                return Ok(d);
            }
        }
        let mut want = self.root;
        for level in (0..levels).rev() {
            let (hb, off) = self.geo.position(block, level);
            let b = self.verified_hash_block(hb, &want, quiet, may_block)?;
            want = Digest::from_slice(&b[off..off + ds]);
        }
        Ok(want)
    }

    /// Verify (and correct) `buf`, which holds data blocks `first..` as read, starting at
    /// block index `*done` of it and advancing `*done` past every block settled; `read_ok` is
    /// whether the read itself succeeded. Without `may_block` it stops with `NeedIo` where
    /// blocking I/O would be needed, so the rest can go on elsewhere. Blocks whose digests
    /// matched are kept in the verified-block cache in runs (one write per run), also when
    /// verification stops early; a block that did not match never enters.
    pub(crate) fn verify_io(
        &self,
        first: u64,
        buf: &mut [u8],
        read_ok: bool,
        may_block: bool,
        done: &mut usize,
    ) -> Result<(), Stop> {
        let mut run = (0, 0);
        let r = self.verify_blocks(first, buf, read_ok, may_block, done, &mut run);
        self.keep_run(first, buf, run);
        r
    }

    /// `verify_io`'s loop; `run` is the (index, count) of the latest run of matched blocks
    /// of `buf` not kept yet (earlier runs are kept as soon as a run breaks).
    fn verify_blocks(
        &self,
        first: u64,
        buf: &mut [u8],
        read_ok: bool,
        may_block: bool,
        done: &mut usize,
        run: &mut (usize, usize),
    ) -> Result<(), Stop> {
        let bs = self.geo.data_block_size as usize;
        let n = buf.len() / bs;
        let mut memo = None;
        let mut matched = |i: usize, c: usize, buf: &[u8]| {
            if run.0 + run.1 != i {
                self.keep_run(first, buf, *run);
                *run = (i, 0);
            }
            run.1 += c;
        };
        while *done < n {
            let i = *done;
            let b = first + i as u64;
            // A block verified before is served as it was then, whatever the device holds now.
            if self.copy_cached(b, &mut buf[i * bs..(i + 1) * bs]) {
                *done = i + 1;
                continue;
            }
            if read_ok && self.is_validated(b) {
                *done = i + 1;
                continue;
            }
            if read_ok
                && i + 1 < n
                && self.verify_pair(b, &buf[i * bs..(i + 2) * bs], may_block, &mut memo)?
            {
                matched(i, 2, buf);
                *done = i + 2;
                continue;
            }
            if self.verify_block(
                b,
                &mut buf[i * bs..(i + 1) * bs],
                read_ok,
                may_block,
                &mut memo,
            )? {
                matched(i, 1, buf);
            }
            *done = i + 1;
        }
        Ok(())
    }

    /// The fast path for two read blocks `b` and `b + 1` (`two` holds both): with sha256 on
    /// a CPU with the SHA extensions, both are hashed in one interleaved pass. True when
    /// both matched their tree digests (marked validated; the caller keeps them); false leaves everything
    /// to `verify_block`, one block at a time: no second SHA unit, a zero block, a digest
    /// mismatch, or a hash block for `b + 1` that is not at hand or fails to verify (looked
    /// up quietly here, so its error is reported once, when `verify_block` meets it).
    fn verify_pair(
        &self,
        b: u64,
        two: &[u8],
        may_block: bool,
        memo: &mut Option<(u64, Arc<[u8]>)>,
    ) -> Result<bool, Stop> {
        if self.hasher.alg() != HashAlg::Sha256
            || !sha256x2::available()
            || self.is_validated(b + 1)
        {
            return Ok(false);
        }
        let want_a = self.want_digest_memo(b, false, may_block, memo)?;
        let Ok(want_b) = self.want_digest_memo(b + 1, true, may_block, memo) else {
            return Ok(false);
        };
        if self.zero_digest.is_some_and(|z| z == want_a || z == want_b) {
            return Ok(false);
        }
        let salt = self.hasher.salt();
        let (pre, post) = match self.hasher.hash_type() {
            HashType::Normal => (salt, &[][..]),
            HashType::ChromeOs => (&[][..], salt),
        };
        let (x, y) = two.split_at(two.len() / 2);
        let Some([da, db]) = sha256x2::sha256_x2(pre, x, y, post) else {
            return Ok(false);
        };
        if Digest::from_slice(&da) != want_a || Digest::from_slice(&db) != want_b {
            return Ok(false);
        }
        self.set_validated(b);
        self.set_validated(b + 1);
        Ok(true)
    }

    /// Keep `run` = (index, count) of `buf`'s blocks (data blocks `first..`), whose digests
    /// just matched the tree, in the verified-block cache: one write into the store.
    fn keep_run(&self, first: u64, buf: &[u8], run: (usize, usize)) {
        let bs = self.geo.data_block_size as usize;
        let (i, c) = run;
        if c == 0 {
            return;
        }
        let bytes = &buf[i * bs..(i + c) * bs];
        if let Some(s) = &self.store {
            s.insert_run(first + i as u64, bytes, self.cache);
        } else if self.cache.data_enabled() {
            for (k, block) in bytes.chunks_exact(bs).enumerate() {
                let b = first + (i + k) as u64;
                self.cache
                    .insert(self.owner, Kind::Data, b, Arc::from(block));
            }
        }
    }

    /// Fill `buf` (data blocks `first..`) from the verified-block cache; false (with `buf`
    /// partly filled) as soon as one block is not there.
    fn all_cached(&self, first: u64, buf: &mut [u8]) -> bool {
        if let Some(s) = &self.store {
            return s.copy_all(first, buf);
        }
        let bs = self.geo.data_block_size as usize;
        self.cache.copy_data_run(self.owner, first, bs, buf) * bs == buf.len()
    }

    /// Copy verified data block `b` from the store or the cache into `out`, if kept.
    fn copy_cached(&self, b: u64, out: &mut [u8]) -> bool {
        match &self.store {
            Some(s) => s.copy_one(b, out),
            None => self.cache.copy_data(self.owner, b, out),
        }
    }

    /// Verify one data block; true when its digest matched the tree (it may then be kept),
    /// false when it is settled otherwise (a zero block, corrected by FEC, or let through by
    /// logging mode).
    fn verify_block(
        &self,
        b: u64,
        chunk: &mut [u8],
        read_ok: bool,
        may_block: bool,
        memo: &mut Option<(u64, Arc<[u8]>)>,
    ) -> Result<bool, Stop> {
        let want = self.want_digest_memo(b, false, may_block, memo)?;
        if self.zero_digest == Some(want) {
            chunk.fill(0);
            return Ok(false);
        }
        if read_ok && self.hasher.digest(chunk) == want {
            self.set_validated(b);
            return Ok(true);
        }
        if let Some(fec) = &self.fec {
            if !may_block {
                return Err(Stop::NeedIo);
            }
            if let Some(fixed) = fec.correct(self, b, &want) {
                chunk.copy_from_slice(&fixed);
                return Ok(false);
            }
        }
        if !read_ok || self.handle_err(BlockType::Data, b) {
            return Err(Stop::Fail(IoError::Io));
        }
        Ok(false)
    }
}

impl Drop for Inner {
    /// A reloaded or removed table's verified blocks are of no use to anyone: free them.
    fn drop(&mut self) {
        self.cache.drop_owner(self.owner);
    }
}

/// One `verity` table line.
pub struct Verity {
    pub(crate) inner: Arc<Inner>,
}

impl Verity {
    /// Corruption events so far (each would have been a uevent in the kernel).
    pub fn events(&self) -> u64 {
        self.inner.events.load(Ordering::Relaxed)
    }

    /// (blocks, bytes) this target holds in the verified-block cache (data and hash blocks).
    pub fn cached(&self) -> (usize, usize) {
        let (n, b) = self.inner.cache.usage(Some(self.inner.owner));
        let (sn, sb) = self.inner.store.as_ref().map_or((0, 0), |s| s.usage());
        (n + sn, b + sb)
    }

    /// Whether verified data blocks live in a memfd that NBD replies splice from.
    pub fn zero_copy(&self) -> bool {
        self.inner.store.is_some()
    }
}

impl Target for Verity {
    fn map(&self, mut bio: Bio) -> MapResult {
        let inner = &self.inner;
        match bio.op {
            // dm-verity takes no flushes (num_flush_bios = 0): they succeed at once.
            Op::Flush => {
                bio.complete(Ok(()));
                return MapResult::Submitted;
            }
            Op::Discard | Op::WriteZeroes => return MapResult::Kill(bio, IoError::NotSupported),
            Op::Read | Op::Write => {}
            _ => return MapResult::Kill(bio, IoError::NotSupported),
        }
        let spb = (inner.geo.data_block_size / 512) as u64;
        if (bio.sector.0 | bio.len().0) & (spb - 1) != 0 {
            udm_core::klog::err("verity", "unaligned io");
            return MapResult::Kill(bio, IoError::Io);
        }
        if bio.end().0 / spb > inner.geo.data_blocks {
            udm_core::klog::err("verity", "io out of range");
            return MapResult::Kill(bio, IoError::Io);
        }
        if bio.op == Op::Write || inner.dead.load(Ordering::Relaxed) {
            return MapResult::Kill(bio, IoError::Io);
        }
        let first = bio.sector.0 / spb;
        let sector = bio.sector;
        let mut buf = bio.take_buf();
        if inner.all_cached(first, &mut buf) {
            bio.set_buf(buf);
            bio.complete(Ok(()));
            return MapResult::Submitted;
        }
        let me = self.inner.clone();
        let read = Bio::read(
            sector,
            buf,
            Box::new(move |res: Result<(), IoError>, buf: IoBuf| {
                me.read_done(bio, first, res, buf)
            }),
        );
        self.inner.data.dev.submit(read);
        MapResult::Submitted
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        match ty {
            StatusType::Info => if self.inner.corrupted() { "C" } else { "V" }.to_string(),
            StatusType::Table => {
                let mut p = self.inner.params.clone();
                p.data_dev = self.inner.data.id.to_string();
                p.hash_dev = self.inner.hash.id.to_string();
                if let Some(f) = &self.inner.fec {
                    p.fec.dev = Some(f.dev.id.to_string());
                }
                p.to_string()
            }
        }
    }

    /// Reads whose blocks are all verified and kept in the memfd are that file's range:
    /// run `f` on it while the blocks are pinned (a splice takes its own page references).
    fn read_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: udm_io::FileReader<'_>,
    ) -> Option<std::io::Result<usize>> {
        let inner = &self.inner;
        let store = inner.store.as_ref()?;
        let spb = (inner.geo.data_block_size / 512) as u64;
        if (sector.0 | len.0) & (spb - 1) != 0 || inner.dead.load(Ordering::Relaxed) {
            return None;
        }
        store.with_file(sector.0 / spb, len.0 / spb, |file, off| f(file, off))
    }

    fn io_hints(&self, limits: &mut Limits) {
        let bs = self.inner.geo.data_block_size;
        limits.logical_block_size = limits.logical_block_size.max(bs);
        limits.physical_block_size = limits.physical_block_size.max(bs);
        limits.io_min = limits.io_min.max(limits.logical_block_size);
    }
}
