//! `udm luks` against real cryptsetup and qemu: volumes made by `cryptsetup luksFormat`
//! (LUKS1/LUKS2, pbkdf2/argon2id) open in udm; luksDump, isLuks, luksUUID and the volume key
//! match cryptsetup's; wrong passphrases fail as cryptsetup does; damaged headers fall back
//! to the secondary copy; data written by qemu's LUKS driver reads back through udm and back.

mod luks_common;
use luks_common::{qemu_img, raw_copy, raw_copy_into, real, s, udm};

use std::path::{Path, PathBuf};

/// A 24 MiB image formatted by cryptsetup with `opts`, passphrase "secret" (key file on stdin).
fn cs_format(dir: &Path, name: &str, opts: &[&str]) -> PathBuf {
    luks_common::format(dir, name, "cryptsetup", opts, b"secret")
}

const KINDS: [(&str, &[&str]); 4] = [
    (
        "luks1",
        &["--type", "luks1", "--pbkdf-force-iterations", "1000"],
    ),
    (
        "luks2-argon2id",
        &[
            "--type",
            "luks2",
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "64",
            "--pbkdf-force-iterations",
            "4",
        ],
    ),
    (
        "luks2-pbkdf2",
        &[
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--sector-size",
            "512",
        ],
    ),
    (
        "luks2-argon2i-cbc",
        &[
            "--type",
            "luks2",
            "--pbkdf",
            "argon2i",
            "--pbkdf-memory",
            "32",
            "--pbkdf-force-iterations",
            "4",
            "--cipher",
            "aes-cbc-essiv:sha256",
            "--key-size",
            "256",
            "--hash",
            "sha512",
        ],
    ),
];

#[test]
fn cryptsetup_volumes_unlock_and_dump_the_same() {
    if !udm_testkit::require_tool("cryptsetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    for (name, opts) in KINDS {
        let img = cs_format(d.path(), name, opts);
        let p = s(&img);
        // Right and wrong passphrases, from a key file on stdin and as a line of stdin.
        let (code, _, err) = udm(
            &["open", "--test-passphrase", p, "--key-file", "-"],
            b"secret",
            None,
        );
        assert_eq!(code, 0, "{name}: {err}");
        let (code, _, err) = udm(&["open", "--test-passphrase", p], b"secret\n", None);
        assert_eq!(code, 0, "{name}: {err}");
        let want = real(
            &["open", "--test-passphrase", p, "--key-file", "-"],
            b"wrong",
        );
        let got = udm(
            &["open", "--test-passphrase", p, "--key-file", "-"],
            b"wrong",
            None,
        );
        assert_eq!(got, want, "{name}: wrong passphrase");
        assert_eq!(got.0, 2);
        // Dumps, UUID, isLuks.
        for args in [
            vec!["luksDump", p],
            vec!["luksUUID", p],
            vec!["isLuks", p],
            vec!["isLuks", "--type", "luks1", p],
            vec!["luksDump", "--dump-volume-key", "-q", "--key-file", "-", p],
        ] {
            assert_eq!(
                udm(&args, b"secret", None),
                real(&args, b"secret"),
                "{name}: {args:?}"
            );
        }
    }
    // Not LUKS at all.
    let plain = udm_testkit::image(d.path(), "zero.img", 1 << 20);
    for args in [vec!["isLuks", s(&plain)], vec!["luksUUID", s(&plain)]] {
        assert_eq!(udm(&args, b"", None).0, real(&args, b"").0, "{args:?}");
    }
}

