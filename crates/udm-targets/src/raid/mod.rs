//! `raid`: dm-raid, md's raid0/1/10/4/5/6 personalities behind a device-mapper table, with
//! dm-raid's superblock and md's write-intent bitmap on the metadata devices (kernel 6.1
//! formats), degraded operation, rebuild, resync limited to the bitmap's dirty regions,
//! scrubbing and the kernel's status lines.
//!
//! In-sync reads (`fast`) and raid1/raid10 writes into dirty regions (`mirror_write`) go to
//! the legs asynchronously from the submitter; other bios are handled on the target's own
//! I/O threads (blocking there on the legs); the sync machinery runs on a separate worker;
//! a bitmap daemon clears bits every `daemon_sleep`.

pub mod engine;
pub mod fast;
pub mod gf;
pub mod layout;
pub mod meta;
pub mod meta_io;
pub mod mirror_write;
pub mod params;
pub mod row_sync;
pub mod sync;

use engine::{Array, Leg, RAID1_UNIT};
use layout::Geo;
use meta::*;
use meta_io::{Bitmap, MetaState, SbInfo, HZ};
use params::RaidParams;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::Duration;
use sync::{Action, Syncer};
use udm_core::{
    DevHandle, MapResult, StatusFlags, StatusType, Target, TargetCtx, TargetError, TargetType,
    Worker,
};
use udm_io::{Bio, BioFlags, IoError, Op as BioOp, Sectors};

/// A leg's metadata and data device handles (`-` is `None`).
type LegHandles = (Option<Arc<DevHandle>>, Option<Arc<DevHandle>>);

/// I/O threads per raid set.
const IO_THREADS: usize = 4;

/// The `raid` target type.
pub struct RaidType;

struct Shared {
    array: Array,
    syncer: Arc<Syncer>,
    sync_worker: Worker,
    io: Vec<Worker>,
    next_io: AtomicUsize,
    suspended: AtomicBool,
    resumed_once: AtomicBool,
    stop: AtomicBool,
    daemon_sleep_ms: u64,
}

impl AsRef<Array> for Shared {
    fn as_ref(&self) -> &Array {
        &self.array
    }
}

fn inval(m: &str) -> TargetError {
    TargetError::invalid(m)
}

impl TargetType for RaidType {
    fn name(&self) -> &'static str {
        "raid"
    }
    fn version(&self) -> [u32; 3] {
        [1, 15, 1]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = RaidParams::from_args(args)?;
        construct(ctx, p)
    }
}

