//! The running `crypt` target. Reads go to the lower device in pieces of `READ_PIECE`, each
//! decrypted in place by whichever thread completes it, as soon as it is in: from the page
//! cache that is the submitting thread itself (no pool hop, and the data is decrypted while
//! it is still in the CPU cache), and a reply of an NBD request thread goes out from there.
//! A read of one piece (every 4 KiB read) goes below as the bio itself, decrypted on its way
//! back: no split, join or second bio. A large read whose range is all in the page cache of
//! a file below is instead decrypted straight from there into the bio's buffer
//! (`BlockDevice::read_mapped`), saving the copy into the buffer (profiled on 1 MiB reads:
//! that copy took more CPU than the decryption).
//! Writes are encrypted into a recycled buffer (the caller's data is never changed) and then
//! written: a small one on the thread that has it, a large one split across cores (the
//! calling thread takes one piece, the CPU pool the rest) only while it is the target's only
//! write in flight — with several in flight the cores are busy with those already and a split
//! only adds thread hops. With `no_write_workqueue` every write is encrypted inline.

use super::cipher::SectorCipher;
use super::params::{format_table, to_hex, Features, KeySpec};
use super::spec::CipherSpec;
use crate::pieces;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use udm_core::{DevHandle, MapResult, StatusType, Target, TargetError};
use udm_io::{Bio, BioFlags, BufPool, IoBuf, IoError, Limits, Op, Sectors, WorkerPool};
use zeroize::Zeroizing;

/// The smallest piece of a bio worth a job of its own on the CPU pool.
const PIECE_MIN: usize = 64 << 10;
/// Reads longer than this go below in pieces this long (the longest a file device serves
/// inline from the page cache).
const READ_PIECE: usize = 128 << 10;
/// Reads at least this long are decrypted straight from the page cache when all of it is
/// there (`BlockDevice::read_mapped`); shorter ones read into their buffer and decrypt in
/// place (for them the copy is small next to the request's fixed costs; not measured).
const MAPPED_MIN: u64 = 64 << 10;
/// Write-zeroes are written as encrypted zeroes, this many bytes at a time.
const ZERO_CHUNK: u64 = 1 << 20;

/// The key as the table shows it and the cipher keyed with it (`None` after `key wipe`).
pub(crate) struct KeyState {
    pub(crate) shown: KeySpec,
    pub(crate) engine: Option<Arc<SectorCipher>>,
}

/// Shared state of one crypt table line.
pub(crate) struct Inner {
    pub(crate) cipher: String,
    pub(crate) spec: CipherSpec,
    pub(crate) key: RwLock<KeyState>,
    pub(crate) iv_offset: u64,
    pub(crate) dev: Arc<DevHandle>,
    pub(crate) offset: Sectors,
    pub(crate) feats: Features,
    pub(crate) suspended: AtomicBool,
    /// Writes in flight (see `Busy`).
    pub(crate) inflight: AtomicUsize,
}

/// One write in flight, counted in `Inner::inflight` until dropped.
struct Busy(Arc<Inner>);

impl Busy {
    /// Count a bio in; also says whether others were in flight already.
    fn enter(inner: &Arc<Inner>) -> (Busy, bool) {
        let others = inner.inflight.fetch_add(1, Ordering::Relaxed) != 0;
        (Busy(inner.clone()), others)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One `crypt` table line.
pub struct Crypt {
    pub(crate) inner: Arc<Inner>,
}

/// Run `f(byte_offset, piece, out_piece)` over `buf` cut into pieces of whole crypt
/// sectors (`unit` bytes) and `out` (as long as `buf`, or empty) cut at the same places;
/// `f` changes its piece in place or fills its out piece. `done` gets both rejoined.
///
/// A bio too small for two `PIECE_MIN` pieces (or any bio with `inline`, the
/// `no_*_workqueue` options) is done on the calling thread: one 4 KiB sector takes under a
/// microsecond, far less than a hop to the CPU pool and back. A larger one is cut into one
/// piece per core: the calling thread does the first piece itself while the CPU pool does the
/// others, and whichever finishes last calls `done`.
fn run<F, D>(buf: IoBuf, out: IoBuf, unit: usize, inline: bool, f: F, done: D)
where
    F: Fn(usize, &mut IoBuf, &mut IoBuf) + Send + Sync + 'static,
    D: FnOnce(IoBuf, IoBuf) + Send + 'static,
{
    if inline || buf.len() < 2 * PIECE_MIN {
        let (mut b, mut o) = (buf, out);
        f(0, &mut b, &mut o);
        return done(b, o);
    }
    let (per, pieces) = pieces::split(buf, unit, PIECE_MIN);
    let mut outs = Vec::with_capacity(pieces.len());
    let mut rest = out;
    for _ in 1..pieces.len() {
        let tail = if rest.len() > per {
            rest.split_off(per)
        } else {
            IoBuf::empty()
        };
        outs.push(Some(std::mem::replace(&mut rest, tail)));
    }
    outs.push(Some(rest));
    let outs = Mutex::new(outs);
    let join = pieces::Join::new(pieces.len(), move |all: Vec<(IoBuf, IoBuf)>| {
        let (mut a, mut b) = (IoBuf::empty(), IoBuf::empty());
        for (x, y) in all {
            a.unsplit(x);
            b.unsplit(y);
        }
        done(a, b)
    });
    pieces::spread(pieces, move |i, mut p| {
        let mut o = outs.lock()[i].take().unwrap_or_default();
        f(i * per, &mut p, &mut o);
        join.put(i, p, o);
    });
}

/// Buffers for encrypted writes, reused once the lower write is done: a fresh 1 MiB buffer
/// per write cost page faults and the kernel's page clearing (a tenth of a 1 MiB write's
/// CPU time). Every byte of one is overwritten before it is written out.
fn write_bufs() -> &'static BufPool {
    static P: OnceLock<BufPool> = OnceLock::new();
    P.get_or_init(|| BufPool::new(4 * pieces::cpus() + 4))
}

impl Inner {
    fn engine(&self) -> Option<Arc<SectorCipher>> {
        self.key.read().engine.clone()
    }

