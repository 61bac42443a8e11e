//! `udm` as `integritysetup`: devices it formats pass the real `integritysetup dump` with the
//! same output as its own `dump`; open/status/close through the daemon print what the real
//! tool printed on kernel 6.1 for the same device; data written over NBD reads back, and a
//! flipped byte in the image makes exactly that block fail (EIO over NBD) and counts in
//! `status` as the kernel counts.

use std::path::Path;
use std::process::Command;
use udm_io::Sectors;
use udm_nbd::RemoteDevice;
use udm_testkit::Daemon;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(args: &[&str], socket: Option<&Path>) -> (i32, String, String) {
    udm_testkit::tool::run_as(bin(), "integritysetup", args, b"", socket)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn image(dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    p
}

#[test]
fn integritysetup_dump_matches_the_real_tool() {
    if !udm_testkit::require_tool("integritysetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("key"), [0x5au8; 32]).unwrap();
    let key = d.path().join("key");
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--integrity", "sha256", "-B"],
        vec![
            "--integrity",
            "hmac-sha256",
            "--integrity-key-file",
            s(&key),
            "--integrity-key-size",
            "32",
        ],
        vec![
            "--integrity-legacy-padding",
            "--integrity-legacy-hmac",
            "-s",
            "4096",
        ],
        vec![
            "--journal-size",
            "1048576",
            "--interleave-sectors",
            "8192",
            "-t",
            "8",
        ],
    ];
    for (i, opts) in cases.iter().enumerate() {
        let img = image(d.path(), &format!("{i}.img"));
        let mut a = vec!["format", "-q", s(&img)];
        a.extend_from_slice(opts);
        let (code, out, err) = udm(&a, None);
        assert_eq!((code, out.as_str()), (0, ""), "format {opts:?}: {err}");
        let (code, ours, err) = udm(&["dump", s(&img)], None);
        assert_eq!(code, 0, "{err}");
        let real = Command::new("integritysetup")
            .args(["dump", s(&img)])
            .output()
            .unwrap();
        assert!(real.status.success(), "real dump of {opts:?}");
        assert_eq!(ours, String::from_utf8_lossy(&real.stdout), "dump {opts:?}");
    }
}

#[test]
fn integritysetup_open_status_close_and_corruption() {
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path(), "disk.img");
    let (code, _, err) = udm(&["format", "-q", s(&img)], None);
    assert_eq!(code, 0, "{err}");
    let daemon = Daemon::start_with(bin(), &["--no-fuse"]);
    let sock = Some(daemon.socket.as_path());
    let (code, _, err) = udm(&["open", s(&img), "ia"], sock);
    assert_eq!(code, 0, "{err}");
    // The kernel's integritysetup 2.6.1 printed this for the same format (16 MiB, defaults).
    let want = format!(
        "/dev/mapper/ia is active.\n  type:    INTEGRITY\n  tag size: 4\n  integrity: crc32c\n  device:  {}\n  sector size:  512 bytes\n  interleave sectors: 32768\n  size:    32328 sectors\n  mode:    read/write\n  failures: 0\n  journal size: 90112 bytes\n  journal watermark: 50%\n  journal commit time: 10000 ms\n",
        img.display()
    );
    let (code, out, _) = udm(&["status", "ia"], sock);
    assert_eq!((code, out.as_str()), (0, want.as_str()));
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 + i / 512) as u8).collect();
    {
        let r = RemoteDevice::connect(&daemon.uri("ia"), false).unwrap();
        udm_io::sync::write_at(&r, Sectors(24), &data).unwrap();
        udm_io::sync::flush(&r).unwrap();
        assert_eq!(
            udm_io::sync::read_at(&r, Sectors(24), data.len())
                .unwrap()
                .as_slice(),
            &data[..]
        );
    }
    // Many large requests in flight (the target must not wait on the pool its own lower
    // I/O needs): fio writes with queue depth 16, then everything reads back checked.
    if udm_testkit::require_tool("fio") {
        let o = Command::new("timeout")
            .args(["120", "fio", "--name=q", "--ioengine=nbd"])
            .arg(format!("--uri={}", daemon.uri("ia")))
            .args([
                "--rw=write",
                "--bs=1m",
                "--iodepth=16",
                "--size=8m",
                "--offset=1m",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "fio: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r = RemoteDevice::connect(&daemon.uri("ia"), false).unwrap();
        udm_io::sync::read_at(&r, Sectors(2048), 8 << 20).unwrap();
        udm_io::sync::write_at(&r, Sectors(24), &data).unwrap();
        udm_io::sync::flush(&r).unwrap();
    }
    let (code, _, err) = udm(&["close", "ia"], sock);
    assert_eq!(code, 0, "{err}");
    // Flip one byte of logical sector 30: its data starts after superblock, journal and tags.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[((8 + 176 + 256 + 30) * 512 + 100) as usize] ^= 1;
    std::fs::write(&img, &bytes).unwrap();
    let (code, _, err) = udm(&["open", s(&img), "ia"], sock);
    assert_eq!(code, 0, "{err}");
    {
        let r = RemoteDevice::connect(&daemon.uri("ia"), false).unwrap();
        let e = udm_io::sync::read_at(&r, Sectors(24), data.len()).unwrap_err();
        assert_eq!(e.errno(), libc::EIO);
        for sec in 24..24 + 128u64 {
            let got = udm_io::sync::read_at(&r, Sectors(sec), 512);
            assert_eq!(got.is_err(), sec == 30, "sector {sec}");
        }
    }
    let (_, out, _) = udm(&["status", "ia"], sock);
    assert!(out.contains("  failures: 2\n"), "{out}");
    let (code, _, _) = udm(&["close", "ia"], sock);
    assert_eq!(code, 0);
    let (code, out, _) = udm(&["status", "ia"], sock);
    assert_eq!((code, out.as_str()), (4, "/dev/mapper/ia is inactive.\n"));
}

#[test]
fn integritysetup_data_device_keeps_data_apart_from_metadata() {
    if !udm_testkit::require_tool("integritysetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (meta, data_img) = (image(d.path(), "meta.img"), image(d.path(), "data.img"));
    let (code, _, err) = udm(
        &["format", "-q", s(&meta), "--data-device", s(&data_img)],
        None,
    );
    assert_eq!(code, 0, "{err}");
    // The real tool reads udm's metadata device: the whole data device is provided.
    let real = Command::new("integritysetup")
        .args(["dump", s(&meta)])
        .output()
        .unwrap();
    assert!(real.status.success());
    let real = String::from_utf8(real.stdout).unwrap();
    assert!(
        real.contains("provided_data_sectors 32768\n"),
        "real dump: {real}"
    );
    let (_, ours, _) = udm(&["dump", s(&meta)], None);
    assert_eq!(ours.replace(s(&meta), "X"), real.replace(s(&meta), "X"));
    let daemon = Daemon::start_with(bin(), &["--no-fuse"]);
    let sock = Some(daemon.socket.as_path());
    let open = |name: &str| {
        udm(
            &["open", s(&meta), name, "--data-device", s(&data_img)],
            sock,
        )
    };
    let (code, _, err) = open("dd");
    assert_eq!(code, 0, "{err}");
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 13 + i / 512) as u8).collect();
    {
        let r = RemoteDevice::connect(&daemon.uri("dd"), false).unwrap();
        udm_io::sync::write_at(&r, Sectors(64), &data).unwrap();
        udm_io::sync::flush(&r).unwrap();
    }
    let (code, _, err) = udm(&["close", "dd"], sock);
    assert_eq!(code, 0, "{err}");
    // The data device holds the data as written, at its own sectors.
    let mut bytes = std::fs::read(&data_img).unwrap();
    assert!(bytes[64 * 512..64 * 512 + data.len()] == data[..]);
    bytes[70 * 512 + 9] ^= 0x20;
    std::fs::write(&data_img, &bytes).unwrap();
    let (code, _, err) = open("dd");
    assert_eq!(code, 0, "{err}");
    {
        let r = RemoteDevice::connect(&daemon.uri("dd"), false).unwrap();
        for sec in 64..64 + 128u64 {
            let got = udm_io::sync::read_at(&r, Sectors(sec), 512);
            match got {
                Ok(b) => {
                    let o = ((sec - 64) * 512) as usize;
                    assert!(
                        sec != 70 && b.as_slice() == &data[o..o + 512],
                        "sector {sec}"
                    );
                }
                Err(e) => assert_eq!((sec, e.errno()), (70, libc::EIO)),
            }
        }
    }
    let (code, _, _) = udm(&["close", "dd"], sock);
    assert_eq!(code, 0);
}

