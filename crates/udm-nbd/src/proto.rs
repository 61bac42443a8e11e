//! NBD wire constants and the small big-endian encoders/decoders both sides share
//! (see the NBD protocol document, `doc/proto.md` in NetworkBlockDevice/nbd).

use std::io::{self, Read};

/// "NBDMAGIC": first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle magic, and the prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Transmission request magic.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Simple reply magic.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Structured reply chunk magic.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Extended (64-bit) request magic, once NBD_OPT_EXTENDED_HEADERS is negotiated.
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Extended reply chunk magic, once NBD_OPT_EXTENDED_HEADERS is negotiated.
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags.
pub const TF_HAS_FLAGS: u16 = 1 << 0;
pub const TF_READ_ONLY: u16 = 1 << 1;
pub const TF_SEND_FLUSH: u16 = 1 << 2;
pub const TF_SEND_FUA: u16 = 1 << 3;
pub const TF_ROTATIONAL: u16 = 1 << 4;
pub const TF_SEND_TRIM: u16 = 1 << 5;
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TF_SEND_DF: u16 = 1 << 7;
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;
pub const TF_SEND_CACHE: u16 = 1 << 10;
pub const TF_SEND_FAST_ZERO: u16 = 1 << 11;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const REP_ERR_POLICY: u32 = 0x8000_0002;
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
pub const REP_ERR_PLATFORM: u32 = 0x8000_0004;
pub const REP_ERR_TLS_REQD: u32 = 0x8000_0005;
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
pub const REP_ERR_SHUTDOWN: u32 = 0x8000_0007;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = 0x8000_0008;
pub const REP_ERR_TOO_BIG: u32 = 0x8000_0009;
pub const REP_ERR_EXT_HEADER_REQD: u32 = 0x8000_000a;

// NBD_INFO types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
/// Extended headers only: the request carries `length` bytes of payload.
pub const CMD_FLAG_PAYLOAD_LEN: u16 = 1 << 5;

// Structured reply flags and chunk types.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_BLOCK_STATUS_EXT: u16 = 6;
pub const REPLY_TYPE_ERROR: u16 = 0x8001;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = 0x8002;

// base:allocation state flags.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

/// The one metadata context udm serves.
pub const BASE_ALLOCATION: &str = "base:allocation";

// NBD error values (fixed by the protocol; they equal Linux errnos).
pub const NBD_EPERM: u32 = 1;
pub const NBD_EIO: u32 = 5;
pub const NBD_ENOMEM: u32 = 12;
pub const NBD_EINVAL: u32 = 22;
pub const NBD_ENOSPC: u32 = 28;
pub const NBD_EOVERFLOW: u32 = 75;
pub const NBD_ENOTSUP: u32 = 95;
pub const NBD_ESHUTDOWN: u32 = 108;

/// Largest READ/WRITE payload the server accepts (advertised maximum block size).
pub const MAX_BLOCK: u32 = 32 << 20;
/// A WRITE payload above this is treated as an attack: the connection is dropped rather
/// than drained.
pub const MAX_DRAIN: u32 = 64 << 20;
/// Longest option payload read into memory; longer ones are drained and refused.
pub const MAX_OPTION: u32 = 64 << 10;
/// Option payloads above this close the connection.
pub const MAX_OPTION_DRAIN: u32 = 16 << 20;
/// Longest string (export name, query) the protocol allows.
pub const MAX_STRING: usize = 4096;

/// Size of a transmission request header.
pub const REQUEST_LEN: usize = 28;
/// Size of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Size of a structured reply chunk header.
pub const CHUNK_HEADER_LEN: usize = 20;
/// Size of an extended request header and of an extended reply header.
pub const EXT_HEADER_LEN: usize = 32;

/// Map an errno from the device to one of the NBD error values.
pub fn errno_to_nbd(e: i32) -> u32 {
    match e {
        libc::EPERM | libc::EROFS | libc::EACCES => NBD_EPERM,
        libc::ENOMEM => NBD_ENOMEM,
        libc::EINVAL => NBD_EINVAL,
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => NBD_ENOSPC,
        libc::EOVERFLOW => NBD_EOVERFLOW,
        libc::EOPNOTSUPP => NBD_ENOTSUP,
        libc::ESHUTDOWN => NBD_ESHUTDOWN,
        _ => NBD_EIO,
    }
}

