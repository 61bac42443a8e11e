//! Differential test against the kernel's dm-mirror and dm-multipath (refvm, 6.1), every
//! case in ONE boot: the same tables, writes and messages give identical status and table
//! lines (devices mapped from udm's image paths to the guest's `major:minor`), legs and
//! disk logs byte for byte (also after a leg dies under writes), a path failed by I/O errors,
//! hardware-handler arguments dropped in bio mode, and the same constructor error texts.
//!
//! Skips without refvm, fails then under `UDM_REQUIRE_TOOLS=1`.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use udm_core::StatusType;
use udm_testkit::rng::pseudo;

const SECTORS: u64 = 8192;
/// (sector, sectors) of the writes both sides do, through the mapped device.
const WRITES: &[(u64, u64)] = &[(0, 8), (1000, 16), (1023, 2), (4096, 64), (8184, 8)];

struct Disks {
    files: Vec<PathBuf>,
}

impl Disks {
    /// Guest name (`/dev/vdX`) of disk `i`.
    fn vd(i: usize) -> String {
        format!("/dev/vd{}", (b'a' + i as u8) as char)
    }
}

/// The lines `<tag> <rest>` of the guest's output, by tag.
fn tagged(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, r)| (t.to_string(), r.to_string()))
        .collect()
}

fn udm_line(
    reg: &udm_core::Registry,
    name: &str,
    ty: StatusType,
    map: &[(String, String)],
) -> String {
    let (_, st) = reg.status(&sel(name), false, ty).unwrap();
    let t = &st[0];
    let mut line = format!("{} {} {} {}", t.start, t.len, t.ttype, t.params);
    for (from, to) in map {
        line = line.replace(from.as_str(), to);
    }
    line
}

