//! A hostile verity hash device for `udm veritysetup`: a valid superblock and tree (with a
//! FEC device), mutated — superblock fields set to 0 / all ones / random values, bit flips,
//! truncation — must give a clean verdict from `verify` (with and without FEC) and `dump`:
//! an exit code and a message, never a panic.

use proptest::prelude::*;
use std::path::Path;
use udm_testkit::mutate::{mutated, mutations};
use udm_testkit::rng::pseudo;
use udm_testkit::tool::root_hash;

/// (exit code, stdout, stderr) of the built udm run as `veritysetup ARGS`.
fn udm(args: &[&str]) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_udm"));
    udm_testkit::tool::run_as(bin, "veritysetup", args, b"", None)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Byte offsets of the superblock's fields (version, hash type, algorithm, block sizes,
/// data blocks, salt size) and of the first tree block.
const FIELDS: [usize; 10] = [8, 12, 32, 40, 64, 68, 72, 76, 80, 1024];

/// A clean run: success, or a failure with a message; never a panic.
fn clean(what: &str, r: &(i32, String, String)) -> Result<(), TestCaseError> {
    prop_assert!(
        !r.2.contains("panicked") && r.0 != 101,
        "{what} panicked: {}",
        r.2
    );
    if r.0 != 0 {
        prop_assert!(
            !r.2.trim().is_empty(),
            "{what} failed ({}) without a message",
            r.0
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(120))]

    #[test]
    fn mutated_hash_devices_fail_cleanly(muts in mutations(FIELDS.to_vec(), 1, 5)) {
        let d = tempfile::tempdir().unwrap();
        let (data, hash, fec) = (d.path().join("data"), d.path().join("hash"), d.path().join("fec"));
        std::fs::write(&data, pseudo(96 << 10, 5)).unwrap();
        let (code, out, err) = udm(&["format", s(&data), s(&hash), "--data-block-size", "1024",
            "--hash-block-size", "1024", "--fec-device", s(&fec), "--fec-roots", "4"]);
        prop_assert_eq!(code, 0, "format: {}", err);
        let root = root_hash(&out);
        let good = udm(&["verify", s(&data), s(&hash), &root]);
        prop_assert_eq!(good.0, 0, "the valid image must verify: {}", good.2);
        let image = mutated(&std::fs::read(&hash).unwrap(), &muts);
        std::fs::write(&hash, &image).unwrap();
        clean("verify", &udm(&["verify", s(&data), s(&hash), &root]))?;
        clean("verify --fec", &udm(&["verify", s(&data), s(&hash), &root, "--fec-device", s(&fec), "--fec-roots", "4"]))?;
        clean("dump", &udm(&["dump", s(&hash)]))?;
        // The FEC device damaged the same way, behind the valid hash device.
        let fec_image = mutated(&std::fs::read(&fec).unwrap(), &muts);
        std::fs::write(&fec, &fec_image).unwrap();
        clean("verify, damaged fec", &udm(&["verify", s(&data), s(&hash), &root, "--fec-device", s(&fec), "--fec-roots", "4"]))?;
    }
}
