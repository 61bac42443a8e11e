//! Reading a dm-log-writes log: the super block, then the entries in order, with the checks
//! replay-log makes (`LogReader`), and replaying them onto a device (`replay`).

use super::format::*;
use std::sync::Arc;
use udm_io::{sync, BlockDevice, Sectors};

/// One entry as read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// 0-based entry number.
    pub index: u64,
    /// Block (in `sectorsize` units) of the header in the log.
    pub block: u64,
    pub header: EntryHeader,
    /// The mark text, for marks.
    pub mark: Option<String>,
}

impl LogEntry {
    pub fn flags(&self) -> u64 {
        self.header.flags
    }
    pub fn is_flush(&self) -> bool {
        self.flags() & LOG_FLUSH_FLAG != 0
    }
    pub fn is_fua(&self) -> bool {
        self.flags() & LOG_FUA_FLAG != 0
    }
    pub fn is_discard(&self) -> bool {
        self.flags() & LOG_DISCARD_FLAG != 0
    }
    pub fn is_mark(&self) -> bool {
        self.flags() & LOG_MARK_FLAG != 0
    }
    /// Blocks of data stored after the header.
    pub fn data_blocks(&self) -> u64 {
        if self.is_discard() {
            0
        } else {
            self.header.nr_sectors
        }
    }
}

/// Walks a log on any block device (an image file opened as a `FileDevice` works).
pub struct LogReader {
    dev: Arc<dyn BlockDevice>,
    pub sup: LogSuper,
    /// Next header block.
    next_block: u64,
    next_index: u64,
}

impl LogReader {
    /// Read and check the super block.
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<LogReader, LogError> {
        let b = sync::read_at(&*dev, Sectors(0), 512)?;
        let sup = LogSuper::decode(&b)?;
        Ok(LogReader {
            dev,
            sup,
            next_block: 1,
            next_index: 0,
        })
    }

    pub fn sectorsize(&self) -> u64 {
        self.sup.sectorsize as u64
    }

    fn spb(&self) -> u64 {
        self.sectorsize() / 512
    }

    /// Go back to the first entry.
    pub fn rewind(&mut self) {
        self.next_block = 1;
        self.next_index = 0;
    }

    /// The next entry, or `None` after `nr_entries`.
    pub fn next_entry(&mut self) -> Result<Option<LogEntry>, LogError> {
        if self.next_index >= self.sup.nr_entries {
            return Ok(None);
        }
        let index = self.next_index;
        let block = self.next_block;
        let end = (block + 1).checked_mul(self.spb());
        if end.is_none_or(|end| end > self.dev.size().0) {
            return Err(LogError::Truncated { entry: index });
        }
        let b = sync::read_at(
            &*self.dev,
            Sectors(block * self.spb()),
            self.sectorsize() as usize,
        )?;
        let header = EntryHeader::decode(&b);
        if !header.valid(&b) {
            return Err(LogError::Malformed {
                entry: index,
                block,
            });
        }
        let mark = (header.flags & LOG_MARK_FLAG != 0).then(|| {
            let max = b.len() - ENTRY_LEN;
            let n = (header.data_len as usize).min(max);
            let text = &b[ENTRY_LEN..ENTRY_LEN + n];
            let text = text.split(|&c| c == 0).next().unwrap_or(&[]);
            String::from_utf8_lossy(text).into_owned()
        });
        let e = LogEntry {
            index,
            block,
            header,
            mark,
        };
        // A data length past the end of the log shows as `Truncated` on the next header or
        // when the data is read; one that overflows cannot be followed at all.
        self.next_block = (block + 1)
            .checked_add(e.data_blocks())
            .ok_or(LogError::Truncated { entry: index })?;
        self.next_index += 1;
        Ok(Some(e))
    }

    /// The data an entry wrote.
    pub fn read_data(&self, e: &LogEntry) -> Result<Vec<u8>, LogError> {
        let n = e.data_blocks();
        if n == 0 {
            return Ok(Vec::new());
        }
        let end = (e.block + 1)
            .checked_add(n)
            .and_then(|b| b.checked_mul(self.spb()));
        if end.is_none_or(|end| end > self.dev.size().0) {
            return Err(LogError::Truncated { entry: e.index });
        }
        let start = (e.block + 1) * self.spb();
        Ok(sync::read_at(&*self.dev, Sectors(start), (n * self.sectorsize()) as usize)?.into_vec())
    }