fn wait_sync(reg: &udm_core::Registry, name: &str, want: &str) {
    let t = Instant::now();
    while !status_fields(reg, name).iter().any(|f| f == want) {
        assert!(t.elapsed() < Duration::from_secs(60), "{name}: no {want}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The kernel's error text from a `device-mapper: table: …: <target>: <text> (-E…)` line.
fn kernel_error<'a>(out: &'a str, tag: &str) -> &'a str {
    let l = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{tag} ")))
        .unwrap_or_else(|| panic!("no {tag} in:\n{out}"));
    let l = l
        .split_once(": mirror: ")
        .or(l.split_once(": multipath: "))
        .map(|x| x.1)
        .unwrap_or(l);
    l.rsplit_once(" (-").map(|x| x.0).unwrap_or(l)
}

#[test]
fn kernel_mirror_multipath_match_udm() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path();
    let bytes = SECTORS * 512;
    // Disks: 0,1 legs (nosync disk-log case), 2 its log, 3,4 legs (resync case), 5 its
    // log; both sides start from the same contents.
    let init: Vec<Vec<u8>> = vec![
        vec![0; bytes as usize],
        vec![0; bytes as usize],
        vec![0; 4096],
        pseudo(bytes as usize, 0x31),
        vec![0x5a; bytes as usize],
        vec![0; 4096],
    ];
    let mk = |side: &str| Disks {
        files: init
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let p = share.join(format!("{side}{i}.img"));
                std::fs::write(&p, d).unwrap();
                p
            })
            .collect(),
    };
    let (k, u) = (mk("k"), mk("u"));
    let data = pseudo(64 * 512, 0x77);
    std::fs::write(share.join("w.bin"), &data).unwrap();
    let vd = Disks::vd;
    let t_nosync = |d: &dyn Fn(usize) -> String| {
        format!(
            "0 {SECTORS} mirror disk 3 {} 1024 nosync 2 {} 0 {} 0 1 handle_errors",
            d(2),
            d(0),
            d(1)
        )
    };
    let t_sync = |d: &dyn Fn(usize) -> String| {
        format!(
            "0 {SECTORS} mirror disk 2 {} 512 2 {} 0 {} 0",
            d(5),
            d(3),
            d(4)
        )
    };
    let t_core = |d: &dyn Fn(usize) -> String| {
        format!(
            "0 8000 mirror core 2 1024 nosync 3 {} 0 {} 8 {} 0 2 handle_errors keep_log",
            d(0),
            d(1),
            d(3)
        )
    };
    let t_fail = |d: &dyn Fn(usize) -> String| {
        let kb = if d(0).starts_with("/dev/vd") {
            "/dev/mapper/kb"
        } else {
            "/dev/mapper/ub"
        };
        format!(
            "0 {SECTORS} mirror core 2 1024 nosync 2 {} 0 {kb} 0 2 handle_errors keep_log",
            d(0)
        )
    };
    let t_p1 = |d: &dyn Fn(usize) -> String| {
        format!(
            "0 {SECTORS} multipath 0 0 2 1 round-robin 0 1 1 {} 1000 round-robin 0 1 1 {} 1000",
            d(0),
            d(1)
        )
    };
    let t_p2 = |d: &dyn Fn(usize) -> String| {
        format!(
            "0 {SECTORS} multipath 3 queue_if_no_path pg_init_retries 5 0 1 1 service-time 0 2 2 {} 1 1 {} 2 1",
            d(0),
            d(1)
        )
    };
    let t_p3 = |d: &dyn Fn(usize) -> String| {
        format!(
            "0 {SECTORS} multipath 2 queue_mode bio 0 1 1 queue-length 0 2 1 {} 1 {} 1",
            d(4),
            d(1)
        )
    };
    let t_p6 = |d: &dyn Fn(usize) -> String| {
        let kb = if d(0).starts_with("/dev/vd") {
            "/dev/mapper/kb"
        } else {
            "/dev/mapper/ub"
        };
        format!(
            "0 {SECTORS} multipath 2 queue_mode bio 0 1 1 round-robin 0 2 1 {kb} 1 {} 1",
            d(3)
        )
    };
    let t_p7 = |d: &dyn Fn(usize) -> String| {
        format!(
            "0 {SECTORS} multipath 3 queue_mode bio queue_if_no_path 2 alua x 2 2 round-robin 0 1 1 {} 1 queue-length 0 1 1 {} 1",
            d(3),
            d(4)
        )
    };
    let p1_msgs = [
        format!("fail_path {}", vd(0)),
        "reinstate_path VD0".to_string(),
        "switch_group 2".to_string(),
        "disable_group 1".to_string(),
        "enable_group 1".to_string(),
    ];
    let bad: Vec<String> = vec![
        format!("0 {SECTORS} mirror core 1 1000 2 {} 0 {} 0", vd(0), vd(1)),
        format!(
            "0 {SECTORS} mirror core 1 1024 2 {} 0 {} 0 1 keep_log",
            vd(0),
            vd(1)
        ),
        format!("0 {SECTORS} mirror core 1 1024 1 {} 0", vd(0)),
        format!(
            "0 {SECTORS} mirror core 1 1024 2 {} 0 {} 0 0 x",
            vd(0),
            vd(1)
        ),
        format!("0 {SECTORS} mirror core 1 1024 2 {} 0 {} x", vd(0), vd(1)),
        format!(
            "0 {SECTORS} multipath 0 0 2 1 round-robin 0 1 1 {} 1",
            vd(0)
        ),
        format!(
            "0 {SECTORS} multipath 1 bogus 0 1 1 round-robin 0 1 1 {} 1",
            vd(0)
        ),
        format!(
            "0 {SECTORS} multipath 0 0 1 1 round-robin 0 1 1 {} 1 2",
            vd(0)
        ),
        format!(
            "0 {SECTORS} multipath 0 0 1 1 service-time 0 1 2 {} 1 200",
            vd(0)
        ),
        format!(
            "0 {SECTORS} multipath 0 1 alua 1 1 round-robin 0 1 1 {} 1",
            vd(0)
        ),
        format!(
            "0 {SECTORS} multipath 1 queue_mode 0 1 1 round-robin 0 1 1 {} 1",
            vd(0)
        ),
    ];

    let mut s = String::from(
        "set -e\nmodprobe dm-mirror; modprobe dm-multipath; modprobe dm-round-robin; \
         modprobe dm-queue-length; modprobe dm-service-time\n\
         for d in a b c d e f; do echo \"DEV$d $(cat /sys/block/vd$d/dev)\"; done\n\
         wsync() { for i in $(seq 1 600); do dmsetup status $1 | grep -q \" $2 \" && return 0; sleep 0.1; done; echo \"$1 stuck\"; return 1; }\n\
         writes() { ",
    );
    for (sec, n) in WRITES {
        s += &format!(
            "dd if=w.bin of=/dev/mapper/$1 bs=512 seek={sec} count={n} oflag=direct conv=notrunc status=none; "
        );
    }
    s += "}\n";
    s += &format!("dmsetup create m1 --table \"{}\"\n", t_nosync(&vd));
    s += "echo \"M1S0 $(dmsetup status m1)\"\nwrites m1\necho \"M1S1 $(dmsetup status m1)\"\necho \"M1T $(dmsetup table m1)\"\ndmsetup remove m1\n";
    s += &format!(
        "dmsetup create m2 --table \"{}\"\nwsync m2 16/16\n",
        t_sync(&vd)
    );
    s += "writes m2\necho \"M2S $(dmsetup status m2)\"\necho \"M2T $(dmsetup table m2)\"\ndmsetup remove m2\n";
    s += &format!(
        "dmsetup create m3 --table \"{}\"\nwsync m3 8/8\n",
        t_core(&vd)
    );
    s += "echo \"M3S $(dmsetup status m3)\"\necho \"M3T $(dmsetup table m3)\"\ndmsetup remove m3\n";
    // A leg that dies: writes go on, the leg is marked D, its regions fall out of sync.
    s += &format!(
        "dmsetup create kb --table \"0 {SECTORS} linear {} 0\"\n",
        vd(1)
    );
    s += "echo \"KB $(dmsetup info -c --noheadings -o major,minor kb)\"\n";
    s += &format!("dmsetup create m4 --table \"{}\"\n", t_fail(&vd));
    s += "dd if=w.bin of=/dev/mapper/m4 bs=512 seek=0 count=8 oflag=direct conv=notrunc status=none\n";
    s += &format!("dmsetup reload kb --table \"0 {SECTORS} error\"\ndmsetup resume kb\n");
    s += "dd if=w.bin of=/dev/mapper/m4 bs=512 seek=2048 count=8 oflag=direct conv=notrunc status=none\nsleep 1\n";
    s += "echo \"M4S $(dmsetup status m4)\"\n";
    s += "dd if=/dev/mapper/m4 of=/dev/null bs=4096 count=1 skip=256 iflag=direct status=none\n";
    s += "echo \"M4S2 $(dmsetup status m4)\"\ndmsetup remove m4\ndmsetup remove kb\n";
    s += &format!("dmsetup create p1 --table \"{}\"\n", t_p1(&vd));
    s += "echo \"P1S0 $(dmsetup status p1)\"\necho \"P1T $(dmsetup table p1)\"\n";
    for (i, m) in p1_msgs.iter().enumerate() {
        let m = m.replace("VD0", "$(cat /sys/block/vda/dev)");
        s += &format!(
            "dmsetup message p1 0 {m}\necho \"P1S{} $(dmsetup status p1)\"\n",
            i + 1
        );
    }
    s += "dd if=/dev/mapper/p1 of=/dev/null bs=4096 count=1 iflag=direct status=none\n";
    s += "echo \"P1SIO $(dmsetup status p1)\"\ndmsetup remove p1\n";
    s += &format!("dmsetup create p2 --table \"{}\"\n", t_p2(&vd));
    s += "echo \"P2S $(dmsetup status p2)\"\necho \"P2T $(dmsetup table p2)\"\n";
    s += "dmsetup message p2 0 fail_if_no_path\necho \"P2T2 $(dmsetup table p2)\"\ndmsetup remove p2\n";
    s += &format!("dmsetup create p3 --table \"{}\"\n", t_p3(&vd));
    s += "echo \"P3S $(dmsetup status p3)\"\necho \"P3T $(dmsetup table p3)\"\ndmsetup remove p3\n";
    // A path that errors under I/O is failed and the I/O retried on the other one.
    s += &format!(
        "dmsetup create kb --table \"0 {SECTORS} linear {} 0\"\ndmsetup reload kb --table \"0 {SECTORS} error\"\ndmsetup resume kb\n",
        vd(1)
    );
    s += "echo \"KB2 $(dmsetup info -c --noheadings -o major,minor kb)\"\n";
    s += &format!(
        "dmsetup create p6 --table \"{}\" || {{ dmesg | tail -5; exit 1; }}\n",
        t_p6(&vd)
    );
    s += "dd if=/dev/mapper/p6 of=/dev/null bs=4096 count=3 iflag=direct status=none\n";
    s += "echo \"P6S $(dmsetup status p6)\"\ndmsetup remove p6\ndmsetup remove kb\n";
    // Hardware handler args are dropped in bio mode (with a kernel log line).
    s += &format!("dmsetup create p7 --table \"{}\"\n", t_p7(&vd));
    s += "echo \"P7S $(dmsetup status p7)\"\necho \"P7T $(dmsetup table p7)\"\ndmsetup remove p7\n";
    s += "set +e\n";
    for (i, t) in bad.iter().enumerate() {
        s += &format!(
            "dmesg -C; dmsetup create bad --table \"{t}\" 2>/dev/null; echo \"BAD{i} $(dmesg | grep 'table: ' | tail -1)\"\n"
        );
    }
    let disks: Vec<&Path> = k.files.iter().map(|p| p.as_path()).collect();
    let (out, err, code) = udm_testkit::refvm_run(&run, &disks, Some(share), &s);
    assert_eq!(
        code, 0,
        "refvm script failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    let kt = tagged(&out);
    // udm paths → the guest's device numbers.
    let map: Vec<(String, String)> = (0..6)
        .map(|i| {
            let tag = format!("DEV{}", (b'a' + i as u8) as char);
            (u.files[i].display().to_string(), kt[&tag].clone())
        })
        .collect();
    let up = |i: usize| u.files[i].display().to_string();
    let reg = registry();
    let check = |tag: &str, got: String| {
        let want = &kt[tag];
        eprintln!("{tag}\n  kernel: {want}\n  udm:    {got}");
        assert_eq!(&got, want, "{tag}");
    };
    let writes = |name: &str| {
        let (dev, _g) = open(&reg, name);
        for (sec, n) in WRITES {
            write(&*dev, *sec, &data[..(*n * 512) as usize]);
        }
    };
    create(&reg, "m1", &t_nosync(&up)).unwrap();
    check("M1S0", udm_line(&reg, "m1", StatusType::Info, &map));
    writes("m1");
    check("M1S1", udm_line(&reg, "m1", StatusType::Info, &map));
    check("M1T", udm_line(&reg, "m1", StatusType::Table, &map));
    reg.remove(&sel("m1"), false).unwrap();
    create(&reg, "m2", &t_sync(&up)).unwrap();
    wait_sync(&reg, "m2", "16/16");
    writes("m2");
    check("M2S", udm_line(&reg, "m2", StatusType::Info, &map));
    check("M2T", udm_line(&reg, "m2", StatusType::Table, &map));
    reg.remove(&sel("m2"), false).unwrap();
    create(&reg, "m3", &t_core(&up)).unwrap();
    wait_sync(&reg, "m3", "8/8");
    check("M3S", udm_line(&reg, "m3", StatusType::Info, &map));
    check("M3T", udm_line(&reg, "m3", StatusType::Table, &map));
    reg.remove(&sel("m3"), false).unwrap();
    create(&reg, "ub", &format!("0 {SECTORS} linear {} 0", up(1))).unwrap();
    let ub = reg.info(&sel("ub"), false).unwrap();
    let mut map = map;
    map.insert(0, (format!("{}:{}", ub.major, ub.minor), kt["KB"].clone()));
    create(&reg, "m4", &t_fail(&up)).unwrap();
    {
        let (dev, _g) = open(&reg, "m4");
        write(&*dev, 0, &data[..4096]);
        reg.load(&sel("ub"), &lines(&format!("0 {SECTORS} error")), false)
            .unwrap();
        reg.resume(&sel("ub")).unwrap();
        write(&*dev, 2048, &data[..4096]);
        let t = Instant::now();
        // The resync attempt of the failed region runs in the background.
        while udm_line(&reg, "m4", StatusType::Info, &map) != kt["M4S"]
            && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        check("M4S", udm_line(&reg, "m4", StatusType::Info, &map));
        read(&*dev, 2048, 4096);
        check("M4S2", udm_line(&reg, "m4", StatusType::Info, &map));
    }
    reg.remove(&sel("m4"), false).unwrap();
    reg.remove(&sel("ub"), false).unwrap();
    for i in 0..6 {
        assert!(
            std::fs::read(&k.files[i]).unwrap() == std::fs::read(&u.files[i]).unwrap(),
            "disk {i} differs between the kernel and udm"
        );
    }
    create(&reg, "p1", &t_p1(&up)).unwrap();
    check("P1S0", udm_line(&reg, "p1", StatusType::Info, &map));
    check("P1T", udm_line(&reg, "p1", StatusType::Table, &map));
    for (i, m) in p1_msgs.iter().enumerate() {
        let m = m.replace(&vd(0), &up(0)).replace("VD0", &up(0));
        let argv: Vec<String> = m.split(' ').map(String::from).collect();
        reg.message(&sel("p1"), 0, &argv).unwrap();
        check(
            &format!("P1S{}", i + 1),
            udm_line(&reg, "p1", StatusType::Info, &map),
        );
    }
    {
        let (dev, _g) = open(&reg, "p1");
        read(&*dev, 0, 4096);
    }
    check("P1SIO", udm_line(&reg, "p1", StatusType::Info, &map));
    reg.remove(&sel("p1"), false).unwrap();
    create(&reg, "p2", &t_p2(&up)).unwrap();
    check("P2S", udm_line(&reg, "p2", StatusType::Info, &map));
    check("P2T", udm_line(&reg, "p2", StatusType::Table, &map));
    reg.message(&sel("p2"), 0, &["fail_if_no_path".into()])
        .unwrap();
    check("P2T2", udm_line(&reg, "p2", StatusType::Table, &map));
    reg.remove(&sel("p2"), false).unwrap();
    create(&reg, "p3", &t_p3(&up)).unwrap();
    check("P3S", udm_line(&reg, "p3", StatusType::Info, &map));
    check("P3T", udm_line(&reg, "p3", StatusType::Table, &map));
    reg.remove(&sel("p3"), false).unwrap();
    create(&reg, "ub", &format!("0 {SECTORS} error")).unwrap();
    let ub = reg.info(&sel("ub"), false).unwrap();
    map.insert(0, (format!("{}:{}", ub.major, ub.minor), kt["KB2"].clone()));
    create(&reg, "p6", &t_p6(&up)).unwrap();
    {
        let (dev, _g) = open(&reg, "p6");
        for i in 0..3 {
            read(&*dev, i * 8, 4096);
        }
    }
    check("P6S", udm_line(&reg, "p6", StatusType::Info, &map));
    assert!(
        udm_core::klog::lines()
            .iter()
            .any(|l| l.contains("Failing path")),
        "{:?}",
        udm_core::klog::lines()
    );
    reg.remove(&sel("p6"), false).unwrap();
    reg.remove(&sel("ub"), false).unwrap();
    create(&reg, "p7", &t_p7(&up)).unwrap();
    check("P7S", udm_line(&reg, "p7", StatusType::Info, &map));
    check("P7T", udm_line(&reg, "p7", StatusType::Table, &map));
    reg.remove(&sel("p7"), false).unwrap();
    for (i, t) in bad.iter().enumerate() {
        let t = (0..6).fold(t.clone(), |t, j| t.replace(&vd(j), &up(j)));
        let e = create(&reg, "bad", &t).unwrap_err().to_string();
        let want = kernel_error(&out, &format!("BAD{i}"));
        eprintln!("BAD{i}\n  kernel: {want}\n  udm:    {e}");
        assert!(e.contains(want), "BAD{i}: kernel {want:?}, udm {e:?}");
    }
}
