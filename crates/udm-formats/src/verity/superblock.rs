//! The veritysetup superblock: 512 bytes at the hash offset, little-endian, written by
//! `veritysetup format` unless `--no-superblock`. The tree starts at the next hash block.
//!
//! ```text
//!   0  signature[8]   "verity\0\0"
//!   8  version u32    1
//!  12  hash_type u32  0 Chrome OS, 1 normal
//!  16  uuid[16]
//!  32  algorithm[32]  NUL-padded name
//!  64  data_block_size u32
//!  68  hash_block_size u32
//!  72  data_blocks u64
//!  80  salt_size u16
//!  82  pad[6]
//!  88  salt[256]
//! 344  pad[168]
//! ```

use super::VerityError;

pub const SB_SIZE: usize = 512;
pub const SIGNATURE: &[u8; 8] = b"verity\0\0";
/// Largest salt the superblock can hold.
pub const MAX_SALT: usize = 256;

/// A parsed superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub hash_type: u32,
    pub uuid: [u8; 16],
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

/// veritysetup's `VERITY_BLOCK_SIZE_OK`: a power of two from 512 bytes to 512 KiB.
pub fn block_size_ok(bs: u32) -> bool {
    (512..=512 * 1024).contains(&bs) && bs.is_power_of_two()
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Superblock {
    /// Parse and check a superblock, in veritysetup's order of checks.
    pub fn parse(b: &[u8]) -> Result<Superblock, VerityError> {
        if b.len() < SB_SIZE {
            return Err(VerityError::BadSignature);
        }
        if &b[0..8] != SIGNATURE {
            return Err(VerityError::BadSignature);
        }
        let version = le32(b, 8);
        if version != 1 {
            return Err(VerityError::UnsupportedVersion(version));
        }
        let hash_type = le32(b, 12);
        if hash_type > 1 {
            return Err(VerityError::UnsupportedHashType(hash_type));
        }
        let data_block_size = le32(b, 64);
        let hash_block_size = le32(b, 68);
        if !block_size_ok(data_block_size) || !block_size_ok(hash_block_size) {
            return Err(VerityError::BadBlockSize);
        }
        let mut d = [0u8; 8];
        d.copy_from_slice(&b[72..80]);
        let data_blocks = u64::from_le_bytes(d);
        let alg_raw = &b[32..64];
        let end = alg_raw.iter().position(|&c| c == 0).unwrap_or(32);
        let algorithm = String::from_utf8_lossy(&alg_raw[..end]).into_owned();
        if super::HashAlg::from_name(&algorithm).is_err() {
            return Err(VerityError::UnsupportedHash(algorithm));
        }
        let salt_size = u16::from_le_bytes([b[80], b[81]]) as usize;
        if salt_size > MAX_SALT {
            return Err(VerityError::Corrupted);
        }
        let salt = b[88..88 + salt_size].to_vec();
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        Ok(Superblock {
            hash_type,
            uuid,
            algorithm,
            data_block_size,
            hash_block_size,
            data_blocks,
            salt,
        })
    }

    /// The 512 bytes veritysetup writes.
    pub fn to_bytes(&self) -> Result<[u8; SB_SIZE], VerityError> {
        if self.salt.len() > MAX_SALT {
            return Err(VerityError::BadSalt);
        }
        let alg = self.algorithm.as_bytes();
        if alg.len() > 32 {
            return Err(VerityError::UnsupportedHash(self.algorithm.clone()));
        }
        let mut b = [0u8; SB_SIZE];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&self.hash_type.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        b[32..32 + alg.len()].copy_from_slice(alg);
        b[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        b[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(self.salt.len() as u16).to_le_bytes());
        b[88..88 + self.salt.len()].copy_from_slice(&self.salt);
        Ok(b)
    }

    /// The UUID in its canonical text form.
    pub fn uuid_string(&self) -> String {
        format_uuid(&self.uuid)
    }
}

/// `8-4-4-4-12` lowercase hex.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h = super::to_hex(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parse the canonical `8-4-4-4-12` form (either case), as libuuid's `uuid_parse`.
pub fn parse_uuid(s: &str) -> Result<[u8; 16], VerityError> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return Err(VerityError::BadUuid);
    }
    let mut hex = String::with_capacity(32);
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return Err(VerityError::BadUuid);
            }
        } else if c.is_ascii_hexdigit() {
            hex.push(c as char);
        } else {
            return Err(VerityError::BadUuid);
        }
    }
    let v = super::from_hex(&hex).ok_or(VerityError::BadUuid)?;
    let mut u = [0u8; 16];
    u.copy_from_slice(&v);
    Ok(u)
}

