//! `multipath`: dm-mpath, one device reached over several paths grouped in priority groups.
//!
//! `multipath <#features> [queue_if_no_path] [retain_attached_hw_handler]
//! [pg_init_retries N] [pg_init_delay_msecs N] [queue_mode bio|rq|mq] <#hw handler args>
//! [<handler> <args>...] <#groups> <initial group> [<selector> <#selector args> <args>...
//! <#paths> <#path args> [<path> <args>...]...]...`. I/O goes down a path the group's
//! selector picks (`selector`); a path error fails the path (an event) and the I/O is retried
//! on another; with no path left I/O waits (`queue_if_no_path`) or fails. Messages:
//! `fail_path`, `reinstate_path`, `switch_group`, `disable_group`, `enable_group`,
//! `queue_if_no_path`, `fail_if_no_path`. Status and table lines are the kernel's.
//!
//! The target publishes its paths (`MultipathPaths`) under its device, for a path checker.

pub mod selector;
pub mod topology;

use crate::kscan::{scan_u32, ArgSet, DmArg};
use parking_lot::Mutex;
use selector::Selector;
use std::sync::Arc;
use std::time::Instant;
use udm_core::{
    klog, DevHandle, DeviceState, EventTrigger, MapResult, Publication, Requeuer, StatusFlags,
    StatusType, Target, TargetCtx, TargetError, TargetFeatures, TargetType,
};
use udm_io::{Bio, BlockDevice, DevId, IoError, Op};

const PREFIX: &str = "multipath";

/// One path as the table named it.
pub struct PathDev {
    pub dev: Arc<dyn BlockDevice>,
    pub id: DevId,
    /// The word the table gave (a path, `major:minor`, `/dev/mapper/NAME`).
    pub spec: String,
    _h: Arc<DevHandle>,
}

/// What a multipath table publishes under its device: its paths, for checkers.
pub struct MultipathPaths {
    pub paths: Vec<(DevId, String, Arc<dyn BlockDevice>)>,
}

struct Pg {
    sel: Box<dyn Selector>,
    /// Global path indices, in table order.
    paths: Vec<usize>,
    bypassed: bool,
}

#[derive(Clone, Copy)]
struct PathState {
    active: bool,
    fail_count: u32,
    pg: usize,
    /// Index within the group.
    local: usize,
}

struct M {
    pgs: Vec<Pg>,
    paths: Vec<PathState>,
    nr_valid: usize,
    queue_io: bool,
    queue_if_no_path: bool,
    saved_queue_if_no_path: bool,
    current_pg: Option<usize>,
    current_path: Option<usize>,
    next_pg: Option<usize>,
    pg_init_count: u32,
    queued: Vec<Bio>,
    suspended: bool,
}

struct Shared {
    paths: Vec<PathDev>,
    m: Mutex<M>,
    retain_hw: bool,
    bio_mode: bool,
    pg_init_retries: u32,
    pg_init_delay: Option<u32>,
    name: String,
    event: EventTrigger,
    requeue: Requeuer,
    dstate: DeviceState,
}

/// Errors a path causes (the kernel's `blk_path_error`): not those the device itself
/// reports for the request.
fn path_error(e: IoError) -> bool {
    !matches!(
        e,
        IoError::NotSupported | IoError::NoSpace | IoError::Invalid | IoError::ReadOnly
    )
}

impl Shared {
    fn switch_pg(m: &mut M, pg: usize) {
        m.current_pg = Some(pg);
        m.queue_io = false;
        m.pg_init_count = 0;
    }

    fn choose_in_pg(m: &mut M, pg: usize, bytes: u64) -> Option<usize> {
        let local = m.pgs[pg].sel.select(bytes)?;
        let p = m.pgs[pg].paths[local];
        if m.current_pg != Some(pg) {
            m.current_path = Some(p);
            Shared::switch_pg(m, pg);
        }
        Some(p)
    }

    fn choose_path(m: &mut M, bytes: u64) -> Option<usize> {
        if m.nr_valid == 0 {
            m.queue_io = false;
        } else {
            if let Some(pg) = m.next_pg.take() {
                if let Some(p) = Shared::choose_in_pg(m, pg, bytes) {
                    return Some(p);
                }
            }
            if let Some(pg) = m.current_pg {
                if let Some(p) = Shared::choose_in_pg(m, pg, bytes) {
                    return Some(p);
                }
            }
            for bypassed in [false, true] {
                for pg in 0..m.pgs.len() {
                    if m.pgs[pg].bypassed != bypassed {
                        continue;
                    }
                    if let Some(p) = Shared::choose_in_pg(m, pg, bytes) {
                        return Some(p);
                    }
                }
            }
        }
        m.current_path = None;
        m.current_pg = None;
        None
    }

