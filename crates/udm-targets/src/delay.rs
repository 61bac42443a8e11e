//! `delay`: hold reads, writes and flushes back for a fixed time each (optionally sending each
//! class to its own device). Held bios wait in a deadline queue served by a timer thread, so
//! `map` never sleeps and any number of bios wait in parallel.

use parking_lot::{Condvar, Mutex};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use udm_core::clock::{Clock, RealClock};
use udm_core::{
    DevHandle, Escaped, MapResult, StatusType, Target, TargetCtx, TargetError, TargetType,
};
use udm_io::{Bio, BioFlags, Op, Sectors};

use crate::kscan::{scan_u32, scan_u64};

/// One `<dev> <offset> <delay_ms>` triple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayClassParams {
    pub dev: String,
    pub offset: Sectors,
    pub delay_ms: u32,
}

/// `delay <dev> <offset> <delay> [<wdev> <woffset> <wdelay> [<fdev> <foffset> <fdelay>]]`:
/// one triple for everything, a second for writes (and flushes), a third for flushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayParams {
    pub classes: Vec<DelayClassParams>,
}

impl DelayParams {
    /// The (read, write, flush) triples, filling in the shared ones.
    pub fn expand(&self) -> [&DelayClassParams; 3] {
        let c = &self.classes;
        match c.len() {
            1 => [&c[0], &c[0], &c[0]],
            2 => [&c[0], &c[1], &c[1]],
            _ => [&c[0], &c[1], &c[2]],
        }
    }
}

impl DelayParams {
    /// Parse the words the table gave (as split by `split_args`).
    pub fn from_args(args: &[String]) -> Result<Self, TargetError> {
        if !matches!(args.len(), 3 | 6 | 9) {
            return Err(TargetError::invalid("Requires exactly 3, 6 or 9 arguments"));
        }
        let mut classes = Vec::new();
        for t in args.chunks(3) {
            let offset =
                scan_u64(&t[1]).ok_or_else(|| TargetError::invalid("Invalid device sector"))?;
            let delay_ms = scan_u32(&t[2]).ok_or_else(|| TargetError::invalid("Invalid delay"))?;
            classes.push(DelayClassParams {
                dev: t[0].clone(),
                offset: Sectors(offset),
                delay_ms,
            });
        }
        Ok(DelayParams { classes })
    }
}

impl FromStr for DelayParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        DelayParams::from_args(&udm_core::split_args(s))
    }
}

impl fmt::Display for DelayParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.classes.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{} {} {}", Escaped(&c.dev), c.offset, c.delay_ms)?;
        }
        Ok(())
    }
}

/// The `delay` target type. `with_clock` lets tests drive the deadlines by hand.
pub struct DelayType {
    clock: Arc<dyn Clock>,
}

impl DelayType {
    pub fn new() -> DelayType {
        DelayType {
            clock: RealClock::shared(),
        }
    }
    pub fn with_clock(clock: Arc<dyn Clock>) -> DelayType {
        DelayType { clock }
    }
}

impl Default for DelayType {
    fn default() -> DelayType {
        DelayType::new()
    }
}

impl TargetType for DelayType {
    fn name(&self) -> &'static str {
        "delay"
    }
    fn version(&self) -> [u32; 3] {
        [1, 3, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = DelayParams::from_args(args)?;
        let len = ctx.len;
        let mut mk = |c: &DelayClassParams| -> Result<Class, TargetError> {
            Ok(Class {
                dev: ctx.get_device_area(&c.dev, c.offset, len)?,
                start: c.offset,
                delay: Duration::from_millis(c.delay_ms as u64),
                delay_ms: c.delay_ms,
                ops: AtomicU32::new(0),
            })
        };
        let [r, w, f] = p.expand();
        let classes = [mk(r)?, mk(w)?, mk(f)?];
        let inner = Arc::new(Inner {
            classes,
            clock: self.clock.clone(),
            queue: Mutex::new(Queue {
                heap: BinaryHeap::new(),
                seq: 0,
                stop: false,
            }),
            cv: Condvar::new(),
            may_delay: AtomicBool::new(true),
        });
        let th = inner.clone();
        let timer = std::thread::Builder::new()
            .name("udm-delay".into())
            .spawn(move || th.run_timer())
            .map_err(|e| {
                TargetError::with_errno(libc::ENOMEM, format!("Couldn't start kdelayd: {e}"))
            })?;
        Ok(Box::new(Delay {
            inner,
            nclasses: p.classes.len(),
            timer: Some(timer),
        }))
    }
}

struct Class {
    dev: Arc<DevHandle>,
    start: Sectors,
    delay: Duration,
    delay_ms: u32,
    /// Bios of this class being held right now (the INFO status).
    ops: AtomicU32,
}

/// A held bio, ordered by deadline then arrival.
struct Held {
    expires: Duration,
    seq: u64,
    class: usize,
    bio: Bio,
}

