//! Per-device I/O counters as the kernel keeps them: whole-device counters in the
//! `/proc/diskstats` layout, and dm-stats regions (`@stats_create`, `@stats_list`,
//! `@stats_print`, `@stats_print_clear`, `@stats_clear`, `@stats_delete`, `@stats_set_aux`)
//! split into areas, with the kernel's message syntax and output.

use crate::error::DmError;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
use udm_io::{Bio, IoError, Op};

/// Which counter set a bio goes to: read, write, discard, flush (the diskstats groups).
fn group(op: Op) -> usize {
    match op {
        Op::Read => 0,
        Op::Write | Op::WriteZeroes => 1,
        Op::Discard => 2,
        Op::Flush => 3,
        // An op added later: counted with the writes when it changes data, else the reads.
        op if op.is_write() => 1,
        _ => 0,
    }
}

/// Busy-time bookkeeping, updated at every start and end (the kernel's `update_io_ticks`).
#[derive(Default)]
struct Busy {
    in_flight: u64,
    in_flight_rw: [u64; 2],
    stamp: Option<Instant>,
    /// Time with at least one I/O in flight, and the in-flight-weighted time, in µs.
    io_ticks: u64,
    time_in_queue: u64,
    io_ticks_rw: [u64; 2],
}

impl Busy {
    fn tick(&mut self, now: Instant) {
        if let Some(s) = self.stamp {
            let d = now.saturating_duration_since(s).as_micros() as u64;
            if self.in_flight > 0 {
                self.io_ticks += d;
                self.time_in_queue += d * self.in_flight;
            }
            for g in 0..2 {
                if self.in_flight_rw[g] > 0 {
                    self.io_ticks_rw[g] += d;
                }
            }
        }
        self.stamp = Some(now);
    }
}

/// One set of counters (a device, or one area of a region).
#[derive(Default)]
pub struct Counters {
    ios: [AtomicU64; 4],
    sectors: [AtomicU64; 4],
    /// Summed I/O durations, µs.
    ticks: [AtomicU64; 4],
    busy: Mutex<Busy>,
}

/// A point-in-time copy of `Counters` (times in milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub ios: [u64; 4],
    pub sectors: [u64; 4],
    pub ticks_ms: [u64; 4],
    pub in_flight: u64,
    pub io_ticks_ms: u64,
    pub time_in_queue_ms: u64,
    pub io_ticks_rw_ms: [u64; 2],
}