#[test]
fn damaged_luks2_headers() {
    if !udm_testkit::require_tool("cryptsetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = cs_format(d.path(), "l2.img", KINDS[2].1);
    let p = s(&img);
    let before = std::fs::read(&img).unwrap();
    // Primary damaged (its JSON): the secondary opens it.
    let mut b = before.clone();
    b[4096 + 10] ^= 0xff;
    std::fs::write(&img, &b).unwrap();
    let (code, _, err) = udm(
        &["open", "--test-passphrase", p, "--key-file", "-"],
        b"secret",
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(&img).unwrap(),
        b,
        "a test-passphrase changed the disk"
    );
    // Both damaged: a clear error, exit 1, nothing written.
    b[16384 + 4096 + 10] ^= 0xff;
    std::fs::write(&img, &b).unwrap();
    let (code, _, err) = udm(
        &["open", "--test-passphrase", p, "--key-file", "-"],
        b"secret",
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("is not a valid LUKS device"), "{err}");
    assert_eq!(std::fs::read(&img).unwrap(), b);
    // A truncated image.
    std::fs::write(&img, &before[..3000]).unwrap();
    let (code, _, _) = udm(&["luksDump", p], b"", None);
    assert_eq!(code, 1);
}

#[test]
fn qemu_and_udm_read_each_others_data() {
    for t in ["cryptsetup", "qemu-img"] {
        if !udm_testkit::require_tool(t) {
            return;
        }
    }
    for who in ["cryptsetup", "udm"] {
        qemu_round_trip(who);
    }
}

/// qemu writes into a LUKS1 volume formatted by `who`, udm reads it; udm writes, qemu reads.
fn qemu_round_trip(who: &str) {
    let d = tempfile::tempdir().unwrap();
    let img = luks_common::format(d.path(), "q.img", who, KINDS[0].1, b"secret");
    let plain: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let plain_path = d.path().join("plain.raw");
    std::fs::write(&plain_path, &plain).unwrap();
    let secret = "secret,id=s0,data=secret";
    // qemu writes plaintext into the LUKS1 volume.
    qemu_img(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "--object",
        secret,
        "--target-image-opts",
        s(&plain_path),
        &format!("driver=luks,key-secret=s0,file.filename={}", s(&img)),
    ]);
    // udm opens it and reads it over NBD.
    let daemon = udm_testkit::Daemon::start(Path::new(env!("CARGO_BIN_EXE_udm")));
    let (code, _, err) = udm(
        &["open", s(&img), "q1", "--key-file", "-"],
        b"secret",
        Some(&daemon.socket),
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = udm(&["status", "q1"], b"", Some(&daemon.socket));
    assert_eq!(code, 0);
    assert!(
        out.contains("type:    LUKS1") && out.contains("cipher:  aes-xts-plain64"),
        "{out}"
    );
    let back = d.path().join("back.raw");
    raw_copy(&daemon.uri("q1"), s(&back));
    assert!(
        std::fs::read(&back).unwrap()[..plain.len()] == plain[..],
        "udm read qemu's data wrong"
    );
    // udm writes new data; qemu reads it back through its LUKS driver.
    let plain2: Vec<u8> = plain.iter().map(|b| b ^ 0xa5).collect();
    std::fs::write(&plain_path, &plain2).unwrap();
    raw_copy_into(s(&plain_path), &daemon.uri("q1"));
    assert_eq!(udm(&["close", "q1"], b"", Some(&daemon.socket)).0, 0);
    assert_eq!(udm(&["close", "q1"], b"", Some(&daemon.socket)).0, 4);
    qemu_img(&[
        "convert",
        "--object",
        secret,
        "--image-opts",
        &format!("driver=luks,key-secret=s0,file.filename={}", s(&img)),
        "-O",
        "raw",
        s(&back),
    ]);
    assert!(
        std::fs::read(&back).unwrap()[..plain2.len()] == plain2[..],
        "qemu read udm's data wrong"
    );
}

#[test]
fn key_store_keys_from_stdin() {
    use udm_proto::{Client, DevSel, Line, Request};
    let d = tempfile::tempdir().unwrap();
    let img = udm_testkit::image(d.path(), "k.img", 1 << 20);
    let daemon = udm_testkit::Daemon::start(Path::new(env!("CARGO_BIN_EXE_udm")));
    let add = |args: &[&str], key: &[u8]| {
        let args: Vec<&str> = ["key"].iter().chain(args).copied().collect();
        let bin = Path::new(env!("CARGO_BIN_EXE_udm"));
        let (c, _, err) = udm_testkit::tool::run_as(bin, "udm", &args, key, Some(&daemon.socket));
        (c, err)
    };
    assert_eq!(add(&["add", "logon", "udm:k"], &[7u8; 32]).0, 0);
    assert_eq!(add(&["add", "--hex", "user", "udm:h"], b"00ff\n").0, 0);
    assert_ne!(add(&["add", "bogus", "udm:k"], &[7u8; 32]).0, 0);
    assert_ne!(add(&["add", "--hex", "user", "x"], b"0g").0, 0);
    let mut c = Client::connect(&daemon.socket).unwrap();
    let sel = DevSel::Name("k".into());
    c.call(Request::Create {
        name: "k".into(),
        uuid: String::new(),
    })
    .unwrap();
    let params = format!("aes-xts-plain64 :32:logon:udm:k 0 {} 0", s(&img));
    c.call(Request::Load {
        dev: sel.clone(),
        table: vec![Line {
            start: 0,
            len: 2048,
            ttype: "crypt".into(),
            params: params.clone(),
        }],
        read_only: false,
    })
    .unwrap();
    c.call(Request::Resume {
        dev: sel.clone(),
        noflush: false,
        nolockfs: false,
    })
    .unwrap();
    match c
        .call(Request::Status {
            dev: sel,
            inactive: false,
            table: true,
            noflush: false,
        })
        .unwrap()
    {
        udm_proto::Reply::Status { targets, .. } => assert_eq!(targets[0].params, params),
        r => panic!("{r:?}"),
    }
    assert!(!daemon.log().contains("\\u{7}"), "key bytes in the log");
}

#[test]
fn udm_format_passes_cryptsetup() {
    if !udm_testkit::require_tool("cryptsetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let vk: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(29) ^ 0x5c).collect();
    let vkf = d.path().join("vk.bin");
    std::fs::write(&vkf, &vk).unwrap();
    let kinds: [&[&str]; 4] = [
        &["--type", "luks1", "--pbkdf-force-iterations", "1000"],
        &[
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "64",
            "--pbkdf-force-iterations",
            "4",
            "--label",
            "udmlabel",
        ],
        &[
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--sector-size",
            "4096",
        ],
        &[
            "--type",
            "luks1",
            "--cipher",
            "aes-cbc-essiv:sha256",
            "--key-size",
            "256",
            "--hash",
            "sha1",
            "--pbkdf-force-iterations",
            "1000",
        ],
    ];
    for opts in kinds {
        let img = udm_testkit::image(d.path(), "f.img", 24 << 20);
        let p = s(&img);
        let key_bits = if opts.contains(&"256") { 256 } else { 512 };
        let vkf2 = d.path().join("vk2.bin");
        std::fs::write(&vkf2, &vk[..key_bits / 8]).unwrap();
        let uuid = "12345678-9abc-4def-8123-456789abcdef";
        let mut a = vec![
            "luksFormat",
            "-q",
            "--key-file",
            "-",
            "--uuid",
            uuid,
            "--volume-key-file",
            s(&vkf2),
        ];
        a.extend_from_slice(opts);
        a.push(p);
        let (code, _, err) = udm(&a, b"pass phrase", None);
        assert_eq!(code, 0, "{opts:?}: {err}");
        assert_eq!(real(&["isLuks", p], b"").0, 0, "{opts:?}");
        assert_eq!(real(&["luksUUID", p], b"").1.trim(), uuid);
        let (code, out, err) = real(&["luksDump", p], b"");
        assert_eq!(code, 0, "{opts:?}: {err}");
        assert_eq!(
            (code, out),
            (
                udm(&["luksDump", p], b"", None).0,
                udm(&["luksDump", p], b"", None).1
            )
        );
        let (code, _, err) = real(
            &["open", "--test-passphrase", p, "--key-file", "-"],
            b"pass phrase",
        );
        assert_eq!(code, 0, "{opts:?}: {err}");
        assert_eq!(
            real(
                &["open", "--test-passphrase", p, "--key-file", "-"],
                b"wrong"
            )
            .0,
            2
        );
        let (code, out, _) = real(
            &["luksDump", "--dump-volume-key", "-q", "--key-file", "-", p],
            b"pass phrase",
        );
        assert_eq!(code, 0);
        let hex: String = vk[..key_bits / 8]
            .iter()
            .map(|b| format!("{b:02x} "))
            .collect();
        let dumped: String = out
            .split("MK dump:")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|w| format!("{w} "))
            .collect();
        assert_eq!(dumped, hex, "{opts:?}");
    }
    // A failed format (bad key size for the cipher) leaves the disk as it was.
    let img = udm_testkit::image(d.path(), "bad.img", 24 << 20);
    std::fs::write(&img, vec![0x77; 24 << 20]).unwrap();
    let (code, _, _) = udm(
        &[
            "luksFormat",
            "-q",
            "--key-file",
            "-",
            "--key-size",
            "128",
            s(&img),
        ],
        b"x",
        None,
    );
    assert_ne!(code, 0);
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0x77));
}
