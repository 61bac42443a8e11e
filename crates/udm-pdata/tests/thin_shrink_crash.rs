//! Crash safety of `thin_shrink`: a child process shrinks a pool (a device, a snapshot
//! that broke sharing, holes from removed mappings) on image files and SIGKILLs itself
//! right before its k-th metadata or data write or flush, k drawn from a fixed, printed
//! seed (`UDM_PROPTEST_SEED`; `UDM_SHRINK_CRASH_RUNS` kills, default 60). After every
//! kill the real `thin_check` passes and the pool is exactly the old one or exactly the
//! shrunk one: same virtual blocks with the same times and contents, sharing kept, and
//! in the shrunk state nothing mapped past the new end.
//!
//! The child is this same binary (`harness = false`) started with
//! `UDM_SHRINK_CRASH_CHILD=<dir>:<kill at>`; it prints `DONE <ops>` when it finished.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use udm_pdata::io::{FileIo, MetaIo};
use udm_pdata::thin::ThinMetadata;
use udm_pdata::thin_shrink::{shrink, DataDev};
use udm_pdata::BlockBuf;
use udm_testkit::rng::XorShift;

const BS: u32 = 8; // sectors: 4 KiB data blocks
const BYTES: usize = BS as usize * 512;
const DATA_BLOCKS: u64 = 84; // exactly what `build` allocates: the last block is mapped

/// Counts writes and flushes to both devices; kills the process at the chosen one.
struct Killer {
    ops: AtomicU64,
    at: u64,
}