impl Counters {
    fn start(&self, g: usize, now: Instant) {
        let mut b = self.busy.lock();
        b.tick(now);
        b.in_flight += 1;
        if g < 2 {
            b.in_flight_rw[g] += 1;
        }
    }
    fn end(&self, g: usize, sectors: u64, took: u64, now: Instant) {
        self.ios[g].fetch_add(1, Relaxed);
        self.sectors[g].fetch_add(sectors, Relaxed);
        self.ticks[g].fetch_add(took, Relaxed);
        let mut b = self.busy.lock();
        b.tick(now);
        b.in_flight = b.in_flight.saturating_sub(1);
        if g < 2 {
            b.in_flight_rw[g] = b.in_flight_rw[g].saturating_sub(1);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut b = self.busy.lock();
        b.tick(Instant::now());
        let ms = |us: u64| us / 1000;
        Snapshot {
            ios: std::array::from_fn(|i| self.ios[i].load(Relaxed)),
            sectors: std::array::from_fn(|i| self.sectors[i].load(Relaxed)),
            ticks_ms: std::array::from_fn(|i| ms(self.ticks[i].load(Relaxed))),
            in_flight: b.in_flight,
            io_ticks_ms: ms(b.io_ticks),
            time_in_queue_ms: ms(b.time_in_queue),
            io_ticks_rw_ms: [ms(b.io_ticks_rw[0]), ms(b.io_ticks_rw[1])],
        }
    }

    /// Zero everything but what is in flight.
    fn clear(&self) {
        for a in self.ios.iter().chain(&self.sectors).chain(&self.ticks) {
            a.store(0, Relaxed);
        }
        let mut b = self.busy.lock();
        let (f, rw) = (b.in_flight, b.in_flight_rw);
        *b = Busy {
            in_flight: f,
            in_flight_rw: rw,
            stamp: Some(Instant::now()),
            ..Busy::default()
        };
    }
}

impl Snapshot {
    /// The 17 fields after the name in `/proc/diskstats` (merges are always 0).
    pub fn diskstats(&self) -> String {
        let s = self;
        format!(
            "{} 0 {} {} {} 0 {} {} {} {} {} {} 0 {} {} {} {}",
            s.ios[0],
            s.sectors[0],
            s.ticks_ms[0],
            s.ios[1],
            s.sectors[1],
            s.ticks_ms[1],
            s.in_flight,
            s.io_ticks_ms,
            s.time_in_queue_ms,
            s.ios[2],
            s.sectors[2],
            s.ticks_ms[2],
            s.ios[3],
            s.ticks_ms[3]
        )
    }
}

/// A dm-stats region: `[start, start+len)` split into areas of `step` sectors.
struct Region {
    id: u32,
    start: u64,
    len: u64,
    step: u64,
    program_id: String,
    aux: Mutex<String>,
    areas: Vec<Counters>,
}

impl Region {
    /// The areas `[sector, end)` touches, with the sectors of each it covers.
    fn overlaps(&self, sector: u64, end: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
        let (s, e) = (sector.max(self.start), end.min(self.start + self.len));
        let first = if s < e {
            (s - self.start) / self.step
        } else {
            1
        };
        let last = if s < e {
            (e - 1 - self.start) / self.step
        } else {
            0
        };
        (first..=last).map(move |a| {
            let a0 = self.start + a * self.step;
            let a1 = (a0 + self.step).min(self.start + self.len);
            (a as usize, e.min(a1) - s.max(a0))
        })
    }
}

/// Everything counted for one device.
#[derive(Default)]
pub struct IoStats {
    device: Counters,
    regions: ArcSwap<Vec<Arc<Region>>>,
    next_id: Mutex<u32>,
}

/// What `start` noted about a bio, handed back to `end`.
pub struct Acct {
    g: usize,
    sector: u64,
    len: u64,
    t0: Instant,
    regions: Arc<Vec<Arc<Region>>>,
}

impl IoStats {
    /// A bio enters the device.
    pub fn start(&self, bio: &Bio) -> Acct {
        self.start_range(bio.op, bio.sector.0, bio.len().0)
    }

    /// An I/O of `len` sectors at `sector` that is no bio (a zero-copy read) enters the device.
    pub fn start_range(&self, op: Op, sector: u64, len: u64) -> Acct {
        let now = Instant::now();
        let g = group(op);
        self.device.start(g, now);
        let regions = self.regions.load_full();
        for r in regions.iter() {
            for (a, _) in r.overlaps(sector, sector + len.max(1)) {
                r.areas[a].start(g, now);
            }
        }
        Acct {
            g,
            sector,
            len,
            t0: now,
            regions,
        }
    }

    /// The bio ended (errors count too, as in the kernel).
    pub fn end(&self, a: Acct, _res: &Result<(), IoError>) {
        let now = Instant::now();
        let took = now.saturating_duration_since(a.t0).as_micros() as u64;
        self.device.end(a.g, a.len, took, now);
        for r in a.regions.iter() {
            for (i, n) in r.overlaps(a.sector, a.sector + a.len.max(1)) {
                r.areas[i].end(a.g, n.min(a.len), took, now);
            }
        }
    }

    /// Whole-device counters.
    pub fn snapshot(&self) -> Snapshot {
        self.device.snapshot()
    }

    /// Handle an `@stats_*` (or udm's `@diskstats`) message for a device of `size` sectors.
    pub fn message(&self, size: u64, argv: &[String]) -> Result<String, DmError> {
        let args: Vec<&str> = argv.iter().map(|s| s.as_str()).collect();
        match args.as_slice() {
            ["@diskstats"] => Ok(self.snapshot().diskstats()),
            ["@stats_create", range, step, rest @ ..] => self.create(size, range, step, rest),
            ["@stats_delete", id] => {
                let id = parse_id(id)?;
                self.edit(|v| {
                    let n = v.len();
                    v.retain(|r| r.id != id);
                    n != v.len()
                })?;
                Ok(String::new())
            }
            ["@stats_clear", id] => {
                self.region(id)?.areas.iter().for_each(Counters::clear);
                Ok(String::new())
            }
            ["@stats_list"] => Ok(self.list(None)),
            ["@stats_list", p] => Ok(self.list(Some(p))),
            ["@stats_print", id, rest @ ..] => self.print(id, rest, false),
            ["@stats_print_clear", id, rest @ ..] => self.print(id, rest, true),
            ["@stats_set_aux", id, aux] => {
                *self.region(id)?.aux.lock() = aux.to_string();
                Ok(String::new())
            }
            _ => Err(DmError::invalid(format!(
                "Invalid parameters for message {}",
                args.first().copied().unwrap_or("")
            ))),
        }
    }

