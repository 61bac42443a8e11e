//! The cache metadata device as persistent-data sees it: 4096-byte blocks read and written
//! synchronously through a `BlockDevice` (only ever on the target's own worker or in the
//! constructor / suspend hooks, never in `map`).

use std::sync::Arc;
use udm_io::{BlockDevice, IoError, Sectors};
use udm_pdata::io::MetaIo;
use udm_pdata::{BlockBuf, BLOCK_SIZE};

/// A `MetaIo` over a block device.
pub struct DevMetaIo {
    dev: Arc<dyn BlockDevice>,
}

impl DevMetaIo {
    pub fn new(dev: Arc<dyn BlockDevice>) -> DevMetaIo {
        DevMetaIo { dev }
    }
}

fn io_err(e: IoError) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

const SECTORS_PER_BLOCK: u64 = (BLOCK_SIZE / 512) as u64;

impl MetaIo for DevMetaIo {
    fn nr_blocks(&self) -> u64 {
        self.dev.size().0 / SECTORS_PER_BLOCK
    }
    fn read_block(&self, b: u64, buf: &mut BlockBuf) -> std::io::Result<()> {
        let data = udm_io::sync::read_at(&*self.dev, Sectors(b * SECTORS_PER_BLOCK), BLOCK_SIZE)
            .map_err(io_err)?;
        buf.copy_from_slice(data.as_slice());
        Ok(())
    }
    fn write_block(&self, b: u64, buf: &BlockBuf) -> std::io::Result<()> {
        udm_io::sync::write_at(&*self.dev, Sectors(b * SECTORS_PER_BLOCK), buf).map_err(io_err)
    }
    fn flush(&self) -> std::io::Result<()> {
        udm_io::sync::flush(&*self.dev).map_err(io_err)
    }
}
