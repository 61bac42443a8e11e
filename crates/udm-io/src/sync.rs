//! Blocking helpers over `BlockDevice::submit`, for tools, tests and worker-pool code.

use crate::{Bio, BioFlags, BlockDevice, IoBuf, IoError, Sectors};
use crossbeam_channel::bounded;

/// Submit a bio built by `make` and wait for it; returns the result and the buffer.
pub fn submit_wait<F>(dev: &dyn BlockDevice, make: F) -> (Result<(), IoError>, IoBuf)
where
    F: FnOnce(crate::Completion) -> Bio,
{
    let (tx, rx) = bounded(1);
    let bio = make(Box::new(move |res, buf| {
        let _ = tx.send((res, buf));
    }));
    dev.submit(bio);
    rx.recv().unwrap_or((Err(IoError::Io), IoBuf::empty()))
}

/// Read `len` bytes at `sector`.
pub fn read_at(dev: &dyn BlockDevice, sector: Sectors, len: usize) -> Result<IoBuf, IoError> {
    let (r, buf) = submit_wait(dev, |d| Bio::read(sector, IoBuf::zeroed(len), d));
    r.map(|_| buf)
}

/// Write `data` at `sector`.
pub fn write_at(dev: &dyn BlockDevice, sector: Sectors, data: &[u8]) -> Result<(), IoError> {
    submit_wait(dev, |d| Bio::write(sector, IoBuf::from_slice(data), d)).0
}

/// Write with FUA.
pub fn write_fua_at(dev: &dyn BlockDevice, sector: Sectors, data: &[u8]) -> Result<(), IoError> {
    submit_wait(dev, |d| {
        Bio::write(sector, IoBuf::from_slice(data), d).with_flags(BioFlags::FUA)
    })
    .0
}

/// Flush the device.
pub fn flush(dev: &dyn BlockDevice) -> Result<(), IoError> {
    submit_wait(dev, Bio::flush).0
}

/// Discard a range.
pub fn discard(dev: &dyn BlockDevice, sector: Sectors, len: Sectors) -> Result<(), IoError> {
    submit_wait(dev, |d| Bio::discard(sector, len, d)).0
}

/// Write zeroes to a range.
pub fn write_zeroes(dev: &dyn BlockDevice, sector: Sectors, len: Sectors) -> Result<(), IoError> {
    submit_wait(dev, |d| Bio::write_zeroes(sector, len, d)).0
}