fn construct(ctx: &mut TargetCtx<'_>, p: RaidParams) -> Result<Box<dyn Target>, TargetError> {
    let rt = p.rtype;
    let len = ctx.len.0;
    let ndevs = p.devs.len();
    if p.journal_dev.is_some() {
        return Err(inval("Failed to run raid array")
            .with_detail("journal_dev (raid4/5/6 journal) is not supported by udm"));
    }
    if p.delta_disks.is_some() || p.data_offset.is_some_and(|d| d != 0) {
        return Err(inval("Reshape not supported")
            .with_detail("udm's raid target does not reshape (delta_disks, data_offset)"));
    }
    // validate_region_size
    let chunk = p.chunk as u64;
    let region = p.effective_region(len);
    if !rt.is_raid0() {
        if let Some(r) = p.region_size.filter(|&r| r > 0) {
            let r = r as u64;
            if r > len {
                return Err(inval("Supplied region size is too large"));
            }
            if r < len / (1 << 21) {
                return Err(inval("Supplied region size is too small"));
            }
            if !r.is_power_of_two() {
                return Err(inval("Region size is not a power of 2"));
            }
            if r < chunk {
                return Err(inval("Region size is smaller than the chunk size"));
            }
        }
    }
    // rs_set_dev_and_array_sectors
    let data_stripes = (ndevs as u32 - rt.parity_devs) as u64;
    let copies = p.raid10_copies.unwrap_or(2) as u64;
    let dev_sectors = if rt.is_raid1() {
        len
    } else if rt.is_raid10() {
        if !(len * copies).is_multiple_of(data_stripes) {
            return Err(inval(
                "Target length not divisible by number of data devices",
            ));
        }
        len * copies / data_stripes
    } else {
        if !len.is_multiple_of(data_stripes) {
            return Err(inval(
                "Target length not divisible by number of data devices",
            ));
        }
        len / data_stripes
    };
    // Open the devices.
    let mut handles: Vec<LegHandles> = Vec::new();
    for (m, d) in &p.devs {
        let mh = match m {
            Some(m) => Some(ctx.get_device(m).map_err(|e| {
                TargetError::with_errno(e.errno, "RAID metadata device lookup failure")
                    .with_detail(e.msg)
            })?),
            None => None,
        };
        let dh = match d {
            Some(d) => Some(ctx.get_device(d).map_err(|e| {
                TargetError::with_errno(e.errno, "RAID device lookup failure").with_detail(e.msg)
            })?),
            None => None,
        };
        if let Some(dh) = &dh {
            if dh.dev.size().0 < dev_sectors {
                return Err(inval("Component device(s) too small"));
            }
        }
        handles.push((mh, dh));
    }
    let layout = p.md_layout();
    let mut geo = Geo {
        level: rt.level,
        layout,
        chunk,
        disks: ndevs,
        dev_sectors,
        array_sectors: len,
        r10: None,
    };
    if rt.is_raid10() {
        geo.r10 = Geo::raid10(layout, chunk, ndevs, dev_sectors);
        if geo.r10.is_none() {
            return Err(inval("Failed to run raid array"));
        }
    }
    let sync_max = if rt.is_raid10() { len } else { dev_sectors };
    // analyse_superblocks: read every metadata device, pick the freshest.
    let mut sbs: Vec<Option<Superblock>> = vec![None; ndevs];
    let mut first_use = vec![false; ndevs];
    let mut failed = vec![false; ndevs];
    for (i, (m, _)) in handles.iter().enumerate() {
        let Some(m) = m else { continue };
        if p.sync {
            first_use[i] = true;
            continue;
        }
        match udm_io::sync::read_at(&*m.dev, Sectors(0), 512) {
            Ok(b) => {
                let sb = Superblock::decode(&b);
                if !sb.valid_magic() || p.rebuild.contains(&(i as u32)) {
                    first_use[i] = true;
                } else {
                    sbs[i] = Some(sb);
                }
            }
            Err(_) => failed[i] = true,
        }
    }
    let freshest = (0..ndevs)
        .filter(|&i| sbs[i].is_some())
        .max_by_key(|&i| (sbs[i].as_ref().map(|s| s.events), std::cmp::Reverse(i)));
    let have_meta = handles.iter().any(|(m, _)| m.is_some());
    let new_set = freshest.is_none();
    let mut recovery: Vec<u64> = vec![u64::MAX; ndevs];
    for &i in &p.rebuild {
        recovery[i as usize] = 0;
    }
    let mut events = 1u64;
    let mut recovery_cp = u64::MAX;
    let mut partial = vec![false; ndevs];
    if let Some(f) = freshest {
        let fsb = sbs[f].clone().expect("freshest has a superblock");
        if fsb.compat_features & !FEATURE_SUPPORTS_V190 != 0 {
            return Err(inval(
                "Unable to assemble array: Unknown flag(s) in compatible feature flags",
            ));
        }
        if fsb.incompat_features != 0 {
            return Err(inval(
                "Unable to assemble array: No incompatible feature flags supported yet",
            ));
        }
        if fsb.level != rt.level
            || fsb.layout != layout
            || (!rt.is_raid1() && fsb.stripe_sectors != p.chunk)
            || fsb.num_devices as usize != ndevs
        {
            return Err(inval("Reshape not supported").with_detail(format!(
                "superblocks say level {} layout {:#x} chunk {} with {} devices",
                fsb.level, fsb.layout, fsb.stripe_sectors, fsb.num_devices
            )));
        }
        events = fsb.events.max(1);
        if !p.nosync {
            recovery_cp = fsb.array_resync_offset;
        }
        let new_devs = first_use.iter().filter(|&&x| x).count();
        if new_devs > 0 && new_devs != p.rebuild.len() {
            return Err(inval("Unable to assemble array: Invalid superblocks").with_detail(
                "New device injected into existing raid set without 'delta_disks' or 'rebuild' parameter specified",
            ));
        }
        for i in 0..ndevs {
            if let Some(sb) = &sbs[i] {
                if p.rebuild.contains(&(i as u32)) {
                    continue;
                }
                if sb.array_position as usize != i && !rt.is_raid1() {
                    return Err(inval("Cannot change device positions in raid set"));
                }
                recovery[i] = sb.disk_recovery_offset;
                if fsb.is_failed(i as u32) && handles[i].1.is_some() {
                    // A returning device: partial recovery from the bitmap.
                    recovery[i] = 0;
                    partial[i] = true;
                }
            }
        }
        // validate_raid_redundancy
        let out = |i: usize| {
            !first_use[i] && (recovery[i] != u64::MAX || handles[i].0.is_none() || failed[i])
        };
        let bad = (0..ndevs)
            .filter(|&i| out(i) || handles[i].1.is_none())
            .count();
        let too_many = match rt.level {
            0 => false,
            1 => bad >= ndevs,
            10 => !raid10_redundant(&geo, &|i| out(i) || handles[i].1.is_none()),
            _ => bad > rt.parity_devs as usize,
        };
        if too_many {
            return Err(inval("Insufficient redundancy to activate array"));
        }
    } else {
        let new_devs = first_use.iter().filter(|&&x| x).count();
        if have_meta && new_devs != ndevs {
            return Err(inval("Unable to assemble array: Invalid superblocks").with_detail(
                "New device injected into existing raid set without 'delta_disks' or 'rebuild' parameter specified",
            ));
        }
        if rt.is_raid6() && p.nosync && have_meta {
            return Err(inval("'nosync' not allowed for new raid6 set"));
        }
        if !rt.is_raid0() && (!p.nosync || rt.is_raid6()) {
            recovery_cp = 0;
        }
        if !have_meta && !p.rebuild.is_empty() && recovery_cp == 0 {
            return Err(inval("Unable to rebuild drive while array is not in-sync"));
        }
    }
    // The bitmap.
    let bitmap = if !rt.is_raid0() && have_meta {
        let mut chunksize = region * 512;
        let mut loaded: Option<(BitmapSuper, Vec<u8>, bool)> = None;
        if let (false, Some(f)) = (new_set, freshest) {
            let m = handles[f].0.as_ref().expect("freshest has metadata");
            let b = udm_io::sync::read_at(&*m.dev, Sectors(BITMAP_OFFSET / 512), 4096)
                .map_err(|_| inval("Failed to run raid array"))?;
            let bsb = BitmapSuper::decode(&b);
            bsb.validate().map_err(|e| {
                inval("Failed to run raid array").with_detail(format!("bitmap: {e}"))
            })?;
            chunksize = bsb.chunksize as u64;
            let chunks = sync_max.div_ceil(chunksize / 512);
            let bytes = bitmap_bytes(chunks) as usize;
            let all = udm_io::sync::read_at(
                &*m.dev,
                Sectors(BITMAP_OFFSET / 512),
                bytes.div_ceil(512) * 512,
            )
            .map_err(|_| inval("Failed to run raid array"))?;
            let stale = bsb.events < events;
            let mut bits = all[BITMAP_SB_SIZE..].to_vec();
            if stale {
                bits.iter_mut().for_each(|b| *b = 0xff);
            }
            loaded = Some((bsb, bits, stale));
        }
        let chunks = sync_max.div_ceil(chunksize / 512);
        let sb = BitmapSuper {
            magic: BITMAP_MAGIC,
            version: BITMAP_MAJOR_HI,
            events,
            events_cleared: events,
            sync_size: sync_max,
            state: 0,
            chunksize: chunksize as u32,
            daemon_sleep: p.daemon_sleep.filter(|&d| d > 0).unwrap_or(5 * HZ) / HZ,
            write_behind: p.max_write_behind.map(|v| v / 2).unwrap_or(0),
            ..BitmapSuper::default()
        };
        Some(match loaded {
            Some((old, bits, false)) => {
                let sb = BitmapSuper {
                    events_cleared: old.events_cleared,
                    ..sb
                };
                Bitmap::loaded(sb, chunks, &bits)
            }
            // Stale: nothing in it can be trusted, resync everything.
            Some((_, _, true)) => Bitmap::new(sb, chunks, true),
            // New: all dirty; resynced unless the set is in sync already (nosync).
            None => Bitmap::new(sb, chunks, recovery_cp != u64::MAX),
        })
    } else {
        None
    };
    let region = bitmap
        .as_ref()
        .map_or(region, |b| b.sb.chunksize as u64 / 512);
    let legs: Vec<Leg> = handles
        .iter()
        .enumerate()
        .map(|(i, (m, d))| Leg {
            meta: m.as_ref().map(|h| h.dev.clone()),
            data: d.as_ref().map(|h| h.dev.clone()),
            failed: AtomicBool::new(failed[i]),
            recovery: AtomicU64::new(recovery[i]),
            write_mostly: p.write_mostly.contains(&(i as u32)),
            partial: AtomicBool::new(partial[i]),
            pending: Arc::default(),
            head: AtomicU64::new(0),
        })
        .collect();
    let meta = MetaState {
        sb_size: 512,
        info: Mutex::new(SbInfo {
            events,
            recovery_cp,
            level: rt.level,
            layout,
            chunk: p.chunk,
            array_sectors: len,
            dev_sectors,
            data_offset: 0,
        }),
        bm: bitmap.map(Mutex::new),
        bm_cv: Default::default(),
        region,
        sync_max,
        event: ctx.event_trigger(),
    };
    let syncer = Arc::new(Syncer::new(
        p.max_recovery_rate.unwrap_or(0) as u64,
        p.min_recovery_rate.unwrap_or(0) as u64,
    ));
    syncer.ctl.lock().frozen = true;
    let shared = Arc::new(Shared {
        array: Array::new(geo, legs, meta),
        syncer,
        sync_worker: Worker::new("raid-sync"),
        io: (0..IO_THREADS).map(|_| Worker::new("raid-io")).collect(),
        next_io: AtomicUsize::new(0),
        suspended: AtomicBool::new(true),
        resumed_once: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        daemon_sleep_ms: p.daemon_sleep.filter(|&d| d > 0).unwrap_or(5000) as u64,
    });
    let mut table = p.clone();
    table.devs = handles
        .iter()
        .map(|(m, d)| {
            (
                m.as_ref().map(|h| h.id.to_string()),
                d.as_ref().map(|h| h.id.to_string()),
            )
        })
        .collect();
    Ok(Box::new(RaidTarget {
        shared,
        table,
        _handles: handles,
    }))
}

