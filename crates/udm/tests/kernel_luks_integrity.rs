//! Authenticated LUKS2 volumes made by the kernel's cryptsetup (`luksFormat --integrity
//! hmac-sha256` with aes-xts, and `--integrity aead` with aes-gcm-random) open in udm through
//! its cryptsetup personality (an integrity device `<name>_dif` at the data offset, the
//! crypt mapping over it), show the kernel's cipher in `status`, read back the plaintext the
//! kernel wrote, and verify udm's own writes. The reverse in the same boot: volumes udm's
//! `luksFormat --integrity` makes (wiped, and one with `--integrity-no-wipe`) carry the
//! kernel's header fields and integrity superblock, open in the kernel's cryptsetup, read
//! back the plaintext udm wrote, and (wiped) read end to end without a tag error. One refvm
//! boot (kernel 6.1).

use std::path::Path;
use udm_io::Sectors;
use udm_nbd::RemoteDevice;
use udm_testkit::rng::pseudo;

const PASS: &[u8] = b"authenticated";
const DATA: usize = 1 << 20;

fn udm(args: &[&str], stdin: &[u8], socket: Option<&Path>) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_udm"));
    udm_testkit::tool::run_as(bin, "cryptsetup", args, stdin, socket)
}

#[test]
fn kernel_luks2_integrity_volumes_open_in_udm() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let plain = pseudo(DATA, 5);
    std::fs::write(share.join("plain.bin"), &plain).unwrap();
    let cases = [
        (
            "hmac",
            "--cipher aes-xts-random --key-size 512 --integrity hmac-sha256",
        ),
        (
            "aead",
            "--cipher aes-gcm-random --key-size 256 --integrity aead",
        ),
    ];
    // udm formats its own volumes and writes the plaintext before the boot.
    let daemon =
        udm_testkit::Daemon::start_with(Path::new(env!("CARGO_BIN_EXE_udm")), &["--no-fuse"]);
    let sock = Some(daemon.socket.as_path());
    let ucases = [
        ("uhmac", cases[0].1, ""),
        ("uaead", cases[1].1, ""),
        ("unowipe", cases[1].1, "--integrity-no-wipe"),
    ];
    let uimgs: Vec<_> = ucases
        .iter()
        .map(|(n, _, _)| udm_testkit::image(&share, &format!("{n}.img"), 32 << 20))
        .collect();
    for ((name, opts, extra), img) in ucases.iter().zip(&uimgs) {
        let mut args: Vec<&str> = vec!["luksFormat", "-q", "--type", "luks2"];
        args.extend(opts.split(' '));
        args.extend(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]);
        args.extend(extra.split(' ').filter(|w| !w.is_empty()));
        args.extend(["--key-file", "-", img.to_str().unwrap()]);
        let (code, _, err) = udm(&args, PASS, sock);
        assert_eq!(code, 0, "udm luksFormat {name}: {err}");
        let (code, _, err) = udm(
            &["open", "--key-file", "-", img.to_str().unwrap(), name],
            PASS,
            sock,
        );
        assert_eq!(code, 0, "udm open {name}: {err}");
        {
            let r = RemoteDevice::connect(&daemon.uri(name), false).unwrap();
            udm_io::sync::write_at(&r, Sectors(0), &plain).unwrap();
            udm_io::sync::flush(&r).unwrap();
            let back = udm_io::sync::read_at(&r, Sectors(0), DATA).unwrap();
            assert!(back.as_slice() == &plain[..], "{name}: udm reads back");
            // Past the written part: zeros with valid tags, or (not wiped) a tag error.
            let past = udm_io::sync::read_at(&r, Sectors(DATA as u64 / 512), 4096);
            if extra.is_empty() {
                assert!(past.unwrap().as_slice() == &[0u8; 4096][..], "{name}");
            } else {
                assert!(past.is_err(), "{name}: unwritten sectors have no valid tag");
            }
        }
        let (code, _, err) = udm(&["close", name], b"", sock);
        assert_eq!(code, 0, "udm close {name}: {err}");
    }

    let imgs: Vec<_> = cases
        .iter()
        .map(|(n, _)| udm_testkit::image(&share, &format!("{n}.img"), 32 << 20))
        .collect();
    let pass = String::from_utf8(PASS.to_vec()).unwrap();
    let mut script = String::from("set -e\nmodprobe dm-crypt\nmodprobe dm-integrity\n");
    for ((name, opts), dev) in cases.iter().zip(["/dev/vda", "/dev/vdb"]) {
        script.push_str(&format!(
            "printf '{pass}' | cryptsetup luksFormat -q --type luks2 {opts} --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - {dev}\n\
             printf '{pass}' | cryptsetup open --key-file - {dev} k{name}\n\
             dmsetup table k{name} | cut -d' ' -f4 > {name}.cipher\n\
             dmsetup table k{name}_dif | cut -d' ' -f2,3,5- > {name}.dif\n\
             cryptsetup luksDump --dump-json-metadata {dev} > {name}.json\n\
             dd if=plain.bin of=/dev/mapper/k{name} bs=64k oflag=direct status=none\n\
             cryptsetup close k{name}\n"
        ));
    }
    // The kernel opens udm's volumes: header fields, integrity superblock, plaintext; a
    // wiped volume reads end to end, an unwiped one fails past the written part.
    for ((name, _, extra), dev) in ucases.iter().zip(["/dev/vdc", "/dev/vdd", "/dev/vde"]) {
        let tail = if extra.is_empty() {
            format!("dd if=/dev/mapper/k{name} of=/dev/null bs=1M iflag=direct status=none && echo ok > {name}.whole
")
        } else {
            format!("dd if=/dev/mapper/k{name} of=/dev/null bs=4k skip=256 count=1 iflag=direct status=none || echo failed > {name}.whole
")
        };
        script.push_str(&format!(
            "cryptsetup luksDump --dump-json-metadata {dev} > {name}.json
             printf '{pass}' | cryptsetup open --key-file - {dev} k{name}
             dmsetup table k{name} | cut -d' ' -f4 > {name}.cipher
             dmsetup table k{name}_dif | cut -d' ' -f2,3,5- > {name}.dif
             dd if=/dev/mapper/k{name} bs=64k count=16 iflag=direct status=none > {name}.read
             {tail}             cryptsetup close k{name}
"
        ));
    }
    let disks: Vec<&Path> = imgs.iter().chain(&uimgs).map(|p| p.as_path()).collect();
    let (out, err, code) = udm_testkit::refvm_run(&run, &disks, Some(&share), &script);
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}");
    for (i, (name, _, extra)) in ucases.iter().enumerate() {
        let read = |f: &str| std::fs::read_to_string(share.join(format!("{name}.{f}"))).unwrap();
        let (kname, _) = cases[i.min(1)];
        // The same header fields as the kernel's cryptsetup wrote for the same options.
        let ujson: serde_json::Value = serde_json::from_str(&read("json")).unwrap();
        let kjson: serde_json::Value =
            serde_json::from_str(&read_share(&share, &format!("{kname}.json"))).unwrap();
        for f in ["encryption", "integrity", "sector_size", "offset"] {
            assert_eq!(
                ujson["segments"]["0"][f], kjson["segments"]["0"][f],
                "{name}: {f}"
            );
        }
        let (uk, kk) = (&ujson["keyslots"]["0"], &kjson["keyslots"]["0"]);
        assert_eq!(uk["key_size"], kk["key_size"], "{name}: volume key size");
        assert_eq!(uk["area"]["encryption"], kk["area"]["encryption"], "{name}");
        assert_eq!(uk["area"]["key_size"], kk["area"]["key_size"], "{name}");
        assert_eq!(uk["area"]["size"], kk["area"]["size"], "{name}");
        assert_eq!(
            read("cipher"),
            read_share(&share, &format!("{kname}.cipher")),
            "{name}"
        );
        assert_eq!(
            read("dif"),
            read_share(&share, &format!("{kname}.dif")),
            "{name}: integrity table"
        );
        let got = std::fs::read(share.join(format!("{name}.read"))).unwrap();
        assert!(got == plain[..], "{name}: kernel reads other plaintext");
        let whole = if extra.is_empty() { "ok\n" } else { "failed\n" };
        assert_eq!(read("whole"), whole, "{name}: whole-device read");
    }
    let plain2 = pseudo(4096 * 4, 9);
    for ((name, _), img) in cases.iter().zip(&imgs) {
        let kc = std::fs::read_to_string(share.join(format!("{name}.cipher"))).unwrap();
        let (code, _, err) = udm(
            &["open", "--key-file", "-", img.to_str().unwrap(), name],
            PASS,
            sock,
        );
        assert_eq!(code, 0, "udm open {name} (kernel cipher {kc}): {err}");
        let (_, st, _) = udm(&["status", name], b"", sock);
        assert!(
            st.contains(&format!("  cipher:  {}", kc.trim())),
            "{name}: {st}"
        );
        {
            let r = RemoteDevice::connect(&daemon.uri(name), false).unwrap();
            let got = udm_io::sync::read_at(&r, Sectors(0), DATA).unwrap();
            assert!(
                got.as_slice() == &plain[..],
                "{name}: udm reads other plaintext"
            );
            // udm writes; its reads of the new data verify against its own tags.
            udm_io::sync::write_at(&r, Sectors(2048 * 4), &plain2).unwrap();
            udm_io::sync::flush(&r).unwrap();
            let back = udm_io::sync::read_at(&r, Sectors(2048 * 4), plain2.len()).unwrap();
            assert!(back.as_slice() == &plain2[..]);
        }
        let (code, _, err) = udm(&["close", name], b"", sock);
        assert_eq!(code, 0, "udm close {name}: {err}");
    }
}

fn read_share(share: &Path, f: &str) -> String {
    std::fs::read_to_string(share.join(f)).unwrap()
}
