//! Worker contexts: a dedicated thread and queue per target (or per device) for work that
//! blocks — metadata reads that miss the cache, copies, commits. Blocking there can never
//! starve the shared I/O pool (`udm_io::WorkerPool::io`), and the pool's threads never wait
//! for it, so neither can deadlock the other.

use crossbeam_channel::{unbounded, Sender};
use std::thread;

type Job = Box<dyn FnOnce() + Send>;

/// A target's own worker: jobs run one at a time, in order, on a thread only it uses. The
/// thread ends after the last handle is dropped and the queued jobs have run.
pub struct Worker {
    tx: Sender<Job>,
    name: String,
    thread: thread::ThreadId,
}

impl Worker {
    /// Start a worker thread named `udm-w-<name>`.
    pub fn new(name: &str) -> Worker {
        let (tx, rx) = unbounded::<Job>();
        let h = thread::Builder::new()
            .name(format!("udm-w-{name}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .expect("spawn worker thread");
        Worker {
            tx,
            name: name.to_string(),
            thread: h.thread().id(),
        }
    }

    /// Queue a job; it may block (on `udm_io::sync` helpers, locks, other devices' I/O).
    pub fn spawn<F: FnOnce() + Send + 'static>(&self, f: F) {
        // The receiver lives until every sender (this handle) is gone.
        let _ = self.tx.send(Box::new(f));
    }

    /// Run `f` on this worker after every job queued before it and wait for its result;
    /// called from the worker's own thread, `f` runs at once.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        if self.is_current() {
            return f();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv()
            .unwrap_or_else(|_| panic!("{} worker runs its jobs", self.name))
    }

    /// True when called from this worker's thread.
    pub fn is_current(&self) -> bool {
        thread::current().id() == self.thread
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}