impl PartialEq for Held {
    fn eq(&self, o: &Held) -> bool {
        (self.expires, self.seq) == (o.expires, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Held) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    /// Reversed, so `BinaryHeap` pops the earliest deadline first.
    fn cmp(&self, o: &Held) -> CmpOrdering {
        (o.expires, o.seq).cmp(&(self.expires, self.seq))
    }
}

struct Queue {
    heap: BinaryHeap<Held>,
    seq: u64,
    stop: bool,
}

struct Inner {
    /// read, write, flush.
    classes: [Class; 3],
    clock: Arc<dyn Clock>,
    queue: Mutex<Queue>,
    cv: Condvar,
    /// False between presuspend and resume: bios pass straight through.
    may_delay: AtomicBool,
}

impl Inner {
    /// The timer thread: release every bio whose deadline has passed, sleep until the next.
    fn run_timer(&self) {
        let mut q = self.queue.lock();
        loop {
            let now = self.clock.now();
            let mut due = Vec::new();
            while q.heap.peek().is_some_and(|h| h.expires <= now) {
                due.extend(q.heap.pop());
            }
            if !due.is_empty() {
                drop(q);
                self.release(due);
                q = self.queue.lock();
                continue;
            }
            if q.stop {
                let rest: Vec<Held> = q.heap.drain().collect();
                drop(q);
                self.release(rest);
                return;
            }
            let wait = q.heap.peek().map(|h| h.expires.saturating_sub(now));
            let wait = match (wait, self.clock.poll_interval()) {
                (Some(w), Some(p)) => Some(w.min(p)),
                (None, Some(p)) => Some(p),
                (w, None) => w,
            };
            match wait {
                Some(w) => {
                    self.cv.wait_for(&mut q, w);
                }
                None => self.cv.wait(&mut q),
            }
        }
    }

    /// Send held bios on to their devices, in deadline order.
    fn release(&self, mut held: Vec<Held>) {
        held.sort_by_key(|h| (h.expires, h.seq));
        for h in held {
            let c = &self.classes[h.class];
            c.ops.fetch_sub(1, Ordering::AcqRel);
            c.dev.dev.submit(h.bio);
        }
    }

    /// Release everything now (presuspend, teardown).
    fn flush_all(&self) {
        let all: Vec<Held> = self.queue.lock().heap.drain().collect();
        self.release(all);
    }
}

pub struct Delay {
    inner: Arc<Inner>,
    /// How many triples the table line had (1, 2 or 3).
    nclasses: usize,
    /// Joined on drop, so the devices below are released when the table goes.
    timer: Option<std::thread::JoinHandle<()>>,
}

impl Target for Delay {
    fn map(&self, mut bio: Bio) -> MapResult {
        let idx = match bio.op {
            Op::Read => 0,
            Op::Flush => 2,
            _ if bio.flags.contains(BioFlags::PREFLUSH) => 2,
            _ => 1,
        };
        let inner = &self.inner;
        let c = &inner.classes[idx];
        if bio.op != Op::Flush {
            bio.sector += c.start;
        }
        if c.delay.is_zero() {
            return MapResult::Remap(c.dev.dev.clone(), bio);
        }
        let mut q = inner.queue.lock();
        if !inner.may_delay.load(Ordering::Acquire) || q.stop {
            drop(q);
            return MapResult::Remap(c.dev.dev.clone(), bio);
        }
        c.ops.fetch_add(1, Ordering::AcqRel);
        let expires = inner.clock.now() + c.delay;
        q.seq += 1;
        let seq = q.seq;
        let earliest = q.heap.peek().is_none_or(|h| expires < h.expires);
        q.heap.push(Held {
            expires,
            seq,
            class: idx,
            bio,
        });
        drop(q);
        if earliest {
            inner.cv.notify_one();
        }
        MapResult::Submitted
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        let c = &self.inner.classes;
        match ty {
            StatusType::Info => format!(
                "{} {} {}",
                c[0].ops.load(Ordering::Acquire),
                c[1].ops.load(Ordering::Acquire),
                c[2].ops.load(Ordering::Acquire)
            ),
            StatusType::Table => DelayParams {
                classes: c[..self.nclasses]
                    .iter()
                    .map(|c| DelayClassParams {
                        dev: c.dev.id.to_string(),
                        offset: c.start,
                        delay_ms: c.delay_ms,
                    })
                    .collect(),
            }
            .to_string(),
        }
    }

    fn presuspend(&self) {
        self.inner.may_delay.store(false, Ordering::Release);
        self.inner.flush_all();
    }

    fn resume(&self) {
        self.inner.may_delay.store(true, Ordering::Release);
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.inner.queue.lock().stop = true;
        self.inner.cv.notify_all();
        if let Some(t) = self.timer.take() {
            // Not from the timer itself (a released bio's completion dropping the table).
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
