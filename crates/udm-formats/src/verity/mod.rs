//! dm-verity on-disk formats, as the kernel and veritysetup (cryptsetup) define them.
//!
//! - [`superblock`]: the optional 512-byte `verity\0\0` header veritysetup writes at the hash
//!   offset (the kernel never reads it).
//! - [`hash`]: the algorithms and the salted block digest (format 1: salt first; format 0, the
//!   original Chrome OS one: salt last).
//! - [`geometry`]: where every level of the hash tree lives and where each digest sits.
//! - [`fec`] and [`rs`]: the interleaved Reed-Solomon(255, 255-roots) forward error correction
//!   veritysetup writes with `--fec-device` and dm-verity reads with `use_fec_from_device`.
//! - [`device`]: veritysetup's view of a device: header, FEC area, table line.

pub mod build;
pub mod device;
pub mod fec;
pub mod geometry;
pub mod hash;
pub mod rs;
pub mod superblock;

pub use device::Header;
pub use fec::FecLayout;
pub use geometry::{Geometry, HashType};
pub use hash::{BlockHasher, Digest, HashAlg};
pub use rs::ReedSolomon;
pub use superblock::Superblock;

/// What can be wrong with verity metadata or parameters. Messages follow veritysetup's where
/// it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerityError {
    /// The superblock signature is not `verity\0\0`.
    #[error("not a VERITY superblock (bad signature)")]
    BadSignature,
    /// (Printed signed, as veritysetup's `%d` does.)
    #[error("Unsupported VERITY version {}.", *.0 as i32)]
    UnsupportedVersion(u32),
    #[error("Unsupported VERITY hash type {}.", *.0 as i32)]
    UnsupportedHashType(u32),
    #[error("Unsupported VERITY block size.")]
    BadBlockSize,
    #[error("Hash algorithm {0} not supported.")]
    UnsupportedHash(String),
    #[error("VERITY header corrupted.")]
    Corrupted,
    #[error("Invalid salt string specified.")]
    BadSalt,
    #[error("Wrong VERITY UUID format provided.")]
    BadUuid,
    /// A digest does not fit twice into a hash block (the kernel's "Digest size too big").
    #[error("Digest size too big for the hash block size.")]
    DigestTooBig,
    #[error("Too many tree levels.")]
    TooManyLevels,
    #[error("Hash device offset overflow.")]
    Overflow,
    #[error("Invalid number of parity bytes.")]
    BadRoots,
    #[error("Block sizes must match for FEC.")]
    FecBlockSizes,
    #[error("Invalid FEC segment length.")]
    BadFecBlocks,
    #[error("Invalid number of data blocks.")]
    BadDataBlocks,
    #[error("Unsupported VERITY hash offset.")]
    BadHashOffset,
    #[error("Unsupported VERITY FEC offset.")]
    BadFecOffset,
    #[error("Invalid root hash string specified.")]
    BadRootHash,
    /// The OS random source failed (salt or UUID).
    #[error("Cannot read random bytes: {0}")]
    Random(String),
}

impl VerityError {
    /// The errno a caller should report.
    pub fn errno(&self) -> i32 {
        match self {
            VerityError::UnsupportedHash(_) => libc::ENOENT,
            VerityError::TooManyLevels | VerityError::Overflow => libc::E2BIG,
            VerityError::Random(_) => libc::EIO,
            _ => libc::EINVAL,
        }
    }
}

/// Lowercase hex of `b`.
pub fn to_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Parse hex (either case, even length) into bytes.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex("00aBff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(""), Some(vec![]));
        assert_eq!(to_hex(&[1, 0xfe]), "01fe");
    }
}
