//! The server against `nbdcopy` (libnbd; multi-connection, sparse-aware) in both
//! directions and export to export, with the data compared.

mod common;

use common::*;
use std::process::Command;
use udm_io::PatternDevice;
use udm_testkit::{require_tool, run};

#[test]
fn nbdcopy_local_to_export_and_back() {
    if !require_tool("nbdcopy") {
        return;
    }
    let (s, _, img) = serve_standard();
    let src = s.path("src.img");
    let mut data = noise(8 << 20, 21);
    data[2 << 20..5 << 20].fill(0); // a zero run nbdcopy may send as write-zeroes
    std::fs::write(&src, &data).unwrap();
    run(Command::new("nbdcopy")
        .arg("--flush")
        .arg(&src)
        .arg(s.uri("file")));
    assert!(
        read_file(&img) == data,
        "backing file differs after nbdcopy in"
    );
    let dst = s.path("dst.img");
    run(Command::new("nbdcopy").arg(s.uri("file")).arg(&dst));
    assert!(read_file(&dst) == data, "copy out differs");
}

#[test]
fn nbdcopy_export_to_export() {
    if !require_tool("nbdcopy") {
        return;
    }
    let (s, mem, _) = serve_standard();
    run(Command::new("nbdcopy")
        .args(["--connections=4", "--requests=16"])
        .arg(s.uri("pattern"))
        .arg(s.uri("mem")));
    let mut want = vec![0u8; 4 << 20];
    PatternDevice::fill(&mut want, 0);
    assert!(mem.snapshot() == want, "pattern copy differs");
}

#[test]
fn nbdcopy_into_read_only_fails() {
    if !require_tool("nbdcopy") {
        return;
    }
    let (s, _, _) = serve_standard();
    let out = output(
        Command::new("nbdcopy")
            .arg(s.uri("mem"))
            .arg(s.uri("pattern")),
    );
    assert!(
        !out.status.success(),
        "copy into a read-only export succeeded"
    );
}
