//! A gate/recording block device for ordering tests: it records every bio in arrival order
//! and, while closed, holds them until the test releases them (to the backing device, in
//! arrival order); `hold_only` narrows what a closed gate holds to the bios a test picks. Also `Limited`, a RAM device with chosen limits, and `RemapType`, a test target type (`testdev <key>`) that sends a whole
//! table line to a `BlockDevice` the test registered under `key`, so a gate (or any test
//! device) can sit under a mapped device.

use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_core::{MapResult, Target, TargetCtx, TargetError, TargetType};
use udm_io::{Bio, BioFlags, BlockDevice, DevId, Extent, Limits, MemDevice, Op, Sectors};

/// One bio as the gate saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub op: Op,
    pub flags: BioFlags,
    pub sector: Sectors,
    pub len: Sectors,
}

/// Which bios a closed gate holds (`hold_only`).
type Pick = Box<dyn Fn(&Record) -> bool + Send + Sync>;

struct State {
    closed: bool,
    pick: Option<Pick>,
    held: VecDeque<Bio>,
    log: Vec<Record>,
}

/// Holds bios while closed; records everything.
pub struct GateDevice {
    backing: Arc<dyn BlockDevice>,
    st: Mutex<State>,
    cv: Condvar,
}

impl GateDevice {
    /// A closed gate in front of `backing`.
    pub fn new(backing: Arc<dyn BlockDevice>) -> Arc<GateDevice> {
        Arc::new(GateDevice {
            backing,
            st: Mutex::new(State {
                closed: true,
                pick: None,
                held: VecDeque::new(),
                log: Vec::new(),
            }),
            cv: Condvar::new(),
        })
    }

    /// Stop holding: release everything held and pass new bios straight through.
    pub fn open(&self) {
        self.st.lock().closed = false;
        self.release_all();
    }

    /// Start holding new bios again.
    pub fn close(&self) {
        self.st.lock().closed = true;
    }

    /// From now on a closed gate holds only the bios `pick` chooses; the rest pass through
    /// (still recorded).
    pub fn hold_only(&self, pick: impl Fn(&Record) -> bool + Send + Sync + 'static) {
        self.st.lock().pick = Some(Box::new(pick));
    }

    /// Pass the `n` oldest held bios to the backing device; returns how many there were.
    pub fn release(&self, n: usize) -> usize {
        let out = self.take_held(n);
        let k = out.len();
        for b in out {
            self.backing.submit(b);
        }
        k
    }

    pub fn release_all(&self) -> usize {
        self.release(usize::MAX)
    }

    /// Bios currently held.
    pub fn held(&self) -> usize {
        self.st.lock().held.len()
    }

    /// What the held bios are, oldest first.
    pub fn held_records(&self) -> Vec<Record> {
        self.st.lock().held.iter().map(record).collect()
    }

    /// Wait until at least `n` bios are held; false after `timeout` (a failure guard for
    /// tests, never a pass condition).
    pub fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut st = self.st.lock();
        while st.held.len() < n {
            if self.cv.wait_until(&mut st, until).timed_out() {
                return st.held.len() >= n;
            }
        }
        true
    }

    /// Fail the oldest `n` held bios with an I/O error instead of passing them on; returns
    /// how many there were.
    pub fn fail_held(&self, n: usize) -> usize {
        let failed = self.take_held(n);
        let k = failed.len();
        for b in failed {
            b.complete(Err(udm_io::IoError::Io));
        }
        k
    }

    /// The oldest `n` held bios, out of the gate.
    fn take_held(&self, n: usize) -> Vec<Bio> {
        let mut st = self.st.lock();
        let k = n.min(st.held.len());
        st.held.drain(..k).collect()
    }

    /// Every bio seen, in arrival order.
    pub fn log(&self) -> Vec<Record> {
        self.st.lock().log.clone()
    }
}

fn record(b: &Bio) -> Record {
    Record {
        op: b.op,
        flags: b.flags,
        sector: b.sector,
        len: b.len(),
    }
}

impl BlockDevice for GateDevice {
    fn submit(&self, bio: Bio) {
        let mut st = self.st.lock();
        let rec = record(&bio);
        st.log.push(rec);
        if st.closed && st.pick.as_ref().is_none_or(|f| f(&rec)) {
            st.held.push_back(bio);
            self.cv.notify_all();
            return;
        }
        drop(st);
        self.backing.submit(bio)
    }
    fn size(&self) -> Sectors {
        self.backing.size()
    }
    fn id(&self) -> DevId {
        self.backing.id()
    }
    fn limits(&self) -> Limits {
        self.backing.limits()
    }
    fn read_only(&self) -> bool {
        self.backing.read_only()
    }
    fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        self.backing.extents(sector, len)
    }
}

/// A RAM device with chosen limits (for limits-stacking tests).
pub struct Limited(pub MemDevice, pub Limits);

impl BlockDevice for Limited {
    fn submit(&self, bio: Bio) {
        self.0.submit(bio)
    }
    fn size(&self) -> Sectors {
        self.0.size()
    }
    fn id(&self) -> DevId {
        self.0.id()
    }
    fn limits(&self) -> Limits {
        self.1
    }
}

/// Test target type `testdev <key>`: the line maps 1:1 onto the device registered as `key`
/// (offset 0); the device's limits stack into the table's through `io_hints`.
#[derive(Clone, Default)]
pub struct RemapType {
    devs: Arc<Mutex<HashMap<String, Arc<dyn BlockDevice>>>>,
}

impl RemapType {
    pub fn new() -> RemapType {
        RemapType::default()
    }
    /// Make `dev` reachable as `testdev <key>`.
    pub fn insert(&self, key: &str, dev: Arc<dyn BlockDevice>) {
        self.devs.lock().insert(key.to_string(), dev);
    }
}

struct Remap(Arc<dyn BlockDevice>);

impl Target for Remap {
    fn map(&self, bio: Bio) -> MapResult {
        MapResult::Remap(self.0.clone(), bio)
    }
    fn io_hints(&self, limits: &mut Limits) {
        limits.stack(&self.0.limits());
    }
}

impl TargetType for RemapType {
    fn name(&self) -> &'static str {
        "testdev"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let [key] = args else {
            return Err(TargetError::invalid("testdev needs one key"));
        };
        let dev = self
            .devs
            .lock()
            .get(key)
            .cloned()
            .ok_or_else(|| TargetError::invalid(format!("no test device {key}")))?;
        if dev.size() < ctx.len {
            return Err(TargetError::invalid("test device too small"));
        }
        Ok(Box::new(Remap(dev)))
    }
}
