//! Raw sector-cipher throughput on one core, comparable to `openssl speed -evp aes-256-xts
//! -bytes 4096`: `cargo run --release --example crypt_speed [CIPHER] [KEYBYTES] [UNIT] [SECS]`.

use std::time::{Duration, Instant};
use udm_targets::crypt::{CipherSpec, SectorCipher};

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
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs_f64(secs) {
            for _ in 0..256 {
                c.process(&mut buf, n, enc);
                n += 1;
            }
        }
        let mbps = (n as f64 * unit as f64) / t.elapsed().as_secs_f64() / 1e6;
        println!("{name} {unit}-byte blocks: {mbps:.0} MB/s");
    }
}
