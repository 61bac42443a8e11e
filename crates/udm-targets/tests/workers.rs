//! A real blocking target (`ebs`, whose partial writes are read-modify-write with blocking
//! helpers) runs that work on its own worker: with every I/O pool thread blocked waiting for
//! its I/O, the I/O still completes.

mod common;
use common::*;
use std::sync::Arc;
use std::time::Duration;
use udm_io::{Bio, IoBuf, MemDevice, Sectors, WorkerPool};
use udm_testkit::gate::RemapType;

const POOL: usize = 8;

#[test]
fn ebs_progresses_with_the_io_pool_saturated() {
    // Fix the pool size before anything in this process starts it.
    std::env::set_var("UDM_IO_THREADS", POOL.to_string());
    let reg = registry();
    let remap = RemapType::new();
    reg.target_types().register(Arc::new(remap.clone()));
    // The device below completes inline: it needs no pool thread.
    let mem = Arc::new(MemDevice::new("m", Sectors(256)));
    remap.insert("m", mem.clone());
    create(&reg, "low", "0 256 testdev m").unwrap();
    let minor = reg.info(&sel("low"), false).unwrap().minor;
    // 512-byte sectors emulated over 4 KiB blocks: every 512-byte write is a
    // read-modify-write on ebs's worker.
    create(&reg, "e", &format!("0 256 ebs 253:{minor} 0 1 8")).unwrap();
    let (dev, _g) = open(&reg, "e");

    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (fin_tx, fin_rx) = crossbeam_channel::unbounded();
    let mut completions = Vec::new();
    for _ in 0..POOL {
        let (tx, rx) = crossbeam_channel::bounded::<Result<(), udm_io::IoError>>(1);
        completions.push(tx);
        let (started, fin_tx) = (started.clone(), fin_tx.clone());
        WorkerPool::io().spawn(move || {
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let r = rx.recv().expect("ebs completes the write");
            let _ = fin_tx.send(r);
        });
    }
    while started.load(std::sync::atomic::Ordering::SeqCst) < POOL {
        std::thread::yield_now();
    }
    for (i, tx) in completions.into_iter().enumerate() {
        dev.submit(Bio::write(
            Sectors(1 + 16 * i as u64),
            IoBuf::from_slice(&[i as u8 + 1; 512]),
            Box::new(move |r, _| {
                let _ = tx.send(r);
            }),
        ));
    }
    for _ in 0..POOL {
        let r = fin_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("ebs's blocking work deadlocked the I/O pool");
        assert_eq!(r, Ok(()));
    }
    let data = mem.snapshot();
    for i in 0..POOL {
        let s = (1 + 16 * i) * 512;
        assert!(
            data[s..s + 512].iter().all(|&b| b == i as u8 + 1),
            "write {i}"
        );
        assert!(
            data[s - 512..s].iter().all(|&b| b == 0),
            "neighbour of write {i}"
        );
    }
}
