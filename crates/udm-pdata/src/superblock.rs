//! The header the thin, cache, era and clone superblocks share: flags at 4, the block's own
//! number at 8, the uuid at 16..32, the magic at 32 and the version at 40 (the checksum at 0
//! is the sealer's). Each format writes and checks it through these two helpers.

use crate::checksum::{verify, BlockKind};
use crate::error::{PdataError, Result};
use crate::{le32, le64, put32, put64, BlockBuf, BLOCK_SIZE};
use std::ops::RangeInclusive;

/// The fields of the shared superblock header that a format keeps.
pub(crate) struct Header {
    pub flags: u32,
    pub uuid: [u8; 16],
    pub version: u32,
}

/// A zeroed block for block `at` with the header written (not yet sealed).
pub(crate) fn new_block(at: u64, magic: u64, h: Header) -> BlockBuf {
    let mut b = [0u8; BLOCK_SIZE];
    put32(&mut b, 4, h.flags);
    put64(&mut b, 8, at);
    b[16..32].copy_from_slice(&h.uuid);
    put64(&mut b, 32, magic);
    put32(&mut b, 40, h.version);
    b
}

/// Verify the checksum and location of a `kind` superblock read from block `at`, its magic
/// and that its version lies in `versions` (else `version_msg(version)` is the complaint),
/// and return its header.
pub(crate) fn check_block(
    b: &BlockBuf,
    kind: BlockKind,
    at: u64,
    magic: u64,
    versions: RangeInclusive<u32>,
    version_msg: impl FnOnce(u32) -> String,
) -> Result<Header> {
    verify(b, kind, at)?;
    let found = le64(b, 32);
    if found != magic {
        return Err(PdataError::corrupt(
            kind,
            at,
            format!("magic {found}, expected {magic}"),
        ));
    }
    let version = le32(b, 40);
    if !versions.contains(&version) {
        return Err(PdataError::corrupt(kind, at, version_msg(version)));
    }
    Ok(Header {
        flags: le32(b, 4),
        uuid: b[16..32].try_into().expect("16 bytes"),
        version,
    })
}

/// Block 0 of `io`, where every format keeps its superblock.
pub(crate) fn read_block0(io: &dyn crate::io::MetaIo) -> Result<BlockBuf> {
    let mut buf = [0u8; BLOCK_SIZE];
    io.read_block(crate::tm::SUPERBLOCK, &mut buf)
        .map_err(|source| PdataError::Io {
            block: crate::tm::SUPERBLOCK,
            source,
        })?;
    Ok(buf)
}
