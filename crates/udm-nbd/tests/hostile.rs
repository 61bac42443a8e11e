//! Hostile clients on raw sockets: garbage, truncated messages, lying lengths, huge
//! payloads, clients that never read. The server must not panic, must not let one
//! connection hurt another, and a well-behaved client must work afterwards.

mod common;

use common::*;
use proptest::prelude::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use udm_nbd::proto::*;
use udm_nbd::NbdClient;

/// The server still serves a good client correctly, and no connection or open leaked.
fn healthy(s: &Served) {
    let c = NbdClient::connect_unix(&s.sock, "mem").expect("good client after abuse");
    c.write(4096, &[0x5a; 4096], true).unwrap();
    let mut b = vec![0; 4096];
    c.read(4096, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0x5a));
    c.disconnect().unwrap();
    wait_for(|| s.handle.connections() == 0 && s.exports.open.load(Ordering::SeqCst) == 0);
}

/// Handshake to transmission on export `mem`, with structured replies if asked.
fn go(s: &Served, structured: bool) -> UnixStream {
    go_to(s, "mem", structured)
}

#[test]
fn garbage_during_handshake() {
    let (s, _, _) = serve_standard();
    // At least flags and an option magic's worth, so even all-zero junk (valid flags)
    // reaches a check that fails.
    let junk = prop::collection::vec(any::<u8>(), 12..3000);
    udm_testkit::prop::runner(16, file!())
        .run(&junk, |junk| {
            let mut c = connect(&s);
            let _ = c.write_all(&junk);
            prop_assert!(closed_by_server(&mut c), "server kept a garbage connection");
            Ok(())
        })
        .unwrap();
    // Truncated client flags, then hang up.
    let mut c = connect(&s);
    let mut g = [0u8; 18];
    c.read_exact(&mut g).unwrap();
    c.write_all(&[0, 0]).unwrap();
    drop(c);
    // Unknown client flags.
    let mut c = connect(&s);
    c.read_exact(&mut g).unwrap();
    c.write_all(&0x8000_0001u32.to_be_bytes()).unwrap();
    assert!(closed_by_server(&mut c));
    // Bad option magic.
    let mut c = connect(&s);
    greeting(&mut c);
    c.write_all(&[0xff; 16]).unwrap();
    assert!(closed_by_server(&mut c));
    healthy(&s);
}

