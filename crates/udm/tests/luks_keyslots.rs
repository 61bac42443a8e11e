//! Keyslot commands against real cryptsetup: keys udm adds, changes, removes and kills are
//! seen by `cryptsetup open --test-passphrase` and `luksDump` (LUKS1 and LUKS2, volumes made
//! by cryptsetup and by udm), keys cryptsetup adds open in udm, and failed commands leave
//! the image byte for byte as it was.

mod luks_common;
use luks_common::{real, s};

/// udm's cryptsetup with no daemon (the keyslot commands work on the image alone).
fn udm(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    luks_common::udm(args, stdin, None)
}

use std::path::{Path, PathBuf};

/// A key file holding `pass` (no newline).
fn keyfile(dir: &Path, name: &str, pass: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pass).unwrap();
    p
}

/// Exit code of `cryptsetup open --test-passphrase` with `pass` (optionally one slot).
fn cs_test(img: &Path, pass: &[u8], slot: Option<&str>) -> i32 {
    let mut a = vec!["open", "--test-passphrase", s(img), "--key-file", "-"];
    if let Some(k) = slot {
        a.extend(["--key-slot", k]);
    }
    real(&a, pass).0
}

fn udm_test(img: &Path, pass: &[u8]) -> i32 {
    udm(
        &["open", "--test-passphrase", s(img), "--key-file", "-"],
        pass,
    )
    .0
}

/// Slots cryptsetup's luksDump lists as in use.
fn cs_slots(img: &Path) -> Vec<u32> {
    let (code, out, err) = real(&["luksDump", s(img)], b"");
    assert_eq!(code, 0, "luksDump: {err}");
    let mut v = Vec::new();
    let mut in_keyslots = false;
    for l in out.lines() {
        if let Some(r) = l.strip_prefix("Key Slot ") {
            if r.ends_with("ENABLED") {
                v.push(r[..r.find(':').unwrap()].parse().unwrap());
            }
        } else if l == "Keyslots:" {
            in_keyslots = true;
        } else if in_keyslots && !l.starts_with(' ') && !l.starts_with('\t') {
            in_keyslots = false;
        } else if in_keyslots && l.starts_with("  ") && l.trim_end().ends_with(": luks2") {
            v.push(l.trim().split(':').next().unwrap().parse().unwrap());
        }
    }
    v
}

/// The LUKS2 header epoch (seqid) cryptsetup reports.
fn epoch(img: &Path) -> Option<u64> {
    let out = real(&["luksDump", s(img)], b"").1;
    out.lines()
        .find_map(|l| l.strip_prefix("Epoch:"))
        .map(|e| e.trim().parse().unwrap())
}

struct Kind {
    name: &'static str,
    by_udm: bool,
    format: &'static [&'static str],
    /// Keyslot PBKDF options for added keys.
    pbkdf: &'static [&'static str],
}

const PBKDF2: &[&str] = &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
const ARGON: &[&str] = &[
    "--pbkdf",
    "argon2id",
    "--pbkdf-memory",
    "64",
    "--pbkdf-force-iterations",
    "4",
];

const KINDS: [Kind; 5] = [
    Kind {
        name: "cryptsetup-luks1",
        by_udm: false,
        format: &["--type", "luks1", "--pbkdf-force-iterations", "1000"],
        pbkdf: &["--pbkdf-force-iterations", "1000"],
    },
    Kind {
        name: "cryptsetup-luks2-pbkdf2",
        by_udm: false,
        format: &[
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
        ],
        pbkdf: PBKDF2,
    },
    Kind {
        name: "cryptsetup-luks2-argon2id",
        by_udm: false,
        format: &[
            "--type",
            "luks2",
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "64",
            "--pbkdf-force-iterations",
            "4",
        ],
        pbkdf: ARGON,
    },
    Kind {
        name: "udm-luks1-cbc",
        by_udm: true,
        format: &[
            "--type",
            "luks1",
            "--cipher",
            "aes-cbc-essiv:sha256",
            "--key-size",
            "256",
            "--pbkdf-force-iterations",
            "1000",
        ],
        pbkdf: &["--pbkdf-force-iterations", "1000"],
    },
    Kind {
        name: "udm-luks2",
        by_udm: true,
        format: &[
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
        ],
        pbkdf: ARGON,
    },
];

