//! Copier throughput between two files (`bench/copier.sh` runs it next to `cp`):
//! `cargo run --release -p udm-core --example copy_speed SRC DST [CHUNK_KIB] [BUFFERS] [JOB_MIB]`.
//! DST must exist and be at least as large as SRC. Prints `copier <bytes> <seconds> <GiB/s>`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use udm_core::{Copier, Loc};
use udm_io::{BlockDevice, FileDevice, Sectors};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (src, dst) = (Path::new(&a[0]), Path::new(&a[1]));
    let arg = |i: usize, d: u64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (chunk_kib, buffers, job_mib) = (arg(2, 1024), arg(3, 16), arg(4, 64));
    let s = Arc::new(FileDevice::open(src, true).expect("open source"));
    let d = Arc::new(FileDevice::open(dst, false).expect("open destination"));
    let size = s.size();
    assert!(d.size() >= size, "destination smaller than source");
    let copier = Copier::new(Sectors(chunk_kib * 2), buffers as usize);
    let job = Sectors(job_mib * 2048);
    let t = Instant::now();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut jobs = 0;
    let mut pos = Sectors(0);
    while pos < size {
        let len = job.min(size - pos);
        let tx = tx.clone();
        copier.copy(
            Loc::new(s.clone(), pos),
            vec![Loc::new(d.clone(), pos)],
            len,
            Box::new(move |o| {
                let _ = tx.send(o);
            }),
        );
        jobs += 1;
        pos += len;
    }
    for _ in 0..jobs {
        let o = rx.recv().expect("job completes");
        assert!(o.is_ok(), "copy failed: {o:?}");
    }
    let secs = t.elapsed().as_secs_f64();
    let bytes = size.bytes().0;
    println!(
        "copier {bytes} {secs:.3} {:.2}",
        bytes as f64 / secs / (1u64 << 30) as f64
    );
}