/// Hash block where the tree starts: `offset` bytes in, after the superblock when there is one
/// (veritysetup's `VERITY_hash_offset_block`).
pub fn hash_start_block(offset: u64, hash_block_size: u32, superblock: bool) -> u64 {
    let hbs = hash_block_size as u64;
    if superblock {
        offset.saturating_add(SB_SIZE as u64).div_ceil(hbs)
    } else {
        offset / hbs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            hash_type: 1,
            uuid: parse_uuid("12345678-1234-1234-1234-123456789abc").unwrap(),
            algorithm: "sha256".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 256,
            salt: vec![0, 0x11, 0x22, 0x33],
        }
    }

    #[test]
    fn bytes_match_veritysetup() {
        // Prefix of a superblock written by veritysetup 2.6.1 for the same parameters.
        let want: [u8; 96] = [
            0x76, 0x65, 0x72, 0x69, 0x74, 0x79, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x12, 0x34, 0x56,
            0x78, 0x12, 0x34, 0x12, 0x34, 0x12, 0x34, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, b's',
            b'h', b'a', b'2', b'5', b'6', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0,
            0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0, 0, 0, 0,
        ];
        let b = sample().to_bytes().unwrap();
        assert_eq!(&b[..96], &want[..]);
        assert!(b[96..].iter().all(|&x| x == 0));
        assert_eq!(Superblock::parse(&b).unwrap(), sample());
        assert_eq!(
            sample().uuid_string(),
            "12345678-1234-1234-1234-123456789abc"
        );
    }

    #[test]
    fn corrupt_fields_are_errors() {
        let good = sample().to_bytes().unwrap();
        let mut b = good;
        b[0] = b'X';
        assert_eq!(Superblock::parse(&b), Err(VerityError::BadSignature));
        let mut b = good;
        b[8] = 2;
        assert_eq!(
            Superblock::parse(&b),
            Err(VerityError::UnsupportedVersion(2))
        );
        let mut b = good;
        b[12] = 7;
        assert_eq!(
            Superblock::parse(&b),
            Err(VerityError::UnsupportedHashType(7))
        );
        let mut b = good;
        b[65] = 0x11;
        assert_eq!(Superblock::parse(&b), Err(VerityError::BadBlockSize));
        let mut b = good;
        b[32] = b'x';
        assert!(matches!(
            Superblock::parse(&b),
            Err(VerityError::UnsupportedHash(_))
        ));
        let mut b = good;
        b[81] = 1;
        assert_eq!(Superblock::parse(&b), Err(VerityError::Corrupted));
        assert_eq!(
            Superblock::parse(&good[..100]),
            Err(VerityError::BadSignature)
        );
    }

    #[test]
    fn uuid_and_offsets() {
        assert!(parse_uuid("12345678-1234-1234-1234-123456789abX").is_err());
        assert!(parse_uuid("123456781234-1234-1234-123456789abcd").is_err());
        assert_eq!(hash_start_block(0, 4096, true), 1);
        assert_eq!(hash_start_block(0, 512, true), 1);
        assert_eq!(hash_start_block(4096, 4096, true), 2);
        assert_eq!(hash_start_block(8192, 4096, false), 2);
        assert_eq!(hash_start_block(1024, 1024, true), 2);
    }
}
