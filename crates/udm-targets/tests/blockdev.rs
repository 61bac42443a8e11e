//! Real block devices as backing: a loop device by path and by `major:minor` (shared, opened
//! once), and a 4096-byte-sector loop device enforcing logical-block alignment as the kernel does.

mod common;
use common::*;
use std::process::Command;

struct Loop(String);
impl Loop {
    fn new(file: &std::path::Path, sector_size: u32) -> Option<Loop> {
        if !udm_testkit::require_tool("losetup") {
            return None;
        }
        let out = Command::new("losetup")
            .args(["-f", "--show", "--sector-size", &sector_size.to_string()])
            .arg(file)
            .output()
            .unwrap();
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            if std::env::var("UDM_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("losetup failed: {why}");
            }
            eprintln!("SKIP: losetup failed: {why}");
            return None;
        }
        Some(Loop(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }
    fn devno(&self) -> String {
        let out = Command::new("stat")
            .args(["-c", "%t:%T", &self.0])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        let (a, b) = s.trim().split_once(':').unwrap();
        format!(
            "{}:{}",
            u32::from_str_radix(a, 16).unwrap(),
            u32::from_str_radix(b, 16).unwrap()
        )
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn loop_device_by_path_and_devno() {
    let dir = tempfile::tempdir().unwrap();
    let f = image(dir.path(), "a.img", 4096, 0);
    let Some(lo) = Loop::new(&f, 512) else { return };
    let reg = registry();
    let devno = lo.devno();
    create(
        &reg,
        "a",
        &format!("0 1024 linear {} 0\n1024 1024 linear {devno} 2048", lo.0),
    )
    .unwrap();
    let (_, deps) = reg.deps(&sel("a"), false).unwrap();
    assert_eq!(deps.len(), 1, "one device referenced twice is opened once");
    assert_eq!(deps[0].id, devno);
    let (_, t) = reg
        .status(&sel("a"), false, udm_core::StatusType::Table)
        .unwrap();
    assert_eq!(t[0].params, format!("{devno} 0"));
    let (dev, _g) = open(&reg, "a");
    write(dev.as_ref(), 1024, &[0x77; 4096]);
    udm_io::sync::flush(dev.as_ref()).unwrap();
    drop(_g);
    drop(dev);
    reg.remove(&sel("a"), false).unwrap();
    let data = std::fs::read(&f).unwrap();
    assert_eq!(&data[2048 * 512..2048 * 512 + 4096], &[0x77; 4096][..]);
}

#[test]
fn logical_block_size_4k_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let f = image(dir.path(), "a.img", 4096, 0);
    let Some(lo) = Loop::new(&f, 4096) else {
        return;
    };
    let reg = registry();
    reg.create("v", "").unwrap();
    let cases = [
        (
            format!("0 7 linear {} 0", lo.0),
            "len=7 not aligned to h/w logical block size 4096 of loop",
        ),
        (
            format!("0 8 linear {} 1", lo.0),
            "start=1 not aligned to h/w logical block size 4096 of loop",
        ),
        (
            format!("0 4 zero\n4 8 linear {} 0", lo.0),
            // The kernel names the line that cannot fill the block (captured: val_4k_table_line).
            "table line 1 (start sect 4 len 8) not aligned to h/w logical block size 4096",
        ),
    ];
    for (t, want) in cases {
        let e = reg.load(&sel("v"), &lines(&t), false).unwrap_err();
        assert!(e.to_string().contains(want), "{t}: {e}");
    }
    reg.load(&sel("v"), &lines(&format!("0 8 linear {} 8", lo.0)), false)
        .unwrap();
}
