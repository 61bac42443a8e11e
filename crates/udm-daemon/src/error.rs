//! `DaemonError`: why the daemon could not start. Each variant's message is the context (what
//! was being done, naming the option that asked for it); the cause is its `source()`.

use std::path::PathBuf;

/// A cause that is not one of the typed ones below.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors starting (or configuring) a daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// A setting cannot work here (e.g. `ublk` without the kernel driver).
    #[error("{0}")]
    Config(String),
    /// Another daemon answers on the control socket.
    #[error("another udm daemon is already listening on {}", .0.display())]
    AlreadyRunning(PathBuf),
    /// An I/O step failed (bind, create a directory, …).
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else, with what was being done.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Cause,
    },
    #[error(transparent)]
    Os(#[from] std::io::Error),
}

impl DaemonError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
        let what = what.into();
        move |source| DaemonError::Io { what, source }
    }
    pub(crate) fn ctx<E: Into<Cause>>(what: impl Into<String>) -> impl FnOnce(E) -> DaemonError {
        let what = what.into();
        move |e| DaemonError::Context {
            what,
            source: e.into(),
        }
    }

    /// The errno this error stands for.
    pub fn errno(&self) -> i32 {
        match self {
            DaemonError::Config(_) => libc::EINVAL,
            DaemonError::AlreadyRunning(_) => libc::EADDRINUSE,
            DaemonError::Io { source, .. } | DaemonError::Os(source) => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            DaemonError::Context { source, .. } => source
                .downcast_ref::<std::io::Error>()
                .and_then(|e| e.raw_os_error())
                .unwrap_or(libc::EINVAL),
        }
    }
}