/// raid10 `validate_raid_redundancy` for near/far/offset sets.
fn raid10_redundant(geo: &Geo, out: &dyn Fn(usize) -> bool) -> bool {
    let r10 = geo.r10.as_ref().expect("raid10 geometry");
    let copies = r10.near * r10.far;
    let n = geo.disks;
    if (0..n).filter(|&i| out(i)).count() < copies {
        return true;
    }
    // Every logical chunk of one full cycle must keep a copy.
    let cycle = (n * copies) as u64;
    (0..cycle).all(|c| {
        geo.raid10_copies(c * geo.chunk)
            .iter()
            .any(|&(d, _)| !out(d))
    })
}

/// One `raid` table line.
pub struct RaidTarget {
    shared: Arc<Shared>,
    table: RaidParams,
    _handles: Vec<LegHandles>,
}

impl Drop for RaidTarget {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.shared.syncer.interrupt.store(true, SeqCst);
    }
}

impl Shared {
    fn handle(&self, mut bio: Bio) {
        let a = &self.array;
        let flags = bio.flags.without(BioFlags::PREFLUSH);
        if bio.flags.contains(BioFlags::PREFLUSH) || bio.op == BioOp::Flush {
            if let Err(e) = a.flush() {
                return bio.complete(Err(e));
            }
            if bio.op == BioOp::Flush {
                return bio.complete(Ok(()));
            }
        }
        let s = bio.sector.0;
        let r = match bio.op {
            BioOp::Read => {
                let len = bio.buf().len();
                a.read(s, len).map(|d| bio.buf_mut().copy_from_slice(&d))
            }
            BioOp::Write => {
                let data = bio.buf().to_vec();
                a.write(s, &data, flags)
            }
            BioOp::WriteZeroes => {
                let zeros = vec![0u8; (bio.len().0 * 512) as usize];
                a.write(s, &zeros, flags)
            }
            _ => Err(IoError::NotSupported),
        };
        if r.is_err() && bio.op.is_write() {
            a.meta.event();
        }
        bio.complete(r)
    }

