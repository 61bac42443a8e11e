//! The kill -9 harness the metadata targets' crash tests share. The test binary re-runs
//! itself as a child writer ([`child_writes`]): batch after batch of writes, each ended by a
//! flush it reports as `FLUSHED n`, then it waits for a line on stdin. The parent
//! ([`kill_round`]) lets a seeded number of batches complete (they enter the model: a flushed
//! write must survive), starts the next one, SIGKILLs the child somewhere in it and returns
//! what that batch may have left behind; after reopening the device, [`reconcile`] checks
//! every sector holds its model value or one of the killed batch's versions.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use udm_io::BlockDevice;

/// One batch of writes: (sector, data).
pub type Batch = Vec<(u64, Vec<u8>)>;

/// Child side: write batch `n` = 0, 1, … to `dev`, flush, print `FLUSHED n`, and wait for a
/// line on stdin before the next batch (returns when stdin closes).
pub fn child_writes(dev: &dyn BlockDevice, batch: impl Fn(u64) -> Batch) {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for n in 0.. {
        for (s, data) in batch(n) {
            crate::dm::write(dev, s, &data).unwrap();
        }
        udm_io::sync::flush(dev).unwrap();
        writeln!(out, "FLUSHED {n}").unwrap();
        out.flush().unwrap();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).unwrap() == 0 {
            return;
        }
    }
}

/// The sector versions a killed batch may have written (any of them may have landed).
#[derive(Debug, Default)]
pub struct Maybe(HashMap<u64, HashSet<Vec<u8>>>);

impl Maybe {
    fn of(batch: &Batch) -> Maybe {
        let mut m = Maybe::default();
        for (s, data) in batch {
            for (i, sec) in data.chunks(512).enumerate() {
                m.0.entry(s + i as u64).or_default().insert(sec.to_vec());
            }
        }
        m
    }

    /// Whether `data` is a version the killed batch wrote to `sector`.
    pub fn allows(&self, sector: u64, data: &[u8]) -> bool {
        self.0.get(&sector).is_some_and(|v| v.contains(data))
    }
}

/// The child of one round: this test binary re-run with only `test` (exact name), output
/// shown, one thread, `env` pointing at the shared directory `dir`, and the seed and round
/// the child draws its batches from (`UDM_CRASH_SEED`, `UDM_CRASH_ROUND`). Callers add
/// their own variables before handing it to [`kill_round`].
pub fn child(test: &str, env: &str, dir: &std::path::Path, seed: u64, round: u64) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut c = Command::new(exe);
    c.args(["--exact", test, "--nocapture"])
        .args(["--test-threads", "1"])
        .env(env, dir)
        .env("UDM_CRASH_SEED", seed.to_string())
        .env("UDM_CRASH_ROUND", round.to_string());
    c
}

/// Parent side, one round: spawn `child` (the test binary re-run with its child test and
/// environment set by the caller), wait until `batches` batches are flushed, writing each
/// into `model`, let the next batch start, SIGKILL the child after `kill_after`, and return
/// what the killed batch may have written.
pub fn kill_round(
    child: &mut Command,
    batches: u64,
    kill_after: Duration,
    batch: impl Fn(u64) -> Batch,
    model: &mut [u8],
) -> Maybe {
    let mut child = child
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut flushed = 0;
    while flushed < batches {
        let l = lines.next().expect("child output").unwrap();
        if let Some(n) = l.split("FLUSHED ").nth(1) {
            // Batch n is acknowledged after a flush: it is in the model for good.
            for (s, data) in batch(n.parse().unwrap()) {
                let a = (s * 512) as usize;
                model[a..a + data.len()].copy_from_slice(&data);
            }
            flushed += 1;
            if flushed < batches {
                writeln!(stdin, "go").unwrap();
            }
        }
    }
    // Let the next batch start, kill it somewhere in the middle.
    writeln!(stdin, "go").unwrap();
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    Maybe::of(&batch(batches))
}

/// Compare what the reopened device reads (`got`) with `model`: a sector that differs must
/// hold a version the killed batch wrote (that value is the truth from now on and goes into
/// `model`). Returns the sectors that hold neither: flushed writes lost.
pub fn reconcile(got: &[u8], model: &mut [u8], maybe: &Maybe) -> Vec<u64> {
    let mut lost = Vec::new();
    for (i, (g, m)) in got.chunks(512).zip(model.chunks_mut(512)).enumerate() {
        if g == m {
            continue;
        }
        if maybe.allows(i as u64, g) {
            m.copy_from_slice(g);
        } else {
            lost.push(i as u64);
        }
    }
    lost
}
