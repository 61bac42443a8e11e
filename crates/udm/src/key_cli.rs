//! `udm key add [--hex] <logon|user|encrypted|trusted> <description>`: store a key in the
//! daemon's key store for crypt tables that name it as `:<size>:<type>:<description>`. The
//! key is read from standard input (raw bytes, or hex text with `--hex`), never from argv.

use std::io::{Read, Write};
use std::path::Path;
use udm_proto::{Client, Request, SecretBytes};
use udm_targets::crypt::keyring::decode_hex;
use udm_targets::crypt::Zeroizing;

const USAGE: &str =
    "Usage: udm key add [--hex] <logon|user|encrypted|trusted> <description>  (key on stdin)\n";

/// Run with explicit streams and socket (tests call this).
pub fn run(args: &[String], input: &mut dyn Read, err: &mut dyn Write, socket: &Path) -> i32 {
    let hex = args.iter().any(|a| a == "--hex");
    let pos: Vec<&String> = args.iter().filter(|a| *a != "--hex").collect();
    if pos.len() != 3 || pos[0] != "add" {
        let _ = err.write_all(USAGE.as_bytes());
        return 1;
    }
    let mut raw = Zeroizing::new(Vec::new());
    if let Err(e) = input.read_to_end(&mut raw) {
        let _ = writeln!(err, "udm key: cannot read the key from stdin: {e}");
        return 1;
    }
    let key = if hex {
        match decode_hex(&raw) {
            Some(k) => k,
            None => {
                let _ = writeln!(err, "udm key: stdin is not hex");
                return 1;
            }
        }
    } else {
        raw
    };
    if key.is_empty() {
        let _ = writeln!(err, "udm key: empty key on stdin");
        return 1;
    }
    let mut c = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "udm key: cannot reach the udm daemon: {e}");
            return 1;
        }
    };
    match c.call(Request::KeyAdd {
        ktype: pos[1].clone(),
        desc: pos[2].clone(),
        key: SecretBytes(key.to_vec()),
    }) {
        Ok(_) => 0,
        Err(e) => {
            let _ = writeln!(err, "udm key: {e}");
            1
        }
    }
}

/// Entry point: `udm key ARGS…`.
pub fn main(args: &[String]) -> i32 {
    run(
        args,
        &mut std::io::stdin(),
        &mut std::io::stderr(),
        &udm_proto::default_socket(),
    )
}