/// A 24 MiB image formatted with passphrase "secret" by cryptsetup or udm.
fn make(dir: &Path, k: &Kind) -> PathBuf {
    let who = if k.by_udm { "udm" } else { "cryptsetup" };
    luks_common::format(dir, &format!("{}.img", k.name), who, k.format, b"secret")
}

/// Run udm with `args` (device last) and the kind's PBKDF options.
fn udm_ks(
    k: &Kind,
    action: &str,
    opts: &[&str],
    img: &Path,
    extra: &[&str],
    stdin: &[u8],
) -> (i32, String, String) {
    let mut a = vec![action];
    a.extend_from_slice(k.pbkdf);
    a.extend_from_slice(opts);
    a.push(s(img));
    a.extend_from_slice(extra);
    udm(&a, stdin)
}

#[test]
fn keyslot_commands_interoperate_with_cryptsetup() {
    if !udm_testkit::require_tool("cryptsetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let new = keyfile(d.path(), "new.key", b"new passphrase");
    let changed = keyfile(d.path(), "changed.key", b"changed");
    let other = keyfile(d.path(), "other.key", b"from cryptsetup");
    for k in &KINDS {
        let n = k.name;
        let img = make(d.path(), k);
        let e0 = epoch(&img);

        // luksAddKey: old passphrase from a key file on stdin, the new one from a file.
        let (code, _, err) = udm_ks(
            k,
            "luksAddKey",
            &["--key-file", "-"],
            &img,
            &[s(&new)],
            b"secret",
        );
        assert_eq!(code, 0, "{n}: luksAddKey: {err}");
        assert_eq!(cs_slots(&img), [0, 1], "{n}");
        assert_eq!(cs_test(&img, b"new passphrase", Some("1")), 0, "{n}");
        assert_eq!(cs_test(&img, b"secret", Some("0")), 0, "{n}");
        if let Some(e0) = e0 {
            assert_eq!(epoch(&img), Some(e0 + 1), "{n}: seqid + 1");
        }

        // Passphrases as lines of stdin, into an explicit slot, with -v messages.
        let (code, out, err) = udm_ks(
            k,
            "luksAddKey",
            &["-v", "--key-slot", "5"],
            &img,
            &[],
            b"new passphrase\nline pass\n",
        );
        assert_eq!(code, 0, "{n}: {err}");
        assert!(
            out.contains("Key slot 1 unlocked.")
                && out.contains("Key slot 5 created.")
                && out
                    .contains("WARNING: The --key-slot parameter is used for new keyslot number."),
            "{n}: {out}"
        );
        assert_eq!(cs_test(&img, b"line pass", Some("5")), 0, "{n}");

        // Failures change nothing: a full slot, a wrong passphrase, an inactive slot.
        let before = std::fs::read(&img).unwrap();
        let (code, _, err) = udm_ks(
            k,
            "luksAddKey",
            &["--key-file", "-", "--key-slot", "1"],
            &img,
            &[s(&new)],
            b"secret",
        );
        assert_eq!(code, 1, "{n}");
        assert!(
            err.contains("Key slot 1 is full, please select another one."),
            "{n}: {err}"
        );
        let (code, _, err) = udm_ks(
            k,
            "luksAddKey",
            &["--key-file", "-"],
            &img,
            &[s(&new)],
            b"wrong",
        );
        assert_eq!(code, 2, "{n}");
        assert!(
            err.contains("No key available with this passphrase."),
            "{n}: {err}"
        );
        let (code, _, err) = udm(&["luksKillSlot", "-q", s(&img), "3"], b"");
        assert_eq!(code, 1, "{n}");
        assert!(err.contains("Keyslot 3 is not active."), "{n}: {err}");
        let (code, _, err) = udm(&["luksKillSlot", "-q", s(&img), "99"], b"");
        assert_eq!(
            (code, err.as_str()),
            (1, ""),
            "{n}: as cryptsetup, silently"
        );
        let (code, _, _) = udm(&["luksRemoveKey", s(&img)], b"wrong\n");
        assert_eq!(code, 2, "{n}");
        let (code, _, _) = udm_ks(
            k,
            "luksChangeKey",
            &["--key-file", "-"],
            &img,
            &[s(&changed)],
            b"wrong",
        );
        assert_eq!(code, 2, "{n}");
        assert!(
            std::fs::read(&img).unwrap() == before,
            "{n}: a failed command wrote"
        );

        // luksChangeKey: the old passphrase stops working, the new one works.
        let (code, _, err) = udm_ks(
            k,
            "luksChangeKey",
            &["--key-file", "-"],
            &img,
            &[s(&changed)],
            b"secret",
        );
        assert_eq!(code, 0, "{n}: luksChangeKey: {err}");
        assert_eq!(cs_test(&img, b"secret", None), 2, "{n}");
        assert_eq!(cs_test(&img, b"changed", None), 0, "{n}");
        assert_eq!(udm_test(&img, b"changed"), 0, "{n}");

        // luksRemoveKey (the key from a file argument) and luksKillSlot.
        let (code, _, err) = udm(&["luksRemoveKey", s(&img), s(&new)], b"");
        assert_eq!(code, 0, "{n}: luksRemoveKey: {err}");
        assert_eq!(cs_test(&img, b"new passphrase", None), 2, "{n}");
        assert!(!cs_slots(&img).contains(&1), "{n}");
        let (code, _, err) = udm(
            &["luksKillSlot", s(&img), "5", "--key-file", s(&changed)],
            b"",
        );
        assert_eq!(code, 0, "{n}: luksKillSlot: {err}");
        assert_eq!(cs_test(&img, b"line pass", None), 2, "{n}");
        assert_eq!(cs_slots(&img).len(), 1, "{n}");

        // The reverse: cryptsetup adds a key, udm opens with it and kills it again.
        let mut a = vec!["luksAddKey", "-q", "--key-file", "-"];
        a.extend_from_slice(k.pbkdf);
        a.extend([s(&img), s(&other)]);
        let (code, _, err) = real(&a, b"changed");
        assert_eq!(code, 0, "{n}: cryptsetup luksAddKey: {err}");
        assert_eq!(udm_test(&img, b"from cryptsetup"), 0, "{n}");
        let slots = cs_slots(&img);
        assert_eq!(slots.len(), 2, "{n}");
        let theirs = slots
            .iter()
            .find(|&&x| {
                real(
                    &[
                        "open",
                        "--test-passphrase",
                        s(&img),
                        "--key-file",
                        "-",
                        "--key-slot",
                        &x.to_string(),
                    ],
                    b"from cryptsetup",
                )
                .0 == 0
            })
            .unwrap();
        // A remaining passphrase is asked for on stdin, and must open another slot.
        let (code, _, _) = udm(
            &["luksKillSlot", s(&img), &theirs.to_string()],
            b"from cryptsetup",
        );
        assert_eq!(code, 2, "{n}: killed with its own passphrase");
        let (code, _, err) = udm(&["luksKillSlot", s(&img), &theirs.to_string()], b"changed");
        assert_eq!(code, 0, "{n}: {err}");
        assert_eq!(cs_test(&img, b"from cryptsetup", None), 2, "{n}");
        assert_eq!(cs_test(&img, b"changed", None), 0, "{n}");

        // The headers stay consistent: both tools dump the same.
        let (code, out, err) = real(&["luksDump", s(&img)], b"");
        assert_eq!(code, 0, "{n}: {err}");
        assert_eq!(udm(&["luksDump", s(&img)], b"").1, out, "{n}");
    }
}

#[test]
fn luks2_secondary_copy_is_rewritten_too() {
    if !udm_testkit::require_tool("cryptsetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), &KINDS[1]);
    let new = keyfile(d.path(), "new.key", b"second");
    let (code, _, err) = udm_ks(
        &KINDS[1],
        "luksAddKey",
        &["--key-file", "-"],
        &img,
        &[s(&new)],
        b"secret",
    );
    assert_eq!(code, 0, "{err}");
    // Damage the primary copy: the secondary alone must know the new keyslot.
    let mut b = std::fs::read(&img).unwrap();
    b[..4096].fill(0);
    std::fs::write(&img, &b).unwrap();
    assert_eq!(udm_test(&img, b"second"), 0);
    let (code, _, err) = real(&["repair", "-q", s(&img)], b"");
    assert_eq!(code, 0, "cryptsetup repair: {err}");
    assert_eq!(cs_test(&img, b"second", Some("1")), 0);
}

#[test]
fn luks1_all_slots_full_and_last_slot() {
    if !udm_testkit::require_tool("cryptsetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), &KINDS[0]);
    for i in 1..8 {
        let (code, _, err) = udm_ks(
            &KINDS[0],
            "luksAddKey",
            &[],
            &img,
            &[],
            format!("secret\npass{i}\n").as_bytes(),
        );
        assert_eq!(code, 0, "{i}: {err}");
    }
    assert_eq!(cs_slots(&img), (0..8).collect::<Vec<_>>());
    let before = std::fs::read(&img).unwrap();
    let (code, _, err) = udm_ks(&KINDS[0], "luksAddKey", &[], &img, &[], b"secret\nmore\n");
    assert_eq!((code, err.trim()), (1, "All key slots full."));
    assert!(std::fs::read(&img).unwrap() == before);
    // With every slot full, luksChangeKey rewrites the slot in place.
    let (code, _, err) = udm_ks(
        &KINDS[0],
        "luksChangeKey",
        &[],
        &img,
        &[],
        b"pass3\nthree\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(cs_test(&img, b"three", Some("3")), 0);
    assert_eq!(cs_test(&img, b"pass3", None), 2);
    // Kill all but slot 0 in batch mode without a passphrase, then remove the last key.
    for i in 1..8 {
        let (code, _, err) = udm(&["luksKillSlot", "-q", s(&img), &i.to_string()], b"");
        assert_eq!(code, 0, "{i}: {err}");
    }
    assert_eq!(cs_slots(&img), [0]);
    let (code, _, err) = udm(&["luksRemoveKey", "-q", s(&img)], b"secret\n");
    assert_eq!(code, 0, "{err}");
    assert!(cs_slots(&img).is_empty());
    let (code, _, err) = real(&["open", "--test-passphrase", s(&img)], b"secret\n");
    assert_eq!((code, err.trim()), (1, "No usable keyslot is available."));
    let (code, _, err) = udm(&["open", "--test-passphrase", s(&img)], b"secret\n");
    assert_eq!((code, err.trim()), (1, "No usable keyslot is available."));
}

#[test]
fn new_key_slot_and_new_keyfile_window_as_cryptsetup() {
    if !udm_testkit::require_tool("cryptsetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let kf = keyfile(d.path(), "window.key", b"0123456789abcdefXYZ");
    for k in [&KINDS[0], &KINDS[1]] {
        let img = make(d.path(), k);
        let a = [
            "--key-file",
            "-",
            "--new-key-slot",
            "6",
            "--new-keyfile-offset",
            "10",
            "--new-keyfile-size",
            "6",
        ];
        let (code, out, err) = udm_ks(k, "luksAddKey", &a, &img, &[s(&kf)], b"secret");
        assert_eq!(code, 0, "{}: {err}", k.name);
        assert!(!out.contains("WARNING"), "{out}");
        assert_eq!(cs_test(&img, b"abcdef", Some("6")), 0, "{}", k.name);
        // --key-slot with --new-key-slot selects the slot to unlock: an empty one fails
        // the same way in both tools, and nothing is written.
        let before = std::fs::read(&img).unwrap();
        let a = ["--key-file", "-", "--key-slot", "3", "--new-key-slot", "4"];
        let ours = udm_ks(k, "luksAddKey", &a, &img, &[s(&kf)], b"secret");
        assert!(std::fs::read(&img).unwrap() == before);
        let mut ra = vec!["luksAddKey"];
        ra.extend_from_slice(k.pbkdf);
        ra.extend_from_slice(&a);
        ra.extend([s(&img), s(&kf)]);
        let theirs = real(&ra, b"secret");
        assert_eq!(
            (ours.0, ours.2.trim()),
            (theirs.0, theirs.2.trim()),
            "{}",
            k.name
        );
    }
}
