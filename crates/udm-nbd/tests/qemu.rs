//! The server against QEMU's NBD client: `qemu-img info`, `qemu-img convert` in both
//! directions and `qemu-io` pattern writes, checked against the backing file.

mod common;

use common::*;
use std::process::Command;
use udm_testkit::{require_tool, run};

#[test]
fn qemu_img_info() {
    if !require_tool("qemu-img") {
        return;
    }
    let (s, _, _) = serve_standard();
    let out = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(s.uri("file")));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["virtual-size"], 8 << 20, "{out}");
    assert_eq!(v["format"], "raw", "{out}");
}

#[test]
fn qemu_img_convert_both_ways() {
    if !require_tool("qemu-img") {
        return;
    }
    let (s, mem, img) = serve_standard();
    // Local image -> export.
    let src = s.path("src.img");
    let mut data = noise(4 << 20, 11);
    data[1 << 20..2 << 20].fill(0);
    std::fs::write(&src, &data).unwrap();
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(s.uri("mem")));
    assert!(
        mem.snapshot() == data,
        "export differs from the converted image"
    );
    // Export -> local image.
    let dst = s.path("dst.img");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(s.uri("mem"))
        .arg(&dst));
    assert!(
        read_file(&dst) == data,
        "converted image differs from the export"
    );
    // And into the file-backed export, then compare the backing file.
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(s.uri("file")));
    let back = read_file(&img);
    assert!(back[..4 << 20] == data[..], "backing file differs");
    assert!(back[4 << 20..].iter().all(|&b| b == 0));
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&dst)
        .arg(s.uri("mem")));
}

#[test]
fn qemu_io_pattern_write_read_flush() {
    if !require_tool("qemu-io") {
        return;
    }
    let (s, _, img) = serve_standard();
    let out = run(Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0xab 0 64k",
            "-c",
            "read -P 0xab 0 64k",
            "-c",
            "write -z 64k 64k",
            "-c",
            "write -f -P 0xcd 1m 4k",
            "-c",
            "discard 2m 64k",
            "-c",
            "flush",
        ])
        .arg(s.uri("file")));
    assert!(!out.contains("failed"), "{out}");
    assert!(out.contains("wrote 65536/65536 bytes"), "{out}");
    assert!(out.contains("read 65536/65536 bytes"), "{out}");
    let file = read_file(&img);
    assert!(file[..64 << 10].iter().all(|&b| b == 0xab));
    assert!(file[64 << 10..128 << 10].iter().all(|&b| b == 0));
    assert!(file[1 << 20..(1 << 20) + 4096].iter().all(|&b| b == 0xcd));
    // A pattern mismatch is reported, proving qemu-io really checks.
    let out = output(
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", "read -P 0x11 0 4k"])
            .arg(s.uri("file")),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Pattern verification failed"), "{text}");
}

#[test]
fn qemu_io_read_only_export() {
    if !require_tool("qemu-io") {
        return;
    }
    let (s, _, _) = serve_standard();
    let out = output(
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write -P 1 0 4k"])
            .arg(s.uri("pattern")),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("wrote 4096"),
        "write to a read-only export succeeded: {text}"
    );
    let out = run(Command::new("qemu-io")
        .args(["-r", "-f", "raw", "-c", "read -v 8 8"])
        .arg(s.uri("pattern")));
    assert!(out.contains("read 8/8 bytes"), "{out}");
}
