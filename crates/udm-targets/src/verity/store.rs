//! Verified DATA blocks of one `verity` target kept in a memfd laid out like the data device
//! (block N at byte N·bs, sparse), so an NBD reply can splice them to the socket without a
//! copy, as `linear` splices page-cache pages of its file (`Target::read_file_range`). Used
//! when the data block is one page (a punched block then frees exactly its own page) and
//! shared memory gets no transparent huge pages (a hole punched inside a huge page would be
//! zeroed in place, under a pipe that still holds it). Other targets keep data blocks in the
//! sharded cache (`cache.rs`), which always holds the hash blocks.
//!
//! Residency is a bitmap; a second bitmap holds CLOCK reference bits. Readers hold `gate`
//! shared while they check bits and read (copy from the mapping, or splice: the pipe takes
//! page references, so the pages outlive a later punch). Eviction clears bits under `gate`
//! held exclusively, then punches the holes; inserts and evictions of one store are
//! serialized by `writer`, so a block is never written while resident or punched after it
//! was filled again. The process-wide budget (`BlockCache::budget`) covers these blocks and the
//! sharded cache together.

use super::cache::BlockCache;
use parking_lot::{Mutex, RwLock};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// Blocks evicted together (one exclusive `gate` per batch).
const EVICT_BATCH: usize = 64;

/// Bytes of every store of the process.
static BYTES: AtomicUsize = AtomicUsize::new(0);

/// Every live store, for eviction across targets.
fn registry() -> &'static Mutex<Vec<Weak<DataStore>>> {
    static R: OnceLock<Mutex<Vec<Weak<DataStore>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Bytes held by every store of the process.
pub(crate) fn bytes() -> usize {
    BYTES.load(Ordering::Relaxed)
}

/// (blocks, bytes) held by every live store.
pub(crate) fn usage_all() -> (usize, usize) {
    let r = registry().lock();
    r.iter()
        .filter_map(Weak::upgrade)
        .map(|s| s.usage())
        .fold((0, 0), |a, u| (a.0 + u.0, a.1 + u.1))
}

/// Whether a punched hole frees whole pages of `bs` bytes that nobody else shares: the
/// block is one base page and shmem THP is off (top level and every mTHP size).
pub(crate) fn usable(bs: usize) -> bool {
    // SAFETY: sysconf takes an integer name and returns an integer.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page <= 0 || bs != page as usize {
        return false;
    }
    let sel = |p: &std::path::Path| {
        std::fs::read_to_string(p).ok().and_then(|s| {
            let a = s.find('[')?;
            let b = s[a..].find(']')?;
            Some(s[a + 1..a + b].to_string())
        })
    };
    let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage");
    let top = sel(&thp.join("shmem_enabled"));
    if !matches!(top.as_deref(), None | Some("never") | Some("deny")) {
        return false;
    }
    let Ok(dir) = std::fs::read_dir(thp) else {
        return true;
    };
    dir.flatten().all(|e| {
        let f = e.path().join("shmem_enabled");
        !f.exists() || matches!(sel(&f).as_deref(), Some("never") | Some("inherit"))
    })
}

/// The mapping of a store's memfd.
struct Map(*mut u8, usize);

// SAFETY: the mapping is plain shared memory; every access goes through `DataStore`, whose
// gate/writer protocol (module docs) keeps writers and readers of one block apart.
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the region was mapped by `DataStore::new` and nobody uses it any more.
        unsafe { libc::munmap(self.0.cast(), self.1) };
    }
}

/// Verified data blocks of one target in a memfd.
pub(crate) struct DataStore {
    file: File,
    map: Map,
    bs: usize,
    blocks: u64,
    resident: Box<[AtomicU64]>,
    hot: Box<[AtomicU64]>,
    gate: RwLock<()>,
    /// Serializes inserts and evictions; holds the CLOCK hand (a word index).
    writer: Mutex<usize>,
    count: AtomicUsize,
}

fn bit(b: u64) -> (usize, u64) {
    ((b / 64) as usize, 1 << (b % 64))
}

impl DataStore {
    /// A store for `blocks` blocks of `bs` bytes, when the memfd path is usable here.
    pub(crate) fn new(blocks: u64, bs: usize) -> Option<Arc<DataStore>> {
        if !usable(bs) || blocks == 0 {
            return None;
        }
        let len = (blocks as usize).checked_mul(bs)?;
        // SAFETY: a NUL-terminated name and flags; returns a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"udm-verity".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64).ok()?;
        // SAFETY: a fresh shared mapping of the whole memfd; checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let words = blocks.div_ceil(64) as usize;
        let mk = || (0..words).map(|_| AtomicU64::new(0)).collect();
        let s = Arc::new(DataStore {
            file,
            map: Map(p.cast(), len),
            bs,
            blocks,
            resident: mk(),
            hot: mk(),
            gate: RwLock::new(()),
            writer: Mutex::new(0),
            count: AtomicUsize::new(0),
        });
        let mut r = registry().lock();
        r.retain(|w| w.strong_count() > 0);
        r.push(Arc::downgrade(&s));
        Some(s)
    }