impl Killer {
    fn tick(&self) {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if n == self.at {
            // SAFETY: kill(2) on our own pid with a constant signal has no memory effects.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}

struct KMeta(FileIo, Arc<Killer>);

impl MetaIo for KMeta {
    fn nr_blocks(&self) -> u64 {
        self.0.nr_blocks()
    }
    fn read_block(&self, b: u64, buf: &mut BlockBuf) -> std::io::Result<()> {
        self.0.read_block(b, buf)
    }
    fn write_block(&self, b: u64, buf: &BlockBuf) -> std::io::Result<()> {
        self.1.tick();
        self.0.write_block(b, buf)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.1.tick();
        self.0.flush()
    }
}

struct KData(File, Arc<Killer>);

impl DataDev for KData {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        DataDev::read_at(&self.0, buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.1.tick();
        DataDev::write_at(&self.0, buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.1.tick();
        DataDev::flush(&self.0)
    }
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("meta.img"), dir.join("data.img"))
}

fn new_nr(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("new_nr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn child(dir: &Path, at: u64) {
    let (meta, data) = paths(dir);
    let k = Arc::new(Killer {
        ops: AtomicU64::new(0),
        at,
    });
    let io = Arc::new(KMeta(FileIo::open(&meta).unwrap(), k.clone()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&data)
        .unwrap();
    let d = KData(f, k.clone());
    shrink(io, &d, new_nr(dir)).unwrap();
    println!("DONE {}", k.ops.load(Ordering::SeqCst));
}

/// (dev, vblock) → (data block, time) and (dev, vblock) → contents.
type Maps = BTreeMap<(u64, u64), (u64, u32)>;

fn state(meta: &Path, data: &Path) -> (u64, Maps, BTreeMap<(u64, u64), Vec<u8>>) {
    let mut md = ThinMetadata::open(Arc::new(FileIo::open(meta).unwrap())).unwrap();
    let f = File::open(data).unwrap();
    let mut maps = Maps::new();
    let mut bytes = BTreeMap::new();
    for (dev, _) in md.devices().unwrap() {
        for (v, b, t) in md.mappings(dev).unwrap() {
            maps.insert((dev, v), (b, t));
            let mut buf = vec![0; BYTES];
            DataDev::read_at(&f, &mut buf, b * BYTES as u64).unwrap();
            bytes.insert((dev, v), buf);
        }
    }
    (md.data_sm().core().nr_blocks(), maps, bytes)
}

/// A pool whose mapped blocks reach the end of the data device, with holes below.
fn build(dir: &Path, seed: u64) {
    let (meta, data) = paths(dir);
    udm_testkit::image(dir, "meta.img", 4 << 20);
    udm_testkit::image(dir, "data.img", DATA_BLOCKS * BYTES as u64);
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    let mut rng = XorShift::mixed(seed);
    let mut md =
        ThinMetadata::format(Arc::new(FileIo::open(&meta).unwrap()), BS, DATA_BLOCKS).unwrap();
    let map = |md: &mut ThinMetadata, dev: u64, v: u64, rng: &mut XorShift| {
        let b = md.alloc_data_block().unwrap();
        DataDev::write_at(&f, &rng.bytes(BYTES), b * BYTES as u64).unwrap();
        md.insert(dev, v, b).unwrap();
    };
    md.create_thin(0).unwrap();
    for v in 0..64 {
        map(&mut md, 0, v, &mut rng);
    }
    md.create_snap(1, 0).unwrap();
    for _ in 0..12 {
        map(&mut md, 1, rng.below(64), &mut rng);
    }
    md.create_snap(2, 1).unwrap();
    for _ in 0..8 {
        map(&mut md, 2, 64 + rng.below(32), &mut rng);
    }
    for _ in 0..30 {
        let dev = rng.below(3);
        md.remove(dev, rng.below(64)).unwrap();
    }
    // Holes for sure: some virtual blocks go from every device.
    for _ in 0..6 {
        let v = rng.below(64);
        for dev in 0..3 {
            md.remove(dev, v).unwrap();
        }
    }
    md.commit().unwrap();
    let used = md.data_sm().core().nr_allocated();
    std::fs::write(
        dir.join("new_nr"),
        format!("{}", (used + rng.below(4)).min(DATA_BLOCKS - 1)),
    )
    .unwrap();
}

fn run_child(dir: &Path, at: u64) -> Option<u64> {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("UDM_SHRINK_CRASH_CHILD", format!("{}:{at}", dir.display()))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.strip_prefix("DONE ").map(|n| n.trim().parse().unwrap())
}

fn main() {
    if let Ok(v) = std::env::var("UDM_SHRINK_CRASH_CHILD") {
        let (dir, at) = v.rsplit_once(':').unwrap();
        return child(&PathBuf::from(dir), at.parse().unwrap());
    }
    if !udm_testkit::require_tool("thin_check") {
        return;
    }
    let seed = udm_testkit::prop::seed();
    let runs: u64 = udm_testkit::rng::env_u64("UDM_SHRINK_CRASH_RUNS").unwrap_or(60);
    eprintln!(
        "shrink crash: seed {seed:#x}, {runs} kills (UDM_PROPTEST_SEED / UDM_SHRINK_CRASH_RUNS)"
    );
    let mut rng = XorShift::mixed(seed);
    let (mut old_seen, mut new_seen) = (0, 0);
    for r in 0..runs {
        let pool_seed = rng.next_u64();
        let dir = tempfile::tempdir().unwrap();
        let (meta, data) = paths(dir.path());
        // Learn how many writes and flushes a full shrink of this pool makes.
        build(dir.path(), pool_seed);
        let (old_nr, old_maps, old_bytes) = state(&meta, &data);
        let total = run_child(dir.path(), u64::MAX).expect("uninterrupted shrink finishes");
        let want_nr = new_nr(dir.path());
        assert!(
            old_maps.values().any(|&(b, _)| b >= want_nr),
            "run {r}: nothing moves"
        );
        // Again from scratch, killed before op `at` (`total`: it finishes).
        let dir = tempfile::tempdir().unwrap();
        let (meta, data) = paths(dir.path());
        build(dir.path(), pool_seed);
        let at = rng.below(total + 1);
        let done = run_child(dir.path(), at).is_some();
        assert_eq!(done, at >= total, "run {r}: kill at {at} of {total}");
        let ctx = format!("seed {seed:#x} run {r}: killed before op {at} of {total}");
        udm_testkit::thin::thin_check(&meta).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let (nr, maps, bytes) = state(&meta, &data);
        assert!(bytes == old_bytes, "{ctx}: contents differ");
        if nr == old_nr {
            assert!(maps == old_maps, "{ctx}: old size but mappings changed");
            old_seen += 1;
        } else {
            assert_eq!(nr, want_nr, "{ctx}");
            assert!(
                maps.values().all(|&(b, _)| b < want_nr),
                "{ctx}: block past the end"
            );
            // Same virtual blocks and times; a block shared before is shared after.
            let mut renamed = BTreeMap::new();
            for (k, &(b, t)) in &old_maps {
                let (nb, nt) = maps[k];
                assert_eq!(t, nt, "{ctx}: time of {k:?}");
                assert_eq!(
                    *renamed.entry(b).or_insert(nb),
                    nb,
                    "{ctx}: sharing of {k:?}"
                );
            }
            assert_eq!(maps.len(), old_maps.len(), "{ctx}");
            new_seen += 1;
        }
    }
    assert!(
        old_seen > 0 && new_seen > 0,
        "kills hit only one side: {old_seen} old, {new_seen} new"
    );
    eprintln!("shrink crash: all {runs} restarts clean ({old_seen} old, {new_seen} shrunk)");
}
