//! `integritysetup format` progress output against the real tool (cryptsetup 2.6.1 in
//! refvm, one boot): with `--progress-frequency 1` both print the same lines after the
//! confirmation (Formatted…, Wiping…, `Progress:` lines, `Finished, …`) once numbers are
//! masked, and `--batch-mode --progress-json` prints JSON lines with the same keys in the
//! same order, the last one with `eta_ms` 0 and `device_bytes` equal to `device_size`.

use std::path::Path;

fn udm(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_udm"));
    udm_testkit::tool::run_as(bin, "integritysetup", args, stdin, None)
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
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let a = udm_testkit::image(&share, "a.img", 64 << 20);
    let b = udm_testkit::image(&share, "b.img", 64 << 20);
    let script = "set -e\nmodprobe dm-integrity\n\
        echo YES | integritysetup format --progress-frequency 1 /dev/vda > real.txt\n\
        integritysetup format --batch-mode --progress-json /dev/vdb > real.json\n";
    let (out, err, code) = udm_testkit::refvm_run(&run, &[&a, &b], Some(&share), script);
    assert_eq!(code, 0, "refvm:\n{out}\n{err}");
    let real = std::fs::read_to_string(share.join("real.txt")).unwrap();
    let real_json = std::fs::read_to_string(share.join("real.json")).unwrap();
    std::fs::remove_file(&a).unwrap();
    std::fs::remove_file(&b).unwrap();

    // udm on a device large enough for the wipe to last over a second here.
    let img = udm_testkit::image(dir.path(), "u.img", 512 << 20);
    let p = img.to_str().unwrap();
    let (code, ours, err) = udm(&["format", "--progress-frequency", "1", p], b"YES\n");
    assert_eq!(code, 0, "{err}");
    let (code, ours_json, err) = udm(&["format", "--batch-mode", "--progress-json", p], b"");
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
