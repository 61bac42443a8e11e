//! The server's fast paths give the same bytes as the slow ones: large reads spliced from
//! the file below (`BlockDevice::read_file_range`) against reads through bios on the I/O
//! pool, with compact, structured and extended replies; short files (zeroes past the end);
//! errors in the middle of a spliced read; pipelined large and small requests; large
//! writes through the recycled payload buffers; and reads through recycled buffers, with
//! reads failing half-way among them. Large writes spliced from the socket into the file
//! below (`BlockDevice::write_file_range`) against writes through bios, the same way: every
//! request style, pipelined, failing in the middle, and payloads sent in small pieces.

mod common;

use common::*;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use udm_io::{Bio, BlockDevice, DevId, FileDevice, FileReader, FileWriter, Limits, Sectors};
use udm_nbd::{Cmd, NbdAddr, NbdClient};

const SIZE: u64 = 8 << 20;

/// A file device that counts how reads reach it, and fails the spliced read at one sector
/// after filling the caller's pipe (an error in the middle of a transfer).
struct Counting {
    inner: FileDevice,
    spliced: AtomicUsize,
    /// Writes that went into the file straight from a pipe.
    wspliced: AtomicUsize,
    bios: AtomicUsize,
    fail_at: Option<Sectors>,
}

impl Counting {
    fn new(inner: FileDevice, fail_at: Option<Sectors>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            spliced: AtomicUsize::new(0),
            wspliced: AtomicUsize::new(0),
            bios: AtomicUsize::new(0),
            fail_at,
        })
    }
}

impl BlockDevice for Counting {
    fn submit(&self, bio: Bio) {
        self.bios.fetch_add(1, Ordering::SeqCst);
        self.inner.submit(bio)
    }
    fn size(&self) -> Sectors {
        self.inner.size()
    }
    fn id(&self) -> DevId {
        self.inner.id()
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn read_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: FileReader<'_>,
    ) -> Option<io::Result<usize>> {
        let r = self.inner.read_file_range(sector, len, f)?;
        self.spliced.fetch_add(1, Ordering::SeqCst);
        if Some(sector) == self.fail_at {
            // The pipe now holds this range's data, which must never reach a client.
            return Some(Err(io::Error::from_raw_os_error(libc::EIO)));
        }
        Some(r)
    }
    fn write_file_range(
        &self,
        sector: Sectors,
        len: Sectors,
        f: FileWriter<'_>,
    ) -> Option<io::Result<usize>> {
        let r = self.inner.write_file_range(sector, len, f)?;
        self.wspliced.fetch_add(1, Ordering::SeqCst);
        if Some(sector) == self.fail_at {
            return Some(Err(io::Error::from_raw_os_error(libc::EIO)));
        }
        Some(r)
    }
}

/// An 8 MiB file of noise exported twice: `fast` (splice allowed) and `slow` (every read a
/// bio on the I/O pool), each through a counting wrapper.
fn two_ways(fail_at: Option<Sectors>) -> (Served, Vec<u8>, Arc<Counting>, Arc<Counting>) {
    let s = serve();
    let img = s.path("disk.img");
    let data = noise(SIZE as usize, 17);
    std::fs::write(&img, &data).unwrap();
    let fast = Counting::new(FileDevice::open(&img, false).unwrap(), fail_at);
    let slow_dev = FileDevice::open(&img, false).unwrap();
    slow_dev.set_inline(false);
    let slow = Counting::new(slow_dev, None);
    s.add("fast", fast.clone(), false);
    s.add("slow", slow.clone(), false);
    (s, data, fast, slow)
}

fn read(c: &NbdClient, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0xa5; len];
    c.read(off, &mut b)
        .unwrap_or_else(|e| panic!("read {off}+{len}: {e}"));
    b
}

/// Reads spliced and not: page-aligned large ones (spliced), the last MiB (the end of the
/// device), unaligned ones and ones larger than the pipe (bios), small ones (inline).
const RANGES: &[(u64, usize)] = &[
    (0, 1 << 20),
    (4096, 512 << 10),
    (SIZE - (1 << 20), 1 << 20),
    (SIZE - (256 << 10), 256 << 10),
    (512, 1 << 20),
    (0, 2 << 20),
    (12288, 4096),
    (SIZE - 512, 512),
];

