//! Other local users, end to end through the built binary with a second local user
//! (`udmtest`, see `udm_testkit::users`): a squatter's daemon never receives a request, the
//! per-user socket directory is private, the NBD socket is 0600 whatever the umask (or
//! shared with `--nbd-group`), plain TCP needs `--nbd-insecure`, sockets never replace files
//! or live daemons, control characters in names are refused, an oversized table leaves no
//! device, and a flood of idle NBD connections does not lock a client out.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use udm_proto::{Client, Request};
use udm_testkit::users::{as_second_user, second_user};
use udm_testkit::{require_tool, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Wait until `socket` answers, or the daemon exits (then its exit status).
fn wait_up(child: &mut Child, socket: &Path) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return None;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "daemon hung");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `udm daemon --socket DIR/control --nbd-socket DIR/nbd.sock --no-fuse --state-dir DIR/state`
/// plus `extra`, logging to DIR/log.
fn daemon_cmd(mut cmd: Command, dir: &Path, extra: &[&str]) -> Command {
    let log = std::fs::File::create(dir.join("log")).unwrap();
    cmd.arg("daemon")
        .arg("--socket")
        .arg(dir.join("control"))
        .arg("--nbd-socket")
        .arg(dir.join("nbd.sock"))
        .arg("--no-fuse")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .env("UDM_LOG", "debug")
        .stderr(log);
    cmd
}

/// Run a command that must exit by itself (a daemon that refuses to start); one still
/// running after 20 s is killed and the test fails.
fn exits(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// A daemon child, stopped with SIGTERM when dropped (also when an assertion fails first).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
}

fn stop(child: Running) {
    drop(child);
}

#[test]
fn a_squatters_daemon_never_receives_a_request() {
    let Some((uid, gid)) = second_user() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    let mut child = Running(
        daemon_cmd(as_second_user(bin()), dir.path(), &[])
            .spawn()
            .unwrap(),
    );
    let socket = dir.path().join("control");
    assert!(
        wait_up(&mut child.0, &socket).is_none(),
        "squatter did not start"
    );
    let mut key = Command::new(bin())
        .args(["key", "add", "logon", "victim"])
        .env("UDM_SOCKET", &socket)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let _ = key.stdin.take().unwrap().write_all(&[0x42; 32]);
    let o = key.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&format!("runs as uid {uid}")),
        "{}",
        text(&o)
    );
    let ls = Command::new(bin())
        .arg("ls")
        .env("UDM_SOCKET", &socket)
        .output()
        .unwrap();
    assert!(!ls.status.success());
    stop(child);
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("udm daemon started"), "{log}");
    assert!(
        !log.contains("control request"),
        "a request reached it:\n{log}"
    );
}

#[test]
fn the_per_user_socket_directory_is_private() {
    let Some((uid, _)) = second_user() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let run_dir = PathBuf::from(format!("/tmp/udm-{uid}"));
    let _ = std::fs::remove_dir_all(&run_dir);
    let daemon = || {
        let mut c = as_second_user(bin());
        c.args(["daemon", "--no-fuse", "--state-dir"])
            .arg(dir.path().join("state"))
            .env_remove("UDM_SOCKET")
            .env_remove("XDG_RUNTIME_DIR")
            .stderr(Stdio::piped());
        c
    };
    // A directory someone else made (and anyone may write) is refused.
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = exits(&mut daemon());
    assert!(!o.status.success(), "daemon used {}", run_dir.display());
    assert!(text(&o).contains("no one else may"), "{}", text(&o));
    std::fs::remove_dir(&run_dir).unwrap();
    // Missing: the daemon creates it, 0700 and its own; the user's CLI finds it there.
    let mut child = Running(daemon().stderr(Stdio::null()).spawn().unwrap());
    let socket = run_dir.join("control");
    let st = wait_up(&mut child.0, &socket);
    let m = std::fs::metadata(&run_dir).unwrap();
    let ls = as_second_user(bin())
        .arg("ls")
        .env_remove("UDM_SOCKET")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    stop(child);
    let _ = std::fs::remove_dir_all(&run_dir);
    assert!(st.is_none(), "daemon exited: {st:?}");
    assert_eq!((m.uid(), m.mode() & 0o777), (uid, 0o700));
    assert!(ls.status.success(), "{}", text(&ls));
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "No devices found\n");
}

#[test]
fn the_nbd_socket_is_private_whatever_the_umask() {
    let Some((_, gid)) = second_user() else {
        return;
    };
    if !require_tool("nbdinfo") {
        return;
    }
    for group in [None, Some("udmtest")] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let extra: Vec<&str> = group.map(|g| vec!["--nbd-group", g]).unwrap_or_default();
        let mut sh = Command::new("sh");
        sh.args(["-c", "umask 000; exec \"$0\" \"$@\""]).arg(bin());
        let mut child = Running(daemon_cmd(sh, dir.path(), &extra).spawn().unwrap());
        let socket = dir.path().join("control");
        assert!(wait_up(&mut child.0, &socket).is_none());
        let nbd = dir.path().join("nbd.sock");
        let m = std::fs::metadata(&nbd).unwrap();
        Command::new(bin())
            .args(["create", "z", "--table", "0 64 zero"])
            .env("UDM_SOCKET", &socket)
            .status()
            .unwrap();
        let other = as_second_user("nbdinfo")
            .arg("--size")
            .arg(format!("nbd+unix:///z?socket={}", nbd.display()))
            .output()
            .unwrap();
        stop(child);
        match group {
            None => {
                assert_eq!(m.mode() & 0o777, 0o600);
                assert!(!other.status.success(), "another user read a device");
            }
            Some(_) => {
                assert_eq!((m.mode() & 0o777, m.gid()), (0o660, gid));
                assert!(other.status.success(), "{}", text(&other));
                assert_eq!(String::from_utf8_lossy(&other.stdout).trim(), "32768");
            }
        }
    }
}

