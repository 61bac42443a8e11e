//! In-memory devices for tests and tools: `MemDevice` (RAM disk) and `PatternDevice`
//! (read-only; every 8-byte word holds its own byte offset, so misplaced data is obvious).

use crate::{Bio, BlockDevice, DevId, IoError, Op, Sectors, SECTOR_SIZE};
use parking_lot::RwLock;

/// A RAM disk. Completes bios inline.
pub struct MemDevice {
    data: RwLock<Vec<u8>>,
    name: String,
}

impl MemDevice {
    pub fn new(name: &str, size: Sectors) -> MemDevice {
        MemDevice {
            data: RwLock::new(vec![0; (size.0 * SECTOR_SIZE) as usize]),
            name: name.to_string(),
        }
    }
    /// A copy of the whole contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.read().clone()
    }
}

impl BlockDevice for MemDevice {
    fn submit(&self, mut bio: Bio) {
        if bio.end() > self.size() {
            return bio.complete(Err(IoError::Io));
        }
        let off = (bio.sector.0 * SECTOR_SIZE) as usize;
        let len = (bio.len().0 * SECTOR_SIZE) as usize;
        match bio.op {
            Op::Read => bio
                .buf_mut()
                .copy_from_slice(&self.data.read()[off..off + len]),
            Op::Write => self.data.write()[off..off + len].copy_from_slice(bio.buf()),
            Op::Discard | Op::WriteZeroes => self.data.write()[off..off + len].fill(0),
            Op::Flush => {}
        }
        bio.complete(Ok(()))
    }
    fn size(&self) -> Sectors {
        Sectors(self.data.read().len() as u64 / SECTOR_SIZE)
    }
    fn id(&self) -> DevId {
        DevId::Path(self.name.clone())
    }
}

/// A read-only device whose little-endian u64 words equal their byte offsets.
pub struct PatternDevice {
    size: Sectors,
}

impl PatternDevice {
    pub fn new(size: Sectors) -> PatternDevice {
        PatternDevice { size }
    }
    /// Fill `buf` with the pattern as it appears at byte offset `off`.
    pub fn fill(buf: &mut [u8], off: u64) {
        for (i, w) in buf.chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&(off + 8 * i as u64).to_le_bytes());
        }
    }
}

impl BlockDevice for PatternDevice {
    fn submit(&self, mut bio: Bio) {
        if bio.end() > self.size {
            return bio.complete(Err(IoError::Io));
        }
        match bio.op {
            Op::Read => {
                let off = bio.sector.0 * SECTOR_SIZE;
                PatternDevice::fill(bio.buf_mut(), off);
                bio.complete(Ok(()))
            }
            Op::Flush => bio.complete(Ok(())),
            _ => bio.complete(Err(IoError::ReadOnly)),
        }
    }
    fn size(&self) -> Sectors {
        self.size
    }
    fn id(&self) -> DevId {
        DevId::Path("pattern".into())
    }
    fn read_only(&self) -> bool {
        true
    }
}
