//! The crate's own client against the server: data paths, error mapping, block status,
//! concurrency, shutdown; and the client against nbdkit, a server nobody here wrote.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_io::{sync, FileDevice, MemDevice, PatternDevice, Sectors};
use udm_nbd::proto::{self, STATE_HOLE, STATE_ZERO};
use udm_nbd::{Cmd, NbdAddr, NbdClient, NbdError};

fn errno(r: Result<(), NbdError>) -> i32 {
    match r {
        Err(e) => e.errno(),
        Ok(()) => 0,
    }
}

#[test]
fn read_write_roundtrip_mem() {
    let (s, mem, _) = serve_standard();
    let c = NbdClient::connect_unix(&s.sock, "mem").unwrap();
    assert_eq!(c.size(), 4 << 20);
    assert!(!c.read_only());
    let info = c.info();
    assert!(info.structured);
    assert_eq!(
        (info.min_block, info.preferred_block, info.max_block),
        (512, 4096, 32 << 20)
    );
    assert!(info.base_allocation.is_some());
    assert_ne!(info.flags & proto::TF_CAN_MULTI_CONN, 0);
    let data = noise(256 << 10, 1);
    c.write(65536, &data, false).unwrap();
    c.write(0, &data[..512], true).unwrap();
    c.flush().unwrap();
    let mut back = vec![0; data.len()];
    c.read(65536, &mut back).unwrap();
    assert_eq!(back, data);
    let snap = mem.snapshot();
    assert_eq!(&snap[65536..65536 + data.len()], &data[..]);
    assert_eq!(&snap[..512], &data[..512]);
    c.write_zeroes(65536, 4096, false, false).unwrap();
    c.trim(65536 + 4096, 4096, true).unwrap();
    let snap = mem.snapshot();
    assert!(snap[65536..65536 + 8192].iter().all(|&b| b == 0));
    c.disconnect().unwrap();
}

#[test]
fn pattern_read_only() {
    let (s, _, _) = serve_standard();
    let c = NbdClient::connect_unix(&s.sock, "pattern").unwrap();
    assert!(c.read_only());
    let mut buf = vec![0; 8192];
    c.read(1 << 20, &mut buf).unwrap();
    let mut want = vec![0; 8192];
    PatternDevice::fill(&mut want, 1 << 20);
    assert_eq!(buf, want);
    assert_eq!(errno(c.write(0, &[1; 512], false)), libc::EPERM);
    assert_eq!(errno(c.trim(0, 512, false)), libc::EPERM);
    assert_eq!(errno(c.write_zeroes(0, 512, false, false)), libc::EPERM);
    // Still usable after errors.
    c.read(0, &mut buf).unwrap();
    c.flush().unwrap();
}

#[test]
fn export_flagged_read_only_refuses_writes() {
    let s = serve();
    let mem = Arc::new(MemDevice::new("m", Sectors(64)));
    s.add("ro", mem.clone(), true);
    let c = NbdClient::connect_unix(&s.sock, "ro").unwrap();
    assert!(c.read_only());
    assert_eq!(errno(c.write(0, &[7; 512], false)), libc::EPERM);
    assert!(mem.snapshot().iter().all(|&b| b == 0));
}

#[test]
fn error_paths_keep_connection() {
    let (s, _, _) = serve_standard();
    let c = NbdClient::connect_unix(&s.sock, "mem").unwrap();
    let size = c.size();
    let mut buf = vec![0; 4096];
    assert_eq!(errno(c.read(size - 512, &mut buf)), libc::EINVAL);
    assert_eq!(errno(c.read(u64::MAX - 100, &mut buf[..512])), libc::EINVAL);
    assert_eq!(errno(c.write(size, &[0; 512], false)), libc::ENOSPC);
    assert_eq!(errno(c.trim(size - 512, 1024, false)), libc::EINVAL);
    assert_eq!(errno(c.write_zeroes(size, 512, false, false)), libc::ENOSPC);
    // Misaligned.
    assert_eq!(errno(c.read(1, &mut buf[..512])), libc::EINVAL);
    assert_eq!(
        errno(c.raw_request(proto::CMD_WRITE, 0, 0, 100, Some(&[0; 100]))),
        libc::EINVAL
    );
    // Too long for one request (payload drained, connection kept).
    let big = vec![0u8; (32 << 20) + 512];
    assert_eq!(
        errno(c.raw_request(proto::CMD_WRITE, 0, 0, big.len() as u32, Some(&big))),
        libc::EINVAL
    );
    assert_eq!(
        errno(c.raw_request(proto::CMD_READ, 0, 0, (32 << 20) + 512, None)),
        libc::EINVAL
    );
    // Unknown command and flags.
    assert_eq!(errno(c.raw_request(42, 0, 0, 0, None)), libc::EINVAL);
    assert_eq!(
        errno(c.raw_request(proto::CMD_READ, 1 << 9, 0, 512, None)),
        libc::EINVAL
    );
    assert_eq!(
        errno(c.raw_request(
            proto::CMD_WRITE_ZEROES,
            proto::CMD_FLAG_FAST_ZERO,
            0,
            512,
            None
        )),
        libc::EINVAL
    );
    // Zero-length requests are harmless no-ops.
    c.raw_request(proto::CMD_READ, 0, 0, 0, None).unwrap();
    c.raw_request(proto::CMD_WRITE, 0, 0, 0, Some(&[])).unwrap();
    c.read(0, &mut buf).unwrap();
}

