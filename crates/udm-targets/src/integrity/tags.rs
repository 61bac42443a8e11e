//! Tags for the layer above: the kernel hands per-block integrity tags to dm-integrity in a
//! bio's integrity payload; udm has no such payload in `Bio`, so an `integrity` device
//! without `internal_hash` publishes a [`TagDevice`] under its own device id, and the target
//! above (crypt with `integrity:N:…`) finds it with `TargetCtx::lookup` and reads and
//! writes data and tags together through it.
//!
//! Contract: sectors are the integrity device's (it is a singleton, so its table's);
//! `data` is whole blocks; `tags` holds `tag_size` bytes per block in block order. The
//! calls block and run on worker threads, never in `map`. Tags written are stored as given
//! (the device checks nothing), and read back exactly, from the journal or the tag area.
//! A plain bio written to the device gets zero tags, as in the kernel.

use super::core::Inner;
use super::params::Mode;
use std::sync::Arc;
use udm_io::IoError;

/// The tag-carrying view of one `integrity` table line.
pub struct TagDevice {
    pub(crate) inner: Arc<Inner>,
}

impl TagDevice {
    /// Bytes of tag per block.
    pub fn tag_size(&self) -> usize {
        self.inner.tag_size
    }
    /// Block size in bytes.
    pub fn block_size(&self) -> usize {
        self.inner.block_bytes()
    }
    /// Sectors the device provides.
    pub fn sectors(&self) -> u64 {
        self.inner.geo.provided_data_sectors
    }

    fn check(&self, s: u64, len: usize) -> Result<(), IoError> {
        let i = &self.inner;
        if s + (len / 512) as u64 > i.geo.provided_data_sectors
            || (s | (len / 512) as u64) & (i.spb() - 1) != 0
            || !len.is_multiple_of(i.block_bytes())
        {
            return Err(IoError::Io);
        }
        i.failed().map_or(Ok(()), Err)
    }

    /// Read `out.len()` bytes at `s` and return their tags.
    pub fn read(&self, s: u64, out: &mut [u8]) -> Result<Vec<u8>, IoError> {
        self.check(s, out.len())?;
        let i = &self.inner;
        let _io = i.io_lock.read();
        let mut tags = vec![0u8; out.len() / i.block_bytes() * i.tag_size];
        i.report(i.read_blocks(s, out, Some(&mut tags)))?;
        Ok(tags)
    }

    /// Write `data` at `s` with its `tags`; with `fua` it is durable on return.
    pub fn write(&self, s: u64, data: &[u8], tags: &[u8], fua: bool) -> Result<(), IoError> {
        self.check(s, data.len())?;
        let i = &self.inner;
        if i.mode == Mode::Recovery {
            return Err(IoError::Io);
        }
        let _io = i.io_lock.read();
        match i.mode {
            Mode::Journal => i.journal_write(s, data, Some(tags), fua),
            _ => {
                i.write_direct(s, data, Some(tags))?;
                if fua {
                    i.flush_all()?;
                }
                i.failed().map_or(Ok(()), Err)
            }
        }
    }

    /// Make everything written durable (a flush through the device).
    pub fn flush(&self) -> Result<(), IoError> {
        let i = &self.inner;
        let _io = i.io_lock.read();
        if i.mode == Mode::Journal {
            i.commit_sync();
        } else if i.flush_all().is_err() {
            i.io_error("flushing disk cache", libc::EIO);
        }
        i.failed().map_or(Ok(()), Err)
    }
}
