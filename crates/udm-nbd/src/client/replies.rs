//! Client reply handling: the reader thread that parses simple and structured replies and
//! completes each request by handle.

use super::{proto_err, Inner, NbdError};
use crate::proto::*;
use crate::sock::Sock;
use std::io::{BufReader, Read};
use std::net::Shutdown;
use std::sync::Arc;

/// Longest non-data structured chunk the client reads.
const MAX_CHUNK: u64 = 1 << 20;

/// What a request's reply carries.
pub(super) enum Kind {
    Read {
        offset: u64,
        buf: Vec<u8>,
    },
    /// `(length, flags)` runs, widened to 64 bits whichever reply type carried them.
    BlockStatus {
        extents: Vec<(u64, u64)>,
    },
    Other,
}

/// Called once with a request's outcome.
pub(super) type Done = Box<dyn FnOnce(Result<Kind, NbdError>) + Send>;

/// A request waiting for its reply. Dropped without an answer (connection lost mid-reply),
/// it fails its request with `Closed`.
pub(super) struct Slot {
    pub kind: Kind,
    pub error: Option<(u32, String)>,
    pub done: Option<Done>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(Err(NbdError::Closed));
        }
    }
}

pub(super) fn reader_loop(
    inner: Arc<Inner>,
    mut r: BufReader<Sock>,
    structured: bool,
    extended: bool,
) {
    let err = loop {
        if let Err(e) = read_reply(&inner, &mut r, structured, extended) {
            break e;
        }
    };
    tracing::debug!("nbd client: connection ended: {err}");
    // Unblock anyone still writing (without the writer lock, which they may hold).
    let _ = inner.ctl.shutdown(Shutdown::Both);
    let orphans: Vec<Slot> = {
        let mut p = inner.pending.lock();
        p.dead = true;
        p.map.drain().map(|(_, s)| s).collect()
    };
    // Completions run without the lock: they may submit again (and fail at once).
    for mut slot in orphans {
        let e = match &err {
            NbdError::Protocol(m) => NbdError::Protocol(m.clone()),
            _ => NbdError::Closed,
        };
        if let Some(done) = slot.done.take() {
            done(Err(e));
        }
    }
}

/// Hand a finished request its result.
fn complete(mut slot: Slot) {
    let res = match slot.error.take() {
        Some((e, message)) => Err(NbdError::Remote {
            errno: nbd_to_errno(e),
            message,
        }),
        None => Ok(std::mem::replace(&mut slot.kind, Kind::Other)),
    };
    if let Some(done) = slot.done.take() {
        done(res);
    }
}

/// Take a request's slot out of the table while its reply is read (so other threads can
/// register requests meanwhile). A slot dropped on error fails its caller with `Closed`.
fn take_slot(inner: &Inner, handle: u64) -> Result<Slot, NbdError> {
    match inner.pending.lock().map.remove(&handle) {
        Some(s) => Ok(s),
        None => proto_err(format!("reply for unknown handle {handle}")),
    }
}

fn read_reply(
    inner: &Inner,
    r: &mut impl Read,
    structured: bool,
    extended: bool,
) -> Result<(), NbdError> {
    let magic = read_u32(r)?;
    match magic {
        // With extended headers every reply is an extended chunk.
        EXTENDED_REPLY_MAGIC if extended => {
            let flags = read_u16(r)?;
            let typ = read_u16(r)?;
            let handle = read_u64(r)?;
            let _offset = read_u64(r)?;
            let len = read_u64(r)?;
            let mut slot = take_slot(inner, handle)?;
            chunk(&mut slot, r, typ, len)?;
            if flags & REPLY_FLAG_DONE != 0 {
                complete(slot);
            } else {
                inner.pending.lock().map.insert(handle, slot);
            }
            Ok(())
        }
        SIMPLE_REPLY_MAGIC if !extended => {
            let error = read_u32(r)?;
            let handle = read_u64(r)?;
            let mut slot = take_slot(inner, handle)?;
            if error != 0 {
                slot.error = Some((error, String::new()));
            } else if let Kind::Read { buf, .. } = &mut slot.kind {
                if structured {
                    return proto_err(
                        "simple reply to a read after structured replies were negotiated",
                    );
                }
                r.read_exact(buf)?;
            }
            complete(slot);
            Ok(())
        }
        STRUCTURED_REPLY_MAGIC if structured && !extended => {
            let flags = read_u16(r)?;
            let typ = read_u16(r)?;
            let handle = read_u64(r)?;
            let len = u64::from(read_u32(r)?);
            let mut slot = take_slot(inner, handle)?;
            chunk(&mut slot, r, typ, len)?;
            if flags & REPLY_FLAG_DONE != 0 {
                complete(slot);
            } else {
                inner.pending.lock().map.insert(handle, slot);
            }
            Ok(())
        }
        m => proto_err(format!("bad reply magic {m:#x}")),
    }
}