    fn kick(self: &Arc<Self>) {
        sync::kick(self, &self.syncer, &self.sync_worker);
    }

    fn start_daemon(self: &Arc<Self>) {
        let w: Weak<Shared> = Arc::downgrade(self);
        let sleep = Duration::from_millis(self.daemon_sleep_ms.max(100));
        let _ = std::thread::Builder::new()
            .name("udm-raid-bitmap".into())
            .spawn(move || loop {
                let t = std::time::Instant::now();
                while t.elapsed() < sleep {
                    std::thread::sleep(Duration::from_millis(50));
                    match w.upgrade() {
                        Some(s) if !s.stop.load(SeqCst) => {}
                        _ => return,
                    }
                }
                let Some(s) = w.upgrade() else { return };
                if !s.suspended.load(SeqCst) {
                    s.array.meta.bitmap_daemon(&s.array);
                }
            });
    }

    /// `attempt_restore_of_faulty_devices`: a failed leg whose metadata reads again comes
    /// back for a recovery of what the bitmap marked.
    fn restore_faulty(&self) -> bool {
        let a = &self.array;
        let mut any = false;
        for l in &a.legs {
            if l.data.is_some() && l.failed.load(SeqCst) {
                let ok = l.data.as_ref().is_some_and(|d| {
                    udm_io::sync::read_at(&**d, Sectors(0), 512).is_ok()
                        && l.meta
                            .as_ref()
                            .is_none_or(|m| udm_io::sync::read_at(&**m, Sectors(0), 512).is_ok())
                });
                if ok {
                    l.recovery.store(0, SeqCst);
                    l.partial.store(true, SeqCst);
                    l.failed.store(false, SeqCst);
                    any = true;
                }
            }
        }
        if any {
            a.meta.write_superblocks(a);
        }
        any
    }
}