#[test]
fn nbd_over_tcp_needs_tls_or_nbd_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let o = exits(&mut daemon_cmd(
        Command::new(bin()),
        dir.path(),
        &["--nbd-listen", "127.0.0.1:0"],
    ));
    assert!(!o.status.success());
    assert!(text(&o).contains("--nbd-insecure"), "{}", text(&o));
    assert!(!dir.path().join("control").exists());
    let mut child = Running(
        daemon_cmd(
            Command::new(bin()),
            dir.path(),
            &["--nbd-listen", "127.0.0.1:0", "--nbd-insecure"],
        )
        .spawn()
        .unwrap(),
    );
    let st = wait_up(&mut child.0, &dir.path().join("control"));
    stop(child);
    assert!(st.is_none(), "daemon exited: {st:?}");
    let help = Command::new(bin()).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--nbd-insecure"));
}

#[test]
fn sockets_never_replace_files_or_live_daemons() {
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    d.create("keep", "0 64 zero");
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a socket should go stays as it is.
    for which in ["--socket", "--nbd-socket"] {
        let f = dir.path().join("precious");
        std::fs::write(&f, b"data").unwrap();
        let other = if which == "--socket" {
            "nbd.sock"
        } else {
            "control"
        };
        let o = exits(
            Command::new(bin())
                .args(["daemon", "--no-fuse", which])
                .arg(&f)
                .arg(if which == "--socket" {
                    "--nbd-socket"
                } else {
                    "--socket"
                })
                .arg(dir.path().join(other))
                .arg("--state-dir")
                .arg(dir.path().join("state")),
        );
        assert!(!o.status.success(), "{which}: daemon started");
        assert!(text(&o).contains("not a socket"), "{}", text(&o));
        assert_eq!(std::fs::read(&f).unwrap(), b"data");
        std::fs::remove_file(&f).unwrap();
    }
    // The live daemon's NBD socket is not taken over by a second daemon.
    let o = exits(
        Command::new(bin())
            .args(["daemon", "--no-fuse", "--socket"])
            .arg(dir.path().join("control2"))
            .arg("--nbd-socket")
            .arg(&d.nbd_socket)
            .arg("--state-dir")
            .arg(dir.path().join("state")),
    );
    assert!(!o.status.success(), "second daemon took the NBD socket");
    assert!(text(&o).contains("already listening"), "{}", text(&o));
    if require_tool("nbdinfo") {
        let o = Command::new("nbdinfo")
            .arg("--size")
            .arg(d.uri("keep"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
}

#[test]
fn names_with_control_characters_are_refused() {
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    let mut c = Client::connect(&d.socket).unwrap();
    for name in ["nul\0name", "bell\x07", "new\nline", "esc\x1b[31m"] {
        let r = c.call(Request::Create {
            name: name.into(),
            uuid: String::new(),
        });
        let e = r.expect_err(name);
        assert_eq!(e.errno(), libc::EINVAL, "{name:?}: {e}");
    }
    d.create("plain", "0 8 zero");
    let r = c.call(Request::Rename {
        dev: udm_proto::DevSel::Name("plain".into()),
        new_name: "tab\there".into(),
    });
    assert!(r.is_err());
    let ls = Command::new(bin())
        .arg("ls")
        .env("UDM_SOCKET", &d.socket)
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert_eq!(ls.lines().count(), 1, "{ls}");
    assert!(ls.starts_with("plain\t(253:"), "{ls}");
}

#[test]
fn an_oversized_table_is_refused_and_leaves_no_device() {
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    let table = d.dir.path().join("big.table");
    // About 1.3 M lines: the Load frame is well over the 64 MiB limit.
    let mut t = String::with_capacity(20 << 20);
    for i in 0..1_300_000u64 {
        t.push_str(&format!("{} 8 zero\n", i * 8));
    }
    std::fs::write(&table, t).unwrap();
    let o = Command::new(bin())
        .args(["create", "big"])
        .arg(&table)
        .env("UDM_SOCKET", &d.socket)
        .output()
        .unwrap();
    std::fs::remove_file(&table).unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("over the control protocol's limit"),
        "{}",
        text(&o)
    );
    let ls = Command::new(bin())
        .arg("ls")
        .env("UDM_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "No devices found\n");
}

#[test]
fn idle_nbd_connections_do_not_lock_out_a_client() {
    if !require_tool("nbdinfo") {
        return;
    }
    // SAFETY: getrlimit/setrlimit with a valid, exclusively borrowed struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max.min(8192);
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    d.create("z", "0 64 zero");
    let idle: Vec<_> = (0..1100)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&d.nbd_socket).ok())
        .collect();
    assert!(idle.len() > 1024, "only {} connections opened", idle.len());
    let t = Instant::now();
    let o = Command::new("timeout")
        .args(["5", "nbdinfo", "--size"])
        .arg(d.uri("z"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "locked out after {:?}: {}",
        t.elapsed(),
        text(&o)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "32768");
    drop(idle);
}
