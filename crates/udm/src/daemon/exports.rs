//! The daemon's frontends: every mapped device with a table is an NBD export named after it.

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use udm_core::{DevSel, Registry};

/// Registry devices as NBD exports; an NBD connection counts as an open of the device.
struct RegistryExports(Registry);

impl udm_nbd::Exports for RegistryExports {
    fn list(&self) -> Vec<String> {
        self.0
            .list()
            .into_iter()
            .filter(|d| d.live_table)
            .map(|d| d.name)
            .collect()
    }
    fn open(&self, name: &str) -> Option<udm_nbd::ExportHandle> {
        let sel = DevSel::Name(name.to_string());
        let info = self.0.info(&sel, false).ok()?;
        if !info.live_table {
            return None;
        }
        let (dev, guard) = self.0.open(&sel).ok()?;
        Some(udm_nbd::ExportHandle {
            dev,
            read_only: info.read_only,
            guard: Box::new(guard),
        })
    }
}

/// Running export servers.
pub struct Exports {
    unix: udm_nbd::ServerHandle,
    tcp: Option<(udm_nbd::ServerHandle, String)>,
}

impl Exports {
    pub fn start(reg: &Registry, nbd_socket: &Path, tcp: Option<&str>) -> Result<Exports> {
        let server = udm_nbd::NbdServer::new(Arc::new(RegistryExports(reg.clone())));
        if nbd_socket.exists() {
            std::fs::remove_file(nbd_socket)
                .with_context(|| format!("remove stale {}", nbd_socket.display()))?;
        }
        let unix = server
            .serve_unix(nbd_socket)
            .with_context(|| format!("NBD socket {}", nbd_socket.display()))?;
        let tcp = match tcp {
            Some(a) => {
                let addr: std::net::SocketAddr = a
                    .parse()
                    .with_context(|| format!("--nbd-listen {a}: expected HOST:PORT"))?;
                Some((
                    server
                        .serve_tcp(addr)
                        .with_context(|| format!("NBD listen on {a}"))?,
                    a.to_string(),
                ))
            }
            None => None,
        };
        Ok(Exports { unix, tcp })
    }
    pub fn tcp_addr(&self) -> Option<String> {
        self.tcp.as_ref().map(|(_, a)| a.clone())
    }
    /// Stop accepting, finish in-flight replies and close every connection.
    pub fn shutdown(self) {
        self.unix.shutdown();
        if let Some((t, _)) = self.tcp {
            t.shutdown();
        }
    }
}
