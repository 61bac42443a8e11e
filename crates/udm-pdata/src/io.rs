//! Synchronous metadata block I/O: a file backend and an in-memory backend that can
//! simulate a crash (writes not yet flushed are lost, all or any subset of them).

use crate::{BlockBuf, BLOCK_SIZE};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};

/// A device of 4096-byte metadata blocks.
pub trait MetaIo: Send + Sync {
    /// Number of whole blocks on the device.
    fn nr_blocks(&self) -> u64;
    /// Read block `b` into `buf`.
    fn read_block(&self, b: u64, buf: &mut BlockBuf) -> std::io::Result<()>;
    /// Write `buf` to block `b` (volatile until [`MetaIo::flush`]).
    fn write_block(&self, b: u64, buf: &BlockBuf) -> std::io::Result<()>;
    /// Make every completed write durable.
    fn flush(&self) -> std::io::Result<()>;
}

/// A metadata device backed by a file or block device.
pub struct FileIo {
    file: File,
    nr_blocks: u64,
}

impl FileIo {
    /// Use `file` (opened read-write, or read-only for inspection).
    pub fn new(file: File) -> std::io::Result<FileIo> {
        use std::io::{Seek, SeekFrom};
        let mut f = file;
        let len = f.seek(SeekFrom::End(0))?;
        Ok(FileIo {
            file: f,
            nr_blocks: len / BLOCK_SIZE as u64,
        })
    }

    /// Open `path` read-write.
    pub fn open(path: &std::path::Path) -> std::io::Result<FileIo> {
        FileIo::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)?,
        )
    }
}

impl MetaIo for FileIo {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }
    fn read_block(&self, b: u64, buf: &mut BlockBuf) -> std::io::Result<()> {
        self.file.read_exact_at(buf, b * BLOCK_SIZE as u64)
    }
    fn write_block(&self, b: u64, buf: &BlockBuf) -> std::io::Result<()> {
        self.file.write_all_at(buf, b * BLOCK_SIZE as u64)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[derive(Default)]
struct MemState {
    nr_blocks: u64,
    durable: HashMap<u64, Box<BlockBuf>>,
    /// Writes since the last flush, in order.
    pending: Vec<(u64, Box<BlockBuf>)>,
    /// Latest pending content per block (what reads see).
    latest: HashMap<u64, usize>,
    /// Write/flush operations left before the simulated crash.
    budget: Option<u64>,
    /// Crash when this block is written.
    crash_block: Option<u64>,
    crashed: bool,
    writes: u64,
    flushes: u64,
}

/// What survives a simulated crash from the writes issued since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKeep {
    /// None of them.
    Nothing,
    /// All of them.
    Everything,
    /// Each one independently, chosen by a generator seeded with this value.
    Random(u64),
}

/// An in-memory metadata device. Clones share the same blocks.
#[derive(Clone)]
pub struct MemIo {
    state: Arc<Mutex<MemState>>,
}

