//! Differential tests of the `raid` target against the kernel's dm-raid (refvm, 6.1), all in
//! ONE boot:
//! - the same tables and writes on both sides (raid1, raid5_ls, raid6_zr, raid10) give the
//!   same status lines and byte-identical data legs, superblocks and bitmaps (event
//!   counters aside);
//! - the kernel opens udm's sets, reads the same data and a `check` finds no mismatch
//!   (udm's parity and copies are where md expects them);
//! - a raid5/raid6 set udm degraded (leg 1 failed) and left with dirty bits opens in the
//!   kernel, which recovers the leg and reads the same data; and the reverse: a set the
//!   kernel degraded and left running (dirty) at power-off opens in udm, which recovers it
//!   from the bitmap and reads the same data.
//!
//! Skips without refvm, fails then under `UDM_REQUIRE_TOOLS=1`.

mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::path::Path;
use udm_targets::raid::meta::*;
use udm_testkit::rng::pseudo;

const LEG: u64 = 2048;
const META: u64 = 64;
const SLOT: u64 = 4096;
const CHUNK: u64 = 64;

/// (name, type, legs, length, params after the chunk size)
const SETS: &[(&str, &str, usize, u64, &str)] = &[
    ("r1", "raid1", 2, LEG, "region_size 256"),
    ("r5", "raid5_ls", 4, 3 * LEG, "region_size 256"),
    ("r6", "raid6_zr", 5, 3 * LEG, "region_size 256"),
    ("r10", "raid10", 4, 2 * LEG, "region_size 256"),
];

/// Degraded-and-dirty sets: the raid5 and raid6 of `SETS`.
fn degraded_sets() -> Vec<(&'static str, &'static str, usize, u64, &'static str)> {
    SETS.iter()
        .copied()
        .filter(|s| s.0 == "r5" || s.0 == "r6")
        .collect()
}

/// First slot of set `k` in its image.
fn base(k: usize) -> u64 {
    SETS[..k].iter().map(|s| 2 * s.2 as u64).sum()
}

fn slot_of(k: usize, leg: usize, data: bool) -> u64 {
    base(k) + 2 * leg as u64 + data as u64
}

fn table(pfx: &str, set: (&str, &str, usize, u64, &str)) -> String {
    let (name, ty, n, len, params) = set;
    let words = 1 + params.split_whitespace().count();
    let chunk = if ty == "raid1" { 0 } else { CHUNK };
    let mut t = format!("0 {len} raid {ty} {words} {chunk} {params} {n}");
    for i in 0..n {
        t.push_str(&format!(
            " /dev/mapper/{pfx}{name}_m{i} /dev/mapper/{pfx}{name}_d{i}"
        ));
    }
    t
}

/// The slices of set `k` as linear tables over `dev`: (name, table).
fn slices(pfx: &str, k: usize, dev: &str) -> Vec<(String, String)> {
    let (name, _, n, _, _) = SETS[k];
    let mut v = Vec::new();
    for i in 0..n {
        let m = slot_of(k, i, false) * SLOT;
        let d = slot_of(k, i, true) * SLOT;
        v.push((
            format!("{pfx}{name}_m{i}"),
            format!("0 {META} linear {dev} {m}"),
        ));
        v.push((
            format!("{pfx}{name}_d{i}"),
            format!("0 {LEG} linear {dev} {d}"),
        ));
    }
    v
}

/// The writes every set gets: (sector, sectors, pattern seed); `late` ones come after a
/// leg failed in the degraded runs.
fn writes(len: u64, late: bool) -> Vec<(u64, u64, u64)> {
    let w: &[(u64, u64)] = if late {
        &[(64, 64), (900, 200), (2500, 90), (5000, 17)]
    } else {
        &[
            (3, 8),
            (100, 130),
            (700, 64),
            (1500, 300),
            (3000, 128),
            (6000, 40),
        ]
    };
    w.iter()
        .filter(|(s, n)| s + n <= len)
        .enumerate()
        .map(|(i, &(s, n))| (s, n, 0x7000 + i as u64 + 100 * late as u64))
        .collect()
}

