//! A conformance suite for `udm_io::BlockDevice`, written once against `&dyn BlockDevice` and
//! run by every crate that owns an implementation (RAM, file, pattern, mapped and remote NBD
//! devices). The caller states what the device promises in a [`Spec`]; [`run`] runs every
//! check and panics listing the ones that failed. Each check is also public, so the suite's
//! own tests can prove that a broken device fails it.
//!
//! Checks: size and limits as promised; read-after-write at many offsets and lengths (one
//! sector, unaligned to the page, around the inline-I/O limit, multi-MiB, at the very end);
//! FUA, PREFLUSH and FLUSH complete; write-zeroes and discard semantics; out-of-range I/O fails
//! with the promised `IoError` and never panics; every bio completes exactly once and hands its
//! buffer back; I/O from several threads at once; read-only devices refuse every write with
//! EROFS (or EPERM) and keep their data.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use udm_io::{Bio, BioFlags, BlockDevice, IoBuf, IoError, Limits, Sectors};

mod sites;
pub use sites::CompletionSites;

#[cfg(test)]
mod selftest;

/// What the device under test promises.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Its size.
    pub size: Sectors,
    /// Its logical block size, bytes: every offset and length the suite uses is a multiple.
    pub logical_block_size: u32,
    /// The device is read-only: every write fails with EROFS or EPERM.
    pub read_only: bool,
    /// Write-zeroes is supported (it must succeed, and the range then reads as zeroes).
    /// When false, it may fail with EOPNOTSUPP; if it succeeds the range must read as zeroes.
    pub write_zeroes: bool,
    /// Discard is supported (it must succeed). When false it may fail with EOPNOTSUPP.
    pub discard: bool,
    /// A discarded range reads back as zeroes.
    pub discard_zeroes: bool,
    /// What the device holds before the suite writes anything: `fill(buf, byte_offset)`.
    pub content: Option<fn(&mut [u8], u64)>,
    /// The error for I/O that reaches past the end (the kernel fails it with EIO).
    pub out_of_range: IoError,
    /// How long one bio may take before the suite calls it lost (a hang guard, not a timing
    /// check: healthy devices finish in milliseconds).
    pub timeout: Duration,
}

impl Spec {
    /// A writable device of `size` with 512-byte blocks, discard and write-zeroes supported.
    pub fn writable(size: Sectors) -> Spec {
        Spec {
            size,
            logical_block_size: 512,
            read_only: false,
            write_zeroes: true,
            discard: true,
            discard_zeroes: false,
            content: None,
            out_of_range: IoError::Io,
            timeout: Duration::from_secs(60),
        }
    }

    /// A read-only device of `size` holding `content`.
    pub fn read_only(size: Sectors, content: fn(&mut [u8], u64)) -> Spec {
        Spec {
            read_only: true,
            write_zeroes: false,
            discard: false,
            content: Some(content),
            ..Spec::writable(size)
        }
    }

    /// Sectors per logical block.
    fn bs(&self) -> u64 {
        u64::from(self.logical_block_size / 512).max(1)
    }

    /// Round a sector count up to whole logical blocks.
    fn up(&self, s: u64) -> u64 {
        s.div_ceil(self.bs()) * self.bs()
    }
}

/// Content of a fresh RAM disk or sparse file: zeroes.
pub fn zeroes(buf: &mut [u8], _off: u64) {
    buf.fill(0)
}

/// One check of the suite.
pub type Check = fn(&dyn BlockDevice, &Spec) -> Result<(), String>;

/// Every check, in the order [`run`] runs them (initial content first, before any write).
pub const CHECKS: &[(&str, Check)] = &[
    ("size_and_limits", size_and_limits),
    ("initial_content", initial_content),
    ("read_after_write", read_after_write),
    ("fua_and_flush", fua_and_flush),
    ("write_zeroes_and_discard", write_zeroes_and_discard),
    ("out_of_range", out_of_range),
    ("exactly_once", exactly_once),
    ("concurrent", concurrent),
    ("read_only_refuses_writes", read_only_refuses_writes),
];

