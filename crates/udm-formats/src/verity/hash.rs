//! Hash algorithms and the salted block digest of dm-verity.
//!
//! Format 1 hashes `salt || block`; format 0 (Chrome OS) hashes `block || salt`. Every block of
//! the tree and every data block is digested the same way.

use sha1::Sha1;
use sha2::{Digest as _, Sha224, Sha256, Sha384, Sha512};

use super::geometry::HashType;
use super::VerityError;

/// A supported hash algorithm (names as the kernel crypto API and veritysetup spell them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Look up by name; exact lowercase names only (the kernel's crypto API is case-sensitive).
    pub fn from_name(name: &str) -> Result<HashAlg, VerityError> {
        Ok(match name {
            "sha1" => HashAlg::Sha1,
            "sha224" => HashAlg::Sha224,
            "sha256" => HashAlg::Sha256,
            "sha384" => HashAlg::Sha384,
            "sha512" => HashAlg::Sha512,
            _ => return Err(VerityError::UnsupportedHash(name.to_string())),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha224 => "sha224",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }
    /// Digest length in bytes.
    pub fn digest_size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha224 => 28,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }
}

/// A digest of at most 64 bytes, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    bytes: [u8; 64],
    len: u8,
}

impl Digest {
    /// A digest holding `b` (at most 64 bytes; longer input is truncated).
    pub fn from_slice(b: &[u8]) -> Digest {
        let mut bytes = [0u8; 64];
        let n = b.len().min(64);
        bytes[..n].copy_from_slice(&b[..n]);
        Digest {
            bytes,
            len: n as u8,
        }
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Lowercase hex.
    pub fn hex(&self) -> String {
        super::to_hex(self.as_slice())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({})", self.hex())
    }
}

#[derive(Clone)]
enum State {
    Sha1(Sha1),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl State {
    fn new(alg: HashAlg) -> State {
        match alg {
            HashAlg::Sha1 => State::Sha1(Sha1::new()),
            HashAlg::Sha224 => State::Sha224(Sha224::new()),
            HashAlg::Sha256 => State::Sha256(Sha256::new()),
            HashAlg::Sha384 => State::Sha384(Sha384::new()),
            HashAlg::Sha512 => State::Sha512(Sha512::new()),
        }
    }
    fn update(&mut self, d: &[u8]) {
        match self {
            State::Sha1(h) => h.update(d),
            State::Sha224(h) => h.update(d),
            State::Sha256(h) => h.update(d),
            State::Sha384(h) => h.update(d),
            State::Sha512(h) => h.update(d),
        }
    }
    fn finish(self) -> Digest {
        match self {
            State::Sha1(h) => Digest::from_slice(&h.finalize()),
            State::Sha224(h) => Digest::from_slice(&h.finalize()),
            State::Sha256(h) => Digest::from_slice(&h.finalize()),
            State::Sha384(h) => Digest::from_slice(&h.finalize()),
            State::Sha512(h) => Digest::from_slice(&h.finalize()),
        }
    }
}

/// Digests blocks with one algorithm, format and salt. Cheap to clone and share; the salt
/// prefix of format 1 is hashed once and the state cloned per block.
#[derive(Clone)]
pub struct BlockHasher {
    alg: HashAlg,
    ty: HashType,
    salt: Vec<u8>,
    primed: State,
}

impl BlockHasher {
    pub fn new(alg: HashAlg, ty: HashType, salt: &[u8]) -> BlockHasher {
        let mut primed = State::new(alg);
        if ty == HashType::Normal {
            primed.update(salt);
        }
        BlockHasher {
            alg,
            ty,
            salt: salt.to_vec(),
            primed,
        }
    }
    pub fn alg(&self) -> HashAlg {
        self.alg
    }
    pub fn hash_type(&self) -> HashType {
        self.ty
    }
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
    /// The verity digest of one block.
    pub fn digest(&self, block: &[u8]) -> Digest {
        let mut s = self.primed.clone();
        s.update(block);
        if self.ty == HashType::ChromeOs {
            s.update(&self.salt);
        }
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_position_depends_on_format() {
        let data = [7u8; 512];
        let salt = [1u8, 2, 3];
        let v1 = BlockHasher::new(HashAlg::Sha256, HashType::Normal, &salt).digest(&data);
        let mut cat = salt.to_vec();
        cat.extend_from_slice(&data);
        assert_eq!(v1.as_slice(), Sha256::digest(&cat).as_slice());
        let v0 = BlockHasher::new(HashAlg::Sha256, HashType::ChromeOs, &salt).digest(&data);
        let mut cat = data.to_vec();
        cat.extend_from_slice(&salt);
        assert_eq!(v0.as_slice(), Sha256::digest(&cat).as_slice());
    }

    #[test]
    fn names_and_sizes() {
        for a in ["sha1", "sha224", "sha256", "sha384", "sha512"] {
            let alg = HashAlg::from_name(a).unwrap();
            assert_eq!(alg.name(), a);
            let d = BlockHasher::new(alg, HashType::Normal, &[]).digest(b"x");
            assert_eq!(d.len(), alg.digest_size());
        }
        assert!(HashAlg::from_name("SHA256").is_err());
        assert!(HashAlg::from_name("md5").is_err());
    }
}