fn apply(model: &mut [u8], w: &[(u64, u64, u64)]) {
    for &(s, n, seed) in w {
        let a = (s * 512) as usize;
        model[a..a + (n * 512) as usize].copy_from_slice(&pseudo((n * 512) as usize, seed));
    }
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Guest shell lines writing `w` to /dev/mapper/NAME (pattern files w<seed>.bin in share).
fn guest_writes(share: &Path, dev: &str, w: &[(u64, u64, u64)]) -> String {
    let mut s = String::new();
    for &(sec, n, seed) in w {
        std::fs::write(
            share.join(format!("w{seed}.bin")),
            pseudo((n * 512) as usize, seed),
        )
        .unwrap();
        s += &format!(
            "dd if=w{seed}.bin of=/dev/mapper/{dev} bs=512 seek={sec} oflag=direct conv=notrunc status=none\n"
        );
    }
    s
}

/// The first word after `<tag> ` in the guest's output.
fn tagged(out: &str, tag: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{tag} ")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {tag} in:\n{out}"))
        .to_string()
}

fn create_slices(reg: &udm_core::Registry, pfx: &str, k: usize, img: &Path) {
    for (n, t) in slices(pfx, k, &img.display().to_string()) {
        create(reg, &n, &t).unwrap();
    }
}

fn fail_leg(reg: &udm_core::Registry, name: &str) {
    reg.suspend(&sel(name), false, false).unwrap();
    reg.load(&sel(name), &lines(&format!("0 {LEG} error")), false)
        .unwrap();
    reg.resume(&sel(name)).unwrap();
}

/// Superblock with the event counter cleared, and the bitmap area with its counters cleared.
fn meta_masked(img: &[u8], k: usize, leg: usize) -> (Vec<u8>, Vec<u8>) {
    let at = (slot_of(k, leg, false) * SLOT * 512) as usize;
    let m = &img[at..at + (META * 512) as usize];
    let mut sb = Superblock::decode(&m[..512]);
    sb.events = 0;
    let mut bsb = BitmapSuper::decode(&m[4096..4096 + 256]);
    bsb.events = 0;
    bsb.events_cleared = 0;
    let mut bm = bsb.encode().to_vec();
    bm.extend_from_slice(&m[4096 + 256..]);
    (sb.encode(512), bm)
}

