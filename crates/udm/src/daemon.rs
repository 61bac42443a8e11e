//! `udm daemon`: owns the Registry, serves the control socket and the NBD exports, and shuts
//! down cleanly (drain, flush, close exports) on SIGTERM/SIGINT.

use anyhow::{bail, Context, Result};
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use udm_core::{DevSel, DmError, Registry, StatusType, TableLine};
use udm_io::Sectors;
use udm_proto::{
    read_frame, write_frame, RemoteError, Reply, ReplyFrame, Request, RequestFrame, PROTO_VERSION,
};

mod exports;
#[cfg(feature = "ublk")]
mod ublk;

/// Daemon settings (the command-line contract scripts rely on).
#[derive(Debug, Default)]
struct Opts {
    socket: Option<PathBuf>,
    nbd_socket: Option<PathBuf>,
    nbd_listen: Option<String>,
    /// `--fuse DIR`, `--no-fuse`, `--fuse-buffered` (page cache instead of direct I/O).
    fuse: Option<PathBuf>,
    no_fuse: bool,
    fuse_buffered: bool,
    /// `--nbd-outage-limit SECS`: how long I/O to an unreachable `nbd://` device waits.
    nbd_outage_limit: Option<f64>,
    /// `--nbd-allow NAMES`, `--nbd-read-only NAMES` (comma lists; `PREFIX*` matches).
    nbd_policy: exports::NbdPolicy,
    /// `--tls DIR` (server-cert.pem, server-key.pem, ca-cert.pem), `--tls-optional`,
    /// `--tls-verify-peer`.
    tls: Option<PathBuf>,
    tls_optional: bool,
    tls_verify_peer: bool,
    /// `--ublk`: every device also as /dev/ublkbN (cargo feature `ublk`).
    ublk: bool,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut val = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{key} needs a value")),
            }
        };
        match key {
            "--socket" => o.socket = Some(val()?.into()),
            "--nbd-socket" => o.nbd_socket = Some(val()?.into()),
            "--nbd-listen" => o.nbd_listen = Some(val()?),
            "--fuse" => o.fuse = Some(val()?.into()),
            "--no-fuse" => o.no_fuse = true,
            "--fuse-buffered" => o.fuse_buffered = true,
            "--ublk" => o.ublk = true,
            "--tls" => o.tls = Some(val()?.into()),
            "--tls-optional" => o.tls_optional = true,
            "--tls-verify-peer" => o.tls_verify_peer = true,
            "--verity-trusted-certs" => {
                let dir = val()?;
                let subjects = udm_targets::verity::sig::load_trusted_dir(Path::new(&dir))
                    .map_err(anyhow::Error::msg)
                    .context("--verity-trusted-certs")?;
                tracing::info!("verity: trusting {subjects:?} from {dir}");
            }
            "--nbd-allow" => o.nbd_policy.allow.get_or_insert_with(Vec::new).extend(
                val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "--nbd-read-only" => o.nbd_policy.read_only.extend(
                val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "--nbd-outage-limit" => {
                let v = val()?;
                let s: f64 = v
                    .parse()
                    .ok()
                    .filter(|s| (0.0..=86_400.0).contains(s))
                    .with_context(|| format!("--nbd-outage-limit {v}: expected seconds"))?;
                o.nbd_outage_limit = Some(s);
            }
            "--foreground" | "-f" => {}
            "-h" | "--help" => {
                print!("{}", super::USAGE);
                std::process::exit(0);
            }
            other => bail!("unknown daemon option {other:?} (see udm --help)"),
        }
    }
    Ok(o)
}

/// Block the shutdown signals in every thread, so one thread can `sigwait` for them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it before use, and
    // pthread_sigmask only reads the set we pass.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` was initialised by block_signals and `sig` is a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Bind the control socket: parent dir 0700, socket 0600, stale sockets replaced.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "another udm daemon is already listening on {}",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

