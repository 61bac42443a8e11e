//! Differential tests against the real kernel device-mapper in refvm: the same striped +
//! linear + error tables and the same writes give the same bytes on the legs, the same bytes
//! read back, and the same status/table lines (device numbers mapped to udm's file paths).

mod common;
use common::*;
use udm_core::StatusType;

const LEG_SECTORS: u64 = 16384; // 8 MiB each

fn payload() -> Vec<u8> {
    // Deterministic, position-dependent bytes: 512 KiB.
    (0..524288u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// (sector, length in sectors) of each write, relative to the striped device.
const WRITES: [(u64, u64); 5] = [(0, 8), (100, 37), (255, 2), (1000, 300), (16000, 512)];

#[test]
fn kernel_striped_linear_same_bytes_and_status() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("payload"), payload()).unwrap();
    let ka = image(dir.path(), "ka.img", LEG_SECTORS, 0);
    let kb = image(dir.path(), "kb.img", LEG_SECTORS, 0);
    let len = 2 * (LEG_SECTORS - 128);
    let mut script = String::from("set -e\nmodprobe dm-mod\n");
    script.push_str(&format!(
        "dmsetup create st --table '0 {len} striped 2 128 /dev/vda 0 /dev/vdb 64'\n"
    ));
    script.push_str("dmsetup create top --table \"0 1024 linear /dev/mapper/st 2048\n1024 8 error\n1032 1024 linear /dev/mapper/st 4096\"\n");
    let mut src_off = 0u64;
    for (s, l) in WRITES {
        script.push_str(&format!(
            "dd if=payload of=/dev/mapper/st bs=512 skip={src_off} seek={s} count={l} oflag=direct conv=notrunc status=none\n"
        ));
        src_off += l;
    }
    script.push_str("dd if=/dev/mapper/top of=top.bin bs=512 count=1024 status=none\n");
    script.push_str("dmsetup table > table.txt; dmsetup status > status.txt\n");
    script.push_str("stat -c '%t:%T' /dev/vda /dev/vdb > devs.txt\n");
    script.push_str("dmsetup info -c --noheadings -o name,major,minor > majors.txt\n");
    script.push_str("dmsetup remove top; dmsetup remove st\n");
    let (out, err, code) = udm_testkit::refvm_run(&run, &[&ka, &kb], Some(&share), &script);
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}");

    // The same on udm, with fresh legs.
    let ua = image(dir.path(), "ua.img", LEG_SECTORS, 0);
    let ub = image(dir.path(), "ub.img", LEG_SECTORS, 0);
    let reg = registry();
    create(
        &reg,
        "st",
        &format!(
            "0 {len} striped 2 128 {} 0 {} 64",
            ua.display(),
            ub.display()
        ),
    )
    .unwrap();
    create(
        &reg,
        "top",
        "0 1024 linear /dev/mapper/st 2048\n1024 8 error\n1032 1024 linear /dev/mapper/st 4096",
    )
    .unwrap();
    let p = payload();
    {
        let (dev, _g) = open(&reg, "st");
        let mut src_off = 0usize;
        for (s, l) in WRITES {
            let n = (l * 512) as usize;
            write(dev.as_ref(), s, &p[src_off..src_off + n]);
            src_off += n;
        }
        udm_io::sync::flush(dev.as_ref()).unwrap();
    }
    assert!(
        std::fs::read(&ka).unwrap() == std::fs::read(&ua).unwrap(),
        "leg A differs from the kernel's"
    );
    assert!(
        std::fs::read(&kb).unwrap() == std::fs::read(&ub).unwrap(),
        "leg B differs from the kernel's"
    );
    let (top, _g) = open(&reg, "top");
    assert!(read(top.as_ref(), 0, 1024 * 512) == std::fs::read(share.join("top.bin")).unwrap());

    // Status and table lines: kernel device numbers → udm's names for the same devices.
    let devs = std::fs::read_to_string(share.join("devs.txt")).unwrap();
    let hex: Vec<(u32, u32)> = devs
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(':').unwrap();
            (
                u32::from_str_radix(a, 16).unwrap(),
                u32::from_str_radix(b, 16).unwrap(),
            )
        })
        .collect();
    let majors = std::fs::read_to_string(share.join("majors.txt")).unwrap();
    let st_dev: Vec<&str> = majors
        .lines()
        .find(|l| l.starts_with("st:"))
        .unwrap()
        .split(':')
        .collect();
    let st_info = reg.info(&sel("st"), false).unwrap();
    let norm = |s: &str| {
        s.replace(
            &format!("{}:{}", hex[0].0, hex[0].1),
            &ua.display().to_string(),
        )
        .replace(
            &format!("{}:{}", hex[1].0, hex[1].1),
            &ub.display().to_string(),
        )
        .replace(
            &format!("{}:{}", st_dev[1], st_dev[2]),
            &format!("{}:{}", st_info.major, st_info.minor),
        )
    };
    let render = |ty| {
        let mut s = String::new();
        for name in ["st", "top"] {
            for t in reg.status(&sel(name), false, ty).unwrap().1 {
                s.push_str(&format!(
                    "{name}: {} {} {} {}\n",
                    t.start, t.len, t.ttype, t.params
                ));
            }
        }
        s
    };
    assert_eq!(
        render(StatusType::Table),
        norm(&std::fs::read_to_string(share.join("table.txt")).unwrap())
    );
    assert_eq!(
        render(StatusType::Info),
        norm(&std::fs::read_to_string(share.join("status.txt")).unwrap())
    );
}
