//! dm-raid's on-disk metadata: `struct dm_raid_superblock` in the first logical block of each
//! metadata device, and md's write-intent bitmap (`bitmap_super_t` and one bit per region,
//! little-endian bit order, version 4) 4 KiB into it. Pure encode/decode; never panics on
//! any input.

/// "DmRd".
pub const DM_RAID_MAGIC: u32 = 0x6452_6D44;
/// Extended (v1.9.0) superblock members are valid.
pub const FEATURE_SUPPORTS_V190: u32 = 0x1;
pub const SB_FLAG_RESHAPE_ACTIVE: u32 = 0x1;
pub const SB_FLAG_RESHAPE_BACKWARDS: u32 = 0x2;
/// The packed superblock's size in bytes.
pub const SB_SIZE: usize = 4 * 4 + 8 * 4 + 4 * 3 + 4 + 8 + 4 * 4 + 8 * 4 + 8 * 3 + 4;
/// "bitm".
pub const BITMAP_MAGIC: u32 = 0x6d74_6962;
pub const BITMAP_MAJOR_HI: u32 = 4;
/// `bitmap_super_t` is 256 bytes; the bits follow it.
pub const BITMAP_SB_SIZE: usize = 256;
/// Bitmap location on the metadata device (bytes).
pub const BITMAP_OFFSET: u64 = 4096;
pub const BITMAP_STALE: u32 = 1 << 1;

/// Number of failed-device bitmap words (256 devices).
pub const FAILED_WORDS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Superblock {
    pub magic: u32,
    pub compat_features: u32,
    pub num_devices: u32,
    pub array_position: u32,
    pub events: u64,
    /// Word 0 is the pristine `failed_devices`, 1..4 the v1.9.0 extension.
    pub failed_devices: [u64; FAILED_WORDS],
    pub disk_recovery_offset: u64,
    pub array_resync_offset: u64,
    pub level: u32,
    pub layout: u32,
    pub stripe_sectors: u32,
    pub flags: u32,
    pub reshape_position: u64,
    pub new_level: u32,
    pub new_layout: u32,
    pub new_stripe_sectors: u32,
    pub delta_disks: i32,
    pub array_sectors: u64,
    pub data_offset: u64,
    pub new_data_offset: u64,
    pub sectors: u64,
    pub incompat_features: u32,
}

struct W<'a>(&'a mut [u8], usize);
impl W<'_> {
    fn u32(&mut self, v: u32) {
        self.0[self.1..self.1 + 4].copy_from_slice(&v.to_le_bytes());
        self.1 += 4;
    }
    fn u64(&mut self, v: u64) {
        self.0[self.1..self.1 + 8].copy_from_slice(&v.to_le_bytes());
        self.1 += 8;
    }
}
struct R<'a>(&'a [u8], usize);
impl R<'_> {
    fn u32(&mut self) -> u32 {
        let v = u32::from_le_bytes(self.0[self.1..self.1 + 4].try_into().unwrap_or([0; 4]));
        self.1 += 4;
        v
    }
    fn u64(&mut self) -> u64 {
        let v = u64::from_le_bytes(self.0[self.1..self.1 + 8].try_into().unwrap_or([0; 8]));
        self.1 += 8;
        v
    }
}

impl Superblock {
    pub fn is_failed(&self, i: u32) -> bool {
        let w = (i / 64) as usize;
        w < FAILED_WORDS && self.failed_devices[w] & (1 << (i % 64)) != 0
    }
    pub fn set_failed(&mut self, i: u32) {
        let w = (i / 64) as usize;
        if w < FAILED_WORDS {
            self.failed_devices[w] |= 1 << (i % 64);
        }
    }

