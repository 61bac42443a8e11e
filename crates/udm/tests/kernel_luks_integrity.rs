//! Kernel ground truth for the integrity side of the cryptsetup personalities, in one refvm
//! boot (kernel 6.1) that both tests share (the first to need it runs the guest work of
//! both).
//!
//! Authenticated LUKS2 volumes made by the kernel's cryptsetup (`luksFormat --integrity
//! hmac-sha256` with aes-xts, and `--integrity aead` with aes-gcm-random) open in udm through
//! its cryptsetup personality (an integrity device `<name>_dif` at the data offset, the
//! crypt mapping over it), show the kernel's cipher in `status`, read back the plaintext the
//! kernel wrote, and verify udm's own writes. The reverse in the same boot: volumes udm's
//! `luksFormat --integrity` makes (wiped, and one with `--integrity-no-wipe`) carry the
//! kernel's header fields and integrity superblock, open in the kernel's cryptsetup, read
//! back the plaintext udm wrote, and (wiped) read end to end without a tag error.
//!
//! `integritysetup format` progress output against the real tool (cryptsetup 2.6.1): with
//! `--progress-frequency 1` both print the same lines after the confirmation (Formatted…,
//! Wiping…, `Progress:` lines, `Finished, …`) once numbers are masked, and `--batch-mode
//! --progress-json` prints JSON lines with the same keys in the same order, the last one
//! with `eta_ms` 0 and `device_bytes` equal to `device_size`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use udm_io::Sectors;
use udm_nbd::RemoteDevice;
use udm_testkit::rng::pseudo;

const PASS: &[u8] = b"authenticated";
const DATA: usize = 1 << 20;

fn udm(args: &[&str], stdin: &[u8], socket: Option<&Path>) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_udm"));
    udm_testkit::tool::run_as(bin, "cryptsetup", args, stdin, socket)
}

fn integritysetup(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_udm"));
    udm_testkit::tool::run_as(bin, "integritysetup", args, stdin, None)
}

/// The kernel-made LUKS volumes (name, luksFormat options).
const CASES: [(&str, &str); 2] = [
    (
        "hmac",
        "--cipher aes-xts-random --key-size 512 --integrity hmac-sha256",
    ),
    (
        "aead",
        "--cipher aes-gcm-random --key-size 256 --integrity aead",
    ),
];

/// udm's own volumes (name, luksFormat options, extra options).
const UCASES: [(&str, &str, &str); 3] = [
    ("uhmac", CASES[0].1, ""),
    ("uaead", CASES[1].1, ""),
    ("unowipe", CASES[1].1, "--integrity-no-wipe"),
];

/// What the shared boot left: the guest's transcript and exit code, and the share
/// directory with its output files and the kernel-made volumes `hmac.img`, `aead.img`.
struct Boot {
    share: PathBuf,
    out: String,
    err: String,
    code: i32,
}

impl Boot {
    /// A file the guest wrote to the share.
    fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.share.join(f)).unwrap()
    }

    fn assert_ok(&self) {
        assert_eq!(self.code, 0, "refvm failed:\n{}\n{}", self.out, self.err);
    }
}

/// The one refvm boot of this binary, or None when refvm is not built (a SKIP).
fn boot() -> Option<&'static Boot> {
    static BOOT: OnceLock<Option<Boot>> = OnceLock::new();
    BOOT.get_or_init(|| udm_testkit::refvm().map(|run| run_boot(&run)))
        .as_ref()
}

