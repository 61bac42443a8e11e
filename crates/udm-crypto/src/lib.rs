//! udm-crypto: the block ciphers, chaining modes (XTS with an AES-NI path, CBC, ECB) and IV
//! generators of dm-crypt, and its cipher specifications. Pure computation on byte slices:
//! it imports nothing from the engine, so the crypt target and the LUKS format code share it.

pub mod aead;
pub mod cipher;
pub mod spec;
mod xts_ni;

pub use cipher::{hash, CipherError, SectorCipher};
pub use spec::{Chain, CipherSpec, IvMode, SpecError};
pub use zeroize::{Zeroize, Zeroizing};
