//! The daemon end to end over its control socket and NBD exports: socket permissions, exports
//! appear with their first table and go away on remove, suspend holds a real NBD client's I/O,
//! read-only devices export read-only, garbage on either socket is survived, SIGTERM is clean.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use udm_proto::{Client, DevSel, Line, Reply, Request};
use udm_testkit::{require_tool, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn call(d: &Daemon, r: Request) -> Reply {
    Client::connect(&d.socket)
        .unwrap()
        .call(r)
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

fn sel(n: &str) -> DevSel {
    DevSel::Name(n.into())
}

fn nbdinfo_size(d: &Daemon, name: &str) -> Option<u64> {
    let out = Command::new("nbdinfo")
        .arg("--size")
        .arg(d.uri(name))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

#[test]
fn control_socket_is_private() {
    let d = Daemon::start(bin());
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(
        call(&d, Request::Version),
        Reply::Version([4, _, _])
    ));
}

#[test]
fn exports_follow_the_device_lifecycle() {
    if !require_tool("nbdinfo") {
        return;
    }
    let d = Daemon::start(bin());
    call(
        &d,
        Request::Create {
            name: "e".into(),
            uuid: String::new(),
        },
    );
    assert_eq!(
        nbdinfo_size(&d, "e"),
        None,
        "a device without a table is not exported"
    );
    d.create("z", "0 2048 zero");
    assert_eq!(nbdinfo_size(&d, "z"), Some(1 << 20));
    let list = Command::new("nbdinfo")
        .arg("--list")
        .arg("--json")
        .arg(d.uri(""))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("\"z\"") && !list.contains("\"e\""), "{list}");
    call(
        &d,
        Request::Remove {
            dev: sel("z"),
            deferred: false,
        },
    );
    assert_eq!(nbdinfo_size(&d, "z"), None);
}

#[test]
fn suspend_holds_a_real_clients_io_until_resume() {
    if !require_tool("qemu-io") {
        return;
    }
    let d = Daemon::start(bin());
    let img = d.dir.path().join("a.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    d.create("s", &format!("0 2048 linear {} 0", img.display()));
    call(
        &d,
        Request::Suspend {
            dev: sel("s"),
            noflush: false,
            nolockfs: false,
        },
    );
    let t0 = Instant::now();
    let mut child = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x42 4096 8192"])
        .arg(d.uri("s"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the write finished while the device was suspended"
    );
    assert!(std::fs::read(&img).unwrap()[4096..12288]
        .iter()
        .all(|&b| b == 0));
    call(
        &d,
        Request::Resume {
            dev: sel("s"),
            noflush: false,
            nolockfs: false,
        },
    );
    assert!(child.wait().unwrap().success());
    assert!(t0.elapsed() >= Duration::from_millis(700));
    let data = std::fs::read(&img).unwrap();
    assert!(data[4096..12288].iter().all(|&b| b == 0x42));
    assert!(data[..4096].iter().all(|&b| b == 0) && data[12288..].iter().all(|&b| b == 0));
}

#[test]
fn read_only_devices_export_read_only() {
    if !require_tool("nbdinfo") || !require_tool("qemu-io") {
        return;
    }
    let d = Daemon::start(bin());
    let img = d.dir.path().join("a.img");
    std::fs::write(&img, vec![7u8; 1 << 20]).unwrap();
    d.create_read_only("r", &format!("0 2048 linear {} 0", img.display()));
    let out = Command::new("nbdinfo")
        .arg("--json")
        .arg(d.uri("r"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"is_read_only\": true"));
    let w = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 1 0 512"])
        .arg(d.uri("r"))
        .output()
        .unwrap();
    assert!(!w.status.success() || String::from_utf8_lossy(&w.stdout).contains("failed"));
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 7));
}

#[test]
fn garbage_on_the_control_socket_is_survived() {
    let d = Daemon::start(bin());
    for junk in [
        &b"\xff\xff\xff\xffxxxx"[..],
        b"\x00\x00\x00\x05hello",
        b"\x00\x00",
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        let _ = s.write_all(junk);
    }
    d.create("ok", "0 8 zero");
    assert!(
        matches!(call(&d, Request::Info { dev: sel("ok"), inactive: false }), Reply::Info(i) if i.live_table)
    );
}

#[test]
fn sigterm_flushes_and_exits_cleanly() {
    let mut d = Daemon::start(bin());
    d.create("z", "0 8 zero");
    let st = d.stop();
    assert!(st.success(), "daemon exit: {st:?}\n{}", d.log());
    assert!(!d.socket.exists() && !d.nbd_socket.exists());
    assert!(d.log().contains("udm daemon stopped"));
}

#[test]
fn errors_carry_errno_and_reason() {
    let d = Daemon::start(bin());
    let mut c = Client::connect(&d.socket).unwrap();
    c.call(Request::Create {
        name: "x".into(),
        uuid: String::new(),
    })
    .unwrap();
    let e = c
        .call(Request::Load {
            dev: sel("x"),
            table: vec![Line {
                start: 0,
                len: 8,
                ttype: "linear".into(),
                params: "/nonexistent 0".into(),
            }],
            read_only: false,
        })
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("line 1: linear: Device lookup failed"),
        "{e}"
    );
    let e = c
        .call(Request::Info {
            dev: sel("nope"),
            inactive: false,
        })
        .unwrap_err();
    assert_eq!(e.errno(), 6); // ENXIO
}

#[test]
fn sigterm_with_a_client_held_by_a_suspended_device_still_exits() {
    if !require_tool("qemu-io") {
        return;
    }
    let mut d = Daemon::start(bin());
    let img = d.dir.path().join("a.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    d.create("s", &format!("0 2048 linear {} 0", img.display()));
    call(
        &d,
        Request::Suspend {
            dev: sel("s"),
            noflush: false,
            nolockfs: false,
        },
    );
    let mut client = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "read 0 4k"])
        .arg(d.uri("s"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    assert!(d.stop().success(), "{}", d.log());
    assert!(t0.elapsed() < Duration::from_secs(10));
    let _ = client.wait();
}

#[test]
fn crypt_keys_never_reach_the_log() {
    let d = Daemon::start(bin());
    let img = d.dir.path().join("c.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let key = "0123456789abcdeffedcba98765432100123456789abcdeffedcba9876543210";
    d.create(
        "c",
        &format!("0 2048 crypt aes-xts-plain64 {key} 0 {} 0", img.display()),
    );
    call(
        &d,
        Request::Suspend {
            dev: sel("c"),
            noflush: false,
            nolockfs: false,
        },
    );
    let argv = ["key", "set", key].map(String::from).to_vec();
    call(
        &d,
        Request::Message {
            dev: sel("c"),
            sector: 0,
            argv,
        },
    );
    let log = d.log();
    assert!(
        log.contains("crypt aes-xts-plain64 0000"),
        "table logged masked:\n{log}"
    );
    assert!(!log.contains(key), "key leaked into the log:\n{log}");
}