#[test]
fn spliced_reads_match_pool_reads_in_every_reply_style() {
    let (s, data, fast, slow) = two_ways(None);
    let addr = NbdAddr::Unix(s.sock.clone());
    for extended in [false, true] {
        let f = if extended {
            NbdClient::connect_extended(&addr, "fast").unwrap()
        } else {
            NbdClient::connect_unix(&s.sock, "fast").unwrap()
        };
        let p = NbdClient::connect_unix(&s.sock, "slow").unwrap();
        assert_eq!(f.info().extended, extended);
        for &(off, len) in RANGES {
            let want = &data[off as usize..off as usize + len];
            assert!(
                read(&f, off, len) == want,
                "fast {off}+{len} ext={extended}"
            );
            assert!(read(&p, off, len) == want, "slow {off}+{len}");
        }
    }
    // The large aligned reads were spliced (3 per connection), the pool export never was.
    assert_eq!(fast.spliced.load(Ordering::SeqCst), 8);
    assert_eq!(slow.spliced.load(Ordering::SeqCst), 0);
    assert!(slow.bios.load(Ordering::SeqCst) >= 2 * RANGES.len());
    // Simple (non-structured) replies too, through libnbd.
    if udm_testkit::require_tool("nbdsh") {
        let script = format!(
            "h.set_request_structured_replies(False)\n\
             h.connect_uri({:?})\n\
             assert not h.get_structured_replies_negotiated()\n\
             import sys\n\
             sys.stdout.buffer.write(h.pread(1048576, 8192))\n",
            s.uri("fast")
        );
        let out = output(nbdsh().args(["-c", &script]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == data[8192..8192 + (1 << 20)]);
        assert_eq!(fast.spliced.load(Ordering::SeqCst), 9);
    }
}

#[test]
fn pipelined_large_and_small_reads_keep_their_data() {
    let (s, data, fast, _) = two_ways(None);
    let c = Arc::new(NbdClient::connect_unix(&s.sock, "fast").unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut want = Vec::new();
    for i in 0..64u64 {
        // Alternate spliced 1 MiB reads with small inline ones, all in flight at once.
        let (off, len) = if i % 2 == 0 {
            ((i * 4096 * 37) % (SIZE - (1 << 20)) / 4096 * 4096, 1 << 20)
        } else {
            ((i * 512 * 101) % (SIZE - 4096), 4096)
        };
        want.push((off, len));
        let tx = tx.clone();
        c.submit(
            Cmd::Read {
                offset: off,
                len: len as u32,
            },
            move |r| tx.send((i, r)).unwrap(),
        );
    }
    for _ in 0..64 {
        let (i, r) = rx.recv().unwrap();
        let (off, len) = want[i as usize];
        let got = r.unwrap_or_else(|e| panic!("read {i}: {e}"));
        assert!(
            got == data[off as usize..off as usize + len as usize],
            "read {i}"
        );
    }
    assert_eq!(fast.spliced.load(Ordering::SeqCst), 32);
}

#[test]
fn a_short_file_reads_as_zeroes_past_its_end_both_ways() {
    let (s, data, fast, _) = two_ways(None);
    // Cut the file below the devices' size after they were opened.
    let cut = SIZE - (100 << 10);
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.path("disk.img"))
        .unwrap()
        .set_len(cut)
        .unwrap();
    let f = NbdClient::connect_unix(&s.sock, "fast").unwrap();
    let p = NbdClient::connect_unix(&s.sock, "slow").unwrap();
    let off = SIZE - (1 << 20);
    let a = read(&f, off, 1 << 20);
    let b = read(&p, off, 1 << 20);
    let keep = (cut - off) as usize;
    assert!(a[..keep] == data[off as usize..cut as usize]);
    assert!(a[keep..].iter().all(|&x| x == 0));
    assert!(a == b);
    assert_eq!(fast.spliced.load(Ordering::SeqCst), 1);
}

#[test]
fn an_error_in_the_middle_of_a_spliced_read_fails_only_that_read() {
    let bad = 1 << 20;
    let (s, data, fast, _) = two_ways(Some(Sectors(bad / 512)));
    let f = NbdClient::connect_unix(&s.sock, "fast").unwrap();
    let mut b = vec![0; 1 << 20];
    let e = f.read(bad, &mut b).expect_err("the failed read");
    assert_eq!(e.errno(), libc::EIO);
    // The connection goes on, and no stale pipe data leaks into the next replies.
    for off in [2 << 20, 0, 3 << 20] {
        assert!(read(&f, off, 1 << 20) == data[off as usize..off as usize + (1 << 20)]);
    }
    assert!(read(&f, 8192, 4096) == data[8192..12288]);
    assert_eq!(fast.spliced.load(Ordering::SeqCst), 4);
}

#[test]
fn large_writes_through_recycled_buffers_land_whole() {
    let (s, _, _, _) = two_ways(None);
    let c = NbdClient::connect_unix(&s.sock, "slow").unwrap();
    // Different sizes, so recycled buffers shrink and grow; every byte must be the new one.
    let mut model = std::fs::read(s.path("disk.img")).unwrap();
    for (i, len) in [1usize << 20, 256 << 10, 768 << 10, 1 << 20, 96 << 10]
        .into_iter()
        .enumerate()
    {
        let off = (i as u64) * (1 << 20) + 4096;
        let d = noise(len, 100 + i as u64);
        c.write(off, &d, false).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&d);
    }
    c.flush().unwrap();
    assert!(std::fs::read(s.path("disk.img")).unwrap() == model);
    let f = NbdClient::connect_unix(&s.sock, "fast").unwrap();
    assert!(read(&f, 0, SIZE as usize / 2) == model[..SIZE as usize / 2]);
}

