//! A device that holds bios (as a suspended device does): the server never times requests
//! out, DISC and shutdown answer everything in flight once the device lets go.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use udm_io::{MemDevice, Sectors};
use udm_nbd::proto::*;
use udm_nbd::{Cmd, NbdClient};
use udm_testkit::gate::GateDevice;

/// Failure guard for waits that must end (never the pass condition).
const GUARD: Duration = Duration::from_secs(20);

/// A RAM device behind a closed gate (holding every bio until opened), exported as `held`.
fn held_export(s: &Served) -> (Arc<MemDevice>, Arc<GateDevice>) {
    let mem = Arc::new(MemDevice::new("held", Sectors(2048)));
    let gate = GateDevice::new(mem.clone());
    s.add("held", gate.clone(), false);
    (mem, gate)
}

/// Wait until the gate holds exactly `n` bios.
fn wait_held(gate: &GateDevice, n: usize) {
    assert!(
        gate.wait_held(n, GUARD),
        "fewer than {n} bios reached the device"
    );
    assert_eq!(gate.held(), n);
}

#[test]
fn held_requests_are_answered_on_release() {
    let s = serve();
    let (mem, gate) = held_export(&s);
    let c = NbdClient::connect_unix(&s.sock, "held").unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let data = noise(8192, 4);
    let t2 = tx.clone();
    c.submit(
        Cmd::Write {
            offset: 0,
            data: &data,
            fua: true,
        },
        move |r| t2.send(("w", r)).unwrap(),
    );
    c.submit(
        Cmd::Read {
            offset: 8192,
            len: 4096,
        },
        move |r| tx.send(("r", r)).unwrap(),
    );
    wait_held(&gate, 2);
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "answered while held"
    );
    gate.open();
    let mut got: Vec<_> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(2)).unwrap())
        .collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(got[0].1.as_ref().unwrap(), &vec![0u8; 4096]);
    assert!(got[1].1.is_ok());
    assert_eq!(&mem.snapshot()[..8192], &data[..]);
}

#[test]
fn disc_answers_in_flight_requests_first() {
    let s = serve();
    let (mem, gate) = held_export(&s);
    let mut c = UnixStream::connect(&s.sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut g = [0u8; 18];
    c.read_exact(&mut g).unwrap();
    c.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
    c.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
    c.write_all(&OPT_EXPORT_NAME.to_be_bytes()).unwrap();
    c.write_all(&4u32.to_be_bytes()).unwrap();
    c.write_all(b"held").unwrap();
    let mut info = [0u8; 10];
    c.read_exact(&mut info).unwrap();
    c.write_all(
        &Request {
            flags: 0,
            cmd: CMD_WRITE,
            handle: 1,
            offset: 0,
            len: 512,
        }
        .encode(),
    )
    .unwrap();
    c.write_all(&[0x77; 512]).unwrap();
    c.write_all(
        &Request {
            flags: 0,
            cmd: CMD_FLUSH,
            handle: 2,
            offset: 0,
            len: 0,
        }
        .encode(),
    )
    .unwrap();
    c.write_all(
        &Request {
            flags: 0,
            cmd: CMD_DISC,
            handle: 3,
            offset: 0,
            len: 0,
        }
        .encode(),
    )
    .unwrap();
    wait_held(&gate, 2);
    std::thread::sleep(Duration::from_millis(100));
    gate.open();
    let mut replies = Vec::new();
    let mut r = [0u8; 16];
    for _ in 0..2 {
        c.read_exact(&mut r).unwrap();
        assert_eq!(be32(&r[0..4]), SIMPLE_REPLY_MAGIC);
        replies.push((be32(&r[4..8]), be64(&r[8..16])));
    }
    replies.sort();
    assert_eq!(replies, vec![(0, 1), (0, 2)]);
    assert_eq!(
        c.read(&mut r).unwrap(),
        0,
        "connection must close after DISC"
    );
    assert_eq!(&mem.snapshot()[..512], &[0x77; 512][..]);
}

/// Shut down with a write held by the device; returns whether the client got its reply.
fn shutdown_with_held_write(grace: Duration) -> bool {
    let s = serve();
    let (mem, gate) = held_export(&s);
    let c = NbdClient::connect_unix(&s.sock, "held").unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    c.submit(
        Cmd::Write {
            offset: 512,
            data: &[3; 512],
            fua: false,
        },
        move |r| tx.send(r.is_ok()).unwrap(),
    );
    wait_held(&gate, 1);
    let done = Arc::new(AtomicBool::new(false));
    let handle = Arc::new(s.handle);
    let (d2, h2) = (done.clone(), handle.clone());
    let t = std::thread::spawn(move || {
        h2.shutdown_with_grace(grace);
        d2.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        !done.load(Ordering::SeqCst),
        "shutdown returned with a bio still held"
    );
    gate.open();
    t.join().unwrap();
    assert_eq!(handle.connections(), 0);
    assert_eq!(s.exports.open.load(Ordering::SeqCst), 0);
    assert_eq!(&mem.snapshot()[512..1024], &[3; 512][..]);
    rx.recv_timeout(Duration::from_secs(1)).unwrap_or(false)
}

#[test]
fn shutdown_answers_held_bios_within_grace() {
    assert!(
        shutdown_with_held_write(Duration::from_secs(3)),
        "reply lost"
    );
}

#[test]
fn shutdown_after_grace_still_waits_for_held_bios() {
    // The socket is cut after the grace period, so the reply may be lost, but the bio is
    // still waited for before the export is released.
    shutdown_with_held_write(Duration::from_millis(100));
}