    /// Map a bio onto a path, queue it, or end it.
    fn dispatch(self: &Arc<Self>, mut bio: Bio) -> Option<MapResult> {
        let bytes = bio.len().bytes().0;
        let mut m = self.m.lock();
        let p = match m.current_path {
            Some(p) if m.queue_io => Some(p),
            _ => Shared::choose_path(&mut m, bytes),
        };
        let Some(p) = p else {
            if m.queue_if_no_path {
                m.queued.push(bio);
                return None;
            }
            drop(m);
            if self.dstate.noflush_suspending() {
                return Some(MapResult::Requeue(bio));
            }
            return Some(MapResult::Kill(bio, IoError::Io));
        };
        let ps = m.paths[p];
        m.pgs[ps.pg].sel.start_io(ps.local, bytes);
        drop(m);
        let start = Instant::now();
        let (op, sector, len, flags) = (bio.op, bio.sector, bio.len(), bio.flags);
        let buf = bio.take_buf();
        let me = self.clone();
        let done: udm_io::Completion = Box::new(move |res, buf| {
            bio.set_buf(buf);
            me.m.lock().pgs[ps.pg].sel.end_io(ps.local, bytes, start);
            match res {
                Err(e) if path_error(e) => me.path_failed(bio, p, e),
                r => bio.complete(r),
            }
        });
        let d = &self.paths[p];
        let child = match op {
            Op::Read => Bio::read(sector, buf, done),
            Op::Write => Bio::write(sector, buf, done),
            Op::Discard => Bio::discard(sector, len, done),
            Op::WriteZeroes => Bio::write_zeroes(sector, len, done),
            _ => Bio::flush(done),
        };
        d.dev.submit(child.with_flags(flags));
        None
    }

    fn submit(self: &Arc<Self>, bio: Bio) {
        match self.dispatch(bio) {
            None => {}
            Some(MapResult::Kill(b, e)) => b.complete(Err(e)),
            Some(MapResult::Requeue(b)) => self.requeue.requeue(b),
            Some(MapResult::Remap(d, b)) => d.submit(b),
            Some(_) => {}
        }
    }

    fn path_failed(self: &Arc<Self>, bio: Bio, p: usize, e: IoError) {
        self.fail_path(p);
        let m = self.m.lock();
        if m.nr_valid == 0 && !m.queue_if_no_path {
            drop(m);
            if self.dstate.noflush_suspending() {
                return self.requeue.requeue(bio);
            }
            return bio.complete(Err(e));
        }
        drop(m);
        self.submit(bio);
    }

    fn fail_path(&self, p: usize) -> bool {
        let mut m = self.m.lock();
        let ps = m.paths[p];
        if !ps.active {
            return false;
        }
        klog::warn(
            PREFIX,
            &format!("{}: Failing path {}.", self.name, self.paths[p].id),
        );
        m.pgs[ps.pg].sel.fail_path(ps.local);
        m.paths[p].active = false;
        m.paths[p].fail_count += 1;
        m.nr_valid -= 1;
        if m.current_path == Some(p) {
            m.current_path = None;
        }
        drop(m);
        (self.event)();
        true
    }

    fn reinstate_path(self: &Arc<Self>, p: usize) {
        let mut m = self.m.lock();
        let ps = m.paths[p];
        if ps.active {
            return;
        }
        klog::warn(
            PREFIX,
            &format!("{}: Reinstating path {}.", self.name, self.paths[p].id),
        );
        m.pgs[ps.pg].sel.reinstate_path(ps.local);
        m.paths[p].active = true;
        m.nr_valid += 1;
        let run = m.nr_valid == 1;
        if run {
            m.current_path = None;
        }
        drop(m);
        (self.event)();
        if run {
            self.run_queue();
        }
    }

    /// Map the queued bios again.
    fn run_queue(self: &Arc<Self>) {
        let q = {
            let mut m = self.m.lock();
            if m.suspended {
                return;
            }
            std::mem::take(&mut m.queued)
        };
        for b in q {
            self.submit(b);
        }
    }

    fn set_queue_if_no_path(self: &Arc<Self>, on: bool, save: bool) {
        {
            let mut m = self.m.lock();
            if save {
                if m.queue_if_no_path || !m.saved_queue_if_no_path {
                    m.saved_queue_if_no_path = m.queue_if_no_path;
                }
            } else if !on {
                m.saved_queue_if_no_path = false;
            }
            m.queue_if_no_path = on;
        }
        if !on {
            self.run_queue();
        }
    }

