//! Path selectors of a priority group: `round-robin`, `queue-length`, `service-time` and
//! `historical-service-time`, with the kernel's arguments, choices and status fields.
//! Paths are numbered within their group (0..n) in table order.

use crate::kscan::scan_u32;
use std::collections::VecDeque;
use std::time::Instant;
use udm_core::{klog, StatusType};

/// A path selector instance (one per priority group).
pub trait Selector: Send {
    fn name(&self) -> &'static str;
    /// Words each path takes in the table / shows in the status.
    fn table_args(&self) -> u32;
    fn info_args(&self) -> u32;
    /// Add the next path with its per-path arguments; the error is the kernel's text.
    fn add_path(&mut self, args: &[String]) -> Result<(), &'static str>;
    /// The path for an I/O of `bytes`.
    fn select(&mut self, bytes: u64) -> Option<usize>;
    fn fail_path(&mut self, i: usize);
    fn reinstate_path(&mut self, i: usize);
    fn start_io(&mut self, _i: usize, _bytes: u64) {}
    fn end_io(&mut self, _i: usize, _bytes: u64, _start: Instant) {}
    /// The group's selector status (`<#args> <args>... `), with its trailing space.
    fn status_group(&self) -> String {
        "0 ".into()
    }
    /// One path's selector fields, each followed by a space.
    fn status_path(&self, i: usize, ty: StatusType) -> String;
}

/// The selectors udm knows, by table name.
pub const NAMES: &[&str] = &[
    "round-robin",
    "queue-length",
    "service-time",
    "historical-service-time",
];

/// Make a selector from its name and constructor arguments. `Err(None)`: no such type;
/// `Err(Some(()))`: its constructor refused the arguments.
pub fn create(name: &str, args: &[String]) -> Result<Box<dyn Selector>, Option<()>> {
    Ok(match name {
        "round-robin" => Box::new(Listed::new(Kind::RoundRobin)),
        "queue-length" => Box::new(Listed::new(Kind::QueueLength)),
        "service-time" => Box::new(Listed::new(Kind::ServiceTime)),
        "historical-service-time" => {
            if args.len() > 2 {
                return Err(Some(()));
            }
            let base = match args.first() {
                Some(a) => scan_u32(a).filter(|&b| b < 1024).ok_or(Some(()))?,
                None => 972,
            };
            let mult = match args.get(1) {
                Some(a) => scan_u32(a).ok_or(Some(()))?,
                None => 0,
            };
            let mut l = Listed::new(Kind::Historical);
            l.base = base;
            l.mult = mult;
            Box::new(l)
        }
        _ => return Err(None),
    })
}

/// historical-service-time: service times are bucketed by `ns >> 24` (~16 ms), 64 buckets.
const HST_BUCKET_SHIFT: u64 = 24;
const HST_WEIGHT_COUNT: u64 = 64;

/// `x^n` in 10-bit fixed point, rounding at each step as the kernel's `fixed_power`.
fn fixed_power(mut x: u64, mut n: u64) -> u64 {
    let mut r = 1u64 << 10;
    while n > 0 {
        if n & 1 == 1 {
            r = (r * x + 512) >> 10;
        }
        n >>= 1;
        if n > 0 {
            x = (x * x + 512) >> 10;
        }
    }
    r
}

