//! A block copier like the kernel's kcopyd: copy a region from one device to one or more
//! destinations, or zero regions, with many jobs in flight over a fixed budget of buffers.
//!
//! A job is cut into chunks; each chunk in flight holds one buffer slot of the budget (so a
//! copier never holds more than `buffers × chunk` bytes), reads the source once and writes the
//! destinations one after another from the same buffer. Chunks that find no free slot wait in
//! a FIFO queue and start as slots come back. Everything runs from bio completions: nothing
//! here blocks or needs a thread, and `copy`/`zero` return at once (the `submit` contract).
//! Each job completes exactly once with the read result and one result per destination, so a
//! failing destination does not hide the others' success.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use udm_io::{Bio, BlockDevice, IoBuf, IoError, Sectors};

/// A place on a device: where a copy reads or writes.
#[derive(Clone)]
pub struct Loc {
    pub dev: Arc<dyn BlockDevice>,
    pub sector: Sectors,
}

impl Loc {
    pub fn new(dev: Arc<dyn BlockDevice>, sector: Sectors) -> Loc {
        Loc { dev, sector }
    }
}

/// How a job ended: the source read and each destination (in the order given), first error
/// per place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Always `Ok` for a zeroing job.
    pub read: Result<(), IoError>,
    pub writes: Vec<Result<(), IoError>>,
}

impl CopyOutcome {
    pub fn is_ok(&self) -> bool {
        self.read.is_ok() && self.writes.iter().all(|w| w.is_ok())
    }
}

/// Called once per job.
pub type CopyDone = Box<dyn FnOnce(CopyOutcome) + Send>;

struct Job {
    src: Option<Loc>,
    dests: Vec<Loc>,
    remaining: AtomicUsize,
    outcome: Mutex<CopyOutcome>,
    done: Mutex<Option<CopyDone>>,
}

impl Job {
    fn chunk_done(&self) {
        if self.remaining.fetch_sub(1, SeqCst) == 1 {
            self.finish();
        }
    }
    fn finish(&self) {
        let out = self.outcome.lock().clone();
        if let Some(done) = self.done.lock().take() {
            done(out);
        }
    }
}

struct Chunk {
    job: Arc<Job>,
    /// Offset into the job's regions and length.
    off: Sectors,
    len: Sectors,
}

struct State {
    /// Buffers not in use (each `chunk` bytes long).
    free: Vec<IoBuf>,
    /// Buffers that exist (free or in use); never above the budget.
    allocated: usize,
    pending: VecDeque<Chunk>,
    /// A thread is starting chunks (the others only queue), so inline completions never
    /// recurse without bound.
    running: bool,
    again: bool,
}

struct Inner {
    chunk: Sectors,
    budget: usize,
    st: Mutex<State>,
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

/// The copier. Cheap to clone; jobs keep it alive until they finish.
#[derive(Clone)]
pub struct Copier {
    inner: Arc<Inner>,
}

impl Copier {
    /// A copier moving `chunk` sectors per I/O with at most `buffers` chunks in flight.
    pub fn new(chunk: Sectors, buffers: usize) -> Copier {
        assert!(
            chunk.0 > 0 && buffers > 0,
            "copier needs a chunk size and a buffer"
        );
        Copier {
            inner: Arc::new(Inner {
                chunk,
                budget: buffers,
                st: Mutex::new(State {
                    free: Vec::new(),
                    allocated: 0,
                    pending: VecDeque::new(),
                    running: false,
                    again: false,
                }),
                in_use: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }),
        }
    }

    /// The memory budget in bytes (`buffers × chunk`).
    pub fn budget_bytes(&self) -> u64 {
        self.inner.budget as u64 * self.inner.chunk.bytes().0
    }

    /// Buffers allocated so far (never more than the budget).
    pub fn buffers_allocated(&self) -> usize {
        self.inner.st.lock().allocated
    }

    /// Most chunks ever in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.inner.peak.load(SeqCst)
    }

    /// Copy `len` sectors from `src` to every destination. `done` runs once, possibly on
    /// this thread before `copy` returns when the devices complete inline.
    pub fn copy(&self, src: Loc, dests: Vec<Loc>, len: Sectors, done: CopyDone) {
        self.start(Some(src), dests, len, done)
    }

    /// Zero `len` sectors at every destination (write-zeroes, or written zeroes where a
    /// device does not support that).
    pub fn zero(&self, dests: Vec<Loc>, len: Sectors, done: CopyDone) {
        self.start(None, dests, len, done)
    }

    /// `copy` and wait: for worker threads only (never the I/O pool).
    pub fn copy_wait(&self, src: Loc, dests: Vec<Loc>, len: Sectors) -> CopyOutcome {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.copy(src, dests, len, Box::new(move |o| drop(tx.send(o))));
        rx.recv().expect("copier completes every job")
    }

    /// `zero` and wait: for worker threads only.
    pub fn zero_wait(&self, dests: Vec<Loc>, len: Sectors) -> CopyOutcome {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.zero(dests, len, Box::new(move |o| drop(tx.send(o))));
        rx.recv().expect("copier completes every job")
    }

