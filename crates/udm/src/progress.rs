//! Wipe progress lines as cryptsetup 2.6's tools print them (`--progress-frequency`,
//! `--progress-json`): the first report only starts the clock; later ones print at most
//! every `frequency` seconds (0: every half second, redrawn in place with a VT100 line
//! clear), the last one (`done == size`) prints the `Finished` line. `-q` silences all but
//! JSON.

use std::time::{Duration, Instant};

pub struct Progress {
    /// Seconds between lines (0: redraw every 0.5 s without a newline).
    frequency: u64,
    batch: bool,
    json: bool,
    device: String,
    start: Option<(Instant, u64)>,
    last: Instant,
}

const MIN_90: u64 = 5_400_000_000;
const HOURS_36: u64 = 129_600_000_000;

/// `12m44s`, `26h12m44s` or `03 days` for microseconds.
fn human_time(us: u64) -> String {
    let (m, s, h) = (us / 60_000_000, us / 1_000_000 % 60, us / 3_600_000_000);
    if us < MIN_90 {
        format!("{m:02}m{s:02}s")
    } else if us < HOURS_36 {
        format!("{h:02}h{:02}m{s:02}s", m % 60)
    } else {
        format!("{:02} days", us / 86_400_000_000)
    }
}

/// Bytes in the largest unit that keeps the number below 4096 of it.
fn units(b: u64) -> (u64, &'static str) {
    match b {
        b if b < 1 << 32 => (b >> 20, "MiB"),
        b if b < 1 << 42 => (b >> 30, "GiB"),
        b if b < 1 << 52 => (b >> 40, "TiB"),
        b if b < 1 << 62 => (b >> 50, "PiB"),
        b => (b >> 60, "EiB"),
    }
}

/// A speed in bytes/s scaled to B, KiB, MiB or GiB.
fn speed(uib: f64) -> (f64, &'static str) {
    if uib > 1073741824.0 {
        (uib / 1073741824.0, "GiB")
    } else if uib > 1048576.0 {
        (uib / 1048576.0, "MiB")
    } else if uib > 1024.0 {
        (uib / 1024.0, "KiB")
    } else {
        (uib, "B")
    }
}

impl Progress {
    pub fn new(frequency: u64, batch: bool, json: bool, device: &str) -> Progress {
        Progress {
            frequency,
            batch,
            json,
            device: device.to_string(),
            start: None,
            last: Instant::now(),
        }
    }

    /// Report `done` of `size` bytes written: the text to print now, if any.
    pub fn report(&mut self, size: u64, done: u64) -> Option<String> {
        if self.batch && !self.json {
            return None;
        }
        let now = Instant::now();
        let Some((t0, off0)) = self.start else {
            self.start = Some((now, done));
            self.last = now;
            return None;
        };
        let final_ = done == size;
        let every = match self.frequency {
            0 => Duration::from_millis(500),
            f => Duration::from_secs(f),
        };
        if !final_ && now.duration_since(self.last) < every {
            return None;
        }
        self.last = now;
        let tdiff = now.duration_since(t0).as_micros() as f64 / 1e6;
        if tdiff == 0.0 {
            return None;
        }
        let uib = (done - off0) as f64 / tdiff;
        let mut o = String::new();
        if self.json {
            let eta = if final_ {
                0
            } else {
                ((size as f64 / uib - tdiff) * 1e3) as u64
            };
            o = format!(
                "{{\"device\":\"{}\",\"device_bytes\":\"{done}\",\"device_size\":\"{size}\",\"speed\":\"{}\",\"eta_ms\":\"{eta}\",\"time_ms\":\"{}\"}}\n",
                self.device,
                uib as u64,
                (tdiff * 1e3) as u64
            );
        } else {
            let eta = ((size as f64 / uib - tdiff) * 1e6) as u64;
            let (sp, ustr) = speed(uib);
            if self.frequency == 0 {
                o.push_str("\x1b[2K\r");
            }
            let (n, u) = units(done);
            if final_ {
                o.push_str(&format!(
                    "Finished, time {}, {n:4} {u} written, speed {sp:5.1} {ustr}/s\n",
                    human_time((tdiff * 1e6) as u64)
                ));
            } else {
                o.push_str(&format!(
                    "Progress: {:5.1}%, ETA {}, {n:4} {u} written, speed {sp:5.1} {ustr}/s{}",
                    done as f64 / size as f64 * 100.0,
                    human_time(eta),
                    if self.frequency == 0 { "" } else { "\n" }
                ));
            }
        }
        Some(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_units_and_speed_as_cryptsetup_prints_them() {
        assert_eq!(human_time(764_000_000), "12m44s");
        assert_eq!(human_time(MIN_90), "01h30m00s");
        assert_eq!(human_time(3 * 86_400_000_000), "03 days");
        assert_eq!(units(5 << 20), (5, "MiB"));
        assert_eq!(units(5 << 32), (20, "GiB"));
        assert_eq!(speed(2048.0), (2.0, "KiB"));
        assert_eq!(speed(100.0), (100.0, "B"));
    }

    #[test]
    fn first_report_starts_the_clock_and_the_last_one_finishes() {
        let mut p = Progress::new(1, false, false, "/dev/x");
        assert_eq!(p.report(4 << 20, 1 << 20), None);
        assert!(p.start.is_some());
        std::thread::sleep(Duration::from_millis(5));
        // Within the frequency: nothing.
        assert_eq!(p.report(4 << 20, 2 << 20), None);
        let s = p.report(4 << 20, 4 << 20).unwrap();
        assert!(
            s.starts_with("Finished, time 00m00s,    4 MiB written, speed "),
            "{s}"
        );
        assert!(s.ends_with("/s\n") && s.lines().count() == 1, "{s}");
    }

    #[test]
    fn batch_mode_prints_only_json() {
        let mut p = Progress::new(0, true, false, "/dev/x");
        assert_eq!(p.report(2 << 20, 1 << 20), None);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(p.report(2 << 20, 2 << 20), None);
        let mut p = Progress::new(0, true, true, "/dev/x");
        assert_eq!(p.report(2 << 20, 1 << 20), None);
        std::thread::sleep(Duration::from_millis(2));
        let s = p.report(2 << 20, 2 << 20).unwrap();
        assert!(
            s.starts_with("{\"device\":\"/dev/x\",\"device_bytes\":\"2097152\",\"device_size\":\"2097152\",\"speed\":\"")
                && s.contains("\"eta_ms\":\"0\",\"time_ms\":\"")
                && s.ends_with("\"}\n"),
            "{s}"
        );
    }
}
