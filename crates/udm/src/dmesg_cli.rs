//! `udm dmesg [-c|--read-clear] [-C|--clear]`: the daemon's kernel-style log — the
//! `device-mapper: …` lines the kernel would have written to dmesg (dmsetup itself never
//! prints them when its stderr is not a terminal, as with the kernel).

use std::io::Write;
use udm_proto::{Client, Reply, Request};

const USAGE: &str = "Usage: udm dmesg [-c|--read-clear] [-C|--clear]\n";

pub fn main(args: &[String]) -> i32 {
    let (mut print, mut clear) = (true, false);
    for a in args {
        match a.as_str() {
            "-c" | "--read-clear" => clear = true,
            "-C" | "--clear" => {
                clear = true;
                print = false;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return 0;
            }
            _ => {
                eprint!("udm dmesg: unknown argument {a}\n{USAGE}");
                return 1;
            }
        }
    }
    let socket = udm_proto::default_socket();
    let mut c = match Client::connect(&socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("udm dmesg: {e}");
            return 1;
        }
    };
    match c.call(Request::Dmesg { clear }) {
        Ok(Reply::Dmesg(lines)) => {
            if print {
                let mut out = std::io::stdout().lock();
                for l in lines {
                    let _ = writeln!(out, "{l}");
                }
            }
            0
        }
        Ok(other) => {
            eprintln!("udm dmesg: unexpected reply {other:?}");
            1
        }
        Err(e) => {
            eprintln!("udm dmesg: {e}");
            1
        }
    }
}
