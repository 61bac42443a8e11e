//! Kernel differential for thin-pool/thin in refvm, one boot for every case:
//! 1. the same workload (tables, messages with their errors, 4 KiB direct writes, a
//!    snapshot of a snapshot, discards) runs on the kernel and on udm; every status and
//!    table line and every message result must be the same (device numbers aside), and the
//!    devices read back the same bytes;
//! 2. the pool udm made and wrote opens in the kernel with the same data and status;
//! 3. the pool the kernel made and wrote opens in udm with the same data and status.

use udm_core::{Registry, StatusType};
use udm_io::Sectors;
use udm_testkit::dm::{create, lines, open, read, reg, sel, write};
use udm_testkit::rng::XorShift;

const BS: u64 = 128;
const DATA_BLOCKS: u64 = 1024;
const POOL_LEN: u64 = DATA_BLOCKS * BS;
const THIN_LEN: u64 = 8192;

/// One step of the workload, run by the kernel (as shell) and by udm (in process).
#[derive(Clone, Copy)]
enum Step {
    Pool(&'static str),
    Msg(&'static str),
    Thin(u64),
    /// Write file `w<n>.bin` to thin `id` at a byte offset (4 KiB direct writes).
    Write(u64, u64, usize),
    /// Discard bytes `[off, off+len)` of thin `id`.
    Discard(u64, u64, u64),
    Suspend(&'static str),
    Resume(&'static str),
    Status(&'static str),
    Table(&'static str),
    Remove(&'static str),
    /// Read all of thin `id` (kernel: into `k<id>.bin`).
    Read(u64),
}

use Step::*;

/// Write sizes of `w0.bin`, `w1.bin`, …
const FILES: [usize; 4] = [256 << 10, 4 << 10, 12 << 10, 64 << 10];

const WORKLOAD: &[Step] = &[
    Pool("10"),
    Status("pool"),
    Table("pool"),
    Msg("create_thin 0"),
    Thin(0),
    Status("thin0"),
    Table("thin0"),
    Msg("create_thin 0"),
    Write(0, 0, 0),
    Write(0, 10 * 65536 + 4096, 1),
    Status("thin0"),
    Status("pool"),
    Suspend("thin0"),
    Msg("create_snap 1 0"),
    Resume("thin0"),
    Msg("create_snap 2 9"),
    Thin(1),
    Status("thin1"),
    Write(1, 4096, 2),
    Write(0, 8192, 1),
    Status("thin0"),
    Status("thin1"),
    Status("pool"),
    Suspend("thin1"),
    Msg("create_snap 2 1"),
    Resume("thin1"),
    Thin(2),
    Write(2, 65536 * 3, 3),
    Write(2, 0, 1),
    Status("thin2"),
    Discard(0, 2 * 65536, 65536),
    Discard(0, 65536 + 512 * 8, 4096),
    Discard(1, 0, 4 * 65536),
    Status("thin0"),
    Status("thin1"),
    Status("pool"),
    Msg("delete 1"),
    Msg("delete 7"),
    Remove("thin2"),
    Msg("delete 2"),
    Status("pool"),
    Msg("set_transaction_id 1 2"),
    Msg("set_transaction_id 0 5"),
    Msg("reserve_metadata_snap"),
    Status("pool"),
    Msg("reserve_metadata_snap"),
    Msg("release_metadata_snap"),
    Msg("release_metadata_snap"),
    Msg("create_thin 16777216"),
    Msg("create_thin"),
    Msg("frobnicate 1"),
    Status("pool"),
    Status("thin0"),
    Status("thin1"),
    Table("thin1"),
    Read(0),
    Read(1),
    Remove("thin0"),
    Remove("thin1"),
    Remove("pool"),
    // The same metadata under a pool table with every feature but ignore_discard/read_only.
    Pool("10 3 error_if_no_space no_discard_passdown skip_block_zeroing"),
    Status("pool"),
    Table("pool"),
    Thin(0),
    Status("thin0"),
    Remove("thin0"),
    Remove("pool"),
    Pool("20 1 read_only"),
    Status("pool"),
    Table("pool"),
    Msg("create_thin 3"),
    Remove("pool"),
];

/// Where the last thin statuses are in the workload: (step of thin0's, step of thin1's).
const LAST_THIN_STATUS: (usize, usize) = (52, 53);

fn file_data(n: usize) -> Vec<u8> {
    XorShift::mixed(0x7417 + n as u64).bytes(FILES[n])
}

fn pool_table(meta: &str, data: &str, rest: &str) -> String {
    format!("0 {POOL_LEN} thin-pool {meta} {data} {BS} {rest}")
}

fn thin_table(id: u64) -> String {
    format!("0 {THIN_LEN} thin /dev/mapper/pool {id}")
}

/// The shell for the kernel side; results are printed as `R|<step>|<text>` lines.
fn script(steps: &[Step]) -> String {
    let mut s = String::from("modprobe dm-thin-pool\n");
    for (i, st) in steps.iter().enumerate() {
        let line = match *st {
            Pool(rest) => format!(
                "dmsetup create pool --table '{}' 2>&1; echo \"R|{i}|$?\"",
                pool_table("/dev/vda", "/dev/vdb", rest)
            ),
            Msg(m) => format!(
                "out=$(dmsetup message pool 0 {m} 2>&1); echo \"R|{i}|$?|${{out##*failed: }}\""
            ),
            Thin(id) => format!(
                "dmsetup create thin{id} --table '{}'; echo \"R|{i}|$?\"",
                thin_table(id)
            ),
            Write(id, off, n) => format!(
                "dd if=w{n}.bin of=/dev/mapper/thin{id} bs=4096 seek={} oflag=direct conv=notrunc status=none; echo \"R|{i}|$?\"",
                off / 4096
            ),
            Discard(id, off, len) => format!(
                "blkdiscard -o {off} -l {len} /dev/mapper/thin{id}; echo \"R|{i}|$?\""
            ),
            Suspend(n) => format!("dmsetup suspend {n}; echo \"R|{i}|$?\""),
            Resume(n) => format!("dmsetup resume {n}; echo \"R|{i}|$?\""),
            Status(n) => format!("echo \"R|{i}|$(dmsetup status {n})\""),
            Table(n) => format!("echo \"R|{i}|$(dmsetup table {n})\""),
            Remove(n) => format!("dmsetup remove {n}; echo \"R|{i}|$?\""),
            Read(id) => format!(
                "dd if=/dev/mapper/thin{id} of=k{id}.bin bs=64k iflag=direct status=none; echo \"R|{i}|$?\""
            ),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}

fn strerror(e: i32) -> String {
    let s = std::io::Error::from_raw_os_error(e).to_string();
    s.split(" (os error").next().unwrap_or(&s).to_string()
}

/// Blank what may differ between the kernel and udm in a result line: the device fields
/// of a table line (kernel `maj:min`, udm paths) and the held metadata root's block number
/// in a pool status (where each allocator puts the copy of the superblock; present or `-`
/// is still compared).
fn norm(step: &Step, line: &str) -> String {
    let mut w: Vec<&str> = line.split(' ').collect();
    match (step, w.get(2)) {
        (Table(_), Some(&"thin-pool")) if w.len() > 4 => {
            w[3] = "M";
            w[4] = "D";
        }
        (Table(_), Some(&"thin")) if w.len() > 3 => w[3] = "P",
        (Status(_), Some(&"thin-pool")) if w.len() > 6 && w[6].parse::<u64>().is_ok() => {
            w[6] = "HELD";
        }
        _ => {}
    }
    w.join(" ")
}

/// The same steps on udm; returns the `R|…` lines the kernel script prints.
fn run_udm(
    reg: &Registry,
    meta: &str,
    data: &str,
    steps: &[Step],
    reads: &mut Vec<Vec<u8>>,
) -> Vec<String> {
    let mut out = Vec::new();
    let one = |name: &str, ty| {
        let l = lines(reg, name, ty).unwrap();
        l.trim_end_matches('\n').to_string()
    };
    for (i, st) in steps.iter().enumerate() {
        let text = match *st {
            Pool(rest) => rc(create(reg, "pool", &pool_table(meta, data, rest)).map(|_| ())),
            Msg(m) => {
                let argv: Vec<String> = m.split(' ').map(String::from).collect();
                match reg.message(&sel("pool"), 0, &argv) {
                    Ok(_) => "0|".to_string(),
                    Err(e) => format!("1|{}", strerror(e.errno())),
                }
            }
            Thin(id) => rc(create(reg, &format!("thin{id}"), &thin_table(id)).map(|_| ())),
            Write(id, off, n) => {
                let (dev, _g) = open(reg, &format!("thin{id}"));
                let d = file_data(n);
                let r = d
                    .chunks(4096)
                    .enumerate()
                    .try_for_each(|(k, c)| write(dev.as_ref(), off / 512 + k as u64 * 8, c));
                rc_io(r)
            }
            Discard(id, off, len) => {
                let (dev, _g) = open(reg, &format!("thin{id}"));
                rc_io(udm_io::sync::discard(
                    dev.as_ref(),
                    Sectors(off / 512),
                    Sectors(len / 512),
                ))
            }
            Suspend(n) => rc(reg.suspend(&sel(n), false, false).map(|_| ())),
            Resume(n) => rc(reg.resume(&sel(n)).map(|_| ())),
            Status(n) => one(n, StatusType::Info),
            Table(n) => one(n, StatusType::Table),
            Remove(n) => rc(reg.remove(&sel(n), false).map(|_| ())),
            Read(id) => {
                reads.push(read_thin(reg, id));
                "0".into()
            }
        };
        out.push(format!("R|{i}|{text}"));
    }
    out
}

fn rc(r: Result<(), udm_core::DmError>) -> String {
    match r {
        Ok(()) => "0".into(),
        Err(e) => format!("1 ({e})"),
    }
}

fn rc_io(r: Result<(), udm_io::IoError>) -> String {
    match r {
        Ok(()) => "0".into(),
        Err(e) => format!("1 ({e})"),
    }
}

fn read_thin(reg: &Registry, id: u64) -> Vec<u8> {
    let (dev, _g) = open(reg, &format!("thin{id}"));
    read(dev.as_ref(), 0, (THIN_LEN * 512) as usize).unwrap()
}

#[test]
fn kernel_thin_differential() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path();
    for n in 0..FILES.len() {
        std::fs::write(share.join(format!("w{n}.bin")), file_data(n)).unwrap();
    }
    let img = |n: &str, bytes: u64| udm_testkit::image(share, n, bytes);
    let (meta_k, data_k) = (
        img("meta_k.img", 8 << 20),
        img("data_k.img", POOL_LEN * 512),
    );
    let (meta_u, data_u) = (
        img("meta_u.img", 8 << 20),
        img("data_u.img", POOL_LEN * 512),
    );

    // udm runs the workload on its own images.
    let reg_u = reg();
    let mut udm_data = Vec::new();
    let udm_lines = run_udm(
        &reg_u,
        meta_u.to_str().unwrap(),
        data_u.to_str().unwrap(),
        WORKLOAD,
        &mut udm_data,
    );
    for l in &udm_lines {
        eprintln!("udm {l}");
    }
    assert_eq!(udm_data.len(), 2);
    drop(reg_u);

    // One boot: the kernel runs the workload on its images, reads its devices back, then
    // opens udm's pool and reads those devices.
    let mut s = script(WORKLOAD);
    s.push_str(&format!(
        "dmsetup create upool --table '{}'
echo \"U|pool|$(dmsetup status upool)\"
dmsetup create uthin0 --table '0 {THIN_LEN} thin /dev/mapper/upool 0'
dmsetup create uthin1 --table '0 {THIN_LEN} thin /dev/mapper/upool 1'
echo \"U|thin0|$(dmsetup status uthin0)\"
echo \"U|thin1|$(dmsetup status uthin1)\"
dd if=/dev/mapper/uthin0 of=u0.bin bs=64k iflag=direct status=none
dd if=/dev/mapper/uthin1 of=u1.bin bs=64k iflag=direct status=none
dmsetup remove uthin0; dmsetup remove uthin1; dmsetup remove upool
",
        pool_table("/dev/vdc", "/dev/vdd", "10")
    ));
    let (out, err, code) =
        udm_testkit::refvm_run(&run, &[&meta_k, &data_k, &meta_u, &data_u], Some(share), &s);
    assert_eq!(code, 0, "refvm failed\n{out}\n{err}");
    let kernel_lines: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("R|"))
        .map(String::from)
        .collect();
    for l in &kernel_lines {
        eprintln!("kernel {l}");
    }
    assert_eq!(
        kernel_lines.len(),
        WORKLOAD.len(),
        "kernel output:\n{out}\n{err}"
    );
    let mut diffs = Vec::new();
    for ((k, u), step) in kernel_lines.iter().zip(&udm_lines).zip(WORKLOAD) {
        if norm(step, k) != norm(step, u) {
            diffs.push(format!("kernel: {k}\nudm:    {u}"));
        }
    }
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));

    // Same bytes on both, and udm's pool reads the same in the kernel.
    for id in 0..2u64 {
        let k = std::fs::read(share.join(format!("k{id}.bin"))).unwrap();
        let u = std::fs::read(share.join(format!("u{id}.bin"))).unwrap();
        assert!(
            k == udm_data[id as usize],
            "thin{id}: kernel and udm data differ"
        );
        assert!(
            u == udm_data[id as usize],
            "thin{id}: udm's pool reads differently in the kernel"
        );
    }
    let (s0, s1) = LAST_THIN_STATUS;
    assert!(matches!(WORKLOAD[s0], Status("thin0")) && matches!(WORKLOAD[s1], Status("thin1")));
    let upool: Vec<&str> = out.lines().filter(|l| l.starts_with("U|")).collect();
    eprintln!("udm pool in the kernel: {upool:?}");
    assert_eq!(upool.len(), 3, "{out}");
    // Thin statuses of udm's pool in the kernel equal udm's own last ones.
    let field = |l: &str| l.split('|').nth(2).unwrap().to_string();
    assert_eq!(field(upool[1]), field(&udm_lines[s0]));
    assert_eq!(field(upool[2]), field(&udm_lines[s1]));

    // The kernel's pool opens in udm with the kernel's data and statuses.
    let reg_k = reg();
    create(
        &reg_k,
        "pool",
        &pool_table(meta_k.to_str().unwrap(), data_k.to_str().unwrap(), "10"),
    )
    .unwrap();
    for id in 0..2u64 {
        create(&reg_k, &format!("thin{id}"), &thin_table(id)).unwrap();
        let k = std::fs::read(share.join(format!("k{id}.bin"))).unwrap();
        assert!(
            read_thin(&reg_k, id) == k,
            "kernel pool: thin{id} reads differently in udm"
        );
        let st = lines(&reg_k, &format!("thin{id}"), StatusType::Info).unwrap();
        let want = field(&kernel_lines[if id == 0 { s0 } else { s1 }]);
        assert_eq!(st.trim_end(), want, "kernel pool: thin{id} status in udm");
    }
}
