//! What a new user trips over, end to end through the built binary: relative table paths
//! name the caller's files, devices come back after the daemon is killed (keys never saved),
//! `udm daemon stop`, `--version`, `luks --help`, plain logs, `luks status` naming the file
//! that exists, and the quickstart in a state directory with a space in its path.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use udm_io::Sectors;
use udm_nbd::RemoteDevice;
use udm_proto::{Client, DevSel, Reply, Request};
use udm_testkit::Daemon;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn key_add(d: &Daemon, desc: &str, key: &[u8]) {
    let mut c = Command::new(bin())
        .args(["key", "add", "logon", desc])
        .env("UDM_SOCKET", &d.socket)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(key).unwrap();
    assert!(c.wait().unwrap().success());
}

fn info(d: &Daemon, name: &str) -> Option<udm_proto::DevInfo> {
    match Client::connect(&d.socket).unwrap().call(Request::Info {
        dev: DevSel::Name(name.into()),
        inactive: false,
    }) {
        Ok(Reply::Info(i)) => Some(i),
        _ => None,
    }
}

fn nbd(d: &Daemon, name: &str) -> RemoteDevice {
    RemoteDevice::connect(&d.uri(name), false).unwrap()
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn relative_table_paths_name_the_callers_files() {
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("my disk.img"), vec![7u8; 64 << 10]).unwrap();
    // Run from the image's directory; the daemon's working directory is elsewhere.
    let o = Command::new(bin())
        .args(["create", "rel", "--table", "0 128 linear my\\ disk.img 0"])
        .current_dir(work.path())
        .env("UDM_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let abs = std::fs::canonicalize(work.path().join("my disk.img")).unwrap();
    let table = d.udm_ok(&["table", "rel"]);
    let want = udm_core::escape_arg(abs.to_str().unwrap()).into_owned();
    assert_eq!(table.trim(), format!("0 128 linear {want} 0"));
    let dev = nbd(&d, "rel");
    let got = udm_io::sync::read_at(&dev, Sectors(0), 4096).unwrap();
    assert!(got.iter().all(|b| *b == 7));
}

#[test]
fn devices_come_back_after_kill_9_and_keys_are_never_saved() {
    let mut d = Daemon::start_with(bin(), &["--no-fuse"]);
    let dir = d.dir.path().to_path_buf();
    let img = |n: &str| {
        let p = dir.join(n);
        std::fs::write(&p, vec![0u8; 4 << 20]).unwrap();
        udm_core::escape_arg(p.to_str().unwrap()).into_owned()
    };
    let (a, b) = (img("a.img"), img("b.img"));
    d.create("la", &format!("0 8192 linear {a} 0"));
    d.create("lb", &format!("0 8192 linear {b} 0"));
    d.create(
        "s",
        "0 16384 striped 2 16 /dev/mapper/la 0 /dev/mapper/lb 0",
    );
    let key = [0x5au8; 32];
    key_add(&d, "state-test", &key);
    d.create(
        "c",
        "0 4096 crypt aes-xts-plain64 :32:logon:state-test 0 /dev/mapper/s 8192",
    );
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    d.create(
        "lit",
        &format!("0 1024 crypt aes-xts-plain64 {hex} 0 /dev/mapper/s 12288"),
    );
    d.udm_ok(&[
        "create",
        "ro",
        "--readonly",
        "-u",
        "UUID-RO",
        "--table",
        "0 64 zero",
    ]);
    d.udm_ok(&["create", "held", "--table", "0 64 zero"]);
    d.udm_ok(&["suspend", "held"]);
    // Data through the striped device and through the crypt device above it.
    let (p1, p2) = (pattern(1), pattern(2));
    {
        let s = nbd(&d, "s");
        udm_io::sync::write_at(&s, Sectors(0), &p1).unwrap();
        udm_io::sync::flush(&s).unwrap();
        let c = nbd(&d, "c");
        udm_io::sync::write_at(&c, Sectors(8), &p2).unwrap();
        udm_io::sync::flush(&c).unwrap();
    }
    let state = std::fs::read_dir(dir.join("state")).unwrap();
    let text: String = state
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        !text.contains(&hex),
        "key material in the state file:\n{text}"
    );

    d.kill_and_restart(None);

    for n in ["la", "lb", "s"] {
        assert!(
            info(&d, n).is_some_and(|i| i.live_table),
            "{n} not restored"
        );
    }
    let ro = info(&d, "ro").unwrap();
    assert!(ro.read_only && ro.uuid == "UUID-RO" && ro.live_table);
    assert!(info(&d, "held").unwrap().suspended);
    let s = nbd(&d, "s");
    let got = udm_io::sync::read_at(&s, Sectors(0), 4096).unwrap();
    assert!(got[..] == p1[..], "striped data lost");
    drop(s);
    // Both crypt devices wait for their keys, and `udm ls` says so.
    assert!(info(&d, "c").is_none() && info(&d, "lit").is_none());
    let ls = d.udm_ok(&["ls"]);
    assert!(ls.contains("c\t(not restored:"), "ls:\n{ls}");
    assert!(ls.contains("lit\t(not restored:"), "ls:\n{ls}");
    // The key again, then resume: the keyring device comes back with its data.
    assert!(!d.udm(&["resume", "c"]).status.success());
    key_add(&d, "state-test", &key);
    d.udm_ok(&["resume", "c"]);
    let c = nbd(&d, "c");
    let got = udm_io::sync::read_at(&c, Sectors(8), 4096).unwrap();
    assert!(got[..] == p2[..], "crypt data lost");
    drop(c);
    // The literal-key device comes back when its owner creates it again.
    d.create(
        "lit",
        &format!("0 1024 crypt aes-xts-plain64 {hex} 0 /dev/mapper/s 12288"),
    );
    let ls = d.udm_ok(&["ls"]);
    assert!(!ls.contains("not restored"), "ls:\n{ls}");

    // --no-restore opts out.
    d.kill_and_restart(Some(&["--no-fuse", "--no-restore"]));
    assert!(info(&d, "la").is_none());
}