#[test]
fn malformed_options_get_errors() {
    let (s, _, _) = serve_standard();
    let mut c = connect(&s);
    greeting(&mut c);
    option(&mut c, 999, b"whatever");
    assert_eq!(
        opt_reply(&mut c),
        (999, REP_ERR_UNSUP, b"unsupported option".to_vec())
    );
    option(&mut c, OPT_STARTTLS, &[]);
    assert_eq!(opt_reply(&mut c).1, REP_ERR_UNSUP);
    // Name length lies about the payload.
    option(&mut c, OPT_GO, &[0, 0, 1, 0, b'm']);
    assert_eq!(opt_reply(&mut c).1, REP_ERR_INVALID);
    option(&mut c, OPT_INFO, &[0, 0, 0, 3, b'm', b'e', b'm', 0, 9, 0]);
    assert_eq!(opt_reply(&mut c).1, REP_ERR_INVALID);
    option(&mut c, OPT_GO, &[0, 0, 0, 2, 0xff, 0xfe, 0, 0]);
    assert_eq!(opt_reply(&mut c).1, REP_ERR_INVALID);
    option(&mut c, OPT_LIST, b"x");
    assert_eq!(opt_reply(&mut c).1, REP_ERR_INVALID);
    // Meta contexts need structured replies first.
    option(&mut c, OPT_SET_META_CONTEXT, &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(opt_reply(&mut c).1, REP_ERR_INVALID);
    option(&mut c, OPT_STRUCTURED_REPLY, &[1]);
    assert_eq!(opt_reply(&mut c).1, REP_ERR_INVALID);
    option(&mut c, OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(opt_reply(&mut c).1, REP_ACK);
    option(
        &mut c,
        OPT_LIST_META_CONTEXT,
        &[0, 0, 0, 3, b'm', b'e', b'm', 0, 0, 0, 5],
    );
    assert_eq!(opt_reply(&mut c).1, REP_ERR_INVALID);
    // Too long to read in, short enough to skip.
    option(&mut c, OPT_INFO, &vec![7u8; 100 << 10]);
    assert_eq!(opt_reply(&mut c).1, REP_ERR_TOO_BIG);
    option(&mut c, OPT_GO, &[0, 0, 0, 4, b'n', b'o', b'p', b'e', 0, 0]);
    assert_eq!(opt_reply(&mut c).1, REP_ERR_UNKNOWN);
    // Still negotiating fine.
    option(&mut c, OPT_ABORT, &[]);
    assert_eq!(opt_reply(&mut c).1, REP_ACK);
    assert!(closed_by_server(&mut c));

    // An absurd option length closes without reading it.
    let mut c = connect(&s);
    greeting(&mut c);
    c.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
    c.write_all(&OPT_GO.to_be_bytes()).unwrap();
    c.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(closed_by_server(&mut c));
    // EXPORT_NAME of a missing export cannot be answered with an error: closed.
    let mut c = connect(&s);
    greeting(&mut c);
    option(&mut c, OPT_EXPORT_NAME, b"missing");
    assert!(closed_by_server(&mut c));
    healthy(&s);
}

#[test]
fn export_name_old_style_entry() {
    let (s, _, _) = serve_standard();
    let mut c = connect(&s);
    let mut g = [0u8; 18];
    c.read_exact(&mut g).unwrap();
    c.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap(); // no NO_ZEROES
    option(&mut c, OPT_EXPORT_NAME, b"mem");
    let mut r = [0u8; 10 + 124];
    c.read_exact(&mut r).unwrap();
    assert_eq!(be64(&r[0..8]), 4 << 20);
    assert_ne!(be16(&r[8..10]) & TF_HAS_FLAGS, 0);
    assert!(r[10..].iter().all(|&b| b == 0));
    request(&mut c, CMD_READ, 0, 77, 0, 512);
    assert_eq!(simple(&mut c), (0, 77));
    let mut d = [1u8; 512];
    c.read_exact(&mut d).unwrap();
    assert_eq!(d, [0; 512]);
    request(&mut c, CMD_DISC, 0, 78, 0, 0);
    assert!(closed_by_server(&mut c));
}

#[test]
fn bad_requests_in_transmission() {
    let (s, _, _) = serve_standard();
    let mut c = go(&s, false);
    // Huge read: refused, connection kept.
    request(&mut c, CMD_READ, 0, 1, 0, u32::MAX);
    assert_eq!(simple(&mut c), (NBD_EINVAL, 1));
    request(&mut c, CMD_READ, 0, 2, u64::MAX - 511, 512);
    assert_eq!(simple(&mut c), (NBD_EINVAL, 2));
    request(&mut c, CMD_WRITE_ZEROES, 0, 3, u64::MAX - 511, 1024);
    assert_eq!(simple(&mut c), (NBD_ENOSPC, 3));
    request(&mut c, 0xffff, 0xffff, 4, 0, 0);
    assert_eq!(simple(&mut c), (NBD_EINVAL, 4));
    request(&mut c, CMD_BLOCK_STATUS, 0, 5, 0, 512);
    assert_eq!(simple(&mut c), (NBD_EINVAL, 5));
    // A write just over the maximum is drained and refused.
    request(&mut c, CMD_WRITE, 0, 6, 0, (40 << 20) as u32);
    let junk = vec![0xeeu8; 1 << 20];
    for _ in 0..40 {
        c.write_all(&junk).unwrap();
    }
    assert_eq!(simple(&mut c), (NBD_EINVAL, 6));
    request(&mut c, CMD_FLUSH, 0, 7, 0, 0);
    assert_eq!(simple(&mut c), (0, 7));
    // A write claiming 4 GiB ends the connection without reading (or allocating) it.
    request(&mut c, CMD_WRITE, 0, 8, 0, u32::MAX);
    assert!(closed_by_server(&mut c));

    // Garbage magic closes.
    let mut c = go(&s, true);
    c.write_all(&[0x42; 28]).unwrap();
    assert!(closed_by_server(&mut c));
    // Truncated header, then hang up.
    let mut c = go(&s, true);
    c.write_all(
        &Request {
            flags: 0,
            cmd: CMD_READ,
            handle: 1,
            offset: 0,
            len: 512,
        }
        .encode()[..13],
    )
    .unwrap();
    drop(c);
    // Hang up half way through a write payload.
    let mut c = go(&s, true);
    request(&mut c, CMD_WRITE, 0, 9, 0, 1 << 20);
    c.write_all(&[1; 1000]).unwrap();
    drop(c);
    healthy(&s);
}

/// Eight request headers with the right magic: mostly known commands with small,
/// sector-aligned lengths, every third one anything at all.
fn request_headers() -> impl Strategy<Value = Vec<[u8; 28]>> {
    prop::collection::vec(prop::array::uniform28(any::<u8>()), 8).prop_map(|hs| {
        hs.into_iter()
            .enumerate()
            .map(|(i, mut hdr)| {
                hdr[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
                if i % 3 != 0 {
                    let cmd = (hdr[7] % 9) as u16;
                    let len = (be32(&hdr[24..28]) % 8192) & !511;
                    hdr[6..8].copy_from_slice(&cmd.to_be_bytes());
                    hdr[24..28].copy_from_slice(&len.to_be_bytes());
                }
                hdr
            })
            .collect()
    })
}

#[test]
fn random_requests_after_handshake() {
    let (s, _, _) = serve_standard();
    udm_testkit::prop::runner(24, file!())
        .run(&(any::<bool>(), request_headers()), |(structured, hdrs)| {
            let mut c = go(&s, structured);
            for hdr in &hdrs {
                if c.write_all(hdr).is_err() {
                    break;
                }
                // Lengths above the drain limit close the connection; others need payload.
                let len = be32(&hdr[24..28]);
                if be16(&hdr[6..8]) == CMD_WRITE && len <= MAX_DRAIN {
                    let _ = c.write_all(&vec![0u8; len as usize]);
                }
            }
            // Leave without reading the replies; the server must still serve others.
            drop(c);
            healthy(&s);
            Ok(())
        })
        .unwrap();
}

#[test]
fn client_that_never_reads_does_not_block_others() {
    let (s, _, _) = serve_standard();
    let mut bad = go(&s, true);
    bad.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Thousands of 1 MiB reads with no one reading the replies: the server's sends block
    // and it stops reading from us; our sends then time out.
    let mut sent = 0;
    for h in 0..4000u64 {
        let hdr = Request {
            flags: 0,
            cmd: CMD_READ,
            handle: h,
            offset: 0,
            len: 1 << 20,
        }
        .encode();
        if bad.write_all(&hdr).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 0);
    // Meanwhile another client is served normally.
    let t = Instant::now();
    let c = NbdClient::connect_unix(&s.sock, "mem").unwrap();
    let mut buf = vec![0; 1 << 20];
    for i in 0..8 {
        c.read(i << 20 & ((4 << 20) - 1), &mut buf).unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(c);
    // Shutdown gives up on the stuck client after the grace period.
    let t = Instant::now();
    s.handle.shutdown_with_grace(Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(s.handle.connections(), 0);
    assert_eq!(s.exports.open.load(Ordering::SeqCst), 0);
}

#[test]
fn many_connections_at_once() {
    let (s, _, _) = serve_standard();
    let idle: Vec<_> = (0..32).map(|_| connect(&s)).collect();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let sock = s.sock.clone();
            std::thread::spawn(move || {
                let c = NbdClient::connect_unix(&sock, "mem").unwrap();
                let data = noise(65536, t);
                c.write(t * 65536, &data, false).unwrap();
                let mut b = vec![0; 65536];
                c.read(t * 65536, &mut b).unwrap();
                assert_eq!(b, data);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(idle);
    healthy(&s);
}

/// Raise the open-files limit as far as allowed; returns the soft limit now in force.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max.min(1 << 15);
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

#[test]
fn thousands_of_connections_are_refused_cleanly_and_others_still_work() {
    // Each accepted connection costs a few descriptors on both ends in this one process.
    let n = ((raise_nofile().saturating_sub(200)) / 5).min(1500) as usize;
    let (s, _, _) = serve_standard();
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        match UnixStream::connect(&s.sock) {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
    }
    assert!(
        held.len() >= n.min(1100),
        "could only open {} connections",
        held.len()
    );
    // A real client during the flood: the server may refuse it if it is full, but must not
    // crash; once the flood is gone it serves normally.
    drop(held);
    healthy(&s);
    let c = NbdClient::connect_unix(&s.sock, "mem").unwrap();
    let data = noise(4096, 9);
    c.write(0, &data, false).unwrap();
    let mut b = vec![0; 4096];
    c.read(0, &mut b).unwrap();
    assert_eq!(b, data);
}
