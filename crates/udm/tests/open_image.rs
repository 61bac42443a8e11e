//! `udm open IMAGE` / `udm close IMAGE` on an image the real tools made: an sfdisk
//! partition holding LUKS2 (cryptsetup) holding an LVM VG (lvm2, activation off) whose LV
//! holds ext4 (mkfs.ext4, written through udm's crypt device — no kernel dm). `udm open`
//! brings every layer up, e2fsck passes on the LV, `udm close` leaves nothing behind.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use udm_testkit::loopdev::LoopDev;
use udm_testkit::lvm2::Lvm2;
use udm_testkit::tool::run_tool;
use udm_testkit::udmcli::UdmCli;
use udm_testkit::Daemon;

fn udm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

fn sh(cmd: &mut Command) -> String {
    udm_testkit::run(cmd)
}

fn udm_on(d: &Daemon, state: &Path, args: &[&str]) -> (String, String, i32) {
    UdmCli::on(udm(), d, state.to_path_buf()).run(args)
}

#[test]
fn open_partition_luks_lvm_ext4_and_close() {
    for t in ["sfdisk", "cryptsetup", "lvm", "mkfs.ext4", "e2fsck"] {
        if !udm_testkit::require_tool(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = udm_testkit::image(dir.path(), "disk.img", 80 << 20);
    let part = udm_testkit::image(dir.path(), "part.img", 79 << 20);
    let key = dir.path().join("key");
    std::fs::write(&key, b"correct horse").unwrap();
    let layout = b"label: dos\nstart=2048, type=8e\n";
    let (code, _, err) = run_tool("sfdisk", &["-q", disk.to_str().unwrap()], layout);
    assert_eq!(code, 0, "sfdisk: {err}");
    sh(Command::new("cryptsetup")
        .args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "argon2id"])
        .args([
            "--pbkdf-memory",
            "32",
            "--pbkdf-parallel",
            "1",
            "--pbkdf-force-iterations",
            "4",
        ])
        .arg("--key-file")
        .arg(&key)
        .arg(&part));
    // The decrypted device through udm, a kernel block device over its FUSE file for lvm2.
    let d = Daemon::start(&udm());
    let state = dir.path().join("state");
    let (_, e, c) = udm_on(
        &d,
        &state,
        &[
            "luks",
            "open",
            part.to_str().unwrap(),
            "pc",
            "--key-file",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(c, 0, "{e}");
    let fuse = d.dir.path().join("mapper");
    {
        let Some(lo) = LoopDev::attach(&fuse.join("pc")) else {
            return;
        };
        let lvm = Lvm2::new(&[lo.path()]).unwrap();
        lvm.ok("pvcreate", &[lo.path()]);
        lvm.ok("vgcreate", &["vgx", lo.path()]);
        lvm.ok("lvcreate", &["-n", "data", "-L", "40M", "vgx"]);
        let pe = lvm.ok(
            "pvs",
            &[
                "--noheadings",
                "--units",
                "s",
                "--nosuffix",
                "-o",
                "pe_start",
            ],
        );
        let seek: u64 = pe.trim().parse().unwrap();
        let devs = lvm.ok("lvs", &["--noheadings", "-o", "devices", "vgx/data"]);
        assert_eq!(
            devs.trim(),
            format!("{}(0)", lo.path()),
            "the LV starts at the first extent"
        );
        let fs = dir.path().join("fs.img");
        let _ = udm_testkit::image(dir.path(), "fs.img", 40 << 20);
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "inside"])
            .arg(&fs));
        sh(Command::new("dd")
            .arg(format!("if={}", fs.display()))
            .arg(format!("of={}", lo.path()))
            .args(["bs=1M", "oflag=direct,seek_bytes", "status=none"])
            .arg(format!("seek={}", seek * 512)));
    }
    let (_, e, c) = udm_on(&d, &state, &["luks", "close", "pc"]);
    assert_eq!(c, 0, "{e}");
    let img = std::fs::read(&part).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&img, 1 << 20).unwrap();
    drop(f);

    let t0 = std::time::Instant::now();
    let (o, e, c) = udm_on(
        &d,
        &state,
        &[
            "open",
            "--key-file",
            key.to_str().unwrap(),
            disk.to_str().unwrap(),
        ],
    );
    eprintln!("udm open took {:?}", t0.elapsed());
    assert_eq!(c, 0, "{o}\n{e}");
    let rows: Vec<Vec<&str>> = o
        .lines()
        .filter(|l| l.contains('\t'))
        .map(|l| l.split('\t').collect())
        .collect();
    let kinds: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        kinds,
        [
            ("disk.img1", "partition"),
            ("disk.img1_crypt", "crypt"),
            ("vgx-data", "lvm")
        ],
        "{o}"
    );
    let lv_file = fuse.join("vgx-data");
    assert_eq!(rows[2][2], lv_file.display().to_string());
    assert_eq!(
        rows[2][3],
        format!("nbd+unix:///vgx-data?socket={}", d.nbd_socket.display())
    );
    let (t, _, _) = udm_on(&d, &state, &["table", "vgx-data"]);
    let (mm, _, _) = udm_on(
        &d,
        &state,
        &[
            "info",
            "-c",
            "--noheadings",
            "--separator",
            ":",
            "-o",
            "major,minor",
            "disk.img1_crypt",
        ],
    );
    assert_eq!(t, format!("0 81920 linear {} 2048\n", mm.trim()));
    sh(Command::new("e2fsck").arg("-fn").arg(&lv_file));
    let label = sh(Command::new("e2label").arg(&lv_file));
    assert_eq!(label.trim(), "inside");
    let (o, e, c) = udm_on(&d, &state, &["close", disk.to_str().unwrap()]);
    assert_eq!(c, 0, "{o}{e}");
    let (ls, _, _) = udm_on(&d, &state, &["ls"]);
    assert_eq!(ls, "No devices found\n");
    // Closed means closed: a second close has nothing to do.
    let (_, _, c) = udm_on(&d, &state, &["close", disk.to_str().unwrap()]);
    assert_eq!(c, 1);
}

