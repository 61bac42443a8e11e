//! Differential test against the kernel's dm-era (refvm, 6.1), in ONE boot:
//! 1. udm and the kernel run the same writes and checkpoints on fresh metadata; `era_dump`
//!    of both gives every block the same last-written era, and their status lines agree
//!    (era, held snapshot, total metadata blocks);
//! 2. the kernel opens udm's metadata, continues at the era udm would (one past udm's last),
//!    writes more, and udm's metadata then records those writes in that era (`era_check`
//!    clean); udm opens the kernel's metadata at the era the kernel reopens it at.
//!
//! Used metadata blocks are printed, not compared: they depend on each side's allocation
//! order. Skips without refvm, fails then under `UDM_REQUIRE_TOOLS=1`.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const BS: u64 = 16;
const SECTORS: u64 = 100 * BS;
const ROUNDS: [&[u64]; 3] = [&[0, 1, 2, 10, 50], &[2, 3, 60, 61], &[0, 70]];
const LATER: &[u64] = &[5, 61];

fn era_check(meta: &Path) {
    let out = Command::new("era_check").arg(meta).output().unwrap();
    assert!(
        out.status.success(),
        "era_check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (metadata block size, total metadata blocks, era, snapshot) of a status line.
fn comparable(f: &[String]) -> Vec<String> {
    vec![
        f[0].clone(),
        f[1].split('/').nth(1).unwrap().to_string(),
        f[2].clone(),
        f[3].clone(),
    ]
}

#[test]
fn kernel_era_writesets_and_metadata_both_ways() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path();
    let zero = |n: &str, bytes: u64| zero_file(share, n, bytes);
    let (um, uo, km, ko) = (
        zero("um.img", 4 << 20),
        zero("uo.img", SECTORS * 512),
        zero("km.img", 4 << 20),
        zero("ko.img", SECTORS * 512),
    );
    let table = |m: &str, o: &str| format!("0 {SECTORS} era {m} {o} {BS}");
    let reg = registry();
    let s = |p: &Path| p.display().to_string();
    create(&reg, "u", &table(&s(&um), &s(&uo))).unwrap();
    let mut model = BTreeMap::new();
    let ust;
    {
        let (dev, _g) = open(&reg, "u");
        for (i, blocks) in ROUNDS.iter().enumerate() {
            for &b in *blocks {
                write(&*dev, b * BS, &[i as u8 + 1; (BS * 512) as usize]);
                model.insert(b, i as u64 + 1);
            }
            if i + 1 < ROUNDS.len() {
                reg.message(&sel("u"), 0, &["checkpoint".to_string()])
                    .unwrap();
            }
        }
        ust = status_fields(&reg, "u");
    }
    reg.remove(&sel("u"), false).unwrap();
    era_check(&um);
    assert_eq!(logical_eras(&um), model, "udm's own writesets");

    let mut script = String::from("set -e\nmodprobe dm-era\n");
    script += &format!(
        "dmsetup create k --table \"{}\"\n",
        table("/dev/vdc", "/dev/vdd")
    );
    for (i, blocks) in ROUNDS.iter().enumerate() {
        for b in *blocks {
            script += &format!(
                "dd if=/dev/zero of=/dev/mapper/k bs=8k seek={b} count=1 oflag=direct status=none\n"
            );
        }
        if i + 1 < ROUNDS.len() {
            script += "dmsetup message k 0 checkpoint\n";
        }
    }
    script += "echo \"K1 $(dmsetup status k)\"\ndmsetup remove k\n";
    script += &format!(
        "dmsetup create k --table \"{}\"\necho \"K2 $(dmsetup status k)\"\ndmsetup remove k\n",
        table("/dev/vdc", "/dev/vdd")
    );
    script += &format!(
        "dmsetup create u --table \"{}\"\necho \"U1 $(dmsetup status u)\"\n",
        table("/dev/vda", "/dev/vdb")
    );
    for b in LATER {
        script += &format!(
            "dd if=/dev/zero of=/dev/mapper/u bs=8k seek={b} count=1 oflag=direct status=none\n"
        );
    }
    script += "dmsetup remove u\nera_check /dev/vda && echo UCHECK\n";
    let (out, err, code) =
        udm_testkit::refvm_run(&run, &[&um, &uo, &km, &ko], Some(share), &script);
    assert_eq!(
        code, 0,
        "refvm script failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(out.contains("UCHECK"), "{out}");

    // 1. Same writes, same checkpoints: same writesets, same status.
    let k1 = kernel_status(&out, "K1");
    eprintln!(
        "udm status: {}\nkernel:     {}",
        ust.join(" "),
        k1.join(" ")
    );
    assert_eq!(comparable(&ust), comparable(&k1));
    era_check(&km);
    assert_eq!(
        logical_eras(&km),
        model,
        "the kernel's writesets for the same writes"
    );

    // 2. The kernel continued udm's metadata one era past udm's last.
    let u1 = kernel_status(&out, "U1");
    assert_eq!(u1[2], (ROUNDS.len() + 1).to_string(), "{u1:?}");
    era_check(&um);
    let mut later = model.clone();
    for &b in LATER {
        later.insert(b, ROUNDS.len() as u64 + 1);
    }
    assert_eq!(
        logical_eras(&um),
        later,
        "udm's metadata holds the kernel's writes"
    );

    // udm opens the kernel's metadata at the era the kernel would reopen it at.
    let k2 = kernel_status(&out, "K2");
    create(&reg, "k", &table(&s(&km), &s(&ko))).unwrap();
    let st = status_fields(&reg, "k");
    eprintln!(
        "kernel reopen: {}\nudm reopen:    {}",
        k2.join(" "),
        st.join(" ")
    );
    let k2era: u64 = k2[2].parse().unwrap();
    assert_eq!(
        st[2],
        (k2era + 1).to_string(),
        "udm reopens one era past the kernel's"
    );
    reg.remove(&sel("k"), false).unwrap();
    era_check(&km);
    assert_eq!(logical_eras(&km), model);
}