impl Target for RaidTarget {
    fn map(&self, mut bio: Bio) -> MapResult {
        let s = &self.shared;
        if bio.op == BioOp::Discard {
            return MapResult::Kill(bio, IoError::NotSupported);
        }
        s.syncer.client_io.fetch_add(1, Relaxed);
        if bio.op == BioOp::Read && !bio.flags.contains(BioFlags::PREFLUSH) && !bio.is_empty() {
            if let Some(plan) = s.array.fast_read_plan(bio.sector.0, bio.len().0, true) {
                let lens: Vec<Sectors> = plan.iter().map(|p| Sectors(p.0)).collect();
                for (piece, (_, at)) in bio.split(&lens).into_iter().zip(plan) {
                    let me = s.clone();
                    s.array.submit_leg_read(piece, at, move |bio, leg| {
                        let k = me.next_io.fetch_add(1, SeqCst) % me.io.len();
                        let me2 = me.clone();
                        me.io[k].spawn(move || {
                            me2.array.fail_leg(leg);
                            me2.handle(bio)
                        });
                    });
                }
                return MapResult::Submitted;
            }
        }
        if bio.op == BioOp::Write && matches!(s.array.geo.level, 1 | 10) {
            let me = s.clone();
            let slow = move |bio: Bio, bad: Vec<usize>, landed: bool| {
                let k = me.next_io.fetch_add(1, SeqCst) % me.io.len();
                let me2 = me.clone();
                me.io[k].spawn(move || {
                    bad.iter().for_each(|&d| me2.array.fail_leg(d));
                    me2.array.meta.event();
                    bio.complete(if landed { Ok(()) } else { Err(IoError::Io) })
                });
            };
            match mirror_write::submit(s, bio, slow) {
                Ok(()) => return MapResult::Submitted,
                Err(b) => bio = b,
            }
        }
        let k = s.next_io.fetch_add(1, SeqCst) % s.io.len();
        let me = s.clone();
        s.io[k].spawn(move || me.handle(bio));
        MapResult::Submitted
    }

