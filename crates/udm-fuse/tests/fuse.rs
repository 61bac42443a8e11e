//! The FUSE export end to end: files follow devices, I/O maps onto bios (aligned and not,
//! fsync, fallocate), read-only devices, suspend holds I/O, removal while open, and a real
//! kernel block device via `losetup` carrying ext4 (mkfs, mount, write, umount, e2fsck).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use udm_core::{DevSel, Registry, TableLine};
use udm_fuse::{FuseExport, FuseOpts};
use udm_testkit::run;

/// FUSE must work here (root, /dev/fuse). Outside CI a machine without it skips.
fn fuse_ok() -> bool {
    if udm_fuse::usable() {
        return true;
    }
    if std::env::var("UDM_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("FUSE is not usable here (UDM_REQUIRE_TOOLS=1)");
    }
    eprintln!("SKIP: FUSE not usable");
    false
}

struct Fixture {
    reg: Registry,
    dir: tempfile::TempDir,
    fuse: Option<FuseExport>,
}

impl Fixture {
    fn new(opts: FuseOpts) -> Fixture {
        let reg = Registry::new(udm_targets::builtin());
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mapper");
        let fuse = FuseExport::mount(&reg, &mnt, opts).expect("mount FUSE export");
        Fixture {
            reg,
            dir,
            fuse: Some(fuse),
        }
    }
    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mapper")
    }
    /// A linear device over a fresh sparse image of `mib` MiB.
    fn linear(&self, name: &str, mib: u64, read_only: bool) -> PathBuf {
        let img = udm_testkit::image(self.dir.path(), &format!("{name}.img"), mib << 20);
        self.table(
            name,
            &format!("0 {} linear {} 0", mib * 2048, img.display()),
            read_only,
        );
        img
    }
    /// Device `name`'s file, opened for reading and writing.
    fn open_rw(&self, name: &str) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.mnt().join(name))
            .unwrap()
    }
    fn table(&self, name: &str, line: &str, read_only: bool) {
        let sel = DevSel::Name(name.into());
        if self.reg.get(&sel).is_err() {
            self.reg.create(name, "").unwrap();
        }
        let l: Vec<TableLine> = udm_core::parse_table_text(line).unwrap();
        self.reg.load(&sel, &l, read_only).unwrap();
        self.reg.resume(&sel).unwrap();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(f) = self.fuse.take() {
            f.shutdown();
        }
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn files_follow_devices() {
    if !fuse_ok() {
        return;
    }
    let fx = Fixture::new(FuseOpts::default());
    let mnt = fx.mnt();
    assert!(names(&mnt).is_empty());
    fx.reg.create("empty", "").unwrap();
    fx.linear("a", 4, false);
    fx.linear("ro", 2, true);
    // A device without a table has a file (the kernel has a node) that cannot be opened.
    assert_eq!(names(&mnt), ["a", "empty", "ro"]);
    assert_eq!(std::fs::metadata(mnt.join("empty")).unwrap().len(), 0);
    let e = File::open(mnt.join("empty")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "{e}");
    // Resuming it without a table leaves it so.
    fx.reg.resume(&DevSel::Name("empty".into())).unwrap();
    let e = File::open(mnt.join("empty")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "{e}");
    fx.reg.remove(&DevSel::Name("empty".into()), false).unwrap();
    wait_for("empty removed", || names(&mnt) == ["a", "ro"]);
    let md = std::fs::metadata(mnt.join("a")).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 4 << 20);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    // A read-only device's node is no different (its writes fail, not its opens).
    let ro = std::fs::metadata(mnt.join("ro")).unwrap();
    assert_eq!(ro.permissions().mode() & 0o777, 0o600);
    // Growing the table shows at once (the event invalidates the cached size).
    let img = udm_testkit::image(fx.dir.path(), "bigger.img", 8 << 20);
    fx.table("a", &format!("0 16384 linear {} 0", img.display()), false);
    wait_for("size change", || {
        std::fs::metadata(mnt.join("a")).unwrap().len() == 8 << 20
    });
    fx.reg.rename(&DevSel::Name("a".into()), "b").unwrap();
    wait_for("rename", || names(&mnt) == ["b", "ro"]);
    fx.reg.remove(&DevSel::Name("b".into()), false).unwrap();
    wait_for("removal", || names(&mnt) == ["ro"]);
    assert!(File::open(mnt.join("b")).is_err());
}

