//! The rest of `udm luks`: `open --type plain` (ciphertext checked with Python's
//! `cryptography`),
//! `resize` of an active mapping, and `luksHeaderBackup`/`luksHeaderRestore` exchanged with
//! real cryptsetup.

mod luks_common;
use luks_common::{raw_copy, raw_copy_into, real, s, udm, PBKDF2_FAST};

use std::path::{Path, PathBuf};
use std::process::Command;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const XTS_PY: &str = "import sys\nfrom cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\nk, t = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])\ne = Cipher(algorithms.AES(k), modes.XTS(t)).encryptor()\nsys.stdout.buffer.write(e.update(sys.stdin.buffer.read()) + e.finalize())\n";

/// True when Python's `cryptography` package is there (the independent AES-XTS).
fn have_py_xts() -> bool {
    Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// AES-XTS of one 512-byte sector by Python's `cryptography` (tweak = little-endian sector).
fn py_xts(key: &[u8], iv_sector: u64, plain: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&iv_sector.to_le_bytes());
    let mut c = Command::new("python3")
        .args(["-c", XTS_PY, &hex(key), &hex(&iv)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(plain).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    o.stdout
}

fn status(sock: &Path, name: &str) -> String {
    let (code, out, err) = udm(&["status", name], b"", Some(sock));
    assert_eq!(code, 0, "status {name}: {err}");
    out
}

#[test]
fn plain_open_matches_an_independent_xts() {
    if !udm_testkit::require_tool("qemu-img") || !have_py_xts() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = udm_testkit::image(d.path(), "plain.img", 4 << 20);
    let key: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    let kf = d.path().join("plain.key");
    std::fs::write(&kf, &key).unwrap();
    let daemon = udm_testkit::Daemon::start(Path::new(env!("CARGO_BIN_EXE_udm")));
    let sock = daemon.socket.as_path();
    let a = [
        "open",
        "--type",
        "plain",
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        "512",
        "--key-file",
        s(&kf),
        "--offset",
        "16",
        "--skip",
        "3",
        s(&img),
        "p1",
    ];
    let (code, _, err) = udm(&a, b"", Some(sock));
    assert_eq!(code, 0, "{err}");
    let st = status(sock, "p1");
    for want in [
        "type:    PLAIN",
        "cipher:  aes-xts-plain64",
        "keysize: 512 bits",
        "offset:  16 sectors",
        "skipped: 3 sectors",
        &format!("size:    {} sectors", (4 << 20) / 512 - 16),
    ] {
        assert!(st.contains(want), "{want:?} in {st}");
    }
    // Write 8 sectors through the mapping; the file holds AES-XTS with tweak skip + n.
    let plain: Vec<u8> = (0..4096u32).map(|i| (i * 7 + i / 512) as u8).collect();
    let src = d.path().join("src.raw");
    std::fs::write(&src, &plain).unwrap();
    raw_copy_into(s(&src), &daemon.uri("p1"));
    let disk = std::fs::read(&img).unwrap();
    for n in [0u64, 5] {
        let p = &plain[n as usize * 512..][..512];
        let at = (16 + n) as usize * 512;
        assert_eq!(
            &disk[at..at + 512],
            &py_xts(&key, 3 + n, p)[..],
            "sector {n}"
        );
    }
    // Reopened with the same key file the data reads back; a passphrase gets the defaults.
    let (code, _, err) = udm(&["close", "p1"], b"", Some(sock));
    assert_eq!(code, 0, "{err}");
    let mut b = a;
    b[14] = "p2";
    assert_eq!(udm(&b, b"", Some(sock)).0, 0);
    let back = d.path().join("back.raw");
    raw_copy(&daemon.uri("p2"), s(&back));
    assert_eq!(&std::fs::read(&back).unwrap()[..4096], &plain[..]);
    let (code, _, err) = udm(
        &["open", "--type", "plain", s(&img), "p3"],
        b"a passphrase\n",
        Some(sock),
    );
    assert_eq!(code, 0, "{err}");
    let st = status(sock, "p3");
    assert!(
        st.contains("cipher:  aes-cbc-essiv:sha256") && st.contains("keysize: 256 bits"),
        "{st}"
    );
}

#[test]
fn resize_follows_size_and_the_backing_file() {
    let d = tempfile::tempdir().unwrap();
    let img = luks_common::format(d.path(), "r.img", "udm", &PBKDF2_FAST, b"secret");
    let daemon = udm_testkit::Daemon::start(Path::new(env!("CARGO_BIN_EXE_udm")));
    let sock = daemon.socket.as_path();
    let (code, _, err) = udm(&["resize", "r1"], b"", Some(sock));
    assert_eq!((code, err.trim()), (4, "Device r1 is not active."));
    let (code, _, err) = udm(
        &["open", s(&img), "r1", "--key-file", "-"],
        b"secret",
        Some(sock),
    );
    assert_eq!(code, 0, "{err}");
    assert!(status(sock, "r1").contains("size:    16384 sectors"));
    let (code, _, err) = udm(&["resize", "r1", "--size", "8192"], b"", Some(sock));
    assert_eq!(code, 0, "{err}");
    assert!(status(sock, "r1").contains("size:    8192 sectors"));
    // Without --size it takes the whole device again. (The daemon keeps the size a backing
    // file had when it was first opened, so growing an open file is not seen.)
    let (code, _, err) = udm(&["resize", "/dev/mapper/r1"], b"", Some(sock));
    assert_eq!(code, 0, "{err}");
    let st = status(sock, "r1");
    assert!(st.contains("size:    16384 sectors"), "{st}");
    assert!(st.contains("type:    LUKS2"), "{st}");
}

/// A LUKS volume by `who` with passphrase "secret".
fn volume(dir: &Path, name: &str, who: &str, ty: &str) -> PathBuf {
    let mut opts = vec!["--type", ty];
    opts.extend(PBKDF2_FAST);
    luks_common::format(dir, name, who, &opts, b"secret")
}

#[test]
fn header_backup_and_restore_with_cryptsetup() {
    if !udm_testkit::require_tool("cryptsetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    for (who, ty) in [
        ("cryptsetup", "luks1"),
        ("cryptsetup", "luks2"),
        ("udm", "luks1"),
        ("udm", "luks2"),
    ] {
        let what = format!("{who} {ty}");
        let img = volume(d.path(), &format!("{who}-{ty}.img"), who, ty);
        let ours = d.path().join(format!("{who}-{ty}.udm-backup"));
        let theirs = d.path().join(format!("{who}-{ty}.cs-backup"));
        let backup = [
            "luksHeaderBackup",
            s(&img),
            "--header-backup-file",
            s(&ours),
        ];
        let (code, _, err) = udm(&backup, b"", None);
        assert_eq!(code, 0, "{what}: {err}");
        let (code, _, err) = real(&[&backup[..3], &[s(&theirs)]].concat(), b"");
        assert_eq!(code, 0, "{what}: {err}");
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "{what}: the backups differ"
        );
        let (code, _, err) = udm(&backup, b"", None);
        assert_eq!(code, 5, "{what}");
        assert!(err.contains("already exists"), "{what}: {err}");
        // Wipe the header: nobody opens it; udm restores cryptsetup's backup and the other
        // way round.
        let wipe = |img: &Path| {
            let mut b = std::fs::read(img).unwrap();
            b[..1 << 20].fill(0);
            std::fs::write(img, &b).unwrap();
        };
        for (restorer, backup) in [("udm", &theirs), ("cryptsetup", &ours)] {
            wipe(&img);
            assert_ne!(real(&["isLuks", s(&img)], b"").0, 0, "{what}");
            let a = [
                "luksHeaderRestore",
                "-q",
                s(&img),
                "--header-backup-file",
                s(backup),
            ];
            let (code, _, err) = if restorer == "udm" {
                udm(&a, b"", None)
            } else {
                real(&a, b"")
            };
            assert_eq!(code, 0, "{what}: {restorer} restore: {err}");
            let (code, _, err) = real(
                &["open", "--test-passphrase", s(&img), "--key-file", "-"],
                b"secret",
            );
            assert_eq!(code, 0, "{what} restored by {restorer}: {err}");
        }
        // Not a LUKS backup: refused, the device untouched.
        let junk = d.path().join("junk");
        std::fs::write(&junk, vec![1u8; 1 << 20]).unwrap();
        let before = std::fs::read(&img).unwrap();
        let (code, _, _) = udm(
            &[
                "luksHeaderRestore",
                "-q",
                s(&img),
                "--header-backup-file",
                s(&junk),
            ],
            b"",
            None,
        );
        assert_eq!(code, 1, "{what}");
        assert!(std::fs::read(&img).unwrap() == before, "{what}");
    }
}
