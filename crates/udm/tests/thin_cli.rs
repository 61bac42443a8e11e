//! udm's thin tools against thin-provisioning-tools 0.9 on the same metadata: `thin_dump`
//! output (XML and human readable, with `--skip-mappings`, `--dev-id`, `-m`) byte for
//! byte, `thin_check` stdout, stderr and exit code for clean and corrupted metadata with
//! the options LVM passes, and `thin_restore` output that the real tools accept and dump
//! identically. Metadata comes from the real `thin_restore` and from udm's own writer.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use udm_pdata::io::FileIo;
use udm_pdata::thin::ThinMetadata;
use udm_pdata::BLOCK_SIZE;
use udm_testkit::require_tool;
use udm_testkit::rng::XorShift;

fn tools() -> bool {
    ["thin_check", "thin_dump", "thin_restore"]
        .iter()
        .all(|t| require_tool(t))
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn out(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Run the real `tool` and udm's (`udm thin <short>`) with `args`; both outputs.
fn both(tool: &str, args: &[&str]) -> (Output, Output) {
    let real = out(Command::new(tool).args(args));
    let short = tool.trim_start_matches("thin_");
    let ours = out(Command::new(bin()).arg("thin").arg(short).args(args));
    (real, ours)
}

fn same(tool: &str, args: &[&str]) -> Output {
    let (real, ours) = both(tool, args);
    let show = |o: &Output| {
        format!(
            "rc {:?}\nstdout:\n{}\nstderr:\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let (l, r) = (show(&real), show(&ours));
    if l != r {
        let at = l.lines().zip(r.lines()).position(|(a, b)| a != b);
        let at = at.unwrap_or(l.lines().count().min(r.lines().count()));
        let near = |s: &str| {
            s.lines()
                .skip(at.saturating_sub(3))
                .take(6)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "{tool} {args:?}: real and udm differ at line {at}\nreal:\n{}\nudm:\n{}\nreal head:\n{}\nudm head:\n{}",
            near(&l),
            near(&r),
            l.lines().take(4).collect::<Vec<_>>().join("\n"),
            r.lines().take(4).collect::<Vec<_>>().join("\n")
        );
    }
    real
}

/// XML with several devices, shared blocks (a snapshot), runs broken by time and by
/// data-block gaps, and an empty device.
fn sample_xml(rng: &mut XorShift) -> String {
    let mut s = String::from("<superblock uuid=\"\" time=\"5\" transaction=\"42\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"20000\">\n");
    let mut next = 0u64;
    let mut origin_map = Vec::new();
    for dev in [1u64, 7, 9] {
        let mut maps = Vec::new();
        let mut v = 0u64;
        while maps.len() < 1500 {
            v += 1 + rng.below(3);
            let data = if dev == 7 && !origin_map.is_empty() && rng.below(2) == 0 {
                let (ov, od): (u64, u64) = origin_map[rng.below(origin_map.len() as u64) as usize];
                v = v.max(ov);
                od
            } else {
                next += 1 + rng.below(2) * rng.below(4);
                next
            };
            if maps.iter().any(|&(mv, _, _)| mv == v) {
                continue;
            }
            maps.push((v, data, rng.below(3) as u32));
        }
        maps.sort();
        if dev == 1 {
            origin_map = maps.iter().map(|&(v, d, _)| (v, d)).collect();
        }
        s += &format!(
            "  <device dev_id=\"{dev}\" mapped_blocks=\"{}\" transaction=\"{}\" creation_time=\"{}\" snap_time=\"{}\">\n",
            maps.len(), dev * 3, dev % 4, 4
        );
        for (v, d, t) in maps {
            s += &format!(
                "    <single_mapping origin_block=\"{v}\" data_block=\"{d}\" time=\"{t}\"/>\n"
            );
        }
        s += "  </device>\n";
    }
    s += "  <device dev_id=\"12\" mapped_blocks=\"0\" transaction=\"1\" creation_time=\"5\" snap_time=\"5\">\n  </device>\n</superblock>\n";
    s
}

fn image(dir: &Path, name: &str, blocks: u64) -> PathBuf {
    udm_testkit::image(dir, name, blocks * BLOCK_SIZE as u64)
}

/// `in.xml` in `dir`: the sample metadata from `seed` (printed).
fn sample_xml_file(dir: &Path, seed: u64) -> PathBuf {
    eprintln!("seed {seed}");
    let xml = dir.join("in.xml");
    std::fs::write(&xml, sample_xml(&mut XorShift::new(seed))).unwrap();
    xml
}

/// The real thin_restore of `xml` onto `out` (must succeed).
fn real_restore(xml: &Path, out: &Path) {
    udm_testkit::run(
        Command::new("thin_restore")
            .arg("-i")
            .arg(xml)
            .arg("-o")
            .arg(out),
    );
}

/// The sample metadata from `seed` restored by the real thin_restore, and udm's own
/// metadata ([`udm_metadata`]), both in `dir`.
fn restored_and_udm_metadata(dir: &Path, seed: u64) -> (PathBuf, PathBuf) {
    let xml = sample_xml_file(dir, seed);
    let real_meta = image(dir, "real-meta", 2048);
    real_restore(&xml, &real_meta);
    (real_meta, udm_metadata(dir))
}

/// Metadata written by udm: thin devices, snapshots, overwrites, a delete, a held
/// metadata snapshot, over several commits.
fn udm_metadata(dir: &Path) -> PathBuf {
    let path = image(dir, "udm-meta", 2048);
    let io = Arc::new(FileIo::open(&path).unwrap());
    let mut md = ThinMetadata::format(io, 256, 50_000).unwrap();
    let mut rng = XorShift::new(0x0741_7c11);
    for dev in 0..3 {
        md.create_thin(dev).unwrap();
    }
    let mut live = vec![0u64, 1, 2];
    for round in 0..6u64 {
        for _ in 0..400 {
            let dev = live[rng.below(live.len() as u64) as usize];
            let b = md.alloc_data_block().unwrap();
            md.insert(dev, rng.below(3000), b).unwrap();
        }
        if round == 2 {
            md.create_snap(10, 1).unwrap();
            live.push(10);
        }
        if round == 3 {
            md.delete(2).unwrap();
            live.retain(|&d| d != 2);
            md.reserve_metadata_snap().unwrap();
        }
        md.set_transaction_id(round + 1);
        md.commit().unwrap();
    }
    path
}

#[test]
fn thin_dump_matches_real_on_restored_and_udm_metadata() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (real_meta, udm_meta) = restored_and_udm_metadata(dir.path(), 0xd0_11_u64);
    for meta in [&real_meta, &udm_meta] {
        let m = meta.to_str().unwrap();
        let full = same("thin_dump", &[m]);
        assert!(full.stdout.len() > 10_000, "dump too small to mean much");
        same("thin_dump", &["-f", "human_readable", m]);
        same("thin_dump", &["--skip-mappings", m]);
        same("thin_dump", &["--dev-id", "1", m]);
        same("thin_dump", &["--dev-id", "1000", m]);
    }
    // The held metadata snapshot of udm's metadata (taken before later writes).
    let m = udm_meta.to_str().unwrap();
    let snap = same("thin_dump", &["-m", m]);
    assert_ne!(snap.stdout, out(Command::new("thin_dump").arg(m)).stdout);
    // Invoked as `thin_dump` through a link.
    let link = dir.path().join("thin_dump");
    symlink(bin(), &link).unwrap();
    let via_link = out(Command::new(&link).arg(&real_meta));
    let real = out(Command::new("thin_dump").arg(&real_meta));
    assert_eq!(via_link.stdout, real.stdout);
    // -o writes the same bytes to a file.
    let o = dir.path().join("o.xml");
    udm_testkit::run(
        Command::new(bin())
            .args(["thin", "dump", "-o"])
            .arg(&o)
            .arg(&real_meta),
    );
    assert_eq!(std::fs::read(&o).unwrap(), real.stdout);
}

#[test]
fn thin_restore_output_passes_real_check_and_dumps_identically() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let xml = sample_xml_file(dir.path(), 0x4e57);
    let ours = image(dir.path(), "ours", 2048);
    let theirs = image(dir.path(), "theirs", 2048);
    udm_testkit::run(
        Command::new(bin())
            .args(["thin", "restore", "-i"])
            .arg(&xml)
            .arg("-o")
            .arg(&ours),
    );
    real_restore(&xml, &theirs);
    udm_testkit::run(Command::new("thin_check").arg(&ours));
    let a = udm_testkit::run(Command::new("thin_dump").arg(&ours));
    let b = udm_testkit::run(Command::new("thin_dump").arg(&theirs));
    assert_eq!(a, b);
    // Round trip through udm's own dump, with the real restore of that.
    let again = dir.path().join("again.xml");
    std::fs::write(
        &again,
        udm_testkit::run(Command::new(bin()).args(["thin", "dump"]).arg(&ours)),
    )
    .unwrap();
    let third = image(dir.path(), "third", 2048);
    real_restore(&again, &third);
    assert_eq!(udm_testkit::run(Command::new("thin_dump").arg(&third)), b);
    // Bad input: both fail.
    std::fs::write(&again, "<superblock uuid=\"\" time=\"0\">\n").unwrap();
    let (r, u) = both(
        "thin_restore",
        &["-i", again.to_str().unwrap(), "-o", third.to_str().unwrap()],
    );
    assert!(!r.status.success() && !u.status.success());
}

#[test]
fn thin_check_matches_real_on_clean_and_corrupt_metadata() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let meta = udm_metadata(dir.path());
    let m = meta.to_str().unwrap();
    for opts in [
        &[][..],
        &["-q"],
        &["--super-block-only"],
        &["--skip-mappings"],
        &["--clear-needs-check-flag"],
        &["-q", "--clear-needs-check-flag"],
        &["--ignore-non-fatal-errors"],
    ] {
        let mut a = opts.to_vec();
        a.push(m);
        let o = same("thin_check", &a);
        assert!(o.status.success());
    }
    let o = same(
        "thin_check",
        &["-q", "--clear-needs-check-flag", "--skip-mappings", m],
    );
    assert_eq!(o.status.code(), Some(1));
    // needs_check set: reported the same way, and udm clears it as thin_check does.
    let mut md = ThinMetadata::open(Arc::new(FileIo::open(&meta).unwrap())).unwrap();
    md.set_needs_check();
    md.commit().unwrap();
    drop(md);
    let flags = |p: &Path| {
        let x = udm_testkit::run(Command::new("thin_dump").arg("--skip-mappings").arg(p));
        x.lines()
            .next()
            .unwrap()
            .split("flags=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(flags(&meta), "1");
    same("thin_check", &[m]);
    same("thin_check", &["-q", m]);
    same("thin_dump", &[m]);
    let o = out(Command::new(bin()).args(["thin", "check", "-q", "--clear-needs-check-flag", m]));
    assert!(o.status.success());
    assert_eq!(flags(&meta), "0");
    udm_testkit::run(Command::new("thin_check").arg(&meta));
    same(
        "thin_check",
        &[dir.path().join("nothing").to_str().unwrap()],
    );
    same("thin_check", &[]);
    // Corrupt superblock: same messages, exit code 1.
    let bad = dir.path().join("bad");
    std::fs::copy(&meta, &bad).unwrap();
    let mut bytes = std::fs::read(&bad).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    let b = bad.to_str().unwrap();
    for opts in [&[][..], &["-q"], &["--super-block-only"]] {
        let mut a = opts.to_vec();
        a.push(b);
        assert_eq!(same("thin_check", &a).status.code(), Some(1));
    }
    // A corrupt top-level mapping node: both fail (exit 1), the superblock passes.
    let root = ThinMetadata::open(Arc::new(FileIo::open(&meta).unwrap()))
        .unwrap()
        .superblock()
        .data_mapping_root;
    std::fs::copy(&meta, &bad).unwrap();
    let mut bytes = std::fs::read(&bad).unwrap();
    bytes[root as usize * BLOCK_SIZE + 200] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    let (r, u) = both("thin_check", &["-q", b]);
    assert_eq!((r.status.code(), u.status.code()), (Some(1), Some(1)));
    let (r, u) = both("thin_check", &["--super-block-only", b]);
    assert_eq!((r.status.code(), u.status.code()), (Some(0), Some(0)));
}

#[test]
fn thin_metadata_size_matches_real() {
    if !require_tool("thin_metadata_size") {
        return;
    }
    let fixed: &[&[&str]] = &[
        &["-b", "64k", "-s", "1t", "-m", "100"],
        &["-b", "64k", "-s", "1t", "-m", "100", "-n"],
        &["-b", "64k", "-s", "1t", "-m", "1", "-nshort"],
        &[
            "-b",
            "64k",
            "-s",
            "1t",
            "-m",
            "1",
            "--numeric-only=long",
            "-u",
            "m",
        ],
        &["-b", "64k", "-s", "1t", "-m", "1000000", "-u", "t"],
        &["-b", "64k", "-s", "1t", "-m", "3k"],
        &[
            "--block-size",
            "1m",
            "--pool-size",
            "3000000k",
            "--max-thins",
            "5",
            "--unit",
            "b",
        ],
        &["-b", "60k", "-s", "1g", "-m", "1"],
        &["-b", "64k", "-s", "64k", "-m", "1"],
        &["-b", "64x", "-s", "1t", "-m", "1"],
        &["-b", "64k", "-s", "1t", "-m", "3", "-u", "x"],
        &["-b", "64k", "-s", "1t", "-m", "1", "-u"],
        &["-b", "64k", "-s", "1g"],
        &["-s", "1g", "-m", "2"],
        &["-h"],
    ];
    for a in fixed {
        same("thin_metadata_size", a);
    }
    let seed = 0x512e_u64;
    eprintln!("seed {seed}");
    let mut rng = XorShift::new(seed);
    let units = ["", "b", "s", "k", "K", "m", "M", "g", "G", "t", "T", "p"];
    for _ in 0..60 {
        let pick = |rng: &mut XorShift| units[rng.below(units.len() as u64) as usize];
        let b = format!("{}{}", 1u64 << rng.below(12), pick(&mut rng));
        let s = format!("{}{}", 1 + rng.below(5000), pick(&mut rng));
        let m = format!("{}", 1 + rng.below(2000));
        let u = pick(&mut rng).chars().next().unwrap_or('s').to_string();
        same(
            "thin_metadata_size",
            &["-b", &b, "-s", &s, "-m", &m, "-u", &u],
        );
    }
}

const LS_ALL: &str = "DEV,MAPPED_BLOCKS,EXCLUSIVE_BLOCKS,SHARED_BLOCKS,MAPPED_SECTORS,\
EXCLUSIVE_SECTORS,SHARED_SECTORS,MAPPED_BYTES,EXCLUSIVE_BYTES,SHARED_BYTES,MAPPED,EXCLUSIVE,\
SHARED,TRANSACTION,CREATE_TIME,SNAP_TIME";

#[test]
fn thin_ls_matches_real_on_restored_and_udm_metadata() {
    if !tools() || !require_tool("thin_ls") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (real_meta, udm_meta) = restored_and_udm_metadata(dir.path(), 0x15_u64);
    for meta in [&real_meta, &udm_meta] {
        let m = meta.to_str().unwrap();
        let o = same("thin_ls", &[m]);
        assert!(o.status.success());
        let all = same("thin_ls", &["-o", LS_ALL, m]);
        // Shared blocks exist (a snapshot / shared data), so the columns mean something.
        let text = String::from_utf8(all.stdout).unwrap();
        assert!(
            text.lines()
                .skip(1)
                .any(|l| l.split_whitespace().nth(3) != Some("0")),
            "{text}"
        );
        same(
            "thin_ls",
            &["--no-headers", "-o", "SNAP_TIME,DEV,SHARED", m],
        );
        same("thin_ls", &["-o", "DEV,NOPE", m]);
    }
    same("thin_ls", &["-m", "-o", LS_ALL, udm_meta.to_str().unwrap()]);
}

#[test]
fn thin_repair_copies_metadata_as_real_one_does() {
    if !tools() || !require_tool("thin_repair") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = udm_metadata(dir.path());
    let ours = image(dir.path(), "ours", 1024);
    let theirs = image(dir.path(), "theirs", 1024);
    let (r, u) = both(
        "thin_repair",
        &["-i", src.to_str().unwrap(), "-o", ours.to_str().unwrap()],
    );
    assert!(u.status.success(), "{}", String::from_utf8_lossy(&u.stderr));
    assert!(r.status.success());
    udm_testkit::run(
        Command::new("thin_repair")
            .arg("-i")
            .arg(&src)
            .arg("-o")
            .arg(&theirs),
    );
    udm_testkit::run(Command::new("thin_check").arg(&ours));
    let dump = |p: &Path| udm_testkit::run(Command::new("thin_dump").arg(p));
    assert_eq!(dump(&ours), dump(&theirs));
    assert_eq!(dump(&ours), dump(&src));
    same("thin_repair", &["-i", src.to_str().unwrap()]);
    same(
        "thin_repair",
        &["-i", "/nonexistent/x", "-o", ours.to_str().unwrap()],
    );
    same("thin_repair", &["-h"]);
}

#[test]
fn thin_delta_matches_real_on_restored_and_udm_metadata() {
    if !tools() || !require_tool("thin_delta") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (real_meta, udm_meta) = restored_and_udm_metadata(dir.path(), 0xde17a_u64);
    let cases = [
        (&real_meta, ["1", "7"]),
        (&real_meta, ["7", "9"]),
        (&real_meta, ["12", "1"]),
        (&udm_meta, ["1", "10"]),
        (&udm_meta, ["10", "0"]),
    ];
    for (meta, [a, b]) in cases {
        let m = meta.to_str().unwrap();
        let o = same("thin_delta", &["--thin1", a, "--thin2", b, m]);
        assert!(o.status.success() && o.stdout.len() > 200);
        same("thin_delta", &["--snap1", a, "--snap2", b, "--verbose", m]);
    }
    let m = udm_meta.to_str().unwrap();
    same(
        "thin_delta",
        &["-m", "--thin1", "1", "--thin2", "10", "--verbose", m],
    );
    same("thin_delta", &["--thin1", "1", "--thin2", "99", m]);
    same("thin_delta", &["--thin1", "1", m]);
}

/// Indices of the `bs`-byte blocks of `path` that are not all zero.
fn nonzero_blocks(path: &Path, bs: usize) -> Vec<u64> {
    let d = std::fs::read(path).unwrap();
    d.chunks(bs)
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&b| b != 0))
        .map(|(i, _)| i as u64)
        .collect()
}

#[test]
fn thin_trim_discards_exactly_the_unmapped_blocks() {
    if !tools() || !require_tool("thin_trim") || !require_tool("losetup") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let meta = image(dir.path(), "meta", 1024);
    let io = Arc::new(FileIo::open(&meta).unwrap());
    let mut md = ThinMetadata::format(io, 128, 400).unwrap();
    md.create_thin(1).unwrap();
    let mut rng = XorShift::new(0x7e1a);
    for _ in 0..150 {
        let b = md.alloc_data_block().unwrap();
        md.insert(1, rng.below(10_000), b).unwrap();
    }
    // Free a few blocks in the middle so runs appear between mapped ones.
    for v in 0..10_000 {
        if rng.below(4) == 0 {
            md.remove(1, v).unwrap();
        }
    }
    md.commit().unwrap();
    drop(md);
    let mapped: std::collections::BTreeSet<u64> = udm_testkit::thin::thin_dump(&meta).1[&1]
        .values()
        .copied()
        .collect();
    let bs = 64 << 10;
    let mk = |name: &str| {
        let p = dir.path().join(name);
        let mut rng = XorShift::new(0xda7a);
        let bytes: Vec<u8> = (0..400 * bs).map(|_| rng.below(255) as u8 + 1).collect();
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let (ours, theirs) = (mk("ours"), mk("theirs"));
    let (lo, lt) = (
        udm_testkit::loopdev::LoopDev::attach(&ours).unwrap(),
        udm_testkit::loopdev::LoopDev::attach(&theirs).unwrap(),
    );
    let m = meta.to_str().unwrap();
    let o = out(Command::new(bin()).args([
        "thin",
        "trim",
        "--metadata-dev",
        m,
        "--data-dev",
        lo.path(),
    ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = out(Command::new("thin_trim").args(["--metadata-dev", m, "--data-dev", lt.path()]));
    assert!(r.status.success());
    drop((lo, lt));
    let kept: std::collections::BTreeSet<u64> = nonzero_blocks(&ours, bs).into_iter().collect();
    assert_eq!(kept, mapped, "udm keeps exactly the mapped blocks");
    // The real tool's discards, but for its first run (it skips a run starting at block 0)
    // and its last (it starts one block early, discarding the last mapped block).
    let lines = |o: &Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.starts_with("emitting"))
            .map(str::to_string)
            .collect()
    };
    let (ol, rl) = (lines(&o), lines(&r));
    assert!(ol.len() > 10);
    let skip = usize::from(mapped.first() != Some(&0));
    assert_eq!(
        ol[skip..ol.len() - 1],
        rl[..rl.len() - 1],
        "middle discards"
    );
}
