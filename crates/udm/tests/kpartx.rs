//! `udm kpartx` against the real tools: images partitioned by real `sfdisk` (MBR with primary,
//! extended and logical partitions; GPT), `-l` byte for byte against real `kpartx -l`, `-a`
//! tables computed from sfdisk's own layout and kpartx's rules (and, in refvm, against the
//! tables real kpartx loads into the kernel), data through a partition at the right offset,
//! `-u` and `-d`.

use std::path::{Path, PathBuf};
use std::process::Command;
use udm_testkit::tool::run_tool;
use udm_testkit::{require_tool, run, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

/// The MBR layout: two primaries, an extended partition with two logicals.
const MBR_LAYOUT: &str =
    "label: dos\n2048,8192,83\n10240,20480,83\n30720,,5\n32768,4096,83\n38912,8192,82\n";
/// The GPT layout: three partitions.
const GPT_LAYOUT: &str = "label: gpt\n2048,8192\n10240,20480\n,4096\n";

/// A 64 MiB image partitioned by real sfdisk.
fn partitioned(dir: &Path, name: &str, layout: &str) -> PathBuf {
    let p = udm_testkit::image(dir, name, 64 << 20);
    let (code, _, err) = run_tool("sfdisk", &["-q", p.to_str().unwrap()], layout.as_bytes());
    assert_eq!(code, 0, "sfdisk failed: {err}");
    p
}

/// One partition as sfdisk reports it.
struct SfPart {
    n: u32,
    start: u64,
    size: u64,
    extended: bool,
}

/// sfdisk's own view of the image (`sfdisk -J`).
fn sfdisk_layout(img: &Path) -> Vec<SfPart> {
    let out = run(Command::new("sfdisk").arg("-J").arg(img));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &v["partitiontable"];
    let dev = t["device"].as_str().unwrap();
    t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let num = node.strip_prefix(dev).unwrap().trim_start_matches('p');
            let ty = p["type"].as_str().unwrap();
            SfPart {
                n: num.parse().unwrap(),
                start: p["start"].as_u64().unwrap(),
                size: p["size"].as_u64().unwrap(),
                extended: t["label"] == "dos" && matches!(ty, "5" | "f" | "85"),
            }
        })
        .collect()
}

/// The `dmsetup table` kpartx's rules give for `sfdisk`'s layout: `NAME<delim>N`, every
/// partition (logical ones too) linear over the whole disk at its absolute start, the extended
/// partition as 2 sectors; sorted by name as `table` prints.
fn expected_tables(img: &Path, name: &str, devarg: &str) -> String {
    let delim = if name.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    let mut lines: Vec<(String, String)> = sfdisk_layout(img)
        .iter()
        .map(|p| {
            let size = if p.extended { 2 } else { p.size };
            let n = format!("{name}{delim}{}", p.n);
            let l = format!("{n}: 0 {size} linear {devarg} {}\n", p.start);
            (n, l)
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, l)| l).collect()
}

/// A loop device over an image, detached when dropped.
struct Loop(String);

