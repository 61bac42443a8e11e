//! The daemon's FUSE export: on by default beside the control socket when FUSE is usable,
//! `--fuse DIR` elsewhere, `--no-fuse` off; files follow devices created over the control
//! socket, their bytes are the NBD export's, and SIGTERM unmounts (also with a file open).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use udm_proto::{Client, Reply, Request};
use udm_testkit::Daemon;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
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

fn call(d: &Daemon, r: Request) -> Reply {
    Client::connect(&d.socket)
        .unwrap()
        .call(r)
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

fn fuse_dir(d: &Daemon) -> Option<PathBuf> {
    match call(d, Request::DaemonInfo) {
        Reply::Daemon { fuse_dir, .. } => fuse_dir.map(PathBuf::from),
        r => panic!("unexpected reply {r:?}"),
    }
}

fn wait_file(p: &Path) {
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mounted(p: &Path) -> bool {
    let m = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    m.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
}

#[test]
fn default_fuse_dir_serves_devices_and_unmounts_on_sigterm() {
    if !fuse_ok() {
        return;
    }
    let mut d = Daemon::start(bin());
    let dir = fuse_dir(&d).expect("FUSE on by default");
    assert_eq!(dir, d.dir.path().join("mapper"));
    let img = udm_testkit::image(d.dir.path(), "a.img", 2 << 20);
    d.create("a", &format!("0 4096 linear {} 0", img.display()));
    let file = dir.join("a");
    wait_file(&file);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    f.write_all_at(b"through fuse", 512).unwrap();
    f.sync_all().unwrap();
    // The same bytes through the NBD export.
    let c = udm_nbd::NbdClient::connect_uri(&d.uri("a")).unwrap();
    let mut b = vec![0u8; 512];
    c.read(512, &mut b).unwrap();
    assert_eq!(&b[..12], b"through fuse");
    drop(c);
    // SIGTERM with the file still open: the daemon exits and the mount is gone.
    let t = Instant::now();
    assert!(d.stop().success(), "{}", d.log());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!mounted(&dir), "{} still mounted", dir.display());
    let mut b = [0u8; 16];
    assert!(f.read_at(&mut b, 0).is_err());
}

#[test]
fn fuse_flags_choose_the_dir_or_turn_it_off() {
    if !fuse_ok() {
        return;
    }
    let other = tempfile::tempdir().unwrap();
    let want = other.path().join("files");
    let mut d = Daemon::start_with(bin(), &["--fuse", want.to_str().unwrap()]);
    assert_eq!(fuse_dir(&d), Some(want.clone()));
    assert!(mounted(&want));
    d.stop();
    assert!(!mounted(&want));
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    assert_eq!(fuse_dir(&d), None);
    assert!(!d.dir.path().join("mapper").exists());
}

#[test]
fn a_killed_daemon_leaves_no_dead_mount() {
    if !fuse_ok() {
        return;
    }
    let mut d = Daemon::start(bin());
    let dir = fuse_dir(&d).expect("FUSE on by default");
    assert!(mounted(&dir));
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let t = Instant::now();
    while mounted(&dir) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{} still mounted",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