/// An unpartitioned image holding a VG opens as its LVs; a LUKS image with the wrong
/// passphrase opens nothing and leaves nothing behind.
#[test]
fn open_bare_vg_and_bad_passphrase() {
    if !udm_testkit::require_tool("cryptsetup") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&udm());
    let state = dir.path().join("state");
    let cli = UdmCli::on(udm(), &d, state.clone());
    let img = udm_testkit::image(dir.path(), "vg.img", 32 << 20);
    let p = img.to_str().unwrap();
    let dv = ["--devices", p, "--config", "global{activation=0}"];
    cli.ok("vgcreate", &[&dv[..], &["bare", p]].concat());
    cli.ok(
        "lvcreate",
        &[&dv[..], &["-n", "one", "-L", "8M", "bare"]].concat(),
    );
    cli.ok(
        "lvcreate",
        &[&dv[..], &["-n", "two", "-L", "4M", "bare"]].concat(),
    );
    assert_eq!(cli.dm(&["ls"]), "No devices found\n");
    let (o, e, c) = udm_on(&d, &state, &["open", p]);
    assert_eq!(c, 0, "{e}");
    let names: Vec<(&str, &str)> = o
        .lines()
        .filter(|l| l.contains('\t'))
        .map(|l| {
            let w: Vec<&str> = l.split('\t').collect();
            (w[0], w[1])
        })
        .collect();
    assert_eq!(names, [("bare-one", "lvm"), ("bare-two", "lvm")]);
    assert_eq!(
        cli.dm(&["table", "bare-two"]),
        format!("0 8192 linear {p} 18432\n")
    );
    let (_, e, c) = udm_on(&d, &state, &["open", p]);
    assert_eq!(c, 1, "already open: {e}");
    let (_, e, c) = udm_on(&d, &state, &["close", p]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(cli.dm(&["ls"]), "No devices found\n");

    let luks = udm_testkit::image(dir.path(), "luks.img", 32 << 20);
    let key = dir.path().join("key");
    std::fs::write(&key, b"right").unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, b"wrong").unwrap();
    sh(Command::new("cryptsetup")
        .args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2"])
        .args(["--pbkdf-force-iterations", "1000", "--key-file"])
        .arg(&key)
        .arg(&luks));
    let l = luks.to_str().unwrap();
    let (_, e, c) = udm_on(
        &d,
        &state,
        &["open", "--key-file", bad.to_str().unwrap(), l],
    );
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("No key available with this passphrase."), "{e}");
    assert_eq!(cli.dm(&["ls"]), "No devices found\n");
    let (o, e, c) = udm_on(
        &d,
        &state,
        &["open", "--key-file", key.to_str().unwrap(), l],
    );
    assert_eq!(c, 0, "{e}");
    assert!(o.starts_with("luks.img_crypt\tcrypt\t"), "{o}");
    let (_, e, c) = udm_on(&d, &state, &["close", l]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(cli.dm(&["ls"]), "No devices found\n");
}