/// udm formats its own volumes and writes the plaintext, then one boot runs the guest work
/// of both tests. The share lives under the target's tmp dir (a static is never dropped):
/// the images only the guest needed are removed after the boot, the luks test removes the
/// kernel-made ones when done, and the next run starts the directory afresh.
fn run_boot(run: &Path) -> Boot {
    let share = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel_luks_integrity");
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir_all(&share).unwrap();
    let plain = pseudo(DATA, 5);
    std::fs::write(share.join("plain.bin"), &plain).unwrap();
    let uimgs: Vec<_> = UCASES
        .iter()
        .map(|(n, _, _)| udm_testkit::image(&share, &format!("{n}.img"), 32 << 20))
        .collect();
    {
        let daemon =
            udm_testkit::Daemon::start_with(Path::new(env!("CARGO_BIN_EXE_udm")), &["--no-fuse"]);
        let sock = Some(daemon.socket.as_path());
        for ((name, opts, extra), img) in UCASES.iter().zip(&uimgs) {
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
    }

    let imgs: Vec<_> = CASES
        .iter()
        .map(|(n, _)| udm_testkit::image(&share, &format!("{n}.img"), 32 << 20))
        .collect();
    let pass = String::from_utf8(PASS.to_vec()).unwrap();
    let mut script = String::from("set -e\nmodprobe dm-crypt\nmodprobe dm-integrity\n");
    for ((name, opts), dev) in CASES.iter().zip(["/dev/vda", "/dev/vdb"]) {
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
    for ((name, _, extra), dev) in UCASES.iter().zip(["/dev/vdc", "/dev/vdd", "/dev/vde"]) {
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
    // integritysetup format with progress lines, and with JSON progress.
    let pa = udm_testkit::image(&share, "pa.img", 64 << 20);
    let pb = udm_testkit::image(&share, "pb.img", 64 << 20);
    script.push_str(
        "echo YES | integritysetup format --progress-frequency 1 /dev/vdf > real.txt\n\
         integritysetup format --batch-mode --progress-json /dev/vdg > real.json\n",
    );
    let disks: Vec<&Path> = imgs
        .iter()
        .chain(&uimgs)
        .chain([&pa, &pb])
        .map(|p| p.as_path())
        .collect();
    let (out, err, code) = udm_testkit::refvm_run_timeout(run, &disks, Some(&share), &script, 600);
    for p in uimgs.iter().chain([&pa, &pb]) {
        std::fs::remove_file(p).unwrap();
    }
    Boot {
        share,
        out,
        err,
        code,
    }
}

#[test]
fn kernel_luks2_integrity_volumes_open_in_udm() {
    let Some(boot) = boot() else {
        return;
    };
    boot.assert_ok();
    let share = &boot.share;
    let plain = pseudo(DATA, 5);
    let imgs: Vec<PathBuf> = CASES
        .iter()
        .map(|(n, _)| share.join(format!("{n}.img")))
        .collect();
    for (i, (name, _, extra)) in UCASES.iter().enumerate() {
        let read = |f: &str| boot.read(&format!("{name}.{f}"));
        let (kname, _) = CASES[i.min(1)];
        // The same header fields as the kernel's cryptsetup wrote for the same options.
        let ujson: serde_json::Value = serde_json::from_str(&read("json")).unwrap();
        let kjson: serde_json::Value =
            serde_json::from_str(&boot.read(&format!("{kname}.json"))).unwrap();
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
            boot.read(&format!("{kname}.cipher")),
            "{name}"
        );
        assert_eq!(
            read("dif"),
            boot.read(&format!("{kname}.dif")),
            "{name}: integrity table"
        );
        let got = std::fs::read(share.join(format!("{name}.read"))).unwrap();
        assert!(got == plain[..], "{name}: kernel reads other plaintext");
        let whole = if extra.is_empty() { "ok\n" } else { "failed\n" };
        assert_eq!(read("whole"), whole, "{name}: whole-device read");
    }
    let daemon =
        udm_testkit::Daemon::start_with(Path::new(env!("CARGO_BIN_EXE_udm")), &["--no-fuse"]);
    let sock = Some(daemon.socket.as_path());
    let plain2 = pseudo(4096 * 4, 9);
    for ((name, _), img) in CASES.iter().zip(&imgs) {
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
    for img in &imgs {
        std::fs::remove_file(img).unwrap();
    }
}

/// A line with every number replaced by `#` and runs of spaces collapsed (speeds, times
/// and sizes differ between runs and machines, their shape must not).
fn shape(l: &str) -> String {
    let mut s = String::new();
    let mut prev_num = false;
    for c in l.chars() {
        if c.is_ascii_digit() || (c == '.' && prev_num) {
            if !prev_num {
                s.push('#');
            }
            prev_num = true;
        } else {
            prev_num = false;
            if !(c == ' ' && s.ends_with(' ')) {
                s.push(c);
            }
        }
    }
    s.replace("KiB/s", "?iB/s")
        .replace("MiB/s", "?iB/s")
        .replace("GiB/s", "?iB/s")
}

/// The shapes of the lines from `Formatted with` on (the clear-line escape dropped).
fn shapes(out: &str) -> Vec<String> {
    let from = out.find("Formatted with").expect("a Formatted line");
    out[from..].lines().map(shape).collect()
}

/// The keys of a one-line JSON object in their order (the line must parse as JSON with
/// string values).
fn json_keys(line: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(
        v.as_object().unwrap().values().all(|x| x.is_string()),
        "{line}"
    );
    line.trim_start_matches('{')
        .trim_end_matches('}')
        .split("\",\"")
        .map(|kv| {
            kv.trim_start_matches('"')
                .split('"')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn kernel_integritysetup_format_progress_lines() {
    let Some(boot) = boot() else {
        return;
    };
    boot.assert_ok();
    let real = boot.read("real.txt");
    let real_json = boot.read("real.json");
    let dir = tempfile::tempdir().unwrap();

    // udm on a device large enough for the wipe to last over a second here.
    let img = udm_testkit::image(dir.path(), "u.img", 512 << 20);
    let p = img.to_str().unwrap();
    let (code, ours, err) = integritysetup(&["format", "--progress-frequency", "1", p], b"YES\n");
    assert_eq!(code, 0, "{err}");
    let (code, ours_json, err) =
        integritysetup(&["format", "--batch-mode", "--progress-json", p], b"");
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(&img).unwrap();

    let (rs, us) = (shapes(&real), shapes(&ours));
    println!("real:\n{real}\nudm:\n{ours}");
    // Header lines and the Finished line in the same shape; every Progress line of either
    // tool in the one shape the real tool prints.
    assert_eq!(rs[..3], us[..3], "header");
    assert_eq!(rs.last(), us.last(), "Finished line");
    assert!(rs
        .last()
        .unwrap()
        .starts_with("Finished, time #m#s, # MiB written, speed # "));
    let prog: Vec<&String> = rs
        .iter()
        .chain(&us)
        .filter(|l| l.starts_with("Progress"))
        .collect();
    assert!(!prog.is_empty(), "no Progress line from either tool");
    let want = "Progress: #%, ETA #m#s, # MiB written, speed # ?iB/s";
    assert!(prog.iter().all(|l| *l == want), "{prog:?}");
    assert!(
        us.iter().any(|l| l == want),
        "udm printed no Progress line:\n{ours}"
    );
    assert!(real.ends_with('\n') && ours.ends_with('\n'));

    for (name, text) in [("real", &real_json), ("udm", &ours_json)] {
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines.is_empty(), "{name}: no JSON");
        for l in &lines {
            assert_eq!(
                json_keys(l),
                [
                    "device",
                    "device_bytes",
                    "device_size",
                    "speed",
                    "eta_ms",
                    "time_ms"
                ],
                "{name}"
            );
        }
        let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(last["eta_ms"], "0", "{name}");
        assert_eq!(last["device_bytes"], last["device_size"], "{name}");
    }
}