#[test]
fn daemon_stop_refuses_open_devices_unless_forced() {
    let mut d = Daemon::start_with(bin(), &["--no-fuse"]);
    d.create("busy", "0 64 zero");
    let held = nbd(&d, "busy");
    let o = d.udm(&["daemon", "stop"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("busy (open count 1)"), "{err}");
    assert!(info(&d, "busy").is_some(), "daemon went away");
    let o = Command::new(bin())
        .args(["daemon", "stop", "--force", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = d.child.wait().unwrap();
    assert!(st.success(), "{st:?}");
    let log = d.log();
    assert!(
        log.contains("closing an open device") && log.contains("busy"),
        "{log}"
    );
    assert!(log.contains("udm daemon stopped"));
    assert!(
        !log.contains('\x1b'),
        "ANSI colour in a log that is not a terminal"
    );
    drop(held);
}

#[test]
fn sigterm_logs_the_open_devices_it_closes() {
    let mut d = Daemon::start_with(bin(), &["--no-fuse"]);
    d.create("open1", "0 64 zero");
    let held = nbd(&d, "open1");
    assert!(d.stop().success());
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("closing an open device") && l.contains("open1")),
        "{log}"
    );
    drop(held);
}

#[test]
fn version_and_luks_help_say_what_they_are() {
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    let v = d.udm_ok(&["--version"]);
    let first = v.lines().next().unwrap();
    assert_eq!(first, format!("udm {}", env!("CARGO_PKG_VERSION")));
    assert!(
        v.contains("Library version:") && v.contains("Driver version:"),
        "{v}"
    );
    let o = Command::new(bin())
        .args(["luks", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for opt in [
        "--key-file",
        "-q, --batch-mode",
        "--type",
        "--readonly",
        "--sector-size",
    ] {
        assert!(help.contains(opt), "luks --help lacks {opt}:\n{help}");
    }
}

#[test]
fn luks_status_names_the_device_file_that_exists() {
    if !udm_fuse::usable() {
        assert!(
            std::env::var_os("UDM_REQUIRE_TOOLS").is_none(),
            "FUSE is not usable here"
        );
        return;
    }
    let d = Daemon::start(bin());
    let img = d.dir.path().join("c.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    d.create(
        "cs",
        &format!("0 2048 crypt aes-xts-plain64 {key} 0 {} 0", img.display()),
    );
    let out = d.udm_ok(&["luks", "status", "cs"]);
    let first = out.lines().next().unwrap();
    let path = first.strip_suffix(" is active.").expect(first);
    assert!(Path::new(path).exists(), "{path} does not exist");
    assert_eq!(path, d.dir.path().join("mapper/cs").to_str().unwrap());
}

#[test]
fn quickstart_works_in_a_state_dir_with_a_space() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("my state");
    let socket = dir.path().join("control");
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(bin())
        .env("UDM_SOCKET", &socket)
        .env("UDM_STATE_DIR", &state)
        .stderr(log)
        .spawn()
        .unwrap();
    let mut table = None;
    for _ in 0..500 {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "quickstart exited {st:?}: {}",
                std::fs::read_to_string(dir.path().join("log")).unwrap()
            );
        }
        let o = Command::new(bin())
            .args(["table", "udm0"])
            .env("UDM_SOCKET", &socket)
            .output()
            .unwrap();
        // The device exists before its table is loaded (an empty `table`, as dmsetup
        // prints for a device with none): wait for the table itself.
        if o.status.success() && !o.stdout.trim_ascii().is_empty() {
            table = Some(String::from_utf8(o.stdout).unwrap());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let table = table.expect("udm0 never appeared");
    let img = state.join("udm0.img");
    let words = udm_core::split_args(table.trim());
    assert_eq!(words[3], img.to_str().unwrap(), "{table}");
}

#[test]
fn a_deferred_remove_is_saved_when_it_completes() {
    let mut d = Daemon::start_with(bin(), &["--no-fuse"]);
    d.create("def", "0 64 zero");
    d.create("stays", "0 64 zero");
    let held = nbd(&d, "def");
    d.udm_ok(&["remove", "--deferred", "def"]);
    assert!(info(&d, "def").is_some());
    drop(held);
    let t = std::time::Instant::now();
    while info(&d, "def").is_some() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "never removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The removal reached the state file without any further request.
    let dir = d.dir.path().join("state");
    let t = std::time::Instant::now();
    let saved = || -> String {
        (std::fs::read_dir(&dir).unwrap())
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
            .collect()
    };
    while saved().contains("\"def\"") {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "not saved"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    d.kill_and_restart(None);
    assert!(info(&d, "def").is_none() && info(&d, "stays").is_some());
}
