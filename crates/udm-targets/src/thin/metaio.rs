//! The pool's metadata device as persistent-data's `MetaIo`: 4 KiB blocks read and written
//! synchronously on the pool's worker (never on the I/O pool). The device behind it is
//! swapped when a reload hands the pool a fresh handle (a grown metadata device).

use parking_lot::RwLock;
use std::sync::Arc;
use udm_io::{BlockDevice, Sectors};
use udm_pdata::io::MetaIo;
use udm_pdata::{BlockBuf, BLOCK_SIZE};

const SECTORS_PER_BLOCK: u64 = (BLOCK_SIZE / 512) as u64;

/// A block device seen as metadata blocks.
pub struct DevMetaIo {
    dev: RwLock<Arc<dyn BlockDevice>>,
}

impl DevMetaIo {
    pub fn new(dev: Arc<dyn BlockDevice>) -> DevMetaIo {
        DevMetaIo {
            dev: RwLock::new(dev),
        }
    }

    /// Use `dev` from now on (the same device, reopened by a newer table).
    pub fn set_device(&self, dev: Arc<dyn BlockDevice>) {
        *self.dev.write() = dev;
    }

    fn dev(&self) -> Arc<dyn BlockDevice> {
        self.dev.read().clone()
    }
}

fn io_err(e: udm_io::IoError) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

impl MetaIo for DevMetaIo {
    fn nr_blocks(&self) -> u64 {
        self.dev().size().0 / SECTORS_PER_BLOCK
    }
    fn read_block(&self, b: u64, buf: &mut BlockBuf) -> std::io::Result<()> {
        let data = udm_io::sync::read_at(
            self.dev().as_ref(),
            Sectors(b * SECTORS_PER_BLOCK),
            BLOCK_SIZE,
        )
        .map_err(io_err)?;
        buf.copy_from_slice(&data);
        Ok(())
    }
    fn write_block(&self, b: u64, buf: &BlockBuf) -> std::io::Result<()> {
        udm_io::sync::write_at(self.dev().as_ref(), Sectors(b * SECTORS_PER_BLOCK), buf)
            .map_err(io_err)
    }
    fn flush(&self) -> std::io::Result<()> {
        udm_io::sync::flush(self.dev().as_ref()).map_err(io_err)
    }
}
