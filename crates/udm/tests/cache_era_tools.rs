//! udm's cache and era tools against thin-provisioning-tools 0.9 on the same metadata, byte
//! for byte (stdout, stderr, exit code): `cache_dump`, `cache_check` (with its options),
//! `cache_metadata_size`, `era_dump` (and `--logical`), `era_check`, `era_invalidate`, the
//! option errors of GNU getopt_long, and the path/size errors; metadata restored by udm's
//! `cache_restore`/`era_restore`/`cache_repair` dumps identically with the real tools and
//! passes their checkers. `cache_writeback` (which segfaults in 0.9.0 while updating the
//! metadata) is checked on its own: the dirty blocks reach the origin and are then clean.
//! Random metadata comes from a fixed, printed seed (`UDM_PROPTEST_SEED` overrides).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use udm_testkit::require_tool;
use udm_testkit::rng::XorShift;

const TOOLS: &[&str] = &[
    "cache_check",
    "cache_dump",
    "cache_restore",
    "cache_repair",
    "cache_metadata_size",
    "era_check",
    "era_dump",
    "era_restore",
    "era_invalidate",
];

fn tools() -> bool {
    TOOLS.iter().all(|t| require_tool(t))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// udm as `tool` in `dir` (argv[0] is the tool's name, as with a link on PATH).
fn ours(dir: &Path, tool: &str, args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_udm"))
        .arg0(tool)
        .current_dir(dir)
        .args(args))
}

