//! Differential test against the kernel's dm-crypt with LUKS (refvm): LUKS1 and LUKS2 volumes
//! made by `udm luks luksFormat` open with the kernel's cryptsetup. Data the kernel writes reads
//! back through udm, and udm writes the same ciphertext for the same plaintext at the same
//! sectors. Data udm writes reads back through the kernel. One VM boot covers both directions.

mod luks_common;
use luks_common::{raw_copy, raw_copy_into, s, udm, PBKDF2_FAST};

use std::path::{Path, PathBuf};

fn pseudo(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const PASS: &[u8] = b"kernel and udm";
const DATA: usize = 1 << 20; // plaintext bytes written at the start of each volume

/// A 24 MiB volume formatted by udm as `ty` (pbkdf2, 1000 iterations).
fn format(dir: &Path, name: &str, ty: &str) -> PathBuf {
    let mut opts = vec!["--type", ty];
    opts.extend(PBKDF2_FAST);
    luks_common::format(dir, name, "udm", &opts, PASS)
}

/// Open `img` in the daemon as `name`, run `f` with its NBD URI, close it.
fn with_open(d: &udm_testkit::Daemon, img: &Path, name: &str, f: impl FnOnce(&str)) {
    let sock = d.socket.as_path();
    let (code, _, err) = udm(&["open", "--key-file", "-", s(img), name], PASS, Some(sock));
    assert_eq!(code, 0, "udm open {}: {err}", img.display());
    f(&d.uri(name));
    let (code, _, err) = udm(&["close", name], b"", Some(sock));
    assert_eq!(code, 0, "udm close {name}: {err}");
}

#[test]
fn kernel_luks_same_plaintext_and_ciphertext() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    if !udm_testkit::require_tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let types = ["luks1", "luks2"];
    let plain = pseudo(DATA, 7);
    let plain_file = share.join("plain.bin");
    std::fs::write(&plain_file, &plain).unwrap();

    // Kernel writes (vda, vdb): a copy of each fresh volume is kept for udm to write to.
    let mut kw = Vec::new();
    for ty in types {
        let img = format(dir.path(), &format!("kw-{ty}.img"), ty);
        let copy = dir.path().join(format!("uw-{ty}.img"));
        std::fs::copy(&img, &copy).unwrap();
        kw.push((img, copy));
    }
    // udm writes (vdc, vdd) before the boot; the kernel reads them back.
    let daemon = udm_testkit::Daemon::start(Path::new(env!("CARGO_BIN_EXE_udm")));
    let plain2 = pseudo(DATA, 11);
    let src2 = dir.path().join("plain2.bin");
    std::fs::write(&src2, &plain2).unwrap();
    let mut ur = Vec::new();
    for ty in types {
        let img = format(dir.path(), &format!("ur-{ty}.img"), ty);
        with_open(&daemon, &img, "w", |uri| {
            raw_copy_into(s(&src2), uri);
        });
        ur.push(img);
    }

    let pass = String::from_utf8(PASS.to_vec()).unwrap();
    let mut script = String::from("set -e\nmodprobe dm-crypt\n");
    for (dev, i) in [("vda", 0), ("vdb", 1)] {
        script.push_str(&format!(
            "printf '{pass}' | cryptsetup open --key-file - /dev/{dev} x\n\
             cryptsetup status x | grep -E 'type|cipher' > status{i}.txt\n\
             dd if=plain.bin of=/dev/mapper/x bs=64k oflag=direct status=none\n\
             cryptsetup close x\n"
        ));
    }
    for (dev, i) in [("vdc", 0), ("vdd", 1)] {
        script.push_str(&format!(
            "printf '{pass}' | cryptsetup open --readonly --key-file - /dev/{dev} x\n\
             dd if=/dev/mapper/x of=read{i}.bin bs=64k count={} iflag=direct status=none\n\
             cryptsetup close x\n",
            DATA / 65536
        ));
    }
    let disks: Vec<&Path> = kw
        .iter()
        .map(|(k, _)| k.as_path())
        .chain(ur.iter().map(PathBuf::as_path))
        .collect();
    let (out, err, code) = udm_testkit::refvm_run(&run, &disks, Some(&share), &script);
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}");

    for (i, ty) in types.iter().enumerate() {
        let st = std::fs::read_to_string(share.join(format!("status{i}.txt"))).unwrap();
        assert!(
            st.contains(&ty.to_uppercase()) && st.contains("aes-xts-plain64"),
            "{ty}: kernel status {st}"
        );
        // Kernel → udm: udm reads the kernel's plaintext ...
        let (kimg, copy) = &kw[i];
        let back = dir.path().join(format!("back-{ty}.raw"));
        with_open(&daemon, kimg, "r", |uri| {
            raw_copy(uri, s(&back));
        });
        let got = std::fs::read(&back).unwrap();
        assert!(got[..DATA] == plain[..], "{ty}: udm read other data");
        // ... and writes the same ciphertext for it.
        with_open(&daemon, copy, "w", |uri| {
            raw_copy_into(s(&plain_file), uri);
        });
        let (k, u) = (std::fs::read(kimg).unwrap(), std::fs::read(copy).unwrap());
        assert_eq!(k.len(), u.len());
        let diff = k.iter().zip(&u).position(|(a, b)| a != b);
        assert_eq!(diff, None, "{ty}: images differ (first byte offset)");
        // udm → kernel: the kernel read udm's plaintext.
        let read = std::fs::read(share.join(format!("read{i}.bin"))).unwrap();
        assert!(read == plain2, "{ty}: kernel read other data");
    }
}
