//! The `era` target: random writes across checkpoints (fixed, printed seed) pass through to
//! the origin unchanged, the status line counts eras as the kernel does (each resume and each
//! checkpoint starts one), and the metadata passes the real `era_check` while `era_dump`'s
//! writesets and era array give, for every block, the last era it was written in — the model's.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::process::Command;
use udm_core::StatusType;
use udm_testkit::require_tool;
use udm_testkit::rng::XorShift;

const BS: u64 = 16;
const BLOCKS: u64 = 300;

fn era_of(reg: &udm_core::Registry, name: &str) -> Vec<String> {
    let (_, st) = reg.status(&sel(name), false, StatusType::Info).unwrap();
    st[0].params.split(' ').map(String::from).collect()
}

#[test]
fn era_tracks_last_write_era_and_passes_era_check() {
    let seed = udm_testkit::prop::seed();
    eprintln!("era: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed);
    let dir = tempfile::tempdir().unwrap();
    let meta = image(dir.path(), "meta", 4096, 0);
    let origin = image(dir.path(), "origin", BLOCKS * BS, 0);
    let table = format!(
        "0 {} era {} {} {BS}",
        BLOCKS * BS,
        meta.display(),
        origin.display()
    );
    let reg = registry();
    create(&reg, "e", &table).unwrap();
    let (_, t) = reg.status(&sel("e"), false, StatusType::Table).unwrap();
    assert!(t[0].params.ends_with(&format!(" {BS}")), "{}", t[0].params);
    let mut model = vec![0u8; (BLOCKS * BS * 512) as usize];
    let mut last = BTreeMap::new();
    let (dev, g) = open(&reg, "e");
    let st = era_of(&reg, "e");
    assert_eq!(st[2], "1", "the first resume starts era 1: {st:?}");
    assert_eq!(st[3], "-");
    let mut era = 1u64;
    for round in 0..5 {
        for _ in 0..40 {
            let s = rng.below(BLOCKS * BS - 40);
            let len = 1 + rng.below(40);
            let data = rng.bytes((len * 512) as usize);
            write(&*dev, s, &data);
            model[(s * 512) as usize..((s + len) * 512) as usize].copy_from_slice(&data);
            for b in s / BS..=(s + len - 1) / BS {
                last.insert(b, era);
            }
        }
        if round == 2 {
            reg.message(&sel("e"), 0, &["take_metadata_snap".to_string()])
                .unwrap();
            era += 1;
            let st = era_of(&reg, "e");
            assert_eq!(st[2], era.to_string());
            assert_ne!(st[3], "-", "a held snapshot shows its block: {st:?}");
            reg.message(&sel("e"), 0, &["drop_metadata_snap".to_string()])
                .unwrap();
        } else {
            reg.message(&sel("e"), 0, &["checkpoint".to_string()])
                .unwrap();
            era += 1;
        }
        assert_eq!(era_of(&reg, "e")[2], era.to_string());
    }
    assert!(reg.message(&sel("e"), 0, &["bogus".to_string()]).is_err());
    assert!(reg
        .message(&sel("e"), 0, &["checkpoint".into(), "x".into()])
        .is_err());
    assert!(read(&*dev, 0, model.len()) == model);
    drop(g);
    drop(dev);
    reg.remove(&sel("e"), false).unwrap();
    assert!(
        std::fs::read(&origin).unwrap() == model,
        "era passes data through"
    );
    if !(require_tool("era_check") && require_tool("era_dump")) {
        return;
    }
    let out = Command::new("era_check").arg(&meta).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(logical_eras(&meta), last);
    // Reopen: the next era continues from the metadata.
    create(&reg, "e", &table).unwrap();
    assert_eq!(era_of(&reg, "e")[2], (era + 1).to_string());
    reg.remove(&sel("e"), false).unwrap();
    assert_eq!(logical_eras(&meta), last);
}

#[test]
fn era_rejects_bad_tables() {
    let dir = tempfile::tempdir().unwrap();
    let meta = image(dir.path(), "meta", 4096, 0);
    let origin = image(dir.path(), "origin", 1024, 0);
    let reg = registry();
    for (args, why) in [
        ("", "Invalid argument count"),
        (" 12", "Invalid block size"),
        (" x", "Error parsing block size"),
    ] {
        let t = if args.is_empty() {
            format!("0 1024 era {}", meta.display())
        } else {
            format!("0 1024 era {} {}{args}", meta.display(), origin.display())
        };
        let e = create(&reg, "bad", &t).unwrap_err();
        assert!(e.to_string().contains(why), "{t}: {e}");
    }
}
