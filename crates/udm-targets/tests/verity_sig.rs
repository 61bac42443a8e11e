//! `verity` root hash signatures (`root_hash_sig_key_desc`): PKCS#7 signatures made by
//! `openssl smime` over the root hash text, the blob in the key store as a `user` key, checked
//! against trusted certificates; good signatures open, bad ones fail with the kernel's texts.

mod common;
mod verity_img;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use udm_core::StatusType;
use udm_targets::crypt::keyring;
use udm_targets::verity::sig;
use verity_img::*;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key and self-signed certificate made by openssl.
struct Signer {
    key: PathBuf,
    cert: PathBuf,
}

impl Signer {
    /// `newkey` as for `openssl req -newkey`: `rsa:2048`, `ec`, …
    fn new(dir: &Path, tag: &str, newkey: &[&str]) -> Signer {
        let key = dir.join(format!("{tag}.key"));
        let cert = dir.join(format!("{tag}.crt"));
        let mut a = vec!["req", "-x509", "-nodes", "-days", "2", "-subj"];
        let subj = format!("/CN=udm verity {tag}");
        a.push(&subj);
        a.extend_from_slice(newkey);
        a.extend([
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        openssl(&a);
        Signer { key, cert }
    }

    fn trust(&self) {
        sig::add_trusted_certs(&std::fs::read(&self.cert).unwrap()).unwrap();
    }

    /// A detached DER signature of `text` (`extra`: e.g. `-noattr`, `-nocerts`).
    fn sign(&self, dir: &Path, text: &str, extra: &[&str]) -> Vec<u8> {
        let input = dir.join("roothash.txt");
        let out = dir.join("roothash.p7s");
        std::fs::write(&input, text).unwrap();
        let mut a = vec![
            "smime",
            "-sign",
            "-binary",
            "-in",
            input.to_str().unwrap(),
            "-inkey",
            self.key.to_str().unwrap(),
            "-signer",
            self.cert.to_str().unwrap(),
            "-outform",
            "der",
            "-out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        openssl(&a);
        std::fs::read(out).unwrap()
    }
}

const RSA: &[&str] = &["-newkey", "rsa:2048"];
const EC: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
const KERNEL_STYLE: &[&str] = &["-nocerts", "-noattr"];

/// Store `blob` as `user:desc` and load the image with `root_hash_sig_key_desc desc`.
fn open_signed(img: &Img, desc: &str, blob: Option<&[u8]>) -> Result<String, String> {
    if let Some(b) = blob {
        keyring::add("user", desc, b).unwrap();
    }
    let reg = registry();
    let t = img.table(&format!("root_hash_sig_key_desc {desc}"));
    create_ro(&reg, "v", &t).map_err(|e| e.to_string())?;
    let (dev, _g) = open(&reg, "v");
    assert!(read(dev.as_ref(), 0, img.content.len()) == img.content);
    let table = reg.status(&sel("v"), false, StatusType::Table).unwrap().1[0]
        .params
        .clone();
    assert_eq!(format!("0 {} verity {table}", img.blocks * 8), t);
    Ok(table)
}

#[test]
fn good_signatures_open() {
    if !udm_testkit::require_tool("openssl") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), 4096, 40, &[], None);
    for (tag, kind, extra) in [
        ("rsa", RSA, KERNEL_STYLE),
        ("ec", EC, KERNEL_STYLE),
        ("rsa-attrs-certs", RSA, &[][..]),
        ("ec-attrs", EC, &["-nocerts"][..]),
    ] {
        let s = Signer::new(d.path(), tag, kind);
        s.trust();
        let blob = s.sign(d.path(), &img.root, extra);
        let desc = format!("good-{tag}");
        let table = open_signed(&img, &desc, Some(&blob)).unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert!(
            table.ends_with(&format!(" 2 root_hash_sig_key_desc {desc}")),
            "{table}"
        );
    }
}

#[test]
fn bad_signatures_fail_as_kernel() {
    if !udm_testkit::require_tool("openssl") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = make(d.path(), 4096, 16, &[], None);
    let trusted = Signer::new(d.path(), "trusted", RSA);
    trusted.trust();
    let stranger = Signer::new(d.path(), "stranger", RSA);
    let good = trusted.sign(d.path(), &img.root, KERNEL_STYLE);
    assert!(open_signed(&img, "bad-control", Some(&good)).is_ok());

    let fails = |desc: &str, blob: Option<&[u8]>, want: &[&str]| {
        let e = open_signed(&img, desc, blob).unwrap_err();
        for w in want {
            assert!(e.contains(w), "{desc}: {e:?} lacks {w:?}");
        }
    };
    let verify = "Root hash verification failed";
    // Another root hash (the last digit changed), a newline after it, upper case.
    let mut other = img.root.clone();
    let last = if other.ends_with('0') { "1" } else { "0" };
    other.replace_range(other.len() - 1.., last);
    let wrong = trusted.sign(d.path(), &other, KERNEL_STYLE);
    fails("bad-root", Some(&wrong), &[verify, "-EKEYREJECTED"]);
    let nl = trusted.sign(d.path(), &format!("{}\n", img.root), KERNEL_STYLE);
    fails("bad-newline", Some(&nl), &[verify, "-EKEYREJECTED"]);
    let attrs = trusted.sign(d.path(), &other, &["-nocerts"]);
    fails("bad-attrs", Some(&attrs), &[verify, "digest doesn't match"]);
    // Signed by a certificate the daemon does not trust (carried in the message or not).
    for (desc, extra) in [("bad-untrusted", KERNEL_STYLE), ("bad-untrusted2", &[][..])] {
        let blob = stranger.sign(d.path(), &img.root, extra);
        fails(
            desc,
            Some(&blob),
            &[verify, "-ENOKEY", "not a trusted certificate"],
        );
    }
    // A corrupt blob: the signature value flipped, the message cut short, not DER at all.
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 10] ^= 0x40;
    fails("bad-flipped", Some(&flipped), &[verify, "-EKEYREJECTED"]);
    fails(
        "bad-short",
        Some(&good[..good.len() / 2]),
        &[verify, "not PKCS#7"],
    );
    fails(
        "bad-junk",
        Some(b"not a signature"),
        &[verify, "not PKCS#7"],
    );
    // No such key.
    fails(
        "bad-missing",
        None,
        &[
            "DM Verity Sig Verification Invalid key specified",
            "-ENOKEY",
        ],
    );
    // The option without its value.
    let reg = registry();
    let e = create_ro(&reg, "v", &img.table("root_hash_sig_key_desc")).unwrap_err();
    assert!(
        e.to_string()
            .contains("DM Verity Sig Verification Signature key not specified"),
        "{e}"
    );
}

#[test]
fn trusted_dir_loads_pem_and_der() {
    if !udm_testkit::require_tool("openssl") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let a = Signer::new(d.path(), "dir-pem", RSA);
    let b = Signer::new(d.path(), "dir-der", EC);
    std::fs::copy(&a.cert, certs.join("a.pem")).unwrap();
    openssl(&[
        "x509",
        "-in",
        b.cert.to_str().unwrap(),
        "-outform",
        "der",
        "-out",
        certs.join("b.der").to_str().unwrap(),
    ]);
    let subjects = sig::load_trusted_dir(&certs).unwrap();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(
        subjects.iter().any(|s| s.contains("dir-der")),
        "{subjects:?}"
    );
    let img = make(d.path(), 4096, 8, &[], None);
    let blob = b.sign(d.path(), &img.root, KERNEL_STYLE);
    open_signed(&img, "dir-der", Some(&blob)).unwrap();
    std::fs::write(certs.join("junk.pem"), b"junk").unwrap();
    assert!(sig::load_trusted_dir(&certs)
        .unwrap_err()
        .contains("junk.pem"));
}
