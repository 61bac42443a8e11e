//! TLS for NBD (NBD_OPT_STARTTLS) with rustls and X.509 certificates, server and client.
//!
//! After the TLS handshake a connection is handed to two pump threads that move records
//! between the network socket and one end of a socketpair; the NBD code keeps using a plain
//! `Sock` (the other end), so its separate reader and writer threads work unchanged.

use crate::sock::Sock;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

/// Errors setting TLS up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {path}: {source}")]
    File { path: String, source: io::Error },
    #[error("TLS: {path}: {msg}")]
    Pem { path: String, msg: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS: {0}")]
    Config(String),
}

impl TlsError {
    /// The errno this error stands for.
    pub fn errno(&self) -> i32 {
        match self {
            TlsError::File { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EINVAL,
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let p = path.display().to_string();
    if let Err(source) = std::fs::metadata(path) {
        return Err(TlsError::File { path: p, source });
    }
    let v: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Pem {
            path: p.clone(),
            msg: e.to_string(),
        })?
        .collect();
    let v = v.map_err(|e| TlsError::Pem {
        path: p.clone(),
        msg: e.to_string(),
    })?;
    if v.is_empty() {
        return Err(TlsError::Pem {
            path: p,
            msg: "no certificate".into(),
        });
    }
    Ok(v)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
    }
    Ok(roots)
}

/// Server side: a certificate, optionally client verification, and whether plaintext
/// clients are refused (`required`, like nbdkit `--tls=require` and qemu-nbd).
pub struct TlsServer {
    cfg: Arc<rustls::ServerConfig>,
    pub required: bool,
}

impl TlsServer {
    /// From PEM files: the certificate chain, its key, and a CA whose clients are accepted
    /// (`None`: no client certificates).
    pub fn from_pem(
        cert: &Path,
        key_file: &Path,
        client_ca: Option<&Path>,
        required: bool,
    ) -> Result<TlsServer, TlsError> {
        let b = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let b = match client_ca {
            Some(ca) => {
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca)?),
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
                b.with_client_cert_verifier(v)
            }
            None => b.with_no_client_auth(),
        };
        let cfg = b.with_single_cert(certs(cert)?, key(key_file)?)?;
        Ok(TlsServer {
            cfg: Arc::new(cfg),
            required,
        })
    }

    /// From a directory laid out as nbdkit and qemu expect: `server-cert.pem`,
    /// `server-key.pem`, and `ca-cert.pem` to verify client certificates when `verify_peer`.
    pub fn from_dir(dir: &Path, verify_peer: bool, required: bool) -> Result<TlsServer, TlsError> {
        let ca = dir.join("ca-cert.pem");
        TlsServer::from_pem(
            &dir.join("server-cert.pem"),
            &dir.join("server-key.pem"),
            verify_peer.then_some(ca.as_path()),
            required,
        )
    }
}

/// Client side: the CA that signed the server, the name to check, optionally our own
/// certificate.
#[derive(Clone)]
pub struct TlsClient {
    cfg: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    pub fn new(
        ca: &Path,
        server_name: &str,
        client: Option<(&Path, &Path)>,
    ) -> Result<TlsClient, TlsError> {
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(ca)?);
        let cfg = match client {
            Some((c, k)) => b.with_client_auth_cert(certs(c)?, key(k)?)?,
            None => b.with_no_client_auth(),
        };
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| TlsError::Config(format!("{server_name}: {e}")))?;
        Ok(TlsClient {
            cfg: Arc::new(cfg),
            name,
        })
    }
}

/// Run the server side of the TLS handshake on `sock`; returns the plaintext end.
pub(crate) fn accept(sock: Sock, tls: &TlsServer) -> io::Result<Sock> {
    let conn = rustls::ServerConnection::new(tls.cfg.clone()).map_err(io::Error::other)?;
    pump(rustls::Connection::Server(conn), sock)
}

/// Run the client side of the TLS handshake on `sock`; returns the plaintext end.
pub(crate) fn connect(sock: Sock, tls: &TlsClient) -> io::Result<Sock> {
    let conn = rustls::ClientConnection::new(tls.cfg.clone(), tls.name.clone())
        .map_err(io::Error::other)?;
    pump(rustls::Connection::Client(conn), sock)
}

/// Shared between the two pump threads. Network writes happen under `net_w`, taken before
/// `conn` is released, so records go out in the order they were made.
struct Pump {
    conn: Mutex<rustls::Connection>,
    net_w: Mutex<Sock>,
}

impl Pump {
    /// Send whatever TLS records are pending.
    fn flush_tls(
        &self,
        mut conn: parking_lot::MutexGuard<'_, rustls::Connection>,
    ) -> io::Result<()> {
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out)?;
        }
        if out.is_empty() {
            return Ok(());
        }
        let mut w = self.net_w.lock();
        drop(conn);
        w.write_all(&out)
    }
}

fn pump(mut conn: rustls::Connection, mut net: Sock) -> io::Result<Sock> {
    while conn.is_handshaking() {
        conn.complete_io(&mut net)?;
    }
    // The handshake ran under the caller's read timeout; the pump waits as long as needed.
    net.set_read_timeout(None)?;
    let (app, mine) = UnixStream::pair()?;
    let p = Arc::new(Pump {
        conn: Mutex::new(conn),
        net_w: Mutex::new(net.try_clone()?),
    });
    let (p2, mut mine_r, net_r) = (p.clone(), mine.try_clone()?, net.try_clone()?);
    let net_ctl = net.try_clone()?;
    std::thread::Builder::new()
        .name("nbd-tls-rx".into())
        .spawn(move || {
            if let Err(e) = rx(&p2, net_r, &mine) {
                tracing::debug!("nbd tls: receive side ended: {e}");
            }
            let _ = mine.shutdown(Shutdown::Write);
        })?;
    std::thread::Builder::new()
        .name("nbd-tls-tx".into())
        .spawn(move || {
            if let Err(e) = tx(&p, &mut mine_r) {
                tracing::debug!("nbd tls: send side ended: {e}");
            }
            let _ = net_ctl.shutdown(Shutdown::Write);
        })?;
    Ok(Sock::Unix(app))
}

/// Network → plaintext.
fn rx(p: &Pump, mut net: Sock, mut app: &UnixStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut plain = vec![0u8; 64 << 10];
    // The handshake may already have read records carrying data.
    let mut n = 0;
    loop {
        let mut out = Vec::new();
        let mut eof = false;
        {
            let mut conn = p.conn.lock();
            let mut rd = &buf[..n];
            loop {
                if !rd.is_empty() {
                    conn.read_tls(&mut rd)?;
                }
                let st = match conn.process_new_packets() {
                    Ok(s) => s,
                    Err(e) => {
                        // rustls queued an alert for the peer: send it, then give up.
                        let _ = p.flush_tls(conn);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                };
                loop {
                    match conn.reader().read(&mut plain) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(k) => out.extend_from_slice(&plain[..k]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                if st.peer_has_closed() {
                    eof = true;
                }
                if rd.is_empty() || eof {
                    break;
                }
            }
            p.flush_tls(conn)?;
        }
        if !out.is_empty() {
            app.write_all(&out)?;
        }
        if eof {
            return Ok(());
        }
        n = net.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
    }
}

/// Plaintext → network; ends with close_notify.
fn tx(p: &Pump, app: &mut UnixStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = app.read(&mut buf)?;
        let mut conn = p.conn.lock();
        if n == 0 {
            conn.send_close_notify();
            return p.flush_tls(conn);
        }
        conn.writer().write_all(&buf[..n])?;
        p.flush_tls(conn)?;
    }
}
