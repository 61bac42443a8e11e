//! Per-export NBD policy: `--nbd-allow` hides and refuses devices outside the allowlist,
//! `--nbd-read-only` exports chosen devices read-only (names or `PREFIX*`).

use std::path::Path;
use udm_nbd::{NbdAddr, NbdClient};
use udm_testkit::Daemon;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

#[test]
fn allowlist_and_read_only_exports() {
    let d = Daemon::start_with(
        bin(),
        &[
            "--no-fuse",
            "--nbd-allow",
            "a,pub*",
            "--nbd-read-only",
            "pubro",
        ],
    );
    for n in ["a", "b", "pub1", "pubro"] {
        d.create(n, "0 2048 zero");
    }
    let names = NbdClient::list(&NbdAddr::Unix(d.nbd_socket.clone())).unwrap();
    assert_eq!(names, ["a", "pub1", "pubro"]);
    let e = NbdClient::connect_uri(&d.uri("b"))
        .err()
        .expect("b is not allowed");
    assert_eq!(e.errno(), libc::ENXIO, "{e}");
    let rw = NbdClient::connect_uri(&d.uri("pub1")).unwrap();
    assert!(!rw.read_only());
    rw.write(0, &[1u8; 512], false).unwrap();
    let ro = NbdClient::connect_uri(&d.uri("pubro")).unwrap();
    assert!(ro.read_only());
    let e = ro.write(0, &[1u8; 512], false).unwrap_err();
    assert!(matches!(e.errno(), libc::EPERM | libc::EROFS), "{e}");
    let mut b = [9u8; 512];
    ro.read(0, &mut b).unwrap();
    assert_eq!(b, [0u8; 512]);
}