    /// Write `bio` (a write-zeroes) as encrypted zero sectors, `ZERO_CHUNK` at a time, from
    /// sector `done` of it on.
    fn write_zeroes(self: Arc<Self>, engine: Arc<SectorCipher>, bio: Bio, done: u64) {
        let len = bio.len().0;
        if done >= len {
            return bio.complete(Ok(()));
        }
        let n = (len - done).min(ZERO_CHUNK / 512);
        WorkerPool::cpu().spawn(move || {
            let mut z = IoBuf::zeroed((n * 512) as usize);
            engine.encrypt(&mut z, bio.sector.0 + done + self.iv_offset);
            let at = bio.sector + self.offset + Sectors(done);
            let flags = bio.flags.without(BioFlags::NOUNMAP);
            let me = self.clone();
            let w = Bio::write(
                at,
                z,
                Box::new(move |r, _| match r {
                    Err(e) => bio.complete(Err(e)),
                    Ok(()) => me.write_zeroes(engine, bio, done + n),
                }),
            )
            .with_flags(flags);
            self.dev.dev.submit(w);
        });
    }
}

/// Read `bio` from `dev` at `lower` in pieces of whole crypt sectors (`unit` bytes) of at
/// most `READ_PIECE`, each decrypted by the thread that completes it; the bio completes once
/// all are in, with the first error if any (a failed piece is not decrypted, and the bio's
/// data is then not to be used).
fn read(
    engine: Arc<SectorCipher>,
    mut bio: Bio,
    lower: Sectors,
    iv_sector: u64,
    unit: usize,
    dev: Arc<dyn udm_io::BlockDevice>,
) {
    let flags = bio.flags;
    if bio.len().0 * 512 >= MAPPED_MIN && flags == BioFlags::NONE {
        // All in the page cache: decrypt from there into the bio's buffer, no copy first.
        let len = bio.len();
        let buf = bio.buf_mut();
        if dev.read_mapped(lower, len, &mut |src| {
            engine.decrypt_into(src, buf, iv_sector)
        }) {
            return bio.complete(Ok(()));
        }
    }
    let per = (READ_PIECE / unit).max(1) * unit;
    if bio.len().0 * 512 <= per as u64 {
        // One piece (every 4 KiB read): the bio itself goes below, decrypted on its way back
        // (no split, no join, no second bio).
        bio.sector = lower;
        let bio = bio.on_end(move |r, b| {
            if r.is_ok() {
                engine.decrypt(b, iv_sector);
            }
            r
        });
        return dev.submit(bio);
    }
    let parts = pieces::cut(bio.take_buf(), per);
    let join = pieces::join_into(parts.len(), bio);
    for (i, part) in parts.into_iter().enumerate() {
        let off = ((i * per) / 512) as u64;
        let (join, engine) = (join.clone(), engine.clone());
        let done = Box::new(move |r: Result<(), IoError>, mut b: IoBuf| {
            if r.is_ok() {
                engine.decrypt(&mut b, iv_sector + off);
            }
            join.put(i, b, r);
        });
        dev.submit(Bio::read(lower + Sectors(off), part, done).with_flags(flags));
    }
}

impl Target for Crypt {
    fn map(&self, mut bio: Bio) -> MapResult {
        let inner = &self.inner;
        match bio.op {
            Op::Flush => return MapResult::Remap(inner.dev.dev.clone(), bio),
            Op::Discard => {
                if !inner.feats.allow_discards {
                    return MapResult::Kill(bio, IoError::NotSupported);
                }
                bio.sector += inner.offset;
                return MapResult::Remap(inner.dev.dev.clone(), bio);
            }
            Op::Read | Op::Write | Op::WriteZeroes => {}
            _ => return MapResult::Kill(bio, IoError::NotSupported),
        }
        let unit = inner.feats.sector_size as usize;
        let spb = (unit / 512) as u64;
        if (bio.sector.0 | bio.len().0) & (spb - 1) != 0 {
            return MapResult::Kill(bio, IoError::Io);
        }
        let Some(engine) = inner.engine() else {
            return MapResult::Kill(bio, IoError::Io);
        };
        let iv_sector = bio.sector.0 + inner.iv_offset;
        let lower = bio.sector + inner.offset;
        let flags = bio.flags;
        let dev = inner.dev.dev.clone();
        match bio.op {
            Op::WriteZeroes => {
                inner.clone().write_zeroes(engine, bio, 0);
            }
            Op::Read => read(engine, bio, lower, iv_sector, unit, dev),
            _ => {
                let plain = bio.take_buf();
                let out = write_bufs().get(plain.len());
                let (busy, others) = Busy::enter(inner);
                run(
                    plain,
                    out,
                    unit,
                    inner.feats.no_write_workqueue || others,
                    move |off, p, o| engine.encrypt_into(p, o, iv_sector + (off / 512) as u64),
                    move |plain, cipher| {
                        bio.set_buf(plain);
                        let done = Box::new(move |r, used: IoBuf| {
                            drop(busy);
                            write_bufs().put(used);
                            bio.complete(r)
                        });
                        dev.submit(Bio::write(lower, cipher, done).with_flags(flags));
                    },
                );
            }
        }
        MapResult::Submitted
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        let inner = &self.inner;
        match ty {
            StatusType::Info => String::new(),
            StatusType::Table => {
                let key = match &inner.key.read().shown {
                    KeySpec::Empty => "-".to_string(),
                    KeySpec::Hex(k) if k.is_empty() => "-".to_string(),
                    KeySpec::Hex(k) => to_hex(k),
                    KeySpec::Keyring { size, ktype, desc } => format!(":{size}:{ktype}:{desc}"),
                };
                format_table(
                    &inner.cipher,
                    &key,
                    inner.iv_offset,
                    &inner.dev.id.to_string(),
                    inner.offset,
                    &inner.feats,
                )
            }
        }
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        let inner = &self.inner;
        let unrecognised = || TargetError::invalid("unrecognised message received.");
        if argv.len() < 2 || !argv[0].eq_ignore_ascii_case("key") {
            return Err(unrecognised());
        }
        if !inner.suspended.load(Ordering::Acquire) {
            return Err(TargetError::invalid(
                "not suspended during key manipulation.",
            ));
        }
        if argv.len() == 3 && argv[1].eq_ignore_ascii_case("set") {
            let size = super::params::key_size(&argv[2])?;
            let cur = inner.key.read().shown.size();
            if size != cur {
                return Err(TargetError::invalid("Error decoding and setting key"));
            }
            let shown = super::params::parse_key(&argv[2])?;
            let bytes = super::resolve_key(&shown)?;
            let engine = SectorCipher::new(
                &inner.spec,
                &bytes,
                inner.feats.sector_size,
                inner.feats.iv_large_sectors,
            )
            .map_err(|e| TargetError::with_errno(e.errno(), e.to_string()))?;
            *inner.key.write() = KeyState {
                shown,
                engine: Some(Arc::new(engine)),
            };
            return Ok(None);
        }
        if argv.len() == 2 && argv[1].eq_ignore_ascii_case("wipe") {
            let mut k = inner.key.write();
            let size = k.shown.size();
            k.shown = if size == 0 {
                KeySpec::Empty
            } else {
                KeySpec::Hex(Zeroizing::new(vec![0; size]))
            };
            k.engine = None;
            return Ok(None);
        }
        Err(unrecognised())
    }

    fn io_hints(&self, limits: &mut Limits) {
        let ss = self.inner.feats.sector_size;
        limits.logical_block_size = limits.logical_block_size.max(ss);
        limits.physical_block_size = limits.physical_block_size.max(ss);
        limits.io_min = limits.io_min.max(ss);
    }

    fn postsuspend(&self) {
        self.inner.suspended.store(true, Ordering::Release);
    }

    fn preresume(&self) -> Result<(), TargetError> {
        if self.inner.key.read().engine.is_none() {
            udm_core::klog::err("crypt", "aborting resume - crypt key is not set.");
            return Err(TargetError::with_errno(
                libc::EAGAIN,
                "aborting resume - crypt key is not set.",
            ));
        }
        Ok(())
    }

    fn resume(&self) {
        self.inner.suspended.store(false, Ordering::Release);
    }
}