    /// Encode into a block of `size` bytes (the metadata device's logical block size), the
    /// rest zero.
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut b = vec![0u8; size.max(SB_SIZE)];
        let mut w = W(&mut b, 0);
        w.u32(self.magic);
        w.u32(self.compat_features);
        w.u32(self.num_devices);
        w.u32(self.array_position);
        w.u64(self.events);
        w.u64(self.failed_devices[0]);
        w.u64(self.disk_recovery_offset);
        w.u64(self.array_resync_offset);
        w.u32(self.level);
        w.u32(self.layout);
        w.u32(self.stripe_sectors);
        w.u32(self.flags);
        w.u64(self.reshape_position);
        w.u32(self.new_level);
        w.u32(self.new_layout);
        w.u32(self.new_stripe_sectors);
        w.u32(self.delta_disks as u32);
        w.u64(self.array_sectors);
        w.u64(self.data_offset);
        w.u64(self.new_data_offset);
        w.u64(self.sectors);
        for i in 1..FAILED_WORDS {
            w.u64(self.failed_devices[i]);
        }
        w.u32(self.incompat_features);
        b
    }

    /// Decode the fields from a block (a short block decodes as zeroes; the caller checks the
    /// magic and features).
    pub fn decode(b: &[u8]) -> Superblock {
        let mut buf = [0u8; SB_SIZE];
        let n = b.len().min(SB_SIZE);
        buf[..n].copy_from_slice(&b[..n]);
        let mut r = R(&buf, 0);
        let mut s = Superblock {
            magic: r.u32(),
            compat_features: r.u32(),
            num_devices: r.u32(),
            array_position: r.u32(),
            events: r.u64(),
            ..Superblock::default()
        };
        s.failed_devices[0] = r.u64();
        s.disk_recovery_offset = r.u64();
        s.array_resync_offset = r.u64();
        s.level = r.u32();
        s.layout = r.u32();
        s.stripe_sectors = r.u32();
        s.flags = r.u32();
        s.reshape_position = r.u64();
        s.new_level = r.u32();
        s.new_layout = r.u32();
        s.new_stripe_sectors = r.u32();
        s.delta_disks = r.u32() as i32;
        s.array_sectors = r.u64();
        s.data_offset = r.u64();
        s.new_data_offset = r.u64();
        s.sectors = r.u64();
        for i in 1..FAILED_WORDS {
            s.failed_devices[i] = r.u64();
        }
        s.incompat_features = r.u32();
        if s.compat_features & FEATURE_SUPPORTS_V190 == 0 {
            // Pre-1.9.0: the extension is not there.
            s.failed_devices[1..].iter_mut().for_each(|w| *w = 0);
        }
        s
    }

    pub fn valid_magic(&self) -> bool {
        self.magic == DM_RAID_MAGIC
    }
}

/// `bitmap_super_t` (256 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BitmapSuper {
    pub magic: u32,
    pub version: u32,
    pub uuid: [u8; 16],
    pub events: u64,
    pub events_cleared: u64,
    pub sync_size: u64,
    pub state: u32,
    /// Bytes.
    pub chunksize: u32,
    /// Seconds.
    pub daemon_sleep: u32,
    pub write_behind: u32,
    pub sectors_reserved: u32,
    pub nodes: u32,
}

/// Why a bitmap superblock is refused (md's `md_bitmap_read_sb` reasons).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    #[error("bad magic")]
    BadMagic,
    #[error("unrecognized superblock version")]
    Version,
    #[error("bitmap chunksize too small")]
    ChunkTooSmall,
    #[error("bitmap chunksize not a power of 2")]
    ChunkNotPow2,
    #[error("daemon sleep period out of range")]
    DaemonSleep,
    #[error("write-behind limit out of range (0 - 16383)")]
    WriteBehind,
}

impl BitmapError {
    pub fn errno(&self) -> i32 {
        libc::EINVAL
    }
}

impl BitmapSuper {
    pub fn encode(&self) -> [u8; BITMAP_SB_SIZE] {
        let mut b = [0u8; BITMAP_SB_SIZE];
        let mut w = W(&mut b, 0);
        w.u32(self.magic);
        w.u32(self.version);
        w.0[8..24].copy_from_slice(&self.uuid);
        w.1 = 24;
        w.u64(self.events);
        w.u64(self.events_cleared);
        w.u64(self.sync_size);
        w.u32(self.state);
        w.u32(self.chunksize);
        w.u32(self.daemon_sleep);
        w.u32(self.write_behind);
        w.u32(self.sectors_reserved);
        w.u32(self.nodes);
        b
    }

