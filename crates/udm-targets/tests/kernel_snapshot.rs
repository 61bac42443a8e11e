//! Differential test against the kernel's dm-snapshot (refvm, kernel 6.1), one VM boot:
//! the same origin, table and writes (to the origin and to the snapshot) give byte-identical
//! COW devices and origins and identical status lines on both; the kernel's COW opens in udm
//! with the same snapshot contents and udm's in the kernel; a full COW goes `Invalid` after
//! the same write on both; a merge of udm's COW in the kernel and in udm leaves the same
//! origin and COW bytes and the same final status.

use std::path::{Path, PathBuf};
use udm_testkit::dm::{create, open, read, reg, sel, status, write, zero_image};
use udm_testkit::rng::XorShift;

const SECTORS: u64 = 8192;
const CHUNK: u64 = 8;

/// One write: to the origin (`o`) or the snapshot (`s`), sector, length, offset in data.bin.
struct Op {
    snap: bool,
    sector: u64,
    len: u64,
    data: u64,
}

fn ops(seed: u64, n: usize) -> Vec<Op> {
    let mut r = XorShift::new(seed);
    (0..n)
        .map(|_| {
            // Inside one chunk, so neither side splits a bio across two pending copies.
            let chunk = r.below(SECTORS / CHUNK / 4);
            let off = r.below(CHUNK);
            let len = 1 + r.below(CHUNK - off);
            Op {
                snap: r.below(3) == 0,
                sector: chunk * CHUNK + off,
                len,
                data: r.below(100),
            }
        })
        .collect()
}

fn copy(dir: &Path, from: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(from, &p).unwrap();
    p
}

fn vm_writes(ops: &[Op], orig: &str, snap: &str) -> String {
    let mut s = String::new();
    for o in ops {
        let dev = if o.snap { snap } else { orig };
        s += &format!(
            "dd if=data.bin of=/dev/mapper/{dev} bs={} skip={} seek={} count=1 iflag=skip_bytes \
             oflag=seek_bytes,direct conv=notrunc status=none\n",
            o.len * 512,
            o.data * 512,
            o.sector * 512
        );
    }
    s
}