impl MemIo {
    /// A zeroed device of `nr_blocks` blocks.
    pub fn new(nr_blocks: u64) -> MemIo {
        MemIo {
            state: Arc::new(Mutex::new(MemState {
                nr_blocks,
                ..Default::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Crash after `ops` more writes or flushes: later ones are silently dropped.
    pub fn crash_after(&self, ops: u64) {
        self.lock().budget = Some(ops);
    }

    /// Crash when block `b` is next written (that write and all later ones are dropped).
    pub fn crash_on_write(&self, b: u64) {
        self.lock().crash_block = Some(b);
    }

    /// Whether the simulated crash point has been reached.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// (writes, flushes) accepted so far.
    pub fn counters(&self) -> (u64, u64) {
        let s = self.lock();
        (s.writes, s.flushes)
    }

    /// Whether a write to block `b` is pending (issued, not yet flushed).
    pub fn is_pending(&self, b: u64) -> bool {
        self.lock().latest.contains_key(&b)
    }

    /// The device as it would be found after a power cut now: the durable blocks plus
    /// the pending writes that `keep` selects.
    pub fn crash_image(&self, keep: CrashKeep) -> MemIo {
        let s = self.lock();
        let mut durable = s.durable.clone();
        let mut rng = match keep {
            CrashKeep::Random(seed) => seed ^ 0x9E37_79B9_7F4A_7C15,
            _ => 0,
        };
        for (b, data) in &s.pending {
            let kept = match keep {
                CrashKeep::Nothing => false,
                CrashKeep::Everything => true,
                CrashKeep::Random(_) => splitmix(&mut rng) & 1 == 1,
            };
            if kept {
                durable.insert(*b, data.clone());
            }
        }
        MemIo {
            state: Arc::new(Mutex::new(MemState {
                nr_blocks: s.nr_blocks,
                durable,
                ..Default::default()
            })),
        }
    }

    /// Xor `mask` into byte `offset` of block `b` (durably), to test corruption handling.
    pub fn corrupt(&self, b: u64, offset: usize, mask: u8) {
        let mut s = self.lock();
        let mut data = Box::new([0u8; BLOCK_SIZE]);
        s.read_into(b, &mut data);
        data[offset] ^= mask;
        s.durable.insert(b, data);
        if let Some(i) = s.latest.remove(&b) {
            s.pending[i].1[offset] ^= mask;
            s.latest.insert(b, i);
        }
    }

    /// Copy of block `b` as reads see it.
    pub fn block(&self, b: u64) -> Box<BlockBuf> {
        let s = self.lock();
        let mut data = Box::new([0u8; BLOCK_SIZE]);
        s.read_into(b, &mut data);
        data
    }

    /// Every block's contents, for writing the device out to a file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let s = self.lock();
        let mut out = vec![0u8; s.nr_blocks as usize * BLOCK_SIZE];
        for (i, chunk) in out.chunks_mut(BLOCK_SIZE).enumerate() {
            let buf: &mut BlockBuf = chunk.try_into().expect("block sized chunk");
            s.read_into(i as u64, buf);
        }
        out
    }

    /// A device holding `bytes` (a whole number of blocks), all durable.
    pub fn from_bytes(bytes: &[u8]) -> MemIo {
        let io = MemIo::new((bytes.len() / BLOCK_SIZE) as u64);
        {
            let mut s = io.lock();
            for (i, chunk) in bytes.chunks_exact(BLOCK_SIZE).enumerate() {
                if chunk.iter().any(|&x| x != 0) {
                    let buf: BlockBuf = chunk.try_into().expect("block sized chunk");
                    s.durable.insert(i as u64, Box::new(buf));
                }
            }
        }
        io
    }
}

impl MemState {
    fn read_into(&self, b: u64, buf: &mut BlockBuf) {
        if let Some(&i) = self.latest.get(&b) {
            buf.copy_from_slice(&self.pending[i].1[..]);
        } else if let Some(d) = self.durable.get(&b) {
            buf.copy_from_slice(&d[..]);
        } else {
            buf.fill(0);
        }
    }

    /// Spend one operation of the crash budget; false once the crash point is passed.
    fn spend(&mut self) -> bool {
        if self.crashed {
            return false;
        }
        match &mut self.budget {
            Some(0) => {
                self.crashed = true;
                false
            }
            Some(n) => {
                *n -= 1;
                true
            }
            None => true,
        }
    }
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn out_of_range(b: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("block {b} beyond the end of the device"),
    )
}

impl MetaIo for MemIo {
    fn nr_blocks(&self) -> u64 {
        self.lock().nr_blocks
    }
    fn read_block(&self, b: u64, buf: &mut BlockBuf) -> std::io::Result<()> {
        let s = self.lock();
        if b >= s.nr_blocks {
            return Err(out_of_range(b));
        }
        s.read_into(b, buf);
        Ok(())
    }
    fn write_block(&self, b: u64, buf: &BlockBuf) -> std::io::Result<()> {
        let mut s = self.lock();
        if b >= s.nr_blocks {
            return Err(out_of_range(b));
        }
        if s.crash_block == Some(b) {
            s.crashed = true;
        }
        if s.spend() {
            s.writes += 1;
            let i = s.pending.len();
            s.pending.push((b, Box::new(*buf)));
            s.latest.insert(b, i);
        }
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let mut s = self.lock();
        if s.spend() {
            s.flushes += 1;
            let pending = std::mem::take(&mut s.pending);
            s.latest.clear();
            for (b, d) in pending {
                s.durable.insert(b, d);
            }
        }
        Ok(())
    }
}