#[test]
fn block_status_on_sparse_file() {
    let (s, _, img) = serve_standard();
    let c = NbdClient::connect_unix(&s.sock, "file").unwrap();
    // Whole file is a hole at first.
    let ext = c.block_status(0, 8 << 20).unwrap();
    assert_eq!(ext[0].1, STATE_HOLE | STATE_ZERO);
    assert!(ext.iter().map(|e| e.0 as u64).sum::<u64>() <= 8 << 20);
    c.write(1 << 20, &noise(64 << 10, 2), false).unwrap();
    c.flush().unwrap();
    let ext = c.block_status(1 << 20, 128 << 10).unwrap();
    assert_eq!(ext[0].1, 0, "written range is data: {ext:?}");
    assert!(ext[0].0 >= 64 << 10);
    let ext = c.block_status(0, 4096).unwrap();
    assert_eq!(ext, vec![(4096, STATE_HOLE | STATE_ZERO)]);
    // Trim punches a hole back.
    c.trim(1 << 20, 64 << 10, false).unwrap();
    let ext = c.block_status(1 << 20, 64 << 10).unwrap();
    assert_eq!(ext[0].1 & STATE_ZERO, STATE_ZERO);
    assert!(read_file(&img)[1 << 20..(1 << 20) + (64 << 10)]
        .iter()
        .all(|&b| b == 0));
    // Out of range and empty.
    assert_eq!(
        c.block_status(8 << 20, 512).unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(c.block_status(0, 0).unwrap_err().errno(), libc::EINVAL);
}

#[test]
fn list_and_default_export() {
    let s = serve();
    s.add("only", Arc::new(MemDevice::new("only", Sectors(16))), false);
    let addr = NbdAddr::Unix(s.sock.clone());
    assert_eq!(NbdClient::list(&addr).unwrap(), vec!["only".to_string()]);
    let c = NbdClient::connect(&addr, "").unwrap();
    assert_eq!(c.info().name, "only");
    drop(c);
    s.add(
        "second",
        Arc::new(MemDevice::new("second", Sectors(16))),
        false,
    );
    assert_eq!(
        NbdClient::list(&addr).unwrap(),
        vec!["only".to_string(), "second".to_string()]
    );
    match NbdClient::connect(&addr, "") {
        Err(NbdError::Refused { reply, .. }) => assert_eq!(reply, proto::REP_ERR_UNKNOWN),
        r => panic!(
            "default export with two exports: {:?}",
            r.map(|c| c.info().clone())
        ),
    }
    assert!(NbdClient::connect(&addr, "nope").is_err());
    let c = NbdClient::connect_uri(&s.uri("second")).unwrap();
    assert_eq!(c.size(), 16 * 512);
}

#[test]
fn concurrent_requests_on_one_connection() {
    let (s, _, img) = serve_standard();
    let c = Arc::new(NbdClient::connect_unix(&s.sock, "file").unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..32u64 {
                    let off = (t * 32 + i) * 8192;
                    let data = noise(8192, t * 1000 + i);
                    c.write(off, &data, false).unwrap();
                    let mut back = vec![0; 8192];
                    c.read(off, &mut back).unwrap();
                    assert_eq!(back, data);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    c.flush().unwrap();
    let file = read_file(&img);
    assert_eq!(&file[8192 * 33..8192 * 34], &noise(8192, 1001)[..]);
}

#[test]
fn open_handle_released_on_close() {
    let (s, _, _) = serve_standard();
    let c = NbdClient::connect_unix(&s.sock, "mem").unwrap();
    assert_eq!(s.exports.open.load(Ordering::SeqCst), 1);
    c.disconnect().unwrap();
    wait_for(|| s.exports.open.load(Ordering::SeqCst) == 0 && s.handle.connections() == 0);
}

#[test]
fn shutdown_closes_connections_and_socket() {
    let (s, _, _) = serve_standard();
    let c = NbdClient::connect_unix(&s.sock, "file").unwrap();
    c.write(0, &[5; 4096], false).unwrap();
    assert_eq!(s.handle.connections(), 1);
    let t = Instant::now();
    s.handle.shutdown();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(s.handle.connections(), 0);
    assert_eq!(s.exports.open.load(Ordering::SeqCst), 0);
    assert!(!s.sock.exists());
    assert!(c.read(0, &mut [0; 512]).is_err());
    s.handle.shutdown();
}

#[test]
fn tcp_listener_works() {
    let exports = Arc::new(TestExports::default());
    let mem = Arc::new(MemDevice::new("t", Sectors(128)));
    exports.devs.lock().insert("t".into(), (mem.clone(), false));
    let h = udm_nbd::NbdServer::new(exports)
        .serve_tcp("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let addr = h.local_addr().unwrap();
    let c = NbdClient::connect_uri(&format!("nbd://{addr}/t")).unwrap();
    c.write(512, &[9; 1024], true).unwrap();
    assert_eq!(&mem.snapshot()[512..1536], &[9; 1024][..]);
    drop(c);
    h.shutdown();
}

#[test]
fn file_device_and_sync_helpers_agree() {
    let (s, _, img) = serve_standard();
    let c = NbdClient::connect_unix(&s.sock, "file").unwrap();
    c.write(4096, &noise(4096, 9), true).unwrap();
    let dev = FileDevice::open(&img, true).unwrap();
    let back = sync::read_at(&dev, Sectors(8), 4096).unwrap();
    assert_eq!(back.as_slice(), &noise(4096, 9)[..]);
}

/// A real server nobody here wrote, to check the client side.
#[test]
fn client_against_nbdkit() {
    if !udm_testkit::require_tool("nbdkit") {
        return;
    }
    let k = nbdkit(&["-e", "disk", "memory", "4M"]);
    let addr = NbdAddr::Unix(k.sock.clone());
    let c = NbdClient::connect(&addr, "disk").unwrap();
    assert_eq!(c.size(), 4 << 20);
    assert!(c.info().structured);
    let data = noise(1 << 20, 5);
    c.write(1 << 20, &data, true).unwrap();
    let mut back = vec![0; data.len()];
    c.read(1 << 20, &mut back).unwrap();
    assert_eq!(back, data);
    // nbdkit's memory plugin answers sparse reads with hole chunks.
    let mut zeros = vec![1; 65536];
    c.read(3 << 20, &mut zeros).unwrap();
    assert!(zeros.iter().all(|&b| b == 0));
    let ext = c.block_status(0, 4 << 20).unwrap();
    assert_eq!(ext[0].1 & STATE_HOLE, STATE_HOLE);
    c.write_zeroes(1 << 20, 4096, false, false).unwrap();
    c.trim(1 << 20, 4096, false).unwrap();
    c.flush().unwrap();
    assert_eq!(
        c.read(4 << 20, &mut [0; 512]).unwrap_err().errno(),
        libc::EINVAL
    );
    c.disconnect().unwrap();
}

#[test]
fn client_against_nbdkit_read_only() {
    if !udm_testkit::require_tool("nbdkit") {
        return;
    }
    let k = nbdkit(&["-r", "pattern", "1M"]);
    let c = NbdClient::connect_unix(&k.sock, "").unwrap();
    assert!(c.read_only());
    let mut buf = vec![0; 4096];
    c.read(8192, &mut buf).unwrap();
    // nbdkit's pattern plugin: big-endian u64 offsets.
    assert_eq!(&buf[..8], &8192u64.to_be_bytes());
    assert!(c.write(0, &[0; 512], false).is_err());
}

#[test]
fn submit_pipelines_many_requests() {
    let (s, mem, _) = serve_standard();
    let c = NbdClient::connect_unix(&s.sock, "mem").unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..256u64 {
        let data = noise(4096, i);
        let tx = tx.clone();
        c.submit(
            Cmd::Write {
                offset: i * 4096,
                data: &data,
                fua: false,
            },
            move |r| tx.send(r.map(|v| v.len())).unwrap(),
        );
    }
    for _ in 0..256 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(3)).unwrap().unwrap(), 0);
    }
    let tx2 = tx.clone();
    c.submit(Cmd::Flush, move |r| tx2.send(r.map(|v| v.len())).unwrap());
    assert_eq!(rx.recv_timeout(Duration::from_secs(3)).unwrap().unwrap(), 0);
    let (dtx, drx) = crossbeam_channel::unbounded();
    for i in 0..256u64 {
        let dtx = dtx.clone();
        c.submit(
            Cmd::Read {
                offset: i * 4096,
                len: 4096,
            },
            move |r| dtx.send((i, r)).unwrap(),
        );
    }
    for _ in 0..256 {
        let (i, r) = drx.recv_timeout(Duration::from_secs(3)).unwrap();
        assert_eq!(r.unwrap(), noise(4096, i));
    }
    assert_eq!(&mem.snapshot()[4096..8192], &noise(4096, 1)[..]);
    let (etx, erx) = crossbeam_channel::unbounded();
    c.submit(
        Cmd::Read {
            offset: 4 << 20,
            len: 512,
        },
        move |r| etx.send(r).unwrap(),
    );
    assert_eq!(
        erx.recv_timeout(Duration::from_secs(3))
            .unwrap()
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    c.submit(
        Cmd::Trim {
            offset: 0,
            len: 4096,
            fua: false,
        },
        |r| assert!(r.is_ok()),
    );
    c.submit(
        Cmd::WriteZeroes {
            offset: 0,
            len: 4096,
            no_hole: true,
            fua: true,
        },
        |r| assert!(r.is_ok()),
    );
    // In-flight callbacks still get answers on disconnect.
    let (ftx, frx) = crossbeam_channel::unbounded();
    for i in 0..32u64 {
        let ftx = ftx.clone();
        c.submit(
            Cmd::Read {
                offset: i * 4096,
                len: 4096,
            },
            move |r| ftx.send(r.is_ok()).unwrap(),
        );
    }
    c.disconnect().unwrap();
    drop(ftx);
    let answered: Vec<bool> = frx.iter().collect();
    assert_eq!(answered.len(), 32);
    assert!(answered.iter().all(|&ok| ok));
}

#[test]
fn submit_after_server_gone_fails_fast() {
    let (s, _, _) = serve_standard();
    let c = NbdClient::connect_unix(&s.sock, "mem").unwrap();
    s.handle.shutdown();
    wait_for(|| c.flush().is_err());
    let (tx, rx) = crossbeam_channel::bounded(1);
    c.submit(Cmd::Flush, move |r| tx.send(r.is_err()).unwrap());
    assert!(rx.recv_timeout(Duration::from_secs(1)).unwrap());
}

#[test]
fn callbacks_may_submit_more_requests() {
    let (s, _, _) = serve_standard();
    let c = Arc::new(NbdClient::connect_unix(&s.sock, "mem").unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    // Each completed write submits a read of what it wrote: a chain 64 deep per seed.
    fn step(c: Arc<NbdClient>, i: u64, tx: crossbeam_channel::Sender<bool>) {
        let data = noise(4096, i);
        let c2 = c.clone();
        c.submit(
            Cmd::Write {
                offset: (i % 512) * 4096,
                data: &data,
                fua: false,
            },
            move |r| {
                assert!(r.is_ok());
                let c3 = c2.clone();
                c2.submit(
                    Cmd::Read {
                        offset: (i % 512) * 4096,
                        len: 4096,
                    },
                    move |r| {
                        let ok = r.map(|d| d == noise(4096, i)).unwrap_or(false);
                        if i % 64 == 63 || !ok {
                            tx.send(ok).unwrap();
                        } else {
                            step(c3, i + 1, tx);
                        }
                    },
                );
            },
        );
    }
    for seed in 0..8u64 {
        step(c.clone(), seed * 64, tx.clone());
    }
    for _ in 0..8 {
        assert!(rx.recv_timeout(Duration::from_secs(4)).unwrap());
    }
}

/// A RAM disk advertising 4 KiB logical blocks.
struct FourK(MemDevice);

impl udm_io::BlockDevice for FourK {
    fn submit(&self, bio: udm_io::Bio) {
        self.0.submit(bio)
    }
    fn size(&self) -> Sectors {
        self.0.size()
    }
    fn id(&self) -> udm_io::DevId {
        self.0.id()
    }
    fn limits(&self) -> udm_io::Limits {
        udm_io::Limits {
            logical_block_size: 4096,
            physical_block_size: 4096,
            io_min: 4096,
            ..Default::default()
        }
    }
}

#[test]
fn four_k_logical_blocks_are_enforced() {
    let s = serve();
    s.add(
        "4k",
        Arc::new(FourK(MemDevice::new("4k", Sectors(256)))),
        false,
    );
    let c = NbdClient::connect_unix(&s.sock, "4k").unwrap();
    assert_eq!((c.info().min_block, c.info().preferred_block), (4096, 4096));
    let mut buf = vec![0; 4096];
    c.read(4096, &mut buf).unwrap();
    c.write(8192, &[1; 4096], false).unwrap();
    assert_eq!(errno(c.read(512, &mut buf)), libc::EINVAL);
    assert_eq!(errno(c.write(0, &[1; 512], false)), libc::EINVAL);
    assert_eq!(errno(c.trim(4096, 512, false)), libc::EINVAL);
    assert_eq!(c.block_status(0, 4096).unwrap(), vec![(4096, 0)]);
    c.trim(4096, 4096, false).unwrap();
}