fn wait_merged(reg: &udm_core::Registry, name: &str) -> String {
    for _ in 0..1000 {
        let st = status(reg, name);
        let w: Vec<&str> = st.split_whitespace().collect();
        if w.len() == 5 && w[3].split('/').next() == Some(w[4]) {
            return st;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("merge did not finish: {}", status(reg, name));
}

/// `KEY <status line>` lines the VM script wrote, by key.
fn keyed(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn kernel_snapshot_cow_format_status_and_merge() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let seed = udm_testkit::prop::seed();
    eprintln!("kernel_snapshot: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let share = d.join("share");
    std::fs::create_dir(&share).unwrap();
    let data = udm_testkit::rng::pseudo(128 * 512, seed ^ 1);
    std::fs::write(share.join("data.bin"), &data).unwrap();
    let base = d.join("base.img");
    std::fs::write(
        &base,
        udm_testkit::rng::pseudo((SECTORS * 512) as usize, seed),
    )
    .unwrap();
    let ops = ops(seed, 60);
    let reg = reg();
    let mut us = std::collections::HashMap::new();
    let st = |reg: &udm_core::Registry, n: &str| status(reg, n).trim().to_string();

    // udm: the workload on its own copy (B): origin + snapshot P 8 + snapshot P 16.
    let ob = copy(d, &base, "ob.img");
    let cb = zero_image(d, "cb.img", 2048);
    let cb2 = zero_image(d, "cb2.img", 2048);
    let (obd, cbd, cb2d) = (ob.display(), cb.display(), cb2.display());
    create(
        &reg,
        "s",
        &format!("0 {SECTORS} snapshot {obd} {cbd} P {CHUNK}"),
    )
    .unwrap();
    create(
        &reg,
        "s2",
        &format!("0 {SECTORS} snapshot {obd} {cb2d} P 16"),
    )
    .unwrap();
    create(&reg, "o", &format!("0 {SECTORS} snapshot-origin {obd}")).unwrap();
    {
        let (o, _g) = open(&reg, "o");
        let (s, _g2) = open(&reg, "s");
        for op in &ops {
            let b = &data[(op.data * 512) as usize..((op.data + op.len) * 512) as usize];
            write(if op.snap { &*s } else { &*o }, op.sector, b).unwrap();
        }
    }
    us.insert("main", st(&reg, "s"));
    us.insert("main2", st(&reg, "s2"));
    let udm_snap = read(&*open(&reg, "s").0, 0, (SECTORS * 512) as usize).unwrap();
    for n in ["o", "s", "s2"] {
        reg.remove(&sel(n), false).unwrap();
    }

    // udm: a small COW filling up (I), then a transient snapshot of that origin (N).
    let oi_u = copy(d, &base, "oi_u.img");
    let ci_u = zero_image(d, "ci_u.img", 64);
    let cn_u = zero_image(d, "cn_u.img", 64);
    let (oid, cid, cnd) = (oi_u.display(), ci_u.display(), cn_u.display());
    create(
        &reg,
        "si",
        &format!("0 {SECTORS} snapshot {oid} {cid} P {CHUNK}"),
    )
    .unwrap();
    create(&reg, "oi", &format!("0 {SECTORS} snapshot-origin {oid}")).unwrap();
    let mut small = Vec::new();
    {
        let (o, _g) = open(&reg, "oi");
        for i in 0..7u64 {
            write(&*o, i * CHUNK, &data[..4096]).unwrap();
            small.push(st(&reg, "si"));
        }
    }
    reg.remove(&sel("oi"), false).unwrap();
    reg.remove(&sel("si"), false).unwrap();
    create(
        &reg,
        "sn",
        &format!("0 {SECTORS} snapshot {oid} {cnd} N {CHUNK}"),
    )
    .unwrap();
    create(&reg, "on", &format!("0 {SECTORS} snapshot-origin {oid}")).unwrap();
    {
        let (o, _g) = open(&reg, "on");
        for i in 0..3u64 {
            write(&*o, 100 + i * 16, &data[4096..8192]).unwrap();
        }
    }
    us.insert("transient", st(&reg, "sn"));
    reg.remove(&sel("on"), false).unwrap();
    reg.remove(&sel("sn"), false).unwrap();

    // udm starts merging a copy of B (P) and is suspended at once; the kernel finishes it.
    let op_ = copy(d, &ob, "op.img");
    let cp = copy(d, &cb, "cp.img");
    let merge_p = format!(
        "0 {SECTORS} snapshot-merge {} {} P {CHUNK}",
        op_.display(),
        cp.display()
    );
    create(&reg, "mp", &merge_p).unwrap();
    reg.suspend(&sel("mp"), false, false).unwrap();
    eprintln!("udm's merge stopped at: {}", st(&reg, "mp"));
    reg.remove(&sel("mp"), false).unwrap();

    // Inputs for the kernel: fresh A, udm's B, a small I, and a copy of B to merge (M).
    let oa = copy(d, &base, "oa.img");
    let ca = zero_image(d, "ca.img", 2048);
    let ca2 = zero_image(d, "ca2.img", 2048);
    let oi = copy(d, &base, "oi.img");
    let ci = zero_image(d, "ci.img", 64);
    let cn = zero_image(d, "cn.img", 64);
    let om = copy(d, &ob, "om.img");
    let cm = copy(d, &cb, "cm.img");
    let merged = |dev: &str| {
        format!(
            "for i in $(seq 600); do\n\
               set -- $(dmsetup status {dev})\n\
               [ \"${{4%%/*}}\" = \"$5\" ] && break\n\
               sleep 0.1\n\
             done\n"
        )
    };
    let mut script = format!(
        "set -e\nmodprobe dm-snapshot\nS() {{ echo \"$1 $(dmsetup status $2)\" >> status.txt; }}\n\
         dmsetup create sa --table '0 {SECTORS} snapshot /dev/vda /dev/vdb P {CHUNK}'\n\
         dmsetup create sa2 --table '0 {SECTORS} snapshot /dev/vda /dev/vdc P 16'\n\
         dmsetup create oa --table '0 {SECTORS} snapshot-origin /dev/vda'\n"
    );
    script += &vm_writes(&ops, "oa", "sa");
    script += "S main sa\nS main2 sa2\n";
    script += "dd if=/dev/mapper/sa of=ksnap.bin bs=1M status=none\n";
    script += "dmsetup remove oa sa sa2\n";
    script += &format!(
        "dmsetup create sx --table '0 {SECTORS} snapshot /dev/vda /dev/vdb P 16'\n\
         echo \"override $(dmsetup table sx)\" >> status.txt\n\
         dmsetup remove sx\n\
         dmsetup create sb --table '0 {SECTORS} snapshot /dev/vdd /dev/vde P {CHUNK}'\n\
         dd if=/dev/mapper/sb of=kopen.bin bs=1M status=none\n\
         dmsetup remove sb\n\
         dmsetup create si --table '0 {SECTORS} snapshot /dev/vdf /dev/vdg P {CHUNK}'\n\
         dmsetup create oi --table '0 {SECTORS} snapshot-origin /dev/vdf'\n\
         for i in 0 1 2 3 4 5 6; do\n\
           dd if=data.bin of=/dev/mapper/oi bs=4096 count=1 seek=$i oflag=direct conv=notrunc status=none\n\
           S small$i si\n\
         done\n\
         dmsetup remove oi si\n\
         dmsetup create sn --table '0 {SECTORS} snapshot /dev/vdf /dev/vdh N {CHUNK}'\n\
         dmsetup create on --table '0 {SECTORS} snapshot-origin /dev/vdf'\n\
         for i in 0 1 2; do\n\
           dd if=data.bin of=/dev/mapper/on bs=4096 count=1 skip=1 seek=$((51200 + i * 8192)) \
              oflag=seek_bytes,direct conv=notrunc status=none\n\
         done\n\
         S transient sn\n\
         dmsetup remove on sn\n\
         dmsetup create m --table '0 {SECTORS} snapshot-merge /dev/vdi /dev/vdj P {CHUNK}'\n\
         {}S merge m\ndmsetup remove m\n\
         dmsetup create mp --table '0 {SECTORS} snapshot-merge /dev/vdk /dev/vdl P {CHUNK}'\n\
         {}S mergep mp\ndmsetup remove mp\n",
        merged("m"),
        merged("mp")
    );
    // Two damaged COWs: a wrong magic and version 2.
    let bad_magic = zero_image(d, "bm.img", 64);
    let bad_version = zero_image(d, "bv.img", 64);
    let mut h = vec![0u8; 512];
    for (i, v) in [0x1234_5678u32, 1, 1, 8].into_iter().enumerate() {
        h[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&bad_magic, [h.clone(), vec![0; 63 * 512]].concat()).unwrap();
    h[..4].copy_from_slice(&0x7041_6e53u32.to_le_bytes());
    h[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&bad_version, [h, vec![0; 63 * 512]].concat()).unwrap();
    for (n, dev) in [("bm", "/dev/vdm"), ("bv", "/dev/vdn")] {
        script += &format!(
            "dmesg -c > /dev/null\n\
             if dmsetup create {n} --table '0 {SECTORS} snapshot /dev/vdf {dev} P 8' 2>/dev/null; \
             then exit 9; fi\n\
             dmesg > dmesg_{n}.txt\n"
        );
    }
    let disks: Vec<&Path> = vec![
        &oa,
        &ca,
        &ca2,
        &ob,
        &cb,
        &oi,
        &ci,
        &cn,
        &om,
        &cm,
        &op_,
        &cp,
        &bad_magic,
        &bad_version,
    ];
    let (out, err, code) = udm_testkit::refvm_run(&run, &disks, Some(&share), &script);
    assert_eq!(code, 0, "refvm failed: {out}\n{err}");
    // The kernel's words for damaged COWs are udm's.
    create(
        &reg,
        "base",
        &format!("0 {SECTORS} linear {} 0", base.display()),
    )
    .unwrap();
    for (n, errno, word) in [
        ("bm", libc::ENXIO, "-ENXIO"),
        ("bv", libc::EINVAL, "-EINVAL"),
    ] {
        let k = std::fs::read_to_string(share.join(format!("dmesg_{n}.txt"))).unwrap();
        eprintln!("kernel on {n}: {k}");
        assert!(
            k.contains("snapshot: Failed to read snapshot metadata"),
            "{k}"
        );
        let cow = d.join(format!("{n}.img"));
        let t = format!(
            "0 {SECTORS} snapshot {} {} P 8",
            base.display(),
            cow.display()
        );
        assert!(
            k.contains(&format!("Failed to read snapshot metadata ({word})")),
            "{k}"
        );
        let e = create(&reg, n, &t).unwrap_err();
        assert_eq!(e.errno(), errno, "{e}");
        let e = e.to_string();
        assert!(e.contains("Failed to read snapshot metadata"), "{e}");
    }
    let ks = keyed(&std::fs::read_to_string(share.join("status.txt")).unwrap());
    eprintln!("kernel status lines: {ks:#?}");

    // Same workload: byte-identical COWs and origin, same status lines.
    assert_eq!(ks["main"], us["main"], "status after the workload");
    assert_eq!(ks["main2"], us["main2"], "second snapshot's status");
    assert!(bytes(&ca) == bytes(&cb), "COW bytes differ");
    assert!(bytes(&ca2) == bytes(&cb2), "second COW's bytes differ");
    assert!(bytes(&oa) == bytes(&ob), "origin bytes differ");
    let ksnap = bytes(&share.join("ksnap.bin"));
    assert!(ksnap == udm_snap, "snapshot contents differ");
    // udm's COW in the kernel.
    assert!(
        bytes(&share.join("kopen.bin")) == udm_snap,
        "kernel reading udm's COW"
    );
    // The kernel's COW in udm, and the header's chunk size overriding the table's.
    let (oad, cad) = (oa.display(), ca.display());
    create(
        &reg,
        "ka",
        &format!("0 {SECTORS} snapshot {oad} {cad} P 16"),
    )
    .unwrap();
    assert_eq!(st(&reg, "ka"), ks["main"]);
    let t = udm_testkit::dm::table(&reg, "ka");
    // Devices print differently (files here, major:minor there): compare what follows.
    let tail = |l: &str| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
    assert_eq!(tail(&t), "P 8");
    assert_eq!(tail(&ks["override"]), "P 8", "{}", ks["override"]);
    assert!(read(&*open(&reg, "ka").0, 0, (SECTORS * 512) as usize).unwrap() == ksnap);
    reg.remove(&sel("ka"), false).unwrap();
    // Filling a small COW: the same status after every write, Invalid at the same one.
    for (i, u) in small.iter().enumerate() {
        assert_eq!(&ks[&format!("small{i}")], u, "small COW, write {i}");
    }
    assert!(small[6].ends_with("Invalid"), "{}", small[6]);
    assert!(bytes(&ci) == bytes(&ci_u), "invalidated COW bytes");
    assert_eq!(ks["transient"], us["transient"], "transient status");
    assert!(bytes(&cn) == bytes(&cn_u), "transient COW bytes");
    assert!(
        bytes(&oi) == bytes(&oi_u),
        "origin after Invalid and transient"
    );
    // Merge the same COW in udm: same origin, COW and final status as the kernel.
    let merge_b = format!(
        "0 {SECTORS} snapshot-merge {} {} P {CHUNK}",
        ob.display(),
        cb.display()
    );
    create(&reg, "m", &merge_b).unwrap();
    let fin = wait_merged(&reg, "m");
    assert_eq!(ks["merge"], fin.trim(), "merged status");
    reg.remove(&sel("m"), false).unwrap();
    assert!(bytes(&om) == bytes(&ob), "merged origin");
    assert!(bytes(&om) == udm_snap, "merged origin is the snapshot");
    assert!(bytes(&cm) == bytes(&cb), "merged COW bytes");
    // The merge udm started and the kernel finished.
    assert_eq!(ks["mergep"], ks["merge"]);
    assert!(
        bytes(&op_) == udm_snap && bytes(&cp) == bytes(&cb),
        "merge handed over"
    );
}
