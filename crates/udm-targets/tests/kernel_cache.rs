//! Differential test against the kernel's dm-cache (refvm, 6.1), both directions in ONE boot:
//! 1. udm builds a writeback cache (metadata2, smq) with promoted and dirty blocks and shuts
//!    it down cleanly; the kernel opens that metadata, reports the same resident and dirty
//!    counts, reads the same data, and its `cleaner` writes udm's dirty blocks back so the
//!    origin equals udm's model;
//! 2. the kernel builds a cache the same way and is suspended with dirty blocks; a copy of
//!    that state opens in udm with the kernel's resident/dirty counts and data, and udm's
//!    `cleaner` flushes it to an origin byte-identical to the kernel's own cleaner flush.
//!
//! The status lines are compared field by field where they are deterministic; hits, misses,
//! promotions and demotions depend on each side's timing (both smq policies are time driven,
//! ticking on their own schedule) and used metadata blocks on each side's
//! allocation order, so those are printed, not compared (the saved hit/miss counters each
//! side loads from the other's superblock are compared).
//!
//! Skips without refvm, fails then under `UDM_REQUIRE_TOOLS=1`.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use udm_core::StatusType;
use udm_testkit::rng::pseudo;

const BS: u64 = 64;
const ORIGIN: u64 = 10240; // sectors: 160 blocks
const CACHE_BYTES: u64 = 24 * BS * 512;
const META_BYTES: u64 = 4 << 20;

fn zeroed(dir: &Path, name: &str, bytes: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(bytes).unwrap();
    p
}

fn table(meta: &str, cache: &str, origin: &str, policy: &str) -> String {
    format!("0 {ORIGIN} cache {meta} {cache} {origin} {BS} 2 metadata2 writeback {policy} 0")
}

fn udm_status(reg: &udm_core::Registry, name: &str) -> Vec<String> {
    let (_, st) = reg.status(&sel(name), false, StatusType::Info).unwrap();
    st[0].params.split_whitespace().map(String::from).collect()
}

/// The fields of a cache status line that do not depend on policy or allocation order.
fn deterministic(f: &[String]) -> Vec<String> {
    let mut v = vec![f[0].clone(), f[1].split('/').nth(1).unwrap().to_string()];
    v.extend(f[2..4].iter().cloned());
    v.push(f[10].clone());
    v.extend(f[11..].iter().cloned());
    v
}

/// `dmsetup status` line of `name` tagged `tag` in the VM output, as params.
fn kernel_status(out: &str, tag: &str) -> Vec<String> {
    let l = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{tag} ")))
        .unwrap_or_else(|| panic!("no {tag} line in:\n{out}"));
    l.split_whitespace().skip(3).map(String::from).collect()
}