/// `udm open nbd+unix:///…`: a partitioned image served by nbdkit opens through the
/// daemon's NBD connection (the export as a base device, its partition, the VG inside);
/// the LV reads what was written into the image; `udm close` takes it all down.
#[test]
fn open_over_nbd_url() {
    for t in ["sfdisk", "nbdkit"] {
        if !udm_testkit::require_tool(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&udm());
    let state = dir.path().join("state");
    let cli = UdmCli::on(udm(), &d, state.clone());
    let disk = udm_testkit::image(dir.path(), "disk.img", 40 << 20);
    let part = udm_testkit::image(dir.path(), "part.img", 39 << 20);
    let layout = b"label: dos\nstart=2048, type=8e\n";
    let (code, _, err) = run_tool("sfdisk", &["-q", disk.to_str().unwrap()], layout);
    assert_eq!(code, 0, "sfdisk: {err}");
    // A VG on the partition's bytes, with data in its LV at a known place.
    let p = part.to_str().unwrap();
    let dv = ["--devices", p, "--config", "global{activation=0}"];
    cli.ok("vgcreate", &[&dv[..], &["nbdvg", p]].concat());
    cli.ok(
        "lvcreate",
        &[&dv[..], &["-n", "data", "-L", "8M", "nbdvg"]].concat(),
    );
    let pattern: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 253) as u8).collect();
    let pf = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    pf.write_at(&pattern, 1 << 20).unwrap(); // the LV starts at the first extent (1 MiB)
    let bytes = std::fs::read(&part).unwrap();
    let df = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    df.write_at(&bytes, 1 << 20).unwrap();
    let sock = dir.path().join("nbd.sock");
    let mut kit = Command::new("nbdkit")
        .args(["-f", "-U"])
        .arg(&sock)
        .arg("file")
        .arg(&disk)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let url = format!("nbd+unix:///?socket={}", sock.display());
    let (o, e, c) = udm_on(&d, &state, &["open", &url]);
    assert_eq!(c, 0, "{o}\n{e}");
    let kinds: Vec<&str> = o.lines().filter_map(|l| l.split('\t').nth(1)).collect();
    assert_eq!(kinds, ["nbd", "partition", "lvm"], "{o}");
    let base = o
        .lines()
        .find(|l| l.contains('\t'))
        .and_then(|l| l.split('\t').next())
        .unwrap();
    assert!(base.starts_with("nbd_"), "{o}");
    assert_eq!(
        cli.dm(&["table", base]),
        format!("0 81920 linear {url} 0\n")
    );
    let c2 = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, "nbdvg-data").unwrap();
    let mut back = vec![0u8; pattern.len()];
    c2.read(0, &mut back).unwrap();
    assert!(back == pattern, "the LV reads the image's data over NBD");
    drop(c2);
    let (_, e, c) = udm_on(&d, &state, &["close", &url]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(cli.dm(&["ls"]), "No devices found\n");
    let _ = kit.kill();
    let _ = kit.wait();
}
