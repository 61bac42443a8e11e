//! `udm verity` against real veritysetup: the same root hash, output and byte-identical hash
//! and FEC devices for the same inputs; each tool verifies the other's trees; a flipped byte
//! anywhere gives the same verdict and message from both; open/status/close via the daemon.

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use udm_testkit::rng::pseudo;
use udm_testkit::tool::root_hash;

/// (exit code, stdout, stderr) of the built udm run as `veritysetup ARGS`.
fn udm(args: &[&str], socket: Option<&Path>) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_udm"));
    udm_testkit::tool::run_as(bin, "veritysetup", args, b"", socket)
}

/// The same with the real veritysetup.
fn real(args: &[&str]) -> (i32, String, String) {
    udm_testkit::tool::run_tool("veritysetup", args, b"")
}

/// `veritysetup ARGS` by `who`: "real" or "udm" (without a daemon).
fn by(who: &str, args: &[&str]) -> (i32, String, String) {
    match who {
        "real" => real(args),
        "udm" => udm(args, None),
        _ => panic!("which veritysetup: {who}?"),
    }
}

/// A temporary directory holding `data.img` with `bytes`: (the directory, the file).
fn data_file(bytes: Vec<u8>) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data.img");
    std::fs::write(&data, bytes).unwrap();
    (d, data)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const UUID: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0";

/// Format the same data with both tools (options `opts`, FEC when `fec`) and check outputs and
/// files are identical. Returns the directory and the root hash.
fn same_format(data: &[u8], opts: &[&str], fec: bool) -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    let data_path = d.path().join("data.img");
    std::fs::write(&data_path, data).unwrap();
    let mut outs = Vec::new();
    for who in ["real", "udm"] {
        let hash = d.path().join(format!("{who}.hash"));
        let fecp = d.path().join(format!("{who}.fec"));
        let mut a = vec!["format", s(&data_path), s(&hash)];
        a.extend_from_slice(opts);
        if fec {
            a.extend_from_slice(&["--fec-device", s(&fecp)]);
        }
        let (code, out, err) = by(who, &a);
        assert_eq!(code, 0, "{who} format {opts:?} failed: {err}");
        outs.push(out.replace(s(&hash), "HASH"));
    }
    assert_eq!(outs[0], outs[1], "format output differs for {opts:?}");
    let read = |n: &str| std::fs::read(d.path().join(n)).unwrap();
    assert!(
        read("real.hash") == read("udm.hash"),
        "hash device differs for {opts:?}"
    );
    if fec {
        assert!(
            read("real.fec") == read("udm.fec"),
            "FEC device differs for {opts:?}"
        );
    }
    let root = root_hash(&outs[1]);
    (d, root)
}

#[test]
fn format_is_byte_identical_to_veritysetup() {
    if !udm_testkit::require_tool("veritysetup") {
        return;
    }
    let salt = ["--salt", "5eed00112233445566778899aabbccddeeff"];
    let uuid = ["--uuid", UUID];
    let cases: Vec<(usize, Vec<&str>, bool)> = vec![
        (1 << 20, vec![], false),
        (
            300 << 10,
            vec![
                "--data-block-size",
                "512",
                "--hash-block-size",
                "512",
                "-h",
                "sha1",
            ],
            false,
        ),
        (
            256 << 10,
            vec![
                "--data-block-size",
                "1024",
                "--hash",
                "sha512",
                "--no-superblock",
            ],
            false,
        ),
        (
            200 << 10,
            vec!["--hash-block-size", "512", "--format", "0"],
            false,
        ),
        (4096, vec!["--no-superblock"], false), // a single block: no tree levels
        (777 << 12, vec!["--fec-roots", "2"], true),
        (300 << 12, vec!["--fec-roots", "7", "--no-superblock"], true),
        (64 << 10, vec!["--data-blocks", "10"], false),
    ];
    for (i, (len, extra, fec)) in cases.into_iter().enumerate() {
        let mut opts: Vec<&str> = extra;
        opts.extend_from_slice(&salt);
        if !opts.contains(&"--no-superblock") {
            opts.extend_from_slice(&uuid);
        }
        same_format(&pseudo(len, i as u64 + 1), &opts, fec);
    }
    // No salt at all.
    same_format(
        &pseudo(50 << 12, 9),
        &["--salt", "-", "--uuid", UUID],
        false,
    );
}

