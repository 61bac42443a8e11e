//! The `BlockDevice` conformance suite (udm-testkit) against the remote NBD device
//! (`RemoteDevice`, udm's NBD client): served by udm's own NBD server from a RAM disk and
//! from a read-only pattern device, and served by nbdkit's memory plugin.

mod common;

use common::{nbdkit, serve};
use std::sync::Arc;
use udm_io::{MemDevice, PatternDevice, Sectors};
use udm_nbd::RemoteDevice;
use udm_testkit::conformance::{run, zeroes, Spec};

const SIZE: Sectors = Sectors(65536);

#[test]
fn remote_device_on_udm_server_conforms() {
    let s = serve();
    s.add("mem", Arc::new(MemDevice::new("mem", SIZE)), false);
    let dev = RemoteDevice::connect(&s.uri("mem"), false).unwrap();
    let spec = Spec {
        content: Some(zeroes),
        // The RAM disk zeroes what is trimmed, and the server passes trims through.
        discard_zeroes: true,
        ..Spec::writable(SIZE)
    };
    run("nbd (udm server, mem)", &dev, &spec);
}

#[test]
fn read_only_remote_device_conforms() {
    let s = serve();
    let size = Sectors(20480);
    s.add("pat", Arc::new(PatternDevice::new(size)), true);
    let dev = RemoteDevice::connect(&s.uri("pat"), false).unwrap();
    run(
        "nbd (udm server, read-only pattern)",
        &dev,
        &Spec::read_only(size, PatternDevice::fill),
    );
}

#[test]
fn remote_device_on_nbdkit_conforms() {
    if !udm_testkit::require_tool("nbdkit") {
        return;
    }
    let k = nbdkit(&["memory", &format!("{}", SIZE.bytes().0)]);
    let uri = format!("nbd+unix:///?socket={}", k.sock.display());
    let dev = RemoteDevice::connect(&uri, false).unwrap();
    // nbdkit's memory plugin reads back zeroes where nothing was written; trim is
    // advisory in the NBD protocol, so only write-zeroes is held to reading back zeroes.
    let spec = Spec {
        content: Some(zeroes),
        ..Spec::writable(SIZE)
    };
    run("nbd (nbdkit memory)", &dev, &spec);
}
