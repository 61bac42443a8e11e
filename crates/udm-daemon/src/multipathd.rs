//! The multipathd role: a path checker thread per multipath device that fails and
//! reinstates paths through the target's messages, with multipath.conf's `no_path_retry`
//! and `failback` semantics.
//!
//! A supervisor thread looks for devices whose live table is a `multipath` target (it
//! publishes its paths, `udm_targets::multipath::MultipathPaths`) and starts one checker
//! per device; a checker ends when its device goes away or loses its multipath table. Each
//! poll (`polling_interval`, 1 s by default) checks every path by reading its first block
//! within `checker_timeout` (`directio`); an `nbd://` path whose remote device knows it is
//! disconnected fails without a read. A path that fails the check while the target uses it gets
//! `fail_path`; one that passes while failed gets `reinstate_path`.
//!
//! Configuration (`udm daemon --multipath-conf FILE`), a subset of multipath.conf's
//! `defaults` section (also accepted without the braces):
//!
//! ```text
//! defaults {
//!     polling_interval 1        # seconds between checks (fractions allowed)
//!     checker_timeout 0.5       # a check slower than this fails (seconds)
//!     path_checker directio     # directio | readsector0 (the same here) | none
//!     no_path_retry queue       # queue | fail | N (polls to keep queueing, then fail)
//!     failback immediate        # immediate | manual
//! }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_core::{DevSel, Registry, StatusType, DM_MAJOR};
use udm_io::{Bio, BlockDevice, DevId, IoBuf, Sectors};
use udm_targets::multipath::topology;
use udm_targets::multipath::MultipathPaths;

/// What to do when the last path of a device fails (`no_path_retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPathRetry {
    /// Fail I/O at once (`fail_if_no_path`).
    Fail,
    /// Queue I/O until a path comes back (`queue_if_no_path`).
    Queue,
    /// Queue for this many polls, then fail.
    Polls(u32),
}

/// When a path of a better (lower-numbered) group comes back (`failback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failback {
    /// Switch back to that group at once.
    Immediate,
    /// Stay on the current group.
    Manual,
}

/// How paths are checked (`path_checker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathChecker {
    Directio,
    /// No checks: paths change only by messages and I/O errors.
    None,
}

/// The checker's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MultipathdConfig {
    pub enabled: bool,
    pub polling_interval: Duration,
    pub checker_timeout: Duration,
    pub checker: PathChecker,
    /// `None`: leave the table's queueing as it is.
    pub no_path_retry: Option<NoPathRetry>,
    pub failback: Failback,
}

impl Default for MultipathdConfig {
    fn default() -> Self {
        MultipathdConfig {
            enabled: true,
            polling_interval: Duration::from_secs(1),
            checker_timeout: Duration::from_millis(500),
            checker: PathChecker::Directio,
            no_path_retry: None,
            failback: Failback::Manual,
        }
    }
}

fn secs(v: &str, key: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| (0.01..=3600.0).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{key} {v}: expected seconds (0.01 to 3600)"))
}

impl MultipathdConfig {
    /// Read multipath.conf-style text (see the module documentation).
    pub fn parse(text: &str) -> Result<MultipathdConfig, String> {
        let mut c = MultipathdConfig::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() || line == "}" || line.ends_with('{') {
                continue;
            }
            let mut w = line.split_whitespace();
            let (key, val) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
            let bad = |what: &str| format!("line {}: {key} {val}: {what}", n + 1);
            match key {
                "polling_interval" => c.polling_interval = secs(val, key)?,
                "checker_timeout" => c.checker_timeout = secs(val, key)?,
                "path_checker" | "checker" => {
                    c.checker = match val {
                        "directio" | "readsector0" | "tur" => PathChecker::Directio,
                        "none" => PathChecker::None,
                        _ => return Err(bad("expected directio, readsector0 or none")),
                    }
                }
                "no_path_retry" => {
                    c.no_path_retry = Some(match val {
                        "fail" => NoPathRetry::Fail,
                        "queue" => NoPathRetry::Queue,
                        n => NoPathRetry::Polls(
                            n.parse()
                                .map_err(|_| bad("expected queue, fail or a number"))?,
                        ),
                    })
                }
                "failback" => {
                    c.failback = match val {
                        "immediate" => Failback::Immediate,
                        "manual" => Failback::Manual,
                        _ => return Err(bad("expected immediate or manual")),
                    }
                }
                "multipathd" => c.enabled = val != "off" && val != "no",
                _ => return Err(bad("unknown setting")),
            }
        }
        Ok(c)
    }
}

