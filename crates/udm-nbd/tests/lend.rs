//! Large read replies whose buffers are lent to the socket (vmsplice, `lend.rs`) rather
//! than copied: a client that reads slowly, with many large reads in flight, still gets
//! exactly each read's bytes (a buffer reused while the client had not read it yet would
//! show another read's data); reads ending at the device end; reads failing half-way among
//! lent ones; flushes and FUA writes between them; and clients that disconnect in the middle
//! of lent replies, after which the server serves a new client correctly.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;
use udm_io::{Bio, BlockDevice, DevId, Limits, Op, Sectors};
use udm_nbd::proto::*;
use udm_nbd::NbdClient;

const SIZE: u64 = 16 << 20;

/// A device whose reads are computed (copied from an image on another thread, as a target
/// that decrypts or verifies would do): never spliced, always a bio with a reply buffer.
/// Reads touching sector `bad` fill half their buffer and fail.
struct Computed {
    data: Arc<parking_lot::Mutex<Vec<u8>>>,
    bad: u64,
}

impl BlockDevice for Computed {
    fn submit(&self, mut bio: Bio) {
        let data = self.data.clone();
        let bad = self.bad;
        std::thread::spawn(move || {
            let off = (bio.sector.0 * 512) as usize;
            let len = bio.len().0 as usize * 512;
            let mut d = data.lock();
            match bio.op {
                Op::Read if (bio.sector.0..bio.end().0).contains(&bad) => {
                    let half = len / 2;
                    bio.buf_mut()[..half].copy_from_slice(&d[off..off + half]);
                    drop(d);
                    return bio.complete(Err(udm_io::IoError::Io));
                }
                Op::Read => bio.buf_mut().copy_from_slice(&d[off..off + len]),
                Op::Write => d[off..off + len].copy_from_slice(bio.buf()),
                _ => {}
            }
            drop(d);
            bio.complete(Ok(()))
        });
    }
    fn size(&self) -> Sectors {
        Sectors(SIZE / 512)
    }
    fn id(&self) -> DevId {
        DevId::Path("computed".into())
    }
    fn limits(&self) -> Limits {
        Limits::default()
    }
}

const BAD: u64 = 5 << 20;

fn served() -> (Served, Arc<parking_lot::Mutex<Vec<u8>>>) {
    let s = serve();
    let data = Arc::new(parking_lot::Mutex::new(noise(SIZE as usize, 41)));
    s.add(
        "dev",
        Arc::new(Computed {
            data: data.clone(),
            bad: BAD / 512,
        }),
        false,
    );
    (s, data)
}

/// Read one simple reply's header and, if it succeeded, `len` bytes of data.
fn reply(c: &mut UnixStream, len: usize) -> (u32, u64, Vec<u8>) {
    let (err, h) = simple(c);
    let mut d = vec![0u8; if err == 0 { len } else { 0 }];
    c.read_exact(&mut d).unwrap();
    (err, h, d)
}

/// Reads of `(offset, len)`; the expected result of each (data or an error).
fn reads() -> Vec<(u64, u32)> {
    let mut v = Vec::new();
    for i in 0..40u64 {
        let len = [1u32 << 20, 256 << 10, 768 << 10, 2 << 20][i as usize % 4];
        let off = (i * 4096 * 37) % (SIZE - (2 << 20));
        v.push((off, len));
    }
    // The end of the device, and reads failing half-way.
    v.push((SIZE - (1 << 20), 1 << 20));
    v.push((SIZE - (256 << 10), 256 << 10));
    v.push((BAD - 4096, 1 << 20));
    v.push((BAD, 512 << 10));
    v
}