/// A device over a byte image that fails every read touching sector `bad` after filling
/// the first half of the caller's buffer (an error in the middle of a transfer), and reads
/// anything else from the image, completing on another thread (as the I/O pool does).
struct HalfFails {
    data: Arc<Vec<u8>>,
    bad: u64,
}

impl BlockDevice for HalfFails {
    fn submit(&self, mut bio: Bio) {
        let data = self.data.clone();
        let bad = self.bad;
        std::thread::spawn(move || {
            let off = (bio.sector.0 * 512) as usize;
            let len = bio.buf().len();
            if (bio.sector.0..bio.end().0).contains(&bad) {
                let half = len / 2;
                bio.buf_mut()[..half].copy_from_slice(&data[off..off + half]);
                return bio.complete(Err(udm_io::IoError::Io));
            }
            bio.buf_mut().copy_from_slice(&data[off..off + len]);
            bio.complete(Ok(()))
        });
    }
    fn size(&self) -> Sectors {
        Sectors(self.data.len() as u64 / 512)
    }
    fn id(&self) -> DevId {
        DevId::Path("half-fails".into())
    }
    fn limits(&self) -> Limits {
        Limits::default()
    }
}

#[test]
fn recycled_read_buffers_carry_only_their_own_reads() {
    let s = serve();
    let data = Arc::new(noise(SIZE as usize, 29));
    let bad = 3 << 20;
    s.add(
        "dev",
        Arc::new(HalfFails {
            data: data.clone(),
            bad: bad / 512,
        }),
        false,
    );
    for extended in [false, true] {
        let addr = NbdAddr::Unix(s.sock.clone());
        let c = if extended {
            NbdClient::connect_extended(&addr, "dev").unwrap()
        } else {
            NbdClient::connect_unix(&s.sock, "dev").unwrap()
        };
        // Lengths that shrink and grow the recycled buffers, at offsets whose data differs,
        // with failed reads in between (their buffers hold half a read, and go back to the
        // pool): every reply holds exactly its own range, every failure is an error.
        let reads: &[(u64, usize)] = &[
            (0, 1 << 20),
            (bad - 4096, 1 << 20),
            (1 << 20, 1 << 20),
            (bad, 64 << 10),
            (5 << 20, 512 << 10),
            (bad - (512 << 10), 768 << 10),
            (2 << 20, 768 << 10),
            (6 << 20, 1 << 20),
            (4096, 96 << 10),
            (SIZE - (1 << 20), 1 << 20),
        ];
        for &(off, len) in reads {
            let mut b = vec![0xa5; len];
            let r = c.read(off, &mut b);
            if (off..off + len as u64).contains(&bad) {
                assert_eq!(r.expect_err("the failed read").errno(), libc::EIO);
            } else {
                r.unwrap_or_else(|e| panic!("read {off}+{len}: {e}"));
                assert!(b == data[off as usize..off as usize + len], "{off}+{len}");
            }
        }
        // Pipelined: many large reads in flight share the pool.
        let c = Arc::new(c);
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..48u64 {
            let off = (i * 4096 * 53) % (SIZE - (1 << 20));
            let tx = tx.clone();
            c.submit(
                Cmd::Read {
                    offset: off,
                    len: 1 << 20,
                },
                move |r| tx.send((off, r)).unwrap(),
            );
        }
        for _ in 0..48 {
            let (off, r) = rx.recv().unwrap();
            match r {
                Err(e) => {
                    assert!((off..off + (1 << 20)).contains(&bad), "{off}: {e}");
                    assert_eq!(e.errno(), libc::EIO);
                }
                Ok(got) => assert!(got == data[off as usize..off as usize + (1 << 20)]),
            }
        }
    }
}

/// Writes spliced and not: large aligned and unaligned ones and ones at the end (spliced
/// where the device allows), one larger than the pipe, a small one, and a FUA one (bios).
const WRITES: &[(u64, usize, bool)] = &[
    (0, 1 << 20, false),
    (4096, 512 << 10, false),
    (512, 1 << 20, false),
    (SIZE - (1 << 20), 1 << 20, false),
    (SIZE - (256 << 10), 256 << 10, false),
    (0, 2 << 20, false),
    (12288, 4096, false),
    (2 << 20, 1 << 20, true),
];