#[test]
fn io_maps_onto_the_device() {
    if !fuse_ok() {
        return;
    }
    for direct in [true, false] {
        let fx = Fixture::new(FuseOpts {
            direct_io: direct,
            ..FuseOpts::default()
        });
        let img = fx.linear("d", 4, false);
        let f = fx.open_rw("d");
        let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 + 3) as u8).collect();
        f.write_all_at(&data, 1 << 20).unwrap();
        // Unaligned: read-modify-write inside one sector and across sectors.
        f.write_all_at(b"hello", 1000).unwrap();
        f.write_all_at(&[0xab; 1500], 4000).unwrap();
        f.sync_all().unwrap();
        let img = std::fs::read(&img).unwrap();
        assert_eq!(&img[1 << 20..(1 << 20) + 65536], &data[..]);
        assert_eq!(&img[1000..1005], b"hello");
        assert_eq!(&img[995..1000], &[0; 5]);
        assert!(img[4000..5500].iter().all(|&b| b == 0xab));
        assert_eq!(img[5500], 0);
        let mut back = vec![0u8; 3000];
        f.read_exact_at(&mut back, (1 << 20) + 77).unwrap();
        assert_eq!(&back[..], &data[77..3077]);
        // Reads stop at the end of the device; writes past it fail with ENOSPC.
        let mut tail = vec![0u8; 8192];
        assert_eq!(f.read_at(&mut tail, (4 << 20) - 4096).unwrap(), 4096);
        assert_eq!(f.read_at(&mut tail, 4 << 20).unwrap(), 0);
        let e = f.write_at(b"x", 4 << 20).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        // ftruncate is ignored (dd does it on regular files): the size is the table's.
        f.set_len(0).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4 << 20);
    }
}

fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> std::io::Result<()> {
    // SAFETY: fallocate on a valid open descriptor with plain integer arguments.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn fallocate_punches_and_zeroes() {
    if !fuse_ok() {
        return;
    }
    let fx = Fixture::new(FuseOpts::default());
    let img = fx.linear("z", 4, false);
    let f = fx.open_rw("z");
    f.write_all_at(&vec![0x5a; 1 << 20], 0).unwrap();
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    fallocate(&f, punch, 4096, 65536).unwrap();
    // Unaligned edges are zeroed too.
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 100_000, 10_000).unwrap();
    let bytes = std::fs::read(&img).unwrap();
    assert!(bytes[..4096].iter().all(|&b| b == 0x5a));
    assert!(bytes[4096..69632].iter().all(|&b| b == 0));
    assert!(bytes[69632..100_000].iter().all(|&b| b == 0x5a));
    assert!(bytes[100_000..110_000].iter().all(|&b| b == 0));
    assert_eq!(bytes[110_000], 0x5a);
    // The image really has a hole where the discard went (linear passes it to the file).
    let mut back = vec![1u8; 65536];
    f.read_exact_at(&mut back, 4096).unwrap();
    assert!(back.iter().all(|&b| b == 0));
    // Growing is impossible; allocation inside the device is a no-op.
    fallocate(&f, 0, 0, 4096).unwrap();
    assert_eq!(
        fallocate(&f, 0, (4 << 20) - 512, 4096)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
}

#[test]
fn read_only_devices_refuse_writes() {
    if !fuse_ok() {
        return;
    }
    let fx = Fixture::new(FuseOpts::default());
    let img = fx.linear("ro", 1, true);
    let p = fx.mnt().join("ro");
    // As the kernel: the open for writing succeeds, every write fails with EPERM.
    let f = fx.open_rw("ro");
    let e = f.write_all_at(&[1u8; 4096], 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert_eq!(
        fallocate(
            &f,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096
        )
        .unwrap_err()
        .raw_os_error(),
        Some(libc::EPERM)
    );
    let mut b = [1u8; 512];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b, [0; 512]);
    let out = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096", "count=1", "conv=notrunc"])
        .arg(format!("of={}", p.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0));
}

