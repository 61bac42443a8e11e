//! The LUKS1 header (592 bytes, big-endian): cipher, hash, payload offset, volume-key digest
//! (PBKDF2) and eight keyslots, each with its PBKDF2 salt/iterations and AF area.

use super::kdf::{derive, Kdf};
use super::{corrupt, cstr, put_cstr, LuksError, MAGIC};

/// Size of the binary header.
pub const HEADER_SIZE: usize = 592;
/// Keyslots in a LUKS1 header.
pub const SLOTS: usize = 8;
/// A keyslot in use.
pub const KEY_ENABLED: u32 = 0x00AC_71F3;
/// A free keyslot.
pub const KEY_DISABLED: u32 = 0x0000_DEAD;
/// Stripes of the AF splitter cryptsetup uses.
pub const STRIPES: u32 = 4000;
/// Digest length of the volume-key digest.
pub const DIGEST_SIZE: usize = 20;
/// Salt length of digests and keyslots.
pub const SALT_SIZE: usize = 32;

/// One keyslot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub active: bool,
    pub iterations: u32,
    pub salt: [u8; SALT_SIZE],
    /// Start of the AF material, in 512-byte sectors.
    pub offset: u32,
    pub stripes: u32,
}

impl Slot {
    fn empty(offset: u32) -> Slot {
        Slot {
            active: false,
            iterations: 0,
            salt: [0; SALT_SIZE],
            offset,
            stripes: STRIPES,
        }
    }
}