/// The weight of the old estimate for a service time in `bucket` (the last bucket: 0).
fn hst_weight(base: u64, bucket: u64) -> u64 {
    if bucket >= HST_WEIGHT_COUNT - 1 {
        0
    } else {
        fixed_power(base, bucket + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    RoundRobin,
    QueueLength,
    ServiceTime,
    Historical,
}

#[derive(Default, Clone)]
struct PathInfo {
    repeat: u32,
    /// service-time: relative throughput 0..=100.
    throughput: u32,
    /// I/Os (queue-length, historical) or bytes (service-time) in flight.
    in_flight: u64,
    /// historical: service time estimate (10-bit fixed point, ns).
    hst: u64,
    last_finish: u64,
    stale_after: u64,
}

/// All four selectors keep a valid list (most preferred first) and a failed list, as the
/// kernel's do; they differ in how they pick from the valid list.
struct Listed {
    kind: Kind,
    paths: Vec<PathInfo>,
    valid: VecDeque<usize>,
    base: u32,
    mult: u32,
    epoch: Instant,
}

impl Listed {
    fn new(kind: Kind) -> Listed {
        Listed {
            kind,
            paths: Vec::new(),
            valid: VecDeque::new(),
            base: 972,
            mult: 0,
            epoch: Instant::now(),
        }
    }
    fn move_tail(&mut self, i: usize) {
        self.valid.retain(|&x| x != i);
        self.valid.push_back(i);
    }
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
    /// service-time's load comparison for an I/O of `bytes`: <0 when `a` is better.
    fn st_compare(&self, a: usize, b: usize, bytes: u64) -> i128 {
        let (pa, pb) = (&self.paths[a], &self.paths[b]);
        let (s1, s2) = (pa.in_flight as i128, pb.in_flight as i128);
        let (t1, t2) = (pa.throughput as i128, pb.throughput as i128);
        // Same throughput: the less loaded path.
        if t1 == t2 {
            return s1 - s2;
        }
        // Same load, or a path without throughput: the faster path.
        if s1 == s2 || t1 == 0 || t2 == 0 {
            return t2 - t1;
        }
        // The shorter estimated service time for this I/O, then the faster path.
        let (st1, st2) = ((s1 + bytes as i128) * t2, (s2 + bytes as i128) * t1);
        if st1 != st2 {
            return st1 - st2;
        }
        t2 - t1
    }
    fn hst_compare(&self, a: usize, b: usize, now: u64) -> i128 {
        let (pa, pb) = (&self.paths[a], &self.paths[b]);
        let (h1, h2) = (pa.hst as i128, pb.hst as i128);
        let (o1, o2) = (pa.in_flight as i128, pb.in_flight as i128);
        let (s1, s2) = (pa.stale_after as i128, pb.stale_after as i128);
        let now = now as i128;
        let m = self.mult as i128;
        let over = if h1 > h2 { h1 > m * h2 } else { h2 > m * h1 };
        if !over {
            return o1 - o2;
        }
        if (o1 == 0 && s1 < now) || (o2 == 0 && s2 < now) || (o1 == 0 && o2 == 0) {
            return (o2 == 0) as i128 * s1 - (o1 == 0) as i128 * s2;
        }
        let b_better = if o1 == o2 {
            h1 > h2
        } else {
            (1 + o1) * h1 > (1 + o2) * h2
        };
        if b_better {
            if s2 < now {
                return o1 - o2;
            }
            return 1;
        }
        if s1 < now {
            return o1 - o2;
        }
        -1
    }
}

impl Selector for Listed {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::RoundRobin => "round-robin",
            Kind::QueueLength => "queue-length",
            Kind::ServiceTime => "service-time",
            Kind::Historical => "historical-service-time",
        }
    }
    fn table_args(&self) -> u32 {
        match self.kind {
            Kind::ServiceTime => 2,
            _ => 1,
        }
    }
    fn info_args(&self) -> u32 {
        match self.kind {
            Kind::RoundRobin => 0,
            Kind::QueueLength => 1,
            Kind::ServiceTime => 2,
            Kind::Historical => 3,
        }
    }
    fn add_path(&mut self, args: &[String]) -> Result<(), &'static str> {
        let max = if self.kind == Kind::ServiceTime { 2 } else { 1 };
        let (nargs, badrep): (&'static str, &'static str) = match self.kind {
            Kind::RoundRobin => (
                "round-robin ps: incorrect number of arguments",
                "round-robin ps: invalid repeat count",
            ),
            Kind::QueueLength => (
                "queue-length ps: incorrect number of arguments",
                "queue-length ps: invalid repeat count",
            ),
            Kind::ServiceTime => (
                "service-time ps: incorrect number of arguments",
                "service-time ps: invalid repeat count",
            ),
            Kind::Historical => (
                "historical-service-time ps: incorrect number of arguments",
                "historical-service-time ps: invalid repeat count",
            ),
        };
        if args.len() > max {
            return Err(nargs);
        }
        let mut repeat = 1;
        if let Some(a) = args.first() {
            repeat = scan_u32(a).ok_or(badrep)?;
        }
        let mut throughput = 1;
        if let Some(a) = args.get(1) {
            throughput = scan_u32(a)
                .filter(|&t| t <= 100)
                .ok_or("service-time ps: invalid relative_throughput value")?;
        }
        if repeat > 1 && self.kind != Kind::Historical {
            // As the kernel logs it: under the selector module's prefix.
            klog::warn(
                &format!("multipath {}", self.name()),
                "repeat_count > 1 is deprecated, using 1 instead",
            );
            repeat = 1;
        }
        let i = self.paths.len();
        self.paths.push(PathInfo {
            repeat,
            throughput,
            hst: 1024,
            ..PathInfo::default()
        });
        self.valid.push_back(i);
        Ok(())
    }
    fn select(&mut self, bytes: u64) -> Option<usize> {
        if self.valid.is_empty() {
            return None;
        }
        let best = match self.kind {
            Kind::RoundRobin => *self.valid.front()?,
            Kind::QueueLength => {
                // The preferred (first) path goes last, to balance equal queues.
                let f = self.valid.pop_front()?;
                self.valid.push_back(f);
                let mut best = None::<usize>;
                for &p in &self.valid {
                    if best.is_none_or(|b| self.paths[p].in_flight < self.paths[b].in_flight) {
                        best = Some(p);
                    }
                    if best.is_some_and(|b| self.paths[b].in_flight == 0) {
                        break;
                    }
                }
                return best;
            }
            Kind::ServiceTime => {
                let mut best = None::<usize>;
                for &p in &self.valid {
                    if best.is_none_or(|b| self.st_compare(p, b, bytes) < 0) {
                        best = Some(p);
                    }
                }
                best?
            }
            Kind::Historical => {
                let now = self.now_ns();
                let mut best = None::<usize>;
                for &p in &self.valid {
                    if best.is_none_or(|b| self.hst_compare(p, b, now) < 0) {
                        best = Some(p);
                    }
                }
                best?
            }
        };
        self.move_tail(best);
        Some(best)
    }
    fn fail_path(&mut self, i: usize) {
        self.valid.retain(|&x| x != i);
    }
    fn reinstate_path(&mut self, i: usize) {
        if self.valid.contains(&i) {
            return;
        }
        // round-robin puts a reinstated path first, the others last.
        if self.kind == Kind::RoundRobin {
            self.valid.push_front(i);
        } else {
            self.valid.push_back(i);
        }
    }
    fn start_io(&mut self, i: usize, bytes: u64) {
        self.paths[i].in_flight += if self.kind == Kind::ServiceTime {
            bytes
        } else {
            1
        };
    }
    fn end_io(&mut self, i: usize, bytes: u64, start: Instant) {
        let d = if self.kind == Kind::ServiceTime {
            bytes
        } else {
            1
        };
        let now = self.now_ns();
        let valid = self.valid.len() as u64;
        let base = self.base as u64;
        let p = &mut self.paths[i];
        p.in_flight = p.in_flight.saturating_sub(d);
        if self.kind == Kind::Historical {
            // A request that started before the previous one finished counts from then.
            let start_ns = start.saturating_duration_since(self.epoch).as_nanos() as u64;
            let st = now.saturating_sub(start_ns.max(p.last_finish));
            p.last_finish = now;
            // Time-weighted moving average in 10-bit fixed point: the weight of the old
            // estimate is base^(n+1) for a service time in the n-th ~16 ms bucket.
            let weight = hst_weight(base, (st >> HST_BUCKET_SHIFT).min(HST_WEIGHT_COUNT - 1));
            let next = st.saturating_mul(1024).min(u64::MAX >> 10);
            p.hst = (p.hst as u128 * weight as u128 + next as u128 * (1024 - weight) as u128 + 512)
                .min(u64::MAX as u128 >> 10) as u64
                >> 10;
            p.stale_after = p.last_finish + valid * (p.hst >> 10);
        }
    }
    fn status_group(&self) -> String {
        match self.kind {
            Kind::Historical => format!("2 {} {} ", self.base, self.mult),
            _ => "0 ".into(),
        }
    }
    fn status_path(&self, i: usize, ty: StatusType) -> String {
        let p = &self.paths[i];
        match (self.kind, ty) {
            (Kind::RoundRobin, StatusType::Info) => String::new(),
            (Kind::RoundRobin, StatusType::Table) => format!("{} ", p.repeat),
            (Kind::QueueLength, StatusType::Info) => format!("{} ", p.in_flight),
            (Kind::QueueLength, StatusType::Table) => format!("{} ", p.repeat),
            (Kind::ServiceTime, StatusType::Info) => {
                format!("{} {} ", p.in_flight, p.throughput)
            }
            (Kind::ServiceTime, StatusType::Table) => format!("{} {} ", p.repeat, p.throughput),
            (Kind::Historical, StatusType::Info) => {
                format!("{} {} {} ", p.hst, p.in_flight, p.stale_after)
            }
            (Kind::Historical, StatusType::Table) => "0 ".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn round_robin_rotates_over_valid_paths() {
        let mut s = create("round-robin", &[]).unwrap();
        for _ in 0..3 {
            s.add_path(&w("1000")).unwrap();
        }
        assert_eq!(s.status_path(0, StatusType::Table), "1 ");
        let picks: Vec<_> = (0..4).map(|_| s.select(4096).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0]);
        s.fail_path(1);
        let picks: Vec<_> = (0..4).map(|_| s.select(4096).unwrap()).collect();
        assert_eq!(picks, [2, 0, 2, 0]);
        s.reinstate_path(1);
        assert!((0..3).any(|_| s.select(1) == Some(1)));
        assert_eq!(
            s.add_path(&w("1 2")).unwrap_err(),
            "round-robin ps: incorrect number of arguments"
        );
    }

    #[test]
    fn queue_length_and_service_time_pick_the_least_loaded() {
        let mut q = create("queue-length", &[]).unwrap();
        q.add_path(&[]).unwrap();
        q.add_path(&[]).unwrap();
        q.start_io(0, 1);
        q.start_io(0, 1);
        assert_eq!(q.select(1), Some(1));
        assert_eq!(q.status_path(0, StatusType::Info), "2 ");
        let mut s = create("service-time", &[]).unwrap();
        s.add_path(&w("1 1")).unwrap();
        s.add_path(&w("1 4")).unwrap();
        s.start_io(1, 8192);
        // 8192+x over throughput 4 beats x over throughput 1 for big enough x.
        assert_eq!(s.select(65536), Some(1));
        assert_eq!(s.status_path(1, StatusType::Info), "8192 4 ");
        assert_eq!(
            s.add_path(&w("1 101")).unwrap_err(),
            "service-time ps: invalid relative_throughput value"
        );
        let h = create("historical-service-time", &[]).unwrap();
        assert_eq!(h.status_group(), "2 972 0 ");
        assert!(create("historical-service-time", &w("1024")).is_err());
        assert_eq!(fixed_power(972, 1), 972);
        assert_eq!(fixed_power(512, 2), 256);
        assert_eq!(hst_weight(972, 63), 0);
        assert!(matches!(create("nope", &[]), Err(None)));
    }
}
