//! udm-formats: pure on-disk formats — layouts, encoders and parsers with no I/O policy.
//! Callers read and write the bytes; these modules say what the bytes mean.
//!
//! - [`verity`]: dm-verity / veritysetup — superblock, hash-tree geometry, block hashing,
//!   Reed-Solomon FEC layout and codec.
//! - [`integrity`]: dm-integrity — superblock, layout, journal, tag hashes.
//! - [`luks`]: LUKS1/LUKS2 headers, the AF splitter, key derivation and digests.

pub mod ataraid;
pub mod integrity;
pub mod luks;
pub mod lvm;
pub mod part;
pub mod verity;
