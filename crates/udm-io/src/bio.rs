//! `Bio`: one block I/O with an owned buffer and a completion that runs exactly once.

use crate::{IoBuf, IoError, Sectors, SECTOR_SIZE};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a bio does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    Read,
    Write,
    /// Empty flush: everything completed before it reaches stable storage.
    Flush,
    /// Discard (TRIM) a range; reads after it return unspecified data.
    Discard,
    /// Write zeroes to a range without a data buffer.
    WriteZeroes,
}

impl Op {
    /// True for ops that change data.
    pub fn is_write(self) -> bool {
        matches!(self, Op::Write | Op::Discard | Op::WriteZeroes)
    }
    /// True for ops that carry a data buffer.
    pub fn has_data(self) -> bool {
        matches!(self, Op::Read | Op::Write)
    }
}

/// Request flags, as the kernel's `REQ_*` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct BioFlags(pub u32);

impl BioFlags {
    pub const NONE: BioFlags = BioFlags(0);
    /// Forced unit access: the write is durable when it completes.
    pub const FUA: BioFlags = BioFlags(1);
    /// Flush the device's cache before this bio.
    pub const PREFLUSH: BioFlags = BioFlags(2);
    /// For write-zeroes: do not deallocate (NBD_CMD_FLAG_NO_HOLE).
    pub const NOUNMAP: BioFlags = BioFlags(4);

    pub fn contains(self, o: BioFlags) -> bool {
        self.0 & o.0 == o.0
    }
    pub fn with(self, o: BioFlags) -> BioFlags {
        BioFlags(self.0 | o.0)
    }
    pub fn without(self, o: BioFlags) -> BioFlags {
        BioFlags(self.0 & !o.0)
    }
}

/// Called once when a bio ends: the result and the buffer, handed back in all cases.
pub type Completion = Box<dyn FnOnce(Result<(), IoError>, IoBuf) + Send>;

/// One block I/O. Whoever holds it owns the buffer and must complete it exactly once
/// (dropping an uncompleted bio completes it with `IoError::Io`, so no caller waits forever).
pub struct Bio {
    pub op: Op,
    pub flags: BioFlags,
    /// First sector, relative to whatever device the bio is currently aimed at.
    pub sector: Sectors,
    len: Sectors,
    buf: IoBuf,
    done: Option<Completion>,
    /// Which of a target's `num_flush_bios` / `num_discard_bios` copies this is.
    target_bio_nr: u32,
    /// The submitter does not need the buffer back as it was (`with_spare_buf`).
    spare_buf: bool,
}

impl std::fmt::Debug for Bio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Bio({:?} {:?} @{} +{})",
            self.op, self.flags, self.sector, self.len
        )
    }
}

impl Bio {
    fn new(op: Op, sector: Sectors, len: Sectors, buf: IoBuf, done: Completion) -> Bio {
        Bio {
            op,
            flags: BioFlags::NONE,
            sector,
            len,
            buf,
            done: Some(done),
            target_bio_nr: 0,
            spare_buf: false,
        }
    }
    /// Read `buf.len()` bytes (a whole number of sectors) at `sector` into `buf`.
    pub fn read(sector: Sectors, buf: IoBuf, done: Completion) -> Bio {
        debug_assert_eq!(buf.len() as u64 % SECTOR_SIZE, 0);
        let len = Sectors(buf.len() as u64 / SECTOR_SIZE);
        Bio::new(Op::Read, sector, len, buf, done)
    }
    /// Write `buf` at `sector`.
    pub fn write(sector: Sectors, buf: IoBuf, done: Completion) -> Bio {
        debug_assert_eq!(buf.len() as u64 % SECTOR_SIZE, 0);
        let len = Sectors(buf.len() as u64 / SECTOR_SIZE);
        Bio::new(Op::Write, sector, len, buf, done)
    }
    /// An empty flush.
    pub fn flush(done: Completion) -> Bio {
        Bio::new(Op::Flush, Sectors(0), Sectors(0), IoBuf::empty(), done)
    }
    /// Discard `len` sectors at `sector`.
    pub fn discard(sector: Sectors, len: Sectors, done: Completion) -> Bio {
        Bio::new(Op::Discard, sector, len, IoBuf::empty(), done)
    }
    /// Write zeroes to `len` sectors at `sector`.
    pub fn write_zeroes(sector: Sectors, len: Sectors, done: Completion) -> Bio {
        Bio::new(Op::WriteZeroes, sector, len, IoBuf::empty(), done)
    }
    /// Same bio with flags added.
    pub fn with_flags(mut self, f: BioFlags) -> Bio {
        self.flags = self.flags.with(f);
        self
    }

