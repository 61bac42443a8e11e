//! Differential test against the kernel's dm-writecache (refvm, 6.1), in ONE boot:
//! 1. the same table and I/O sequence (writes, reads, a flush, the `flush`, `clear_stats`
//!    and `cleaner` messages) on both sides print the same status line at every step;
//! 2. a cache device udm wrote (committed entries, in-place overwrites, a commit at
//!    removal) opens in the kernel with udm's free count and data, and the kernel's `flush`
//!    message writes it back to an origin equal to udm's model;
//! 3. a cache device the kernel wrote (and suspended) opens in udm with the kernel's free
//!    count and data, and udm's `flush` leaves an origin byte-identical to the kernel's own.
//!
//! Skips without refvm, fails then under `UDM_REQUIRE_TOOLS=1`.

mod common;
use common::*;
use std::path::Path;
use udm_testkit::rng::pseudo;

const ORIGIN: u64 = 16384; // sectors: 8 MiB
const CACHE: u64 = 1 << 20; // 254 blocks of 4096

fn table(origin: &str, cache: &str, opts: &str) -> String {
    format!("0 {ORIGIN} writecache s {origin} {cache} 4096 {opts}")
}

fn put(model: &mut [u8], block: u64, data: &[u8]) {
    let a = (block * 4096) as usize;
    model[a..a + data.len()].copy_from_slice(data);
}

/// Status lines of the step sequence run in udm (step 1).
fn udm_steps(share: &Path) -> Vec<String> {
    let o = zero_file(share, "host_so.img", 16 << 20);
    let c = zero_file(share, "host_sc.img", 4 << 20);
    let reg = registry();
    let s = |p: &Path| p.display().to_string();
    let t = format!(
        "0 32768 writecache s {} {} 4096 2 autocommit_time 3600000",
        s(&o),
        s(&c)
    );
    create(&reg, "s", &t).unwrap();
    let line = |reg: &udm_core::Registry| status_fields(reg, "s").join(" ");
    let msg = |m: &str| reg.message(&sel("s"), 0, &[m.to_string()]).unwrap();
    let mut v = vec![line(&reg)];
    let (dev, _g) = open(&reg, "s");
    write(&*dev, 5 * 8, &[7u8; 3 * 4096]);
    v.push(line(&reg));
    let _ = read(&*dev, 0, 10 * 4096);
    v.push(line(&reg));
    write(&*dev, 5 * 8, &[8u8; 4096]);
    udm_io::sync::flush(&*dev).unwrap();
    v.push(line(&reg));
    write(&*dev, 6 * 8, &[9u8; 4096]);
    v.push(line(&reg));
    msg("flush");
    v.push(line(&reg));
    msg("clear_stats");
    v.push(line(&reg));
    msg("cleaner");
    write(&*dev, 100 * 8, &[1u8; 2 * 4096]);
    v.push(line(&reg));
    v
}