/// Run every check against `dev`; panics naming each failed check. `label` names the device
/// in the output.
pub fn run(label: &str, dev: &dyn BlockDevice, spec: &Spec) {
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        match check(dev, spec) {
            Ok(()) => eprintln!("conformance {label}: {name} ok"),
            Err(e) => {
                eprintln!("conformance {label}: {name} FAILED: {e}");
                failed.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{label} fails {} conformance check(s):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Submit one bio and wait for it. Err when `submit` panicked or nothing completed in time.
pub fn io(
    dev: &dyn BlockDevice,
    spec: &Spec,
    make: impl FnOnce(udm_io::Completion) -> Bio,
) -> Result<(Result<(), IoError>, IoBuf), String> {
    let (tx, rx) = mpsc::channel();
    let bio = make(Box::new(move |r, b| {
        let _ = tx.send((r, b));
    }));
    let what = format!("{bio:?}");
    catch_unwind(AssertUnwindSafe(|| dev.submit(bio)))
        .map_err(|p| format!("submit of {what} panicked: {}", panic_text(&*p)))?;
    rx.recv_timeout(spec.timeout)
        .map_err(|_| format!("{what} did not complete within {:?}", spec.timeout))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

fn read(dev: &dyn BlockDevice, spec: &Spec, sector: u64, n: u64) -> Result<Vec<u8>, String> {
    let (r, buf) = io(dev, spec, |d| {
        Bio::read(Sectors(sector), IoBuf::zeroed((n * 512) as usize), d)
    })?;
    r.map_err(|e| format!("read {n} sectors at {sector}: {e:?}"))?;
    if buf.len() as u64 != n * 512 {
        return Err(format!(
            "read at {sector} handed back {} bytes, not {}",
            buf.len(),
            n * 512
        ));
    }
    Ok(buf.into_vec())
}

fn write_flags(
    dev: &dyn BlockDevice,
    spec: &Spec,
    sector: u64,
    data: &[u8],
    flags: BioFlags,
) -> Result<(), String> {
    let (r, _) = io(dev, spec, |d| {
        Bio::write(Sectors(sector), IoBuf::from_slice(data), d).with_flags(flags)
    })?;
    r.map_err(|e| {
        format!(
            "write of {} sectors at {sector} with {flags:?}: {e:?}",
            data.len() / 512
        )
    })
}

fn write(dev: &dyn BlockDevice, spec: &Spec, sector: u64, data: &[u8]) -> Result<(), String> {
    write_flags(dev, spec, sector, data, BioFlags::NONE)
}

/// Where two buffers first differ, for messages.
fn first_diff(got: &[u8], want: &[u8], base_sector: u64) -> Option<String> {
    let i = got.iter().zip(want).position(|(a, b)| a != b)?;
    Some(format!(
        "byte {} (sector {} + {}) reads {:#04x}, expected {:#04x}",
        i,
        base_sector + i as u64 / 512,
        i % 512,
        got[i],
        want[i]
    ))
}

fn expect_eq(what: &str, got: &[u8], want: &[u8], sector: u64) -> Result<(), String> {
    match first_diff(got, want, sector) {
        Some(d) => Err(format!("{what}: {d}")),
        None => Ok(()),
    }
}

/// The device's contents as the suite knows them: sector → bytes.
#[derive(Default)]
struct Model(HashMap<u64, Vec<u8>>);

impl Model {
    fn write(&mut self, sector: u64, data: &[u8]) {
        for (i, s) in data.chunks(512).enumerate() {
            self.0.insert(sector + i as u64, s.to_vec());
        }
    }
    fn verify(&self, dev: &dyn BlockDevice, spec: &Spec) -> Result<(), String> {
        let mut sectors: Vec<u64> = self.0.keys().copied().collect();
        sectors.sort_unstable();
        // Re-read in runs of consecutive sectors (at most 1 MiB each).
        let mut i = 0;
        while i < sectors.len() {
            let start = sectors[i];
            let mut n = 1;
            while i + (n as usize) < sectors.len()
                && sectors[i + n as usize] == start + n
                && n < 2048
            {
                n += 1;
            }
            let got = read(dev, spec, start, n)?;
            let want: Vec<u8> = (start..start + n)
                .flat_map(|s| self.0[&s].clone())
                .collect();
            expect_eq("re-reading everything written", &got, &want, start)?;
            i += n as usize;
        }
        Ok(())
    }
}

/// Size, block size and read-only flag as promised; limits consistent.
pub fn size_and_limits(dev: &dyn BlockDevice, spec: &Spec) -> Result<(), String> {
    if dev.size() != spec.size {
        return Err(format!(
            "size {} sectors, expected {}",
            dev.size(),
            spec.size
        ));
    }
    let l: Limits = dev.limits();
    let lbs = l.logical_block_size;
    if lbs != spec.logical_block_size {
        return Err(format!(
            "logical block size {lbs}, expected {}",
            spec.logical_block_size
        ));
    }
    if !lbs.is_power_of_two() || lbs < 512 {
        return Err(format!(
            "logical block size {lbs} is not a power of two >= 512"
        ));
    }
    if l.physical_block_size < lbs || !l.physical_block_size.is_multiple_of(lbs) {
        return Err(format!(
            "physical block size {} vs logical {lbs}",
            l.physical_block_size
        ));
    }
    if l.io_min < lbs || !l.io_min.is_multiple_of(lbs) {
        return Err(format!(
            "io_min {} is not a multiple of the block size {lbs}",
            l.io_min
        ));
    }
    if !dev.size().0.is_multiple_of(spec.bs()) {
        return Err(format!("size {} is not whole logical blocks", dev.size()));
    }
    if dev.read_only() != spec.read_only {
        return Err(format!(
            "read_only() is {}, expected {}",
            dev.read_only(),
            spec.read_only
        ));
    }
    if !spec.read_only && spec.size.0 < 32768 {
        return Err("the suite needs a writable device of at least 16 MiB".into());
    }
    let ext: u64 = dev
        .extents(Sectors(0), dev.size())
        .iter()
        .map(|(l, _)| l.0)
        .sum();
    if ext != dev.size().0 {
        return Err(format!("extents() covers {ext} sectors of {}", dev.size()));
    }
    Ok(())
}

/// Before any write, reads return the promised content (small, unaligned, multi-MiB, last).
pub fn initial_content(dev: &dyn BlockDevice, spec: &Spec) -> Result<(), String> {
    let Some(fill) = spec.content else {
        return Ok(());
    };
    let size = spec.size.0;
    let bs = spec.bs();
    for (s, n) in [(0, 1), (bs, 3), (8, 8), (3, 300), (0, 9000), (size - bs, 1)] {
        let (s, n) = (spec.up(s), spec.up(n));
        if s + n > size {
            continue;
        }
        let got = read(dev, spec, s, n)?;
        let mut want = vec![0; got.len()];
        fill(&mut want, s * 512);
        expect_eq("initial content", &got, &want, s)?;
    }
    Ok(())
}

/// (sector, sectors) pairs the data checks write: every shape of request that takes a
/// different path somewhere (one sector, sub-page, page, around 128 KiB, multi-MiB, the end).
fn shapes(spec: &Spec) -> Vec<(u64, u64)> {
    let size = spec.size.0;
    let raw = [
        (0, 1),
        (1, 1),
        (1, 3),
        (7, 2),
        (8, 8),
        (35, 13),
        (64, 255),
        (512, 256),
        (901, 257),
        (2048, 1024),
        (4099, 8193),
        (16384, 10250),
        (size - 1, 1),
        (size - 9, 9),
        (size - 300, 300),
    ];
    raw.iter()
        .map(|&(s, n)| (spec.up(s).min(size - spec.up(n)), spec.up(n)))
        .collect()
}

/// Each write reads back at once, leaves its neighbours alone, and everything written still
/// reads back at the end (nothing landed in the wrong place).
pub fn read_after_write(dev: &dyn BlockDevice, spec: &Spec) -> Result<(), String> {
    if spec.read_only {
        return Ok(());
    }
    let size = spec.size.0;
    let bs = spec.bs();
    let mut model = Model::default();
    for (i, (s, n)) in shapes(spec).into_iter().enumerate() {
        let before = if s >= bs {
            Some(read(dev, spec, s - bs, bs)?)
        } else {
            None
        };
        let after = if s + n + bs <= size {
            Some(read(dev, spec, s + n, bs)?)
        } else {
            None
        };
        let data = crate::rng::noise((n * 512) as usize, 1000 + i as u64);
        write(dev, spec, s, &data)?;
        let got = read(dev, spec, s, n)?;
        expect_eq(&format!("write of {n} sectors at {s}"), &got, &data, s)?;
        if let Some(b) = before {
            let now = read(dev, spec, s - bs, bs)?;
            expect_eq(&format!("block before a write at {s}"), &now, &b, s - bs)?;
        }
        if let Some(a) = after {
            let now = read(dev, spec, s + n, bs)?;
            expect_eq(&format!("block after a write at {s}+{n}"), &now, &a, s + n)?;
        }
        model.write(s, &data);
    }
    // Overwrite the middle of an earlier write, unaligned to the page.
    let (s, n) = (spec.up(4099 + 5), spec.up(37));
    let data = crate::rng::noise((n * 512) as usize, 77);
    write(dev, spec, s, &data)?;
    model.write(s, &data);
    model.verify(dev, spec)
}

/// FUA writes, PREFLUSH writes and empty flushes succeed (and the data is there).
pub fn fua_and_flush(dev: &dyn BlockDevice, spec: &Spec) -> Result<(), String> {
    let flush = io(dev, spec, Bio::flush)?.0;
    if flush.is_err() {
        return Err(format!("empty flush failed: {flush:?}"));
    }
    if spec.read_only {
        return Ok(());
    }
    let bs = spec.bs();
    for (i, flags) in [
        BioFlags::FUA,
        BioFlags::PREFLUSH,
        BioFlags::FUA.with(BioFlags::PREFLUSH),
    ]
    .into_iter()
    .enumerate()
    {
        let s = spec.up(3000 + 40 * i as u64);
        let data = crate::rng::noise((bs * 512 * 3) as usize, 200 + i as u64);
        write_flags(dev, spec, s, &data, flags)?;
        let got = read(dev, spec, s, bs * 3)?;
        expect_eq(&format!("write with {flags:?}"), &got, &data, s)?;
    }
    let flush = io(dev, spec, Bio::flush)?.0;
    flush.map_err(|e| format!("flush after writes failed: {e:?}"))
}

/// Write-zeroes (plain and NOUNMAP) leaves zeroes; discard succeeds where promised and reads
/// back zeroes where promised; neither touches the blocks around it.
pub fn write_zeroes_and_discard(dev: &dyn BlockDevice, spec: &Spec) -> Result<(), String> {
    if spec.read_only {
        return Ok(());
    }
    let bs = spec.bs();
    let cases = [
        ("write-zeroes", BioFlags::NONE, 6000, 40),
        ("write-zeroes NOUNMAP", BioFlags::NOUNMAP, 6100, 17),
        ("discard", BioFlags::NONE, 6200, 64),
        ("discard (multi-MiB)", BioFlags::NONE, 8192, 12288),
        ("write-zeroes (multi-MiB)", BioFlags::NONE, 20480, 8200),
    ];
    for (i, (what, flags, s, n)) in cases.into_iter().enumerate() {
        let (s, n) = (spec.up(s), spec.up(n) + 2 * bs);
        let data = crate::rng::noise((n * 512) as usize, 300 + i as u64);
        write(dev, spec, s, &data)?;
        let (zs, zn) = (s + bs, n - 2 * bs);
        let discard = what.starts_with("discard");
        let (r, _) = io(dev, spec, |d| {
            let b = if discard {
                Bio::discard(Sectors(zs), Sectors(zn), d)
            } else {
                Bio::write_zeroes(Sectors(zs), Sectors(zn), d)
            };
            b.with_flags(flags)
        })?;
        let promised = if discard {
            spec.discard
        } else {
            spec.write_zeroes
        };
        match r {
            Ok(()) => {}
            Err(IoError::NotSupported) if !promised => continue,
            Err(e) => return Err(format!("{what} of {zn} sectors at {zs}: {e:?}")),
        }
        let got = read(dev, spec, s, n)?;
        let edge = (bs * 512) as usize;
        expect_eq(
            &format!("block before a {what}"),
            &got[..edge],
            &data[..edge],
            s,
        )?;
        let tail = got.len() - edge;
        expect_eq(
            &format!("block after a {what}"),
            &got[tail..],
            &data[tail..],
            s + n - bs,
        )?;
        if !discard || spec.discard_zeroes {
            let zero = vec![0u8; tail - edge];
            expect_eq(&format!("{what} range"), &got[edge..tail], &zero, zs)?;
        }
    }
    Ok(())
}

/// Builds a bio around a completion.
type MakeBio = Box<dyn FnOnce(udm_io::Completion) -> Bio>;

/// A read, or a write of 0xa5 bytes, of `len` bytes at `sector` with `flags`.
fn make_rw(write: bool, sector: u64, len: usize, flags: BioFlags) -> MakeBio {
    Box::new(move |d| {
        let b = if write {
            Bio::write(Sectors(sector), IoBuf::from_vec(vec![0xa5; len]), d)
        } else {
            Bio::read(Sectors(sector), IoBuf::zeroed(len), d)
        };
        b.with_flags(flags)
    })
}

/// A discard, or a write-zeroes, of `n` sectors at `sector`.
fn make_trim(discard: bool, sector: u64, n: u64) -> MakeBio {
    Box::new(move |d| match discard {
        true => Bio::discard(Sectors(sector), Sectors(n), d),
        false => Bio::write_zeroes(Sectors(sector), Sectors(n), d),
    })
}

/// I/O that reaches past the end fails with the promised error, never panics, and a write
/// that straddles the end changes nothing.
pub fn out_of_range(dev: &dyn BlockDevice, spec: &Spec) -> Result<(), String> {
    let size = spec.size.0;
    let bs = spec.bs();
    let last = read(dev, spec, size - bs, bs)?;
    let far = (u64::MAX >> 9) - 4 * bs;
    let huge = u64::MAX - bs;
    let len = (2 * bs * 512) as usize;
    let none = BioFlags::NONE;
    let cases: Vec<(&str, bool, MakeBio)> = vec![
        ("read at the end", false, make_rw(false, size, len, none)),
        (
            "read across the end",
            false,
            make_rw(false, size - bs, len, none),
        ),
        (
            "read far past the end",
            false,
            make_rw(false, far, len, none),
        ),
        (
            "read at sector u64::MAX",
            false,
            make_rw(false, huge, len, none),
        ),
        (
            "write across the end",
            true,
            make_rw(true, size - bs, len, none),
        ),
        (
            "FUA write past the end",
            true,
            make_rw(true, size, len, BioFlags::FUA),
        ),
        (
            "write at sector u64::MAX",
            true,
            make_rw(true, huge, len, none),
        ),
        (
            "discard across the end",
            true,
            make_trim(true, size - bs, 2 * bs),
        ),
        (
            "write-zeroes past the end",
            true,
            make_trim(false, size, bs),
        ),
        (
            "write-zeroes far past the end",
            true,
            make_trim(false, far, bs),
        ),
    ];
    for (what, writes, make) in cases {
        let (r, _) = io(dev, spec, make).map_err(|e| format!("{what}: {e}"))?;
        let ok = match r {
            Err(e) if e == spec.out_of_range => true,
            // A read-only device may refuse a write before looking at its range.
            Err(IoError::ReadOnly) | Err(IoError::Os(libc::EPERM)) => writes && spec.read_only,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{what}: {r:?}, expected Err({:?})",
                spec.out_of_range
            ));
        }
    }
    let now = read(dev, spec, size - bs, bs)?;
    expect_eq(
        "last block after writes past the end",
        &now,
        &last,
        size - bs,
    )
}

/// Many bios in flight at once (reads, writes, flushes, one past the end): each completes
/// exactly once, with its own result and its own buffer handed back.
pub fn exactly_once(dev: &dyn BlockDevice, spec: &Spec) -> Result<(), String> {
    const N: usize = 64;
    let bs = spec.bs();
    let base = spec.up(12000);
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
    let (tx, rx) = mpsc::channel::<(usize, Result<(), IoError>, usize)>();
    let mut expect = Vec::new();
    let mut model = Model::default();
    for i in 0..N {
        let c = counts.clone();
        let tx = tx.clone();
        let done: udm_io::Completion = Box::new(move |r, b| {
            c[i].fetch_add(1, SeqCst);
            let _ = tx.send((i, r, b.len()));
        });
        let s = base + (i as u64 % 16) * 4 * bs;
        let n = bs * (1 + i as u64 % 3);
        let len = (n * 512) as usize;
        let (bio, ok, buf) = match i % 8 {
            _ if i == N / 2 => (Bio::read(spec.size, IoBuf::zeroed(len), done), false, len),
            0 => (Bio::flush(done), true, 0),
            1 | 4 | 6 if !spec.read_only && i < 16 => {
                let data = crate::rng::noise(len, 500 + i as u64);
                model.write(s, &data);
                (
                    Bio::write(Sectors(s), IoBuf::from_vec(data), done),
                    true,
                    len,
                )
            }
            _ => (
                Bio::read(Sectors(s + 64 * bs), IoBuf::zeroed(len), done),
                true,
                len,
            ),
        };
        expect.push((ok, buf));
        catch_unwind(AssertUnwindSafe(|| dev.submit(bio)))
            .map_err(|p| format!("submit panicked: {}", panic_text(&*p)))?;
    }
    drop(tx);
    for _ in 0..N {
        let (i, r, len) = rx
            .recv_timeout(spec.timeout)
            .map_err(|_| "a bio never completed (lost)".to_string())?;
        let (ok, want_len) = expect[i];
        if r.is_ok() != ok {
            return Err(format!("bio {i} completed with {r:?}"));
        }
        if len != want_len {
            return Err(format!("bio {i} handed back {len} bytes, not {want_len}"));
        }
    }
    if let Some(i) = counts.iter().position(|c| c.load(SeqCst) != 1) {
        return Err(format!(
            "bio {i} completed {} times",
            counts[i].load(SeqCst)
        ));
    }
    model.verify(dev, spec)
}

/// Four threads at once, each with several bios in flight on its own region (writers) or
/// reading the promised content (read-only devices); everything reads back.
pub fn concurrent(dev: &dyn BlockDevice, spec: &Spec) -> Result<(), String> {
    const THREADS: u64 = 4;
    const DEPTH: u64 = 4;
    let bs = spec.bs();
    let region = spec.up(1024);
    let base = spec.up(if spec.read_only { 0 } else { 16384 });
    if base + THREADS * region > spec.size.0 {
        return Ok(());
    }
    let results: Vec<Result<(), String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                sc.spawn(move || -> Result<(), String> {
                    let mut rng = crate::rng::XorShift::mixed(900 + t);
                    let start = base + t * region;
                    for _ in 0..24 {
                        let piece = region / DEPTH;
                        let n = bs * (1 + rng.below(piece / bs));
                        if spec.read_only {
                            let s = start + rng.below((region - n) / bs) * bs;
                            let got = read(dev, spec, s, n)?;
                            let mut want = vec![0; got.len()];
                            (spec.content.unwrap_or(zeroes))(&mut want, s * 512);
                            expect_eq("concurrent read", &got, &want, s)?;
                            continue;
                        }
                        // DEPTH writes in flight, one per quarter of the region.
                        let (tx, rx) = mpsc::channel();
                        let mut model = Model::default();
                        for q in 0..DEPTH {
                            let s = start + q * piece + rng.below((piece - n) / bs + 1) * bs;
                            let data = rng.bytes((n * 512) as usize);
                            model.write(s, &data);
                            let tx = tx.clone();
                            dev.submit(Bio::write(
                                Sectors(s),
                                IoBuf::from_vec(data),
                                Box::new(move |r, _| {
                                    let _ = tx.send(r);
                                }),
                            ));
                        }
                        for _ in 0..DEPTH {
                            rx.recv_timeout(spec.timeout)
                                .map_err(|_| "concurrent write lost".to_string())?
                                .map_err(|e| format!("concurrent write: {e:?}"))?;
                        }
                        model.verify(dev, spec)?;
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|p| Err(panic_text(&*p))))
            .collect()
    });
    results.into_iter().collect()
}

/// A read-only device refuses writes, FUA writes, discards and write-zeroes with EROFS or
/// EPERM, and its data stays as it was.
pub fn read_only_refuses_writes(dev: &dyn BlockDevice, spec: &Spec) -> Result<(), String> {
    if !spec.read_only {
        return Ok(());
    }
    let bs = spec.bs();
    let s = spec.up(8).min(spec.size.0 - 4 * bs);
    let before = read(dev, spec, s, 4 * bs)?;
    let len = (4 * bs * 512) as usize;
    let tries: Vec<(&str, MakeBio)> = vec![
        ("write", make_rw(true, s, len, BioFlags::NONE)),
        ("FUA write", make_rw(true, s, len, BioFlags::FUA)),
        ("discard", make_trim(true, s, 4 * bs)),
        ("write-zeroes", make_trim(false, s, 4 * bs)),
    ];
    for (what, make) in tries {
        let (r, _) = io(dev, spec, make)?;
        if !matches!(r, Err(IoError::ReadOnly) | Err(IoError::Os(libc::EPERM))) {
            return Err(format!(
                "{what} on a read-only device: {r:?}, expected EROFS/EPERM"
            ));
        }
    }
    let after = read(dev, spec, s, 4 * bs)?;
    expect_eq("read-only data after refused writes", &after, &before, s)
}