/// A LUKS1 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub cipher_name: String,
    pub cipher_mode: String,
    pub hash: String,
    /// Start of the data, in 512-byte sectors.
    pub payload_offset: u32,
    pub key_bytes: u32,
    pub mk_digest: [u8; DIGEST_SIZE],
    pub mk_salt: [u8; SALT_SIZE],
    pub mk_iterations: u32,
    pub uuid: String,
    pub slots: [Slot; SLOTS],
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl Header {
    /// Parse and sanity-check a header (`b` holds at least its 592 bytes). `dev_sectors`, when
    /// known, bounds the keyslot areas and the payload.
    pub fn parse(b: &[u8], dev_sectors: Option<u64>) -> Result<Header, LuksError> {
        if b.len() < HEADER_SIZE || b[..6] != MAGIC {
            return Err(LuksError::NotLuks);
        }
        let ver = u16::from_be_bytes([b[6], b[7]]);
        if ver != 1 {
            return Err(LuksError::Version(ver));
        }
        let mut slots: [Slot; SLOTS] = std::array::from_fn(|_| Slot::empty(0));
        for (i, s) in slots.iter_mut().enumerate() {
            let o = 208 + i * 48;
            let state = be32(b, o);
            s.active = match state {
                KEY_ENABLED => true,
                KEY_DISABLED => false,
                _ => return Err(corrupt(format!("keyslot {i} has an invalid state"))),
            };
            s.iterations = be32(b, o + 4);
            s.salt.copy_from_slice(&b[o + 8..o + 40]);
            s.offset = be32(b, o + 40);
            s.stripes = be32(b, o + 44);
        }
        let h = Header {
            cipher_name: cstr(&b[8..40]),
            cipher_mode: cstr(&b[40..72]),
            hash: cstr(&b[72..104]),
            payload_offset: be32(b, 104),
            key_bytes: be32(b, 108),
            mk_digest: b[112..132].try_into().expect("20 bytes"),
            mk_salt: b[132..164].try_into().expect("32 bytes"),
            mk_iterations: be32(b, 164),
            uuid: cstr(&b[168..208]),
            slots,
        };
        h.validate(dev_sectors)?;
        Ok(h)
    }

    /// The checks cryptsetup makes before trusting a header.
    pub fn validate(&self, dev_sectors: Option<u64>) -> Result<(), LuksError> {
        if self.key_bytes == 0 || self.key_bytes > 512 {
            return Err(corrupt(format!("invalid key size {}", self.key_bytes)));
        }
        if super::af::hash_size(&self.hash).is_none() {
            return Err(LuksError::Unsupported(format!(
                "hash {:?} in the LUKS header",
                self.hash
            )));
        }
        if self.mk_iterations == 0 {
            return Err(corrupt("volume key digest has 0 iterations"));
        }
        let hdr_end = HEADER_SIZE.div_ceil(512) as u64;
        for (i, s) in self.slots.iter().enumerate().filter(|(_, s)| s.active) {
            if s.stripes == 0 || s.stripes > 0x10_0000 || s.iterations == 0 {
                return Err(corrupt(format!("keyslot {i} has invalid parameters")));
            }
            let len = super::af::area_bytes(self.key_bytes as usize, s.stripes) / 512;
            let (start, end) = (s.offset as u64, s.offset as u64 + len);
            if start < hdr_end {
                return Err(corrupt(format!("keyslot {i} overlaps the header")));
            }
            if self.payload_offset != 0 && end > self.payload_offset as u64 {
                return Err(corrupt(format!("keyslot {i} overlaps the data")));
            }
            if dev_sectors.is_some_and(|n| end > n) {
                return Err(corrupt(format!("keyslot {i} is beyond the device end")));
            }
        }
        Ok(())
    }

    /// The 592 header bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, LuksError> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[..6].copy_from_slice(&MAGIC);
        b[6..8].copy_from_slice(&1u16.to_be_bytes());
        put_cstr(&mut b[8..40], &self.cipher_name)?;
        put_cstr(&mut b[40..72], &self.cipher_mode)?;
        put_cstr(&mut b[72..104], &self.hash)?;
        b[104..108].copy_from_slice(&self.payload_offset.to_be_bytes());
        b[108..112].copy_from_slice(&self.key_bytes.to_be_bytes());
        b[112..132].copy_from_slice(&self.mk_digest);
        b[132..164].copy_from_slice(&self.mk_salt);
        b[164..168].copy_from_slice(&self.mk_iterations.to_be_bytes());
        put_cstr(&mut b[168..208], &self.uuid)?;
        for (i, s) in self.slots.iter().enumerate() {
            let o = 208 + i * 48;
            let st = if s.active { KEY_ENABLED } else { KEY_DISABLED };
            b[o..o + 4].copy_from_slice(&st.to_be_bytes());
            b[o + 4..o + 8].copy_from_slice(&s.iterations.to_be_bytes());
            b[o + 8..o + 40].copy_from_slice(&s.salt);
            b[o + 40..o + 44].copy_from_slice(&s.offset.to_be_bytes());
            b[o + 44..o + 48].copy_from_slice(&s.stripes.to_be_bytes());
        }
        Ok(b)
    }

    /// The dm-crypt cipher spec (`aes-xts-plain64`).
    pub fn cipher_spec(&self) -> String {
        format!("{}-{}", self.cipher_name, self.cipher_mode)
    }

    /// True when `vk` is this volume's key (its PBKDF2 digest matches).
    pub fn verify_key(&self, vk: &[u8]) -> Result<bool, LuksError> {
        let kdf = Kdf::Pbkdf2 {
            hash: self.hash.clone(),
            iterations: self.mk_iterations,
        };
        let d = derive(&kdf, vk, &self.mk_salt, DIGEST_SIZE)?;
        Ok(d[..] == self.mk_digest[..])
    }

    /// Set the digest fields for volume key `vk`.
    pub fn set_digest(&mut self, vk: &[u8], iterations: u32) -> Result<(), LuksError> {
        let salt = super::random_bytes(SALT_SIZE);
        self.mk_salt.copy_from_slice(&salt);
        self.mk_iterations = iterations;
        let kdf = Kdf::Pbkdf2 {
            hash: self.hash.clone(),
            iterations,
        };
        let d = derive(&kdf, vk, &self.mk_salt, DIGEST_SIZE)?;
        self.mk_digest.copy_from_slice(&d);
        Ok(())
    }

    /// A new header with empty keyslots laid out as cryptsetup 2.x does: areas aligned to 4 KiB
    /// from sector 8, data at `payload_offset` (or right after the areas, 1 MiB aligned).
    pub fn new_layout(
        cipher_name: &str,
        cipher_mode: &str,
        hash: &str,
        key_bytes: u32,
        uuid: &str,
        payload_offset: Option<u32>,
    ) -> Result<Header, LuksError> {
        let area = super::af::area_bytes(key_bytes as usize, STRIPES) / 512;
        let area = area.div_ceil(8) * 8;
        let slots: [Slot; SLOTS] =
            std::array::from_fn(|i| Slot::empty((8 + i as u64 * area) as u32));
        let end = 8 + SLOTS as u64 * area;
        let payload = match payload_offset {
            Some(p) if (p as u64) < end => {
                return Err(LuksError::Invalid(format!(
                    "data offset {p} is inside the keyslot areas (they end at sector {end})"
                )))
            }
            Some(p) => p,
            None => end.div_ceil(2048).max(1) as u32 * 2048,
        };
        let h = Header {
            cipher_name: cipher_name.into(),
            cipher_mode: cipher_mode.into(),
            hash: hash.into(),
            payload_offset: payload,
            key_bytes,
            mk_digest: [0; DIGEST_SIZE],
            mk_salt: [0; SALT_SIZE],
            mk_iterations: 1,
            uuid: uuid.into(),
            slots,
        };
        h.to_bytes()?;
        Ok(h)
    }
}