#[test]
fn hash_offset_on_the_data_device_is_identical() {
    if !udm_testkit::require_tool("veritysetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mut img = pseudo(100 << 12, 5);
    img.resize(120 << 12, 0);
    let mut roots = Vec::new();
    for who in ["real", "udm"] {
        let p = d.path().join(format!("{who}.img"));
        std::fs::write(&p, &img).unwrap();
        let a = [
            "format",
            s(&p),
            s(&p),
            "--data-blocks",
            "100",
            "--hash-offset",
            "409600",
            "--salt",
            "abcd",
            "--uuid",
            UUID,
        ];
        let (code, out, err) = by(who, &a);
        assert_eq!(code, 0, "{err}");
        roots.push(out.replace(s(&p), "IMG"));
    }
    assert_eq!(roots[0], roots[1]);
    assert!(
        std::fs::read(d.path().join("real.img")).unwrap()
            == std::fs::read(d.path().join("udm.img")).unwrap()
    );
    // Both verify it.
    let p = d.path().join("udm.img");
    let root = root_hash(&roots[1]);
    let a = ["verify", s(&p), s(&p), &root, "--hash-offset", "409600"];
    assert_eq!(real(&a).0, 0);
    assert_eq!(udm(&a, None).0, 0);
}

#[test]
fn each_tool_verifies_the_others_trees_and_dump_agrees() {
    if !udm_testkit::require_tool("veritysetup") {
        return;
    }
    let (d, data) = data_file(pseudo(500 << 12, 77));
    for (maker, checker) in [("real", "udm"), ("udm", "real")] {
        let hash = d.path().join(format!("{maker}.hash"));
        let a = ["format", s(&data), s(&hash), "--hash", "sha512"];
        let (code, out, _) = by(maker, &a);
        assert_eq!(code, 0);
        let root = root_hash(&out);
        let v = ["verify", s(&data), s(&hash), &root];
        let got = by(checker, &v);
        assert_eq!(got.0, 0, "{checker} rejects {maker}'s tree: {}", got.2);
        let dump = ["dump", s(&hash)];
        assert_eq!(real(&dump), udm(&dump, None));
    }
}

#[test]
fn errors_match_veritysetup() {
    if !udm_testkit::require_tool("veritysetup") {
        return;
    }
    let (d, data) = data_file(pseudo(100 << 12, 3));
    let hx = d.path().join("hx");
    let cases: Vec<Vec<&str>> = vec![
        vec!["format", s(&data), s(&hx), "--data-block-size", "3000"],
        vec!["format", s(&data), s(&hx), "--salt", "zz"],
        vec!["format", s(&data), s(&hx), "-h", "md5x"],
        vec!["format", s(&data), s(&hx), "--format", "3"],
        vec!["format", s(&data), s(&hx), "--hash-offset", "100"],
        vec!["format", s(&data), s(&hx), "--data-blocks", "1000"],
        vec!["format", s(&data)],
        vec!["bogus"],
        vec![],
        vec!["verify", s(&data), s(&hx)],
        vec!["dump", s(&data)],
        vec!["verify", s(&data), "/nonexistent", "00"],
    ];
    for a in cases {
        let _ = std::fs::remove_file(&hx);
        let r = real(&a);
        let _ = std::fs::remove_file(&hx);
        let u = udm(&a, None);
        assert_eq!(u.0, r.0, "exit code of {a:?}: {}", u.2);
        assert_eq!(u.2, r.2, "stderr of {a:?}");
    }
}

#[test]
fn absurd_superblocks_and_sizes_match_veritysetup() {
    if !udm_testkit::require_tool("veritysetup") {
        return;
    }
    let (d, data) = data_file(pseudo(100 << 12, 4));
    let hash = d.path().join("hash.img");
    let (_, out, _) = udm(
        &["format", s(&data), s(&hash), "--salt", "00", "--uuid", UUID],
        None,
    );
    let root = root_hash(&out);
    let good = std::fs::read(&hash).unwrap();
    // data_blocks (offset 72) overflowing, larger than the data, zero; salt_size too big; a
    // bad hash block size.
    for (off, bytes) in [
        (72usize, (1u64 << 60).to_le_bytes().to_vec()),
        (72, 1000u64.to_le_bytes().to_vec()),
        (72, 0u64.to_le_bytes().to_vec()),
        (80, 300u16.to_le_bytes().to_vec()),
        (68, 3000u32.to_le_bytes().to_vec()),
    ] {
        let mut b = good.clone();
        b[off..off + bytes.len()].copy_from_slice(&bytes);
        std::fs::write(&hash, &b).unwrap();
        for a in [
            vec!["verify", s(&data), s(&hash), &root],
            vec!["dump", s(&hash)],
        ] {
            let u = udm(&a, None);
            let r = real(&a);
            assert_eq!(
                (u.0, &u.2),
                (r.0, &r.2),
                "{a:?} with bytes {off}: {bytes:?}"
            );
            assert_eq!(u.1.replace(s(&hash), "H"), r.1.replace(s(&hash), "H"));
        }
    }
    std::fs::write(&hash, &good).unwrap();
    for blocks in ["18446744073709551615", "4503599627370496", "0"] {
        let a = [
            "format",
            s(&data),
            s(&hash),
            "--data-blocks",
            blocks,
            "--salt",
            "00",
            "--uuid",
            UUID,
        ];
        let (u, r) = (udm(&a, None), real(&a));
        assert_eq!((u.0, &u.2), (r.0, &r.2), "--data-blocks {blocks}");
    }
}

#[derive(Debug)]
struct Flip {
    target: u8,
    pos: u64,
    mask: u8,
}

fn flip(p: &Path, pos: u64, mask: u8) {
    let mut v = std::fs::read(p).unwrap();
    let i = (pos % v.len() as u64) as usize;
    v[i] ^= mask;
    std::fs::write(p, v).unwrap();
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(32))]
    /// Flip one byte of the data, the tree or the superblock: udm verify and veritysetup
    /// verify give the same exit code and the same messages.
    #[test]
    fn any_flip_same_verdict_as_veritysetup(f in (0u8..3, any::<u64>(), 1u8..=255)
        .prop_map(|(target, pos, mask)| Flip { target, pos, mask })) {
        if !udm_testkit::require_tool("veritysetup") {
            return Ok(());
        }
        let (d, data) = data_file(pseudo(300 << 10, 11));
        let hash = d.path().join("hash.img");
        let (code, out, _) = udm(&["format", s(&data), s(&hash), "--data-block-size", "1024",
            "--hash-block-size", "1024", "--salt", "01", "--uuid", UUID], None);
        prop_assert_eq!(code, 0);
        let root = root_hash(&out);
        match f.target {
            0 => flip(&data, f.pos, f.mask),
            1 => flip(&hash, 1024 + f.pos % (std::fs::metadata(&hash).unwrap().len() - 1024), f.mask),
            _ => flip(&hash, f.pos % 512, f.mask),
        }
        let v = ["verify", s(&data), s(&hash), &root];
        let (r, u) = (real(&v), udm(&v, None));
        prop_assert_eq!(&u, &r);
        if f.target < 2 {
            prop_assert_ne!(u.0, 0, "a flipped data or tree byte must fail verification");
        }
    }
}

