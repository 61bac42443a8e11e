//! udm-crypto: the block ciphers, chaining modes (XTS with an AES-NI path, CBC, ECB) and IV
//! generators of dm-crypt, its cipher specifications, and two-at-a-time SHA-256 for dm-verity. Pure computation on byte slices:
//! it imports nothing from the engine, so the crypt target and the LUKS format code share it.

pub mod aead;
pub mod cipher;
pub mod sha256x2;
pub mod skcipher;
pub mod spec;
mod xts_ni;

pub use cipher::{hash, CipherError, SectorCipher};
pub use spec::{Chain, CipherSpec, IvMode, SpecError};
pub use zeroize::{Zeroize, Zeroizing};