#[test]
fn kernel_writecache_status_and_cache_devices_both_ways() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path();
    let s = |p: &Path| p.display().to_string();
    let ours = udm_steps(share);

    // Set U: udm writes a cache device.
    let (uo, uc) = (share.join("uo.img"), zero_file(share, "uc.img", CACHE));
    let mut model = pseudo((ORIGIN * 512) as usize, 0x31);
    std::fs::write(&uo, &model).unwrap();
    let reg = registry();
    create(&reg, "u", &table(&s(&uo), &s(&uc), "0")).unwrap();
    {
        let (dev, _g) = open(&reg, "u");
        let a = pseudo(8 * 4096, 1);
        write(&*dev, 3 * 8, &a);
        put(&mut model, 3, &a);
        udm_io::sync::flush(&*dev).unwrap();
        let b = pseudo(2 * 4096, 2);
        write(&*dev, 5 * 8, &b);
        put(&mut model, 5, &b);
        let c = pseudo(4 * 4096, 3);
        write(&*dev, 100 * 8, &c);
        put(&mut model, 100, &c);
    }
    let ust = status_fields(&reg, "u");
    reg.remove(&sel("u"), false).unwrap();
    assert_eq!(ust[2], (254 - 12).to_string(), "udm status {ust:?}");
    assert!(
        std::fs::read(&uo).unwrap() != model,
        "udm wrote back before the kernel saw it"
    );

    // Set K: the kernel writes one.
    let (ko, kc) = (share.join("ko.img"), zero_file(share, "kc.img", CACHE));
    let mut kmodel = pseudo((ORIGIN * 512) as usize, 0x32);
    std::fs::write(&ko, &kmodel).unwrap();
    let (kw, kw2, kw3) = (
        pseudo(64 << 10, 4),
        pseudo(32 << 10, 5),
        pseudo(16 << 10, 6),
    );
    std::fs::write(share.join("kw.bin"), &kw).unwrap();
    std::fs::write(share.join("kw2.bin"), &kw2).unwrap();
    std::fs::write(share.join("kw3.bin"), &kw3).unwrap();
    std::fs::write(share.join("p7.bin"), [7u8; 3 * 4096]).unwrap();
    std::fs::write(share.join("p8.bin"), [8u8; 4096]).unwrap();
    std::fs::write(share.join("p9.bin"), [9u8; 4096]).unwrap();
    std::fs::write(share.join("p1.bin"), [1u8; 2 * 4096]).unwrap();
    put(&mut kmodel, 16, &kw);
    put(&mut kmodel, 20, &kw2);
    put(&mut kmodel, 200, &kw3);
    let so = zero_file(share, "so.img", 16 << 20);
    let sc = zero_file(share, "sc.img", 4 << 20);

    let ut = table("/dev/vda", "/dev/vdb", "0");
    let kt = table("/dev/vdc", "/dev/vdd", "0");
    let st = "0 32768 writecache s /dev/vde /dev/vdf 4096 2 autocommit_time 3600000";
    let script = format!(
        r#"set -e
modprobe dm-writecache
dd_() {{ dd "$@" status=none; }}
dmsetup create s --table "{st}"
S() {{ echo "S$1 $(dmsetup status s)"; }}
S 0
dd_ if=p7.bin of=/dev/mapper/s bs=12k seek=20480 oflag=direct,seek_bytes; S 1
dd_ if=/dev/mapper/s of=/dev/null bs=40k count=1 iflag=direct; S 2
dd_ if=p8.bin of=/dev/mapper/s bs=4k seek=5 oflag=direct conv=fsync; S 3
dd_ if=p9.bin of=/dev/mapper/s bs=4k seek=6 oflag=direct; S 4
dmsetup message s 0 flush; S 5
dmsetup message s 0 clear_stats; S 6
dmsetup message s 0 cleaner
dd_ if=p1.bin of=/dev/mapper/s bs=8k seek=50 oflag=direct; S 7
dmsetup remove s
dmsetup create u --table "{ut}"
echo "U1 $(dmsetup status u)"
dd_ if=/dev/mapper/u of=u_read.bin bs=64k iflag=direct
dmsetup message u 0 flush
dmsetup remove u
dmsetup create k --table "{kt}"
dd_ if=kw.bin of=/dev/mapper/k bs=4k seek=16 oflag=direct conv=fsync
dd_ if=kw2.bin of=/dev/mapper/k bs=4k seek=20 oflag=direct conv=fsync
dd_ if=kw3.bin of=/dev/mapper/k bs=4k seek=200 oflag=direct
dmsetup suspend k
echo "K1 $(dmsetup status k)"
cat /dev/vdc > kdo.img; cat /dev/vdd > kdc.img
dmsetup resume k
dmsetup message k 0 flush
echo "K2 $(dmsetup status k)"
dmsetup remove k
echo DONE
"#
    );
    let (out, err, code) =
        udm_testkit::refvm_run(&run, &[&uo, &uc, &ko, &kc, &so, &sc], Some(share), &script);
    assert_eq!(
        code, 0,
        "refvm script failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(out.contains("DONE"), "{out}");

    // 1. The same steps, the same status lines.
    for (i, line) in ours.iter().enumerate() {
        let k = kernel_status(&out, &format!("S{i}")).join(" ");
        assert_eq!(&k, line, "status after step {i}: kernel vs udm");
    }

    // 2. udm → kernel.
    let u1 = kernel_status(&out, "U1");
    assert_eq!(u1[1..3], ust[1..3], "the kernel loaded udm's entries");
    let got = std::fs::read(share.join("u_read.bin")).unwrap();
    assert!(
        got == model,
        "the kernel read udm's cache unlike udm's model"
    );
    assert!(
        std::fs::read(&uo).unwrap() == model,
        "the kernel's flush of udm's cache left the origin unlike the model"
    );

    // 3. kernel → udm.
    let k1 = kernel_status(&out, "K1");
    let k2 = kernel_status(&out, "K2");
    assert_eq!(k2[2], "254", "the kernel flushed everything: {k2:?}");
    let (dor, dc) = (share.join("kdo.img"), share.join("kdc.img"));
    create(&reg, "k", &table(&s(&dor), &s(&dc), "0")).unwrap();
    {
        let (dev, _g) = open(&reg, "k");
        let st = status_fields(&reg, "k");
        eprintln!("kernel: {}\nudm:    {}", k1.join(" "), st.join(" "));
        assert_eq!(st[1..3], k1[1..3], "udm loaded the kernel's entries");
        let got = read(&*dev, 0, kmodel.len());
        assert!(got == kmodel, "udm read the kernel's cache wrongly");
    }
    reg.message(&sel("k"), 0, &["flush".to_string()]).unwrap();
    reg.remove(&sel("k"), false).unwrap();
    let ours = std::fs::read(&dor).unwrap();
    assert!(
        ours == std::fs::read(&ko).unwrap(),
        "udm's flush differs from the kernel's own"
    );
    assert!(
        ours == kmodel,
        "the flushed origin holds what the kernel wrote"
    );
}