#[test]
fn kernel_raid_same_bytes_and_both_ways_degraded() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path();
    let total = base(SETS.len()) * SLOT * 512;
    let (k_img, u_img, ud_img, kd_img) = (
        zero_file(share, "k.img", total),
        zero_file(share, "u.img", total),
        zero_file(share, "ud.img", total),
        zero_file(share, "kd.img", total),
    );
    let reg = registry();
    // udm: the plain sets on u.img.
    let mut ustatus = Vec::new();
    for (k, &set) in SETS.iter().enumerate() {
        create_slices(&reg, "", k, &u_img);
        create(&reg, set.0, &table("", set)).unwrap();
        wait_idle(&reg, set.0);
        {
            let (dev, _g) = open(&reg, set.0);
            for &(s, n, seed) in &writes(set.3, false) {
                write(&*dev, s, &pseudo((n * 512) as usize, seed));
            }
        }
        ustatus.push(wait_idle(&reg, set.0).join(" "));
        reg.remove(&sel(set.0), false).unwrap();
    }
    // udm: raid5/raid6 degraded (leg 1 failed after the first writes) on ud.img.
    for set in degraded_sets() {
        let k = SETS.iter().position(|s| s.0 == set.0).unwrap();
        create_slices(&reg, "d", k, &ud_img);
        let name = format!("d{}", set.0);
        create(&reg, &name, &table("d", set)).unwrap();
        wait_idle(&reg, &name);
        let (dev, _g) = open(&reg, &name);
        for &(s, n, seed) in &writes(set.3, false) {
            write(&*dev, s, &pseudo((n * 512) as usize, seed));
        }
        fail_leg(&reg, &format!("d{}_d1", set.0));
        for &(s, n, seed) in &writes(set.3, true) {
            write(&*dev, s, &pseudo((n * 512) as usize, seed));
        }
        let f = status_fields(&reg, &name);
        assert_eq!(f[2].as_bytes()[1], b'D', "{f:?}");
        drop(_g);
        reg.remove(&sel(&name), false).unwrap();
        reg.remove(&sel(&format!("d{}_d1", set.0)), false).unwrap();
    }
    reg.remove_all(false);

    // The one boot: vda k.img, vdb u.img, vdc ud.img, vdd kd.img.
    let mut sc = String::from(
        r#"set -e
modprobe dm-raid
wait_idle() { n=$1; for i in $(seq 1 1200); do set -- $(dmsetup status $n); r=$7; case "$8 $6" in idle*a*) ;; idle*) [ "${r%/*}" = "${r#*/}" ] && return 0;; esac; sleep 0.1; done; echo "$n stuck: $(dmsetup status $n)"; return 1; }
"#,
    );
    let mk = |pfx: &str, k: usize, dev: &str| -> String {
        slices(pfx, k, dev)
            .iter()
            .map(|(n, t)| format!("dmsetup create {n} --table \"{t}\"\n"))
            .collect()
    };
    for (k, &set) in SETS.iter().enumerate() {
        let n = set.0;
        // (a) the kernel's own run of the same table and writes on k.img.
        sc += &mk("", k, "/dev/vda");
        sc += &format!(
            "dmsetup create {n} --table \"{}\"\nwait_idle {n}\n",
            table("", set)
        );
        sc += &guest_writes(share, n, &writes(set.3, false));
        sc += &format!("wait_idle {n}\necho \"KS_{n} $(dmsetup status {n})\"\n");
        sc += &format!("echo \"KT_{n} $(dmsetup table {n})\"\ndmsetup remove {n}\n");
        // (b) udm's set from u.img: status, data, a clean check.
        sc += &mk("u", k, "/dev/vdb");
        sc += &format!(
            "dmsetup create u{n} --table \"{}\"\nwait_idle u{n}\necho \"US_{n} $(dmsetup status u{n})\"\n",
            table("u", set)
        );
        sc += &format!("echo \"UH_{n} $(sha256sum < /dev/mapper/u{n})\"\n");
        sc += &format!(
            "dmsetup message u{n} 0 check\nsleep 0.5\nwait_idle u{n}\necho \"UC_{n} $(dmsetup status u{n})\"\ndmsetup remove u{n}\n"
        );
    }
    for set in degraded_sets() {
        let k = SETS.iter().position(|s| s.0 == set.0).unwrap();
        let n = set.0;
        // (c) udm's degraded, dirty set from ud.img, all legs back: the kernel recovers it.
        sc += &mk("d", k, "/dev/vdc");
        sc += &format!(
            "dmsetup create d{n} --table \"{}\"\necho \"DS0_{n} $(dmsetup status d{n})\"\nwait_idle d{n}\n",
            table("d", set)
        );
        sc += &format!("echo \"DH_{n} $(sha256sum < /dev/mapper/d{n})\"\n");
        sc += &format!(
            "dmsetup message d{n} 0 check\nsleep 0.5\nwait_idle d{n}\necho \"DC_{n} $(dmsetup status d{n})\"\ndmsetup remove d{n}\n"
        );
        // (d) the kernel degrades its own set on kd.img and leaves it running (dirty).
        sc += &mk("e", k, "/dev/vdd");
        sc += &format!(
            "dmsetup create e{n} --table \"{}\"\nwait_idle e{n}\n",
            table("e", set)
        );
        sc += &guest_writes(share, &format!("e{n}"), &writes(set.3, false));
        sc += &format!(
            "dmsetup suspend e{n}_d1\ndmsetup load e{n}_d1 --table \"0 {LEG} error\"\ndmsetup resume e{n}_d1\n"
        );
        sc += &guest_writes(share, &format!("e{n}"), &writes(set.3, true));
        sc += &format!("echo \"ES_{n} $(dmsetup status e{n})\"\n");
    }
    sc += "sync\n";
    let (out, err, code) =
        udm_testkit::refvm_run(&run, &[&k_img, &u_img, &ud_img, &kd_img], Some(share), &sc);
    assert_eq!(
        code, 0,
        "refvm script failed\nstdout:\n{out}\nstderr:\n{err}"
    );

    let k = std::fs::read(&k_img).unwrap();
    let u = std::fs::read(&u_img).unwrap();
    for (i, &set) in SETS.iter().enumerate() {
        let n = set.0;
        let mut model = vec![0u8; (set.3 * 512) as usize];
        apply(&mut model, &writes(set.3, false));
        // Same status line as the kernel after the same work.
        let ks = kernel_status(&out, &format!("KS_{n}")).join(" ");
        assert_eq!(ustatus[i], ks, "{n}: status");
        let kt = kernel_status(&out, &format!("KT_{n}"));
        let words = table("", set).split_whitespace().count() - 2 * set.2 - 3;
        assert_eq!(
            kt[..words].join(" "),
            table("", set)
                .split_whitespace()
                .skip(3)
                .take(words)
                .collect::<Vec<_>>()
                .join(" "),
            "{n}: table line"
        );
        // Byte-identical data legs, superblocks and bitmaps.
        for leg in 0..set.2 {
            let at = (slot_of(i, leg, true) * SLOT * 512) as usize;
            let len = (LEG * 512) as usize;
            assert!(
                k[at..at + len] == u[at..at + len],
                "{n}: data leg {leg} differs"
            );
            let (ksb, kbm) = meta_masked(&k, i, leg);
            let (usb, ubm) = meta_masked(&u, i, leg);
            assert_eq!(
                Superblock::decode(&usb),
                Superblock::decode(&ksb),
                "{n}: superblock of leg {leg}"
            );
            assert!(usb == ksb, "{n}: superblock bytes of leg {leg}");
            assert_eq!(
                BitmapSuper::decode(&ubm),
                BitmapSuper::decode(&kbm),
                "{n}: bitmap superblock of leg {leg}"
            );
            let diff = ubm.iter().zip(&kbm).position(|(a, b)| a != b);
            assert!(
                diff.is_none(),
                "{n}: bitmap bytes of leg {leg} differ at {diff:?}: udm {:02x?} kernel {:02x?}",
                &ubm[diff.unwrap_or(0)..(diff.unwrap_or(0) + 16).min(ubm.len())],
                &kbm[diff.unwrap_or(0)..(diff.unwrap_or(0) + 16).min(kbm.len())]
            );
        }
        // The kernel reads udm's set right and finds it consistent.
        assert_eq!(kernel_status(&out, &format!("US_{n}")).join(" "), ks);
        assert_eq!(tagged(&out, &format!("UH_{n}")), sha(&model), "{n}");
        let uc = kernel_status(&out, &format!("UC_{n}"));
        assert_eq!(uc[5], "0", "{n}: kernel check of udm's set: {uc:?}");
    }
    // udm's degraded sets in the kernel, and the kernel's in udm.
    let reg = registry();
    for set in degraded_sets() {
        let i = SETS.iter().position(|s| s.0 == set.0).unwrap();
        let n = set.0;
        let mut model = vec![0u8; (set.3 * 512) as usize];
        apply(&mut model, &writes(set.3, false));
        apply(&mut model, &writes(set.3, true));
        eprintln!(
            "{n}: kernel opened udm's degraded set: {:?}",
            kernel_status(&out, &format!("DS0_{n}"))
        );
        assert_eq!(tagged(&out, &format!("DH_{n}")), sha(&model), "{n}");
        let dc = kernel_status(&out, &format!("DC_{n}"));
        assert_eq!(
            (dc[2].as_str(), dc[5].as_str()),
            (&*"A".repeat(set.2), "0"),
            "{n}: {dc:?}"
        );
        let es = kernel_status(&out, &format!("ES_{n}"));
        assert_eq!(es[2].as_bytes()[1], b'D', "{n}: kernel degraded: {es:?}");
        create_slices(&reg, "e", i, &kd_img);
        let name = format!("e{n}");
        create(&reg, &name, &table("e", set)).unwrap();
        let f = wait_idle(&reg, &name);
        assert_eq!(f[2], "A".repeat(set.2), "{n}: {f:?}");
        {
            let (dev, _g) = open(&reg, &name);
            assert!(
                read(&*dev, 0, model.len()) == model,
                "{n}: udm reads the kernel's set"
            );
        }
        reg.message(&sel(&name), 0, &["check".into()]).unwrap();
        let f = wait_idle(&reg, &name);
        assert_eq!(f[5], "0", "{n}: {f:?}");
        // And leg 1 alone may be lost again: the rebuilt leg's data is right.
        fail_leg(&reg, &format!("e{n}_d0"));
        let (dev, _g) = open(&reg, &name);
        assert!(
            read(&*dev, 0, model.len()) == model,
            "{n}: after recovery, without leg 0"
        );
    }
}