    fn create(&self, size: u64, range: &str, step: &str, rest: &[&str]) -> Result<String, DmError> {
        let bad = || DmError::invalid("Invalid parameters for message @stats_create");
        let (start, len) = if range == "-" {
            (0, size.max(1))
        } else {
            let (s, l) = range.split_once('+').ok_or_else(bad)?;
            let (s, l): (u64, u64) = (s.parse().map_err(|_| bad())?, l.parse().map_err(|_| bad())?);
            if l == 0 || s.checked_add(l).is_none_or(|e| e > size.max(1)) {
                return Err(bad());
            }
            (s, l)
        };
        let step = match step.strip_prefix('/') {
            Some(n) => {
                let n: u64 = n.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
                len.div_ceil(n).max(1)
            }
            None => step.parse().ok().filter(|&s: &u64| s > 0).ok_or_else(bad)?,
        };
        let areas = len.div_ceil(step);
        if areas > 1 << 20 {
            return Err(DmError::Errno {
                errno: libc::ENOMEM,
                msg: "too many stats areas".into(),
            });
        }
        // Optional words the kernel accepts before program_id are not supported yet.
        let (program_id, aux) = match rest {
            [] => ("-", "-"),
            [p] => (*p, "-"),
            [p, a] => (*p, *a),
            _ => return Err(bad()),
        };
        let mut next = self.next_id.lock();
        let used: Vec<u32> = self.regions.load().iter().map(|r| r.id).collect();
        let id = (0..).find(|i| !used.contains(i)).unwrap_or(*next);
        *next = id + 1;
        let r = Arc::new(Region {
            id,
            start,
            len,
            step,
            program_id: program_id.to_string(),
            aux: Mutex::new(aux.to_string()),
            areas: (0..areas).map(|_| Counters::default()).collect(),
        });
        self.edit(|v| {
            v.push(r.clone());
            v.sort_by_key(|r| r.id);
            true
        })?;
        Ok(id.to_string())
    }

    fn edit(&self, f: impl FnOnce(&mut Vec<Arc<Region>>) -> bool) -> Result<(), DmError> {
        let mut v: Vec<Arc<Region>> = self.regions.load().iter().cloned().collect();
        if !f(&mut v) {
            return Err(DmError::Errno {
                errno: libc::ENOENT,
                msg: "No such stats region".into(),
            });
        }
        self.regions.store(Arc::new(v));
        Ok(())
    }

    fn region(&self, id: &str) -> Result<Arc<Region>, DmError> {
        let id = parse_id(id)?;
        self.regions
            .load()
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or(DmError::Errno {
                errno: libc::ENOENT,
                msg: "No such stats region".into(),
            })
    }

    fn list(&self, program: Option<&str>) -> String {
        let mut out = String::new();
        for r in self.regions.load().iter() {
            if program.is_none_or(|p| p == "-" || p == r.program_id) {
                let _ = writeln!(
                    out,
                    "{}: {}+{} {} {} {}",
                    r.id,
                    r.start,
                    r.len,
                    r.step,
                    r.program_id,
                    r.aux.lock()
                );
            }
        }
        out
    }

