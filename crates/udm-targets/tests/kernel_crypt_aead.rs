//! Authenticated crypt against the kernel (refvm, 6.1), one boot: for gcm(aes),
//! rfc7539(chacha20,poly1305) and authenc(hmac(sha256),xts(aes)) with random IVs over an
//! integrity device without internal hash, what the kernel writes udm reads back as the same
//! plaintext, and what udm writes the kernel reads back (same sector numbers in the
//! associated data, same tag and IV layout in the integrity metadata, same key split).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use udm_io::{sync, Sectors};
use udm_testkit::rng::XorShift;

const SECTORS: u64 = 16384;
/// Sectors written and compared.
const W: u64 = 4096;

fn zero_image(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(SECTORS * 512)
        .unwrap();
    p
}

/// (name, integrity tag size, crypt cipher, key hex, integrity feature).
fn cases() -> Vec<(&'static str, u32, &'static str, String, &'static str)> {
    vec![
        (
            "gcm",
            28,
            "capi:gcm(aes)-random",
            "1f".repeat(32),
            "integrity:28:aead",
        ),
        (
            "cha",
            28,
            "capi:rfc7539(chacha20,poly1305)-random",
            "2e".repeat(32),
            "integrity:28:aead",
        ),
        (
            "hma",
            48,
            "capi:authenc(hmac(sha256),xts(aes))-random",
            "3d".repeat(96),
            "integrity:48:aead",
        ),
    ]
}

#[test]
fn kernel_crypt_aead_interop_both_ways() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let data = XorShift::mixed(21).bytes((W * 512) as usize);
    std::fs::write(share.join("data.bin"), &data).unwrap();
    let reg = registry();
    let mut disks = Vec::new();
    let mut script = String::from("modprobe dm-integrity; modprobe dm-crypt\n");
    for (k, (name, tag, cipher, key, feat)) in cases().into_iter().enumerate() {
        let kd = zero_image(&share, &format!("k{name}"));
        let ud = zero_image(&share, &format!("u{name}"));
        // udm formats and writes its disk.
        let i = format!("integrity {} 0 {tag} J 0", ud.display());
        create(&reg, "f", &format!("0 8 {i}")).unwrap();
        let p: u64 = status_fields(&reg, "f")[1].parse().unwrap();
        reg.remove(&sel("f"), false).unwrap();
        create(&reg, "ui", &format!("0 {p} {i}")).unwrap();
        create(
            &reg,
            "uc",
            &format!("0 {p} crypt {cipher} {key} 0 /dev/mapper/ui 0 1 {feat}"),
        )
        .unwrap();
        {
            let (dev, _g) = open(&reg, "uc");
            write(&*dev, 0, &data);
            sync::flush(&*dev).unwrap();
        }
        reg.remove(&sel("uc"), false).unwrap();
        reg.remove(&sel("ui"), false).unwrap();
        let (kv, uv) = (
            format!("/dev/vd{}", (b'a' + 2 * k as u8) as char),
            format!("/dev/vd{}", (b'a' + 2 * k as u8 + 1) as char),
        );
        disks.push(kd);
        disks.push(ud);
        script.push_str(&format!(
            "dmsetup create kf{name} --table '0 8 integrity {kv} 0 {tag} J 0' && \
             P=$(dmsetup status kf{name} | cut -d' ' -f5) && dmsetup remove kf{name} && \
             dmsetup create ki{name} --table \"0 $P integrity {kv} 0 {tag} J 0\" && \
             dmsetup create kc{name} --table \"0 $P crypt {cipher} {key} 0 /dev/mapper/ki{name} 0 1 {feat}\" && \
             dd if=data.bin of=/dev/mapper/kc{name} bs=64k oflag=direct status=none && \
             dmsetup remove kc{name} && dmsetup remove ki{name} && \
             dmsetup create ui{name} --table \"0 $P integrity {uv} 0 {tag} J 0\" && \
             dmsetup create uc{name} --table \"0 $P crypt {cipher} {key} 0 /dev/mapper/ui{name} 0 1 {feat}\" && \
             dd if=/dev/mapper/uc{name} of={name}.out bs=64k count={} iflag=direct status=none && \
             dmsetup remove uc{name} && dmsetup remove ui{name} && echo OK {name} || echo FAIL {name}\n",
            W * 512 / 65536
        ));
    }
    let refs: Vec<&Path> = disks.iter().map(|p| p.as_path()).collect();
    let (out, err, code) = udm_testkit::refvm_run(&run, &refs, Some(&share), &script);
    assert_eq!(code, 0, "{out}\n{err}");
    for (k, (name, tag, cipher, key, feat)) in cases().into_iter().enumerate() {
        assert!(
            out.contains(&format!("OK {name}")),
            "{name}: kernel side failed:\n{out}\n{err}"
        );
        // The kernel read udm's disk.
        let got = std::fs::read(share.join(format!("{name}.out"))).unwrap();
        assert!(
            got == data,
            "{name}: the kernel reads other data from udm's disk"
        );
        // udm reads the kernel's disk.
        let kd = &disks[2 * k];
        let p = u64::from_le_bytes(std::fs::read(kd).unwrap()[16..24].try_into().unwrap());
        create(
            &reg,
            "ki",
            &format!("0 {p} integrity {} 0 {tag} J 0", kd.display()),
        )
        .unwrap();
        create(
            &reg,
            "kc",
            &format!("0 {p} crypt {cipher} {key} 0 /dev/mapper/ki 0 1 {feat}"),
        )
        .unwrap();
        {
            let (dev, _g) = open(&reg, "kc");
            let r = sync::read_at(&*dev, Sectors(0), data.len()).unwrap();
            assert!(
                r.as_slice() == &data[..],
                "{name}: udm reads other data from the kernel's disk"
            );
        }
        reg.remove(&sel("kc"), false).unwrap();
        reg.remove(&sel("ki"), false).unwrap();
    }
}
