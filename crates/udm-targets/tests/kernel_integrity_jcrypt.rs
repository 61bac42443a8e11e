//! dm-integrity's `journal_crypt` and corrupt journals against the kernel (refvm, 6.1), in
//! one boot:
//! - differential, for ctr(aes), chacha20, cbc(aes), xts(aes) and no encryption: the same
//!   table and the same synced writes on zeroed disks give byte-identical disks after a clean
//!   stop (superblock, encrypted journal, tags, data) and the same status; the disk copied
//!   live after the writes (committed journal, not written back) replays in udm to the
//!   written data;
//! - real `integritysetup --journal-crypt cbc-aes` devices open in udm (after a clean close,
//!   and from a copy taken live), and a device udm's integritysetup code formats with
//!   ctr(aes) opens with real `integritysetup open --journal-crypt ctr-aes` (same table as
//!   udm builds) and reads back what udm wrote;
//! - corruption drill: a flipped byte in a commit id or in a journal entry's data of an
//!   unreplayed journal (ctr, cbc, clear) fails the device the same way in udm and in the
//!   kernel: the same `Error on …` log line, status line (mismatch counter) and reads.

mod common;
use common::integrity::{
    create_formatted, kernel_share, kernel_write_plan, key_bytes, plan, udm_write_plan, KEY_HEX,
};
use common::*;
use std::path::{Path, PathBuf};
use udm_io::Sectors;
use udm_targets::integrity::setup::{self, SetupOpts};

const SECTORS: u64 = 16 * 2048;
/// Blocks (4 KiB) of `data.bin`; reads and writes stay below.
const BLOCKS: u64 = 2400;
const COMMON: &str = "journal_sectors:8192 journal_watermark:100 commit_time:600000 fix_padding internal_hash:crc32c";
/// (name, journal_crypt option or "") of the differential disks.
const CASES: [(&str, &str); 5] = [
    ("ctr", "journal_crypt:ctr(aes):"),
    ("cha", "journal_crypt:chacha20:"),
    ("cbc", "journal_crypt:cbc(aes):"),
    ("xts", "journal_crypt:xts(aes):"),
    ("clr", ""),
];
/// Byte offsets flipped by the drill: a commit id (section 0, sector 1) and the data of the
/// first journal entry (section 0, sector 8).
const FLIPS: [(&str, u64); 2] = [("cid", 4096 + 512 + 504), ("dat", 4096 + 8 * 512 + 10)];
/// Cases the drill runs on.
const DRILL: [&str; 3] = ["ctr", "cbc", "clr"];

fn zero_image(dir: &Path, name: &str) -> PathBuf {
    zero_file(dir, name, SECTORS * 512)
}

fn key(case: &str) -> String {
    if case == "xts" {
        format!("{KEY_HEX}{KEY_HEX}")
    } else {
        KEY_HEX.to_string()
    }
}

fn rest(case: &str, opt: &str) -> String {
    if opt.is_empty() {
        format!("4 J 5 {COMMON}")
    } else {
        format!("4 J 6 {COMMON} {opt}{}", key(case))
    }
}

/// Read `blocks` 4 KiB blocks one at a time; a failing block reads as zeros (`dd
/// conv=noerror,sync`).
fn read_noerror(dev: &dyn udm_io::BlockDevice, blocks: u64) -> Vec<u8> {
    let mut out = vec![0u8; (blocks * 4096) as usize];
    for b in 0..blocks {
        if let Ok(d) = udm_io::sync::read_at(dev, Sectors(b * 8), 4096) {
            out[(b * 4096) as usize..((b + 1) * 4096) as usize].copy_from_slice(d.as_slice());
        }
    }
    out
}

fn error_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.contains("device-mapper: integrity: Error on"))
        .map(|l| l[l.find("device-mapper:").unwrap()..].trim().to_string())
        .collect()
}

fn flip(img: &Path, off: u64) {
    let mut b = std::fs::read(img).unwrap();
    b[off as usize] ^= 0xff;
    std::fs::write(img, b).unwrap();
}