#[test]
fn a_slow_reader_gets_each_reads_own_bytes() {
    let (s, data) = served();
    let model = data.lock().clone();
    let mut c = go_to(&s, "dev", false);
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let rs = reads();
    // A window of requests in flight, each reply read slowly: the server's socket buffer
    // holds several lent replies the client has not read while each new read takes a
    // buffer from the connection's pool (a lent one given back too early would be
    // overwritten under the client).
    const WINDOW: usize = 10;
    let mut sent = 0;
    while sent < WINDOW.min(rs.len()) {
        request(&mut c, CMD_READ, 0, sent as u64, rs[sent].0, rs[sent].1);
        sent += 1;
    }
    let mut seen = vec![false; rs.len()];
    for _ in 0..rs.len() {
        std::thread::sleep(Duration::from_millis(20));
        // Replies may come in any order: read the header, then the length it implies.
        let mut hdr = [0u8; 16];
        c.read_exact(&mut hdr).unwrap();
        assert_eq!(be32(&hdr[0..4]), SIMPLE_REPLY_MAGIC);
        let (err, h) = (be32(&hdr[4..8]), be64(&hdr[8..16]) as usize);
        let (off, len) = rs[h];
        assert!(!seen[h], "reply {h} twice");
        seen[h] = true;
        let fails = (off..off + len as u64).contains(&BAD);
        if fails {
            assert_eq!(err, NBD_EIO, "read {off}+{len}");
        } else {
            assert_eq!(err, 0, "read {off}+{len}");
            let mut d = vec![0u8; len as usize];
            c.read_exact(&mut d).unwrap();
            assert!(
                d == model[off as usize..off as usize + len as usize],
                "read {h}: {off}+{len} holds other bytes"
            );
        }
        if sent < rs.len() {
            request(&mut c, CMD_READ, 0, sent as u64, rs[sent].0, rs[sent].1);
            sent += 1;
        }
    }
    // The connection is still in step: a small read and a large one.
    request(&mut c, CMD_READ, 0, 900, 8192, 4096);
    assert!(reply(&mut c, 4096).2 == model[8192..12288]);
    request(&mut c, CMD_READ, 0, 901, 0, 1 << 20);
    assert!(reply(&mut c, 1 << 20).2 == model[..1 << 20]);
}

#[test]
fn writes_flushes_and_fua_between_lent_reads() {
    let (s, data) = served();
    let c = NbdClient::connect_unix(&s.sock, "dev").unwrap();
    let new = noise(1 << 20, 7);
    c.write(2 << 20, &new, true).unwrap();
    let mut b = vec![0u8; 1 << 20];
    c.read(2 << 20, &mut b).unwrap();
    assert!(b == new);
    c.flush().unwrap();
    c.write((2 << 20) + 4096, &[9u8; 4096], false).unwrap();
    c.flush().unwrap();
    c.read(2 << 20, &mut b).unwrap();
    let model = data.lock().clone();
    assert!(b == model[2 << 20..3 << 20]);
    assert!(b[4096..8192].iter().all(|&x| x == 9));
    // End of the device, and a failed one: the error, then the connection goes on.
    c.read(SIZE - (1 << 20), &mut b).unwrap();
    assert!(b == model[(SIZE - (1 << 20)) as usize..]);
    let e = c.read(BAD, &mut b).expect_err("the failed read");
    assert_eq!(e.errno(), libc::EIO);
    c.read(0, &mut b).unwrap();
    assert!(b == model[..1 << 20]);
}

#[test]
fn clients_leaving_in_the_middle_of_lent_replies() {
    let (s, data) = served();
    let model = data.lock().clone();
    for round in 0..4u64 {
        let mut c = go_to(&s, "dev", round % 2 == 1);
        for h in 0..24u64 {
            request(
                &mut c,
                CMD_READ,
                0,
                h,
                (h * 65536 * 3) % (SIZE - (1 << 20)),
                1 << 20,
            );
        }
        // Read part of the first reply (or nothing), then go.
        if round >= 2 {
            let mut part = vec![0u8; 300 << 10];
            c.read_exact(&mut part).unwrap();
        }
        c.flush().unwrap();
        drop(c);
    }
    wait_for(|| s.handle.connections() == 0);
    let c = NbdClient::connect_unix(&s.sock, "dev").unwrap();
    let mut b = vec![0u8; 1 << 20];
    for off in [0u64, 3 << 20, SIZE - (1 << 20)] {
        c.read(off, &mut b).unwrap();
        assert!(b == model[off as usize..off as usize + (1 << 20)], "{off}");
    }
}
