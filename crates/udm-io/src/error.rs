//! `IoError`: how a bio fails, with the errno a frontend reports.

/// The result of a failed I/O. Every variant maps to one errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    #[error("Input/output error")]
    Io,
    #[error("Invalid argument")]
    Invalid,
    #[error("Read-only file system")]
    ReadOnly,
    #[error("Operation not supported")]
    NotSupported,
    #[error("No space left on device")]
    NoSpace,
    #[error("Device or resource busy")]
    Busy,
    #[error("No such device or address")]
    NoDevice,
    #[error("Operation timed out")]
    TimedOut,
    #[error("os error {0}")]
    Os(i32),
}

impl IoError {
    /// The errno for this error (positive).
    pub fn errno(self) -> i32 {
        match self {
            IoError::Io => libc::EIO,
            IoError::Invalid => libc::EINVAL,
            IoError::ReadOnly => libc::EROFS,
            IoError::NotSupported => libc::EOPNOTSUPP,
            IoError::NoSpace => libc::ENOSPC,
            IoError::Busy => libc::EBUSY,
            IoError::NoDevice => libc::ENXIO,
            IoError::TimedOut => libc::ETIMEDOUT,
            IoError::Os(e) => e,
        }
    }

    /// Map an errno back to the closest variant.
    pub fn from_errno(e: i32) -> IoError {
        match e {
            libc::EIO => IoError::Io,
            libc::EINVAL => IoError::Invalid,
            libc::EROFS => IoError::ReadOnly,
            libc::EOPNOTSUPP => IoError::NotSupported,
            libc::ENOSPC => IoError::NoSpace,
            libc::EBUSY => IoError::Busy,
            libc::ENXIO => IoError::NoDevice,
            libc::ETIMEDOUT => IoError::TimedOut,
            e => IoError::Os(e),
        }
    }
}

impl From<std::io::Error> for IoError {
    fn from(e: std::io::Error) -> IoError {
        e.raw_os_error()
            .map(IoError::from_errno)
            .unwrap_or(IoError::Io)
    }
}