    /// The path a message names: its table word, its id, or the same file.
    fn find(&self, spec: &str) -> Vec<usize> {
        let canon = std::fs::canonicalize(spec).ok();
        (0..self.paths.len())
            .filter(|&i| {
                let p = &self.paths[i];
                p.spec == spec
                    || p.id.to_string() == spec
                    || (canon.is_some() && std::fs::canonicalize(&p.spec).ok() == canon)
            })
            .collect()
    }
}

/// The `multipath` target type.
pub struct MultipathType;

impl TargetType for MultipathType {
    fn name(&self) -> &'static str {
        "multipath"
    }
    fn version(&self) -> [u32; 3] {
        [1, 14, 0]
    }
    fn features(&self) -> TargetFeatures {
        TargetFeatures {
            singleton: true,
            immutable: true,
            always_writeable: false,
        }
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let inval = TargetError::invalid;
        let mut a = ArgSet::new(args);
        let arg = |min, max, error| DmArg { min, max, error };
        // Features.
        let mut argc = a.read_arg_group(&arg(0, 8, "invalid number of feature args"))?;
        let (mut qinp, mut retain, mut retries, mut delay, mut bio_mode) =
            (false, false, 0, None, false);
        while argc > 0 {
            let name = a.shift().unwrap_or_default().to_ascii_lowercase();
            argc -= 1;
            match name.as_str() {
                "queue_if_no_path" => qinp = true,
                "retain_attached_hw_handler" => retain = true,
                "pg_init_retries" if argc >= 1 => {
                    retries =
                        a.read_arg(&arg(1, 50, "pg_init_retries must be between 1 and 50"))?;
                    argc -= 1;
                }
                "pg_init_delay_msecs" if argc >= 1 => {
                    delay = Some(a.read_arg(&arg(
                        0,
                        60000,
                        "pg_init_delay_msecs must be between 0 and 60000",
                    ))?);
                    argc -= 1;
                }
                "queue_mode" if argc >= 1 => {
                    let q = a.shift().unwrap_or_default().to_ascii_lowercase();
                    match q.as_str() {
                        "bio" => bio_mode = true,
                        "rq" | "mq" => bio_mode = false,
                        _ => return Err(inval("Unknown 'queue_mode' requested")),
                    }
                    argc -= 1;
                }
                _ => return Err(inval("Unrecognised multipath feature request")),
            }
        }
        if bio_mode {
            retain = true;
        }
        // Hardware handler: udm has no SCSI device handlers.
        let hw = a.read_arg_group(&arg(0, 1024, "invalid number of hardware handler args"))?;
        let mut hw_handler = false;
        if hw > 0 {
            if bio_mode {
                klog::err(
                    PREFIX,
                    "bio-based multipath doesn't allow hardware handler args",
                );
            } else {
                hw_handler = true;
            }
            for _ in 0..hw {
                a.shift();
            }
        }
        let nr_pgs = a.read_arg(&arg(0, 1024, "invalid number of priority groups"))?;
        let mut next = a.read_arg(&arg(0, 1024, "invalid initial priority group number"))?;
        if (nr_pgs == 0) != (next == 0) {
            return Err(inval("invalid initial priority group"));
        }
        let mut pgs = Vec::new();
        let mut paths = Vec::new();
        let mut states = Vec::new();
        let mut next_pg = None;
        while a.argc() > 0 {
            if a.argc() < 2 {
                return Err(inval("not enough priority group arguments"));
            }
            let sel_name = a.shift().unwrap_or_default();
            if !selector::NAMES.contains(&sel_name) {
                return Err(inval("unknown path selector type"));
            }
            let n = a.read_arg_group(&arg(0, 1024, "invalid number of path selector args"))?;
            let sargs: Vec<String> = (0..n)
                .map(|_| a.shift().unwrap_or_default().to_string())
                .collect();
            let mut sel = selector::create(sel_name, &sargs)
                .map_err(|_| inval("path selector constructor failed"))?;
            let npaths = a.read_arg(&arg(1, 1024, "invalid number of paths"))?;
            let nargs = a.read_arg(&arg(0, 1024, "invalid number of selector args"))? as usize;
            let pg = pgs.len();
            let mut members = Vec::new();
            for local in 0..npaths as usize {
                if a.argc() < 1 + nargs {
                    return Err(inval("not enough path parameters"));
                }
                let spec = a.shift().unwrap_or_default().to_string();
                let h = ctx
                    .get_device_area(&spec, ctx.begin, ctx.len)
                    .map_err(|e| {
                        TargetError::with_errno(e.errno, "error getting device")
                            .with_detail(e.to_string())
                    })?;
                if hw_handler {
                    return Err(TargetError::with_errno(
                        libc::ENODEV,
                        "error attaching hardware handler",
                    ));
                }
                let pargs: Vec<String> = (0..nargs)
                    .map(|_| a.shift().unwrap_or_default().to_string())
                    .collect();
                sel.add_path(&pargs).map_err(inval)?;
                members.push(paths.len());
                states.push(PathState {
                    active: true,
                    fail_count: 0,
                    pg,
                    local,
                });
                paths.push(PathDev {
                    dev: h.dev.clone(),
                    id: h.id.clone(),
                    spec,
                    _h: h,
                });
            }
            pgs.push(Pg {
                sel,
                paths: members,
                bypassed: false,
            });
            next = next.wrapping_sub(1);
            if next == 0 {
                next_pg = Some(pg);
            }
        }
        if pgs.len() != nr_pgs as usize {
            return Err(inval("priority group count mismatch"));
        }
        // The kernel's `dm_table_device_name`: the device's `major:minor`.
        let name = ctx
            .owner()
            .map(|o| o.to_string())
            .unwrap_or_else(|| "multipath".into());
        let published = Arc::new(MultipathPaths {
            paths: paths
                .iter()
                .map(|p| (p.id.clone(), p.spec.clone(), p.dev.clone()))
                .collect(),
        });
        let publication = ctx.publish(&published).ok();
        let shared = Arc::new(Shared {
            m: Mutex::new(M {
                nr_valid: paths.len(),
                pgs,
                paths: states,
                queue_io: true,
                queue_if_no_path: qinp,
                saved_queue_if_no_path: false,
                current_pg: None,
                current_path: None,
                next_pg,
                pg_init_count: 0,
                queued: Vec::new(),
                suspended: false,
            }),
            paths,
            retain_hw: retain,
            bio_mode,
            pg_init_retries: retries,
            pg_init_delay: delay,
            name,
            event: ctx.event_trigger(),
            requeue: ctx.requeuer(),
            dstate: ctx.device_state(),
        });
        Ok(Box::new(MultipathTarget {
            shared,
            _published: published,
            _publication: publication,
        }))
    }
}