    /// A write whose submitter does not need its data back: whoever completes it may hand
    /// back another buffer of the same length, contents unspecified, and keep this one
    /// (snapshot-origin holds a write's data that way instead of copying it). Remaps and
    /// splits keep the promise; a bio a target makes itself does not have it unless the
    /// target says so. Without it a write's buffer comes back as it went (the block copier
    /// writes it to its next destination, multipath retries it on another path).
    pub fn with_spare_buf(mut self) -> Bio {
        self.spare_buf = true;
        self
    }
    /// Whether the submitter spares the buffer (`with_spare_buf`).
    pub fn spares_buf(&self) -> bool {
        self.spare_buf
    }

    /// Which copy this is when the core fans a flush or discard out to a target that asked
    /// for several (`Target::num_flush_bios`, the kernel's `dm_bio_get_target_bio_nr`); 0
    /// otherwise.
    pub fn target_bio_nr(&self) -> u32 {
        self.target_bio_nr
    }
    /// Set by whoever fans the bio out (the core's table dispatch).
    pub fn set_target_bio_nr(&mut self, nr: u32) {
        self.target_bio_nr = nr;
    }

    /// Length in sectors (0 for a flush).
    pub fn len(&self) -> Sectors {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len.0 == 0
    }
    /// One past the last sector (saturating: a bio aimed near `u64::MAX` is simply past the
    /// end of every device, never an overflow panic).
    pub fn end(&self) -> Sectors {
        Sectors(self.sector.0.saturating_add(self.len.0))
    }
    pub fn buf(&self) -> &IoBuf {
        &self.buf
    }
    pub fn buf_mut(&mut self) -> &mut IoBuf {
        &mut self.buf
    }

    /// End the bio: hands the buffer back to whoever submitted it.
    pub fn complete(mut self, res: Result<(), IoError>) {
        let done = self.done.take().expect("bio completed twice");
        let buf = std::mem::take(&mut self.buf);
        done(res, buf);
    }

    /// Split the bio's buffer out and keep its completion: for targets that do the I/O
    /// themselves and complete later with `finish`.
    pub fn take_buf(&mut self) -> IoBuf {
        std::mem::take(&mut self.buf)
    }
    /// Put a buffer back (the same length it had) before completing.
    pub fn set_buf(&mut self, buf: IoBuf) {
        self.buf = buf;
    }

    /// Run `f` when the bio ends, before its submitter sees the result; `f` may inspect and
    /// change the buffer and the result (a stripe marks a leg dead, crypt decrypts a read).
    pub fn on_end<F>(mut self, f: F) -> Bio
    where
        F: FnOnce(Result<(), IoError>, &mut IoBuf) -> Result<(), IoError> + Send + 'static,
    {
        let inner = self.done.take().expect("bio already completed");
        self.done = Some(Box::new(move |res, mut buf| {
            let res = f(res, &mut buf);
            inner(res, buf)
        }));
        self
    }

    /// Split into pieces of the given lengths (which must sum to `len`); the parent completes
    /// once when all pieces have, with the first error seen. Buffers are split without copying
    /// and joined back in order.
    pub fn split(mut self, lens: &[Sectors]) -> Vec<Bio> {
        debug_assert_eq!(lens.iter().map(|l| l.0).sum::<u64>(), self.len.0);
        if lens.len() <= 1 {
            return vec![self];
        }
        let n = lens.len();
        let parent = self.done.take().expect("bio already completed");
        let has_data = self.op.has_data();
        let join = Arc::new(Join {
            remaining: AtomicUsize::new(n),
            inner: Mutex::new(JoinInner {
                err: None,
                pieces: (0..n).map(|_| None).collect(),
                parent: Some(parent),
                whole: None,
            }),
        });
        let mut rest = std::mem::take(&mut self.buf);
        let mut sector = self.sector;
        let mut out = Vec::with_capacity(n);
        for (i, &l) in lens.iter().enumerate() {
            let piece = if has_data {
                let tail = rest.split_off((l.0 * SECTOR_SIZE) as usize);
                std::mem::replace(&mut rest, tail)
            } else {
                IoBuf::empty()
            };
            let j = join.clone();
            let flags = if i == 0 {
                self.flags
            } else {
                self.flags.without(BioFlags::PREFLUSH)
            };
            out.push(Bio {
                op: self.op,
                flags,
                sector,
                len: l,
                buf: piece,
                done: Some(Box::new(move |res, buf| j.child_done(i, res, buf))),
                target_bio_nr: self.target_bio_nr,
                spare_buf: self.spare_buf,
            });
            sector += l;
        }
        out
    }