/// The running checker threads; stop them with `stop`.
pub struct Multipathd {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Multipathd {
    /// Start the supervisor (nothing when disabled).
    pub fn start(reg: &Registry, cfg: &MultipathdConfig) -> Option<Multipathd> {
        if !cfg.enabled {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (r, c, s) = (reg.clone(), cfg.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("udm-multipathd".into())
            .spawn(move || supervise(&r, &c, &s))
            .ok()?;
        Some(Multipathd {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop every checker and wait for the supervisor.
    pub fn stop(mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn paths_of(reg: &Registry, minor: u32) -> Option<Arc<MultipathPaths>> {
    reg.published()
        .lookup::<MultipathPaths>(&DevId::Num(DM_MAJOR, minor))
}

fn supervise(reg: &Registry, cfg: &MultipathdConfig, stop: &Arc<AtomicBool>) {
    let mut checkers: HashMap<(String, u32), std::thread::JoinHandle<()>> = HashMap::new();
    let tick = cfg.polling_interval.min(Duration::from_millis(200));
    while !stop.load(SeqCst) {
        checkers.retain(|_, h| !h.is_finished());
        for d in reg.list() {
            let key = (d.name.clone(), d.minor);
            if checkers.contains_key(&key) || paths_of(reg, d.minor).is_none() {
                continue;
            }
            tracing::info!(device = %d.name, "multipathd: checking paths");
            let (r, c, s) = (reg.clone(), cfg.clone(), stop.clone());
            let name = d.name.clone();
            let minor = d.minor;
            if let Ok(h) = std::thread::Builder::new()
                .name(format!("udm-mpath-{}", d.name))
                .spawn(move || check_device(&r, &c, &s, &name, minor))
            {
                checkers.insert(key, h);
            }
        }
        std::thread::sleep(tick);
    }
    for (_, h) in checkers {
        let _ = h.join();
    }
}

/// One path's check: true when the path works.
struct PathCheck {
    /// A directio read still outstanding (a hung path is not read again until it ends).
    busy: Arc<AtomicBool>,
}

fn nbd_connected(spec: &str) -> Option<bool> {
    if !udm_nbd::remote::is_remote_spec(spec) {
        return None;
    }
    let d = udm_nbd::RemoteDevice::lookup(spec, false)
        .or_else(|| udm_nbd::RemoteDevice::lookup(spec, true))?;
    Some(d.connected())
}

impl PathCheck {
    fn check(&self, spec: &str, dev: &Arc<dyn BlockDevice>, cfg: &MultipathdConfig) -> bool {
        // A remote known to be down fails at once; a connected one is read as any path
        // (an idle connection to a dead server is only noticed by using it).
        if nbd_connected(spec) == Some(false) {
            return false;
        }
        if self.busy.load(SeqCst) {
            return false;
        }
        let len = dev.limits().logical_block_size.max(512) as usize;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let busy = self.busy.clone();
        busy.store(true, SeqCst);
        dev.submit(Bio::read(
            Sectors(0),
            IoBuf::zeroed(len),
            Box::new(move |r, _| {
                busy.store(false, SeqCst);
                let _ = tx.send(r.is_ok());
            }),
        ));
        rx.recv_timeout(cfg.checker_timeout).unwrap_or(false)
    }
}

fn send(reg: &Registry, name: &str, argv: &[&str]) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    match reg.message(&DevSel::Name(name.to_string()), 0, &argv) {
        Ok(_) => tracing::info!(device = name, "multipathd: {}", argv.join(" ")),
        Err(e) => tracing::warn!(device = name, "multipathd: {}: {e}", argv.join(" ")),
    }
}

fn topology(reg: &Registry, name: &str) -> Option<topology::Topology> {
    let sel = DevSel::Name(name.to_string());
    let (_, t) = reg.status(&sel, false, StatusType::Table).ok()?;
    let (_, s) = reg.status(&sel, false, StatusType::Info).ok()?;
    let (t, s) = (t.first()?, s.first()?);
    if t.ttype != "multipath" {
        return None;
    }
    topology::parse(&t.params, &s.params).ok()
}

/// The checker loop of one device.
fn check_device(
    reg: &Registry,
    cfg: &MultipathdConfig,
    stop: &Arc<AtomicBool>,
    name: &str,
    minor: u32,
) {
    let mut checks: Vec<PathCheck> = Vec::new();
    // Polls with no path left, and whether queueing was turned off after them.
    let mut down_polls = 0u32;
    let mut gave_up = false;
    let mut next = Instant::now();
    while !stop.load(SeqCst) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        next = now + cfg.polling_interval;
        match reg.info(&DevSel::Name(name.to_string()), false) {
            Ok(i) if i.minor == minor => {}
            _ => return,
        }
        let Some(paths) = paths_of(reg, minor) else {
            return;
        };
        let Some(topo) = topology(reg, name) else {
            continue;
        };
        let states: Vec<(usize, bool)> = topo
            .groups
            .iter()
            .enumerate()
            .flat_map(|(g, grp)| grp.paths.iter().map(move |p| (g, p.active)))
            .collect();
        if states.len() != paths.paths.len() {
            continue;
        }
        checks.resize_with(paths.paths.len(), || PathCheck {
            busy: Arc::new(AtomicBool::new(false)),
        });
        let mut valid = 0;
        let mut back_in = Vec::new();
        for (i, (id, spec, dev)) in paths.paths.iter().enumerate() {
            let (group, active) = states[i];
            let ok = match cfg.checker {
                PathChecker::None => active,
                PathChecker::Directio => checks[i].check(spec, dev, cfg),
            };
            let id = id.to_string();
            if !ok && active {
                send(reg, name, &["fail_path", &id]);
            } else if ok && !active {
                send(reg, name, &["reinstate_path", &id]);
                back_in.push(group);
            }
            valid += ok as usize;
        }
        match cfg.no_path_retry {
            Some(NoPathRetry::Fail) if valid == 0 && down_polls == 0 => {
                send(reg, name, &["fail_if_no_path"]);
            }
            Some(NoPathRetry::Queue) if valid == 0 && down_polls == 0 => {
                send(reg, name, &["queue_if_no_path"]);
            }
            Some(NoPathRetry::Polls(n)) if valid == 0 => {
                if down_polls == 0 {
                    send(reg, name, &["queue_if_no_path"]);
                }
                if down_polls >= n && !gave_up {
                    send(reg, name, &["fail_if_no_path"]);
                    gave_up = true;
                }
            }
            Some(NoPathRetry::Polls(_) | NoPathRetry::Queue) if valid > 0 && gave_up => {
                send(reg, name, &["queue_if_no_path"]);
                gave_up = false;
            }
            _ => {}
        }
        down_polls = if valid == 0 { down_polls + 1 } else { 0 };
        if cfg.failback == Failback::Immediate {
            let active = topo.groups.iter().position(|g| g.state == 'A');
            if let (Some(best), Some(cur)) = (back_in.iter().min(), active) {
                if *best < cur {
                    send(reg, name, &["switch_group", &(best + 1).to_string()]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_multipath_conf_defaults() {
        let c = MultipathdConfig::parse(
            "# udm\ndefaults {\n  polling_interval 0.2\n  no_path_retry 3\n  failback immediate\n  path_checker readsector0 # same\n}\n",
        )
        .unwrap();
        assert_eq!(c.polling_interval, Duration::from_millis(200));
        assert_eq!(c.no_path_retry, Some(NoPathRetry::Polls(3)));
        assert_eq!(c.failback, Failback::Immediate);
        assert_eq!(c.checker, PathChecker::Directio);
        assert_eq!(
            MultipathdConfig::parse("").unwrap(),
            MultipathdConfig::default()
        );
        assert!(MultipathdConfig::parse("no_path_retry maybe").is_err());
        assert!(MultipathdConfig::parse("polling_interval 0").is_err());
        assert!(MultipathdConfig::parse("colour blue").is_err());
        assert!(!MultipathdConfig::parse("multipathd off").unwrap().enabled);
    }
}
