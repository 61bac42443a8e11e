//! `udm status --stats`: the device's I/O counters (the daemon's `@diskstats`) under the
//! usual status lines, in /proc/diskstats field order; plain `status` is unchanged.

use std::path::Path;
use std::process::Command;
use udm_testkit::Daemon;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(bin())
        .args(args)
        .env("UDM_SOCKET", &d.socket)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

fn ok(d: &Daemon, args: &[&str]) -> String {
    let (good, out, err) = udm(d, args);
    assert!(good, "udm {args:?}: {err}");
    out
}

/// The numbers on a counters line (after an optional `name: ` prefix).
fn numbers(line: &str) -> Vec<u64> {
    let line = line.split_once(": ").map_or(line, |(_, r)| r);
    line.split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}

#[test]
fn status_stats_prints_counters() {
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    d.create("z", "0 8192 zero");
    d.create("y", "0 4096 zero");
    let c = udm_nbd::NbdClient::connect_uri(&d.uri("z")).unwrap();
    let mut buf = vec![0u8; 8192];
    for i in 0..3 {
        c.read(i * 8192, &mut buf).unwrap();
    }
    c.write(1 << 20, &buf, false).unwrap();
    c.flush().unwrap();
    drop(c);

    let plain = ok(&d, &["status", "z"]);
    assert_eq!(plain, "0 8192 zero \n");
    let with = ok(&d, &["status", "--stats", "z"]);
    let rest = with
        .strip_prefix(&plain)
        .unwrap_or_else(|| panic!("{with}"));
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 2, "{with}");
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(head.len(), 17);
    assert_eq!(
        head[..5],
        ["reads", "rd_merges", "rd_sectors", "rd_ms", "writes"]
    );
    assert_eq!(head[15], "flushes");
    let f = numbers(lines[1]);
    assert_eq!(f.len(), 17);
    assert_eq!((f[0], f[2]), (3, 48), "reads, sectors read");
    assert_eq!((f[4], f[6]), (1, 16), "writes, sectors written");
    assert_eq!(f[8], 0, "in flight");
    assert_eq!(f[15], 1, "flushes");
    // The same numbers as `udm stats device`.
    assert_eq!(f, numbers(ok(&d, &["stats", "device", "z"]).trim()));
    // Plain status did not change, and `table` ignores the switch.
    assert_eq!(ok(&d, &["status", "z"]), plain);
    assert_eq!(ok(&d, &["table", "--stats", "z"]), ok(&d, &["table", "z"]));

    // Every device: each one's lines carry its name, like multi-device status.
    let all = ok(&d, &["status", "--stats"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 6, "{all}");
    assert_eq!(lines[0], "y: 0 4096 zero ");
    assert!(lines[1].starts_with("y: reads "), "{all}");
    assert_eq!(numbers(lines[2])[0], 0, "{all}");
    assert_eq!(lines[3], "z: 0 8192 zero ");
    assert!(lines[4].starts_with("z: reads "), "{all}");
    assert_eq!(numbers(lines[5]), f);

    // A missing device fails as plain status does.
    let (good, out, err) = udm(&d, &["status", "--stats", "nope"]);
    assert!(!good && out.is_empty(), "{out}");
    assert_eq!(err, udm(&d, &["status", "nope"]).2);
}