    fn is_resident(&self, b: u64) -> bool {
        let (w, m) = bit(b);
        self.resident[w].load(Ordering::Acquire) & m != 0
    }

    /// Whether blocks `first..first+n` are all resident (gate held); marks them hot.
    fn all_resident(&self, first: u64, n: u64) -> bool {
        if first.checked_add(n).is_none_or(|e| e > self.blocks) {
            return false;
        }
        let mut all = true;
        self.for_masks(first, first + n, |w, mask| {
            if !all || self.resident[w].load(Ordering::Acquire) & mask != mask {
                all = false;
                return;
            }
            if self.hot[w].load(Ordering::Relaxed) & mask != mask {
                self.hot[w].fetch_or(mask, Ordering::Relaxed);
            }
        });
        all
    }

    /// Copy blocks `first..` into `buf` (whole blocks) when every one is resident.
    pub(crate) fn copy_all(&self, first: u64, buf: &mut [u8]) -> bool {
        let n = (buf.len() / self.bs) as u64;
        let _g = self.gate.read();
        if !buf.len().is_multiple_of(self.bs) || !self.all_resident(first, n) {
            return false;
        }
        // SAFETY: the blocks are resident and stay so while `gate` is held shared (eviction
        // takes it exclusively), and resident blocks are never written; in bounds as checked.
        let src = unsafe {
            std::slice::from_raw_parts(self.map.0.add(first as usize * self.bs), buf.len())
        };
        buf.copy_from_slice(src);
        true
    }

    /// Copy block `b` into `out` (one block) if it is resident.
    pub(crate) fn copy_one(&self, b: u64, out: &mut [u8]) -> bool {
        if b >= self.blocks || !self.is_resident(b) {
            return false;
        }
        self.copy_all(b, out)
    }

    /// Run `f(file, offset of block first)` while blocks `first..first+n` are all resident
    /// and pinned; `None` when one is not.
    pub(crate) fn with_file<R>(
        &self,
        first: u64,
        n: u64,
        f: impl FnOnce(&File, u64) -> R,
    ) -> Option<R> {
        let _g = self.gate.read();
        if !self.all_resident(first, n) {
            return None;
        }
        Some(f(&self.file, first * self.bs as u64))
    }

    /// Keep verified blocks `first..` (`bytes`, whole blocks), evicting (this or other
    /// stores' blocks) to stay in budget; skipped when no room can be made. Blocks already
    /// resident stay as they are; every run of the others is filled with one write.
    pub(crate) fn insert_run(&self, first: u64, bytes: &[u8], cache: &BlockCache) {
        let n = (bytes.len() / self.bs) as u64;
        if n == 0
            || !bytes.len().is_multiple_of(self.bs)
            || first.checked_add(n).is_none_or(|e| e > self.blocks)
            || self.resident_in(first, n) == n
        {
            return;
        }
        let mut hand = self.writer.lock();
        // Room for all `n` (a resident block among them is counted too: evicted meanwhile,
        // it is written again below).
        let budget = cache.budget();
        let need = n as usize * self.bs;
        if need > budget
            || (bytes_total(cache) + need > budget
                && !make_room(Some((self, &mut hand)), cache, budget - need))
        {
            return;
        }
        // The blocks written are not resident, so no reader reads them, and `writer` is
        // held, so nobody else writes or punches them. A write (unlike a store through the
        // mapping) fills fresh shmem pages without clearing them first.
        let mut b = first;
        while b < first + n {
            if self.is_resident(b) {
                b += 1;
                continue;
            }
            let mut end = b + 1;
            while end < first + n && !self.is_resident(end) {
                end += 1;
            }
            let at = (b - first) as usize * self.bs;
            let part = &bytes[at..at + (end - b) as usize * self.bs];
            if std::os::unix::fs::FileExt::write_all_at(&self.file, part, b * self.bs as u64)
                .is_err()
            {
                // Free whatever part of the run was filled; none of it is resident.
                self.punch(b, end - b);
                return;
            }
            let got = (end - b) as usize;
            BYTES.fetch_add(got * self.bs, Ordering::Relaxed);
            self.count.fetch_add(got, Ordering::Relaxed);
            self.set_resident(b, end);
            b = end;
        }
    }

    /// How many of blocks `first..first+n` are resident (no hot marks).
    fn resident_in(&self, first: u64, n: u64) -> u64 {
        let mut got = 0;
        self.for_masks(first, first + n, |w, m| {
            got += (self.resident[w].load(Ordering::Acquire) & m).count_ones() as u64;
        });
        got
    }