impl Loop {
    /// `losetup -f --show IMG`; `None` (SKIP) where loop devices cannot be made (not root).
    fn attach(img: &Path) -> Option<Loop> {
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(img)
            .output()
            .expect("run losetup");
        if !o.status.success() {
            let why = String::from_utf8_lossy(&o.stderr);
            if std::env::var("UDM_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("losetup failed (UDM_REQUIRE_TOOLS=1): {why}");
            }
            eprintln!("SKIP: cannot attach a loop device: {why}");
            return None;
        }
        Some(Loop(
            String::from_utf8(o.stdout).unwrap().trim().to_string(),
        ))
    }
    fn name(&self) -> &str {
        self.0.trim_start_matches("/dev/")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn tools(list: &[&str]) -> bool {
    list.iter().all(|t| require_tool(t))
}

/// Real `kpartx -l` stdout (its stderr has libdevmapper's complaints where there is no
/// kernel device-mapper; `-l` does not need it).
fn real_list(dev: &Path) -> String {
    let o = Command::new("kpartx").arg("-l").arg(dev).output().unwrap();
    assert!(o.status.success(), "kpartx -l: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

fn udm_list(dev: &Path) -> String {
    let o = Command::new(bin())
        .args(["kpartx", "-l"])
        .arg(dev)
        .output()
        .unwrap();
    assert!(o.status.success(), "udm kpartx -l: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// (stdout, stderr) of real `kpartx -l` and of `udm kpartx -l`; libdevmapper's lines about
/// the missing kernel driver are dropped from the real stderr.
fn both_lists(dev: &Path) -> ((String, String), (String, String)) {
    let real = Command::new("kpartx").arg("-l").arg(dev).output().unwrap();
    let ours = Command::new(bin())
        .args(["kpartx", "-l"])
        .arg(dev)
        .output()
        .unwrap();
    assert_eq!(real.status.code(), ours.status.code());
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let real_err: String = s(&real.stderr)
        .lines()
        .filter(|l| !l.contains("device-mapper") && !l.contains("libdevmapper"))
        .filter(|l| !l.starts_with("/dev/mapper/control"))
        .map(|l| format!("{l}\n"))
        .collect();
    (
        (s(&real.stdout), real_err),
        (s(&ours.stdout), s(&ours.stderr)),
    )
}

/// Damaged and unusual disks: a corrupt primary GPT header (the backup is used, with the
/// same warning), a grown disk (the backup not at the end: the same warnings), and 4096-byte
/// sectors (GPT and DOS with a logical partition) — stdout and warnings as real kpartx.
#[test]
fn list_backup_gpt_grown_disk_and_4k_sectors_match_real_kpartx() {
    if !tools(&["sfdisk", "kpartx", "losetup"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = partitioned(dir.path(), "c", GPT_LAYOUT);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&[0xff], 512 + 40).unwrap(); // primary header CRC now wrong
    }
    let Some(lo) = Loop::attach(&img) else {
        return;
    };
    let (real, ours) = both_lists(Path::new(&lo.0));
    assert_eq!(real.1, "Primary GPT is invalid, using alternate GPT.\n");
    assert_eq!(real.0.lines().count(), 3);
    assert_eq!(ours, real);
    drop(lo);

    let img = partitioned(dir.path(), "g", GPT_LAYOUT);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(80 << 20)
        .unwrap();
    let lo = Loop::attach(&img).unwrap();
    let (real, ours) = both_lists(Path::new(&lo.0));
    assert!(
        real.1.contains("GPT:Alternate GPT header not at the end"),
        "{}",
        real.1
    );
    assert_eq!(ours, real);
    drop(lo);

    for layout in [
        "label: gpt\n256,1024\n2048,\n",
        "label: dos\n256,1024,83\n2048,4096,5\n2304,512,83\n",
    ] {
        let img = udm_testkit::image(dir.path(), "s4k", 64 << 20);
        let o = Command::new("losetup")
            .args(["-b", "4096", "-f", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let lo = Loop(String::from_utf8(o.stdout).unwrap().trim().to_string());
        // (sfdisk may fail to make the kernel re-read the loop device's table; not needed.)
        run_tool("sfdisk", &["-q", "--no-reread", &lo.0], layout.as_bytes());
        let (real, ours) = both_lists(Path::new(&lo.0));
        assert!(real.0.contains(" 2048\n"), "{}", real.0); // 256 × 8
        assert_eq!(ours, real, "{layout}");
    }
}

fn list_same_as_real(layout: &str) {
    if !tools(&["sfdisk", "kpartx", "losetup"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = partitioned(dir.path(), "disk", layout);
    let Some(lo) = Loop::attach(&img) else {
        return;
    };
    let real = real_list(Path::new(&lo.0));
    let ours = udm_list(Path::new(&lo.0));
    assert!(real.lines().count() >= 3, "real kpartx listed: {real}");
    assert_eq!(ours, real, "udm kpartx -l vs kpartx -l on {}", lo.0);
    drop(lo);

    // On the image file itself real kpartx makes a loop device and names everything after
    // it; udm names the partitions after the file. Only the device path and name differ.
    let img0 = partitioned(dir.path(), "img0", layout);
    let real = real_list(&img0);
    let ours = udm_list(&img0);
    let first = real.split_whitespace().nth(4).unwrap().to_string();
    assert!(first.starts_with("/dev/loop"), "{real}");
    let lname = first.trim_start_matches("/dev/");
    let norm = real
        .replace(&first, &img0.display().to_string())
        .replace(lname, "img0");
    assert_eq!(ours, norm);
}

#[test]
fn list_mbr_with_logicals_matches_real_kpartx() {
    list_same_as_real(MBR_LAYOUT);
}

#[test]
fn list_gpt_matches_real_kpartx() {
    list_same_as_real(GPT_LAYOUT);
}

/// The partitions' UUIDs, `name uuid` per line.
fn uuids(d: &Daemon) -> Vec<(String, String)> {
    let out = d.udm_ok(&[
        "info",
        "-c",
        "--noheadings",
        "-o",
        "name,uuid",
        "--separator",
        " ",
    ]);
    let mut v: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            let n = w.next().unwrap().to_string();
            (n, w.next().unwrap_or("").to_string())
        })
        .collect();
    v.sort();
    v
}

fn nbd_write(d: &Daemon, name: &str, off: u64, data: &[u8]) {
    let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, name).unwrap();
    c.write(off, data, true).unwrap();
    c.flush().unwrap();
}

fn file_at(img: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0; len];
    std::fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

#[test]
fn add_mbr_image_tables_data_and_delete() {
    if !tools(&["sfdisk"]) {
        return;
    }
    let d = Daemon::start(bin());
    let img = partitioned(d.dir.path(), "disk.img", MBR_LAYOUT);
    let path = img.display().to_string();
    let out = d.udm_ok(&["kpartx", "-av", &path]);
    assert_eq!(
        out.lines().next().unwrap(),
        format!("add map disk.img1 (253:0): 0 8192 linear {path} 2048")
    );
    assert_eq!(out.lines().count(), 5, "{out}");
    let want = expected_tables(&img, "disk.img", &path);
    assert!(want.contains("disk.img3: 0 2 linear"), "{want}");
    assert!(want.contains("disk.img5: 0 4096 linear"), "{want}");
    assert_eq!(d.udm_ok(&["table"]), want);
    for (name, uuid) in uuids(&d) {
        let n = name.strip_prefix("disk.img").unwrap();
        assert!(uuid.starts_with(&format!("part{n}-file_")), "{name} {uuid}");
        assert!(uuid.ends_with("_Wh5pYvM"), "{uuid}");
    }

    // Data through the logical partition 5 and primary 2 lands at their absolute offsets.
    nbd_write(&d, "disk.img5", 4096, &[0x5a; 4096]);
    nbd_write(&d, "disk.img2", 0, &[0xa5; 512]);
    assert_eq!(file_at(&img, 32768 * 512 + 4096, 4096), vec![0x5a; 4096]);
    assert_eq!(file_at(&img, 10240 * 512, 512), vec![0xa5; 512]);
    assert_eq!(file_at(&img, 32768 * 512, 512), vec![0; 512]);

    // A second -a reloads the same maps; -d removes every one of them.
    d.udm_ok(&["kpartx", "-a", &path]);
    assert_eq!(d.udm_ok(&["table"]), want);
    let out = d.udm_ok(&["kpartx", "-dv", &path]);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("del devmap : "))
            .count(),
        5
    );
    assert_eq!(d.udm_ok(&["ls"]), "No devices found\n");
}

#[test]
fn gpt_update_removes_deleted_partitions() {
    if !tools(&["sfdisk"]) {
        return;
    }
    let d = Daemon::start(bin());
    let img = partitioned(d.dir.path(), "gdisk0", GPT_LAYOUT);
    let path = img.display().to_string();
    d.udm_ok(&["kpartx", "-a", "-p", "-part", &path]);
    assert_eq!(
        d.udm_ok(&["table"]),
        expected_tables(&img, "gdisk0-part", &path)
    );
    assert!(d.udm_ok(&["table"]).contains("gdisk0-part3: 0 4096 linear"));
    run(Command::new("sfdisk")
        .arg("-q")
        .arg("--delete")
        .arg(&img)
        .arg("2"));
    let out = d.udm_ok(&["kpartx", "-uv", "-p", "-part", &path]);
    assert!(out.contains("del devmap : gdisk0-part2\n"), "{out}");
    let t = d.udm_ok(&["table"]);
    assert!(!t.contains("gdisk0-part2"), "{t}");
    assert!(t.contains("gdisk0-part3: 0 4096 linear"), "{t}");
    d.udm_ok(&["kpartx", "-d", &path]);
    assert_eq!(d.udm_ok(&["ls"]), "No devices found\n");
}

#[test]
fn udm_device_parent_uuid_readonly_and_delete() {
    if !tools(&["sfdisk"]) {
        return;
    }
    let d = Daemon::start(bin());
    let img = partitioned(d.dir.path(), "disk", MBR_LAYOUT);
    let path = img.display().to_string();
    d.udm_ok(&[
        "create",
        "whole",
        "--uuid",
        "WHOLE-UUID-1",
        "--table",
        &format!("0 131072 linear {path} 0"),
    ]);
    // -l on a udm device reads it through the daemon.
    let l = d.udm_ok(&["kpartx", "-l", "/dev/mapper/whole"]);
    assert_eq!(
        l,
        "whole1 : 0 8192 /dev/mapper/whole 2048\nwhole2 : 0 20480 /dev/mapper/whole 10240\n\
         whole3 : 0 2 /dev/mapper/whole 30720\nwhole5 : 0 4096 /dev/dm-2 2048\n\
         whole6 : 0 8192 /dev/dm-2 8192\n"
    );
    d.udm_ok(&["kpartx", "-a", "-r", "/dev/mapper/whole"]);
    let t = d.udm_ok(&["table"]);
    assert!(t.contains("whole5: 0 4096 linear 253:0 32768\n"), "{t}");
    assert!(t.contains("whole3: 0 2 linear 253:0 30720\n"), "{t}");
    let u = uuids(&d);
    assert!(
        u.contains(&("whole5".into(), "part5-WHOLE-UUID-1".into())),
        "{u:?}"
    );
    let info = d.udm_ok(&["info", "whole1"]);
    assert!(info.contains("READ-ONLY"), "{info}");
    d.udm_ok(&["kpartx", "-d", "/dev/mapper/whole"]);
    assert_eq!(d.udm_ok(&["ls"]), "whole\t(253:0)\n");
}

#[test]
fn loop_device_parent_maps_by_device_number() {
    if !tools(&["sfdisk", "losetup"]) {
        return;
    }
    let d = Daemon::start(bin());
    let img = partitioned(d.dir.path(), "disk", MBR_LAYOUT);
    let Some(lo) = Loop::attach(&img) else {
        return;
    };
    let st = std::fs::metadata(&lo.0).unwrap();
    use std::os::unix::fs::MetadataExt;
    let devarg = format!("{}:{}", libc::major(st.rdev()), libc::minor(st.rdev()));
    d.udm_ok(&["kpartx", "-sa", &lo.0]);
    assert_eq!(
        d.udm_ok(&["table"]),
        expected_tables(&img, lo.name(), &devarg)
    );
    let u = uuids(&d);
    let p1 = format!("{}p1", lo.name());
    assert!(
        u.contains(&(p1, format!("part1-devnode_{devarg}_Wh5pYvM"))),
        "{u:?}"
    );
    d.udm_ok(&["kpartx", "-d", &lo.0]);
    assert_eq!(d.udm_ok(&["ls"]), "No devices found\n");
}

#[test]
fn bad_arguments_as_kpartx() {
    let o = Command::new(bin()).arg("kpartx").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("kpartx [-a|-d|-u|-l]"));
    let o = Command::new(bin())
        .args(["kpartx", "-l", "/nonexistent/disk"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(o.stdout, b"failed to stat() /nonexistent/disk\n");
    // An image without a partition table lists nothing.
    let dir = tempfile::tempdir().unwrap();
    let img = udm_testkit::image(dir.path(), "blank", 1 << 20);
    assert_eq!(udm_list(&img), "");
    // Through a link named `kpartx` the binary is kpartx.
    let link = dir.path().join("kpartx");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let o = Command::new(&link).arg("-z").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("multipath-tools v0.9.4"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid option -- 'z'"));
}

/// In refvm: real kpartx (the host's binary, run in the guest) loads its maps into the
/// kernel; `udm kpartx -a` on the same image loads the same tables (the disk named by path
/// instead of 254:N; the made-up parent UUID aside).
#[test]
fn kernel_add_tables_match_real_kpartx() {
    let Some(vm) = udm_testkit::refvm() else {
        return;
    };
    if !tools(&["sfdisk", "kpartx"]) {
        return;
    }
    let d = Daemon::start(bin());
    let share = d.dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::copy(udm_testkit::which("kpartx").unwrap(), share.join("kpartx")).unwrap();
    for (name, layout) in [("vda", MBR_LAYOUT), ("vdb", GPT_LAYOUT)] {
        let img = partitioned(d.dir.path(), name, layout);
        let script = "modprobe dm-mod; /mnt/share/kpartx -a /dev/vda && dmsetup table && \
                      dmsetup info -c --noheadings -o name,uuid --separator ' ' && \
                      /mnt/share/kpartx -d /dev/vda && dmsetup ls";
        let (out, err, code) = udm_testkit::refvm_run(&vm, &[&img], Some(&share), script);
        assert_eq!(code, 0, "refvm: {out}\n{err}");
        let path = img.display().to_string();
        let at = out
            .find("vda1 part1-")
            .unwrap_or_else(|| panic!("refvm: {out}\n{err}"));
        let (tables, rest) = out.split_at(at);
        let kernel = tables.replace("254:0", &path).replace("vda", name);
        assert!(rest.ends_with("No devices found\n"), "{rest}");
        d.udm_ok(&["kpartx", "-a", &path]);
        assert_eq!(d.udm_ok(&["table"]), kernel);
        let ours = uuids(&d);
        assert_eq!(ours.len() + 1, rest.lines().count(), "{rest}");
        for (line, (n, u)) in rest.lines().zip(ours) {
            let (kn, ku) = line.split_once(' ').unwrap();
            assert_eq!(kn.replace("vda", name), n);
            let prefix = |s: &str| s.split('-').next().unwrap().to_string();
            assert_eq!(prefix(ku), prefix(&u), "{ku} vs {u}");
        }
        d.udm_ok(&["kpartx", "-d", &path]);
    }
}