#[test]
fn spliced_writes_land_as_pool_writes_in_every_request_style() {
    let (s, data, fast, slow) = two_ways(None);
    let addr = NbdAddr::Unix(s.sock.clone());
    let mut model = data;
    let mut seed = 1000;
    for extended in [false, true] {
        for name in ["fast", "slow"] {
            let c = if extended {
                NbdClient::connect_extended(&addr, name).unwrap()
            } else {
                NbdClient::connect_unix(&s.sock, name).unwrap()
            };
            for &(off, len, fua) in WRITES {
                seed += 1;
                let d = noise(len, seed);
                c.write(off, &d, fua)
                    .unwrap_or_else(|e| panic!("{name} write {off}+{len}: {e}"));
                model[off as usize..off as usize + len].copy_from_slice(&d);
                assert!(read(&c, off, len) == d, "{name} {off}+{len} ext={extended}");
            }
            c.flush().unwrap();
            assert!(
                std::fs::read(s.path("disk.img")).unwrap() == model,
                "{name} ext={extended}"
            );
        }
    }
    // Five spliced writes per connection to the fast export; the slow one refuses the
    // file range (its inline paths are off), so its payloads went from the pipe to bios.
    assert_eq!(fast.wspliced.load(Ordering::SeqCst), 10);
    assert_eq!(slow.wspliced.load(Ordering::SeqCst), 0);
}

#[test]
fn pipelined_large_and_small_writes_keep_their_data() {
    let (s, data, fast, _) = two_ways(None);
    let c = Arc::new(NbdClient::connect_unix(&s.sock, "fast").unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut model = data;
    let mut payloads = Vec::new();
    for i in 0..48u64 {
        // Alternate 256 KiB writes (the first 6 MiB, spliced) with 4 KiB ones (the last
        // 2 MiB), none overlapping, all in flight at once.
        let (off, len) = if i % 2 == 0 {
            ((i / 2) * (256 << 10), 256 << 10)
        } else {
            ((6 << 20) + (i / 2) * 8192 + 512, 4096)
        };
        let d = noise(len, 5000 + i);
        model[off as usize..off as usize + len].copy_from_slice(&d);
        payloads.push((off, d));
    }
    for (i, (off, d)) in payloads.iter().enumerate() {
        let tx = tx.clone();
        c.submit(
            Cmd::Write {
                offset: *off,
                data: d,
                fua: false,
            },
            move |r| tx.send((i, r.map(|_| ()))).unwrap(),
        );
    }
    for _ in 0..payloads.len() {
        let (i, r) = rx.recv().unwrap();
        r.unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    c.flush().unwrap();
    assert!(std::fs::read(s.path("disk.img")).unwrap() == model);
    assert_eq!(fast.wspliced.load(Ordering::SeqCst), 24);
}

#[test]
fn an_error_in_the_middle_of_a_spliced_write_fails_only_that_write() {
    let bad = 1 << 20;
    let (s, data, fast, _) = two_ways(Some(Sectors(bad / 512)));
    let f = NbdClient::connect_unix(&s.sock, "fast").unwrap();
    let e = f
        .write(bad, &noise(1 << 20, 9), false)
        .expect_err("the failed write");
    assert_eq!(e.errno(), libc::EIO);
    // The connection goes on: the next writes land whole and reads see them.
    let mut model = std::fs::read(s.path("disk.img")).unwrap();
    assert!(model[..bad as usize] == data[..bad as usize]);
    for (i, off) in [2u64 << 20, 0, 3 << 20].into_iter().enumerate() {
        let d = noise(1 << 20, 90 + i as u64);
        f.write(off, &d, false).unwrap();
        model[off as usize..off as usize + d.len()].copy_from_slice(&d);
        assert!(read(&f, off, 1 << 20) == d);
    }
    f.flush().unwrap();
    assert!(std::fs::read(s.path("disk.img")).unwrap() == model);
    assert_eq!(fast.wspliced.load(Ordering::SeqCst), 4);
}

#[test]
fn a_payload_sent_in_small_pieces_lands_whole() {
    // A client that sends a 1 MiB payload a kilobyte at a time (each its own socket
    // buffer): however the pipe fills, the write lands whole and the next request is read
    // from the right place.
    let (s, _, _, _) = two_ways(None);
    let mut c = go_to(&s, "fast", false);
    let d = noise(1 << 20, 77);
    request(&mut c, 1, 0, 7, 1 << 20, d.len() as u32);
    for piece in d.chunks(1000) {
        c.write_all(piece).unwrap();
    }
    assert_eq!(simple(&mut c), (0, 7));
    request(&mut c, 3, 0, 8, 0, 0); // flush
    assert_eq!(simple(&mut c), (0, 8));
    let img = std::fs::read(s.path("disk.img")).unwrap();
    assert!(img[1 << 20..2 << 20] == d[..]);
}