    /// Mark blocks `b..end` resident (their bytes are in place; writer held).
    fn set_resident(&self, b: u64, end: u64) {
        self.for_masks(b, end, |w, m| {
            self.resident[w].fetch_or(m, Ordering::Release);
        });
    }

    /// `f(word, mask)` for the bitmap words covering blocks `b..end`.
    fn for_masks(&self, mut b: u64, end: u64, mut f: impl FnMut(usize, u64)) {
        while b < end {
            let lo = b % 64;
            let hi = (end - (b - lo)).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            f((b / 64) as usize, mask);
            b += hi - lo;
        }
    }

    /// Evict up to `want` blocks by CLOCK (writer held: `hand`); how many went.
    fn evict(&self, hand: &mut usize, want: usize) -> usize {
        let words = self.resident.len();
        let mut victims: Vec<(usize, u64)> = Vec::new();
        let mut got = 0;
        let mut steps = 0;
        while got < want && steps < 2 * words + 1 && self.count.load(Ordering::Relaxed) > got {
            let w = *hand % words;
            let res = self.resident[w].load(Ordering::Relaxed);
            let hot = self.hot[w].fetch_and(!res, Ordering::Relaxed);
            let mut cand = res & !hot;
            let mut take = 0u64;
            while cand != 0 && got < want {
                let low = cand & cand.wrapping_neg();
                take |= low;
                cand &= !low;
                got += 1;
            }
            if take != 0 {
                victims.push((w, take));
            }
            if got < want {
                *hand = w + 1;
            }
            steps += 1;
        }
        if victims.is_empty() {
            return 0;
        }
        {
            let _g = self.gate.write();
            for &(w, m) in &victims {
                self.resident[w].fetch_and(!m, Ordering::Release);
            }
        }
        // Punch runs of consecutive blocks with one call each.
        let mut run: Option<(u64, u64)> = None;
        for (w, mut m) in victims {
            while m != 0 {
                let b = w as u64 * 64 + m.trailing_zeros() as u64;
                m &= m - 1;
                run = match run {
                    Some((s, n)) if s + n == b => Some((s, n + 1)),
                    Some((s, n)) => {
                        self.punch(s, n);
                        Some((b, 1))
                    }
                    None => Some((b, 1)),
                };
            }
        }
        if let Some((s, n)) = run {
            self.punch(s, n);
        }
        self.count.fetch_sub(got, Ordering::Relaxed);
        BYTES.fetch_sub(got * self.bs, Ordering::Relaxed);
        got
    }

    /// Free the pages of blocks `b..b+n` (not resident, writer held). A pipe that spliced
    /// one of them keeps its own reference to the old page.
    fn punch(&self, b: u64, n: u64) {
        // SAFETY: a valid descriptor and an in-bounds, page-aligned range.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (b * self.bs as u64) as libc::off_t,
                (n * self.bs as u64) as libc::off_t,
            )
        };
        debug_assert_eq!(r, 0, "punch hole");
    }

    /// (blocks, bytes) resident.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let n = self.count.load(Ordering::Relaxed);
        (n, n * self.bs)
    }
}

impl Drop for DataStore {
    fn drop(&mut self) {
        BYTES.fetch_sub(*self.count.get_mut() * self.bs, Ordering::Relaxed);
    }
}

/// Bytes of the whole verified-block budget in use (stores and the sharded cache).
fn bytes_total(cache: &BlockCache) -> usize {
    bytes() + cache.bytes()
}

/// Evict store blocks, largest store first, until the total is at most `limit`; `me` is a
/// store whose writer the caller holds (others are only tried, never waited for).
fn make_room(mut me: Option<(&DataStore, &mut usize)>, cache: &BlockCache, limit: usize) -> bool {
    loop {
        let total = bytes_total(cache);
        if total <= limit {
            return true;
        }
        let mut stores: Vec<Arc<DataStore>> =
            registry().lock().iter().filter_map(Weak::upgrade).collect();
        stores.sort_by_key(|s| std::cmp::Reverse(s.usage().1));
        let mut freed = false;
        for s in &stores {
            if s.usage().0 == 0 {
                continue;
            }
            let want = (total - limit).div_ceil(s.bs).max(EVICT_BATCH);
            let n = match me.as_mut() {
                Some((m, hand)) if std::ptr::eq(*m, s.as_ref()) => s.evict(hand, want),
                _ => match s.writer.try_lock() {
                    Some(mut hand) => s.evict(&mut hand, want),
                    None => 0,
                },
            };
            if n > 0 {
                freed = true;
                break;
            }
        }
        if !freed {
            return false;
        }
    }
}

/// Bring the whole budget back within `cache.budget()` after the sharded cache grew.
pub(crate) fn trim(cache: &BlockCache) {
    let budget = cache.budget();
    if bytes() > 0 && bytes_total(cache) > budget {
        make_room(None, cache, budget);
    }
}