/// Map an NBD error value back to an errno (unknown values read as EINVAL, as the
/// protocol tells clients to).
pub fn nbd_to_errno(e: u32) -> i32 {
    match e {
        NBD_EPERM => libc::EPERM,
        NBD_EIO => libc::EIO,
        NBD_ENOMEM => libc::ENOMEM,
        NBD_EINVAL => libc::EINVAL,
        NBD_ENOSPC => libc::ENOSPC,
        NBD_EOVERFLOW => libc::EOVERFLOW,
        NBD_ENOTSUP => libc::EOPNOTSUPP,
        NBD_ESHUTDOWN => libc::ESHUTDOWN,
        _ => libc::EINVAL,
    }
}

/// A parsed transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub cmd: u16,
    pub handle: u64,
    pub offset: u64,
    pub len: u32,
}

impl Request {
    /// Decode a header; `None` if the magic is wrong.
    pub fn decode(b: &[u8; REQUEST_LEN]) -> Option<Request> {
        if be32(&b[0..4]) != REQUEST_MAGIC {
            return None;
        }
        Some(Request {
            flags: be16(&b[4..6]),
            cmd: be16(&b[6..8]),
            handle: be64(&b[8..16]),
            offset: be64(&b[16..24]),
            len: be32(&b[24..28]),
        })
    }

    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.cmd.to_be_bytes());
        b[8..16].copy_from_slice(&self.handle.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// A request with a 64-bit length: what an extended header carries (a compact one
/// widens to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtRequest {
    pub flags: u16,
    pub cmd: u16,
    pub handle: u64,
    pub offset: u64,
    /// Effect length, or payload length when `CMD_FLAG_PAYLOAD_LEN` is set (and always
    /// for `CMD_WRITE`).
    pub len: u64,
}

impl From<Request> for ExtRequest {
    fn from(r: Request) -> ExtRequest {
        ExtRequest {
            flags: r.flags,
            cmd: r.cmd,
            handle: r.handle,
            offset: r.offset,
            len: r.len as u64,
        }
    }
}

impl ExtRequest {
    /// Decode an extended header; `None` if the magic is wrong.
    pub fn decode(b: &[u8; EXT_HEADER_LEN]) -> Option<ExtRequest> {
        if be32(&b[0..4]) != EXTENDED_REQUEST_MAGIC {
            return None;
        }
        Some(ExtRequest {
            flags: be16(&b[4..6]),
            cmd: be16(&b[6..8]),
            handle: be64(&b[8..16]),
            offset: be64(&b[16..24]),
            len: be64(&b[24..32]),
        })
    }

    pub fn encode(&self) -> [u8; EXT_HEADER_LEN] {
        let mut b = [0u8; EXT_HEADER_LEN];
        b[0..4].copy_from_slice(&EXTENDED_REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.cmd.to_be_bytes());
        b[8..16].copy_from_slice(&self.handle.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..32].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// An extended reply chunk header: `offset` echoes the request's, `len` is the payload.
pub fn ext_reply_header(
    flags: u16,
    typ: u16,
    handle: u64,
    offset: u64,
    len: u64,
) -> [u8; EXT_HEADER_LEN] {
    let mut b = [0u8; EXT_HEADER_LEN];
    b[0..4].copy_from_slice(&EXTENDED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&typ.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..24].copy_from_slice(&offset.to_be_bytes());
    b[24..32].copy_from_slice(&len.to_be_bytes());
    b
}

/// A simple reply header.
pub fn simple_reply(handle: u64, error: u32) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b
}

/// A structured reply chunk header announcing `len` payload bytes.
pub fn chunk_header(flags: u16, typ: u16, handle: u64, len: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut b = [0u8; CHUNK_HEADER_LEN];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&typ.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..20].copy_from_slice(&len.to_be_bytes());
    b
}

