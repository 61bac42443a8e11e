//! Worker contexts: a target's blocking work runs on its own worker, so it makes progress
//! even when every thread of the shared I/O pool is blocked waiting for that target's I/O.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use udm_core::{
    MapResult, Registry, Target, TargetCtx, TargetError, TargetType, TargetTypes, Worker,
};
use udm_io::{sync, Bio, IoBuf, MemDevice, Sectors, WorkerPool};
use udm_testkit::registry::{create, sel};

const POOL: usize = 8;
const GUARD: Duration = Duration::from_secs(20);

/// Reads "metadata" with a blocking helper before completing each bio (as a thin target
/// looking up a mapping that missed its cache).
struct MetaType {
    meta: Arc<MemDevice>,
}

struct Meta {
    meta: Arc<MemDevice>,
    worker: Arc<Worker>,
}

impl Target for Meta {
    fn map(&self, mut bio: Bio) -> MapResult {
        let (meta, w) = (self.meta.clone(), self.worker.clone());
        self.worker.spawn(move || {
            assert!(w.is_current());
            let r = sync::read_at(meta.as_ref(), bio.sector, bio.buf().len());
            match r {
                Ok(b) => {
                    bio.buf_mut().copy_from_slice(&b);
                    bio.complete(Ok(()))
                }
                Err(e) => bio.complete(Err(e)),
            }
        });
        MapResult::Submitted
    }
}

impl TargetType for MetaType {
    fn name(&self) -> &'static str {
        "meta"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        _args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(Meta {
            meta: self.meta.clone(),
            worker: ctx.worker("meta"),
        }))
    }
}

#[test]
fn blocking_target_work_progresses_with_the_io_pool_saturated() {
    // Fix the pool size before anything in this process starts it.
    std::env::set_var("UDM_IO_THREADS", POOL.to_string());
    let meta = Arc::new(MemDevice::new("meta", Sectors(64)));
    sync::write_at(meta.as_ref(), Sectors(0), &[0x42; 64 * 512]).unwrap();
    let types = TargetTypes::new();
    types.register(Arc::new(MetaType { meta }));
    let reg = Registry::new(types);
    create(&reg, "m", "0 64 meta").unwrap();
    let (dev, _g) = reg.open(&sel("m")).unwrap();

    // Occupy every I/O pool thread with a job that blocks until the target's I/O completes.
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (fin_tx, fin_rx) = crossbeam_channel::unbounded();
    let mut completions = Vec::new();
    for _ in 0..POOL {
        let (tx, rx) = crossbeam_channel::bounded::<IoBuf>(1);
        completions.push(tx);
        let (started, finished, fin_tx) = (started.clone(), finished.clone(), fin_tx.clone());
        WorkerPool::io().spawn(move || {
            started.fetch_add(1, SeqCst);
            let buf = rx.recv().expect("the target's read completes");
            assert!(buf.iter().all(|&b| b == 0x42));
            finished.fetch_add(1, SeqCst);
            let _ = fin_tx.send(());
        });
    }
    while started.load(SeqCst) < POOL {
        std::thread::yield_now();
    }
    // Every pool thread is now blocked. The target's reads must still complete.
    for (i, tx) in completions.into_iter().enumerate() {
        dev.submit(Bio::read(
            Sectors(i as u64),
            IoBuf::zeroed(512),
            Box::new(move |r, buf| {
                assert!(r.is_ok());
                let _ = tx.send(buf);
            }),
        ));
    }
    for _ in 0..POOL {
        fin_rx
            .recv_timeout(GUARD)
            .expect("blocking work deadlocked the I/O pool");
    }
    assert_eq!(finished.load(SeqCst), POOL);
}
