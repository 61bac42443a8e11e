//! Multi-conn flush consistency: the server answers a write only once the device has
//! completed it, so a flush sent on another connection after that answer reaches the
//! device after the write, and covers it (what NBD_FLAG_CAN_MULTI_CONN promises).

mod common;

use common::TestExports;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use udm_io::{Bio, BlockDevice, DevId, MemDevice, Op, Sectors};
use udm_nbd::{NbdClient, NbdServer};

/// Completes writes slowly and logs what reached the device and when it completed.
struct Slow {
    inner: MemDevice,
    log: Arc<Mutex<Vec<String>>>,
}

impl BlockDevice for Slow {
    fn submit(&self, bio: Bio) {
        let op = bio.op;
        self.log.lock().push(format!("submit {op:?}"));
        let log = self.log.clone();
        let bio = bio.on_end(move |r, _| {
            log.lock().push(format!("done {op:?}"));
            r
        });
        if op == Op::Write {
            // A slow write: its answer must wait for this.
            std::thread::sleep(Duration::from_millis(20));
        }
        self.inner.submit(bio)
    }
    fn size(&self) -> Sectors {
        self.inner.size()
    }
    fn id(&self) -> DevId {
        self.inner.id()
    }
}

#[test]
fn flush_on_one_connection_covers_writes_answered_on_another() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let dev = Arc::new(Slow {
        inner: MemDevice::new("m", Sectors(2048)),
        log: log.clone(),
    });
    let exports = Arc::new(TestExports::default());
    exports
        .devs
        .lock()
        .insert("m".into(), (dev as Arc<dyn BlockDevice>, false));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    let _srv = NbdServer::new(exports).serve_unix(&sock).unwrap();
    let a = NbdClient::connect_unix(&sock, "m").unwrap();
    let b = NbdClient::connect_unix(&sock, "m").unwrap();
    assert!(a.info().flags & udm_nbd::proto::TF_CAN_MULTI_CONN != 0);
    for i in 0..4u64 {
        a.write(i * 4096, &[i as u8 + 1; 4096], false).unwrap();
        b.flush().unwrap();
    }
    let log = log.lock().clone();
    let pos = |s: &str, nth: usize| {
        log.iter()
            .enumerate()
            .filter(|(_, l)| *l == s)
            .nth(nth)
            .map(|(i, _)| i)
            .unwrap()
    };
    for i in 0..4 {
        assert!(
            pos("done Write", i) < pos("submit Flush", i),
            "flush {i} overtook its write: {log:?}"
        );
    }
    // And the second connection sees the first one's data.
    let mut buf = vec![0u8; 4096];
    b.read(3 * 4096, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 4));
}
