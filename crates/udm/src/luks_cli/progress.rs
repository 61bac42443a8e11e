//! Key-derivation progress on a terminal: while a passphrase's PBKDF2/Argon2 runs for longer
//! than a moment, stderr shows which function runs and for how long; the line is cleared when
//! it ends. Only `main` turns it on, and only when stderr is a terminal.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use udm_formats::luks::kdf::Kdf;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Show progress from now on when stderr is a terminal.
pub fn enable_on_tty() {
    // SAFETY: isatty only inspects the file descriptor.
    let tty = unsafe { libc::isatty(2) } == 1;
    ENABLED.store(tty, Ordering::Relaxed);
}

/// Shows progress until dropped.
pub struct Progress {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Start showing progress for a derivation with `kdf` (nothing when not enabled).
pub fn start(kdf: &Kdf) -> Progress {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    if !ENABLED.load(Ordering::Relaxed) {
        return Progress { stop, thread: None };
    }
    let what = match kdf {
        Kdf::Pbkdf2 { hash, iterations } => format!("PBKDF2-{hash}, {iterations} iterations"),
        Kdf::Argon2 {
            time, memory, cpus, ..
        } => format!(
            "{}, {time} passes, {memory} KiB, {cpus} threads",
            kdf.name()
        ),
    };
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let t0 = Instant::now();
        let (lock, cv) = &*s;
        let mut done = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut shown = false;
        // Quiet for the first quarter second, then a line refreshed five times a second.
        let mut wait = Duration::from_millis(250);
        while !*done {
            let (d, r) = cv
                .wait_timeout(done, wait)
                .unwrap_or_else(|e| e.into_inner());
            done = d;
            if *done || !r.timed_out() {
                continue;
            }
            let e = t0.elapsed().as_secs_f64();
            let spin = ['|', '/', '-', '\\'][(e * 5.0) as usize % 4];
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[KKey derivation ({what}) {spin} {e:.1}s");
            let _ = err.flush();
            shown = true;
            wait = Duration::from_millis(200);
        }
        if shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    });
    Progress {
        stop,
        thread: Some(thread),
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
            let _ = t.join();
        }
    }
}
