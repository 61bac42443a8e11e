//! The thin-provisioning walkthrough users try first, through the daemon and the CLI:
//! make a pool on two image files, create a thin device larger than the pool, put ext4 on
//! it (mkfs.ext4 and e2fsck over the FUSE file), see the pool's and the thin's status,
//! NBD block status showing the unprovisioned space as holes, a snapshot that checks
//! clean, and metadata the real `thin_check` accepts afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use udm_proto::{Client, Reply, Request};
use udm_testkit::{require_tool, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> String {
    udm_testkit::run(Command::new(bin()).args(args).env("UDM_SOCKET", &d.socket))
}

fn fuse_file(d: &Daemon, name: &str) -> Option<PathBuf> {
    let dir = match Client::connect(&d.socket)
        .unwrap()
        .call(Request::DaemonInfo)
    {
        Ok(Reply::Daemon { fuse_dir, .. }) => fuse_dir.map(PathBuf::from)?,
        r => panic!("unexpected reply {r:?}"),
    };
    let p = dir.join(name);
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(p)
}

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

fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn thin_walkthrough_ext4_snapshot_and_holes() {
    let tools = ["mkfs.ext4", "e2fsck", "nbdinfo", "thin_check"];
    if !tools.iter().all(|t| require_tool(t)) || !fuse_ok() {
        return;
    }
    let d = Daemon::start(bin());
    let tmp = tempfile::tempdir().unwrap();
    let meta = udm_testkit::image(tmp.path(), "meta.img", 4 << 20);
    let data = udm_testkit::image(tmp.path(), "data.img", 1 << 30);
    let (m, dd) = (meta.display().to_string(), data.display().to_string());
    let pool = format!("0 2097152 thin-pool {m} {dd} 128 1024");
    udm(&d, &["create", "pool", "--table", &pool]);
    assert_eq!(
        udm(&d, &["status", "pool"]),
        "0 2097152 thin-pool 0 112/1024 0/16384 - rw discard_passdown queue_if_no_space - 256 \n"
    );
    assert_eq!(
        udm(&d, &["table", "pool"]),
        format!("0 2097152 thin-pool {m} {dd} 128 1024 0 \n")
    );
    udm(&d, &["message", "pool", "0", "create_thin", "0"]);
    // 2 GiB of thin device on a 1 GiB pool.
    udm(
        &d,
        &[
            "create",
            "thin",
            "--table",
            "0 4194304 thin /dev/mapper/pool 0",
        ],
    );
    assert_eq!(udm(&d, &["status", "thin"]), "0 4194304 thin 0 -\n");
    let f = fuse_file(&d, "thin").expect("FUSE dir");
    ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&f));
    ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&f));
    let st = udm(&d, &["status", "thin"]);
    let mapped: u64 = st.split(' ').nth(3).unwrap().parse().unwrap();
    assert!(
        mapped > 0 && mapped < 4194304 / 4,
        "ext4 provisions a little: {st}"
    );
    // NBD block status: most of the device is a hole.
    let map = udm_testkit::run(Command::new("nbdinfo").arg("--map").arg(d.uri("thin")));
    let holes: u64 = map
        .lines()
        .filter(|l| l.contains("hole"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(holes > (1 << 31) / 2, "holes {holes}:\n{map}");
    // A snapshot of the live filesystem (origin suspended, as the kernel requires).
    udm(&d, &["suspend", "thin"]);
    udm(&d, &["message", "pool", "0", "create_snap", "1", "0"]);
    udm(&d, &["resume", "thin"]);
    udm(
        &d,
        &[
            "create",
            "snap",
            "--table",
            "0 4194304 thin /dev/mapper/pool 1",
        ],
    );
    let s = fuse_file(&d, "snap").unwrap();
    ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&s));
    // Writes to the origin break sharing; the snapshot stays clean.
    ok(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "again"])
        .arg(&f));
    ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&s));
    let pst = udm(&d, &["status", "pool"]);
    assert!(pst.starts_with("0 2097152 thin-pool 0 "), "{pst}");
    for n in ["snap", "thin", "pool"] {
        udm(&d, &["remove", n]);
    }
    udm_testkit::thin::thin_check(&meta).unwrap();
}

/// Used data blocks from a thin-pool status line.
fn pool_used(st: &str) -> u64 {
    st.split(' ')
        .nth(5)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Bytes a file really occupies (`stat` %b × %B).
fn allocated(p: &Path) -> u64 {
    let s = udm_testkit::run(Command::new("stat").args(["-c", "%b %B"]).arg(p));
    let v: Vec<u64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    v[0] * v[1]
}

fn seek(f: &std::fs::File, off: i64, whence: i32) -> Option<i64> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    (r >= 0).then_some(r)
}