/// `--journal-crypt ctr-aes` with a key file: the wipe prints cryptsetup's progress lines
/// (`--progress-frequency`), `status` names the journal cipher, data round-trips, and the
/// same device opened without the cipher finds no valid commit id (every read fails, as the
/// kernel's). Half-given key options fail with the real tool's usage messages.
#[test]
fn integritysetup_journal_crypt_and_progress() {
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path(), "disk.img");
    let key = d.path().join("key");
    std::fs::write(&key, (0..32u8).collect::<Vec<_>>()).unwrap();
    let jc = [
        "--journal-crypt",
        "ctr-aes",
        "--journal-crypt-key-file",
        s(&key),
        "--journal-crypt-key-size",
        "32",
    ];
    let mut a = vec!["format", "--progress-frequency", "1", s(&img)];
    a.extend(jc);
    let (code, out, err) = udm_testkit::tool::run_as(bin(), "integritysetup", &a, b"YES\n", None);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let n = lines.len();
    assert_eq!(
        lines[n - 3..n - 1],
        [
            "Wiping device to initialize integrity checksum.",
            "You can interrupt this by pressing CTRL+c (rest of not wiped device will contain invalid checksum)."
        ],
        "{out}"
    );
    assert!(lines[n - 4].ends_with("Formatted with tag size 4, internal integrity crc32c."));
    let fin = lines[n - 1];
    assert!(
        fin.starts_with("Finished, time 00m0")
            && fin.contains("s,   15 MiB written, speed ")
            && fin.ends_with("B/s")
            && out.ends_with('\n'),
        "{out:?}"
    );

    let daemon = Daemon::start_with(bin(), &["--no-fuse"]);
    let sock = Some(daemon.socket.as_path());
    let mut a = vec!["open", s(&img), "jc"];
    a.extend(jc);
    let (code, _, err) = udm(&a, sock);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = udm(&["status", "jc"], sock);
    assert!(
        out.contains("  journal commit time: 10000 ms\n  journal encryption: ctr(aes)\n"),
        "{out}"
    );
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 13 + i / 512) as u8).collect();
    {
        let r = RemoteDevice::connect(&daemon.uri("jc"), false).unwrap();
        udm_io::sync::write_at(&r, Sectors(8), &data).unwrap();
        udm_io::sync::flush(&r).unwrap();
    }
    assert_eq!(udm(&["close", "jc"], sock).0, 0);
    let mut a = vec!["open", s(&img), "jc"];
    a.extend(jc);
    assert_eq!(udm(&a, sock).0, 0);
    {
        let r = RemoteDevice::connect(&daemon.uri("jc"), false).unwrap();
        let got = udm_io::sync::read_at(&r, Sectors(8), data.len()).unwrap();
        assert!(got.as_slice() == &data[..]);
    }
    assert_eq!(udm(&["close", "jc"], sock).0, 0);
    assert_eq!(udm(&["open", s(&img), "plain"], sock).0, 0);
    {
        let r = RemoteDevice::connect(&daemon.uri("plain"), false).unwrap();
        let e = udm_io::sync::read_at(&r, Sectors(8), 4096).unwrap_err();
        assert_eq!(e.errno(), libc::EIO);
    }
    assert_eq!(udm(&["close", "plain"], sock).0, 0);

    let (code, _, err) = udm(
        &[
            "format",
            "-q",
            s(&img),
            "--journal-crypt",
            "ctr-aes",
            "--journal-crypt-key-file",
            s(&key),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.ends_with("integritysetup: Both journal encryption key file and key size options must be specified.\n"), "{err}");
    let (code, _, err) = udm(
        &[
            "format",
            "-q",
            s(&img),
            "--journal-crypt-key-file",
            s(&key),
            "--journal-crypt-key-size",
            "32",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.ends_with("integritysetup: Journal encryption algorithm must be specified if journal encryption key is used.\n"), "{err}");
}
