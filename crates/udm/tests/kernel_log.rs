//! The kernel-style log (`udm dmesg`) and other kernel behaviours of the control plane:
//! failures keep dmsetup's stderr as libdm prints it and put the kernel's reason in the log
//! (with the logging module's prefix: `table`, `ioctl`, `core`, or the target's name), the
//! daemon logs the same lines, and `target-version` loads a target module on demand.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use udm_testkit::Daemon;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> Output {
    Command::new(&d.bin)
        .args(args)
        .env("UDM_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn dmesg(d: &Daemon, args: &[&str]) -> String {
    let mut a = vec!["dmesg"];
    a.extend_from_slice(args);
    let o = udm(d, &a);
    assert!(o.status.success(), "{o:?}");
    text(&o.stdout)
}

fn disk(d: &Daemon) -> PathBuf {
    udm_testkit::image(d.dir.path(), "disk.img", 8 << 20)
}

fn p(x: &Path) -> String {
    x.display().to_string()
}

#[test]
fn table_failure_reason_goes_to_the_log_not_stderr() {
    let d = Daemon::start(&bin());
    let img = disk(&d);
    dmesg(&d, &["-C"]);
    let o = udm(
        &d,
        &[
            "create",
            "v",
            "--table",
            &format!("0 8 linear {} 0 0", p(&img)),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    // As dmsetup's stderr when it is not a terminal: libdm's lines only.
    assert_eq!(
        text(&o.stderr),
        "device-mapper: reload ioctl on v (253:0) failed: Invalid argument\nCommand failed.\n"
    );
    let log = dmesg(&d, &[]);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!(
        lines[0],
        "device-mapper: table: 253:0: linear: Invalid argument count (-EINVAL)"
    );
    assert_eq!(
        lines[1],
        "device-mapper: ioctl: error adding target to table"
    );
    // The daemon logs the same lines.
    assert!(d.log().contains("linear: Invalid argument count (-EINVAL)"));
    // -c prints and clears; -C only clears.
    assert_eq!(dmesg(&d, &["-c"]), log);
    assert_eq!(dmesg(&d, &[]), "");
}

#[test]
fn target_messages_carry_the_target_prefix() {
    let d = Daemon::start(&bin());
    let img = disk(&d);
    d.create("du", &format!("0 2048 dust {} 0 512", p(&img)));
    dmesg(&d, &["-C"]);
    assert!(udm(&d, &["message", "du", "0", "addbadblock", "60"])
        .status
        .success());
    assert!(udm(&d, &["message", "du", "0", "enable"]).status.success());
    let o = udm(&d, &["message", "du", "0", "addbadblock", "60"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!text(&o.stderr).contains("dust"), "{}", text(&o.stderr));
    // Messages to a target without a message handler are refused by dm-ioctl itself.
    d.create("z", "0 8 zero");
    assert_eq!(udm(&d, &["message", "z", "0", "x"]).status.code(), Some(1));
    assert_eq!(
        dmesg(&d, &[]),
        "device-mapper: dust: dust_add_block: badblock added at block 60 with write fail count 0\n\
         device-mapper: dust: enabling read failures on bad sectors\n\
         device-mapper: dust: dust_add_block: block 60 already in badblocklist\n\
         device-mapper: ioctl: Target type does not support messages\n"
    );
}

#[test]
fn unparsable_geometry_is_refused_by_the_daemon() {
    let d = Daemon::start(&bin());
    d.create("z", "0 8 zero");
    dmesg(&d, &["-C"]);
    let o = udm(&d, &["setgeometry", "z", "a", "b", "c", "d"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "device-mapper: setgeometry ioctl on z  failed: Invalid argument\nCommand failed.\n"
    );
    assert_eq!(
        dmesg(&d, &[]),
        "device-mapper: ioctl: Unable to interpret geometry settings.\n"
    );
}

#[test]
fn target_version_loads_the_module() {
    let d = Daemon::start(&bin());
    let before = text(&udm(&d, &["targets"]).stdout);
    assert!(!before.contains("dust"), "{before}");
    let o = udm(&d, &["target-version", "dust"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(text(&o.stdout), "dust             v1.0.0\n");
    // Newest registration first, as the kernel lists them.
    let after = text(&udm(&d, &["targets"]).stdout);
    assert!(after.starts_with("dust "), "{after}");
    let o = udm(&d, &["target-version", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "device-mapper: target-version ioctl on nosuch  failed: Invalid argument\nCommand failed.\n"
    );
}

#[test]
fn resumed_device_without_table_has_a_node_that_fails_with_enxio() {
    let d = Daemon::start(&bin());
    assert!(udm(&d, &["create", "empty", "--notable"]).status.success());
    let o = udm(&d, &["info", "empty"]);
    assert_eq!(
        text(&o.stderr),
        "/dev/mapper/empty: open failed: No such file or directory\n"
    );
    assert!(udm(&d, &["resume", "empty"]).status.success());
    let o = udm(&d, &["info", "empty"]);
    assert!(o.status.success());
    assert_eq!(
        text(&o.stderr),
        "/dev/mapper/empty: open failed: No such device or address\n"
    );
}

#[test]
fn crypt_area_must_be_aligned_to_its_sector_size() {
    let d = Daemon::start(&bin());
    let img = disk(&d);
    let key = "0123456789abcdef".repeat(4);
    dmesg(&d, &["-C"]);
    let o = udm(
        &d,
        &[
            "create",
            "c",
            "--table",
            &format!(
                "0 8 crypt aes-xts-plain64 {key} 0 {} 3 1 sector_size:4096",
                p(&img)
            ),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(
        text(&o.stderr),
        "device-mapper: reload ioctl on c (253:0) failed: Invalid argument\nCommand failed.\n"
    );
    assert_eq!(
        dmesg(&d, &[]),
        format!(
            "device-mapper: table: 253:0: start=3 not aligned to h/w logical block size 4096 of {}\n\
             device-mapper: core: Cannot calculate initial queue limits\n\
             device-mapper: ioctl: unable to set up device queue for new table.\n",
            p(&img)
        )
    );
    // The same table at an aligned offset loads.
    d.create(
        "c",
        &format!(
            "0 8 crypt aes-xts-plain64 {key} 0 {} 8 1 sector_size:4096",
            p(&img)
        ),
    );
}

#[test]
fn self_referencing_table_loads_but_never_goes_live() {
    let d = Daemon::start(&bin());
    d.create("ro", "0 8 zero");
    // As the kernel: the load succeeds and the inactive table holds the device open.
    let o = udm(&d, &["load", "ro", "--table", "0 8 linear 253:0 0"]);
    assert!(o.status.success(), "{o:?}");
    let info = text(&udm(&d, &["info", "ro"]).stdout);
    assert!(
        info.contains("Tables present:    LIVE & INACTIVE"),
        "{info}"
    );
    assert!(info.contains("Open count:        1"), "{info}");
    // Its first I/O would loop forever: udm refuses to make it live.
    let o = udm(&d, &["resume", "ro"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(udm(&d, &["clear", "ro"]).status.success());
    let info = text(&udm(&d, &["info", "ro"]).stdout);
    assert!(info.contains("Open count:        0"), "{info}");
    assert!(udm(&d, &["remove", "ro"]).status.success());
}

#[test]
fn on_a_terminal_the_reason_follows_dmsetups_lines() {
    if !udm_testkit::require_tool("script") {
        return;
    }
    let d = Daemon::start(&bin());
    let img = disk(&d);
    // `script` gives the command a terminal; its output is what the terminal showed.
    let cmd = format!(
        "{} create v --table '0 8 linear {} 0 0'",
        bin().display(),
        p(&img)
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("UDM_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(
        text(&o.stdout).replace("\r\n", "\n"),
        "device-mapper: reload ioctl on v (253:0) failed: Invalid argument\n\
         Command failed.\n\
         device-mapper: table: 253:0: linear: Invalid argument count (-EINVAL)\n"
    );
}