/// `dd` without conv=notrunc, `cp` and a shell `>` open with O_TRUNC (and dd ftruncates):
/// a block device ignores that, so the device files do too, keeping their size and the data
/// past what was written.
#[test]
fn truncating_opens_write_like_a_block_device() {
    if !fuse_ok() {
        return;
    }
    let fx = Fixture::new(FuseOpts::default());
    let img = fx.linear("t", 1, false);
    let p = fx.mnt().join("t");
    std::fs::write(&img, vec![0x77u8; 1 << 20]).unwrap();
    let src = fx.dir.path().join("src.bin");
    std::fs::write(&src, vec![0x11u8; 8192]).unwrap();
    let dd = |args: &[&str]| {
        run(Command::new("dd")
            .arg(format!("if={}", src.display()))
            .arg(format!("of={}", p.display()))
            .args(args))
    };
    dd(&["bs=4096", "status=none"]);
    // dd seek=N ftruncates to N blocks: ignored as well.
    dd(&["bs=4096", "seek=4", "count=1", "status=none"]);
    let small = fx.dir.path().join("small.bin");
    std::fs::write(&small, [0x22u8; 512]).unwrap();
    run(Command::new("cp").arg(&small).arg(&p));
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("printf abc > '{}'", p.display())));
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
    let back = std::fs::read(&img).unwrap();
    assert_eq!(&back[..3], b"abc");
    assert!(back[3..512].iter().all(|&b| b == 0x22));
    assert!(back[512..8192].iter().all(|&b| b == 0x11));
    assert!(back[8192..16384].iter().all(|&b| b == 0x77));
    assert!(back[16384..20480].iter().all(|&b| b == 0x11));
    assert!(back[20480..].iter().all(|&b| b == 0x77));
}

#[test]
fn suspend_holds_io_and_remove_while_open_is_refused() {
    if !fuse_ok() {
        return;
    }
    let fx = Fixture::new(FuseOpts::default());
    fx.linear("s", 1, false);
    let sel = DevSel::Name("s".into());
    let f = fx.open_rw("s");
    assert_eq!(fx.reg.info(&sel, false).unwrap().open_count, 1);
    fx.reg.suspend(&sel, false, false).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let f2 = f.try_clone().unwrap();
    std::thread::spawn(move || {
        tx.send(f2.write_all_at(&[7u8; 4096], 8192)).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "write completed while suspended"
    );
    fx.reg.resume(&sel).unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    // Open → remove is refused with EBUSY; a deferred remove happens at the last close.
    let e = fx.reg.remove(&sel, false).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY);
    fx.reg.remove(&sel, true).unwrap();
    // The error target under an open file gives EIO, not a hang.
    fx.table("s", "0 2048 error", false);
    let mut b = [0u8; 512];
    assert_eq!(
        f.read_exact_at(&mut b, 0).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    drop(f);
    wait_for("deferred removal", || names(&fx.mnt()).is_empty());
}

fn tool(t: &str) -> bool {
    udm_testkit::require_tool(t)
}

#[test]
fn losetup_mkfs_mount_e2fsck() {
    if !fuse_ok()
        || !["losetup", "mkfs.ext4", "e2fsck", "mount"]
            .iter()
            .all(|t| tool(t))
    {
        return;
    }
    let fx = Fixture::new(FuseOpts::default());
    fx.linear("fs", 64, false);
    let file = fx.mnt().join("fs");
    let out = run(Command::new("losetup").args(["-f", "--show"]).arg(&file));
    let loopdev = out.trim().to_string();
    assert!(loopdev.starts_with("/dev/loop"), "{out}");
    let cleanup = Loop(loopdev.clone());
    run(Command::new("mkfs.ext4").args(["-q", "-F", &loopdev]));
    let mp = fx.dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    run(Command::new("mount").arg(&loopdev).arg(&mp));
    let mounted = Mounted(mp.clone());
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..5 {
        std::fs::write(mp.join(format!("f{i}")), &data).unwrap();
    }
    run(&mut Command::new("sync"));
    drop(mounted);
    // Read the files back through a fresh mount, then check the file system.
    run(Command::new("mount").arg(&loopdev).arg(&mp));
    let mounted = Mounted(mp.clone());
    for i in 0..5 {
        assert!(std::fs::read(mp.join(format!("f{i}"))).unwrap() == data);
    }
    drop(mounted);
    run(Command::new("e2fsck").args(["-fn", &loopdev]));
    drop(cleanup);
}

struct Loop(String);
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `BLKGETSIZE64` on a device file gives the device size, as on a block device; other
/// ioctls are ENOTTY.
#[test]
fn blkgetsize64_answers_the_size() {
    if !fuse_ok() {
        return;
    }
    let fx = Fixture::new(FuseOpts::default());
    fx.linear("sz", 3, false);
    let f = File::open(fx.mnt().join("sz")).unwrap();
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which outlives the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x8008_1272, &mut size as *mut u64) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(size, 3 << 20);
    let mut x = 0u64;
    // SAFETY: FS_IOC_GETVERSION (_IOR('v', 1, long)) writes at most 8 bytes into `x`.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x8008_7601, &mut x as *mut u64) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
}
