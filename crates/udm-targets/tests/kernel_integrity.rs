//! dm-integrity against the kernel (refvm, 6.1), in one boot:
//! - devices formatted and written by real `integritysetup` (J crc32c, B sha256, D
//!   hmac-sha256 with a key file) open in udm with the kernel's table and read back;
//! - devices formatted and written by udm pass real `integritysetup dump`, open with
//!   `integritysetup open` and read back in the kernel;
//! - differential: the same table and the same writes (4 KiB, each synced) on zeroed disks
//!   give byte-identical disks after a clean stop (superblock, journal, tags, data) and the
//!   same status lines, in J, B and D modes;
//! - a J device copied raw while live after its writes were synced (a committed, unreplayed
//!   journal) replays in udm to what the kernel reads after its own clean stop.

mod common;
use common::integrity::{
    create_formatted, kernel_share, kernel_write_plan, udm_write_plan, with_image, KEY_HEX,
};
use common::*;
use std::path::{Path, PathBuf};

const MIB: u64 = 16;
const SECTORS: u64 = MIB * 2048;
/// Blocks (4 KiB) the data files cover and the writes stay within.
const BLOCKS: u64 = 3800;
/// The writes of the differential and replay cases stay below this block (the replay disk
/// has a large journal).
const PLAN_BLOCKS: u64 = 2400;

fn zero_image(dir: &Path, name: &str) -> PathBuf {
    zero_file(dir, name, SECTORS * 512)
}

/// The write plan of the differential: (first 4 KiB block, blocks).
fn plan(seed: u64) -> Vec<(u64, u64)> {
    integrity::plan(seed, PLAN_BLOCKS)
}

/// The differential cases: (name, table rest after the offset).
const DIFF: [(&str, &str); 3] = [
    ("dj", "4 J 3 journal_sectors:2048 fix_padding internal_hash:crc32c"),
    ("db", "32 B 2 fix_padding internal_hash:sha256"),
    (
        "dd",
        "32 D 1 internal_hash:hmac(sha256):00112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f",
    ),
];

