//! The server under `fio --ioengine=nbd` (libnbd, many requests in flight) with crc32c
//! verification of everything written.

mod common;

use common::*;
use std::process::Command;
use udm_testkit::{require_tool, run};

fn fio(uri: &str, extra: &[&str]) -> String {
    let mut c = Command::new("fio");
    c.args([
        "--name=udm-nbd",
        "--ioengine=nbd",
        "--rw=randrw",
        "--bs=4k",
        "--size=4m",
        "--iodepth=16",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_state_save=0",
        "--randrepeat=1",
        "--output-format=json",
    ])
    .arg(format!("--uri={uri}"))
    .args(extra);
    run(&mut c)
}

fn check(out: &str) {
    let start = out.find('{').unwrap_or(0);
    let v: serde_json::Value =
        serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("fio JSON {e}: {out}"));
    let job = &v["jobs"][0];
    assert_eq!(job["error"], 0, "{out}");
    assert!(job["write"]["io_bytes"].as_u64().unwrap() > 0, "{out}");
    assert!(job["read"]["io_bytes"].as_u64().unwrap() > 0, "{out}");
}

#[test]
fn fio_randrw_verify_mem() {
    if !require_tool("fio") {
        return;
    }
    let (s, _, _) = serve_standard();
    check(&fio(&s.uri("mem"), &[]));
}

#[test]
fn fio_randrw_verify_file_mixed_sizes() {
    if !require_tool("fio") {
        return;
    }
    let (s, _, _) = serve_standard();
    check(&fio(
        &s.uri("file"),
        &["--bsrange=4k-256k", "--size=8m", "--iodepth=32"],
    ));
}

/// A RAM disk that corrupts one byte of every read, to prove the verification bites.
struct Corrupting(udm_io::MemDevice);

impl udm_io::BlockDevice for Corrupting {
    fn submit(&self, bio: udm_io::Bio) {
        let bio = bio.on_end(|res, buf| {
            if let Some(b) = buf.as_mut_slice().get_mut(100) {
                *b ^= 0x40;
            }
            res
        });
        self.0.submit(bio)
    }
    fn size(&self) -> udm_io::Sectors {
        self.0.size()
    }
    fn id(&self) -> udm_io::DevId {
        self.0.id()
    }
}

#[test]
fn fio_verify_catches_corruption() {
    if !require_tool("fio") {
        return;
    }
    let s = serve();
    let dev = Corrupting(udm_io::MemDevice::new("bad", udm_io::Sectors(8192)));
    s.add("bad", std::sync::Arc::new(dev), false);
    let out = output(
        Command::new("fio")
            .args([
                "--name=bad",
                "--verify_state_save=0",
                "--ioengine=nbd",
                "--rw=randrw",
                "--bs=4k",
                "--size=1m",
                "--verify=crc32c",
                "--do_verify=1",
            ])
            .arg(format!("--uri={}", s.uri("bad"))),
    );
    assert!(!out.status.success(), "fio did not notice corrupted reads");
}
