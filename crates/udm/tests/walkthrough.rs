//! The README walkthrough, step by step, through the real CLI and real NBD clients (qemu-io,
//! nbdinfo, nbdcopy), with the bytes checked in the image files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use udm_testkit::{require_tool, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

struct W {
    d: Daemon,
    dir: PathBuf,
}

impl W {
    fn new() -> W {
        let d = Daemon::start(bin());
        let dir = d.dir.path().join("work");
        std::fs::create_dir(&dir).unwrap();
        W { d, dir }
    }
    fn img(&self, name: &str, bytes: u64) -> String {
        let p = self.dir.join(name);
        std::fs::File::create(&p).unwrap().set_len(bytes).unwrap();
        p.display().to_string()
    }
    /// `udm ARGS` with optional stdin; asserts success; returns stdout.
    fn udm(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.udm_raw(args, stdin);
        assert!(
            o.status.success(),
            "udm {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.d.log()
        );
        String::from_utf8(o.stdout).unwrap()
    }
    fn udm_raw(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(bin())
            .args(args)
            .env("UDM_SOCKET", &self.d.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = c
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes());
        c.wait_with_output().unwrap()
    }
    fn qemu_io(&self, dev: &str, cmd: &str) -> Output {
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", cmd])
            .arg(self.d.uri(dev))
            .output()
            .unwrap()
    }
    /// `st`: 400 MiB striped (64 KiB chunks) over new images `a.img` and `b.img`, whose
    /// paths it returns.
    fn striped(&self) -> (String, String) {
        let (a, b) = (self.img("a.img", 200 << 20), self.img("b.img", 200 << 20));
        let t = format!("0 819200 striped 2 128 {a} 0 {b} 0");
        self.udm(&["create", "st", "--table", &t], None);
        (a, b)
    }
    fn bytes(&self, name: &str, off: usize, len: usize) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()[off..off + len].to_vec()
    }
}

fn tools() -> bool {
    require_tool("qemu-io") && require_tool("nbdinfo") && require_tool("nbdcopy")
}

#[test]
fn striped_over_two_disks() {
    if !tools() {
        return;
    }
    let w = W::new();
    let (a, b) = w.striped();
    assert_eq!(
        w.udm(&["table", "st"], None),
        format!("0 819200 striped 2 128 {a} 0 {b} 0\n")
    );
    assert_eq!(
        w.udm(&["status", "st"], None),
        format!("0 819200 striped 2 {a} {b} 1 AA\n")
    );
    let o = w.qemu_io("st", "write -P 0x11 0 64k");
    assert!(o.status.success());
    let o = w.qemu_io("st", "write -P 0x22 64k 64k");
    assert!(o.status.success());
    assert_eq!(w.bytes("a.img", 0, 65536), vec![0x11; 65536]);
    assert_eq!(w.bytes("b.img", 0, 65536), vec![0x22; 65536]);
    assert_eq!(w.bytes("a.img", 65536, 65536), vec![0; 65536]);
}

#[test]
fn bad_disk_fails_at_the_ninth_sector() {
    if !tools() {
        return;
    }
    let w = W::new();
    let disk = w.img("disk.img", 100 << 20);
    std::fs::write(&disk, vec![0x5a; 100 << 20]).unwrap();
    let table = format!("0 8      linear {disk} 0\n8 1      error\n9 204791 linear {disk} 9\n");
    w.udm(&["create", "bad_disk"], Some(&table));
    let ok = w.qemu_io("bad_disk", "read -P 0x5a 0 4k");
    assert!(
        ok.status.success() && !String::from_utf8_lossy(&ok.stdout).contains("fail"),
        "{ok:?}"
    );
    let bad = w.qemu_io("bad_disk", "read 0 5k");
    let text =
        String::from_utf8_lossy(&bad.stdout).to_string() + &String::from_utf8_lossy(&bad.stderr);
    assert!(text.contains("Input/output error"), "{text}");
    assert_eq!(
        w.udm(&["table", "bad_disk"], None),
        format!("0 8 linear {disk} 0\n8 1 error \n9 204791 linear {disk} 9\n")
    );
}

#[test]
fn fake_8tb_disk() {
    if !tools() {
        return;
    }
    let w = W::new();
    let small = w.img("small.img", 32 << 10);
    w.udm(
        &["create", "fake_disk"],
        Some(&format!("0 64 linear {small} 0\n64 17179869120 zero\n")),
    );
    let o = Command::new("nbdinfo")
        .arg("--size")
        .arg(w.d.uri("fake_disk"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "8796093022208");
    // The real part keeps data; the zero part discards writes and reads zeroes.
    assert!(w
        .qemu_io("fake_disk", "write -P 0x44 0 32k")
        .status
        .success());
    assert_eq!(w.bytes("small.img", 0, 32768), vec![0x44; 32768]);
    assert!(w
        .qemu_io("fake_disk", "write -P 0x55 4T 64k")
        .status
        .success());
    assert!(w.qemu_io("fake_disk", "read -P 0 4T 64k").status.success());
}

#[test]
fn stacking_and_live_reload() {
    if !tools() {
        return;
    }
    let w = W::new();
    w.striped();
    w.udm(
        &[
            "create",
            "top",
            "--table",
            "0 409600 linear /dev/mapper/st 409600",
        ],
        None,
    );
    assert_eq!(
        w.udm(&["deps", "top"], None),
        "1 dependencies\t: (253, 0)\n"
    );
    let tree = w.udm(&["ls", "--tree", "-o", "ascii"], None);
    assert!(tree.starts_with("top (253:1)\n `-st (253:0)\n"), "{tree}");
    assert!(w.qemu_io("top", "write -P 0x33 0 4k").status.success());
    assert_eq!(w.bytes("a.img", 204800 * 512, 4096), vec![0x33; 4096]);

    // Live reload under a running reader: the reader sees every byte, from one table or the
    // other, and never an error.
    let disk = w.img("disk.img", 100 << 20);
    std::fs::write(&disk, vec![0xaa; 100 << 20]).unwrap();
    let new = w.img("new.img", 100 << 20);
    std::fs::write(&new, vec![0xbb; 100 << 20]).unwrap();
    w.udm(
        &[
            "create",
            "live",
            "--table",
            &format!("0 204800 linear {disk} 0"),
        ],
        None,
    );
    let out = w.dir.join("copy.bin");
    let mut reader = Command::new("nbdcopy")
        .args(["--request-size=65536", "--requests=4", "--connections=1"])
        .arg(w.d.uri("live"))
        .arg(&out)
        .spawn()
        .unwrap();
    w.udm(&["suspend", "live"], None);
    w.udm(
        &[
            "load",
            "live",
            "--table",
            &format!("0 204800 linear {new} 0"),
        ],
        None,
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    w.udm(&["resume", "live"], None);
    assert!(reader.wait().unwrap().success());
    let copy = std::fs::read(&out).unwrap();
    assert_eq!(copy.len(), 100 << 20);
    assert!(copy.iter().all(|&x| x == 0xaa || x == 0xbb));
    assert_eq!(
        w.udm(&["table", "live"], None),
        format!("0 204800 linear {new} 0\n")
    );
    assert!(w.qemu_io("live", "read -P 0xbb 0 64k").status.success());

    w.udm(&["remove", "top"], None);
    w.udm(&["remove_all"], None);
    assert_eq!(w.udm(&["ls"], None), "No devices found\n");
}

#[test]
fn no_daemon_says_how_to_start_one() {
    let o = Command::new(bin())
        .arg("ls")
        .env("UDM_SOCKET", "/nonexistent/udm/control")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("udm daemon"), "{err}");
}
