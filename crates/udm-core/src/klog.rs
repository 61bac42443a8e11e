//! The kernel log of udm: a ring buffer of the lines the kernel's device-mapper would print
//! with `printk` (`device-mapper: <prefix>: <text>`, prefix = the module's `DM_MSG_PREFIX`:
//! `table`, `ioctl`, `core` or the target's name). Like the kernel's log it is one per
//! process; `udm dmesg` reads it through the daemon, which also logs every line.

use parking_lot::Mutex;
use std::collections::VecDeque;

/// Lines kept; older ones are dropped first, as the kernel's ring buffer does.
pub const CAPACITY: usize = 4096;

/// Kernel log levels udm uses (`DMERR`, `DMWARN`, `DMINFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Err,
    Warn,
    Info,
}

/// A bounded buffer of log lines.
pub struct Ring {
    cap: usize,
    lines: Mutex<VecDeque<String>>,
}

impl Ring {
    pub const fn new(cap: usize) -> Ring {
        Ring {
            cap,
            lines: Mutex::new(VecDeque::new()),
        }
    }
    pub fn push(&self, line: String) {
        let mut g = self.lines.lock();
        if g.len() == self.cap {
            g.pop_front();
        }
        g.push_back(line);
    }
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().iter().cloned().collect()
    }
    pub fn clear(&self) {
        self.lines.lock().clear()
    }
    /// The lines, emptying the buffer in the same step.
    pub fn take(&self) -> Vec<String> {
        self.lines.lock().drain(..).collect()
    }
}

static LOG: Ring = Ring::new(CAPACITY);

/// Log `device-mapper: <prefix>: <msg>` (`prefix` without the colon, e.g. `dust`).
pub fn log(level: Level, prefix: &str, msg: &str) {
    let line = format!("device-mapper: {prefix}: {msg}");
    match level {
        Level::Err => tracing::error!(target: "kernel", "{line}"),
        Level::Warn => tracing::warn!(target: "kernel", "{line}"),
        Level::Info => tracing::info!(target: "kernel", "{line}"),
    }
    LOG.push(line);
}

/// `DMERR`.
pub fn err(prefix: &str, msg: &str) {
    log(Level::Err, prefix, msg)
}

/// `DMWARN`.
pub fn warn(prefix: &str, msg: &str) {
    log(Level::Warn, prefix, msg)
}

/// `DMINFO`.
pub fn info(prefix: &str, msg: &str) {
    log(Level::Info, prefix, msg)
}

/// The lines in the buffer, oldest first.
pub fn lines() -> Vec<String> {
    LOG.lines()
}

/// `dmesg -c`: the lines, and the buffer emptied (nothing logged in between is lost).
pub fn take() -> Vec<String> {
    LOG.take()
}

/// `dmesg -C`: empty the buffer.
pub fn clear() {
    LOG.clear()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_lines() {
        let r = Ring::new(4);
        for i in 0..7 {
            r.push(format!("line {i}"));
        }
        assert_eq!(r.lines(), ["line 3", "line 4", "line 5", "line 6"]);
        assert_eq!(r.take(), ["line 3", "line 4", "line 5", "line 6"]);
        assert!(r.lines().is_empty());
        r.push("x".into());
        r.clear();
        assert!(r.lines().is_empty());
    }

    #[test]
    fn log_lines_carry_the_module_prefix() {
        let marker = format!("marker {:p}", &LOG);
        info("dust", &marker);
        let want = format!("device-mapper: dust: {marker}");
        assert!(lines().contains(&want), "{:?}", lines());
    }
}
