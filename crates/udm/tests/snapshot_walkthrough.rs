//! Snapshot walkthroughs through the daemon and the CLI: the device-mapper docs' "fake 8 TB
//! disk" (32 KiB linear + zero, a snapshot over a sparse 1 GiB COW file, ext4 on it), and an
//! LVM-style origin/-real/-cow/snapshot stack with ext4, a change on the origin the snapshot
//! does not see, and a merge back.

use std::path::{Path, PathBuf};
use std::process::Command;
use udm_testkit::{require_tool, run, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> String {
    run(Command::new(bin()).args(args).env("UDM_SOCKET", &d.socket))
}

fn ready() -> bool {
    for t in ["losetup", "mkfs.ext4", "e2fsck", "debugfs"] {
        if !require_tool(t) {
            return false;
        }
    }
    if !Path::new("/dev/fuse").exists() {
        assert!(
            std::env::var("UDM_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "/dev/fuse is missing"
        );
        eprintln!("SKIP: no /dev/fuse");
        return false;
    }
    true
}

/// A loop device over a device's FUSE file, detached on drop.
struct Loop(String);

impl Loop {
    fn new(d: &Daemon, name: &str) -> Loop {
        let file: PathBuf = d.dir.path().join("mapper").join(name);
        assert!(file.exists(), "FUSE file missing: {}", d.log());
        Loop(
            run(Command::new("losetup").args(["-f", "--show"]).arg(&file))
                .trim()
                .to_string(),
        )
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn sparse(path: &Path, bytes: u64) -> String {
    std::fs::File::create(path).unwrap().set_len(bytes).unwrap();
    path.display().to_string()
}

fn e2fsck_clean(dev: &str) {
    let o = Command::new("e2fsck").args(["-fn", dev]).output().unwrap();
    assert!(
        o.status.success(),
        "e2fsck {dev}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn debugfs_cat(dev: &str, file: &str) -> Vec<u8> {
    Command::new("debugfs")
        .args(["-R", &format!("cat {file}"), dev])
        .output()
        .unwrap()
        .stdout
}

fn debugfs_write(dev: &str, host: &Path, file: &str) {
    run(Command::new("debugfs").args([
        "-w",
        "-R",
        &format!("write {} {file}", host.display()),
        dev,
    ]));
}

#[test]
fn fake_8tb_disk_with_a_snapshot_holds_ext4() {
    if !ready() {
        return;
    }
    let d = Daemon::start(bin());
    let dir = d.dir.path();
    let base = sparse(&dir.join("base.img"), 32 << 10);
    let cow = sparse(&dir.join("cow.img"), 1 << 30);
    let total = 17_179_869_184u64; // 8 TiB in sectors
    udm(
        &d,
        &[
            "create",
            "fake_disk",
            "--table",
            &format!("0 64 linear {base} 0\n64 {} zero", total - 64),
        ],
    );
    udm(
        &d,
        &[
            "create",
            "snap",
            "--table",
            &format!("0 {total} snapshot /dev/mapper/fake_disk {cow} P 8"),
        ],
    );
    assert_eq!(
        udm(&d, &["status", "snap"]),
        format!("0 {total} snapshot 16/2097152 16\n")
    );
    let lo = Loop::new(&d, "snap");
    run(Command::new("mkfs.ext4").args([
        "-q",
        "-F",
        "-E",
        "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
        &lo.0,
    ]));
    let host = dir.join("hello.txt");
    std::fs::write(&host, b"written on a fake 8 TB disk\n".repeat(100)).unwrap();
    debugfs_write(&lo.0, &host, "/hello.txt");
    e2fsck_clean(&lo.0);
    assert_eq!(
        debugfs_cat(&lo.0, "/hello.txt"),
        std::fs::read(&host).unwrap()
    );
    drop(lo);
    // Status: allocated = whole chunks copied plus metadata, as the kernel counts them; the
    // sparse COW file holds no more than that.
    let st = udm(&d, &["status", "snap"]);
    let w: Vec<&str> = st.split_whitespace().collect();
    assert_eq!(w[2], "snapshot", "{st}");
    let (alloc, tot) = w[3].split_once('/').unwrap();
    let (alloc, meta): (u64, u64) = (alloc.parse().unwrap(), w[4].parse().unwrap());
    assert_eq!(tot, "2097152");
    assert!(alloc > meta && alloc % 8 == 0 && meta % 8 == 0, "{st}");
    let used = std::fs::metadata(&cow).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.blocks() * 512
    });
    assert!(
        used.unwrap() <= alloc * 512,
        "COW file holds more than allocated: {st}"
    );
    udm(&d, &["remove", "snap"]);
    udm(&d, &["remove", "fake_disk"]);
}

#[test]
fn lvm_style_stack_snapshot_then_merge() {
    if !ready() {
        return;
    }
    let d = Daemon::start(bin());
    let dir = d.dir.path();
    let pv = sparse(&dir.join("pv.img"), 64 << 20);
    let cowf = sparse(&dir.join("cow.img"), 16 << 20);
    let sectors = 65536u64;
    // The origin LV, with ext4 and a file.
    udm(
        &d,
        &[
            "create",
            "vg-lv",
            "--table",
            &format!("0 {sectors} linear {pv} 0"),
        ],
    );
    let host = dir.join("f.txt");
    std::fs::write(&host, b"before the snapshot\n".repeat(500)).unwrap();
    {
        let lo = Loop::new(&d, "vg-lv");
        run(Command::new("mkfs.ext4").args(["-q", "-F", &lo.0]));
        debugfs_write(&lo.0, &host, "/f.txt");
    }
    // lvcreate -s: -real takes the origin's table, -cow maps the COW, the origin becomes
    // snapshot-origin over -real (loaded while suspended), the snapshot names -real and -cow.
    udm(
        &d,
        &[
            "create",
            "vg-lv-real",
            "--table",
            &format!("0 {sectors} linear {pv} 0"),
        ],
    );
    udm(
        &d,
        &[
            "create",
            "vg-snap-cow",
            "--table",
            &format!("0 32768 linear {cowf} 0"),
        ],
    );
    udm(&d, &["suspend", "vg-lv"]);
    udm(
        &d,
        &[
            "load",
            "vg-lv",
            "--table",
            &format!("0 {sectors} snapshot-origin /dev/mapper/vg-lv-real"),
        ],
    );
    udm(
        &d,
        &[
            "create",
            "vg-snap",
            "--table",
            &format!("0 {sectors} snapshot /dev/mapper/vg-lv-real /dev/mapper/vg-snap-cow P 8"),
        ],
    );
    udm(&d, &["resume", "vg-lv"]);
    // Change the origin; the snapshot keeps the old file and checks clean.
    let new = dir.join("g.txt");
    std::fs::write(&new, b"after the snapshot\n".repeat(700)).unwrap();
    {
        let lo = Loop::new(&d, "vg-lv");
        run(Command::new("debugfs").args(["-w", "-R", "rm /f.txt", &lo.0]));
        debugfs_write(&lo.0, &new, "/f.txt");
        e2fsck_clean(&lo.0);
        assert_eq!(debugfs_cat(&lo.0, "/f.txt"), std::fs::read(&new).unwrap());
    }
    {
        let lo = Loop::new(&d, "vg-snap");
        e2fsck_clean(&lo.0);
        assert_eq!(debugfs_cat(&lo.0, "/f.txt"), std::fs::read(&host).unwrap());
    }
    let st = udm(&d, &["status", "vg-snap"]);
    assert!(!st.contains("Invalid") && st.contains(" snapshot "), "{st}");
    // lvconvert --merge: the snapshot goes, the origin gets snapshot-merge.
    udm(&d, &["suspend", "vg-lv"]);
    udm(&d, &["remove", "vg-snap"]);
    udm(
        &d,
        &[
            "load",
            "vg-lv",
            "--table",
            &format!(
                "0 {sectors} snapshot-merge /dev/mapper/vg-lv-real /dev/mapper/vg-snap-cow P 8"
            ),
        ],
    );
    udm(&d, &["resume", "vg-lv"]);
    let done = format!("0 {sectors} snapshot-merge 16/32768 16\n");
    let mut st = String::new();
    for _ in 0..1000 {
        st = udm(&d, &["status", "vg-lv"]);
        if st == done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(st, done);
    let lo = Loop::new(&d, "vg-lv");
    e2fsck_clean(&lo.0);
    assert_eq!(debugfs_cat(&lo.0, "/f.txt"), std::fs::read(&host).unwrap());
}