/// One `multipath` table (a singleton).
pub struct MultipathTarget {
    shared: Arc<Shared>,
    _published: Arc<MultipathPaths>,
    _publication: Option<Publication>,
}

impl Target for MultipathTarget {
    fn map(&self, bio: Bio) -> MapResult {
        self.shared.dispatch(bio).unwrap_or(MapResult::Submitted)
    }

    fn status(&self, ty: StatusType, _flags: StatusFlags) -> String {
        let s = &self.shared;
        let m = s.m.lock();
        let mut o = String::new();
        match ty {
            StatusType::Info => {
                o.push_str(&format!("2 {} {} ", m.queue_io as u32, m.pg_init_count));
            }
            StatusType::Table => {
                let n = m.queue_if_no_path as u32
                    + (s.pg_init_retries > 0) as u32 * 2
                    + s.pg_init_delay.is_some() as u32 * 2
                    + s.retain_hw as u32
                    + s.bio_mode as u32 * 2;
                o.push_str(&format!("{n} "));
                if m.queue_if_no_path {
                    o.push_str("queue_if_no_path ");
                }
                if s.pg_init_retries > 0 {
                    o.push_str(&format!("pg_init_retries {} ", s.pg_init_retries));
                }
                if let Some(d) = s.pg_init_delay {
                    o.push_str(&format!("pg_init_delay_msecs {d} "));
                }
                if s.retain_hw {
                    o.push_str("retain_attached_hw_handler ");
                }
                if s.bio_mode {
                    o.push_str("queue_mode bio ");
                }
            }
        }
        o.push_str("0 ");
        let pg_num = m
            .next_pg
            .or(m.current_pg)
            .map(|p| p + 1)
            .unwrap_or(if m.pgs.is_empty() { 0 } else { 1 });
        o.push_str(&format!("{} {pg_num} ", m.pgs.len()));
        for (i, pg) in m.pgs.iter().enumerate() {
            match ty {
                StatusType::Info => {
                    let state = if pg.bypassed {
                        'D'
                    } else if m.current_pg == Some(i) {
                        'A'
                    } else {
                        'E'
                    };
                    o.push_str(&format!("{state} "));
                }
                StatusType::Table => o.push_str(&format!("{} ", pg.sel.name())),
            }
            o.push_str(&pg.sel.status_group());
            let nargs = match ty {
                StatusType::Info => pg.sel.info_args(),
                StatusType::Table => pg.sel.table_args(),
            };
            o.push_str(&format!("{} {nargs} ", pg.paths.len()));
            for (local, &p) in pg.paths.iter().enumerate() {
                let id = udm_core::escape_arg(&s.paths[p].id.to_string()).into_owned();
                match ty {
                    StatusType::Info => {
                        let st = &m.paths[p];
                        let a = if st.active { "A" } else { "F" };
                        o.push_str(&format!("{id} {a} {} ", st.fail_count));
                    }
                    StatusType::Table => o.push_str(&format!("{id} ")),
                }
                o.push_str(&pg.sel.status_path(local, ty));
            }
        }
        o
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        let s = &self.shared;
        let fail = |msg: String| {
            klog::warn(PREFIX, &msg);
            Err(TargetError::invalid(msg))
        };
        if s.m.lock().suspended {
            return Err(TargetError::with_errno(libc::EBUSY, "device is suspended"));
        }
        let cmd = argv[0].to_ascii_lowercase();
        if argv.len() == 1 {
            match cmd.as_str() {
                "queue_if_no_path" => {
                    s.set_queue_if_no_path(true, false);
                    return Ok(None);
                }
                "fail_if_no_path" => {
                    s.set_queue_if_no_path(false, false);
                    return Ok(None);
                }
                _ => {}
            }
        }
        if argv.len() != 2 {
            return fail(format!(
                "Invalid multipath message arguments. Expected 2 arguments, got {}.",
                argv.len()
            ));
        }
        let pg_arg = |what: &str| -> Result<usize, TargetError> {
            let n = s.m.lock().pgs.len();
            match scan_u32(&argv[1]) {
                Some(v) if v > 0 && (v as usize) <= n => Ok(v as usize - 1),
                _ => {
                    let msg = format!("invalid PG number supplied to {what}");
                    klog::warn(PREFIX, &msg);
                    Err(TargetError::invalid(msg))
                }
            }
        };
        match cmd.as_str() {
            "disable_group" | "enable_group" => {
                let pg = pg_arg("bypass_pg")?;
                let mut m = s.m.lock();
                m.pgs[pg].bypassed = cmd == "disable_group";
                m.current_path = None;
                m.current_pg = None;
                drop(m);
                (s.event)();
            }
            "switch_group" => {
                let pg = pg_arg("switch_pg_num")?;
                let mut m = s.m.lock();
                for g in m.pgs.iter_mut() {
                    g.bypassed = false;
                }
                m.current_path = None;
                m.current_pg = None;
                m.next_pg = Some(pg);
                drop(m);
                (s.event)();
            }
            "fail_path" | "reinstate_path" => {
                let found = s.find(&argv[1]);
                if found.is_empty() {
                    return fail(format!("message: error getting device {}", argv[1]));
                }
                for p in found {
                    if cmd == "fail_path" {
                        s.fail_path(p);
                    } else {
                        s.reinstate_path(p);
                    }
                }
            }
            _ => {
                return fail(format!(
                    "Unrecognised multipath message received: {}",
                    argv[0]
                ))
            }
        }
        Ok(None)
    }