fn udm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

#[test]
fn open_status_close_through_the_daemon() {
    let mut dmn = udm_testkit::Daemon::start(&udm_bin());
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data.img");
    let hash = d.path().join("hash.img");
    let fec = d.path().join("fec.img");
    std::fs::write(&data, pseudo(64 << 12, 21)).unwrap();
    let (code, out, err) = udm(
        &[
            "format",
            s(&data),
            s(&hash),
            "--salt",
            "0011",
            "--uuid",
            UUID,
            "--fec-device",
            s(&fec),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let root = root_hash(&out);
    let sock = Some(dmn.socket.as_path());
    let (code, _, err) = udm(
        &[
            "open",
            s(&data),
            "vt",
            s(&hash),
            &root,
            "--fec-device",
            s(&fec),
            "--ignore-zero-blocks",
        ],
        sock,
    );
    assert_eq!(code, 0, "{err}\n{}", dmn.log());
    let (code, _, err) = udm(&["open", s(&data), "vt", s(&hash), &root], sock);
    assert_eq!((code, err.as_str()), (5, "Device vt already exists.\n"));
    let (code, out, _) = udm(&["status", "vt"], sock);
    assert_eq!(code, 0);
    let want = format!(
        "/dev/mapper/vt is active.
  type:        VERITY
  status:      verified
  hash type:   1
  data block:  4096
  hash block:  4096
  hash name:   sha256
  salt:        0011
  data device: {data}
  size:        512 sectors
  mode:        readonly
  hash device: {hash}
  hash offset: 8 sectors
  FEC device:  {fec}
  FEC offset:  0 sectors
  FEC roots:   2
  root hash:   {root}
  flags:       ignore_zero_blocks 
",
        data = std::fs::canonicalize(&data).unwrap().display(),
        hash = std::fs::canonicalize(&hash).unwrap().display(),
        fec = std::fs::canonicalize(&fec).unwrap().display(),
    );
    assert_eq!(out, want);
    // Reads over NBD: the whole image; then a corrupted block is corrected through FEC on
    // `vt`, and fails (status `corrupted`) on a second device without FEC.
    let content = std::fs::read(&data).unwrap();
    let nbd = udm_nbd::NbdClient::connect_uri(&dmn.uri("vt")).unwrap();
    let mut got = vec![0u8; content.len()];
    nbd.read(0, &mut got).unwrap();
    assert!(got == content);
    let mut bad = content.clone();
    bad[5 * 4096 + 7] ^= 0x20;
    std::fs::write(&data, &bad).unwrap();
    let mut blk = vec![0u8; 4096];
    nbd.read(5 * 4096, &mut blk).unwrap();
    assert!(blk[..] == content[5 * 4096..6 * 4096]);
    let _ = nbd.disconnect();
    let (code, _, err) = udm(&["open", s(&data), "plain", s(&hash), &root], sock);
    assert_eq!(code, 0, "{err}");
    let nbd = udm_nbd::NbdClient::connect_uri(&dmn.uri("plain")).unwrap();
    assert!(nbd.read(5 * 4096, &mut blk).is_err());
    nbd.read(6 * 4096, &mut blk).unwrap();
    let _ = nbd.disconnect();
    let (_, out, _) = udm(&["status", "plain"], sock);
    assert!(out.contains("  status:      corrupted\n"), "{out}");
    assert_eq!(udm(&["close", "plain"], sock).0, 0);
    std::fs::write(&data, &content).unwrap();
    assert_eq!(udm(&["close", "vt"], sock).0, 0);
    let (code, out, _) = udm(&["status", "vt"], sock);
    assert_eq!((code, out.as_str()), (4, "/dev/mapper/vt is inactive.\n"));
    let (code, _, err) = udm(&["close", "vt"], sock);
    assert_eq!((code, err.as_str()), (4, "Device vt is not active.\n"));
    // Data and tree on one file without a superblock, options from the command line.
    let one = d.path().join("one.img");
    let mut img = pseudo(40 << 12, 8);
    img.resize(48 << 12, 0);
    std::fs::write(&one, &img).unwrap();
    let common = [
        "--no-superblock",
        "--data-blocks",
        "40",
        "--hash-offset",
        "163840",
        "--salt",
        "ab",
        "--hash",
        "sha1",
        "--data-block-size",
        "1024",
    ];
    let mut a = vec!["format", s(&one), s(&one)];
    a.extend_from_slice(&common);
    let (code, out, err) = udm(&a, None);
    assert_eq!(code, 0, "{err}");
    let root = root_hash(&out);
    let mut a = vec![
        "open",
        s(&one),
        "one",
        s(&one),
        &root,
        "--check-at-most-once",
    ];
    a.extend_from_slice(&common);
    let (code, _, err) = udm(&a, sock);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = udm(&["status", "one"], sock);
    assert!(out.contains("  hash offset: 320 sectors\n"), "{out}");
    assert!(out.contains("  size:        80 sectors\n"), "{out}");
    assert!(
        out.ends_with("  flags:       check_at_most_once\n"),
        "{out}"
    );
    assert_eq!(udm(&["remove", "one"], sock).0, 0);
    dmn.stop();
}
