//! Per-device I/O counters end to end: I/O through the NBD export shows in `udm stats
//! report`/`device` (diskstats layout) and in dm-stats regions made with `udm stats create`
//! and read with `udm stats print`, as the kernel's `@stats_*` messages print them.

use std::path::Path;
use std::process::Command;
use udm_testkit::Daemon;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> String {
    let o = Command::new(bin())
        .args(args)
        .env("UDM_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "udm {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn counters_and_regions_follow_io() {
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    d.create("z", "0 8192 zero");
    let out = udm(&d, &["stats", "create", "z", "--areas", "4"]);
    assert_eq!(
        out.trim(),
        "z: Created new region with 4 area(s) as region ID 0"
    );
    let c = udm_nbd::NbdClient::connect_uri(&d.uri("z")).unwrap();
    let mut buf = vec![0u8; 8192];
    for i in 0..3 {
        c.read(i * 8192, &mut buf).unwrap();
    }
    c.write(1 << 20, &buf, false).unwrap();
    c.flush().unwrap();
    drop(c);
    let f: Vec<u64> = udm(&d, &["stats", "device", "z"])
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 17);
    assert_eq!((f[0], f[2]), (3, 48), "reads, sectors read");
    assert_eq!((f[4], f[6]), (1, 16), "writes, sectors written");
    assert_eq!(f[8], 0, "in flight");
    assert_eq!(f[15], 1, "flushes");
    let report = udm(&d, &["stats", "report"]);
    assert!(report.lines().next().unwrap().starts_with("Name"));
    assert!(report.lines().any(|l| l.starts_with("z ")), "{report}");
    // Region 0 has 4 areas of 2048 sectors: the reads are in area 0, the write in area 1.
    let p = udm(&d, &["stats", "print", "z"]);
    let lines: Vec<&str> = p.lines().collect();
    assert_eq!(lines.len(), 4, "{p}");
    assert!(lines[0].starts_with("0+2048 3 0 48 "), "{p}");
    assert!(lines[1].starts_with("2048+2048 0 0 0 0 1 0 16 "), "{p}");
    let list = udm(&d, &["stats", "list"]);
    assert!(list.lines().nth(1).unwrap().starts_with("z "), "{list}");
    // The raw message works through `udm message` too, as dmstats uses it.
    assert_eq!(
        udm(&d, &["message", "z", "0", "@stats_list"]).trim(),
        "0: 0+8192 2048 - -"
    );
    udm(&d, &["stats", "delete", "z", "--allregions"]);
    assert_eq!(udm(&d, &["stats", "list", "z"]).lines().count(), 1);
}
