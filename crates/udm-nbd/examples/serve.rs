//! Serve files (or a RAM disk) over NBD on a Unix socket, for trying clients by hand:
//! `cargo run --example serve -- SOCKET NAME=FILE|NAME=mem:MIB ...` (Ctrl-C to stop).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use udm_io::{BlockDevice, FileDevice, MemDevice, Sectors};
use udm_nbd::{ExportHandle, Exports, NbdServer};

struct Fixed(BTreeMap<String, Arc<dyn BlockDevice>>);

impl Exports for Fixed {
    fn list(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    fn open(&self, name: &str) -> Option<ExportHandle> {
        self.0
            .get(name)
            .map(|d| ExportHandle::new(d.clone(), false))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(sock) = args.next() else {
        eprintln!("usage: serve SOCKET NAME=FILE|NAME=mem:MIB ...");
        std::process::exit(2);
    };
    let mut map: BTreeMap<String, Arc<dyn BlockDevice>> = BTreeMap::new();
    for a in args {
        let (name, what) = a.split_once('=').expect("NAME=FILE");
        let dev: Arc<dyn BlockDevice> = match what.strip_prefix("mem:") {
            Some(mib) => Arc::new(MemDevice::new(
                name,
                Sectors(mib.parse::<u64>().expect("MiB") * 2048),
            )),
            None => Arc::new(FileDevice::open(Path::new(what), false).expect("open file")),
        };
        map.insert(name.to_string(), dev);
    }
    let _handle = NbdServer::new(Arc::new(Fixed(map)))
        .serve_unix(Path::new(&sock))
        .expect("listen");
    eprintln!("serving on {sock}");
    loop {
        std::thread::park();
    }
}
