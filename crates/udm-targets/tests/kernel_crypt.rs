//! Differential test against the kernel's dm-crypt (refvm, kernel 6.1): the same tables (every
//! cipher/IV mode udm has, sector sizes, iv_offset, offsets, options) opened by the kernel and
//! by udm, with the same plaintext written, give byte-identical ciphertext on disk, the same
//! table lines (`--showkeys`) and target version, and the same verdict on bad tables.

mod common;
use common::*;
use udm_testkit::rng::{hex_key, pseudo};

const REGION: u64 = 2048; // sectors per table on the shared disk
const DATA: u64 = 256; // sectors written per table

/// (cipher, key bytes, iv_offset, offset within the region, options).
fn tables() -> Vec<(String, String, u64, u64, String)> {
    let t = |c: &str, k: usize, iv: u64, off: u64, o: &str, seed: u64| {
        (c.to_string(), hex_key(k, seed), iv, off, o.to_string())
    };
    vec![
        t("aes-xts-plain64", 64, 0, 0, "", 1),
        t("aes-xts-plain64", 32, 12345, 8, "1 allow_discards", 2),
        t(
            "aes-xts-plain64",
            64,
            8,
            16,
            "2 sector_size:4096 iv_large_sectors",
            3,
        ),
        t(
            "aes-xts-plain64",
            64,
            0,
            0,
            "3 same_cpu_crypt submit_from_crypt_cpus sector_size:4096",
            4,
        ),
        t(
            "aes-xts-plain",
            64,
            4294967000,
            0,
            "2 no_read_workqueue no_write_workqueue",
            5,
        ),
        t("aes-xts-plain64be", 64, 0, 0, "", 6),
        t("aes-cbc-essiv:sha256", 32, 0, 1, "", 7),
        t("aes-cbc-essiv:sha256", 16, 0, 0, "1 sector_size:1024", 8),
        t("aes-cbc-plain64", 24, 0, 0, "", 9),
        t("aes-cbc-benbi", 16, 0, 0, "", 10),
        t("aes-cbc-null", 32, 0, 0, "", 11),
        t("aes-ecb", 16, 0, 0, "", 12),
        t("capi:xts(aes)-plain64", 64, 0, 0, "", 13),
        t("serpent-xts-plain64", 64, 0, 0, "", 14),
        t("twofish-cbc-essiv:sha256", 32, 0, 0, "", 15),
        t("aes:2-cbc-plain64", 64, 0, 0, "", 16),
    ]
}

/// Tables the kernel and udm must both refuse.
const BAD: [&str; 6] = [
    "aes-cbc KEY 0 DEV 0",
    "aes-xts-bogus KEY 0 DEV 0",
    "aes-xts-plain64 KEY 1 DEV 0 1 sector_size:4096",
    "aes-xts-random KEY 0 DEV 0",
    "aes-xts-plain64 - 0 DEV 0",
    "aes-xts-plain64 KEY 0 DEV 0 1 frob",
];

#[test]
fn kernel_crypt_same_ciphertext_and_tables() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let list = tables();
    let disk_sectors = REGION * list.len() as u64;
    let kdisk = image(&share, "kernel.img", disk_sectors, 0);
    let udisk = image(dir.path(), "udm.img", disk_sectors, 0);
    let plain = pseudo((DATA * 512) as usize, 42);
    std::fs::write(share.join("plain.bin"), &plain).unwrap();

    let mut script = String::from(
        "modprobe dm-crypt\nset -e\nfor m in serpent twofish essiv; do modprobe $m 2>/dev/null || true; done\n\
         dmsetup targets | grep crypt > version.txt\n",
    );
    for (i, (c, k, iv, off, o)) in list.iter().enumerate() {
        let start = i as u64 * REGION + off;
        script.push_str(&format!(
            "dmsetup create c{i} --table '0 {DATA} crypt {c} {k} {iv} /dev/vda {start} {o}'\n\
             dd if=plain.bin of=/dev/mapper/c{i} bs=64k oflag=direct status=none\n\
             dmsetup table --showkeys c{i} >> tables.txt\n\
             dmsetup remove c{i}\n"
        ));
    }
    script.push_str("set +e\n");
    let k32 = hex_key(32, 99);
    for (i, b) in BAD.iter().enumerate() {
        let t = b.replace("KEY", &k32).replace("DEV", "/dev/vda");
        script.push_str(&format!(
            "dmsetup create bad{i} --table '0 64 crypt {t}' 2>/dev/null; echo \"bad{i} $?\" >> bad.txt\n"
        ));
    }
    let (out, err, code) = udm_testkit::refvm_run(&run, &[&kdisk], Some(&share), &script);
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}");

    // udm: the same tables on its own image.
    let reg = registry();
    let p = udisk.display().to_string();
    let mut utables = String::new();
    for (i, (c, k, iv, off, o)) in list.iter().enumerate() {
        let start = i as u64 * REGION + off;
        let t = format!("0 {DATA} crypt {c} {k} {iv} {p} {start} {o}");
        create(&reg, "c", &t).unwrap_or_else(|e| panic!("{t}: {e}"));
        let (dev, g) = open(&reg, "c");
        write(dev.as_ref(), 0, &plain);
        assert_eq!(read(dev.as_ref(), 0, plain.len()), plain, "{t}");
        drop((dev, g));
        let st = reg
            .status(&sel("c"), false, udm_core::StatusType::Table)
            .unwrap()
            .1;
        utables.push_str(&format!("0 {DATA} crypt {}\n", st[0].params));
        reg.remove(&sel("c"), false).unwrap();
    }
    let kimg = std::fs::read(&kdisk).unwrap();
    let uimg = std::fs::read(&udisk).unwrap();
    for (i, t) in list.iter().enumerate() {
        let r = (i as u64 * REGION * 512) as usize..((i as u64 + 1) * REGION * 512) as usize;
        assert!(kimg[r.clone()] == uimg[r], "ciphertext differs for {t:?}");
    }
    let ktables = std::fs::read_to_string(share.join("tables.txt")).unwrap();
    let kdev = ktables.split_whitespace().nth(6).unwrap().to_string();
    assert_eq!(ktables.replace(&kdev, &p), utables);
    let version = std::fs::read_to_string(share.join("version.txt")).unwrap();
    assert!(version.contains("v1.24.0"), "kernel crypt: {version}");

    // Bad tables: the kernel refuses every one, and so does udm.
    let bad = std::fs::read_to_string(share.join("bad.txt")).unwrap();
    for (i, b) in BAD.iter().enumerate() {
        assert!(
            bad.lines()
                .any(|l| l.starts_with(&format!("bad{i} ")) && !l.ends_with(" 0")),
            "kernel accepted {b}: {bad}"
        );
        let t = b.replace("KEY", &k32).replace("DEV", &p);
        assert!(
            create(&reg, "b", &format!("0 64 crypt {t}")).is_err(),
            "udm accepted {t}"
        );
    }
}