fn chunk(slot: &mut Slot, r: &mut impl Read, typ: u16, len: u64) -> Result<(), NbdError> {
    match (typ, &mut slot.kind) {
        (REPLY_TYPE_NONE, _) if len == 0 => {}
        (REPLY_TYPE_OFFSET_DATA, Kind::Read { offset, buf }) if len > 8 => {
            let off = read_u64(r)?;
            let n = len - 8;
            let start = off
                .checked_sub(*offset)
                .filter(|s| s.checked_add(n).is_some_and(|e| e <= buf.len() as u64));
            let Some(start) = start else {
                return proto_err("data chunk outside the request");
            };
            r.read_exact(&mut buf[start as usize..(start + n) as usize])?;
        }
        (REPLY_TYPE_OFFSET_HOLE, Kind::Read { offset, buf }) if len == 12 => {
            let off = read_u64(r)?;
            let n = u64::from(read_u32(r)?);
            let start = off
                .checked_sub(*offset)
                .filter(|s| s.checked_add(n).is_some_and(|e| e <= buf.len() as u64));
            let Some(start) = start else {
                return proto_err("hole chunk outside the request");
            };
            buf[start as usize..(start + n) as usize].fill(0);
        }
        (REPLY_TYPE_BLOCK_STATUS, Kind::BlockStatus { extents })
            if len >= 12 && (len - 4) % 8 == 0 =>
        {
            if len > MAX_CHUNK {
                return proto_err("block status chunk too long");
            }
            let _ctx = read_u32(r)?;
            for _ in 0..(len - 4) / 8 {
                let l = read_u32(r)?;
                let f = read_u32(r)?;
                extents.push((l.into(), f.into()));
            }
        }
        (REPLY_TYPE_BLOCK_STATUS_EXT, Kind::BlockStatus { extents })
            if len >= 24 && (len - 8) % 16 == 0 =>
        {
            if len > MAX_CHUNK {
                return proto_err("block status chunk too long");
            }
            let _ctx = read_u32(r)?;
            let count = read_u32(r)?;
            let n = (len - 8) / 16;
            // The count may be 0 (unset); otherwise it must match the length.
            if count != 0 && u64::from(count) != n {
                return proto_err("block status descriptor count disagrees with length");
            }
            for _ in 0..n {
                let l = read_u64(r)?;
                let f = read_u64(r)?;
                extents.push((l, f));
            }
        }
        (t, _) if t & 0x8000 != 0 && len >= 6 => {
            if len > MAX_CHUNK {
                return proto_err("error chunk too long");
            }
            let mut d = vec![0; len as usize];
            r.read_exact(&mut d)?;
            let err = be32(&d[0..4]);
            let mlen = (be16(&d[4..6]) as usize).min(d.len() - 6);
            let msg = String::from_utf8_lossy(&d[6..6 + mlen]).into_owned();
            slot.error
                .get_or_insert((if err == 0 { NBD_EINVAL } else { err }, msg));
        }
        (t, _) => return proto_err(format!("unexpected chunk type {t} (length {len})")),
    }
    Ok(())
}
