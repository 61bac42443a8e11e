//! Raw sector-cipher throughput on one core, comparable to `openssl speed -evp aes-256-xts
//! -bytes 4096`: `cargo run --release --example crypt_speed [CIPHER] [KEYBYTES] [UNIT] [SECS]`.
//! Prints MB per wall-clock second and MB per CPU-second of this thread (what `openssl speed`
//! reports; on a loaded machine the wall-clock figure is lower by the share of CPU it got).

use std::time::{Duration, Instant};
use udm_targets::crypt::{CipherSpec, SectorCipher};

/// CPU time of this thread, in seconds.
fn cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let spec: CipherSpec = a
        .first()
        .map(String::as_str)
        .unwrap_or("aes-xts-plain64")
        .parse()
        .expect("cipher spec");
    let klen: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let unit: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let secs: f64 = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let key: Vec<u8> = (0..klen as u8).collect();
    let c = SectorCipher::new(&spec, &key, 512, false).expect("key");
    let mut buf = vec![0x5au8; unit];
    for (name, enc) in [("encrypt", true), ("decrypt", false)] {
        let (t, c0) = (Instant::now(), cpu());
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs_f64(secs) {
            for _ in 0..256 {
                c.process(&mut buf, n, enc);
                n += 1;
            }
        }
        let mb = n as f64 * unit as f64 / 1e6;
        let (wall, cpu) = (mb / t.elapsed().as_secs_f64(), mb / (cpu() - c0));
        println!("{name} {unit}-byte blocks: {wall:.0} MB/s, {cpu:.0} MB per CPU-second");
    }
}
