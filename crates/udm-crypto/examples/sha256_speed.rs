//! SHA-256 of 4 KiB blocks (with a 32-byte salt first, as dm-verity hashes them) on one
//! core: the `sha2` crate one block at a time vs `sha256x2` two at a time, in MB per
//! CPU-second (so a loaded machine does not skew it):
//! `cargo run --release -p udm-crypto --example sha256_speed [SECS]`.

use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use udm_crypto::sha256x2::sha256_x2;

/// CPU time of this thread, in seconds.
fn cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let salt = [0x5au8; 32];
    let blocks: Vec<Vec<u8>> = (0..2u8).map(|i| vec![i; 4096]).collect();
    let mut sink = 0u8;
    for two in [false, true] {
        if two && sha256_x2(&salt, &blocks[0], &blocks[1], b"").is_none() {
            println!("sha256x2: no SHA extensions on this CPU");
            break;
        }
        let (t, c0) = (Instant::now(), cpu());
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs_f64(secs) {
            for _ in 0..64 {
                if two {
                    let d = sha256_x2(&salt, &blocks[0], &blocks[1], b"").expect("sha-ni");
                    sink ^= d[0][0] ^ d[1][0];
                } else {
                    for b in &blocks {
                        let mut h = Sha256::new();
                        h.update(salt);
                        h.update(b);
                        sink ^= h.finalize()[0];
                    }
                }
                n += 2;
            }
        }
        let mb = n as f64 * 4096.0 / 1e6;
        let name = if two {
            "sha256x2 (two at a time)"
        } else {
            "sha2 crate (one at a time)"
        };
        println!("{name}: {:.0} MB per CPU-second", mb / (cpu() - c0));
    }
    std::hint::black_box(sink);
}
