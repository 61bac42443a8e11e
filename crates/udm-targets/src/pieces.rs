//! Spreading one large buffer's CPU work over the cores (crypt's en/decryption, verity's
//! hashing): [`split`] cuts it into one piece of whole units per core, [`spread`] runs the
//! first piece on the calling thread and the others on the CPU pool, and a [`Join`] hands
//! the pieces back, in order, to whoever finishes last.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use udm_io::{Bio, IoBuf, IoError, WorkerPool};

/// The number of cores.
pub(crate) fn cpus() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    })
}

/// `buf` cut into `len / piece_min` pieces (at least one, at most one per core) of whole
/// `unit`s, and the bytes of each piece but the last.
pub(crate) fn split(buf: IoBuf, unit: usize, piece_min: usize) -> (usize, Vec<IoBuf>) {
    let len = buf.len();
    let n = (len / piece_min).clamp(1, cpus());
    let per = len.div_ceil(n).div_ceil(unit) * unit;
    (per, cut(buf, per))
}

/// `buf` cut into pieces of `per` bytes (the last may be shorter; at least one piece).
pub(crate) fn cut(buf: IoBuf, per: usize) -> Vec<IoBuf> {
    let mut pieces = Vec::with_capacity(buf.len().div_ceil(per).max(1));
    let mut rest = buf;
    while rest.len() > per {
        let tail = rest.split_off(per);
        pieces.push(std::mem::replace(&mut rest, tail));
    }
    pieces.push(rest);
    pieces
}

/// A [`Join`] of `n` pieces of `bio`'s buffer: the last one back puts the buffer together
/// again and completes `bio` with the first error of any piece.
pub(crate) fn join_into(n: usize, mut bio: Bio) -> Arc<Join<Result<(), IoError>>> {
    Join::new(n, move |all: Vec<(IoBuf, Result<(), IoError>)>| {
        let mut whole = IoBuf::empty();
        let mut res = Ok(());
        for (b, r) in all {
            whole.unsplit(b);
            res = res.and(r);
        }
        bio.set_buf(whole);
        bio.complete(res)
    })
}

/// Start `work(i, piece)` for every piece: the first on the calling thread (after the
/// others are queued), the others on the CPU pool.
pub(crate) fn spread<W>(pieces: Vec<IoBuf>, work: W)
where
    W: Fn(usize, IoBuf) + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let mut it = pieces.into_iter().enumerate();
    let first = it.next();
    for (i, p) in it {
        let w = work.clone();
        WorkerPool::cpu().spawn(move || w(i, p));
    }
    if let Some((i, p)) = first {
        work(i, p);
    }
}

type JoinDone<T> = Box<dyn FnOnce(Vec<(IoBuf, T)>) + Send>;

/// The pieces of one buffer coming back with a result each; the last one in calls `done`
/// with all of them in piece order.
pub(crate) struct Join<T> {
    left: AtomicUsize,
    slots: Mutex<Vec<Option<(IoBuf, T)>>>,
    done: Mutex<Option<JoinDone<T>>>,
}

impl<T: Send + 'static> Join<T> {
    pub(crate) fn new(n: usize, done: impl FnOnce(Vec<(IoBuf, T)>) + Send + 'static) -> Arc<Self> {
        Arc::new(Join {
            left: AtomicUsize::new(n),
            slots: Mutex::new((0..n).map(|_| None).collect()),
            done: Mutex::new(Some(Box::new(done))),
        })
    }

    /// Piece `i` is back with its result.
    pub(crate) fn put(&self, i: usize, buf: IoBuf, result: T) {
        self.slots.lock()[i] = Some((buf, result));
        if self.left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let all: Vec<(IoBuf, T)> = std::mem::take(&mut *self.slots.lock())
            .into_iter()
            .flatten()
            .collect();
        if let Some(d) = self.done.lock().take() {
            d(all)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_come_back_whole_and_in_order() {
        let mut buf = IoBuf::zeroed(1 << 20);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i / 512) as u8;
        }
        let want = buf.to_vec();
        let (per, pieces) = split(buf, 512, 64 << 10);
        assert_eq!(per % 512, 0);
        assert_eq!(pieces.len(), (16usize).min(cpus()));
        let (tx, rx) = std::sync::mpsc::channel();
        let join = Join::new(pieces.len(), move |all: Vec<(IoBuf, usize)>| {
            let mut whole = IoBuf::empty();
            let mut order = Vec::new();
            for (b, i) in all {
                whole.unsplit(b);
                order.push(i);
            }
            tx.send((whole.to_vec(), order)).unwrap();
        });
        spread(pieces, move |i, p| join.put(i, p, i));
        let (got, order) = rx.recv().unwrap();
        assert!(got == want);
        assert_eq!(order, (0..order.len()).collect::<Vec<_>>());
    }
}
