//! NBD over TLS (rustls, X.509): udm's client and server, libnbd's nbdinfo against udm's
//! server, a plaintext client refused when TLS is required, client certificates checked when
//! asked for, and a client with the wrong CA failing without disturbing the server.

mod common;

use common::TestExports;
use std::process::Command;
use std::sync::Arc;
use udm_io::{BlockDevice, MemDevice, Sectors};
use udm_nbd::proto::REP_ERR_TLS_REQD;
use udm_nbd::{NbdAddr, NbdClient, NbdError, NbdServer, TlsClient, TlsServer};
use udm_testkit::{require_tool, run};

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
    udm_testkit::test_pki(dir.path());
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
    udm_testkit::test_pki(other.path());
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
    udm_testkit::test_pki(dir.path());
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
    udm_testkit::test_pki(dir.path());
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
    udm_testkit::test_pki(dir.path());
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
