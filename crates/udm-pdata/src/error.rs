//! Errors of the persistent-data layer, with the errno the kernel would report.

use crate::checksum::BlockKind;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, PdataError>;

/// Everything that can go wrong reading or writing persistent-data metadata.
#[derive(Debug, thiserror::Error)]
pub enum PdataError {
    /// The metadata device failed.
    #[error("metadata I/O error at block {block}: {source}")]
    Io {
        block: u64,
        #[source]
        source: std::io::Error,
    },
    /// The data device failed (moving blocks while shrinking a pool).
    #[error("data device I/O error at block {block}: {source}")]
    DataIo {
        block: u64,
        #[source]
        source: std::io::Error,
    },
    /// A block's stored checksum does not match its contents.
    #[error("{kind} block {block}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        kind: BlockKind,
        block: u64,
        stored: u32,
        computed: u32,
    },
    /// A block's self-reported location is not where it was read from.
    #[error("{kind} block {block}: header says it is block {found}")]
    BlockNr {
        kind: BlockKind,
        block: u64,
        found: u64,
    },
    /// A block that checksummed fine has contents that break the format's rules.
    #[error("{kind} block {block}: {reason}")]
    Corrupt {
        kind: BlockKind,
        block: u64,
        reason: String,
    },
    /// A structure (superblock, sm root, tree shape) is inconsistent.
    #[error("corrupt metadata: {0}")]
    Inconsistent(String),
    /// No free block left in the metadata or data space map.
    #[error("no free space in the {0} space map")]
    NoSpace(&'static str),
    /// A block number beyond the end of a device or space map.
    #[error("block {block} is beyond the end ({nr_blocks} blocks)")]
    OutOfRange { block: u64, nr_blocks: u64 },
    /// The caller asked for something the format cannot do.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl PdataError {
    /// The errno the kernel's persistent-data code returns for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            PdataError::Io { source, .. } | PdataError::DataIo { source, .. } => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            PdataError::Checksum { .. }
            | PdataError::BlockNr { .. }
            | PdataError::Corrupt { .. }
            | PdataError::Inconsistent(_) => libc::EILSEQ,
            PdataError::NoSpace(_) => libc::ENOSPC,
            PdataError::OutOfRange { .. } => libc::ERANGE,
            PdataError::Invalid(_) => libc::EINVAL,
        }
    }

    /// An I/O error opening or reading the metadata device as a whole (block 0).
    pub fn from_io(source: std::io::Error) -> Self {
        PdataError::Io { block: 0, source }
    }

    pub(crate) fn corrupt(kind: BlockKind, block: u64, reason: impl Into<String>) -> Self {
        PdataError::Corrupt {
            kind,
            block,
            reason: reason.into(),
        }
    }
}
