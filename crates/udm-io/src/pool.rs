//! `WorkerPool`: a fixed set of threads for blocking work (file I/O, metadata, copying).

use crossbeam_channel::{unbounded, Sender};
use std::sync::OnceLock;
use std::thread;

type Job = Box<dyn FnOnce() + Send>;

/// A pool of threads running queued jobs in order of arrival.
pub struct WorkerPool {
    tx: Sender<Job>,
}

impl WorkerPool {
    /// Start `threads` workers named `name-N`.
    pub fn new(name: &str, threads: usize) -> WorkerPool {
        let (tx, rx) = unbounded::<Job>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        // A panicking job must not take its worker with it: once every
                        // worker had died, all later jobs would be dropped unrun. (A bio
                        // the job held fails with EIO as it unwinds.)
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .expect("spawn worker thread");
        }
        WorkerPool { tx }
    }

    /// Queue a job.
    pub fn spawn<F: FnOnce() + Send + 'static>(&self, f: F) {
        // The workers live as long as the pool's receiver clones, which never drop.
        let _ = self.tx.send(Box::new(f));
    }

    /// The process-wide pool for blocking I/O: 4 threads per core, 8 to 64 (`UDM_IO_THREADS`
    /// overrides). Page-cache hits never get here (RWF_NOWAIT inline); more threads than this
    /// mostly add contention on the backing file's locks (measured: 32 threads write 4 KiB
    /// blocks ~20% slower than 8 on 2 cores).
    pub fn io() -> &'static WorkerPool {
        static IO: OnceLock<WorkerPool> = OnceLock::new();
        IO.get_or_init(|| {
            let cores = thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            let n = std::env::var("UDM_IO_THREADS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or((4 * cores).clamp(8, 64));
            WorkerPool::new("udm-io", n)
        })
    }

    /// The process-wide pool for CPU work (one thread per core).
    pub fn cpu() -> &'static WorkerPool {
        static CPU: OnceLock<WorkerPool> = OnceLock::new();
        CPU.get_or_init(|| {
            let n = thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            WorkerPool::new("udm-cpu", n)
        })
    }
}
