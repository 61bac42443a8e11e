//! NBD over TLS (rustls, X.509): udm's client and server, libnbd's nbdinfo against udm's
//! server, a plaintext client refused when TLS is required, client certificates checked when
//! asked for, and a client with the wrong CA failing without disturbing the server.

mod common;

use common::TestExports;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use udm_io::{BlockDevice, MemDevice, Sectors};
use udm_nbd::proto::REP_ERR_TLS_REQD;
use udm_nbd::{NbdAddr, NbdClient, NbdError, NbdServer, TlsClient, TlsServer};
use udm_testkit::{require_tool, run};

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, laid out as
/// nbdkit, qemu and libnbd expect (`ca-cert.pem`, `server-*.pem`, `client-*.pem`).
fn pki(dir: &Path) {
    let ossl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    ossl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca-cert.pem",
                "-days",
                "2",
                "-subj",
                "/CN=udm test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    for (who, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "subjectAltName=DNS:client\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{who}.ext")), ext).unwrap();
        ossl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{who}-key.pem"),
                    "-out",
                    &format!("{who}.csr"),
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat(),
        );
        ossl(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &format!("{who}-cert.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
        ]);
    }
}

fn exports() -> Arc<TestExports> {
    let e = Arc::new(TestExports::default());
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new("m", Sectors(2048)));
    e.devs.lock().insert("m".into(), (dev, false));
    e
}

#[test]
fn tls_between_udm_client_and_server_and_plaintext_refused() {
    if !require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let sock = dir.path().join("tls.sock");
    let server = TlsServer::from_dir(dir.path(), false, true).unwrap();
    let _h = NbdServer::new(exports())
        .with_tls(server)
        .serve_unix(&sock)
        .unwrap();
    let addr = NbdAddr::Unix(sock.clone());
    // Plaintext: a clear refusal.
    match NbdClient::connect(&addr, "m") {
        Err(NbdError::Refused { reply, message, .. }) => {
            assert_eq!(reply, REP_ERR_TLS_REQD, "{message}");
            assert!(message.contains("TLS is required"), "{message}");
        }
        r => panic!(
            "plaintext was not refused: {:?}",
            r.map(|c| c.info().clone())
        ),
    }
    // TLS: full I/O.
    let ca = dir.path().join("ca-cert.pem");
    let tls = TlsClient::new(&ca, "localhost", None).unwrap();
    let c = NbdClient::connect_tls(&addr, "m", &tls).unwrap();
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 13) as u8).collect();
    c.write(4096, &data, true).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read(4096, &mut back).unwrap();
    assert!(back == data);
    c.flush().unwrap();
    c.disconnect().unwrap();
    // A client trusting another CA fails the handshake; the server goes on serving.
    let other = tempfile::tempdir().unwrap();
    pki(other.path());
    let wrong = TlsClient::new(&other.path().join("ca-cert.pem"), "localhost", None).unwrap();
    assert!(NbdClient::connect_tls(&addr, "m", &wrong).is_err());
    let c = NbdClient::connect_tls(&addr, "m", &tls).unwrap();
    c.read(4096, &mut back[..512]).unwrap();
}

#[test]
fn client_certificates_are_checked_when_asked_for() {
    if !require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let sock = dir.path().join("mtls.sock");
    let server = TlsServer::from_dir(dir.path(), true, true).unwrap();
    let _h = NbdServer::new(exports())
        .with_tls(server)
        .serve_unix(&sock)
        .unwrap();
    let addr = NbdAddr::Unix(sock);
    let ca = dir.path().join("ca-cert.pem");
    let anon = TlsClient::new(&ca, "localhost", None).unwrap();
    assert!(NbdClient::connect_tls(&addr, "m", &anon).is_err());
    let (cc, ck) = (
        dir.path().join("client-cert.pem"),
        dir.path().join("client-key.pem"),
    );
    let me = TlsClient::new(&ca, "localhost", Some((&cc, &ck))).unwrap();
    let c = NbdClient::connect_tls(&addr, "m", &me).unwrap();
    assert_eq!(c.size(), 1 << 20);
}

#[test]
fn nbdinfo_over_tls_to_udm() {
    if !require_tool("openssl") || !require_tool("nbdinfo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let server = TlsServer::from_dir(dir.path(), false, true).unwrap();
    let h = NbdServer::new(exports())
        .with_tls(server)
        .serve_tcp("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let port = h.local_addr().unwrap().port();
    let uri = format!(
        "nbds://localhost:{port}/m?tls-certificates={}",
        dir.path().display()
    );
    let out = run(Command::new("nbdinfo").arg("--json").arg(&uri));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["exports"][0]["export-size"], 1 << 20, "{out}");
    assert_eq!(v["TLS"], true, "{out}");
    // Plain nbd:// to a TLS-only server fails.
    let plain = Command::new("nbdinfo")
        .arg(format!("nbd://localhost:{port}/m"))
        .output()
        .unwrap();
    assert!(!plain.status.success());
}

#[test]
fn remote_device_over_nbds() {
    if !require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let sock = dir.path().join("r.sock");
    let server = TlsServer::from_dir(dir.path(), false, true).unwrap();
    let _h = NbdServer::new(exports())
        .with_tls(server)
        .serve_unix(&sock)
        .unwrap();
    let uri = format!(
        "nbds+unix:///m?socket={}&tls-certificates={}",
        sock.display(),
        dir.path().display()
    );
    let dev = udm_nbd::RemoteDevice::connect(&uri, false).unwrap();
    udm_io::sync::write_at(&dev, Sectors(8), &[7u8; 4096]).unwrap();
    let back = udm_io::sync::read_at(&dev, Sectors(8), 4096).unwrap();
    assert!(back.iter().all(|&b| b == 7));
    // The same export without TLS is refused.
    let plain = format!("nbd+unix:///m?socket={}", sock.display());
    assert!(udm_nbd::RemoteDevice::connect(&plain, false).is_err());
}