    fn print(&self, id: &str, rest: &[&str], clear: bool) -> Result<String, DmError> {
        let r = self.region(id)?;
        let bad = || DmError::invalid("Invalid parameters for message @stats_print");
        let (first, count) = match rest {
            [] => (0, usize::MAX),
            [f, c] => (f.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        let mut out = String::new();
        for (i, a) in r.areas.iter().enumerate().skip(first).take(count) {
            let s = a.snapshot();
            let start = r.start + i as u64 * r.step;
            let len = r.step.min(r.start + r.len - start);
            let _ = writeln!(
                out,
                "{start}+{len} {} 0 {} {} {} 0 {} {} {} {} {} {} {}",
                s.ios[0],
                s.sectors[0],
                s.ticks_ms[0],
                s.ios[1],
                s.sectors[1],
                s.ticks_ms[1],
                s.in_flight,
                s.io_ticks_ms,
                s.time_in_queue_ms,
                s.io_ticks_rw_ms[0],
                s.io_ticks_rw_ms[1]
            );
            if clear {
                a.clear();
            }
        }
        Ok(out)
    }
}

fn parse_id(s: &str) -> Result<u32, DmError> {
    s.parse()
        .map_err(|_| DmError::invalid(format!("Invalid region id: {s}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use udm_io::{IoBuf, Sectors};

    fn io(st: &IoStats, bio: Bio) {
        let a = st.start(&bio);
        st.end(a, &Ok(()));
        bio.complete(Ok(()));
    }

    fn msg(st: &IoStats, words: &str) -> Result<String, DmError> {
        let v: Vec<String> = words.split(' ').map(String::from).collect();
        st.message(1000, &v)
    }

    #[test]
    fn device_counters_follow_diskstats() {
        let st = IoStats::default();
        io(
            &st,
            Bio::read(Sectors(0), IoBuf::zeroed(4096), Box::new(|_, _| {})),
        );
        io(
            &st,
            Bio::write(Sectors(8), IoBuf::zeroed(1024), Box::new(|_, _| {})),
        );
        io(
            &st,
            Bio::discard(Sectors(8), Sectors(16), Box::new(|_, _| {})),
        );
        io(&st, Bio::flush(Box::new(|_, _| {})));
        let s = st.snapshot();
        assert_eq!(s.ios, [1, 1, 1, 1]);
        assert_eq!(s.sectors, [8, 2, 16, 0]);
        assert_eq!(s.in_flight, 0);
        let f: Vec<&str> = msg(&st, "@diskstats").unwrap().leak().split(' ').collect();
        assert_eq!(f.len(), 17);
        assert_eq!(
            (f[0], f[2], f[4], f[6], f[11], f[13], f[15]),
            ("1", "8", "1", "2", "1", "16", "1")
        );
    }

    #[test]
    fn regions_split_into_areas_as_the_kernel_prints_them() {
        let st = IoStats::default();
        assert_eq!(msg(&st, "@stats_create - /4").unwrap(), "0");
        assert_eq!(msg(&st, "@stats_create 100+50 10 prog aux").unwrap(), "1");
        assert_eq!(
            msg(&st, "@stats_list").unwrap(),
            "0: 0+1000 250 - -\n1: 100+50 10 prog aux\n"
        );
        assert_eq!(
            msg(&st, "@stats_list prog").unwrap(),
            "1: 100+50 10 prog aux\n"
        );
        // A write across the first two areas of region 0.
        io(
            &st,
            Bio::write(Sectors(240), IoBuf::zeroed(20 * 512), Box::new(|_, _| {})),
        );
        let p = msg(&st, "@stats_print 0").unwrap();
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("0+250 0 0 0 0 1 0 10 "),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("250+250 0 0 0 0 1 0 10 "),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("500+250 0 0 0 0 0 0 0 "),
            "{}",
            lines[2]
        );
        assert_eq!(lines[0].split(' ').count(), 14);
        assert_eq!(msg(&st, "@stats_print 0 1 1").unwrap().lines().count(), 1);
        msg(&st, "@stats_print_clear 0").unwrap();
        assert!(msg(&st, "@stats_print 0")
            .unwrap()
            .starts_with("0+250 0 0 0 0 0 0 0 "));
        msg(&st, "@stats_set_aux 1 hello").unwrap();
        assert!(msg(&st, "@stats_list").unwrap().contains("prog hello"));
        msg(&st, "@stats_delete 0").unwrap();
        assert_eq!(
            msg(&st, "@stats_delete 0").unwrap_err().errno(),
            libc::ENOENT
        );
        assert_eq!(
            msg(&st, "@stats_create 990+20 1").unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            msg(&st, "@stats_create - /0").unwrap_err().errno(),
            libc::EINVAL
        );
        // Freed ids are reused, lowest first.
        assert_eq!(msg(&st, "@stats_create - 100").unwrap(), "0");
    }
}
