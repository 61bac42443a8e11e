//! The daemon's frontends: every mapped device with a table is an NBD export named after it
//! and, when FUSE is available, a file of that name in the FUSE directory.

use crate::DaemonError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use udm_core::{DevSel, Registry};

/// Which devices NBD clients may see, and which of them only read-only
/// (`--nbd-allow`, `--nbd-read-only`: names, or a prefix ending in `*`).
#[derive(Debug, Clone, Default)]
pub struct NbdPolicy {
    /// `None`: every device is exported.
    pub allow: Option<Vec<String>>,
    pub read_only: Vec<String>,
}

fn matches(pats: &[String], name: &str) -> bool {
    pats.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

impl NbdPolicy {
    fn allowed(&self, name: &str) -> bool {
        self.allow.as_ref().is_none_or(|a| matches(a, name))
    }
}

type Result<T> = std::result::Result<T, DaemonError>;

/// Registry devices as NBD exports; an NBD connection counts as an open of the device.
struct RegistryExports(Registry, NbdPolicy);

impl udm_nbd::Exports for RegistryExports {
    fn list(&self) -> Vec<String> {
        self.0
            .list()
            .into_iter()
            .filter(|d| d.live_table && self.1.allowed(&d.name))
            .map(|d| d.name)
            .collect()
    }
    fn open(&self, name: &str) -> Option<udm_nbd::ExportHandle> {
        if !self.1.allowed(name) {
            tracing::info!("nbd: export {name:?} is not in the allowlist");
            return None;
        }
        let sel = DevSel::Name(name.to_string());
        let info = self.0.info(&sel, false).ok()?;
        if !info.live_table {
            return None;
        }
        let (dev, guard) = self.0.open(&sel).ok()?;
        Some(udm_nbd::ExportHandle {
            dev,
            read_only: info.read_only || matches(&self.1.read_only, name),
            guard: Box::new(guard),
        })
    }
}

/// Remote NBD exports (`nbd://`, `nbd+unix://`, `nbds://`, `nbds+unix://`) as table
/// devices: the core's device-provider hook, registered by the daemon.
pub struct NbdProvider;

impl udm_core::DeviceProvider for NbdProvider {
    fn claims(&self, spec: &str) -> bool {
        udm_nbd::remote::is_remote_spec(spec)
    }
    fn open(
        &self,
        spec: &str,
        read_only: bool,
    ) -> std::result::Result<Arc<dyn udm_io::BlockDevice>, udm_core::ProviderError> {
        Ok(udm_nbd::RemoteDevice::open(spec, read_only)?)
    }
}

/// Where (and whether) to mount the FUSE export.
#[derive(Debug, Clone)]
pub enum FuseWhere {
    Off,
    /// `--fuse DIR`: failing to mount is an error.
    Dir(PathBuf),
    /// The default: mount here when FUSE is usable, else go on without it.
    Default(PathBuf),
}

/// The NBD unix socket: where, and which group may use it besides its owner.
#[derive(Debug, Clone, Copy)]
pub struct NbdUnix<'a> {
    pub path: &'a Path,
    pub gid: Option<u32>,
}

/// Running export servers.
pub struct Exports {
    unix: udm_nbd::ServerHandle,
    tcp: Option<(udm_nbd::ServerHandle, String)>,
    fuse: Option<udm_fuse::FuseExport>,
}

fn start_fuse(
    reg: &Registry,
    at: FuseWhere,
    opts: udm_fuse::FuseOpts,
) -> Result<Option<udm_fuse::FuseExport>> {
    match at {
        FuseWhere::Off => Ok(None),
        FuseWhere::Dir(d) => Ok(Some(
            udm_fuse::FuseExport::mount(reg, &d, opts)
                .map_err(DaemonError::ctx(format!("--fuse {}", d.display())))?,
        )),
        FuseWhere::Default(d) if udm_fuse::usable() => {
            match udm_fuse::FuseExport::mount(reg, &d, opts) {
                Ok(f) => Ok(Some(f)),
                Err(e) => {
                    tracing::warn!("FUSE export not started: {e}");
                    Ok(None)
                }
            }
        }
        FuseWhere::Default(_) => {
            tracing::info!("FUSE is not usable here; no FUSE export");
            Ok(None)
        }
    }
}

impl Exports {
    pub fn start(
        reg: &Registry,
        nbd_unix: NbdUnix<'_>,
        tcp: Option<&str>,
        fuse: FuseWhere,
        fuse_opts: udm_fuse::FuseOpts,
        policy: NbdPolicy,
        tls: Option<udm_nbd::TlsServer>,
    ) -> Result<Exports> {
        let nbd_socket = nbd_unix.path;
        let mut server = udm_nbd::NbdServer::new(Arc::new(RegistryExports(reg.clone(), policy)));
        if let Some(t) = tls {
            server = server.with_tls(t);
        }
        // The caller checked that nothing but a stale socket is there.
        let unix = server
            .serve_unix_private(nbd_socket, nbd_unix.gid)
            .map_err(DaemonError::io(format!(
                "NBD socket {}",
                nbd_socket.display()
            )))?;
        let tcp = match tcp {
            Some(a) => {
                let addr: std::net::SocketAddr = a.parse().map_err(DaemonError::ctx(format!(
                    "--nbd-listen {a}: expected HOST:PORT"
                )))?;
                Some((
                    server
                        .serve_tcp(addr)
                        .map_err(DaemonError::io(format!("NBD listen on {a}")))?,
                    a.to_string(),
                ))
            }
            None => None,
        };
        let fuse = start_fuse(reg, fuse, fuse_opts)?;
        Ok(Exports { unix, tcp, fuse })
    }
    /// The FUSE directory, when mounted.
    pub fn fuse_dir(&self) -> Option<PathBuf> {
        self.fuse.as_ref().map(|f| f.dir().to_path_buf())
    }
    pub fn tcp_addr(&self) -> Option<String> {
        self.tcp.as_ref().map(|(_, a)| a.clone())
    }
    /// Stop accepting, finish in-flight replies and close every connection; unmount FUSE.
    pub fn shutdown(self) {
        if let Some(f) = self.fuse {
            f.shutdown();
        }
        self.unix.shutdown();
        if let Some((t, _)) = self.tcp {
            t.shutdown();
        }
    }
}

/// `--fuse DIR` wins; `--no-fuse` turns it off; the default is `mapper` beside the control
/// socket, mounted when FUSE is usable.
pub fn fuse_where(dir: Option<PathBuf>, off: bool, socket: &Path) -> FuseWhere {
    match (dir, off) {
        (_, true) => FuseWhere::Off,
        (Some(d), false) => FuseWhere::Dir(d),
        (None, false) => {
            FuseWhere::Default(socket.parent().unwrap_or(Path::new(".")).join("mapper"))
        }
    }
}
