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

#[test]
fn kernel_snapshot_cow_format_status_and_merge() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let seed = udm_testkit::prop::seed();
    eprintln!("kernel_snapshot: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let data = udm_testkit::rng::pseudo(128 * 512, seed ^ 1);
    std::fs::write(share.join("data.bin"), &data).unwrap();
    let base = dir.path().join("base.img");
    std::fs::write(&base, udm_testkit::rng::pseudo((SECTORS * 512) as usize, seed)).unwrap();
    let ops = ops(seed, 60);

    // udm: the workload on its own copy (B).
    let ob = copy(dir.path(), &base, "ob.img");
    let cb = zero_image(dir.path(), "cb.img", 2048);
    let reg = reg();
    let (obd, cbd) = (ob.display().to_string(), cb.display().to_string());
    create(&reg, "s", &format!("0 {SECTORS} snapshot {obd} {cbd} P {CHUNK}")).unwrap();
    create(&reg, "o", &format!("0 {SECTORS} snapshot-origin {obd}")).unwrap();
    let mut udm_status = Vec::new();
    {
        let (o, _g) = open(&reg, "o");
        let (s, _g2) = open(&reg, "s");
        for op in &ops {
            let d = &data[(op.data * 512) as usize..((op.data + op.len) * 512) as usize];
            write(if op.snap { &*s } else { &*o }, op.sector, d).unwrap();
        }
        udm_status.push(status(&reg, "s"));
    }
    let udm_snap = read(&*open(&reg, "s").0, 0, (SECTORS * 512) as usize).unwrap();
    reg.remove(&sel("o"), false).unwrap();
    reg.remove(&sel("s"), false).unwrap();

    // udm: a small COW filling up (I).
    let oi_u = copy(dir.path(), &base, "oi_u.img");
    let ci_u = zero_image(dir.path(), "ci_u.img", 64);
    let (oid, cid) = (oi_u.display().to_string(), ci_u.display().to_string());
    create(&reg, "si", &format!("0 {SECTORS} snapshot {oid} {cid} P {CHUNK}")).unwrap();
    create(&reg, "oi", &format!("0 {SECTORS} snapshot-origin {oid}")).unwrap();
    {
        let (o, _g) = open(&reg, "oi");
        for i in 0..7u64 {
            write(&*o, i * CHUNK, &data[..4096]).unwrap();
            udm_status.push(status(&reg, "si"));
        }
    }
    reg.remove(&sel("oi"), false).unwrap();
    reg.remove(&sel("si"), false).unwrap();

    // Inputs for the kernel: fresh A, udm's B, a small I, and a copy of B to merge (M).
    let oa = copy(dir.path(), &base, "oa.img");
    let ca = zero_image(dir.path(), "ca.img", 2048);
    let oi = copy(dir.path(), &base, "oi.img");
    let ci = zero_image(dir.path(), "ci.img", 64);
    let om = copy(dir.path(), &ob, "om.img");
    let cm = copy(dir.path(), &cb, "cm.img");
    let mut script = format!(
        "set -e\nmodprobe dm-snapshot\n\
         dmsetup create sa --table '0 {SECTORS} snapshot /dev/vda /dev/vdb P {CHUNK}'\n\
         dmsetup create oa --table '0 {SECTORS} snapshot-origin /dev/vda'\n"
    );
    script += &vm_writes(&ops, "oa", "sa");
    script += "dmsetup status sa > status.txt\n";
    script += "dd if=/dev/mapper/sa of=ksnap.bin bs=1M status=none\n";
    script += "dmsetup remove oa sa\n";
    script += &format!(
        "dmsetup create sb --table '0 {SECTORS} snapshot /dev/vdc /dev/vdd P {CHUNK}'\n\
         dd if=/dev/mapper/sb of=kopen.bin bs=1M status=none\n\
         dmsetup remove sb\n\
         dmsetup create si --table '0 {SECTORS} snapshot /dev/vde /dev/vdf P {CHUNK}'\n\
         dmsetup create oi --table '0 {SECTORS} snapshot-origin /dev/vde'\n\
         for i in 0 1 2 3 4 5 6; do\n\
           dd if=data.bin of=/dev/mapper/oi bs=4096 count=1 seek=$i oflag=direct conv=notrunc status=none\n\
           dmsetup status si >> status.txt\n\
         done\n\
         dmsetup remove oi si\n\
         dmsetup create m --table '0 {SECTORS} snapshot-merge /dev/vdg /dev/vdh P {CHUNK}'\n\
         for i in $(seq 600); do\n\
           set -- $(dmsetup status m)\n\
           [ \"${{4%%/*}}\" = \"$5\" ] && break\n\
           sleep 0.1\n\
         done\n\
         dmsetup status m >> status.txt\n\
         dmsetup remove m\n"
    );
    let disks: Vec<&Path> = vec![&oa, &ca, &ob, &cb, &oi, &ci, &om, &cm];
    let (out, err, code) = udm_testkit::refvm_run(&run, &disks, Some(&share), &script);
    assert_eq!(code, 0, "refvm failed: {out}\n{err}");
    let kstatus = std::fs::read_to_string(share.join("status.txt")).unwrap();
    let kstatus: Vec<&str> = kstatus.lines().collect();
    eprintln!("kernel status lines: {kstatus:#?}");

    // Same workload: byte-identical COW and origin, same status.
    assert_eq!(kstatus[0].trim(), udm_status[0].trim(), "status after the workload");
    assert!(std::fs::read(&ca).unwrap() == std::fs::read(&cb).unwrap(), "COW bytes differ");
    assert!(std::fs::read(&oa).unwrap() == std::fs::read(&ob).unwrap(), "origin bytes differ");
    let ksnap = std::fs::read(share.join("ksnap.bin")).unwrap();
    assert!(ksnap == udm_snap, "snapshot contents differ");
    // udm's COW in the kernel.
    assert!(std::fs::read(share.join("kopen.bin")).unwrap() == udm_snap, "kernel reading udm's COW");
    // The kernel's COW in udm.
    let (oad, cad) = (oa.display().to_string(), ca.display().to_string());
    create(&reg, "ka", &format!("0 {SECTORS} snapshot {oad} {cad} P {CHUNK}")).unwrap();
    assert_eq!(status(&reg, "ka").trim(), kstatus[0].trim());
    assert!(read(&*open(&reg, "ka").0, 0, (SECTORS * 512) as usize).unwrap() == ksnap);
    reg.remove(&sel("ka"), false).unwrap();
    // Filling a small COW: the same status after every write, Invalid at the same one.
    for i in 0..7 {
        assert_eq!(kstatus[1 + i].trim(), udm_status[1 + i].trim(), "small COW, write {i}");
    }
    assert!(kstatus[7].ends_with("Invalid"), "{}", kstatus[7]);
    assert!(std::fs::read(&ci).unwrap() == std::fs::read(&ci_u).unwrap(), "invalidated COW bytes");
    assert!(std::fs::read(&oi).unwrap() == std::fs::read(&oi_u).unwrap(), "origin after Invalid");
    // Merge the same COW in udm: same origin, COW and final status as the kernel.
    let (obd2, cbd2) = (ob.display().to_string(), cb.display().to_string());
    create(&reg, "m", &format!("0 {SECTORS} snapshot-merge {obd2} {cbd2} P {CHUNK}")).unwrap();
    let st = wait_merged(&reg, "m");
    assert_eq!(kstatus[8].trim(), st.trim(), "merged status");
    reg.remove(&sel("m"), false).unwrap();
    assert!(std::fs::read(&om).unwrap() == std::fs::read(&ob).unwrap(), "merged origin");
    assert!(std::fs::read(&om).unwrap() == udm_snap, "merged origin is the snapshot");
    assert!(std::fs::read(&cm).unwrap() == std::fs::read(&cb).unwrap(), "merged COW bytes");
}
