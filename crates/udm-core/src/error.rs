//! `DmError`: control-plane failures, each with the errno the kernel's ioctl would return.

use crate::target::TargetError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DmError {
    /// ENXIO: no such device.
    #[error("No such device or address")]
    NoDevice,
    /// EBUSY: name or uuid in use, or the device is open.
    #[error("{0}")]
    Busy(String),
    /// EINVAL with the reason the kernel would log.
    #[error("{0}")]
    Invalid(String),
    /// A table line failed: `line` is 1-based.
    #[error("line {line}: {err}")]
    Table { line: usize, err: TargetError },
    /// ENOMEM/ENOSPC/other errno with a message.
    #[error("{msg}")]
    Errno { errno: i32, msg: String },
}

impl DmError {
    pub fn errno(&self) -> i32 {
        match self {
            DmError::NoDevice => libc::ENXIO,
            DmError::Busy(_) => libc::EBUSY,
            DmError::Invalid(_) => libc::EINVAL,
            DmError::Table { err, .. } => err.errno,
            DmError::Errno { errno, .. } => *errno,
        }
    }
    pub fn invalid(m: impl Into<String>) -> DmError {
        DmError::Invalid(m.into())
    }
}
