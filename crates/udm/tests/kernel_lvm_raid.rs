//! Kernel ground truth for LVM raid and mirror LVs (refvm, one VM boot): raid1, raid5,
//! raid10 and mirror LVs real lvm2 made and the kernel synced and wrote activate in udm
//! with the tables lvm2 loaded and read the kernel's data; the same LVs made by udm, with
//! data udm wrote and synced, pass `vgck` and activate in the kernel with udm's tables and
//! data.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use udm_testkit::udmcli::UdmCli;
use udm_testkit::Daemon;

fn udm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

use udm_testkit::{refvm_host_words, refvm_section as section};

/// True when a raid or mirror status line shows every region in sync (`N/N`).
fn in_sync(status: &str) -> bool {
    status.split_whitespace().any(|w| {
        w.split_once('/')
            .is_some_and(|(a, b)| a == b && a.parse::<u64>().is_ok())
    })
}

/// The health characters of a raid (`AA…` after the device count) or mirror status line.
fn health(status: &str) -> String {
    let w: Vec<&str> = status.split_whitespace().collect();
    let p = w
        .iter()
        .position(|x| *x == "raid" || *x == "mirror")
        .unwrap_or_else(|| panic!("not a raid or mirror status: {status}"));
    let i = if w[p] == "raid" {
        p + 3
    } else {
        p + 4 + w[p + 1].parse::<usize>().unwrap()
    };
    w[i].to_string()
}

const LVS: [(&str, &str); 4] = [
    ("r1", "--type raid1 -m1 -L 8M"),
    ("r5", "--type raid5 -i2 -L 8M"),
    ("r10", "--type raid10 -i2 -m1 -L 8M"),
    ("mi", "--type mirror -m1 -L 8M"),
];

