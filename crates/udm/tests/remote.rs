//! NBD-backed devices across hosts: two udm daemons serve one leg each (in network
//! namespaces joined by veth pairs when `ip netns add` works, else on loopback), a third
//! daemon stripes over `nbd://HOST:PORT/leg`. One server is killed and restarted under fio
//! (verify passes across the outage), then killed for longer than the outage limit (I/O
//! fails with EIO, new I/O at once), then restarted (I/O resumes, the data is intact).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use udm_proto::Client;
use udm_testkit::{require_tool, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

/// A test host: a network namespace with a veth link to this one, or loopback.
struct Host {
    ns: Option<String>,
    ip: String,
    port: u16,
}

impl Host {
    fn new(i: u8) -> Host {
        let ns = format!("udmt{}{i}", std::process::id() % 100_000);
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if ok(&["netns", "add", &ns]) {
            let (outer, inner) = (format!("{ns}o"), format!("{ns}i"));
            let net = format!("10.213.{}", 10 + i);
            let (a, b) = (format!("{net}.1/24"), format!("{net}.2/24"));
            let all = ok(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]) && ok(&["link", "set", &inner, "netns", &ns])
                && ok(&["addr", "add", &a, "dev", &outer])
                && ok(&["link", "set", &outer, "up"])
                && ok(&["-n", &ns, "addr", "add", &b, "dev", &inner])
                && ok(&["-n", &ns, "link", "set", &inner, "up"])
                && ok(&["-n", &ns, "link", "set", "lo", "up"]);
            if all {
                return Host {
                    ns: Some(ns),
                    ip: format!("{net}.2"),
                    port: 10809,
                };
            }
            eprintln!("note: veth setup failed; using loopback");
            let _ = ok(&["netns", "del", &ns]);
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Host {
            ns: None,
            ip: "127.0.0.1".into(),
            port,
        }
    }
    fn uri(&self, outage: u32) -> String {
        format!("nbd://{}:{}/leg?outage={outage}", self.ip, self.port)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(ns) = &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{ns}o")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A udm daemon on a host serving `leg`, a linear device over `img`.
struct Server {
    child: Child,
}

impl Server {
    fn start(host: &Host, dir: &Path, tag: &str, img: &Path) -> Server {
        let socket = dir.join(format!("{tag}.ctl"));
        let nbd = dir.join(format!("{tag}.nbd"));
        let _ = std::fs::remove_file(&nbd);
        let mut cmd = match &host.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let log = std::fs::File::create(dir.join(format!("{tag}.log"))).unwrap();
        let child = cmd
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .arg("--nbd-socket")
            .arg(&nbd)
            .arg("--no-fuse")
            // A restarted server starts empty here: the test recreates its export.
            .arg("--no-restore")
            .arg("--state-dir")
            .arg(dir.join(format!("{tag}.state")))
            .arg("--nbd-insecure")
            .arg("--nbd-listen")
            .arg(format!("{}:{}", host.ip, host.port))
            .stderr(log)
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !(nbd.exists() && Client::connect(&socket).is_ok()) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "server {tag} did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let sectors = std::fs::metadata(img).unwrap().len() / 512;
        udm_testkit::create_on(
            bin(),
            &socket,
            "leg",
            &format!("0 {sectors} linear {} 0", img.display()),
            &[],
        );
        Server { child }
    }
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fio(uri: &str, extra: &[&str]) -> std::process::Output {
    Command::new("fio")
        .args([
            "--name=remote",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--bs=64k",
            "--size=16m",
            "--iodepth=8",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--randseed=7",
            "--verify_state_save=0",
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn striped_over_two_servers_survives_a_restart_and_fails_after_the_limit() {
    if !require_tool("fio") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (ha, hb) = (Host::new(1), Host::new(2));
    let img_a = udm_testkit::image(work.path(), "a.img", 32 << 20);
    let img_b = udm_testkit::image(work.path(), "b.img", 32 << 20);
    let _a = Server::start(&ha, work.path(), "a", &img_a);
    let b = Server::start(&hb, work.path(), "b", &img_b);
    eprintln!("servers at {}:{} and {}:{}", ha.ip, ha.port, hb.ip, hb.port);
    let c = Daemon::start_with(bin(), &["--no-fuse"]);
    c.create(
        "s",
        &format!("0 131072 striped 2 128 {} 0 {} 0", ha.uri(2), hb.uri(2)),
    );
    let uri = c.uri("s");

    // Kill and restart server b under fio's writes (the outage is shorter than the limit).
    let writer = {
        let uri = uri.clone();
        std::thread::spawn(move || fio(&uri, &["--rw=randwrite", "--rate=16m"]))
    };
    std::thread::sleep(Duration::from_millis(400));
    b.kill();
    std::thread::sleep(Duration::from_millis(1000));
    let b = Server::start(&hb, work.path(), "b", &img_b);
    let out = writer.join().unwrap();
    assert!(
        out.status.success(),
        "fio across the outage: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    assert!(c.log().contains("reconnected"), "{}", c.log());

    // A longer outage: I/O to b's leg fails with EIO after the limit, then at once.
    b.kill();
    let client = udm_nbd::NbdClient::connect_uri(&uri).unwrap();
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    let e = client.read(65536, &mut buf).unwrap_err();
    let waited = t.elapsed();
    assert_eq!(e.errno(), libc::EIO, "{e}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    let t = Instant::now();
    assert!(client.read(65536, &mut buf).is_err());
    assert!(t.elapsed() < Duration::from_millis(500));
    // a's leg still works meanwhile.
    client.read(0, &mut buf).unwrap();

    // Restart: I/O resumes and what fio wrote is intact.
    let _b = Server::start(&hb, work.path(), "b", &img_b);
    let t = Instant::now();
    while client.read(65536, &mut buf).is_err() {
        assert!(t.elapsed() < Duration::from_secs(5), "no recovery");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(client);
    let out = fio(&uri, &["--rw=randwrite", "--verify_only"]);
    assert!(
        out.status.success(),
        "verify after recovery: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon registers the NBD device provider: a table naming `nbd://` opens the remote
/// export (without the provider the core would take the URI for a path and fail).
#[test]
fn linear_over_a_remote_export_writes_through_to_the_server() {
    let work = tempfile::tempdir().unwrap();
    let h = Host::new(3);
    let img = udm_testkit::image(work.path(), "r.img", 4 << 20);
    let _s = Server::start(&h, work.path(), "r", &img);
    let c = Daemon::start_with(bin(), &["--no-fuse"]);
    c.create("r", &format!("0 8192 linear {} 0", h.uri(2)));
    let client = udm_nbd::NbdClient::connect_uri(&c.uri("r")).unwrap();
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    client.write(1 << 20, &data, false).unwrap();
    client.flush().unwrap();
    let on_disk = std::fs::read(&img).unwrap();
    assert_eq!(&on_disk[1 << 20..(1 << 20) + data.len()], &data[..]);
}
