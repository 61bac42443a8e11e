//! Device paths holding spaces and backslashes, end to end through `udm` and the daemon:
//! `create` with the path escaped as the kernel's `dm_split_args` reads it (`\ ` and `\\`),
//! `table` prints it back escaped, I/O over NBD reaches the right files, and `reload` +
//! `resume` with the printed text builds the same table.

use std::path::{Path, PathBuf};
use std::process::Command;
use udm_testkit::tool::root_hash;
use udm_testkit::{require_tool, run, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> String {
    run(Command::new(&d.bin).args(args).env("UDM_SOCKET", &d.socket))
}

/// A 1 MiB image filled with `byte` at `dir/name` (directories created).
fn image(dir: &Path, name: &str, byte: u8) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, vec![byte; 1 << 20]).unwrap();
    p
}

/// The path as one table word: backslash and space escaped (written out here rather than
/// with udm's own escaper, so the test checks it).
fn word(p: &Path) -> String {
    p.to_str()
        .unwrap()
        .replace('\\', "\\\\")
        .replace(' ', "\\ ")
}

/// qemu-io's output for `cmd` on the export `name` (fails the test if a command failed);
/// reads open the export read-only.
fn qemu_io(d: &Daemon, name: &str, cmd: &str) -> String {
    let ro: &[&str] = if cmd.starts_with("read") {
        &["-r"]
    } else {
        &[]
    };
    let out = run(Command::new("qemu-io")
        .args(ro)
        .args(["-f", "raw", "-c", cmd])
        .arg(d.uri(name)));
    assert!(
        out.contains(" bytes at offset ") && !out.contains("failed") && !out.contains("error"),
        "qemu-io {cmd}: {out}"
    );
    out
}

fn bytes_at(p: &Path, off: usize, len: usize) -> Vec<u8> {
    std::fs::read(p).unwrap()[off..off + len].to_vec()
}

#[test]
fn spaced_and_backslashed_paths_work_end_to_end() {
    if !require_tool("qemu-io") {
        return;
    }
    let d = Daemon::start(bin());
    let a = image(&d.dir.path().join("x"), "my disk\\ file.img", 0x11);
    let b = image(&d.dir.path().join("y z\\"), "b\\.img", 0x22);
    let (wa, wb) = (word(&a), word(&b));
    assert!(wa.ends_with("/x/my\\ disk\\\\\\ file.img"), "{wa}");
    let table = format!("0 1024 linear {wa} 8\n1024 1024 linear {wb} 0\n");
    udm(&d, &["create", "esc", "--table", &table]);

    // `table` prints the devices escaped, so the text is the table we gave.
    let printed = udm(&d, &["table", "esc"]);
    assert_eq!(printed, table);

    // Reads see each file's bytes; a write across the boundary lands in both files.
    qemu_io(&d, "esc", "read -P 0x11 0 4096");
    qemu_io(&d, "esc", "read -P 0x22 524288 4096");
    qemu_io(&d, "esc", "write -P 0x5a 520192 8192");
    assert_eq!(bytes_at(&a, (8 + 1016) * 512, 4096), vec![0x5a; 4096]);
    assert_eq!(bytes_at(&a, (8 + 1016) * 512 - 1, 1), vec![0x11]);
    assert_eq!(bytes_at(&b, 0, 4096), vec![0x5a; 4096]);
    assert_eq!(bytes_at(&b, 4096, 1), vec![0x22]);

    // Reload with the printed text (lines swapped, to see the new table take effect).
    let lines: Vec<&str> = printed.lines().collect();
    let swapped = format!(
        "0 1024 {}\n1024 1024 {}\n",
        lines[1].splitn(3, ' ').nth(2).unwrap(),
        lines[0].splitn(3, ' ').nth(2).unwrap()
    );
    udm(&d, &["reload", "esc", "--table", &swapped]);
    udm(&d, &["resume", "esc"]);
    assert_eq!(udm(&d, &["table", "esc"]), swapped);
    qemu_io(&d, "esc", "read -P 0x5a 0 4096");
    qemu_io(&d, "esc", "read -P 0x22 4096 4096");
    qemu_io(&d, "esc", "read -P 0x5a 1044480 4096");

    // Reload with exactly the printed text: the first table again.
    udm(&d, &["load", "esc", "--table", &printed]);
    udm(&d, &["resume", "esc"]);
    assert_eq!(udm(&d, &["table", "esc"]), table);
    qemu_io(&d, "esc", "read -P 0x5a 520192 8192");
}

#[test]
fn table_files_keep_escapes() {
    let d = Daemon::start(bin());
    let a = image(&d.dir.path().join("t t"), "a\\ b.img", 0);
    let table = format!("# a comment\n0 16 linear {} 0   \n", word(&a));
    let file = d.dir.path().join("table file");
    std::fs::write(&file, &table).unwrap();
    udm(&d, &["create", "f", file.to_str().unwrap()]);
    assert_eq!(
        udm(&d, &["table", "f"]),
        format!("0 16 linear {} 0\n", word(&a))
    );
    // A path that only works unescaped is refused rather than opened by a wrong name.
    let bad = format!("0 16 linear {} 0", a.display());
    let out = Command::new(&d.bin)
        .args(["create", "g", "--table", &bad])
        .env("UDM_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // The reason is in the kernel-style log, not on dmsetup's stderr.
    let log = Command::new(&d.bin)
        .arg("dmesg")
        .env("UDM_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&log.stdout).contains("linear: Invalid argument count"),
        "{}",
        String::from_utf8_lossy(&log.stdout)
    );
}

#[test]
fn verity_open_names_awkward_image_paths() {
    if !require_tool("qemu-io") {
        return;
    }
    let d = Daemon::start(bin());
    let dir = d.dir.path().join("v \\ w");
    let data = image(&dir, "data 1.img", 0x33);
    let hash = dir.join("hash\\.img");
    let (ds, hs) = (data.to_str().unwrap(), hash.to_str().unwrap());
    let out = udm(&d, &["verity", "format", ds, hs]);
    let root = root_hash(&out);
    udm(&d, &["verity", "open", ds, "v", hs, &root]);
    let t = udm(&d, &["table", "v"]);
    let head = format!("0 2048 verity 1 {} {} 4096 ", word(&data), word(&hash));
    assert!(t.starts_with(&head), "{t}");
    qemu_io(&d, "v", "read -P 0x33 0 1048576");
    udm(&d, &["verity", "close", "v"]);
}