/// lvm2 → udm and udm → kernel for raid1, raid5, raid10 and mirror LVs (one VM boot).
#[test]
fn kernel_lvm_raid_lvs_both_ways() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let imgs: Vec<PathBuf> = (0..8)
        .map(|i| udm_testkit::image(dir.path(), &format!("d{i}.img"), 64 << 20))
        .collect();
    let paths: Vec<String> = imgs.iter().map(|p| p.display().to_string()).collect();
    let d = Daemon::start(&udm());
    let e = UdmCli::on(udm(), &d, dir.path().join("state"));
    // udm's VG on d4..d7: the LVs, data written and synced.
    let udevs = paths[4..].join(",");
    let ud = ["--devices", udevs.as_str()];
    let mut vgc: Vec<&str> = vec!["uvg"];
    vgc.extend(paths[4..].iter().map(String::as_str));
    e.ok("vgcreate", &[&ud[..], &vgc].concat());
    let mut udm_side = Vec::new();
    for (name, args) in LVS {
        let mut a: Vec<&str> = ud.to_vec();
        a.extend(["-y", "-n", name]);
        a.extend(args.split(' '));
        a.push("uvg");
        e.ok("lvcreate", &a);
        let dm = format!("uvg-{name}");
        let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, &dm).unwrap();
        let data: Vec<u8> = (0..c.size()).map(|i| ((i / 5) ^ (i >> 12)) as u8).collect();
        c.write(0, &data, true).unwrap();
        let t0 = Instant::now();
        while !in_sync(&e.dm(&["status", &dm])) {
            assert!(t0.elapsed() < Duration::from_secs(120), "{dm} never synced");
            std::thread::sleep(Duration::from_millis(200));
        }
        udm_side.push((dm, udm_testkit::dm::cksum(&data)));
    }
    let utables: Vec<(String, String)> = e
        .dm(&["ls"])
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|n| n.starts_with("uvg-"))
        .map(|n| {
            let t = e.live_table(&n, &[]);
            (n, t)
        })
        .collect();
    e.ok("vgchange", &[&ud[..], &["-an", "uvg"]].concat());
    let mut script = String::from(
        "set -e\npvcreate -q /dev/vda /dev/vdb /dev/vdc /dev/vdd\n\
         vgcreate -q vg /dev/vda /dev/vdb /dev/vdc /dev/vdd\n",
    );
    for (name, args) in LVS {
        script.push_str(&format!("lvcreate -q -y -n {name} {args} vg\n"));
    }
    script.push_str(
        r#"for lv in r1 r5 r10 mi; do
  while [ "$(lvs --noheadings -o copy_percent vg/$lv | tr -d ' ')" != "100.00" ]; do sleep 1; done
  seq -w 100000000 199999999 | head -c $(blockdev --getsize64 /dev/vg/$lv) > /dev/vg/$lv
done
sync
echo "=== devs"; cat /sys/block/vd[a-h]/dev
echo "=== table"; dmsetup table
echo "=== info"; dmsetup info -c --noheadings --separator ' ' -o name,uuid,major,minor
echo "=== cksum"; for lv in r1 r5 r10 mi; do cksum < /dev/vg/$lv; done
echo "=== lvs"; lvs -a -o lv_name,lv_attr,lv_size,copy_percent,devices vg
echo "=== lvdisplay"; lvdisplay -a vg
vgchange -an vg >/dev/null
vgck uvg
vgchange -ay uvg >/dev/null
echo "=== utable"; dmsetup table
echo "=== uinfo"; dmsetup info -c --noheadings --separator ' ' -o name,uuid,major,minor
echo "=== ustatus"; dmsetup status
echo "=== usum"; for lv in r1 r5 r10 mi; do cksum < /dev/uvg/$lv; done
vgchange -an uvg >/dev/null
echo "=== end"
"#,
    );
    let disks: Vec<&std::path::Path> = imgs.iter().map(PathBuf::as_path).collect();
    let (out, err, code) = udm_testkit::refvm_run_timeout(&run, &disks, None, &script, 900);
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}");
    let devs: Vec<&str> = section(&out, "devs").lines().collect();
    let rows = |s: &str| -> Vec<Vec<String>> {
        section(&out, s)
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect()
    };
    let (info, uinfo) = (rows("info"), rows("uinfo"));
    // Kernel device numbers as udm's tables name them: disks as paths, dm devices as
    // /dev/mapper/NAME (by the minors of the activation the line comes from).
    let host = |line: &str, info: &[Vec<String>]| refvm_host_words(line, &devs, &paths, info);
    let tables = |s: &str, info: &[Vec<String>]| -> Vec<(String, String)> {
        section(&out, s)
            .lines()
            .map(|l| {
                let (n, t) = l.split_once(": ").unwrap();
                (n.to_string(), host(t, info).trim_end().to_string())
            })
            .collect()
    };
    // The kernel activates udm's VG with udm's tables and reads udm's data.
    let ktables = tables("utable", &uinfo);
    assert_eq!(ktables.len(), utables.len(), "{ktables:?}");
    for (n, t) in &utables {
        let k = ktables.iter().find(|(kn, _)| kn == n).map(|x| &x.1);
        assert_eq!(k, Some(t), "kernel table of udm's {n}");
    }
    let usums: Vec<&str> = section(&out, "usum").lines().collect();
    for ((name, sum), ksum) in udm_side.iter().zip(&usums) {
        assert_eq!(sum, ksum, "kernel reads udm's data in {name}");
    }
    for l in section(&out, "ustatus").lines() {
        if l.contains(" raid ") || l.contains(" mirror ") {
            assert!(!health(l).contains('D'), "kernel status of udm's set: {l}");
        }
    }
    // udm activates lvm2's VG with lvm2's tables and uuids and reads the kernel's data.
    let kdevs = paths[..4].join(",");
    e.ok("vgchange", &["--devices", &kdevs, "-ay", "vg"]);
    let ltables = tables("table", &info);
    let ls = e.dm(&["ls"]);
    assert_eq!(ls.lines().count(), ltables.len(), "{ls}");
    for (n, t) in &ltables {
        assert_eq!(&e.live_table(n, &[]), t, "{n}");
        let uuid = &info.iter().find(|r| &r[0] == n).unwrap()[1];
        assert_eq!(&e.uuid_of(n), uuid, "{n}");
    }
    // udm's lvs shows its active LVs as lvm2 shows the kernel's (in sync, images open).
    let lvs = e.ok(
        "lvs",
        &[
            "--devices",
            &kdevs,
            "-a",
            "-o",
            "lv_name,lv_attr,lv_size,copy_percent,devices",
            "vg",
        ],
    );
    let mut want = section(&out, "lvs").to_string();
    for (i, p) in paths.iter().enumerate().take(4) {
        want = want.replace(
            &format!("/dev/vd{}(", (b'a' + i as u8) as char),
            &format!("{p}("),
        );
    }
    let norm = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(norm(&lvs), norm(&want), "udm:\n{lvs}\nlvm2:\n{want}");
    // And lvdisplay's active form (device numbers aside).
    let disp = e.ok("lvdisplay", &["--devices", &kdevs, "-a", "vg"]);
    let numbers = |t: &str| -> String {
        t.lines()
            .map(|l| match l.strip_prefix("  Block device") {
                Some(_) => "  Block device M:m\n".to_string(),
                None => format!("{l}\n"),
            })
            .collect()
    };
    assert_eq!(numbers(&disp), numbers(section(&out, "lvdisplay")));
    let sums: Vec<&str> = section(&out, "cksum").lines().collect();
    for ((name, _), want) in LVS.iter().zip(&sums) {
        let dm = format!("vg-{name}");
        let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, &dm).unwrap();
        let mut buf = vec![0u8; c.size() as usize];
        c.read(0, &mut buf).unwrap();
        assert_eq!(udm_testkit::dm::cksum(&buf), *want, "data of {dm}");
        let st = e.dm(&["status", &dm]);
        assert!(
            health(&st).chars().all(|c| c == 'A') && in_sync(&st),
            "udm takes the kernel's in-sync set as it is: {st}"
        );
    }
    e.ok("vgchange", &["--devices", &kdevs, "-an", "vg"]);
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
}
