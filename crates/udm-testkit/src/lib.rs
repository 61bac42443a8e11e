//! udm-testkit: helpers shared by udm's tests — outside-tool probes that obey
//! `UDM_REQUIRE_TOOLS`, and image-file helpers.

pub mod alloc_peak;
pub mod conformance;
pub mod crash;
pub mod dm;
pub mod gate;
pub mod loopdev;
pub mod lvm2;
pub mod mutate;
pub mod prop;
pub mod registry;
pub mod rng;
pub mod thin;
pub mod tool;
pub mod udmcli;
pub mod users;

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when `tool` is on PATH. When it is missing: with `UDM_REQUIRE_TOOLS=1` (CI) this
/// panics so the run fails; otherwise it prints a SKIP line and returns false.
pub fn require_tool(tool: &str) -> bool {
    if which(tool).is_some() {
        return true;
    }
    if std::env::var("UDM_REQUIRE_TOOLS")
        .map(|v| v == "1")
        .unwrap_or(false)
    {
        panic!("required tool `{tool}` is missing (UDM_REQUIRE_TOOLS=1)");
    }
    eprintln!("SKIP: `{tool}` not installed");
    false
}

/// Full path of `tool` on PATH (also /sbin and /usr/sbin).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/sbin", "/usr/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

/// Create a sparse image file of `bytes` bytes.
pub fn image(dir: &Path, name: &str, bytes: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).expect("create image");
    f.set_len(bytes).expect("size image");
    p
}

/// Run a command, panic with its stderr if it fails, return stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The reference VM's `run.sh` (real kernel device-mapper), when it is built: `UDM_REFVM` or
/// `../shared/refvm/run.sh` beside the checkout, with its cache (`REFVM_CACHE`, default
/// /var/cache/refvm) present. Missing → panics under `UDM_REQUIRE_TOOLS=1`, else SKIP + None.
pub fn refvm() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = std::env::var_os("UDM_REFVM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/refvm/run.sh"));
    let cache = std::env::var_os("REFVM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/refvm"));
    let built = cache.join("stamps").is_dir();
    if run.is_file() && built {
        return Some(run);
    }
    if std::env::var("UDM_REQUIRE_TOOLS")
        .map(|v| v == "1")
        .unwrap_or(false)
    {
        panic!(
            "refvm is not available ({} built: {built}); run ../shared/refvm/build.sh",
            run.display()
        );
    }
    eprintln!("SKIP: refvm not available ({})", run.display());
    None
}

