//! Where `verity` hashes a completed read. A small read (too small for two `PIECE_MIN`
//! pieces) is verified on the thread that completed it: hashing one 4 KiB block takes a few microseconds, less than
//! a hop to the CPU pool and back. A larger one is cut into one piece per core; the
//! completing thread verifies the first piece while the CPU pool does the others. A piece
//! that needs blocking I/O (a hash block missing from the cache, FEC) moves to the I/O pool,
//! where blocking reads are allowed, and goes on from the block where it stopped.

use super::target::{Inner, Stop};
use crate::pieces;
use std::sync::Arc;
use udm_io::{Bio, IoBuf, IoError, WorkerPool};

/// The smallest piece of a read worth a job of its own (smaller reads are verified inline).
const PIECE_MIN: usize = 128 << 10;

/// What a finished piece reports.
type PieceDone = Box<dyn FnOnce(Result<(), IoError>, IoBuf) + Send>;

impl Inner {
    /// The lower read of `bio` (data blocks `first..`) ended with `res`: verify `buf` and
    /// complete `bio` with it.
    pub(crate) fn read_done(
        self: Arc<Self>,
        mut bio: Bio,
        first: u64,
        res: Result<(), IoError>,
        buf: IoBuf,
    ) {
        if res.is_err() && self.fec.is_none() {
            bio.set_buf(buf);
            return bio.complete(res);
        }
        if res.is_err() {
            // Every block needs FEC: blocking work from the start.
            return WorkerPool::io().spawn(move || {
                let mut buf = buf;
                let r = self.verify_io(first, &mut buf, false, true, &mut 0);
                bio.set_buf(buf);
                bio.complete(r.map_err(Stop::errno));
            });
        }
        let bs = self.geo.data_block_size as usize;
        if buf.len() < 2 * PIECE_MIN {
            return self.verify_piece(
                first,
                buf,
                Box::new(move |r, buf| {
                    bio.set_buf(buf);
                    bio.complete(r)
                }),
            );
        }
        let (per, pieces) = pieces::split(buf, bs, PIECE_MIN);
        let join = pieces::join_into(pieces.len(), bio);
        let blocks_per = (per / bs) as u64;
        let me = self;
        pieces::spread(pieces, move |i, p| {
            let j = join.clone();
            me.clone().verify_piece(
                first + i as u64 * blocks_per,
                p,
                Box::new(move |r, b| j.put(i, b, r)),
            )
        });
    }

    /// Verify one piece here without blocking; if that needs blocking I/O, go on on the I/O
    /// pool from where it stopped. `done` gets the result and the buffer.
    fn verify_piece(self: Arc<Self>, first: u64, mut buf: IoBuf, done: PieceDone) {
        let mut at = 0;
        match self.verify_io(first, &mut buf, true, false, &mut at) {
            Err(Stop::NeedIo) => WorkerPool::io().spawn(move || {
                let r = self.verify_io(first, &mut buf, true, true, &mut at);
                done(r.map_err(Stop::errno), buf)
            }),
            r => done(r.map_err(Stop::errno), buf),
        }
    }
}