    /// Every entry, in order.
    pub fn entries(&mut self) -> Result<Vec<LogEntry>, LogError> {
        self.rewind();
        let mut v = Vec::new();
        while let Some(e) = self.next_entry()? {
            v.push(e);
        }
        Ok(v)
    }

    /// Skip to just after the first mark called `name` (replay-log's `--start-mark`).
    pub fn seek_past_mark(&mut self, name: &str) -> Result<LogEntry, LogError> {
        while let Some(e) = self.next_entry()? {
            if e.mark.as_deref() == Some(name) {
                return Ok(e);
            }
        }
        Err(LogError::NoMark(name.to_string()))
    }

    /// Skip to entry `n` (0-based).
    pub fn seek_entry(&mut self, n: u64) -> Result<(), LogError> {
        if n >= self.sup.nr_entries {
            return Err(LogError::NoEntry(n));
        }
        self.rewind();
        for _ in 0..n {
            self.next_entry()?;
        }
        Ok(())
    }
}

/// What to replay and when to stop.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Start at this entry (ignored when `start_mark` is set).
    pub start_entry: u64,
    /// Start just after this mark.
    pub start_mark: Option<String>,
    /// Stop after this many entries have been replayed.
    pub limit: Option<u64>,
    /// Stop after replaying this mark.
    pub end_mark: Option<String>,
    /// Stop after the next entry with any of these flags (`LOG_FLUSH_FLAG`, `LOG_FUA_FLAG`).
    pub stop_flags: u64,
    /// Skip discards instead of discarding on the target.
    pub no_discard: bool,
}

/// What the per-entry callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Stop,
}

/// The outcome of a replay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplaySummary {
    /// Entries replayed.
    pub replayed: u64,
    /// The last entry replayed.
    pub last: Option<LogEntry>,
    /// True when the callback asked to stop.
    pub stopped: bool,
}

/// Apply one entry to `dev`.
pub fn apply(
    reader: &LogReader,
    e: &LogEntry,
    dev: &dyn BlockDevice,
    no_discard: bool,
) -> Result<(), LogError> {
    let spb = reader.sectorsize() / 512;
    let range = || LogError::OutOfRange { entry: e.index };
    let at = Sectors(e.header.sector.checked_mul(spb).ok_or_else(range)?);
    if e.is_discard() {
        if !no_discard && e.header.nr_sectors > 0 {
            let len = e.header.nr_sectors.checked_mul(spb).ok_or_else(range)?;
            at.0.checked_add(len).ok_or_else(range)?;
            sync::discard(dev, at, Sectors(len))?;
        }
        return Ok(());
    }
    if e.header.nr_sectors > 0 {
        let data = reader.read_data(e)?;
        sync::write_at(dev, at, &data)?;
    }
    if e.is_flush() || e.is_fua() {
        sync::flush(dev)?;
    }
    Ok(())
}

/// Replay entries onto `dev` per `opts`, calling `after` once each entry is on `dev`.
pub fn replay(
    reader: &mut LogReader,
    dev: &dyn BlockDevice,
    opts: &ReplayOptions,
    mut after: impl FnMut(&LogEntry, &dyn BlockDevice) -> Result<Next, LogError>,
) -> Result<ReplaySummary, LogError> {
    reader.rewind();
    if let Some(m) = &opts.start_mark {
        reader.seek_past_mark(m)?;
    } else if opts.start_entry > 0 {
        reader.seek_entry(opts.start_entry)?;
    }
    let mut sum = ReplaySummary::default();
    while let Some(e) = reader.next_entry()? {
        apply(reader, &e, dev, opts.no_discard)?;
        sum.replayed += 1;
        let next = after(&e, dev)?;
        let end = opts.limit.is_some_and(|l| sum.replayed >= l)
            || (e.flags() & opts.stop_flags != 0)
            || (opts.end_mark.is_some() && e.mark == opts.end_mark);
        sum.last = Some(e);
        if next == Next::Stop {
            sum.stopped = true;
            break;
        }
        if end {
            break;
        }
    }
    sync::flush(dev)?;
    Ok(sum)
}
