//! Differential test against the kernel's dm-verity (refvm, kernel 6.1): the same verity image
//! with the same corrupted data and hash blocks, opened with the same tables (plain, with FEC,
//! with `ignore_zero_blocks`, with `ignore_corruption`), gives the same status (`V` before any
//! read, then `V`/`C`), the same set of blocks that fail to read, and the same bytes.

mod common;
mod verity_img;
use common::*;
use verity_img::*;

const BS: u64 = 4096;
const BLOCKS: u64 = 512;

/// (name, options, uses FEC).
const TABLES: [(&str, &str, bool); 4] = [
    ("plain", "", false),
    ("fec", "", true),
    ("zero", "ignore_zero_blocks", false),
    ("log", "ignore_corruption", false),
];

#[test]
fn kernel_verity_same_failures_and_status() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let img = make(&share, BS as u32, BLOCKS, &[10, 11], Some(2));
    // 512 data + 5 tree blocks under FEC: 3 rounds, round r = virtual block % 3.
    let mut data = std::fs::read(&img.data).unwrap();
    let mut hit = |b: u64, at: u64| data[(b * BS + at) as usize] ^= 0x5a;
    hit(3, 0); // round 0, alone: FEC corrects it
    for b in [100, 103, 106] {
        hit(b, 17); // round 1, three bad blocks: beyond FEC with roots 2
    }
    hit(290, 4095); // round 2, two bad blocks: FEC corrects them with erasures
    hit(293, 1);
    hit(10, 9); // an all-zero block, corrupted
    std::fs::write(&img.data, &data).unwrap();
    // Level-0 hash block 3 (covering data blocks 128..255) gets a bad digest byte.
    flip(&img.hash, 3 * BS + 5 * 32 + 1, 0x01);

    let tables: Vec<(String, String)> = TABLES
        .iter()
        .map(|(n, o, fec)| (n.to_string(), img.table_fec(o, *fec)))
        .collect();

    // The kernel: the files as /dev/vda (data), vdb (hash), vdc (fec).
    let mut script = String::from(
        "set -e\nmodprobe dm-verity\nstat -c '%t:%T' /dev/vda /dev/vdb /dev/vdc > devs.txt\n",
    );
    for (name, t) in &tables {
        let kt = t
            .replace(&img.data.display().to_string(), "/dev/vda")
            .replace(&img.hash.display().to_string(), "/dev/vdb")
            .replace(
                &img.fec.as_ref().unwrap().0.display().to_string(),
                "/dev/vdc",
            );
        script.push_str(&format!(
            "dmsetup create {name} --readonly --table '{kt}'\n\
             dmsetup status {name} | cut -d' ' -f4- > {name}.before\n\
             dmsetup table {name} | cut -d' ' -f4- > {name}.table\n\
             dd if=/dev/mapper/{name} of={name}.bin bs={BS} iflag=direct conv=noerror,sync 2> {name}.dd || true\n\
             dmsetup status {name} | cut -d' ' -f4- > {name}.after\n\
             dmsetup remove {name}\n"
        ));
    }
    // Same boot: FEC past its limit (512-byte blocks, roots 4, eight whole blocks inverted in
    // one round). RS then miscorrects every codeword the same way (same error positions and
    // magnitudes); the hash check rejects the wrong blocks, but a block whose miscorrection
    // happens to restore it reads back (block 123 here, in the kernel too).
    let beyond_dir = share.join("beyond");
    std::fs::create_dir(&beyond_dir).unwrap();
    let (beyond, beyond_table) = beyond_limit_image(&beyond_dir);
    let beyond_fec = beyond.fec.as_ref().unwrap().0.clone();
    let kt = beyond_table
        .replace(&beyond.data.display().to_string(), "/dev/vdd")
        .replace(&beyond.hash.display().to_string(), "/dev/vde")
        .replace(&beyond_fec.display().to_string(), "/dev/vdf");
    script.push_str(&format!(
        "dmsetup create beyond --readonly --table '{kt}'\n\
         for b in $(seq 0 {}); do dd if=/dev/mapper/beyond of=/dev/null bs=512 skip=$b count=1 iflag=direct 2>/dev/null || echo $b; done > beyond.fails\n\
         dmsetup remove beyond\n",
        beyond.blocks - 1
    ));
    let fec_path = img.fec.as_ref().unwrap().0.clone();
    let (out, err, code) = udm_testkit::refvm_run(
        &run,
        &[
            &img.data,
            &img.hash,
            &fec_path,
            &beyond.data,
            &beyond.hash,
            &beyond_fec,
        ],
        Some(&share),
        &script,
    );
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}");

    // Kernel device numbers (hex from stat) -> the files udm was given.
    let devs = std::fs::read_to_string(share.join("devs.txt")).unwrap();
    let files = [img.data.clone(), img.hash.clone(), fec_path.clone()];
    let norm = |t: &str| {
        let mut t = t.to_string();
        for (l, f) in devs.lines().zip(&files) {
            let (a, b) = l.split_once(':').unwrap();
            let num = format!(
                "{}:{}",
                u32::from_str_radix(a, 16).unwrap(),
                u32::from_str_radix(b, 16).unwrap()
            );
            t = t.replace(&format!(" {num} "), &format!(" {} ", f.display()));
        }
        t
    };
    let reg = registry();
    for (name, t) in &tables {
        let k = |ext: &str| std::fs::read_to_string(share.join(format!("{name}.{ext}"))).unwrap();
        create_ro(&reg, name, t).unwrap();
        assert_eq!(
            format!("{}\n", info(&reg, name)),
            k("before"),
            "{name}: status before"
        );
        let table = reg
            .status(&sel(name), false, udm_core::StatusType::Table)
            .unwrap()
            .1[0]
            .params
            .clone();
        assert_eq!(
            format!("{table}\n"),
            norm(&k("table")),
            "{name}: table line"
        );
        let (dev, _g) = open(&reg, name);
        let mut bytes = vec![0u8; (BS * BLOCKS) as usize];
        let mut fails = Vec::new();
        for b in 0..BLOCKS {
            match udm_io::sync::read_at(dev.as_ref(), udm_io::Sectors(b * BS / 512), BS as usize) {
                Ok(buf) => bytes[(b * BS) as usize..][..BS as usize].copy_from_slice(&buf),
                Err(_) => fails.push(b),
            }
        }
        let kfails = dd_failures(&k("dd"));
        assert_eq!(
            fails, kfails,
            "{name}: failing blocks differ from the kernel's"
        );
        assert_eq!(
            format!("{}\n", info(&reg, name)),
            k("after"),
            "{name}: status after"
        );
        // Every block both could read has the same bytes.
        let kbytes = std::fs::read(share.join(format!("{name}.bin"))).unwrap();
        for b in (0..BLOCKS).filter(|b| !fails.contains(b)) {
            let r = (b * BS) as usize..((b + 1) * BS) as usize;
            assert!(bytes[r.clone()] == kbytes[r], "{name}: block {b} differs");
        }
    }

    let kfails: Vec<u64> = std::fs::read_to_string(share.join("beyond.fails"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    create_ro(&reg, "beyond", &beyond_table).unwrap();
    let (dev, _g) = open(&reg, "beyond");
    let fails = failing_blocks(dev.as_ref(), 512, beyond.blocks);
    assert_eq!(
        fails, kfails,
        "beyond: failing blocks differ from the kernel's"
    );
    for b in (0..beyond.blocks).filter(|b| !fails.contains(b)) {
        let want = &beyond.content[(b * 512) as usize..][..512];
        assert!(
            read(dev.as_ref(), b, 512) == want,
            "beyond: block {b} differs"
        );
    }
}

/// The image and table of the FEC-past-its-limit case (proptest `fec_corrects_up_to_its_limit`
/// once expected block 123 to fail here).
fn beyond_limit_image(dir: &std::path::Path) -> (Img, String) {
    let img = make(dir, 512, 300, &[], Some(4));
    let mut v = std::fs::read(&img.data).unwrap();
    for b in [75u64, 111, 121, 123, 173, 217, 219, 289] {
        v[(b * 512) as usize..][..512]
            .iter_mut()
            .for_each(|x| *x = !*x);
    }
    std::fs::write(&img.data, v).unwrap();
    let t = img.table("").replace("fec_roots 2", "fec_roots 4");
    (img, t)
}

/// Blocks GNU dd (`conv=noerror,sync`, one block per record) failed to read: after each
/// "dd: error reading" it prints its counters, and "N+0 records out" is the failed block.
fn dd_failures(log: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after_error = false;
    for l in log.lines() {
        if l.starts_with("dd: error reading") {
            after_error = true;
        } else if after_error && l.ends_with("records out") {
            out.push(l.split('+').next().unwrap().parse().unwrap());
            after_error = false;
        }
    }
    out
}
