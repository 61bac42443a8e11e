//! The daemon as a library: a program starts it on a temp socket, a client creates a device
//! through the control socket, the embedder sees it in the same Registry, and `shutdown`
//! removes the sockets.

use udm_daemon::{Daemon, DaemonConfig};
use udm_proto::{Client, DevSel, Request};

#[test]
fn embedded_daemon_serves_its_registry_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DaemonConfig::default();
    cfg.socket = Some(dir.path().join("control"));
    cfg.no_fuse = true;
    cfg.state_dir = Some(dir.path().join("state"));
    let d = Daemon::start(&cfg).unwrap();
    assert_eq!(d.nbd_socket(), dir.path().join("nbd.sock"));
    let mut c = Client::connect(d.socket()).unwrap();
    c.call(Request::Create {
        name: "e".into(),
        uuid: String::new(),
    })
    .unwrap();
    assert!(d
        .registry()
        .get(&udm_core::DevSel::Name("e".into()))
        .is_ok());
    assert!(c
        .call(Request::Info {
            dev: DevSel::Name("nope".into()),
            inactive: false,
        })
        .is_err());
    // A second daemon on the same socket is refused.
    let e = Daemon::start(&cfg).err().expect("second daemon started");
    assert_eq!(e.errno(), libc::EADDRINUSE, "{e}");
    drop(c);
    let socket = d.socket().to_path_buf();
    d.shutdown();
    assert!(!socket.exists());
    assert!(!dir.path().join("nbd.sock").exists());
}