pub fn main(args: &[String], quickstart: bool) -> Result<()> {
    let sigs = block_signals();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UDM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let opts = parse_opts(args)?;
    let socket = opts
        .socket
        .clone()
        .unwrap_or_else(udm_proto::default_socket);
    let nbd_socket = opts
        .nbd_socket
        .clone()
        .unwrap_or_else(|| socket.parent().unwrap_or(Path::new(".")).join("nbd.sock"));

    if let Some(s) = opts.nbd_outage_limit {
        udm_nbd::remote::set_default_outage_limit(Duration::from_secs_f64(s));
    }
    let registry = Registry::new(udm_targets::builtin());
    registry.register_provider(Arc::new(exports::NbdProvider));
    let listener = bind_socket(&socket)?;
    let tls = match &opts.tls {
        Some(dir) => Some(
            udm_nbd::TlsServer::from_dir(dir, opts.tls_verify_peer, !opts.tls_optional)
                .with_context(|| format!("--tls {}", dir.display()))?,
        ),
        None => None,
    };
    let fuse = exports::fuse_where(opts.fuse.clone(), opts.no_fuse, &socket);
    let fuse_opts = udm_fuse::FuseOpts {
        direct_io: !opts.fuse_buffered,
        ..Default::default()
    };
    let exports = exports::Exports::start(
        &registry,
        &nbd_socket,
        opts.nbd_listen.as_deref(),
        fuse,
        fuse_opts,
        opts.nbd_policy.clone(),
        tls,
    )?;
    #[cfg(feature = "ublk")]
    let ublk = match opts.ublk {
        true if !udm_ublk::available() => {
            bail!("--ublk: the kernel has no ublk (/dev/ublk-control; modprobe ublk_drv)")
        }
        true => Some(ublk::UblkExports::start(&registry)),
        false => None,
    };
    #[cfg(not(feature = "ublk"))]
    if opts.ublk {
        bail!("--ublk: this udm was built without the `ublk` feature");
    }
    let info = Arc::new(DaemonInfo {
        nbd_socket: Some(nbd_socket.display().to_string()),
        nbd_tcp: exports.tcp_addr(),
        fuse_dir: exports.fuse_dir().map(|d| d.display().to_string()),
    });
    eprintln!("udm daemon: control socket {}", socket.display());
    eprintln!(
        "udm daemon: NBD exports on nbd+unix:///NAME?socket={}",
        nbd_socket.display()
    );
    if let Some(a) = &info.nbd_tcp {
        eprintln!("udm daemon: NBD exports on nbd://{a}/NAME");
    }
    if let Some(d) = &info.fuse_dir {
        eprintln!("udm daemon: devices as files in {d}/NAME");
    }
    tracing::info!(pid = std::process::id(), "udm daemon started");

    {
        let registry = registry.clone();
        let info = info.clone();
        std::thread::Builder::new()
            .name("udm-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(c) => {
                            let (r, i) = (registry.clone(), info.clone());
                            let _ = std::thread::Builder::new()
                                .name("udm-client".into())
                                .spawn(move || serve_client(c, &r, &i));
                        }
                        Err(e) => tracing::warn!("control accept: {e}"),
                    }
                }
            })?;
    }
    if quickstart {
        quickstart_device(&registry, &nbd_socket)?;
    }

    let sig = wait_signal(&sigs);
    tracing::info!(
        signal = sig,
        "shutting down: closing exports, draining and flushing devices"
    );
    #[cfg(feature = "ublk")]
    if let Some(u) = ublk {
        u.shutdown();
    }
    // Closing exports waits for their in-flight bios; bios held by a suspended device would
    // wait forever, so keep failing those until the exports are closed.
    let closing = std::thread::spawn(move || exports.shutdown());
    while !closing.is_finished() {
        for d in registry.list().iter().filter(|d| d.suspended) {
            if let Ok(dev) = registry.get(&DevSel::Name(d.name.clone())) {
                let n = dev.abort_held();
                if n > 0 {
                    tracing::warn!(device = %d.name, held = n, "suspended at shutdown: failing held I/O");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = closing.join();
    // Flush what every live table writes to, underneath the devices (a suspended device would
    // hold a flush submitted to it).
    for d in registry.list() {
        let Ok(dev) = registry.get(&DevSel::Name(d.name.clone())) else {
            continue;
        };
        // Mapped devices underneath are flushed by their own turn of this loop.
        let deps = dev.live_table().map(|t| t.deps()).unwrap_or_default();
        for h in deps.iter().filter(|h| h.dm_name.is_none()) {
            if let Err(e) = udm_io::sync::flush(h.dev.as_ref()) {
                tracing::warn!(device = %d.name, backing = %h.id, "flush at shutdown failed: {e}");
            }
        }
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&nbd_socket);
    tracing::info!("udm daemon stopped");
    Ok(())
}

struct DaemonInfo {
    nbd_socket: Option<String>,
    nbd_tcp: Option<String>,
    fuse_dir: Option<String>,
}

/// The quickstart: an image file in the state directory and a linear device `udm0` over it.
fn quickstart_device(registry: &Registry, nbd_socket: &Path) -> Result<()> {
    let dir = std::env::var_os("UDM_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("udm")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/udm")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/udm"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let img = dir.join("udm0.img");
    if !img.exists() {
        std::fs::File::create(&img)?.set_len(1 << 30)?;
    }
    let size = std::fs::metadata(&img)?.len() / 512;
    let name = "udm0";
    registry
        .create(name, "")
        .map_err(|e| anyhow::anyhow!("create {name}: {e}"))?;
    let sel = DevSel::Name(name.into());
    let line = TableLine {
        start: Sectors(0),
        len: Sectors(size),
        ttype: "linear".into(),
        params: format!("{} 0", img.display()),
    };
    registry
        .load(&sel, &[line], false)
        .map_err(|e| anyhow::anyhow!("load {name}: {e}"))?;
    registry
        .resume(&sel)
        .map_err(|e| anyhow::anyhow!("resume {name}: {e}"))?;
    eprintln!(
        "udm: device {name}: linear over {} ({} MiB)",
        img.display(),
        size / 2048
    );
    eprintln!(
        "udm: try   nbdinfo 'nbd+unix:///{name}?socket={}'",
        nbd_socket.display()
    );
    eprintln!("udm: and   UDM_SOCKET=... udm ls / udm table {name}   (stop with Ctrl-C)");
    Ok(())
}

fn serve_client(c: UnixStream, registry: &Registry, info: &DaemonInfo) {
    let Ok(wc) = c.try_clone() else { return };
    let mut r = BufReader::new(c);
    let mut w = BufWriter::new(wc);
    loop {
        let frame: RequestFrame = match read_frame(&mut r) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("control client: {e}");
                let reply = ReplyFrame {
                    v: PROTO_VERSION,
                    reply: Err(RemoteError {
                        errno: libc::EPROTO,
                        kind: "protocol".into(),
                        message: e.to_string(),
                    }),
                };
                let _ = write_frame(&mut w, &reply);
                return;
            }
        };
        let reply = if frame.v != PROTO_VERSION {
            Err(RemoteError {
                errno: libc::EPROTO,
                kind: "protocol".into(),
                message: format!(
                    "protocol version {} not supported (daemon speaks {PROTO_VERSION})",
                    frame.v
                ),
            })
        } else {
            tracing::debug!(req = %loggable(&frame.req), "control request");
            handle(registry, info, frame.req).map_err(remote)
        };
        if write_frame(
            &mut w,
            &ReplyFrame {
                v: PROTO_VERSION,
                reply,
            },
        )
        .is_err()
        {
            return;
        }
    }
}

/// A request as it may appear in the log: crypt keys in tables and `key set` messages masked
/// (as `dmsetup table` masks them), key-store payloads never shown.
fn loggable(req: &Request) -> String {
    match req {
        Request::Load {
            dev,
            table,
            read_only,
        } => {
            let lines: Vec<String> = table
                .iter()
                .map(|l| {
                    let p = if l.ttype == "crypt" {
                        udm_targets::crypt::mask_key(&l.params)
                    } else {
                        l.params.clone()
                    };
                    format!("{} {} {} {p}", l.start, l.len, l.ttype)
                })
                .collect();
            format!("Load {{ dev: {dev:?}, read_only: {read_only}, table: {lines:?} }}")
        }
        Request::Message { dev, sector, argv }
            if argv.first().map(String::as_str) == Some("key") =>
        {
            format!("Message {{ dev: {dev:?}, sector: {sector}, argv: [\"key\", …] }}")
        }
        other => format!("{other:?}"),
    }
}

fn remote(e: DmError) -> RemoteError {
    let kind = match &e {
        DmError::NoDevice => "nodev",
        DmError::Busy(_) => "busy",
        DmError::Invalid(_) => "invalid",
        DmError::Table { .. } => "table",
        DmError::Errno { .. } => "errno",
    };
    RemoteError {
        errno: e.errno(),
        kind: kind.into(),
        message: e.to_string(),
    }
}

fn handle(reg: &Registry, info: &DaemonInfo, req: Request) -> Result<Reply, DmError> {
    Ok(match req {
        Request::Version => Reply::Version(reg.version()),
        Request::RemoveAll { deferred } => Reply::Remaining(reg.remove_all(deferred)),
        Request::List => Reply::List(reg.list()),
        Request::Create { name, uuid } => Reply::Info(reg.create(&name, &uuid)?),
        Request::Remove { dev, deferred } => Reply::Info(reg.remove(&dev, deferred)?),
        Request::Rename { dev, new_name } => Reply::Info(reg.rename(&dev, &new_name)?),
        Request::SetUuid { dev, uuid } => Reply::Info(reg.set_uuid(&dev, &uuid)?),
        Request::Suspend {
            dev,
            noflush,
            nolockfs,
        } => Reply::Info(reg.suspend(&dev, noflush, nolockfs)?),
        Request::Resume { dev, .. } => Reply::Info(reg.resume(&dev)?),
        Request::Info { dev, inactive } => Reply::Info(reg.info(&dev, inactive)?),
        Request::Wait {
            dev,
            event_nr,
            inactive,
            timeout_ms,
        } => {
            let t = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
            reg.wait(&dev, event_nr, t)?;
            let (info, targets) = reg.status(&dev, inactive, StatusType::Info)?;
            Reply::Status { info, targets }
        }
        Request::Load {
            dev,
            table,
            read_only,
        } => {
            let lines: Vec<TableLine> = table
                .into_iter()
                .map(|l| TableLine {
                    start: Sectors(l.start),
                    len: Sectors(l.len),
                    ttype: l.ttype,
                    params: l.params,
                })
                .collect();
            Reply::Info(reg.load(&dev, &lines, read_only)?)
        }
        Request::Clear { dev } => Reply::Info(reg.clear(&dev)?),
        Request::Deps { dev, inactive } => {
            let (info, deps) = reg.deps(&dev, inactive)?;
            Reply::Deps { info, deps }
        }
        Request::Status {
            dev,
            inactive,
            table,
        } => {
            let ty = if table {
                StatusType::Table
            } else {
                StatusType::Info
            };
            let (info, targets) = reg.status(&dev, inactive, ty)?;
            Reply::Status { info, targets }
        }
        Request::ListVersions => Reply::Versions(reg.list_versions()),
        Request::KeyAdd { ktype, desc, key } => {
            udm_targets::crypt::keyring::add(&ktype, &desc, &key.0).map_err(|e| {
                DmError::Errno {
                    errno: e.errno(),
                    msg: e.to_string(),
                }
            })?;
            Reply::Ok
        }
        Request::Message { dev, sector, argv } => Reply::Message(reg.message(&dev, sector, &argv)?),
        Request::SetGeometry {
            dev,
            cylinders,
            heads,
            sectors,
            start,
        } => {
            reg.set_geometry(&dev, cylinders, heads, sectors, start)?;
            Reply::Ok
        }
        Request::DaemonInfo => Reply::Daemon {
            pid: std::process::id(),
            nbd_socket: info.nbd_socket.clone(),
            nbd_tcp: info.nbd_tcp.clone(),
            fuse_dir: info.fuse_dir.clone(),
        },
    })
}
