//! Snapshots stacked on other targets: the origin is a thin device in a thin pool, the COW
//! is a remote `nbd://` export served by a second udm daemon over TCP. Seeded 4 KiB writes
//! to the origin (through `snapshot-origin`) and to the snapshot are checked against a model
//! of both devices; the persistent COW then reopens with the same contents, the dump on the
//! server's file lists the exceptions the status accounts for, and a merge into the thin
//! origin leaves it equal to the snapshot.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use udm_nbd::NbdClient;
use udm_testkit::rng::XorShift;
use udm_testkit::Daemon;

const BLOCKS: u64 = 1024; // 4 KiB blocks: a 4 MiB thin origin
const SECTORS: u64 = BLOCKS * 8;
const CHUNK: u64 = 8;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> String {
    udm_testkit::run(Command::new(bin()).args(args).env("UDM_SOCKET", &d.socket))
}

fn read_all(c: &NbdClient) -> Vec<u8> {
    let mut out = vec![0u8; (BLOCKS * 4096) as usize];
    for (i, piece) in out.chunks_mut(1 << 20).enumerate() {
        c.read((i as u64) << 20, piece).unwrap();
    }
    out
}

fn block(op: usize, b: u64) -> Vec<u8> {
    udm_testkit::rng::pseudo(4096, (op as u64) << 20 | b | 1 << 60)
}

/// `(allocated, metadata)` sectors from a snapshot status line.
fn alloc(st: &str) -> (u64, u64) {
    let w: Vec<&str> = st.split_whitespace().collect();
    (
        w[3].split('/').next().unwrap().parse().unwrap(),
        w[4].parse().unwrap(),
    )
}

/// Compare a device with its model block by block, naming the first block that differs.
fn same(got: &[u8], want: &[u8], what: &str) {
    if let Some(b) =
        (0..BLOCKS as usize).find(|b| got[b * 4096..][..4096] != want[b * 4096..][..4096])
    {
        panic!("{what}: block {b} differs from the model");
    }
}

#[test]
fn snapshot_of_a_thin_origin_with_its_cow_on_a_remote_nbd_leg() {
    let seed = udm_testkit::prop::seed();
    eprintln!("snapshot stacked: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::new(seed);
    let work = tempfile::tempdir().unwrap();

    // The COW's home: a linear export over a file on a second daemon, reached over TCP.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let server = Daemon::start_with(
        bin(),
        &["--no-fuse", "--nbd-insecure", "--nbd-listen", &listen],
    );
    let cow_img = udm_testkit::image(work.path(), "cow.img", 8 << 20);
    server.create(
        "cowleg",
        &format!("0 {} linear {} 0", 8 << 11, cow_img.display()),
    );
    let cow = format!("nbd://{listen}/cowleg");
    let t = Instant::now();
    while NbdClient::connect_uri(&cow).is_err() {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    // The origin: thin device 0 in a pool of 64 KiB blocks, filled with a seeded pattern.
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    let meta = udm_testkit::image(work.path(), "meta.img", 4 << 20);
    let data = udm_testkit::image(work.path(), "data.img", 32 << 20);
    d.create(
        "pool",
        &format!(
            "0 65536 thin-pool {} {} 128 1024",
            meta.display(),
            data.display()
        ),
    );
    udm(&d, &["message", "pool", "0", "create_thin", "0"]);
    d.create("t", &format!("0 {SECTORS} thin /dev/mapper/pool 0"));
    let base = udm_testkit::rng::pseudo((BLOCKS * 4096) as usize, seed);
    {
        let c = NbdClient::connect_uri(&d.uri("t")).unwrap();
        for (i, piece) in base.chunks(1 << 20).enumerate() {
            c.write((i as u64) << 20, piece, false).unwrap();
        }
        c.flush().unwrap();
    }

    let snap_table = format!("0 {SECTORS} snapshot /dev/mapper/t {cow} P {CHUNK}");
    d.create("s", &snap_table);
    d.create("o", &format!("0 {SECTORS} snapshot-origin /dev/mapper/t"));
    let (o, s) = (
        NbdClient::connect_uri(&d.uri("o")).unwrap(),
        NbdClient::connect_uri(&d.uri("s")).unwrap(),
    );
    let (mut orig_want, mut snap_want) = (base.clone(), base.clone());
    for i in 0..400 {
        let (to_snap, b) = (rng.below(2) == 0, rng.below(BLOCKS));
        let (c, want) = if to_snap {
            (&s, &mut snap_want)
        } else {
            (&o, &mut orig_want)
        };
        let data = block(i, b);
        c.write(b * 4096, &data, false).unwrap();
        want[(b * 4096) as usize..][..4096].copy_from_slice(&data);
        if i % 50 == 49 {
            let mut got = vec![0u8; 4096];
            let other = rng.below(BLOCKS);
            s.read(other * 4096, &mut got).unwrap();
            assert!(
                got[..] == snap_want[(other * 4096) as usize..][..4096],
                "op {i}"
            );
        }
    }
    o.flush().unwrap();
    s.flush().unwrap();
    same(&read_all(&o), &orig_want, "origin (thin)");
    same(&read_all(&s), &snap_want, "snapshot (COW on NBD)");
    drop((o, s));

    // The exceptions went over the wire: the server's file holds a valid COW with as many
    // exceptions as the status accounts data chunks for.
    let st = udm(&d, &["status", "s"]);
    let (a, m) = alloc(&st);
    assert!(a > m, "{st}");
    let dump = udm_testkit::run(Command::new(bin()).args([
        "snapshot",
        "dump",
        &cow_img.display().to_string(),
    ]));
    assert!(
        dump.starts_with("magic 0x70416e53 valid 1 version 1 chunk_size 8\n")
            && dump.ends_with(&format!("\n{} exceptions\n", (a - m) / CHUNK)),
        "{st}\n{dump}"
    );

    // Reopen the persistent COW from the remote leg: same contents.
    udm(&d, &["remove", "o"]);
    udm(&d, &["remove", "s"]);
    d.create("s", &snap_table);
    let s = NbdClient::connect_uri(&d.uri("s")).unwrap();
    same(&read_all(&s), &snap_want, "reopened snapshot");
    drop(s);
    udm(&d, &["remove", "s"]);

    // Merge the remote COW back into the thin origin.
    d.create(
        "m",
        &format!("0 {SECTORS} snapshot-merge /dev/mapper/t {cow} P {CHUNK}"),
    );
    let t = Instant::now();
    loop {
        let st = udm(&d, &["status", "m"]);
        let (a, m) = alloc(&st);
        if a == m {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "merge stuck: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mc = NbdClient::connect_uri(&d.uri("m")).unwrap();
    same(&read_all(&mc), &snap_want, "merged device");
    drop(mc);
    udm(&d, &["remove", "m"]);
    let tc = NbdClient::connect_uri(&d.uri("t")).unwrap();
    same(&read_all(&tc), &snap_want, "thin origin after the merge");
}
