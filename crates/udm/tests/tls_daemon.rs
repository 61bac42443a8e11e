//! `udm daemon --tls DIR`: exports are served over TLS only (plaintext is refused with
//! NBD_REP_ERR_TLS_REQD); `--tls-optional` also lets plaintext clients in.

use std::path::Path;
use udm_nbd::proto::REP_ERR_TLS_REQD;
use udm_nbd::{NbdAddr, NbdClient, NbdError, TlsClient};
use udm_testkit::{require_tool, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

#[test]
fn daemon_serves_tls_and_refuses_plaintext_unless_optional() {
    if !require_tool("openssl") {
        return;
    }
    let pkidir = tempfile::tempdir().unwrap();
    udm_testkit::test_pki(pkidir.path());
    let dir = pkidir.path().to_str().unwrap();
    let tls = TlsClient::new(&pkidir.path().join("ca-cert.pem"), "localhost", None).unwrap();
    let d = Daemon::start_with(bin(), &["--no-fuse", "--tls", dir]);
    d.create("z", "0 2048 zero");
    let addr = NbdAddr::Unix(d.nbd_socket.clone());
    match NbdClient::connect(&addr, "z") {
        Err(NbdError::Refused { reply, .. }) => assert_eq!(reply, REP_ERR_TLS_REQD),
        r => panic!("plaintext not refused: {:?}", r.is_ok()),
    }
    let c = NbdClient::connect_tls(&addr, "z", &tls).unwrap();
    let mut b = vec![1u8; 4096];
    c.read(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    drop(c);
    let d2 = Daemon::start_with(bin(), &["--no-fuse", "--tls", dir, "--tls-optional"]);
    d2.create("z", "0 2048 zero");
    let addr2 = NbdAddr::Unix(d2.nbd_socket.clone());
    NbdClient::connect(&addr2, "z").unwrap();
    NbdClient::connect_tls(&addr2, "z", &tls).unwrap();
}