    /// Split at `at` sectors from the start into two bios sharing one parent completion.
    pub fn split_at(self, at: Sectors) -> (Bio, Bio) {
        let len = self.len;
        assert!(at.0 > 0 && at < len, "split_at {at} outside 1..{len}");
        let mut v = self.split(&[at, len - at]);
        let b = v.pop().expect("two pieces");
        let a = v.pop().expect("two pieces");
        (a, b)
    }

    /// `n` copies of this bio for `n` devices (flush, discard, write-zeroes, or writes, whose
    /// data is copied); the parent completes once when all have, first error wins. The parent's
    /// buffer is kept aside and handed back unchanged.
    pub fn fan_out(mut self, n: usize) -> Vec<Bio> {
        assert!(n > 0);
        assert!(self.op != Op::Read, "reads cannot fan out");
        if n == 1 {
            return vec![self];
        }
        let parent = self.done.take().expect("bio already completed");
        let whole = std::mem::take(&mut self.buf);
        let join = Arc::new(Join {
            remaining: AtomicUsize::new(n),
            inner: Mutex::new(JoinInner {
                err: None,
                pieces: Vec::new(),
                parent: Some(parent),
                whole: None,
            }),
        });
        let out = (0..n)
            .map(|i| {
                let j = join.clone();
                let buf = if self.op == Op::Write {
                    IoBuf::from_slice(&whole)
                } else {
                    IoBuf::empty()
                };
                Bio {
                    op: self.op,
                    flags: self.flags,
                    sector: self.sector,
                    len: self.len,
                    buf,
                    done: Some(Box::new(move |res, _buf| {
                        j.child_done(usize::MAX - i, res, IoBuf::empty())
                    })),
                    target_bio_nr: i as u32,
                    spare_buf: false,
                }
            })
            .collect();
        join.inner.lock().whole = Some(whole);
        out
    }
}

impl Drop for Bio {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            tracing::warn!(
                "bio {:?} @{} dropped without completion; failing it",
                self.op,
                self.sector
            );
            done(Err(IoError::Io), std::mem::take(&mut self.buf));
        }
    }
}

struct Join {
    remaining: AtomicUsize,
    inner: Mutex<JoinInner>,
}

struct JoinInner {
    err: Option<IoError>,
    pieces: Vec<Option<IoBuf>>,
    parent: Option<Completion>,
    /// Fan-out keeps the parent's buffer here.
    whole: Option<IoBuf>,
}

