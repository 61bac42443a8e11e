//! `snapshot-merge <origin> <COW> <P|PO> <chunk>`: loaded in place of the origin's
//! `snapshot-origin` table, it presents the snapshot's view (chunks not merged yet come from
//! the COW) and copies the COW back into the origin in the background, in the kernel's
//! order: newest exception first, with the consecutive run before it in its metadata area in
//! one copy; runs are taken in batches (up to 16 MiB, across areas), copied together, then
//! the origin is flushed and the merged entries are cleared from their areas on disk. A
//! merge cut short (daemon killed, suspend) resumes from what the COW says.

use super::copyout::{copy_out, copy_runs_to, CopyFail};
use super::snap::{at, open_shared, rw_sync, OriginHub, SnapShared};
use super::{SnapshotParams, StoreKind};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use udm_core::{
    MapResult, Publication, StatusFlags, StatusType, Target, TargetCtx, TargetError, TargetType,
    Worker,
};
use udm_io::{sync, Bio, DevId, Op, Sectors};

pub struct MergeType;

impl TargetType for MergeType {
    fn name(&self) -> &'static str {
        "snapshot-merge"
    }
    fn version(&self) -> [u32; 3] {
        [1, 5, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = SnapshotParams::from_args(args)?;
        if p.kind == StoreKind::Transient {
            return Err(TargetError::invalid(
                "Snapshot merge requires a persistent exception store",
            ));
        }
        let origin = ctx.get_device(&p.origin).map_err(|e| {
            TargetError::invalid("Cannot get origin device").with_detail(e.to_string())
        })?;
        let key = origin.id.clone();
        let (shared, cow) = open_shared(ctx, &p, &key, &origin)?;
        *shared.events.lock() = ctx.event_trigger();
        let (hub, hub_pub) = OriginHub::join(ctx, &key)?;
        let me_pub = ctx.publish_as(key, &shared)?;
        Ok(Box::new(Merge {
            p,
            origin_id: origin.id.clone(),
            cow_id: cow.id.clone(),
            shared,
            hub,
            worker: ctx.worker("snapshot-merge"),
            merger: Mutex::new(None),
            _pubs: [hub_pub, me_pub],
        }))
    }
}

