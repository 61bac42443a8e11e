//! LUKS (cryptsetup's on-disk format), versions 1 and 2: header layouts, the anti-forensic
//! splitter, key derivation and volume-key digests; keyslot unlock ([`volume`]), luksFormat
//! and keyslot creation ([`create`]) and keyslot changes ([`edit`]), which encrypt keyslot
//! areas with `udm-crypto`'s sector cipher. Callers do the I/O: they hand in a [`ReadAt`]
//! and write the returned [`Writes`] in order.

pub mod af;
pub mod create;
pub mod edit;
pub mod kdf;
pub mod luks1;
pub mod luks2;
pub mod volume;

pub use create::{FormatParams, KdfParams, Writes};
pub use volume::{Header, KdfWatch, KeyslotError, ReadAt};

pub use zeroize::{Zeroize, Zeroizing};

/// `LUKS\xba\xbe`: the magic of a LUKS1 header and of a LUKS2 primary header.
pub const MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
/// `SKUL\xba\xbe`: the magic of a LUKS2 secondary header.
pub const MAGIC2: [u8; 6] = *b"SKUL\xba\xbe";

/// A malformed or unsupported header: what cryptsetup would refuse, said plainly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LuksError {
    #[error("not a LUKS device (no LUKS magic)")]
    NotLuks,
    #[error("unsupported LUKS version {0}")]
    Version(u16),
    #[error("LUKS header is damaged: {0}")]
    Corrupt(String),
    #[error("unsupported {0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
}

impl LuksError {
    /// The errno cryptsetup's library returns for this error.
    pub fn errno(&self) -> i32 {
        match self {
            LuksError::NotLuks | LuksError::Version(_) | LuksError::Corrupt(_) => libc::EINVAL,
            LuksError::Unsupported(_) => libc::ENOTSUP,
            LuksError::Invalid(_) => libc::EINVAL,
        }
    }
}

fn corrupt(m: impl Into<String>) -> LuksError {
    LuksError::Corrupt(m.into())
}

/// The LUKS version of a header's first bytes (1 or 2), from the magic and version fields.
pub fn version(hdr: &[u8]) -> Result<u16, LuksError> {
    if hdr.len() < 8 || (hdr[..6] != MAGIC && hdr[..6] != MAGIC2) {
        return Err(LuksError::NotLuks);
    }
    Ok(u16::from_be_bytes([hdr[6], hdr[7]]))
}

/// `n` random bytes from the OS.
pub fn random_bytes(n: usize) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(vec![0u8; n]);
    getrandom::getrandom(&mut v).expect("the OS random source failed");
    v
}

/// A random version-4 UUID in its text form.
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("the OS random source failed");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// True for a UUID in the 8-4-4-4-12 hex form.
pub fn valid_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A NUL-terminated string field.
pub(crate) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Write `s` into a fixed NUL-padded field (which must have room for a final NUL).
pub(crate) fn put_cstr(dst: &mut [u8], s: &str) -> Result<(), LuksError> {
    if s.len() >= dst.len() {
        return Err(LuksError::Invalid(format!(
            "{s:?} is too long for its header field"
        )));
    }
    dst.fill(0);
    dst[..s.len()].copy_from_slice(s.as_bytes());
    Ok(())
}
