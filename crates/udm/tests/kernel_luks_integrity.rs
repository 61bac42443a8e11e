//! Authenticated LUKS2 volumes made by the kernel's cryptsetup (`luksFormat --integrity
//! hmac-sha256` with aes-xts, and `--integrity aead` with aes-gcm-random) open in udm through
//! its cryptsetup personality (an integrity device `<name>_dif` at the data offset, the
//! crypt mapping over it), show the kernel's cipher in `status`, read back the plaintext the
//! kernel wrote, and verify udm's own writes. One refvm boot (kernel 6.1).

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
             dd if=plain.bin of=/dev/mapper/k{name} bs=64k oflag=direct status=none\n\
             cryptsetup close k{name}\n"
        ));
    }
    let disks: Vec<&Path> = imgs.iter().map(|p| p.as_path()).collect();
    let (out, err, code) = udm_testkit::refvm_run(&run, &disks, Some(&share), &script);
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}");

    let daemon =
        udm_testkit::Daemon::start_with(Path::new(env!("CARGO_BIN_EXE_udm")), &["--no-fuse"]);
    let sock = Some(daemon.socket.as_path());
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