    fn presuspend(&self) {
        let s = &self.shared;
        if s.bio_mode || !s.dstate.noflush_suspending() {
            s.set_queue_if_no_path(false, true);
        }
        let q = std::mem::take(&mut s.m.lock().queued);
        for b in q {
            // Still queued: hand back to the device (noflush) or fail.
            if s.dstate.noflush_suspending() {
                s.requeue.requeue(b);
            } else {
                b.complete(Err(IoError::Io));
            }
        }
    }

    fn postsuspend(&self) {
        self.shared.m.lock().suspended = true;
    }

    fn presuspend_undo(&self) {
        self.resume();
    }

    fn resume(&self) {
        let s = &self.shared;
        {
            let mut m = s.m.lock();
            m.suspended = false;
            if m.saved_queue_if_no_path {
                m.queue_if_no_path = true;
                m.saved_queue_if_no_path = false;
            }
        }
        s.run_queue();
    }
}

impl MultipathTarget {
    /// Paths as `(id, active, fail count)` in table order (for tests and the checker).
    pub fn path_states(&self) -> Vec<(DevId, bool, u32)> {
        let m = self.shared.m.lock();
        self.shared
            .paths
            .iter()
            .zip(&m.paths)
            .map(|(p, s)| (p.id.clone(), s.active, s.fail_count))
            .collect()
    }
}