#[test]
fn thin_holes_seek_sparse_copies_and_discard() {
    let tools = ["nbdcopy", "qemu-img", "qemu-io", "cp", "stat"];
    if !tools.iter().all(|t| require_tool(t)) || !fuse_ok() {
        return;
    }
    use std::os::unix::fs::FileExt;
    let d = Daemon::start(bin());
    let tmp = tempfile::tempdir().unwrap();
    let meta = udm_testkit::image(tmp.path(), "meta.img", 4 << 20);
    let data = udm_testkit::image(tmp.path(), "data.img", 64 << 20);
    let pool = format!(
        "0 131072 thin-pool {} {} 128 16",
        meta.display(),
        data.display()
    );
    udm(&d, &["create", "pool", "--table", &pool]);
    udm(&d, &["message", "pool", "0", "create_thin", "0"]);
    // 256 MiB thin device; 64 KiB blocks.
    udm(
        &d,
        &[
            "create",
            "thin",
            "--table",
            "0 524288 thin /dev/mapper/pool 0",
        ],
    );
    let size: u64 = 256 << 20;
    let blk: u64 = 64 << 10;
    let f = fuse_file(&d, "thin").unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f)
        .unwrap();
    // Writes provisioning blocks 0, 160, 161 (one write across both), 1000 (partly) and
    // the last block.
    let writes: [(u64, usize, u8); 4] = [
        (0, 4096, 0xa1),
        (160 * blk + blk - 512, 1024, 0xb2),
        (1000 * blk + 5000, 3000, 0xc3),
        (size - 512, 512, 0xd4),
    ];
    let mut model = vec![0u8; size as usize];
    for &(off, len, v) in &writes {
        file.write_all_at(&vec![v; len], off).unwrap();
        model[off as usize..off as usize + len].fill(v);
    }
    file.sync_all().unwrap();
    let last = size / blk - 1;
    let data_blocks = [0u64, 160, 161, 1000, last];
    let used = pool_used(&udm(&d, &["status", "pool"]));
    assert_eq!(used, data_blocks.len() as u64);
    // SEEK_DATA / SEEK_HOLE see exactly the provisioned blocks.
    let b = |n: u64| (n * blk) as i64;
    assert_eq!(seek(&file, 0, libc::SEEK_DATA), Some(0));
    assert_eq!(seek(&file, 100, libc::SEEK_HOLE), Some(b(1)));
    assert_eq!(seek(&file, b(1), libc::SEEK_DATA), Some(b(160)));
    assert_eq!(seek(&file, b(160) + 7, libc::SEEK_DATA), Some(b(160) + 7));
    assert_eq!(seek(&file, b(160), libc::SEEK_HOLE), Some(b(162)));
    assert_eq!(seek(&file, b(162), libc::SEEK_DATA), Some(b(1000)));
    assert_eq!(seek(&file, b(1001), libc::SEEK_DATA), Some(b(last)));
    assert_eq!(seek(&file, b(last), libc::SEEK_HOLE), Some(size as i64));
    assert_eq!(seek(&file, size as i64, libc::SEEK_DATA), None);
    // Sparse copies from the FUSE file and from the NBD export: same bytes, and only
    // about the provisioned blocks allocated.
    let provisioned = data_blocks.len() as u64 * blk;
    let cp_out = tmp.path().join("cp.img");
    ok(Command::new("cp")
        .arg("--sparse=always")
        .arg(&f)
        .arg(&cp_out));
    let nbd_out = tmp.path().join("nbdcopy.img");
    udm_testkit::image(tmp.path(), "nbdcopy.img", size);
    ok(Command::new("nbdcopy").arg(d.uri("thin")).arg(&nbd_out));
    let qemu_out = tmp.path().join("qemu.img");
    ok(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(d.uri("thin"))
        .arg(&qemu_out));
    for out in [&cp_out, &nbd_out, &qemu_out] {
        assert!(
            std::fs::read(out).unwrap() == model,
            "{} differs",
            out.display()
        );
        let a = allocated(out);
        assert!(
            a <= provisioned,
            "{}: {a} bytes allocated, {provisioned} provisioned",
            out.display()
        );
    }
    // FUSE punch hole gives block 160 back to the pool; NBD trim gives back 1000.
    ok(Command::new("fallocate")
        .args(["--punch-hole", "--keep-size", "--offset"])
        .arg((160 * blk).to_string())
        .args(["--length", &blk.to_string()])
        .arg(&f));
    assert_eq!(pool_used(&udm(&d, &["status", "pool"])), used - 1);
    ok(Command::new("qemu-io")
        .args(["-f", "raw", "-c"])
        .arg(format!("discard {} {}", 1000 * blk, blk))
        .arg(d.uri("thin")));
    assert_eq!(pool_used(&udm(&d, &["status", "pool"])), used - 2);
    assert_eq!(seek(&file, b(1), libc::SEEK_DATA), Some(b(161)));
    assert_eq!(seek(&file, b(162), libc::SEEK_DATA), Some(b(last)));
    drop(file);
    for n in ["thin", "pool"] {
        udm(&d, &["remove", n]);
    }
}
