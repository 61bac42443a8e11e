//! Differential test against the kernel's dm-clone (refvm, 6.1), both ways in ONE boot: a
//! clone udm half-hydrated (by partial writes, hydration off) opens in the kernel with the
//! same hydrated-region count and status, and the kernel finishes it to a destination equal
//! to udm's model; a clone the kernel half-hydrated opens in udm likewise and udm finishes
//! it to the source plus the kernel's writes. Used metadata blocks are printed, not compared.
//!
//! Skips without refvm, fails then under `UDM_REQUIRE_TOOLS=1`.

mod common;
use common::*;
use std::path::Path;
use udm_testkit::rng::pseudo;

const REGION: u64 = 32;
const SECTORS: u64 = REGION * 64;

fn without_used(f: &[String]) -> Vec<String> {
    let mut v = f.to_vec();
    v[1] = v[1].split('/').nth(1).unwrap().to_string();
    v
}

#[test]
fn kernel_clone_half_hydrated_finishes_on_the_other_side() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path();
    let zero = |n: &str, bytes: u64| zero_file(share, n, bytes);
    let (um, ud, km, kd) = (
        zero("um.img", 4 << 20),
        zero("ud.img", SECTORS * 512),
        zero("km.img", 4 << 20),
        zero("kd.img", SECTORS * 512),
    );
    let (us, ks) = (share.join("us.img"), share.join("ks.img"));
    let mut umodel = pseudo((SECTORS * 512) as usize, 0x51);
    let mut kmodel = pseudo((SECTORS * 512) as usize, 0x52);
    std::fs::write(&us, &umodel).unwrap();
    std::fs::write(&ks, &kmodel).unwrap();
    let s = |p: &Path| p.display().to_string();
    let table = |m: &str, d: &str, src: &str, f: &str| {
        format!("0 {SECTORS} clone {m} {d} {src} {REGION}{f}")
    };
    // udm half-hydrates U with partial writes.
    let reg = registry();
    create(
        &reg,
        "u",
        &table(&s(&um), &s(&ud), &s(&us), " 1 no_hydration"),
    )
    .unwrap();
    {
        let (dev, _g) = open(&reg, "u");
        for (i, sector) in [3u64, 40, 41, 300, 1000, 2040].into_iter().enumerate() {
            let data = vec![0xa0 + i as u8; 1024];
            write(&*dev, sector, &data);
            let a = (sector * 512) as usize;
            umodel[a..a + data.len()].copy_from_slice(&data);
        }
    }
    let ust = status_fields(&reg, "u");
    reg.remove(&sel("u"), false).unwrap();
    // The kernel's writes on K (dd with bs=512 at these sectors, 2 sectors each).
    let kwrites = [7u64, 100, 101, 640, 2000];
    let kw = pseudo(1024, 0x53);
    std::fs::write(share.join("kw.bin"), &kw).unwrap();
    for &sector in &kwrites {
        let a = (sector * 512) as usize;
        kmodel[a..a + 1024].copy_from_slice(&kw);
    }
    let ut = table("/dev/vda", "/dev/vdb", "/dev/vdc", "");
    let ut_off = table("/dev/vda", "/dev/vdb", "/dev/vdc", " 1 no_hydration");
    let kt_off = table("/dev/vdd", "/dev/vde", "/dev/vdf", " 1 no_hydration");
    let mut script = format!(
        r#"set -e
modprobe dm-clone
wait_full() {{ for i in $(seq 1 600); do h=$(dmsetup status $1 | awk '{{print $7}}'); [ "${{h%/*}}" = "${{h#*/}}" ] && return 0; sleep 0.1; done; echo "$1 stuck"; return 1; }}
dmsetup create u --table "{ut_off}"
echo "U1 $(dmsetup status u)"
dmsetup remove u
dmsetup create u --table "{ut}"
wait_full u
dmsetup remove u
dmsetup create k --table "{kt_off}"
"#
    );
    for sector in kwrites {
        script += &format!(
            "dd if=kw.bin of=/dev/mapper/k bs=512 seek={sector} count=2 oflag=direct status=none\n"
        );
    }
    script += "echo \"K1 $(dmsetup status k)\"\ndmsetup remove k\n";
    let (out, err, code) =
        udm_testkit::refvm_run(&run, &[&um, &ud, &us, &km, &kd, &ks], Some(share), &script);
    assert_eq!(
        code, 0,
        "refvm script failed\nstdout:\n{out}\nstderr:\n{err}"
    );

    let u1 = kernel_status(&out, "U1");
    eprintln!(
        "udm:           {}\nkernel on udm: {}",
        ust.join(" "),
        u1.join(" ")
    );
    assert_eq!(without_used(&u1), without_used(&ust));
    assert!(
        std::fs::read(&ud).unwrap() == umodel,
        "the kernel finished udm's clone"
    );

    let k1 = kernel_status(&out, "K1");
    create(
        &reg,
        "k",
        &table(&s(&km), &s(&kd), &s(&ks), " 1 no_hydration"),
    )
    .unwrap();
    let st = status_fields(&reg, "k");
    eprintln!(
        "kernel:        {}\nudm on kernel: {}",
        k1.join(" "),
        st.join(" ")
    );
    assert_eq!(without_used(&st), without_used(&k1));
    {
        let (dev, _g) = open(&reg, "k");
        assert!(
            read(&*dev, 0, kmodel.len()) == kmodel,
            "udm reads the kernel's clone"
        );
    }
    reg.message(&sel("k"), 0, &["enable_hydration".into()])
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let st = status_fields(&reg, "k");
        let (h, n) = st[3].split_once('/').unwrap();
        if h == n {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "udm hydration stuck: {st:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    reg.remove(&sel("k"), false).unwrap();
    assert!(
        std::fs::read(&kd).unwrap() == kmodel,
        "udm finished the kernel's clone"
    );
}
