//! udm-io: the block I/O model shared by every udm crate — units, owned buffers, bios,
//! the `BlockDevice` trait, a worker pool, and the file/RAM/pattern backends.

pub mod bio;
pub mod buf;
pub mod device;
pub mod error;
pub mod fcopy;
pub mod file;
mod filemap;
pub mod mem;
pub mod pool;
pub mod sigbus;
pub mod sync;
pub mod units;
mod writeq;

pub use bio::{Bio, BioFlags, Completion, Op};
pub use buf::{BufPool, IoBuf};
pub use device::{
    blocking_submit_allowed, lcm_not_zero, min_not_zero, with_blocking_submit, BlockDevice, DevId,
    Extent, FileReader, FileWriter, Limits, MappedReader,
};
pub use error::IoError;
pub use fcopy::copy_in_kernel;
pub use file::FileDevice;
pub use mem::{MemDevice, PatternDevice};
pub use pool::WorkerPool;
pub use units::{Bytes, Sectors, SECTOR_SIZE};
