//! `era`: changed-block tracking in the kernel's dm-era format (udm-pdata's `era` module).
//!
//! `era <metadata dev> <origin dev> <block size>`. Every bio goes to the origin. The first
//! write to a block in the current era is held while the target's worker marks the block in
//! the era's on-disk writeset and commits; later writes to it pass straight through (an
//! in-core copy of the writeset answers `map` without blocking). Each resume and each
//! `checkpoint` archives the current writeset and starts a new era; archived writesets are
//! digested into the era array in the background. `take_metadata_snap` /
//! `drop_metadata_snap` hold a copy of the metadata for userspace (`era_dump -m`).

use crate::kscan::scan_u32;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::target::dev_label;
use udm_core::{
    DevHandle, MapResult, StatusFlags, StatusType, Target, TargetCtx, TargetError, TargetType,
    Worker,
};
use udm_io::{Bio, BioFlags, BlockDevice, DevId, Op, Sectors};
use udm_pdata::era::EraMetadata;
use udm_pdata::PdataError;

/// The `era` target type.
pub struct EraType;

struct Shared {
    md: Mutex<EraMetadata>,
    /// In-core copy of the current era's writeset.
    bits: RwLock<Vec<u64>>,
    bs: u64,
    origin: Arc<dyn BlockDevice>,
    worker: Arc<Worker>,
    failed: AtomicBool,
}

fn err(what: &str, e: PdataError) -> TargetError {
    TargetError::with_errno(e.errno(), what).with_detail(e.to_string())
}

impl TargetType for EraType {
    fn name(&self) -> &'static str {
        "era"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        if args.len() != 3 {
            return Err(TargetError::invalid("Invalid argument count"));
        }
        let meta = ctx.get_device(&args[0]).map_err(|e| {
            TargetError::invalid("Error opening metadata device").with_detail(e.msg)
        })?;
        let origin = ctx
            .get_device(&args[1])
            .map_err(|e| TargetError::invalid("Error opening data device").with_detail(e.msg))?;
        let bs =
            scan_u32(&args[2]).ok_or_else(|| TargetError::invalid("Error parsing block size"))?;
        if bs == 0 || bs % 8 != 0 {
            return Err(TargetError::invalid("Invalid block size"));
        }
        let io: Arc<dyn udm_pdata::io::MetaIo> =
            Arc::new(crate::cache::DevMetaIo::new(meta.dev.clone()));
        let md =
            if EraMetadata::is_unformatted(&*io).map_err(|e| err("Error reading metadata", e))? {
                EraMetadata::format(io, bs)
            } else {
                EraMetadata::open(io, bs)
            }
            .map_err(|e| err("Error reading metadata", e))?;
        let shared = Arc::new(Shared {
            md: Mutex::new(md),
            bits: RwLock::new(Vec::new()),
            bs: bs as u64,
            origin: origin.dev.clone(),
            worker: ctx.worker("era"),
            failed: AtomicBool::new(false),
        });
        Ok(Box::new(EraTarget {
            nr_blocks: ctx.len.0.div_ceil(bs as u64),
            devs: [dev_label(&meta), dev_label(&origin)],
            shared,
            suspended: AtomicBool::new(true),
            _meta: meta,
        }))
    }
}

/// One `era` table line.
pub struct EraTarget {
    shared: Arc<Shared>,
    nr_blocks: u64,
    devs: [DevId; 2],
    /// Postsuspend ran (the current era is archived) and no resume since.
    suspended: AtomicBool,
    _meta: Arc<DevHandle>,
}

impl Drop for EraTarget {
    /// Removing a live device suspends it first in the kernel: archive the current era.
    fn drop(&mut self) {
        if !self.suspended.load(SeqCst) {
            self.postsuspend();
        }
    }
}

impl Shared {
    fn in_core_marked(&self, b: u64) -> bool {
        self.bits
            .read()
            .get((b / 64) as usize)
            .is_some_and(|w| w >> (b % 64) & 1 == 1)
    }

    /// Mark `[first, last]` on disk and commit (worker only); then in core.
    fn mark(&self, first: u64, last: u64) -> Result<(), PdataError> {
        let mut md = self.md.lock();
        let mut changed = false;
        for b in first..=last.min((md.nr_blocks() as u64).saturating_sub(1)) {
            changed |= md.mark(b)?;
        }
        if changed {
            md.commit()?;
        }
        let mut bits = self.bits.write();
        for b in first..=last {
            if let Some(w) = bits.get_mut((b / 64) as usize) {
                *w |= 1 << (b % 64);
            }
        }
        Ok(())
    }

    /// Roll over to a new era with an empty writeset, then digest older ones.
    fn rollover(self: &Arc<Self>) -> Result<(), PdataError> {
        let mut md = self.md.lock();
        md.rollover()?;
        md.commit()?;
        let n = md.nr_blocks() as u64;
        *self.bits.write() = vec![0; n.div_ceil(64) as usize];
        drop(md);
        self.schedule_digest();
        Ok(())
    }