struct Merger {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

pub struct Merge {
    p: SnapshotParams,
    origin_id: DevId,
    cow_id: DevId,
    shared: Arc<SnapShared>,
    hub: Arc<OriginHub>,
    worker: Arc<Worker>,
    merger: Mutex<Option<Merger>>,
    _pubs: [Publication; 2],
}

impl Merge {
    fn stop_merge(&self) {
        if let Some(m) = self.merger.lock().take() {
            m.stop.store(true, SeqCst);
            let _ = m.thread.join();
        }
    }
}

impl Merge {
    /// Start the background merge unless it is running.
    fn start_merge(&self) {
        let mut m = self.merger.lock();
        if m.is_none() {
            let stop = Arc::new(AtomicBool::new(false));
            let (sh, hub, st) = (self.shared.clone(), self.hub.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name("udm-snap-merge".into())
                .spawn(move || merge_loop(&sh, &hub, &st))
                .expect("spawn merge thread");
            *m = Some(Merger { stop, thread });
        }
    }
}

impl Drop for Merge {
    fn drop(&mut self) {
        self.stop_merge();
    }
}

/// Sectors merged per batch: its runs are copied together, then one origin flush and one
/// metadata write per area it touched (the kernel merges in batches of chunks too).
const MERGE_BATCH_SECTORS: u64 = 16 << 11;

/// Merge batches until done, stopped, or failed.
fn merge_loop(sh: &SnapShared, hub: &OriginHub, stop: &AtomicBool) {
    while !stop.load(SeqCst) {
        let mut g = sh.st.lock();
        // Copies queued by the origin before the merge took over join the table first.
        sh.wait_all_copied(&mut g);
        if !g.valid || g.merge_failed {
            return;
        }
        // Exceptions added before the merge took over (by the snapshot it was) go to disk
        // first: a merge plans from the areas as written.
        if !sh.commit(&mut g) {
            return;
        }
        let cs = g.store.chunk;
        let plan = match g
            .store
            .plan_merge(&*sh.cow, (MERGE_BATCH_SECTORS / cs).max(1))
        {
            Ok(Some(plan)) => plan,
            Ok(None) => return,
            Err(_) => {
                tracing::error!("Read error in exception store: shutting down merge");
                g.merge_failed = true;
                return;
            }
        };
        // Other snapshots of the origin keep the data the merge overwrites.
        let ranges: Vec<_> = plan
            .runs
            .iter()
            .map(|&(old, _, n)| (old.saturating_mul(cs), n.saturating_mul(cs)))
            .collect();
        copy_out(hub, &ranges, Some(sh));
        // COW chunk → origin chunk.
        let back: Vec<_> = plan.runs.iter().map(|&(o, n, c)| (n, o, c)).collect();
        let osize = sh.origin.size().0;
        let failure = match copy_runs_to(&sh.copier, &sh.cow, &sh.origin, &back, cs, osize) {
            Err(CopyFail::Read) => Some("Read error: shutting down merge."),
            Err(CopyFail::Write) => Some("Write error: shutting down merge."),
            Ok(()) if sync::flush(&*sh.origin).is_err() => {
                Some("Flush after merge failed: shutting down merge")
            }
            Ok(()) if g.store.commit_merge_plan(&*sh.cow, plan).is_err() => {
                Some("Write error in exception store: shutting down merge")
            }
            Ok(()) => None,
        };
        if let Some(msg) = failure {
            tracing::error!("{msg}");
            g.merge_failed = true;
            return;
        }
    }
}

fn merge_io(sh: &SnapShared, hub: &OriginHub, mut bio: Bio) {
    if bio.op == Op::Flush {
        return if bio.target_bio_nr() == 0 {
            sh.origin.submit(bio)
        } else {
            sh.cow.submit(bio)
        };
    }
    let mut g = sh.st.lock();
    let cs = g.store.chunk;
    let c = bio.sector.0 / cs;
    let off = bio.sector.0 % cs;
    sh.wait_copied(&mut g, c);
    let res = match g.store.lookup(c) {
        Some(n) if bio.op == Op::Discard => {
            sync::discard(&*sh.cow, Sectors(at(n, cs, off)), bio.len())
        }
        Some(n) => rw_sync(&*sh.cow, &mut bio, at(n, cs, off)),
        None => {
            if bio.op.is_write() {
                copy_out(hub, &[(bio.sector.0, bio.len().0)], Some(sh));
            }
            if bio.op == Op::Discard {
                sync::discard(&*sh.origin, bio.sector, bio.len())
            } else {
                {
                    let s = bio.sector.0;
                    rw_sync(&*sh.origin, &mut bio, s)
                }
            }
        }
    };
    drop(g);
    bio.complete(res);
}

impl Target for Merge {
    fn map(&self, bio: Bio) -> MapResult {
        let sh = self.shared.clone();
        let hub = self.hub.clone();
        self.worker.spawn(move || merge_io(&sh, &hub, bio));
        MapResult::Submitted
    }
    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        match ty {
            StatusType::Info => self.shared.status(),
            StatusType::Table => self
                .shared
                .table_line(&self.p, &self.origin_id, &self.cow_id),
        }
    }
    fn max_io_len(&self) -> Option<Sectors> {
        Some(Sectors(self.shared.st.lock().store.chunk))
    }
    fn num_flush_bios(&self) -> u32 {
        2
    }
    fn presuspend(&self) {
        self.stop_merge();
    }
    fn presuspend_undo(&self) {
        self.start_merge();
    }
    fn resume(&self) {
        self.shared.merging.store(true, SeqCst);
        self.shared.active.store(true, SeqCst);
        self.hub.add(&self.shared);
        self.start_merge();
    }
}
