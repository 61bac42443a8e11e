//! `udm verity open --root-hash-signature FILE` end to end: a daemon started with
//! `--verity-trusted-certs DIR`, signatures made by `openssl smime`; a good one opens (the table
//! names the signature key as veritysetup does), bad ones fail with the kernel's reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use udm_proto::{Client, DevSel, Reply, Request};
use udm_testkit::tool::root_hash;

/// (exit code, stdout, stderr) of the built udm run as `veritysetup ARGS`.
fn udm(args: &[&str], socket: Option<&Path>) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_udm"));
    udm_testkit::tool::run_as(bin, "veritysetup", args, b"", socket)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed RSA certificate and its key: (key, cert).
fn cert(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let (key, crt) = (
        dir.join(format!("{tag}.key")),
        dir.join(format!("{tag}.crt")),
    );
    let subj = format!("/CN={tag}");
    openssl(&[
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &subj,
        "-newkey",
        "rsa:2048",
        "-keyout",
        s(&key),
        "-out",
        s(&crt),
    ]);
    (key, crt)
}

/// `openssl smime -sign -nocerts -noattr -binary` of `text` into `out` (DER).
fn sign(dir: &Path, (key, crt): &(PathBuf, PathBuf), text: &str, out: &Path) {
    let input = dir.join("roothash.txt");
    std::fs::write(&input, text).unwrap();
    openssl(&[
        "smime",
        "-sign",
        "-nocerts",
        "-noattr",
        "-binary",
        "-in",
        s(&input),
        "-inkey",
        s(key),
        "-signer",
        s(crt),
        "-outform",
        "der",
        "-out",
        s(out),
    ]);
}

fn table(socket: &Path, name: &str) -> String {
    let mut c = Client::connect(socket).unwrap();
    match c
        .call(Request::Status {
            dev: DevSel::Name(name.into()),
            inactive: false,
            table: true,
            noflush: false,
        })
        .unwrap()
    {
        Reply::Status { targets, .. } => targets[0].params.clone(),
        r => panic!("{r:?}"),
    }
}

#[test]
fn open_with_root_hash_signature() {
    if !udm_testkit::require_tool("openssl") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let trusted = cert(d.path(), "trusted");
    let stranger = cert(d.path(), "stranger");
    std::fs::copy(&trusted.1, certs.join("trusted.pem")).unwrap();
    let dmn = udm_testkit::Daemon::start_with(
        Path::new(env!("CARGO_BIN_EXE_udm")),
        &["--verity-trusted-certs", s(&certs)],
    );
    let sock = Some(dmn.socket.as_path());
    let data = d.path().join("data.img");
    let hash = d.path().join("hash.img");
    std::fs::write(&data, vec![7u8; 32 << 12]).unwrap();
    let uuid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0";
    let (code, out, err) = udm(&["format", s(&data), s(&hash), "--uuid", uuid], None);
    assert_eq!(code, 0, "{err}");
    let root = root_hash(&out);
    let good = d.path().join("good.p7s");
    sign(d.path(), &trusted, &root, &good);
    let open = |name: &str, sig: &Path| {
        udm(
            &[
                "open",
                s(&data),
                name,
                s(&hash),
                &root,
                "--root-hash-signature",
                s(sig),
            ],
            sock,
        )
    };
    let (code, _, err) = open("vs", &good);
    assert_eq!(code, 0, "{err}\n{}", dmn.log());
    let t = table(&dmn.socket, "vs");
    assert!(
        t.ends_with(&format!(" 2 root_hash_sig_key_desc cryptsetup:{uuid}-vs")),
        "{t}"
    );
    assert_eq!(udm(&["close", "vs"], sock).0, 0);

    // Signed by an untrusted certificate; a signature of another root hash; a corrupt file.
    let untrusted = d.path().join("untrusted.p7s");
    sign(d.path(), &stranger, &root, &untrusted);
    let wrong = d.path().join("wrong.p7s");
    let other = format!(
        "{}{}",
        if root.starts_with('0') { '1' } else { '0' },
        &root[1..]
    );
    sign(d.path(), &trusted, &other, &wrong);
    let corrupt = d.path().join("corrupt.p7s");
    let g = std::fs::read(&good).unwrap();
    std::fs::write(&corrupt, &g[..g.len() - 40]).unwrap();
    for (sig, why) in [
        (&untrusted, "-ENOKEY"),
        (&wrong, "-EKEYREJECTED"),
        (&corrupt, "not PKCS#7"),
    ] {
        let (code, _, err) = open("vb", sig);
        assert_ne!(code, 0, "{}", sig.display());
        assert!(
            err.contains("Root hash verification failed") && err.contains(why),
            "{}: {err}",
            sig.display()
        );
        assert_eq!(udm(&["status", "vb"], sock).0, 4, "{err}");
    }
    // A missing or empty signature file, as veritysetup.
    let missing = d.path().join("missing.p7s");
    let (code, _, err) = open("vb", &missing);
    assert_ne!(code, 0);
    assert_eq!(
        err,
        format!("Invalid signature file {}.\n", missing.display())
    );
}