#[test]
fn kernel_integrity_journal_crypt_and_corrupt_journal() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let (dir, share, data) = kernel_share(21, BLOCKS);
    let plan = plan(8, BLOCKS)[..6].to_vec();
    let reg = registry();

    // udm formats (integritysetup's code, ctr-aes) and writes 1 MiB before the boot.
    let ku = zero_image(&share, "ku");
    let uo = SetupOpts {
        integrity: "crc32c".into(),
        journal_crypt: Some(setup::kernel_cipher("ctr-aes")),
        journal_crypt_key: Some(key_bytes()),
        ..SetupOpts::default()
    };
    let usb = setup::format(&ku, &uo, false).unwrap();
    let urest = setup::table_rest(&uo, Some(&usb), false);
    let p = usb.provided_data_sectors;
    create(
        &reg,
        "ku",
        &format!("0 {p} integrity {} 0 {urest}", ku.display()),
    )
    .unwrap();
    {
        let (dev, _g) = open(&reg, "ku");
        write(&*dev, 0, &data[..1 << 20]);
    }
    reg.remove(&sel("ku"), false).unwrap();

    let kd: Vec<PathBuf> = CASES.iter().map(|(n, _)| zero_image(&share, n)).collect();
    let ki = zero_image(&share, "ki");
    let drill: Vec<(String, PathBuf)> = DRILL
        .iter()
        .flat_map(|c| FLIPS.iter().map(move |(f, _)| format!("{c}-{f}")))
        .map(|n| {
            let p = zero_image(&share, &n);
            (n, p)
        })
        .collect();

    let mut s = String::from("set -e\nmodprobe dm-integrity\nflip() { b=$(dd if=$1 bs=1 skip=$2 count=1 status=none | od -An -tu1 | tr -d ' '); printf \"\\\\$(printf %o $((b ^ 255)))\" | dd of=$1 bs=1 seek=$2 conv=notrunc status=none; }\n");
    let devs: Vec<String> = (0..CASES.len() + 2 + drill.len())
        .map(|i| format!("/dev/vd{}", (b'a' + i as u8) as char))
        .collect();
    for (i, (name, opt)) in CASES.iter().enumerate() {
        let (dev, r) = (&devs[i], rest(name, opt));
        s.push_str(&format!(
            "dmsetup create f{name} --table '0 8 integrity {dev} 0 {r}'\n\
             P=$(dmsetup status f{name} | cut -d' ' -f5)\n\
             dmsetup remove f{name}\n\
             dmsetup create {name} --table \"0 $P integrity {dev} 0 {r}\"\n\
             {}\
             dmsetup status {name} > {name}.status\n\
             dd if={dev} of={name}-unrep.img bs=1M iflag=direct status=none\n",
            kernel_write_plan(&format!("/dev/mapper/{name}"), &plan)
        ));
        for (k, c) in DRILL.iter().enumerate() {
            if c == name {
                for (j, (f, off)) in FLIPS.iter().enumerate() {
                    let d = &devs[CASES.len() + 2 + k * FLIPS.len() + j];
                    s.push_str(&format!(
                        "dd if={dev} of={d} bs=1M iflag=direct oflag=direct status=none\nflip {d} {off}\nsync\n\
                         dmesg -C\n\
                         dmsetup create {c}-{f} --table \"0 $P integrity {d} 0 {r}\"\n\
                         dmsetup status {c}-{f} > {c}-{f}.status\n\
                         dd if=/dev/mapper/{c}-{f} of={c}-{f}.out bs=4096 count={BLOCKS} iflag=direct conv=noerror,sync status=none 2>/dev/null || true\n\
                         dmsetup status {c}-{f} > {c}-{f}.status2\n\
                         dmesg > {c}-{f}.dmesg\n\
                         dmsetup remove {c}-{f}\n"
                    ));
                }
            }
        }
        s.push_str(&format!("dmsetup remove {name}\n"));
    }
    let kdev = &devs[CASES.len()];
    let udev = &devs[CASES.len() + 1];
    let jc = "--journal-crypt-key-file key.bin --journal-crypt-key-size 32";
    s.push_str(&format!(
        "integritysetup format -q --batch-mode --journal-crypt cbc-aes {jc} {kdev}\n\
         integritysetup open --journal-crypt cbc-aes {jc} {kdev} ki\n\
         dd if=data.bin of=/dev/mapper/ki bs=1M count=4 oflag=direct conv=fsync status=none\n\
         dd if={kdev} of=ki-unrep.img bs=1M iflag=direct status=none\n\
         dmsetup table --showkeys ki > ki.table\n\
         integritysetup close ki\n\
         integritysetup open --journal-crypt ctr-aes {jc} {udev} ku\n\
         dmsetup table --showkeys ku > ku.table\n\
         dd if=/dev/mapper/ku of=ku.out bs=1M count=1 iflag=direct status=none\n\
         dmsetup status ku > ku.status\n\
         integritysetup close ku\n"
    ));
    let mut disks: Vec<&Path> = kd.iter().map(|p| p.as_path()).collect();
    disks.push(&ki);
    disks.push(&ku);
    disks.extend(drill.iter().map(|(_, p)| p.as_path()));
    let (out, err, code) = udm_testkit::refvm_run_timeout(&run, &disks, Some(&share), &s, 600);
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}");
    let rd = |n: &str| std::fs::read_to_string(share.join(n)).unwrap();

    // 1. Differential and replay of the unreplayed copies.
    for ((name, opt), kimg) in CASES.iter().zip(&kd) {
        let r = rest(name, opt);
        let uimg = zero_image(dir.path(), &format!("{name}-udm"));
        let p = create_formatted(&reg, name, &uimg, &r);
        {
            let (dev, _g) = open(&reg, name);
            udm_write_plan(&*dev, &data, &plan);
        }
        let kst = rd(&format!("{name}.status"));
        assert_eq!(
            status_fields(&reg, name),
            kst.split_whitespace().skip(3).collect::<Vec<_>>(),
            "{name}"
        );
        reg.remove(&sel(name), false).unwrap();
        let (a, b) = (std::fs::read(kimg).unwrap(), std::fs::read(&uimg).unwrap());
        let diff: Vec<usize> = (0..a.len() / 512)
            .filter(|&i| a[i * 512..(i + 1) * 512] != b[i * 512..(i + 1) * 512])
            .take(8)
            .collect();
        assert!(
            diff.is_empty(),
            "{name}: sectors differ from the kernel's: {diff:?}"
        );
        std::fs::remove_file(&uimg).unwrap();

        let unrep = share.join(format!("{name}-unrep.img"));
        let u = std::fs::read(&unrep).unwrap();
        assert!(
            u != a,
            "{name}: the live copy equals the cleanly stopped disk"
        );
        create(
            &reg,
            "r",
            &format!("0 {p} integrity {} 0 {r}", unrep.display()),
        )
        .unwrap();
        {
            let (dev, _g) = open(&reg, "r");
            for b in plan.iter().flat_map(|&(b, n)| b..b + n) {
                let o = (b * 4096) as usize;
                assert!(
                    read(&*dev, b * 8, 4096) == data[o..o + 4096],
                    "{name}: block {b}"
                );
            }
        }
        assert_eq!(status_fields(&reg, "r")[0], "0", "{name}");
        reg.remove(&sel("r"), false).unwrap();
    }

    // 2. Real integritysetup with cbc-aes: the cleanly closed disk and the live copy.
    let kt = rd("ki.table");
    assert!(
        kt.contains(&format!("journal_crypt:cbc(aes):{KEY_HEX}")),
        "{kt}"
    );
    for img in [ki.clone(), share.join("ki-unrep.img")] {
        create(&reg, "ki", &common::integrity::with_image(kt.trim(), &img)).unwrap();
        {
            let (dev, _g) = open(&reg, "ki");
            assert!(
                read(&*dev, 0, 4 << 20) == data[..4 << 20],
                "{}",
                img.display()
            );
        }
        assert_eq!(status_fields(&reg, "ki")[0], "0");
        reg.remove(&sel("ki"), false).unwrap();
    }
    // udm-formatted, opened by the real tool: the kernel shows the table udm shows for the
    // table udm's integritysetup code builds; the kernel reads udm's data.
    create(
        &reg,
        "ku",
        &format!("0 {p} integrity {} 0 {urest}", ku.display()),
    )
    .unwrap();
    let (_, ust) = reg
        .status(&sel("ku"), false, udm_core::StatusType::Table)
        .unwrap();
    reg.remove(&sel("ku"), false).unwrap();
    let ut = rd("ku.table");
    let kparams: Vec<&str> = ut.split_whitespace().skip(5).collect();
    let uparams: Vec<&str> = ust[0].params.split_whitespace().skip(2).collect();
    assert_eq!(
        kparams, uparams,
        "table of the real integritysetup's device"
    );
    assert!(std::fs::read(share.join("ku.out")).unwrap() == data[..1 << 20]);
    assert_eq!(rd("ku.status").split_whitespace().nth(3), Some("0"));

    // 3. Corruption drill: same log line, status and reads as the kernel.
    for (name, _) in &drill {
        let (case, f) = name.split_once('-').unwrap();
        let off = FLIPS.iter().find(|x| x.0 == f).unwrap().1;
        let opt = CASES.iter().find(|c| c.0 == case).unwrap().1;
        let img = dir.path().join(format!("{name}.img"));
        std::fs::copy(share.join(format!("{case}-unrep.img")), &img).unwrap();
        flip(&img, off);
        let p = u64::from_le_bytes(std::fs::read(&img).unwrap()[16..24].try_into().unwrap());
        udm_core::klog::clear();
        create(
            &reg,
            name,
            &format!("0 {p} integrity {} 0 {}", img.display(), rest(case, opt)),
        )
        .unwrap();
        let st = status_fields(&reg, name);
        let got = {
            let (dev, _g) = open(&reg, name);
            read_noerror(&*dev, BLOCKS)
        };
        let st2 = status_fields(&reg, name);
        let ulog = error_lines(&udm_core::klog::take());
        reg.remove(&sel(name), false).unwrap();
        let kst = |f: &str| {
            rd(f)
                .split_whitespace()
                .skip(3)
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let kmsg = rd(&format!("{name}.dmesg"));
        assert_eq!(st, kst(&format!("{name}.status")), "{name}: status\n{kmsg}");
        assert_eq!(
            st2,
            kst(&format!("{name}.status2")),
            "{name}: status after reads"
        );
        let klog = error_lines(
            &rd(&format!("{name}.dmesg"))
                .lines()
                .map(String::from)
                .collect::<Vec<_>>(),
        );
        assert!(!klog.is_empty(), "{name}: the kernel logged no error");
        assert_eq!(ulog, klog, "{name}: log");
        let kout = std::fs::read(share.join(format!("{name}.out"))).unwrap();
        assert!(got == kout, "{name}: reads differ from the kernel's");
        std::fs::remove_file(&img).unwrap();
    }
}