    fn schedule_digest(self: &Arc<Self>) {
        let me = self.clone();
        self.worker.spawn(move || {
            let mut md = me.md.lock();
            if !md.needs_digest() {
                return;
            }
            let r = (|| {
                while md.digest_one()? {}
                md.commit()
            })();
            if let Err(e) = r {
                tracing::error!("era: digest step failed, stopping digestion: {e}");
            }
        });
    }

    fn on_worker<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<Shared>) -> T + Send + 'static,
    ) -> T {
        let me = self.clone();
        self.worker.call(move || f(&me))
    }
}

impl Target for EraTarget {
    fn map(&self, bio: Bio) -> MapResult {
        let s = &self.shared;
        let tracked = matches!(bio.op, Op::Write | Op::Discard | Op::WriteZeroes)
            && !bio.flags.contains(BioFlags::PREFLUSH);
        if !tracked || bio.is_empty() {
            return MapResult::Remap(s.origin.clone(), bio);
        }
        let first = bio.sector.0 / s.bs;
        let last = (bio.end().0 - 1) / s.bs;
        if (first..=last).all(|b| s.in_core_marked(b)) {
            return MapResult::Remap(s.origin.clone(), bio);
        }
        let me = s.clone();
        s.worker.spawn(move || match me.mark(first, last) {
            Ok(()) => me.origin.submit(bio),
            Err(e) => {
                tracing::error!("era: marking blocks {first}-{last} failed: {e}");
                me.failed.store(true, SeqCst);
                bio.complete(Err(udm_io::IoError::Io));
            }
        });
        MapResult::Submitted
    }

    fn max_io_len(&self) -> Option<Sectors> {
        Some(Sectors(self.shared.bs))
    }

    /// As the kernel: unless the stacked optimal I/O is a multiple of the block size, the
    /// block size becomes the optimal I/O (and the minimum falls back to the block size).
    fn io_hints(&self, limits: &mut udm_io::Limits) {
        let bytes = (self.shared.bs * 512) as u32;
        if limits.io_opt < bytes || !limits.io_opt.is_multiple_of(bytes) {
            limits.io_min = limits.physical_block_size.max(limits.logical_block_size);
            limits.io_opt = bytes;
        }
    }

    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        match ty {
            StatusType::Info => {
                let r = self.shared.on_worker(|s| {
                    let mut md = s.md.lock();
                    md.commit()?;
                    let (free, total) = md.metadata_usage();
                    Ok::<_, PdataError>((
                        total - free,
                        total,
                        md.current_era(),
                        md.superblock().metadata_snap,
                    ))
                });
                match r {
                    Ok((used, total, era, snap)) => {
                        let snap = if snap == 0 {
                            "-".to_string()
                        } else {
                            snap.to_string()
                        };
                        format!("8 {used}/{total} {era} {snap}")
                    }
                    Err(_) => "Error".into(),
                }
            }
            StatusType::Table => {
                let e = |d: &DevId| udm_core::escape_arg(&d.to_string()).into_owned();
                format!(
                    "{} {} {}",
                    e(&self.devs[0]),
                    e(&self.devs[1]),
                    self.shared.bs
                )
            }
        }
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        if argv.len() != 1 {
            return Err(TargetError::invalid(
                "incorrect number of message arguments",
            ));
        }
        let cmd = argv[0].to_ascii_lowercase();
        let r = self.shared.on_worker(move |s| -> Result<(), PdataError> {
            match cmd.as_str() {
                "checkpoint" => s.rollover(),
                "take_metadata_snap" => {
                    let mut md = s.md.lock();
                    md.take_snap()?;
                    md.commit()?;
                    let n = md.nr_blocks() as u64;
                    *s.bits.write() = vec![0; n.div_ceil(64) as usize];
                    drop(md);
                    s.schedule_digest();
                    Ok(())
                }
                "drop_metadata_snap" => {
                    let mut md = s.md.lock();
                    md.drop_snap()?;
                    md.commit()
                }
                _ => Err(PdataError::Invalid(format!("unsupported message '{cmd}'"))),
            }
        });
        r.map(|_| None)
            .map_err(|e| TargetError::invalid(e.to_string()))
    }

    fn postsuspend(&self) {
        let r = self.shared.on_worker(|s| {
            let mut md = s.md.lock();
            md.archive()?;
            md.commit()
        });
        if let Err(e) = r {
            tracing::error!("era: couldn't archive current era: {e}");
        }
        self.suspended.store(true, SeqCst);
    }

    fn preresume(&self) -> Result<(), TargetError> {
        let n = self.nr_blocks;
        self.suspended.store(false, SeqCst);
        self.shared
            .on_worker(move |s| {
                {
                    let mut md = s.md.lock();
                    if md.nr_blocks() as u64 != n {
                        md.resize(n as u32)?;
                        md.commit()?;
                    }
                }
                s.rollover()
            })
            .map_err(|e| err("era preresume failed", e))
    }
}
