//! Extended headers (NBD_OPT_EXTENDED_HEADERS, 64-bit lengths) between udm's own client and
//! server: negotiation, data paths, one-request trim/zero of more than 4 GiB on a sparse
//! file, NBD_REPLY_TYPE_BLOCK_STATUS_EXT, the wire format itself, and that a client that
//! does not ask keeps compact headers.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use udm_io::{FileDevice, Op};
use udm_nbd::proto::{self, *};
use udm_nbd::{NbdAddr, NbdClient, NbdError};
use udm_testkit::gate::GateDevice;

const GIB: u64 = 1 << 30;

fn errno<T>(r: Result<T, NbdError>) -> i32 {
    match r {
        Err(e) => e.errno(),
        Ok(_) => 0,
    }
}

#[test]
fn negotiated_and_data_paths() {
    let (s, mem, _) = serve_standard();
    let addr = NbdAddr::Unix(s.sock.clone());
    let c = NbdClient::connect_extended(&addr, "mem").unwrap();
    let info = c.info().clone();
    assert!(info.extended && info.structured, "{info:?}");
    assert!(info.base_allocation.is_some());
    assert_eq!(c.size(), 4 << 20);

    let data = noise(3 << 20, 7);
    c.write(4096, &data, false).unwrap();
    c.write(0, &data[..4096], true).unwrap();
    c.flush().unwrap();
    let mut back = vec![0; data.len()];
    c.read(4096, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(&mem.snapshot()[4096..4096 + data.len()], &data[..]);

    c.write_zeroes64(8192, 8192, false, true).unwrap();
    c.trim64(16384, 4096, false).unwrap();
    let snap = mem.snapshot();
    assert!(snap[8192..20480].iter().all(|&b| b == 0));
    assert_eq!(&snap[20480..24576], &data[20480 - 4096..24576 - 4096]);

    // Block status comes back as NBD_REPLY_TYPE_BLOCK_STATUS_EXT (the client reads it
    // into 64-bit runs); a request past 4 GiB is clamped to the export by the server.
    let runs = c.block_status64(0, 4 << 20).unwrap();
    assert!(runs.iter().map(|r| r.0).sum::<u64>() <= 4 << 20);
    assert_eq!(runs.iter().map(|r| r.0).sum::<u64>() % 512, 0);
    assert_eq!(c.block_status(0, 4096).unwrap().len(), 1);

    // Error replies arrive as extended error chunks and leave the connection usable.
    let size = c.size();
    let mut buf = vec![0; 4096];
    assert_eq!(errno(c.read(size - 512, &mut buf)), libc::EINVAL);
    assert_eq!(errno(c.write(size, &[0; 512], false)), libc::ENOSPC);
    assert_eq!(errno(c.trim64(0, 5 * GIB, false)), libc::EINVAL);
    assert_eq!(
        errno(c.write_zeroes64(0, 5 * GIB, false, false)),
        libc::ENOSPC
    );
    assert_eq!(errno(c.read(1, &mut buf[..512])), libc::EINVAL);
    assert_eq!(errno(c.raw_request(42, 0, 0, 0, None)), libc::EINVAL);
    // Zero-length read and write.
    c.raw_request(proto::CMD_READ, 0, 0, 0, None).unwrap();
    c.raw_request(proto::CMD_WRITE, 0, 0, 0, Some(&[])).unwrap();
    c.read(4096, &mut buf).unwrap();
    assert_eq!(buf, data[..4096]);
    c.disconnect().unwrap();
}

#[test]
fn compact_unless_asked() {
    let (s, _, _) = serve_standard();
    let c = NbdClient::connect_unix(&s.sock, "mem").unwrap();
    assert!(!c.info().extended);
    assert!(c.info().structured);
    c.write(0, &[5; 4096], false).unwrap();
    let mut b = [0; 4096];
    c.read(0, &mut b).unwrap();
    assert_eq!(b, [5; 4096]);
    // A 64-bit call still works, split into 32-bit requests (here one).
    c.trim64(0, 4096, false).unwrap();
    assert!(c.block_status64(0, 8 << 20).is_err()); // past the end: EINVAL
    assert_eq!(c.block_status64(0, 4096).unwrap().len(), 1);
}

#[test]
fn trim_and_zero_beyond_4g_on_sparse_file() {
    let s = serve();
    let img = s.path("big.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(16 * GIB).unwrap();
    drop(f);
    // The gate (open: it only records) proves a > 4 GiB request reached the device whole.
    let gate = GateDevice::new(Arc::new(FileDevice::open(&img, false).unwrap()));
    gate.open();
    s.add("big", gate.clone(), false);
    // The longest `op` bio the device saw, after the first `from` bios.
    let longest = |op: Op, from: usize| {
        gate.log()[from..]
            .iter()
            .filter(|r| r.op == op)
            .map(|r| r.len.bytes().0)
            .max()
            .unwrap_or(0)
    };
    let c = NbdClient::connect_extended(&NbdAddr::Unix(s.sock.clone()), "big").unwrap();
    assert!(c.info().extended);
    assert_eq!(c.size(), 16 * GIB);

    let a = noise(1 << 20, 1);
    let b = noise(1 << 20, 2);
    let d = noise(1 << 20, 3);
    c.write(GIB, &a, false).unwrap();
    c.write(9 * GIB, &b, false).unwrap();
    c.write(15 * GIB, &d, true).unwrap();

    // One block status request over all 16 GiB, answered with 64-bit runs.
    let runs = c.block_status64(0, 16 * GIB).unwrap();
    let mut off = 0;
    let mut data_at = Vec::new();
    for &(len, flags) in &runs {
        if flags & u64::from(STATE_HOLE) == 0 {
            data_at.push(off);
        }
        off += len;
    }
    assert!(off <= 16 * GIB && off > 0, "{runs:?}");
    assert!(
        runs.iter().any(|r| r.0 > u64::from(u32::MAX)),
        "a hole longer than 4 GiB is one run: {runs:?}"
    );
    assert!(data_at.iter().any(|&o| o <= GIB), "{runs:?}");

    // Trim 8 GiB in one request.
    c.trim64(0, 8 * GIB, false).unwrap();
    assert_eq!(longest(Op::Discard, 0), 8 * GIB);
    let mut buf = vec![0; 1 << 20];
    c.read(GIB, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&x| x == 0),
        "trimmed data reads back as zeroes"
    );
    c.read(9 * GIB, &mut buf).unwrap();
    assert_eq!(buf, b);
    let runs = c.block_status64(0, 8 * GIB).unwrap();
    assert_eq!(runs[0].0, 8 * GIB, "{runs:?}");
    assert_ne!(runs[0].1 & u64::from(STATE_ZERO), 0);

    // Zero 6 GiB in one request; the data past it survives.
    c.write_zeroes64(8 * GIB, 6 * GIB, false, true).unwrap();
    assert_eq!(longest(Op::WriteZeroes, 0), 6 * GIB);
    c.read(9 * GIB, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    c.read(15 * GIB, &mut buf).unwrap();
    assert_eq!(buf, d);
    c.disconnect().unwrap();

    // A compact client gets the same result in pieces below 4 GiB each.
    let seen = gate.log().len();
    let c = NbdClient::connect_unix(&s.sock, "big").unwrap();
    assert!(!c.info().extended);
    c.write_zeroes64(0, 9 * GIB, false, false).unwrap();
    let z = longest(Op::WriteZeroes, seen);
    assert!(z > 0 && z <= u64::from(u32::MAX), "{z}");
    c.read(15 * GIB, &mut buf).unwrap();
    assert_eq!(buf, d);
}

// ---- the wire format, by hand ----

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

fn send_opt(s: &mut UnixStream, opt: u32, data: &[u8]) {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    s.write_all(&v).unwrap();
}

/// One option reply: (type, data).
fn opt_reply(s: &mut UnixStream, opt: u32) -> (u32, Vec<u8>) {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).unwrap();
    assert_eq!(be64(&h[0..8]), REPLY_MAGIC);
    assert_eq!(be32(&h[8..12]), opt);
    let mut d = vec![0; be32(&h[16..20]) as usize];
    s.read_exact(&mut d).unwrap();
    (be32(&h[12..16]), d)
}

/// Handshake by hand up to transmission, with extended headers if `ext`.
fn raw_connect(s: &Served, ext: bool) -> UnixStream {
    let mut c = UnixStream::connect(&s.sock).unwrap();
    let mut hello = [0u8; 18];
    c.read_exact(&mut hello).unwrap();
    c.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
    if ext {
        send_opt(&mut c, OPT_EXTENDED_HEADERS, &[1]);
        assert_eq!(opt_reply(&mut c, OPT_EXTENDED_HEADERS).0, REP_ERR_INVALID);
        send_opt(&mut c, OPT_EXTENDED_HEADERS, &[]);
        assert_eq!(opt_reply(&mut c, OPT_EXTENDED_HEADERS).0, REP_ACK);
        send_opt(&mut c, OPT_EXTENDED_HEADERS, &[]);
        assert_eq!(opt_reply(&mut c, OPT_EXTENDED_HEADERS).0, REP_ERR_INVALID);
        send_opt(&mut c, OPT_STRUCTURED_REPLY, &[]);
        assert_eq!(
            opt_reply(&mut c, OPT_STRUCTURED_REPLY).0,
            REP_ERR_EXT_HEADER_REQD
        );
    }
    let mut go = 3u32.to_be_bytes().to_vec();
    go.extend_from_slice(b"mem");
    go.extend_from_slice(&0u16.to_be_bytes());
    send_opt(&mut c, OPT_GO, &go);
    loop {
        match opt_reply(&mut c, OPT_GO) {
            (REP_ACK, _) => break,
            (REP_INFO, _) => {}
            (t, d) => panic!("GO: {t:#x} {d:?}"),
        }
    }
    c
}

#[test]
fn wire_format() {
    let (s, _, _) = serve_standard();
    let mut c = raw_connect(&s, true);
    // A write of 4 KiB with the payload flag; the reply is a final NONE chunk echoing the
    // cookie and offset.
    let w = ExtRequest {
        flags: CMD_FLAG_PAYLOAD_LEN,
        cmd: CMD_WRITE,
        handle: 0x1122,
        offset: 8192,
        len: 4096,
    };
    c.write_all(&w.encode()).unwrap();
    c.write_all(&[0xa5; 4096]).unwrap();
    let mut h = [0u8; 32];
    c.read_exact(&mut h).unwrap();
    assert_eq!(be32(&h[0..4]), EXTENDED_REPLY_MAGIC);
    assert_eq!(u16::from_be_bytes([h[4], h[5]]), REPLY_FLAG_DONE);
    assert_eq!(u16::from_be_bytes([h[6], h[7]]), REPLY_TYPE_NONE);
    assert_eq!(be64(&h[8..16]), 0x1122);
    assert_eq!(be64(&h[16..24]), 8192);
    assert_eq!(be64(&h[24..32]), 0);

    // Read it back: one OFFSET_DATA chunk.
    let r = ExtRequest {
        flags: 0,
        cmd: CMD_READ,
        handle: 7,
        offset: 8192,
        len: 4096,
    };
    c.write_all(&r.encode()).unwrap();
    c.read_exact(&mut h).unwrap();
    assert_eq!(u16::from_be_bytes([h[6], h[7]]), REPLY_TYPE_OFFSET_DATA);
    assert_eq!(be64(&h[24..32]), 8 + 4096);
    let mut d = vec![0; 8 + 4096];
    c.read_exact(&mut d).unwrap();
    assert_eq!(be64(&d), 8192);
    assert!(d[8..].iter().all(|&x| x == 0xa5));

    // A payload on a command that takes none is consumed and refused.
    let t = ExtRequest {
        flags: CMD_FLAG_PAYLOAD_LEN,
        cmd: CMD_TRIM,
        handle: 8,
        offset: 0,
        len: 16,
    };
    c.write_all(&t.encode()).unwrap();
    c.write_all(&[0; 16]).unwrap();
    c.read_exact(&mut h).unwrap();
    assert_eq!(u16::from_be_bytes([h[6], h[7]]), REPLY_TYPE_ERROR);
    let mut e = vec![0; be64(&h[24..32]) as usize];
    c.read_exact(&mut e).unwrap();
    assert_eq!(be32(&e), NBD_EINVAL);

    // A compact request after extended headers is a protocol violation: disconnect.
    let compact = Request {
        flags: 0,
        cmd: CMD_FLUSH,
        handle: 9,
        offset: 0,
        len: 0,
    };
    c.write_all(&compact.encode()).unwrap();
    c.write_all(&[0; 4]).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");

    // Without the option the server answers compact requests with simple replies.
    let mut c = raw_connect(&s, false);
    let f = Request {
        flags: 0,
        cmd: CMD_FLUSH,
        handle: 10,
        offset: 0,
        len: 0,
    };
    c.write_all(&f.encode()).unwrap();
    let mut sr = [0u8; 16];
    c.read_exact(&mut sr).unwrap();
    assert_eq!(be32(&sr), SIMPLE_REPLY_MAGIC);
    assert_eq!(be64(&sr[8..]), 10);
    // An extended request on a compact connection is garbage: disconnect.
    c.write_all(&ExtRequest::from(f).encode()).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty());
}