fn drain_with_cleaner(reg: &udm_core::Registry, name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while udm_status(reg, name)[10] != "0" {
        assert!(std::time::Instant::now() < deadline, "udm cleaner stuck");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn kernel_cache_metadata_and_data_both_ways() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path();
    // Set U (udm first).
    let (um, uc, uo) = (
        zeroed(share, "um.img", META_BYTES),
        zeroed(share, "uc.img", CACHE_BYTES),
        share.join("uo.img"),
    );
    let mut model = pseudo((ORIGIN * 512) as usize, 0x0c);
    std::fs::write(&uo, &model).unwrap();
    let reg = registry();
    let s = |p: &Path| p.display().to_string();
    create(&reg, "u", &table(&s(&um), &s(&uc), &s(&uo), "smq")).unwrap();
    {
        let (dev, _g) = open(&reg, "u");
        for round in 0..3u64 {
            let _ = read(&*dev, 0, (30 * BS * 512) as usize);
            let data = pseudo((4 * BS * 512) as usize, 100 + round);
            let at = (2 + round * 5) * BS;
            write(&*dev, at, &data);
            let a = (at * 512) as usize;
            model[a..a + data.len()].copy_from_slice(&data);
        }
        udm_io::sync::flush(&*dev).unwrap();
    }
    // smq writes every dirty block back as soon as the cache has been idle for a second (and
    // a fresh table counts as idle): both sides run with no migration bandwidth while their
    // status is compared, and the kernel's last write is made with none either (else a slow
    // VM can idle a second before the suspend and leave no dirty block).
    reg.message(
        &sel("u"),
        0,
        &["migration_threshold".to_string(), "0".to_string()],
    )
    .unwrap();
    reg.suspend(&sel("u"), false, false).unwrap();
    let ust = udm_status(&reg, "u");
    reg.remove(&sel("u"), false).unwrap();
    assert!(
        ust[10] != "0" && !ust[3].starts_with("0/"),
        "udm made no dirty blocks: {ust:?}"
    );

    // Set K (kernel first): zeroed metadata and cache, a patterned origin; the kernel writes
    // kw*.bin at known places.
    let (km, kc, ko) = (
        zeroed(share, "km.img", META_BYTES),
        zeroed(share, "kc.img", CACHE_BYTES),
        share.join("ko.img"),
    );
    let mut kmodel = pseudo((ORIGIN * 512) as usize, 0x0d);
    std::fs::write(&ko, &kmodel).unwrap();
    let kw = pseudo(256 << 10, 0x1);
    let kw2 = pseudo(128 << 10, 0x2);
    std::fs::write(share.join("kw.bin"), &kw).unwrap();
    std::fs::write(share.join("kw2.bin"), &kw2).unwrap();
    kmodel[64 << 10..(64 << 10) + kw.len()].copy_from_slice(&kw);
    kmodel[192 << 10..(192 << 10) + kw2.len()].copy_from_slice(&kw2);

    let ut = format!(
        "{} 2 migration_threshold 0",
        table("/dev/vda", "/dev/vdb", "/dev/vdc", "smq").trim_end_matches(" 0")
    );
    let ut_clean = table("/dev/vda", "/dev/vdb", "/dev/vdc", "cleaner");
    let kt = table("/dev/vdd", "/dev/vde", "/dev/vdf", "smq");
    let kt_clean = table("/dev/vdd", "/dev/vde", "/dev/vdf", "cleaner");
    let script = format!(
        r#"set -e
modprobe dm-cache; modprobe dm-cache-smq
drain() {{ for i in $(seq 1 300); do d=$(dmsetup status $1 | awk '{{print $14}}'); [ "$d" = 0 ] && return 0; sleep 0.1; done; echo "drain $1 stuck"; return 1; }}
dmsetup create u --table "{ut}"
dmsetup suspend u
echo "U1 $(dmsetup status u)"
dmsetup resume u
dd if=/dev/mapper/u of=u_read.bin bs=64k iflag=direct status=none
dmsetup remove u
dmsetup create u --table "{ut_clean}"
drain u
dmsetup remove u
dmsetup create k --table "{kt}"
echo "KT $(dmsetup table k)"
for i in 1 2 3; do
  dd if=/dev/mapper/k of=/dev/null bs=64k count=15 iflag=direct status=none
  dd if=kw.bin of=/dev/mapper/k bs=64k seek=1 oflag=direct status=none
  sleep 1
done
dmsetup message k 0 migration_threshold 0
dd if=kw2.bin of=/dev/mapper/k bs=64k seek=3 oflag=direct status=none
dmsetup suspend k
echo "K1 $(dmsetup status k)"
dmsetup remove k
cat /dev/vdd > kdm.img; cat /dev/vde > kdc.img; cat /dev/vdf > kdo.img
dmsetup create k --table "{kt_clean}"
drain k
dmsetup remove k
cache_check /dev/vdd && echo KCHECK
"#
    );
    let (out, err, code) =
        udm_testkit::refvm_run(&run, &[&um, &uc, &uo, &km, &kc, &ko], Some(share), &script);
    assert_eq!(
        code, 0,
        "refvm script failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(out.contains("KCHECK"), "{out}");

    // 1. udm → kernel.
    let k1u = kernel_status(&out, "U1");
    eprintln!(
        "udm status:    {}\nkernel on udm: {}",
        ust.join(" "),
        k1u.join(" ")
    );
    assert_eq!(k1u[3], ust[3], "kernel loaded udm's resident blocks");
    assert_eq!(
        k1u[4..8],
        ust[4..8],
        "the kernel loaded udm's saved hit/miss counters"
    );
    assert_eq!(
        deterministic(&k1u),
        deterministic(&ust),
        "kernel and udm status on udm's metadata"
    );
    let got = std::fs::read(share.join("u_read.bin")).unwrap();
    assert!(
        got == model,
        "the kernel read udm's cache differently from udm's model"
    );
    let flushed = std::fs::read(&uo).unwrap();
    assert!(
        flushed == model,
        "the kernel's cleaner left the origin unlike udm's model"
    );

    // 2. kernel → udm, from the copy the kernel left dirty.
    let k1 = kernel_status(&out, "K1");
    let kt_line = out.lines().find_map(|l| l.strip_prefix("KT ")).unwrap();
    assert!(
        kt_line.ends_with(" 64 2 metadata2 writeback smq 0"),
        "{kt_line}"
    );
    assert!(k1[10] != "0", "the kernel left no dirty block: {k1:?}");
    let o = Command::new("cache_check")
        .arg(share.join("kdm.img"))
        .output()
        .unwrap();
    assert!(o.status.success(), "cache_check on the kernel's metadata");
    let (dm, dc, dor) = (
        share.join("kdm.img"),
        share.join("kdc.img"),
        share.join("kdo.img"),
    );
    // As the kernel's table was left: no migration bandwidth, so no idle writeback.
    let k_udm = format!(
        "{} 2 migration_threshold 0",
        table(&s(&dm), &s(&dc), &s(&dor), "smq").trim_end_matches(" 0")
    );
    create(&reg, "k", &k_udm).unwrap();
    {
        let (dev, _g) = open(&reg, "k");
        let st = udm_status(&reg, "k");
        eprintln!(
            "kernel status: {}\nudm on kernel: {}",
            k1.join(" "),
            st.join(" ")
        );
        assert_eq!(st[3], k1[3], "udm loaded the kernel's resident blocks");
        assert_eq!(
            st[4..8],
            k1[4..8],
            "udm loaded the kernel's saved hit/miss counters"
        );
        assert_eq!(deterministic(&st), deterministic(&k1));
        let got = read(&*dev, 0, kmodel.len());
        assert!(got == kmodel, "udm read the kernel's cache wrongly");
    }
    reg.remove(&sel("k"), false).unwrap();
    create(&reg, "k", &table(&s(&dm), &s(&dc), &s(&dor), "cleaner")).unwrap();
    drain_with_cleaner(&reg, "k");
    reg.remove(&sel("k"), false).unwrap();
    let ours = std::fs::read(&dor).unwrap();
    let kernels = std::fs::read(&ko).unwrap();
    assert!(
        ours == kernels,
        "udm's flush differs from the kernel's own flush"
    );
    assert!(
        ours == kmodel,
        "the flushed origin holds what the kernel wrote"
    );
    let o = Command::new("cache_check").arg(&dm).output().unwrap();
    assert!(o.status.success(), "cache_check after udm's flush");
}