    pub fn decode(b: &[u8]) -> BitmapSuper {
        let mut buf = [0u8; BITMAP_SB_SIZE];
        let n = b.len().min(BITMAP_SB_SIZE);
        buf[..n].copy_from_slice(&b[..n]);
        let mut r = R(&buf, 0);
        let magic = r.u32();
        let version = r.u32();
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&buf[8..24]);
        r.1 = 24;
        BitmapSuper {
            magic,
            version,
            uuid,
            events: r.u64(),
            events_cleared: r.u64(),
            sync_size: r.u64(),
            state: r.u32(),
            chunksize: r.u32(),
            daemon_sleep: r.u32(),
            write_behind: r.u32(),
            sectors_reserved: r.u32(),
            nodes: r.u32(),
        }
    }

    /// md's checks on load.
    pub fn validate(&self) -> Result<(), BitmapError> {
        if self.magic != BITMAP_MAGIC {
            return Err(BitmapError::BadMagic);
        }
        if !(3..=5).contains(&self.version) {
            return Err(BitmapError::Version);
        }
        if self.chunksize < 512 {
            return Err(BitmapError::ChunkTooSmall);
        }
        if !self.chunksize.is_power_of_two() {
            return Err(BitmapError::ChunkNotPow2);
        }
        if self.daemon_sleep < 1 {
            return Err(BitmapError::DaemonSleep);
        }
        if self.write_behind > 0x3fff {
            return Err(BitmapError::WriteBehind);
        }
        Ok(())
    }
}

/// Bytes the bitmap occupies on disk (superblock + bits) for `chunks` regions.
pub fn bitmap_bytes(chunks: u64) -> u64 {
    BITMAP_SB_SIZE as u64 + chunks.div_ceil(8)
}

/// Test bit `i` of an on-disk bit area (little-endian bit order).
pub fn test_bit(bits: &[u8], i: u64) -> bool {
    bits.get((i / 8) as usize)
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

pub fn set_bit(bits: &mut [u8], i: u64, on: bool) {
    if let Some(b) = bits.get_mut((i / 8) as usize) {
        if on {
            *b |= 1 << (i % 8);
        } else {
            *b &= !(1 << (i % 8));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_layout_and_round_trip() {
        assert_eq!(SB_SIZE, 148);
        let mut s = Superblock {
            magic: DM_RAID_MAGIC,
            compat_features: FEATURE_SUPPORTS_V190,
            num_devices: 3,
            array_position: 2,
            events: 7,
            level: 5,
            layout: 2,
            stripe_sectors: 128,
            reshape_position: u64::MAX,
            sectors: 4096,
            ..Default::default()
        };
        s.set_failed(1);
        s.set_failed(130);
        let b = s.encode(512);
        assert_eq!(b.len(), 512);
        assert_eq!(&b[0..4], b"DmRd");
        // failed_devices word 0 at byte 24; the extension's words at 120.
        assert_eq!(b[24], 2);
        assert_eq!(b[128], 4);
        assert_eq!(Superblock::decode(&b), s);
        assert!(s.is_failed(130) && !s.is_failed(0));
    }

    #[test]
    fn bitmap_super_round_trip_and_checks() {
        let s = BitmapSuper {
            magic: BITMAP_MAGIC,
            version: BITMAP_MAJOR_HI,
            events: 3,
            sync_size: 8192,
            chunksize: 4 << 20,
            daemon_sleep: 5,
            ..Default::default()
        };
        let b = s.encode();
        assert_eq!(&b[0..4], b"bitm");
        assert_eq!(u32::from_le_bytes(b[52..56].try_into().unwrap()), 4 << 20);
        assert_eq!(BitmapSuper::decode(&b), s);
        assert!(s.validate().is_ok());
        let bad = BitmapSuper {
            chunksize: 3000,
            ..s.clone()
        };
        assert_eq!(bad.validate(), Err(BitmapError::ChunkNotPow2));
        let mut bits = vec![0u8; 2];
        set_bit(&mut bits, 9, true);
        assert_eq!(bits, [0, 2]);
        assert!(test_bit(&bits, 9) && !test_bit(&bits, 8) && !test_bit(&bits, 99));
    }
}