impl Join {
    fn child_done(&self, i: usize, res: Result<(), IoError>, buf: IoBuf) {
        let mut g = self.inner.lock();
        if let Err(e) = res {
            g.err.get_or_insert(e);
        }
        if let Some(slot) = g.pieces.get_mut(i) {
            *slot = Some(buf);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let parent = g.parent.take().expect("join completed twice");
        let res = match g.err {
            Some(e) => Err(e),
            None => Ok(()),
        };
        let buf = match g.whole.take() {
            Some(w) => w,
            None => {
                let mut it = g.pieces.drain(..).map(|p| p.unwrap_or_default());
                let mut whole = it.next().unwrap_or_default();
                for p in it {
                    whole.unsplit(p);
                }
                whole
            }
        };
        drop(g);
        parent(res, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::unbounded;

    type Done = crossbeam_channel::Receiver<(Result<(), IoError>, IoBuf)>;

    fn catcher() -> (Completion, Done) {
        let (tx, rx) = unbounded();
        (Box::new(move |r, b| tx.send((r, b)).unwrap()), rx)
    }

    #[test]
    fn split_rejoins_the_same_buffer_once() {
        let (done, rx) = catcher();
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let bio = Bio::read(Sectors(10), IoBuf::from_slice(&data), done);
        let mut parts = bio.split(&[Sectors(1), Sectors(5), Sectors(2)]);
        assert_eq!(
            parts
                .iter()
                .map(|p| (p.sector.0, p.len().0))
                .collect::<Vec<_>>(),
            vec![(10, 1), (11, 5), (16, 2)]
        );
        parts[1].buf_mut().fill(0xee);
        // Complete out of order; the parent completes once, after the last.
        let last = parts.remove(0);
        for p in parts {
            p.complete(Ok(()));
            assert!(rx.try_recv().is_err());
        }
        last.complete(Ok(()));
        let (r, buf) = rx.try_recv().unwrap();
        assert!(r.is_ok());
        assert_eq!(&buf[..512], &data[..512]);
        assert!(buf[512..3072].iter().all(|&b| b == 0xee));
        assert_eq!(&buf[3072..], &data[3072..]);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn split_pieces_spare_their_buffers_as_the_parent_and_a_spare_piece_rejoins() {
        let (done, rx) = catcher();
        let bio = Bio::write(Sectors(0), IoBuf::from_slice(&[7; 2048]), done);
        assert!(!bio.spares_buf());
        assert!(bio
            .split(&[Sectors(1), Sectors(3)])
            .iter()
            .all(|p| !p.spares_buf()));
        let (done, rx1) = catcher();
        let bio = Bio::write(Sectors(0), IoBuf::zeroed(1024), done).with_spare_buf();
        assert!(bio.fan_out(2).iter().all(|c| !c.spares_buf()));
        drop(rx1);
        let (done2, rx2) = catcher();
        let bio = Bio::write(Sectors(0), IoBuf::from_slice(&[7; 2048]), done2).with_spare_buf();
        let mut parts = bio.split(&[Sectors(1), Sectors(3)]);
        assert!(parts.iter().all(|p| p.spares_buf()));
        // A piece handed back in another buffer still rejoins at its place.
        parts[1].set_buf(IoBuf::from_slice(&[9; 1536]));
        for p in parts {
            p.complete(Ok(()));
        }
        let (r, buf) = rx2.try_recv().unwrap();
        assert!(r.is_ok() && buf.len() == 2048);
        assert!(buf[..512].iter().all(|&b| b == 7) && buf[512..].iter().all(|&b| b == 9));
        drop(rx);
    }

    #[test]
    fn first_error_wins_and_dropped_bios_fail() {
        let (done, rx) = catcher();
        let bio = Bio::write(Sectors(0), IoBuf::zeroed(2048), done);
        let (a, b) = bio.split_at(Sectors(1));
        a.complete(Err(IoError::NoSpace));
        drop(b); // never completed: fails with EIO instead of hanging the parent
        let (r, buf) = rx.try_recv().unwrap();
        assert_eq!(r, Err(IoError::NoSpace));
        assert_eq!(buf.len(), 2048);
    }

    #[test]
    fn fan_out_hands_back_the_parent_buffer() {
        let (done, rx) = catcher();
        let bio =
            Bio::write(Sectors(3), IoBuf::from_slice(&[7; 512]), done).with_flags(BioFlags::FUA);
        let kids = bio.fan_out(3);
        assert!(kids
            .iter()
            .all(|k| k.buf()[..] == [7; 512] && k.flags.contains(BioFlags::FUA)));
        for k in kids {
            k.complete(Ok(()));
        }
        let (r, buf) = rx.try_recv().unwrap();
        assert!(r.is_ok());
        assert_eq!(&buf[..], &[7; 512]);
    }

    #[test]
    fn on_end_sees_and_changes_the_result() {
        let (done, rx) = catcher();
        let bio = Bio::read(Sectors(0), IoBuf::zeroed(512), done).on_end(|r, buf| {
            assert!(r.is_ok());
            buf[0] = 9;
            Err(IoError::Io)
        });
        bio.complete(Ok(()));
        let (r, buf) = rx.try_recv().unwrap();
        assert_eq!((r, buf[0]), (Err(IoError::Io), 9));
    }
}
