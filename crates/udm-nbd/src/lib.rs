//! udm-nbd: an NBD server over udm block devices (fixed newstyle handshake, structured
//! replies, `base:allocation` block status) and a small blocking NBD client.
//!
//! The server is thread based: one thread per connection reads requests and submits bios
//! without waiting, and a writer thread per connection sends replies as bios complete, so
//! many requests are in flight per connection and a slow or hostile client never blocks a
//! device's completion thread.

mod client;
mod handshake;
mod lend;
pub mod proto;
pub mod remote;
mod reply;
mod server;
mod sock;
mod spin;
mod splice;
pub mod tls;
mod transmission;

pub use client::{Cmd, ExportInfo, NbdAddr, NbdClient, NbdError};
pub use remote::{RemoteDevice, RemoteSpec};
pub use server::{NbdServer, ServerHandle};
pub use tls::{TlsClient, TlsError, TlsServer};

use std::sync::Arc;
use udm_io::BlockDevice;

/// The set of devices a server offers. Implemented by the daemon over its device table.
pub trait Exports: Send + Sync + 'static {
    /// Names for NBD_OPT_LIST, sorted.
    fn list(&self) -> Vec<String>;
    /// Open an export for one client connection; `None` if there is no such export (or it
    /// has no table yet). Dropping the returned handle closes it (the daemon counts it as
    /// an open of the device).
    fn open(&self, name: &str) -> Option<ExportHandle>;
}

/// One open of an export, held for the life of a client connection.
pub struct ExportHandle {
    pub dev: Arc<dyn BlockDevice>,
    /// Refuse writes even if the device accepts them.
    pub read_only: bool,
    /// Dropped when the connection closes (after its in-flight bios have completed).
    pub guard: Box<dyn Send + Sync>,
}

impl ExportHandle {
    /// A handle with no close hook.
    pub fn new(dev: Arc<dyn BlockDevice>, read_only: bool) -> ExportHandle {
        ExportHandle {
            dev,
            read_only,
            guard: Box::new(()),
        }
    }
}

impl std::fmt::Debug for ExportHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExportHandle({} ro={})", self.dev.id(), self.read_only)
    }
}