    fn start(&self, src: Option<Loc>, dests: Vec<Loc>, len: Sectors, done: CopyDone) {
        let c = self.inner.chunk.0;
        let n = len.0.div_ceil(c) as usize;
        let job = Arc::new(Job {
            src,
            outcome: Mutex::new(CopyOutcome {
                read: Ok(()),
                writes: vec![Ok(()); dests.len()],
            }),
            dests,
            remaining: AtomicUsize::new(n),
            done: Mutex::new(Some(done)),
        });
        if n == 0 || job.dests.is_empty() {
            return job.finish();
        }
        {
            let mut st = self.inner.st.lock();
            for i in 0..n as u64 {
                let off = Sectors(i * c);
                st.pending.push_back(Chunk {
                    job: job.clone(),
                    off,
                    len: Sectors(c.min(len.0 - off.0)),
                });
            }
        }
        Inner::kick(&self.inner);
    }
}

impl Inner {
    /// Start pending chunks while buffer slots are free. Only one thread loops at a time; a
    /// call that finds one looping asks it to go round again.
    fn kick(me: &Arc<Inner>) {
        let mut st = me.st.lock();
        if st.running {
            st.again = true;
            return;
        }
        st.running = true;
        loop {
            st.again = false;
            while !st.pending.is_empty() {
                let buf = match st.free.pop() {
                    Some(b) => b,
                    None if st.allocated < me.budget => {
                        st.allocated += 1;
                        IoBuf::zeroed(me.chunk.bytes().0 as usize)
                    }
                    None => break,
                };
                let ch = st.pending.pop_front().expect("pending chunk");
                drop(st);
                let now = me.in_use.fetch_add(1, SeqCst) + 1;
                me.peak.fetch_max(now, SeqCst);
                Inner::run_chunk(me, ch, buf);
                st = me.st.lock();
            }
            if !st.again {
                st.running = false;
                return;
            }
        }
    }

    fn release(me: &Arc<Inner>, mut buf: IoBuf) {
        buf.resize(me.chunk.bytes().0 as usize);
        me.in_use.fetch_sub(1, SeqCst);
        me.st.lock().free.push(buf);
        Inner::kick(me);
    }

    fn run_chunk(me: &Arc<Inner>, ch: Chunk, mut buf: IoBuf) {
        let Some(src) = ch.job.src.clone() else {
            return Inner::write_dest(me, ch, buf, 0, true);
        };
        buf.resize(ch.len.bytes().0 as usize);
        let me2 = me.clone();
        let bio = Bio::read(
            src.sector + ch.off,
            buf,
            Box::new(move |r, buf| match r {
                Ok(()) => Inner::write_dest(&me2, ch, buf, 0, false),
                Err(e) => {
                    let job = ch.job.clone();
                    job.outcome.lock().read.get_or_insert_err(e);
                    Inner::release(&me2, buf);
                    job.chunk_done();
                }
            }),
        );
        src.dev.submit(bio);
    }

    /// Write the chunk to destination `i`, then the next; zeroing uses write-zeroes unless
    /// `fallback` says to write the (zeroed) buffer.
    fn write_dest(me: &Arc<Inner>, ch: Chunk, buf: IoBuf, i: usize, zero: bool) {
        if i == ch.job.dests.len() {
            let job = ch.job.clone();
            Inner::release(me, buf);
            return job.chunk_done();
        }
        let d = ch.job.dests[i].clone();
        let sector = d.sector + ch.off;
        let me2 = me.clone();
        if zero {
            // Keep the slot's buffer aside while write-zeroes runs; fall back to writing it
            // zero-filled when the device cannot.
            let len = ch.len;
            let bio = Bio::write_zeroes(
                sector,
                len,
                Box::new(move |r, _| match r {
                    Err(IoError::NotSupported) => {
                        let mut buf = buf;
                        buf.resize(len.bytes().0 as usize);
                        buf.fill(0);
                        Inner::write_buf(&me2, ch, buf, i, true)
                    }
                    r => {
                        if let Err(e) = r {
                            ch.job.outcome.lock().writes[i].get_or_insert_err(e);
                        }
                        Inner::write_dest(&me2, ch, buf, i + 1, true)
                    }
                }),
            );
            return d.dev.submit(bio);
        }
        Inner::write_buf(me, ch, buf, i, false)
    }

    fn write_buf(me: &Arc<Inner>, ch: Chunk, buf: IoBuf, i: usize, zero: bool) {
        let d = ch.job.dests[i].clone();
        let me2 = me.clone();
        let bio = Bio::write(
            d.sector + ch.off,
            buf,
            Box::new(move |r, buf| {
                if let Err(e) = r {
                    ch.job.outcome.lock().writes[i].get_or_insert_err(e);
                }
                Inner::write_dest(&me2, ch, buf, i + 1, zero)
            }),
        );
        d.dev.submit(bio);
    }
}

trait FirstErr {
    fn get_or_insert_err(&mut self, e: IoError);
}

impl FirstErr for Result<(), IoError> {
    fn get_or_insert_err(&mut self, e: IoError) {
        if self.is_ok() {
            *self = Err(e);
        }
    }
}
