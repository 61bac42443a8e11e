//! Failure drills for `mirror` and `multipath` through a real daemon and NBD clients:
//! the daemon's path checker fails a dead path and reinstates it (and `udm multipath -ll`
//! shows it), also an `nbd://` path whose server stopped, with `no_path_retry`; a multipath device survives alternating path failures under fio verify, with
//! and without `queue_if_no_path`; a mirror leg killed under fio verify never reaches the
//! client and is rebuilt after it comes back; a mirror with an `nbd://` leg keeps serving
//! while the remote is down and resyncs only the regions written meanwhile.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use udm_testkit::{require_tool, run, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> String {
    run(Command::new(bin()).args(args).env("UDM_SOCKET", &d.socket))
}

fn status(d: &Daemon, name: &str) -> String {
    udm(d, &["status", name])
}

/// Replace `name`'s table (reload + resume).
fn swap(d: &Daemon, name: &str, table: &str) {
    udm(d, &["reload", name, "--table", table]);
    udm(d, &["resume", name]);
}

/// Wait up to `limit` for `cond` on `name`'s status; returns the time it took.
fn wait_status(d: &Daemon, name: &str, limit: Duration, cond: impl Fn(&str) -> bool) -> Duration {
    let t = Instant::now();
    loop {
        let s = status(d, name);
        if cond(&s) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "{name}: status stayed {s}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fio(uri: &str, extra: &[&str]) -> std::process::Child {
    Command::new("fio")
        .args([
            "--name=drill",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--bs=16k",
            "--size=8m",
            "--iodepth=8",
            "--rw=randwrite",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--randseed=11",
            "--verify_state_save=0",
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn fio_ok(out: Output, d: &Daemon) {
    assert!(
        out.status.success(),
        "fio: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

fn conf(d: &tempfile::TempDir, text: &str) -> String {
    let p = d.path().join("multipath.conf");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn checker_fails_a_dead_path_within_a_poll_and_reinstates_it() {
    let work = tempfile::tempdir().unwrap();
    let img = udm_testkit::image(work.path(), "data.img", 8 << 20);
    let c = conf(&work, "defaults {\n  failback immediate\n}\n");
    let d = Daemon::start_with(bin(), &["--no-fuse", "--multipath-conf", &c]);
    let good = format!("0 16384 linear {} 0", img.display());
    d.create("pa", &good);
    d.create("pb", &good);
    let info = |n: &str| udm(&d, &["info", "-c", "--noheadings", "-o", "major,minor", n]);
    let (pa, pb) = (info("pa").trim().to_string(), info("pb").trim().to_string());
    d.create(
        "mp",
        "0 16384 multipath 0 0 2 1 round-robin 0 1 1 /dev/mapper/pa 1 round-robin 0 1 1 /dev/mapper/pb 1",
    );
    // A path that errors is failed by the checker (default poll: 1 s) without any I/O;
    // killed mid-way between polls (the checker starts with the device).
    std::thread::sleep(Duration::from_millis(1500));
    swap(&d, "pa", "0 16384 error");
    let took = wait_status(&d, "mp", Duration::from_secs(5), |s| {
        s.contains(&format!("{pa} F 1"))
    });
    eprintln!("checker failed the dead path after {took:?} (poll interval 1 s)");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let ll = udm(&d, &["multipath", "-ll"]);
    assert_eq!(
        ll,
        format!(
            "mp dm-2 udm,multipath\n\
             size=8.0M features='0' hwhandler='0' wp=rw\n\
             |-+- policy='round-robin 0' prio=0 status=enabled\n\
             | `- {pa} failed faulty running\n\
             `-+- policy='round-robin 0' prio=0 status=enabled\n\
             \x20 `- {pb} active ready running\n"
        )
    );
    // I/O goes to group 2 meanwhile.
    let client = udm_nbd::NbdClient::connect_uri(&d.uri("mp")).unwrap();
    let mut buf = vec![0u8; 4096];
    client.read(0, &mut buf).unwrap();
    assert!(status(&d, "mp").contains(&format!("A 0 1 0 {pb} A 0")));
    // Back: reinstated, and failback immediate switches to group 1 again.
    swap(&d, "pa", &good);
    wait_status(&d, "mp", Duration::from_secs(5), |s| {
        s.contains(&format!("{pa} A 1"))
    });
    wait_status(&d, "mp", Duration::from_secs(5), |s| s.contains(" 2 1 "));
    client.read(0, &mut buf).unwrap();
    assert!(
        status(&d, "mp").contains(&format!("A 0 1 0 {pa} A 1")),
        "{}",
        status(&d, "mp")
    );
    assert!(udm(&d, &["multipath", "-ll", "mp"]).contains("status=active\n| `- "));
}

fn alternate(queue: bool) {
    if !require_tool("fio") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = udm_testkit::image(work.path(), "data.img", 16 << 20);
    let c = conf(&work, "defaults {\n  polling_interval 0.2\n}\n");
    let d = Daemon::start_with(bin(), &["--no-fuse", "--multipath-conf", &c]);
    let good = format!("0 32768 linear {} 0", img.display());
    d.create("pa", &good);
    d.create("pb", &good);
    let feat = if queue { "1 queue_if_no_path" } else { "0" };
    d.create(
        "mp",
        &format!(
            "0 32768 multipath {feat} 0 1 1 round-robin 0 2 1 /dev/mapper/pa 1 /dev/mapper/pb 1"
        ),
    );
    let info = |n: &str| udm(&d, &["info", "-c", "--noheadings", "-o", "major,minor", n]);
    let ids = [info("pa").trim().to_string(), info("pb").trim().to_string()];
    let all_up = |s: &str| !s.contains(" F ");
    let job = fio(&d.uri("mp"), &["--rate=2m"]);
    for round in 0..6 {
        let v = round % 2;
        let victim = ["pa", "pb"][v];
        swap(&d, victim, "0 32768 error");
        let dead = format!("{} F ", ids[v]);
        wait_status(&d, "mp", Duration::from_secs(10), |s| s.contains(&dead));
        if queue && round == 3 {
            // Both down for a moment: I/O queues, then goes on.
            swap(&d, "pa", "0 32768 error");
            wait_status(&d, "mp", Duration::from_secs(10), |s| {
                s.matches(" F ").count() == 2
            });
            std::thread::sleep(Duration::from_millis(300));
            swap(&d, "pa", &good);
        }
        swap(&d, victim, &good);
        wait_status(&d, "mp", Duration::from_secs(10), all_up);
    }
    let out = job.wait_with_output().unwrap();
    fio_ok(out, &d);
    let s = status(&d, "mp");
    let fails: u32 = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(3)
        .filter(|w| w[1] == "A" || w[1] == "F")
        .map(|w| w[2].parse::<u32>().unwrap_or(0))
        .sum();
    assert!(fails >= 6, "every round failed a path: {s}");
    // Verify what fio wrote, through the multipath device again.
    let out = fio(&d.uri("mp"), &["--verify_only"])
        .wait_with_output()
        .unwrap();
    fio_ok(out, &d);
}

#[test]
fn multipath_survives_alternating_path_failures_without_queueing() {
    alternate(false);
}

#[test]
fn multipath_survives_alternating_path_failures_with_queue_if_no_path() {
    alternate(true);
}

#[test]
fn a_mirror_leg_dies_under_fio_and_is_rebuilt() {
    if !require_tool("fio") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let a = udm_testkit::image(work.path(), "a.img", 16 << 20);
    let b = udm_testkit::image(work.path(), "b.img", 16 << 20);
    let d = Daemon::start_with(bin(), &["--no-fuse", "--no-multipathd"]);
    let leg_b = format!("0 32768 linear {} 0", b.display());
    d.create("legb", &leg_b);
    d.create(
        "m",
        &format!(
            "0 32768 mirror core 1 1024 2 {} 0 /dev/mapper/legb 0 2 handle_errors keep_log",
            a.display()
        ),
    );
    wait_status(&d, "m", Duration::from_secs(30), |s| {
        s.contains(" 32/32 1 AA ")
    });
    let job = fio(&d.uri("m"), &["--rate=4m"]);
    std::thread::sleep(Duration::from_millis(500));
    swap(&d, "legb", "0 32768 error");
    let out = job.wait_with_output().unwrap();
    fio_ok(out, &d);
    let s = status(&d, "m");
    assert!(s.contains(" 1 AD 1 core"), "{s}");
    let out = fio(&d.uri("m"), &["--verify_only"])
        .wait_with_output()
        .unwrap();
    fio_ok(out, &d);
    // The leg comes back; a suspend/resume cycle (what lvconvert --repair or dmeventd does)
    // resyncs the regions written while it was dead, and the legs are identical again.
    swap(&d, "legb", &leg_b);
    udm(&d, &["suspend", "m"]);
    udm(&d, &["resume", "m"]);
    wait_status(&d, "m", Duration::from_secs(30), |s| {
        s.contains(" 32/32 1 AA ")
    });
    udm(&d, &["remove", "m"]);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "legs differ"
    );
}

#[test]
fn a_mirror_with_a_remote_leg_serves_through_an_outage_and_resyncs_what_changed() {
    if !require_tool("fio") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let local = udm_testkit::image(work.path(), "local.img", 16 << 20);
    let remote = udm_testkit::image(work.path(), "remote.img", 16 << 20);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let leg = format!("0 32768 linear {} 0", remote.display());
    let server_args = [
        "--no-fuse",
        "--no-restore",
        "--nbd-insecure",
        "--nbd-listen",
        &listen,
    ];
    let server = Daemon::start_with(bin(), &server_args);
    server.create("leg", &leg);
    let c = Daemon::start_with(bin(), &["--no-fuse", "--no-multipathd"]);
    c.create(
        "m",
        &format!(
            "0 32768 mirror core 1 256 2 {} 0 nbd://{listen}/leg?outage=1 0 2 handle_errors keep_log",
            local.display()
        ),
    );
    wait_status(&c, "m", Duration::from_secs(30), |s| {
        s.contains(" 128/128 1 AA ")
    });
    // The remote stops; writes go on (they wait out the 1 s outage limit once).
    drop(server);
    let out = fio(&c.uri("m"), &["--size=2m", "--offset=4m"])
        .wait_with_output()
        .unwrap();
    fio_ok(out, &c);
    let s = status(&c, "m");
    assert!(s.contains(" 1 AD 1 core"), "{s}");
    let in_sync: u64 = s
        .split_whitespace()
        .find_map(|f| f.strip_suffix("/128"))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("while the remote was down: {s}");
    // Only the regions written meanwhile (2 MiB at 4 MiB: 16 of 128) are out of sync.
    assert_eq!(in_sync, 128 - 16, "{s}");
    // The remote comes back with its old data; a suspend/resume resyncs the 16 regions.
    let server = Daemon::start_with(bin(), &server_args);
    server.create("leg", &leg);
    let t = Instant::now();
    loop {
        udm(&c, &["suspend", "m"]);
        udm(&c, &["resume", "m"]);
        std::thread::sleep(Duration::from_millis(300));
        if status(&c, "m").contains(" 128/128 1 AA ") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{}", status(&c, "m"));
    }
    udm(&c, &["remove", "m"]);
    assert!(
        std::fs::read(&local).unwrap() == std::fs::read(&remote).unwrap(),
        "legs differ"
    );
}

#[test]
fn no_path_retry_queues_for_n_polls_then_fails_and_queues_again_when_a_path_returns() {
    let work = tempfile::tempdir().unwrap();
    let img = udm_testkit::image(work.path(), "data.img", 8 << 20);
    let c = conf(&work, "polling_interval 0.2\nno_path_retry 3\n");
    let d = Daemon::start_with(bin(), &["--no-fuse", "--multipath-conf", &c]);
    let good = format!("0 16384 linear {} 0", img.display());
    d.create("pa", &good);
    d.create(
        "mp",
        "0 16384 multipath 0 0 1 1 round-robin 0 1 1 /dev/mapper/pa 1",
    );
    let client = udm_nbd::NbdClient::connect_uri(&d.uri("mp")).unwrap();
    let mut buf = vec![0u8; 4096];
    client.read(0, &mut buf).unwrap();
    swap(&d, "pa", "0 16384 error");
    // The checker turns queueing on when the last path fails...
    wait_status(&d, "mp", Duration::from_secs(5), |s| s.contains(" F 1 "));
    let table = || udm(&d, &["table", "mp"]);
    let t = Instant::now();
    while !table().contains(" 1 queue_if_no_path ") {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", table());
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...and off after 3 polls with no path: the queued read then fails.
    let e = client.read(0, &mut buf).unwrap_err();
    assert_eq!(e.errno(), libc::EIO, "{e}");
    assert!(table().starts_with("0 16384 multipath 0 "), "{}", table());
    // A path back: reinstated, queueing on again, I/O works.
    swap(&d, "pa", &good);
    wait_status(&d, "mp", Duration::from_secs(5), |s| s.contains(" A 1 "));
    let t = Instant::now();
    while !table().contains(" 1 queue_if_no_path ") {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", table());
        std::thread::sleep(Duration::from_millis(20));
    }
    client.read(0, &mut buf).unwrap();
}

#[test]
fn the_checker_fails_an_nbd_path_whose_server_stopped() {
    let work = tempfile::tempdir().unwrap();
    let img = udm_testkit::image(work.path(), "lun.img", 8 << 20);
    let servers: Vec<Daemon> = (0..2)
        .map(|_| {
            let s = Daemon::start_with(bin(), &["--no-fuse", "--no-restore", "--no-multipathd"]);
            s.create("lun", &format!("0 16384 linear {} 0", img.display()));
            s
        })
        .collect();
    let c = conf(&work, "polling_interval 0.2\n");
    let d = Daemon::start_with(bin(), &["--no-fuse", "--multipath-conf", &c]);
    let (ua, ub) = (servers[0].uri("lun"), servers[1].uri("lun"));
    d.create(
        "mp",
        &format!("0 16384 multipath 0 0 1 1 round-robin 0 2 1 {ua}&outage=30 1 {ub}&outage=30 1"),
    );
    let mut servers = servers;
    let first = servers.remove(0);
    drop(first);
    // The dead server's path is failed by the checker, with no client I/O at all.
    let took = wait_status(&d, "mp", Duration::from_secs(5), |s| s.contains(" F 1 "));
    eprintln!("nbd path failed {took:?} after its server stopped");
    let s = status(&d, "mp");
    assert!(s.contains(&format!("{ub}&outage=30 A 0")), "{s}");
    // I/O goes to the live path at once (not after the 30 s outage limit).
    let client = udm_nbd::NbdClient::connect_uri(&d.uri("mp")).unwrap();
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    for i in 0..4 {
        client.read(i * 4096, &mut buf).unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Remove the device before the daemon stops (its shutdown would flush the dead path).
    drop(client);
    udm(&d, &["remove", "mp"]);
}