/// A complete final `NBD_REPLY_TYPE_ERROR` chunk with an optional message.
pub fn error_chunk(handle: u64, error: u32, msg: &str) -> Vec<u8> {
    let msg = &msg.as_bytes()[..msg.len().min(MAX_STRING)];
    let mut v = Vec::with_capacity(CHUNK_HEADER_LEN + 6 + msg.len());
    v.extend_from_slice(&chunk_header(
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        handle,
        6 + msg.len() as u32,
    ));
    error_payload(&mut v, error, msg);
    v
}

/// The same error chunk with an extended header (`offset`: the request's).
pub fn ext_error_chunk(handle: u64, offset: u64, error: u32, msg: &str) -> Vec<u8> {
    let msg = &msg.as_bytes()[..msg.len().min(MAX_STRING)];
    let mut v = Vec::with_capacity(EXT_HEADER_LEN + 6 + msg.len());
    v.extend_from_slice(&ext_reply_header(
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        handle,
        offset,
        6 + msg.len() as u64,
    ));
    error_payload(&mut v, error, msg);
    v
}

fn error_payload(v: &mut Vec<u8>, error: u32, msg: &[u8]) {
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    v.extend_from_slice(msg);
}

pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
pub fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

pub fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}
pub fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}
pub fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// Read and throw away `n` bytes without allocating more than a small scratch buffer.
pub fn drain(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// A cursor over an option payload that never reads past its end.
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Some(a)
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(be16)
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(be32)
    }
    /// A u32-length-prefixed UTF-8 string of at most `MAX_STRING` bytes.
    pub fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        if n > MAX_STRING {
            return None;
        }
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_roundtrip() {
        let r = Request {
            flags: 5,
            cmd: CMD_WRITE,
            handle: 0xdead_beef_0102,
            offset: 1 << 40,
            len: 4096,
        };
        assert_eq!(Request::decode(&r.encode()), Some(r));
        let mut bad = r.encode();
        bad[0] ^= 1;
        assert_eq!(Request::decode(&bad), None);
    }

    #[test]
    fn ext_request_roundtrip() {
        let r = ExtRequest {
            flags: CMD_FLAG_FUA,
            cmd: CMD_TRIM,
            handle: 9,
            offset: 1 << 40,
            len: 5 << 30,
        };
        assert_eq!(ExtRequest::decode(&r.encode()), Some(r));
        let mut bad = r.encode();
        bad[3] ^= 1;
        assert_eq!(ExtRequest::decode(&bad), None);
        let h = ext_reply_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, 9, 1 << 40, 0);
        assert_eq!(be32(&h[0..4]), EXTENDED_REPLY_MAGIC);
        assert_eq!(be64(&h[16..24]), 1 << 40);
        let e = ext_error_chunk(9, 0, NBD_EIO, "x");
        assert_eq!(e.len(), EXT_HEADER_LEN + 7);
        assert_eq!(be64(&e[24..32]), 7);
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(errno_to_nbd(libc::EROFS), NBD_EPERM);
        assert_eq!(errno_to_nbd(libc::EDQUOT), NBD_ENOSPC);
        assert_eq!(errno_to_nbd(libc::ENXIO), NBD_EIO);
        assert_eq!(nbd_to_errno(NBD_ENOTSUP), libc::EOPNOTSUPP);
        assert_eq!(nbd_to_errno(9999), libc::EINVAL);
    }

    #[test]
    fn cursor_bounds() {
        let data = [0, 0, 0, 3, b'a', b'b', b'c', 0, 7];
        let mut c = Cursor::new(&data);
        assert_eq!(c.string().as_deref(), Some("abc"));
        assert_eq!(c.u16(), Some(7));
        assert_eq!(c.u16(), None);
        let lying = [0, 0, 0, 9, b'a'];
        assert_eq!(Cursor::new(&lying).string(), None);
    }

    #[test]
    fn error_chunk_layout() {
        let c = error_chunk(7, NBD_EINVAL, "bad");
        assert_eq!(c.len(), CHUNK_HEADER_LEN + 6 + 3);
        assert_eq!(be32(&c[0..4]), STRUCTURED_REPLY_MAGIC);
        assert_eq!(be16(&c[6..8]), REPLY_TYPE_ERROR);
        assert_eq!(be32(&c[16..20]), 9);
        assert_eq!(be32(&c[20..24]), NBD_EINVAL);
    }
}