/// A table line from refvm with the guest's device numbers as the host names the same
/// devices: a disk (its `MAJ:MIN` in `devs`) as the path at the same place in `paths`, a dm
/// device as `/dev/mapper/NAME` by the guest's `dmsetup info -c -o name,uuid,major,minor`
/// rows (`info`, split into words).
pub fn refvm_host_words<S: AsRef<str>>(
    line: &str,
    devs: &[&str],
    paths: &[String],
    info: &[Vec<S>],
) -> String {
    line.split(' ')
        .map(|w| {
            if let Some(i) = devs.iter().position(|d| *d == w) {
                return paths[i].clone();
            }
            match info
                .iter()
                .find(|r| format!("{}:{}", r[2].as_ref(), r[3].as_ref()) == w)
            {
                Some(r) => format!("/dev/mapper/{}", r[0].as_ref()),
                None => w.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The part of a refvm transcript after a `=== NAME` line, up to the next `=== ` line
/// (guest scripts mark their sections so).
pub fn refvm_section<'a>(out: &'a str, name: &str) -> &'a str {
    let tag = format!("=== {name}\n");
    let start = out
        .find(&tag)
        .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
        + tag.len();
    let rest = &out[start..];
    &rest[..rest.find("=== ").unwrap_or(rest.len())]
}

/// Run a script in refvm with the given disks and shared dir; returns (stdout, stderr, code).
pub fn refvm_run(
    run: &Path,
    disks: &[&Path],
    share: Option<&Path>,
    script: &str,
) -> (String, String, i32) {
    refvm_run_timeout(run, disks, share, script, 300)
}

/// [`refvm_run`] for a long script: the VM may run `secs` seconds (TCG on a loaded machine
/// is slow; the default is 300).
pub fn refvm_run_timeout(
    run: &Path,
    disks: &[&Path],
    share: Option<&Path>,
    script: &str,
    secs: u32,
) -> (String, String, i32) {
    let mut cmd = Command::new(run);
    cmd.arg("--timeout").arg(secs.to_string());
    for d in disks {
        cmd.arg("--disk").arg(d);
    }
    if let Some(s) = share {
        cmd.arg("--share").arg(s);
    }
    cmd.arg("--").arg(script).env("REFVM_QUIET_TCG", "1");
    let out = cmd.output().expect("run refvm");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// `bin create NAME [ARGS…] --table TABLE` against the daemon on `socket` (must succeed):
/// create, load and resume, as dmsetup does.
pub fn create_on(bin: &Path, socket: &Path, name: &str, table: &str, args: &[&str]) {
    run(Command::new(bin)
        .args(["create", name])
        .args(args)
        .args(["--table", table])
        .env("UDM_SOCKET", socket));
}

/// A `udm daemon` on temporary sockets, stopped with SIGTERM when dropped.
pub struct Daemon {
    pub child: std::process::Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub nbd_socket: PathBuf,
    /// The udm binary, for `udm` commands against this daemon.
    pub bin: PathBuf,
    /// The extra daemon arguments it was started with (kept for `restart`).
    pub extra: Vec<String>,
}

impl Daemon {
    /// Start `bin daemon --socket DIR/control --nbd-socket DIR/nbd.sock` and wait for both sockets.
    pub fn start(bin: &Path) -> Daemon {
        Daemon::start_with(bin, &[])
    }

    /// As `start`, with extra daemon arguments. Its state file lives in `DIR/state`.
    pub fn start_with(bin: &Path, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("control");
        let nbd_socket = dir.path().join("nbd.sock");
        let child = Daemon::spawn(bin, dir.path(), extra);
        let d = Daemon {
            bin: bin.to_path_buf(),
            child,
            dir,
            socket,
            nbd_socket,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.wait_ready();
        d
    }

    fn spawn(bin: &Path, dir: &Path, extra: &[&str]) -> std::process::Child {
        let log = (std::fs::OpenOptions::new().create(true).append(true))
            .open(dir.join("daemon.log"))
            .expect("log file");
        Command::new(bin)
            .arg("daemon")
            .arg("--socket")
            .arg(dir.join("control"))
            .arg("--nbd-socket")
            .arg(dir.join("nbd.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .env("UDM_LOG", "debug")
            .stderr(log)
            .spawn()
            .expect("spawn udm daemon")
    }

    fn wait_ready(&self) {
        for _ in 0..1000 {
            if self.socket.exists() && self.nbd_socket.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("udm daemon did not start: {}", self.log());
    }

    /// Kill the daemon with SIGKILL (no shutdown at all), then start it again on the same
    /// sockets and state directory (with `extra` in place of the first start's arguments,
    /// when given). The log goes on in the same file.
    pub fn kill_and_restart(&mut self, extra: Option<&[&str]>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(e) = extra {
            self.extra = e.iter().map(|s| s.to_string()).collect();
        }
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = Daemon::spawn(&self.bin, self.dir.path(), &extra);
        // The killed daemon's sockets are still there; wait until the new one answers.
        for _ in 0..1000 {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
                && std::os::unix::net::UnixStream::connect(&self.nbd_socket).is_ok()
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("udm daemon did not restart: {}", self.log());
    }

    /// `udm ARGS…` against this daemon, stdin empty (not required to succeed).
    pub fn udm(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .args(args)
            .env("UDM_SOCKET", &self.socket)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.display()))
    }

    /// `udm ARGS…` against this daemon, which must succeed: its stdout (a failure shows
    /// the command's output and the daemon's log).
    pub fn udm_ok(&self, args: &[&str]) -> String {
        let o = self.udm(args);
        assert!(
            o.status.success(),
            "udm {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `udm create NAME --table TABLE` against this daemon (must succeed).
    pub fn create(&self, name: &str, table: &str) {
        create_on(&self.bin, &self.socket, name, table, &[]);
    }

    /// `udm create NAME --readonly --table TABLE` against this daemon (must succeed).
    pub fn create_read_only(&self, name: &str, table: &str) {
        create_on(&self.bin, &self.socket, name, table, &["--readonly"]);
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `nbd+unix:///NAME?socket=…` for an export.
    pub fn uri(&self, name: &str) -> String {
        format!("nbd+unix:///{name}?socket={}", self.nbd_socket.display())
    }

    /// Send SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill with a valid pid and signal number has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait for daemon")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, laid out as
/// nbdkit, qemu and libnbd expect (`ca-cert.pem`, `server-*.pem`, `client-*.pem`).
pub fn test_pki(dir: &Path) {
    let ossl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    ossl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca-cert.pem",
                "-days",
                "2",
                "-subj",
                "/CN=udm test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    for (who, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "subjectAltName=DNS:client\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{who}.ext")), ext).unwrap();
        ossl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{who}-key.pem"),
                    "-out",
                    &format!("{who}.csr"),
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat(),
        );
        ossl(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &format!("{who}-cert.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
        ]);
    }
}