    /// raid1: an in-sync range is one leg's plain data, so the NBD server may splice it
    /// straight from the chosen leg's file (the copy linear gets).
    fn read_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: udm_io::FileReader<'_>,
    ) -> Option<std::io::Result<usize>> {
        let a = &self.shared.array;
        if a.geo.level != 1 || self.shared.suspended.load(SeqCst) {
            return None;
        }
        let plan = a.fast_read_plan(sector.0, len.0, false)?;
        let [(_, at)] = plan.as_slice() else {
            return None;
        };
        let dev = a.legs[at.leg].data.as_ref()?;
        match dev.read_file_range(Sectors(at.sector), len, f)? {
            Ok(n) => {
                a.legs[at.leg].head.store(at.sector + len.0, SeqCst);
                Some(Ok(n))
            }
            // A failing leg is the bio path's business (it fails the leg and reads another
            // copy): tell the caller to drop what it has and submit a bio.
            Err(_) => Some(Err(std::io::ErrorKind::WouldBlock.into())),
        }
    }

    fn max_io_len(&self) -> Option<Sectors> {
        let g = &self.shared.array.geo;
        Some(Sectors(match g.level {
            1 => RAID1_UNIT,
            0 | 10 => g.chunk,
            _ => g.chunk * g.data_disks() as u64,
        }))
    }

    fn num_discard_bios(&self) -> u32 {
        0
    }

    fn io_hints(&self, limits: &mut udm_io::Limits) {
        let g = &self.shared.array.geo;
        let c = (g.chunk * 512) as u32;
        if c > 0 {
            limits.io_min = limits.io_min.max(c);
            limits.io_opt = c * g.data_disks() as u32;
        }
    }

    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        match ty {
            StatusType::Info => self.info(),
            StatusType::Table => self.table.to_string(),
        }
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        let s = &self.shared;
        if s.array.geo.level == 0 {
            return Err(inval("Invalid message"));
        }
        let cmd = argv[0].to_ascii_lowercase();
        let mut c = s.syncer.ctl.lock();
        c.frozen = cmd == "frozen";
        match cmd.as_str() {
            "idle" | "frozen" => {
                if c.running.is_some() {
                    s.syncer.interrupt.store(true, SeqCst);
                }
                c.requested = None;
                drop(c);
                if cmd == "idle" {
                    s.kick();
                }
                return Ok(None);
            }
            _ if c.running.is_some() => {
                return Err(TargetError::with_errno(libc::EBUSY, "sync action busy"))
            }
            "resync" => c.needed = true,
            "recover" => c.needed = true,
            "check" => c.requested = Some(Action::Check),
            "repair" => c.requested = Some(Action::Repair),
            _ => return Err(inval("Invalid message")),
        }
        drop(c);
        if !s.suspended.load(SeqCst) {
            s.kick();
        }
        Ok(None)
    }

    fn postsuspend(&self) {
        let s = &self.shared;
        s.suspended.store(true, SeqCst);
        // md_stop_writes: stop the sync thread, flush the bitmap, write the superblocks.
        let me = s.clone();
        s.syncer.interrupt.store(true, SeqCst);
        s.sync_worker.call(move || {
            let a = &me.array;
            me.syncer.ctl.lock().frozen = true;
            a.meta.bitmap_daemon(a);
            a.meta.bitmap_daemon(a);
            a.meta.write_superblocks(a);
        });
    }

    fn resume(&self) {
        let s = &self.shared;
        if s.resumed_once.swap(true, SeqCst) {
            s.restore_faulty();
        } else {
            // First resume: write fresh superblocks and the bitmap (rs_update_sbs and the
            // bitmap load).
            s.array.meta.write_bitmap_all(&s.array);
            s.array.meta.write_superblocks(&s.array);
            s.start_daemon();
        }
        s.suspended.store(false, SeqCst);
        {
            let mut c = s.syncer.ctl.lock();
            c.frozen = false;
            c.needed = true;
        }
        s.kick();
    }
}

impl RaidTarget {
    fn info(&self) -> String {
        let s = &self.shared;
        let a = &s.array;
        let g = &a.geo;
        let name =
            params::RaidType::by_level_layout(g.level, g.layout).map_or("unknown", |t| t.name);
        let c = s.syncer.ctl.lock();
        let max = a.meta.sync_max;
        let state = if c.frozen {
            "frozen"
        } else {
            c.running.map_or("idle", |r| r.name())
        };
        let progress = if g.level == 0 {
            max
        } else if c.running.is_none() && !c.frozen {
            a.meta.info.lock().recovery_cp
        } else {
            c.curr
        }
        .min(max);
        let resyncing = c.running == Some(Action::Resync);
        let mut out = format!("{name} {} ", a.legs.len());
        for l in &a.legs {
            out.push(if l.data.is_none() {
                '-'
            } else if l.failed.load(SeqCst) {
                'D'
            } else if resyncing || (l.recovery.load(SeqCst) != u64::MAX && g.level != 0) {
                'a'
            } else {
                'A'
            });
        }
        let mism = if c.last == Some(Action::Check) {
            c.mismatches
        } else {
            0
        };
        out.push_str(&format!(" {progress}/{max} {state} {mism} 0 -"));
        out
    }
}