#[test]
fn kernel_integrity_interop_differential_and_replay() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let (dir, share, data) = kernel_share(11, BLOCKS);

    // Kernel-formatted: vda (J crc32c), vdb (B sha256), vdc (D hmac-sha256).
    let kf: Vec<PathBuf> = ["ka", "kb", "kc"]
        .iter()
        .map(|n| zero_image(&share, n))
        .collect();
    // udm-formatted: vdd, vde, vdf, the same three kinds.
    let uf_rest = [
        "4 J 3 fix_padding fix_hmac internal_hash:crc32c",
        "32 B 3 fix_padding fix_hmac internal_hash:sha256",
        &format!("32 D 3 fix_padding fix_hmac internal_hash:hmac(sha256):{KEY_HEX}"),
    ];
    let uf: Vec<PathBuf> = ["ua", "ub", "uc"]
        .iter()
        .map(|n| zero_image(&share, n))
        .collect();
    let reg = registry();
    for (img, rest) in uf.iter().zip(uf_rest) {
        create_formatted(&reg, "u", img, rest);
        {
            let (dev, _g) = open(&reg, "u");
            write(&*dev, 0, &data);
        }
        reg.remove(&sel("u"), false).unwrap();
    }
    // Differential disks (zeroed) vdg, vdh, vdi; their udm twins stay on the host.
    let kd: Vec<PathBuf> = DIFF.iter().map(|(n, _)| zero_image(&share, n)).collect();
    let ud: Vec<PathBuf> = DIFF
        .iter()
        .map(|(n, _)| zero_image(dir.path(), &format!("{n}-udm")))
        .collect();
    // Replay: vdj.
    let kr = zero_image(&share, "kr");
    let plan = plan(5);

    let ks = "--integrity-key-file key.bin --integrity-key-size 32";
    let mut s = String::from("set -e\nmodprobe dm-integrity\n");
    for (dev, name, fmt, open) in [
        ("/dev/vda", "ka", "", ""),
        (
            "/dev/vdb",
            "kb",
            "--integrity sha256 --integrity-bitmap-mode",
            "-B --integrity sha256",
        ),
        (
            "/dev/vdc",
            "kc",
            &format!("--integrity hmac-sha256 {ks}") as &str,
            &format!("--integrity hmac-sha256 {ks} --integrity-no-journal") as &str,
        ),
    ] {
        s.push_str(&format!(
            "integritysetup format -q --batch-mode {fmt} {dev}\n\
             integritysetup open {open} {dev} {name}\n\
             dd if=data.bin of=/dev/mapper/{name} bs=1M oflag=direct status=none\n\
             dmsetup table --showkeys {name} > {name}.table\n\
             integritysetup close {name}\n"
        ));
    }
    for (dev, name, open) in [
        ("/dev/vdd", "ua", ""),
        ("/dev/vde", "ub", "-B --integrity sha256"),
        (
            "/dev/vdf",
            "uc",
            &format!("--integrity hmac-sha256 {ks} --integrity-no-journal") as &str,
        ),
    ] {
        s.push_str(&format!(
            "integritysetup dump {dev} > {name}.dump\n\
             integritysetup open {open} {dev} {name}\n\
             dd if=/dev/mapper/{name} of={name}.out bs=1M count={} iflag=direct status=none\n\
             dmsetup status {name} > {name}.status\n\
             integritysetup close {name}\n",
            BLOCKS * 4096 / (1 << 20)
        ));
    }
    for ((name, rest), dev) in DIFF.iter().zip(["/dev/vdg", "/dev/vdh", "/dev/vdi"]) {
        s.push_str(&format!(
            "dmsetup create f{name} --table '0 8 integrity {dev} 0 {rest}'\n\
             P=$(dmsetup status f{name} | cut -d' ' -f5)\n\
             dmsetup remove f{name}\n\
             dmsetup create {name} --table \"0 $P integrity {dev} 0 {rest}\"\n\
             {}\
             dmsetup status {name} > {name}.status\n\
             dmsetup remove {name}\n",
            kernel_write_plan(&format!("/dev/mapper/{name}"), &plan)
        ));
    }
    let rrest = "4 J 5 journal_sectors:8192 journal_watermark:100 commit_time:600000 fix_padding internal_hash:crc32c";
    s.push_str(&format!(
        "dmsetup create fr --table '0 8 integrity /dev/vdj 0 {rrest}'\n\
         P=$(dmsetup status fr | cut -d' ' -f5)\n\
         dmsetup remove fr\n\
         dmsetup create kr --table \"0 $P integrity /dev/vdj 0 {rrest}\"\n\
         {}\
         dd if=/dev/vdj of=unreplayed.img bs=1M iflag=direct status=none\n\
         dmsetup remove kr\n\
         dmsetup create kr --table \"0 $P integrity /dev/vdj 0 {rrest}\"\n\
         dd if=/dev/mapper/kr of=kr.out bs=4096 count={PLAN_BLOCKS} iflag=direct conv=noerror,sync status=none 2>/dev/null || true\n\
         dmsetup remove kr\n",
        kernel_write_plan("/dev/mapper/kr", &plan[..6]),
    ));
    let mut disks: Vec<&Path> = kf.iter().map(|p| p.as_path()).collect();
    disks.extend(uf.iter().map(|p| p.as_path()));
    disks.extend(kd.iter().map(|p| p.as_path()));
    disks.push(&kr);
    let (out, err, code) = udm_testkit::refvm_run(&run, &disks, Some(&share), &s);
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}");
    let whole = (BLOCKS * 4096) as usize;

    // 1. Kernel-formatted devices read back in udm with the kernel's own tables.
    for (img, name) in kf.iter().zip(["ka", "kb", "kc"]) {
        let t = std::fs::read_to_string(share.join(format!("{name}.table"))).unwrap();
        create(&reg, name, &with_image(t.trim(), img)).unwrap();
        let (dev, _g) = open(&reg, name);
        assert!(
            read(&*dev, 0, whole) == data,
            "{name}: udm reads other data"
        );
        assert_eq!(status_fields(&reg, name)[0], "0", "{name}");
        drop((dev, _g));
        reg.remove(&sel(name), false).unwrap();
    }
    // 2. udm-formatted devices: real dump and real reads.
    for name in ["ua", "ub", "uc"] {
        let dump = std::fs::read_to_string(share.join(format!("{name}.dump"))).unwrap();
        assert!(
            dump.contains("flags fix_padding fix_hmac"),
            "{name}: {dump}"
        );
        let got = std::fs::read(share.join(format!("{name}.out"))).unwrap();
        assert!(
            got == data[..got.len()] && got.len() >= whole - (1 << 20),
            "{name}: kernel reads other data"
        );
        let st = std::fs::read_to_string(share.join(format!("{name}.status"))).unwrap();
        assert_eq!(st.split_whitespace().nth(3), Some("0"), "{name}: {st}");
    }
    // 3. Differential: same writes, byte-identical disks and status.
    for (((name, rest), kimg), uimg) in DIFF.iter().zip(&kd).zip(&ud) {
        create_formatted(&reg, name, uimg, rest);
        {
            let (dev, _g) = open(&reg, name);
            udm_write_plan(&*dev, &data, &plan);
        }
        let kst = std::fs::read_to_string(share.join(format!("{name}.status"))).unwrap();
        assert_eq!(
            status_fields(&reg, name),
            kernel_status(&format!("{name} {kst}"), name),
            "{name}"
        );
        reg.remove(&sel(name), false).unwrap();
        let (a, b) = (std::fs::read(kimg).unwrap(), std::fs::read(uimg).unwrap());
        let diff: Vec<usize> = (0..a.len() / 512)
            .filter(|&i| a[i * 512..(i + 1) * 512] != b[i * 512..(i + 1) * 512])
            .take(8)
            .collect();
        assert!(
            diff.is_empty(),
            "{name}: sectors differ from the kernel's: {diff:?}"
        );
    }
    // 4. The unreplayed kernel journal replays in udm to the kernel's result.
    let unrep = share.join("unreplayed.img");
    let bytes = std::fs::read(&unrep).unwrap();
    let jg = udm_formats::integrity::JournalGeometry::new(
        4,
        0,
        false,
        u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
    );
    let replay = jg.plan_replay(&bytes[4096..4096 + jg.bytes()]).unwrap();
    assert!(
        !replay.empty,
        "the copied journal has committed entries: {replay:?}"
    );
    let kr_out = std::fs::read(share.join("kr.out")).unwrap();
    let p = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    create(
        &reg,
        "r",
        &format!("0 {p} integrity {} 0 {rrest}", unrep.display()),
    )
    .unwrap();
    let (dev, _g) = open(&reg, "r");
    let plan_blocks: Vec<u64> = plan[..6].iter().flat_map(|&(b, n)| b..b + n).collect();
    for b in plan_blocks {
        let o = (b * 4096) as usize;
        assert_eq!(read(&*dev, b * 8, 4096), kr_out[o..o + 4096], "block {b}");
        assert_eq!(kr_out[o..o + 4096], data[o..o + 4096], "kernel block {b}");
    }
    assert_eq!(status_fields(&reg, "r")[0], "0");
}