fn show(o: &Output) -> String {
    format!(
        "rc {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run the real tool and udm's with `args` in `dir`; they must agree exactly.
fn same(dir: &Path, tool: &str, args: &[&str]) -> Output {
    let real = run(Command::new(tool).current_dir(dir).args(args));
    let mine = run(Command::new(env!("CARGO_BIN_EXE_udm"))
        .arg0(tool)
        .current_dir(dir)
        .args(args));
    assert_eq!(show(&mine), show(&real), "{tool} {args:?}: udm vs real");
    real
}

fn cache_xml(rng: &mut XorShift) -> String {
    let nr = 32 + rng.below(300);
    let mut s = format!(
        "<superblock uuid=\"\" block_size=\"128\" nr_cache_blocks=\"{nr}\" policy=\"smq\" hint_width=\"4\">\n  <mappings>\n"
    );
    let mut hints = String::new();
    let mut used = std::collections::HashSet::new();
    for cb in 0..nr {
        if rng.below(3) == 0 {
            continue;
        }
        let mut ob = rng.below(100_000);
        while !used.insert(ob) {
            ob += 1;
        }
        let dirty = rng.below(2) == 1;
        s += &format!(
            "    <mapping cache_block=\"{cb}\" origin_block=\"{ob}\" dirty=\"{dirty}\"/>\n"
        );
        let h = (rng.below(1 << 20) as u32).to_le_bytes();
        hints += &format!(
            "    <hint cache_block=\"{cb}\" data=\"{}\"/>\n",
            udm_pdata::tools::base64_encode(&h)
        );
    }
    s + "  </mappings>\n  <hints>\n" + &hints + "  </hints>\n</superblock>\n"
}

fn era_xml(rng: &mut XorShift) -> String {
    let nr = 16 + rng.below(200);
    let cur = 3 + rng.below(10) as u32;
    let mut s = format!(
        "<superblock uuid=\"\" block_size=\"128\" nr_blocks=\"{nr}\" current_era=\"{cur}\">\n"
    );
    let eras: Vec<u32> = (1..cur).filter(|_| rng.below(2) == 0).collect();
    for era in eras {
        s += &format!("  <writeset era=\"{era}\" nr_bits=\"{nr}\">\n");
        for b in 0..nr {
            s += &format!("    <bit block=\"{b}\" value=\"{}\"/>\n", rng.below(4) == 0);
        }
        s += "  </writeset>\n";
    }
    s += "  <era_array>\n";
    for b in 0..nr {
        let e = if rng.below(3) == 0 {
            0
        } else {
            rng.below(cur as u64)
        };
        s += &format!("    <era block=\"{b}\" era=\"{e}\"/>\n");
    }
    s + "  </era_array>\n</superblock>\n"
}

fn zero(dir: &Path, name: &str, bytes: u64) {
    std::fs::File::create(dir.join(name))
        .unwrap()
        .set_len(bytes)
        .unwrap();
}

#[test]
fn cache_tools_match_the_real_ones() {
    if !tools() {
        return;
    }
    let seed = udm_testkit::prop::seed();
    eprintln!("cache tools: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed);
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("tiny.img"), [0u8; 100]).unwrap();
    std::fs::write(d.join("bad.img"), vec![0x5au8; 65536]).unwrap();
    for round in 0..3 {
        let xml = cache_xml(&mut rng);
        std::fs::write(d.join("c.xml"), &xml).unwrap();
        for v in ["1", "2"] {
            zero(d, "real.img", 4 << 20);
            let o = run(Command::new("cache_restore").current_dir(d).args([
                "-i",
                "c.xml",
                "-o",
                "real.img",
                "--metadata-version",
                v,
            ]));
            assert!(o.status.success(), "real cache_restore: {}", show(&o));
            let dump = same(d, "cache_dump", &["real.img"]);
            for args in [
                &["real.img"][..],
                &["-q", "real.img"],
                &["--super-block-only", "real.img"],
                &["--skip-mappings", "--skip-hints", "real.img"],
                &["--skip-discards", "real.img"],
            ] {
                same(d, "cache_check", args);
            }
            same(d, "cache_dump", &["--repair", "real.img"]);
            // udm's restore: the real tools dump it the same and check it clean.
            zero(d, "ours.img", 4 << 20);
            let o = ours(
                d,
                "cache_restore",
                &["-i", "c.xml", "-o", "ours.img", "--metadata-version", v],
            );
            assert!(o.status.success(), "udm cache_restore: {}", show(&o));
            let theirs = run(Command::new("cache_dump").current_dir(d).arg("ours.img"));
            assert_eq!(show(&theirs), show(&dump), "round {round} v{v}: restore");
            let c = run(Command::new("cache_check").current_dir(d).arg("ours.img"));
            assert!(
                c.status.success(),
                "real cache_check on udm's: {}",
                show(&c)
            );
            zero(d, "rep.img", 4 << 20);
            same(d, "cache_repair", &["-i", "real.img", "-o", "rep.img"]);
            let r = run(Command::new("cache_dump").current_dir(d).arg("rep.img"));
            assert_eq!(show(&r), show(&dump), "round {round} v{v}: repair");
        }
    }
    // Metadata written the way the cache target writes it (udm-pdata's writer: discard
    // bitset, a hint array from the policy, a clean shutdown), v1 and v2.
    for v in [1u32, 2] {
        zero(d, "udm.img", 4 << 20);
        {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(d.join("udm.img"))
                .unwrap();
            let io = std::sync::Arc::new(udm_pdata::io::FileIo::new(f).unwrap());
            let mut md = udm_pdata::cache::CacheMetadata::format(io, 128, v).unwrap();
            md.resize(200).unwrap();
            md.resize_discards(128, 5000).unwrap();
            for cb in (0..200).step_by(3) {
                md.insert(cb, 1000 + cb * 7).unwrap();
                md.set_dirty(cb, cb % 2 == 0).unwrap();
            }
            md.set_discard(17, true).unwrap();
            let policy = udm_pdata::cache::PolicyId {
                name: "smq".into(),
                version: [2, 0, 0],
                hint_size: 4,
            };
            let hints: Vec<u32> = (0..200).map(|i| i * 3 + 1).collect();
            md.write_hints(&policy, &hints).unwrap();
            md.commit(true).unwrap();
        }
        same(d, "cache_dump", &["udm.img"]);
        same(d, "cache_check", &["udm.img"]);
        same(d, "cache_check", &["--skip-hints", "udm.img"]);
    }
    for args in [
        &["bad.img"][..],
        &["tiny.img"],
        &["/nonexistent"],
        &["/dev/null"],
        &[],
        &["-h"],
        &["-V"],
        &["--foo"],
        &["-o"],
        &["--output"],
        &["-x", "real.img"],
    ] {
        same(d, "cache_dump", args);
    }
    for args in [
        &["bad.img"][..],
        &["tiny.img"],
        &["c.xml"],
        &["/nonexistent"],
        &["/dev/null"],
        &[],
        &["--skip", "real.img"],
        &["--quiet=1", "real.img"],
        &["-qx", "real.img"],
        &["-q", "bad.img"],
    ] {
        same(d, "cache_check", args);
    }
    for args in [
        &["-i", "c.xml"][..],
        &["-o", "ours.img"],
        &[],
        &["-i", "nofile.xml", "-o", "ours.img"],
        &["-i", "c.xml", "-o", "nonexistent.img"],
        &["-i", "c.xml", "-o", "tiny.img"],
        &["-i", "c.xml", "-o", "ours.img", "extra"],
    ] {
        same(d, "cache_restore", args);
    }
    for args in [
        &["--block-size", "128", "--device-size", "1048576"][..],
        &["--nr-blocks", "100"],
        &["--nr-blocks", "1000", "--max-hint-width", "8"],
        &[],
        &["--block-size", "128"],
        &["--device-size", "100"],
        &[
            "--nr-blocks",
            "7",
            "--block-size",
            "128",
            "--device-size",
            "1048576",
        ],
        &["--nr-blocks", "x"],
        &["-h"],
        &["--foo"],
    ] {
        same(d, "cache_metadata_size", args);
    }
}

#[test]
fn era_tools_match_the_real_ones() {
    if !tools() {
        return;
    }
    let seed = udm_testkit::prop::seed();
    eprintln!("era tools: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed ^ 0xe4a);
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("bad.img"), vec![0x5au8; 65536]).unwrap();
    for round in 0..3 {
        let xml = era_xml(&mut rng);
        std::fs::write(d.join("e.xml"), &xml).unwrap();
        zero(d, "real.img", 4 << 20);
        let o = run(Command::new("era_restore")
            .current_dir(d)
            .args(["-i", "e.xml", "-o", "real.img"]));
        assert!(o.status.success(), "real era_restore: {}", show(&o));
        let dump = same(d, "era_dump", &["real.img"]);
        same(d, "era_dump", &["--logical", "real.img"]);
        same(d, "era_check", &["real.img"]);
        same(d, "era_check", &["--super-block-only", "real.img"]);
        for since in 0..8 {
            let s = since.to_string();
            same(d, "era_invalidate", &["--written-since", &s, "real.img"]);
        }
        zero(d, "ours.img", 4 << 20);
        let o = ours(d, "era_restore", &["-i", "e.xml", "-o", "ours.img"]);
        assert!(o.status.success(), "udm era_restore: {}", show(&o));
        let theirs = run(Command::new("era_dump").current_dir(d).arg("ours.img"));
        assert_eq!(show(&theirs), show(&dump), "round {round}: restore");
        let c = run(Command::new("era_check").current_dir(d).arg("ours.img"));
        assert!(c.status.success(), "real era_check on udm's: {}", show(&c));
    }
    for args in [
        &["bad.img"][..],
        &[],
        &["-V"],
        &["--foo"],
        &["/nonexistent"],
    ] {
        same(d, "era_dump", args);
        same(d, "era_check", args);
    }
    for args in [
        &["real.img"][..],
        &["--written-since", "x", "real.img"],
        &["--written-since", "1"],
        &["--metadata-snapshot", "--written-since", "1", "real.img"],
        &["--written-since", "1", "bad.img"],
    ] {
        same(d, "era_invalidate", args);
    }
    for args in [
        &["-i", "e.xml"][..],
        &["-o", "ours.img"],
        &["-i", "x.xml", "-o", "ours.img"],
    ] {
        same(d, "era_restore", args);
    }
}

#[test]
fn cache_writeback_copies_dirty_blocks_and_cleans_them() {
    if !tools() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let xml = "<superblock uuid=\"\" block_size=\"8\" nr_cache_blocks=\"8\" policy=\"smq\" hint_width=\"4\">\n  <mappings>\n    <mapping cache_block=\"0\" origin_block=\"5\" dirty=\"true\"/>\n    <mapping cache_block=\"3\" origin_block=\"9\" dirty=\"false\"/>\n    <mapping cache_block=\"6\" origin_block=\"2\" dirty=\"true\"/>\n  </mappings>\n  <hints>\n  </hints>\n</superblock>\n";
    std::fs::write(d.join("c.xml"), xml).unwrap();
    zero(d, "meta.img", 4 << 20);
    assert!(run(Command::new("cache_restore")
        .current_dir(d)
        .args(["-i", "c.xml", "-o", "meta.img"]))
    .status
    .success());
    let fast = udm_testkit::rng::pseudo(8 * 4096, 7);
    std::fs::write(d.join("fast.img"), &fast).unwrap();
    zero(d, "origin.img", 16 * 4096);
    let o = run(Command::new(env!("CARGO_BIN_EXE_udm"))
        .arg0("cache_writeback")
        .current_dir(d)
        .args([
            "--metadata-device",
            "meta.img",
            "--origin-device",
            "origin.img",
        ])
        .args(["--fast-device", "fast.img"]));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("2/2 blocks successfully copied."), "{text}");
    let origin = std::fs::read(d.join("origin.img")).unwrap();
    assert_eq!(origin[5 * 4096..6 * 4096], fast[..4096]);
    assert_eq!(origin[2 * 4096..3 * 4096], fast[6 * 4096..7 * 4096]);
    assert!(
        origin[9 * 4096..10 * 4096].iter().all(|&b| b == 0),
        "clean block left alone"
    );
    let dump = run(Command::new("cache_dump").current_dir(d).arg("meta.img"));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        !dump.contains("dirty=\"true\""),
        "dirty flags cleared:\n{dump}"
    );
    assert_eq!(dump.matches("<mapping ").count(), 3);
}
