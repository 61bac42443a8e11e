//! Ordering guarantees of the J-mode journal now that its I/O runs without the target's
//! locks (background commit/write-back cycles beside new writes and reads):
//! - a block stays readable from the journal until its home write is done: a read issued
//!   while the write-back of that block is held below completes, from the journal, with
//!   the acknowledged data (`integrity_journal_copy_is_read_while_its_write_back_is_held`);
//! - a power cut at any flush leaves a device that replays cleanly: every block reads, and
//!   holds its last flushed data or a later write (`integrity_power_cut_at_every_flush_...`).
//!   The disk below has a volatile cache (a flush makes earlier writes durable, FUA the
//!   write itself); a cut keeps the durable image plus a seeded subset of the cached
//!   writes. It fails if a section went home before its commit was durable (torn data and
//!   tags), or a section was reused before its home copies were durable (flushed data lost).

mod common;
use common::*;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;
use udm_io::{Bio, BioFlags, BlockDevice, DevId, MemDevice, Op, Sectors};
use udm_testkit::gate::{GateDevice, RemapType};
use udm_testkit::rng::XorShift;

/// Journal of 4 sections (168 blocks each with crc32c and 512-byte blocks), half of it the
/// watermark: 336 blocks written past the last commit wake the background cycle.
const REST: &str =
    "4 J 4 journal_sectors:704 journal_watermark:50 commit_time:100000 internal_hash:crc32c";

fn rig() -> (udm_core::Registry, RemapType) {
    let reg = registry();
    let remap = RemapType::new();
    reg.target_types().register(Arc::new(remap.clone()));
    (reg, remap)
}

/// Provided sectors of an integrity device on `/dev/mapper/{under}` (formats it).
fn provided(reg: &udm_core::Registry, under: &str) -> u64 {
    create(
        reg,
        "fmt",
        &format!("0 8 integrity /dev/mapper/{under} 0 {REST}"),
    )
    .unwrap();
    let p: u64 = status_fields(reg, "fmt")[1].parse().unwrap();
    reg.remove(&sel("fmt"), false).unwrap();
    p
}

#[test]
fn integrity_journal_copy_is_read_while_its_write_back_is_held() {
    let (reg, remap) = rig();
    let gate = GateDevice::new(Arc::new(MemDevice::new("disk", Sectors(4096))));
    gate.open();
    remap.insert("g", gate.clone());
    create(&reg, "g", "0 4096 testdev g").unwrap();
    let p = provided(&reg, "g");
    create(
        &reg,
        "i",
        &format!("0 {p} integrity /dev/mapper/g 0 {REST}"),
    )
    .unwrap();
    let (dev, _g) = open(&reg, "i");
    let x = vec![0xa5u8; 4096];
    write(&*dev, 0, &x);
    // Committed: section 0 (padded) now waits for write-back.
    udm_io::sync::flush(&*dev).unwrap();
    gate.close();
    // 22 × 8 blocks more: past the watermark, all in memory (no I/O needed to complete).
    for k in 0..22u64 {
        write(&*dev, 1024 + k * 8, &vec![k as u8 + 1; 4096]);
    }
    // The background cycle (write-back of section 0, commit of the rest) is now held.
    assert!(
        gate.wait_held(1, Duration::from_secs(20)),
        "no write-back started"
    );
    let (tx, rx) = channel();
    let d2 = dev.clone();
    std::thread::spawn(move || {
        let _ = tx.send(udm_io::sync::read_at(&*d2, Sectors(0), 4096).map(|b| b.into_vec()));
    });
    let got = rx.recv_timeout(Duration::from_secs(20));
    gate.open();
    let got = got
        .expect("the read waited for the held write-back (the block left the journal early)")
        .expect("read");
    assert!(
        got == x,
        "the read saw data older than an acknowledged write"
    );
    udm_io::sync::flush(&*dev).unwrap();
    assert_eq!(read(&*dev, 0, 4096), x);
    for k in 0..22u64 {
        assert_eq!(read(&*dev, 1024 + k * 8, 4096), vec![k as u8 + 1; 4096]);
    }
    drop(dev);
    drop(_g);
    // After a clean stop everything is at home.
    reg.remove(&sel("i"), false).unwrap();
    create(
        &reg,
        "i",
        &format!("0 {p} integrity /dev/mapper/g 0 {REST}"),
    )
    .unwrap();
    let (dev, _g) = open(&reg, "i");
    assert_eq!(read(&*dev, 0, 4096), x);
    assert_eq!(read(&*dev, 1024 + 21 * 8, 4096), vec![22u8; 4096]);
}

/// A RAM disk with a volatile write cache (see the module doc); while `capture` is on,
/// every flush or FUA write first takes a power-cut image, tagged with `epoch`.
struct Volatile {
    live: MemDevice,
    st: Mutex<VState>,
    capture: AtomicBool,
    epoch: AtomicUsize,
}

struct VState {
    durable: Vec<u8>,
    cached: Vec<(usize, Vec<u8>)>,
    rng: XorShift,
    cuts: Vec<(usize, Vec<u8>)>,
}

impl Volatile {
    fn cut(&self, st: &mut VState) {
        if !self.capture.load(Ordering::SeqCst) {
            return;
        }
        let mut img = st.durable.clone();
        let cached = std::mem::take(&mut st.cached);
        for (off, d) in &cached {
            if st.rng.below(2) == 1 {
                img[*off..*off + d.len()].copy_from_slice(d);
            }
        }
        st.cached = cached;
        let e = self.epoch.load(Ordering::SeqCst);
        st.cuts.push((e, img));
    }
}

impl BlockDevice for Volatile {
    fn submit(&self, bio: Bio) {
        {
            let mut st = self.st.lock();
            let flush = bio.op == Op::Flush || bio.flags.contains(BioFlags::PREFLUSH);
            let fua = bio.op == Op::Write && bio.flags.contains(BioFlags::FUA);
            if flush || fua {
                self.cut(&mut st);
            }
            if flush {
                for (off, d) in std::mem::take(&mut st.cached) {
                    st.durable[off..off + d.len()].copy_from_slice(&d);
                }
            }
            if bio.op == Op::Write {
                let off = (bio.sector.0 * 512) as usize;
                if fua {
                    st.durable[off..off + bio.buf().len()].copy_from_slice(bio.buf());
                } else {
                    st.cached.push((off, bio.buf().to_vec()));
                }
            }
        }
        self.live.submit(bio)
    }
    fn size(&self) -> Sectors {
        self.live.size()
    }
    fn id(&self) -> DevId {
        self.live.id()
    }
}

#[test]
fn integrity_power_cut_at_every_flush_replays_to_the_flushed_data() {
    let seed = udm_testkit::prop::seed();
    eprintln!("integrity power cuts: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    const SECTORS: u64 = 4096;
    const EPOCHS: usize = 24;
    const WRITES: usize = 40;
    let (reg, remap) = rig();
    let vol = Arc::new(Volatile {
        live: MemDevice::new("disk", Sectors(SECTORS)),
        st: Mutex::new(VState {
            durable: vec![0; (SECTORS * 512) as usize],
            cached: Vec::new(),
            rng: XorShift::mixed(seed ^ 0x5a),
            cuts: Vec::new(),
        }),
        capture: AtomicBool::new(false),
        epoch: AtomicUsize::new(0),
    });
    remap.insert("v", vol.clone());
    create(&reg, "v", &format!("0 {SECTORS} testdev v")).unwrap();
    let p = provided(&reg, "v");
    create(
        &reg,
        "i",
        &format!("0 {p} integrity /dev/mapper/v 0 {REST}"),
    )
    .unwrap();
    let (dev, _g) = open(&reg, "i");
    let mut rng = XorShift::mixed(seed);
    // The model after each epoch's flush; epoch 0 writes every block.
    let mut flushed = vec![rng.bytes((p * 512) as usize)];
    write(&*dev, 0, &flushed[0]);
    udm_io::sync::flush(&*dev).unwrap();
    vol.capture.store(true, Ordering::SeqCst);
    // Writes of each epoch: (sector, data).
    let mut epochs: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new()];
    let mut checked = 0;
    for e in 1..=EPOCHS {
        let mut model = flushed[e - 1].clone();
        let mut ws = Vec::new();
        for _ in 0..WRITES {
            let s = rng.below(p / 8 - 1) * 8;
            let d = rng.bytes(4096);
            write(&*dev, s, &d);
            model[(s * 512) as usize..(s * 512) as usize + 4096].copy_from_slice(&d);
            ws.push((s, d));
        }
        epochs.push(ws);
        udm_io::sync::flush(&*dev).unwrap();
        flushed.push(model);
        vol.epoch.store(e, Ordering::SeqCst);
        let cuts = std::mem::take(&mut vol.st.lock().cuts);
        for (ce, img) in cuts {
            check_cut(
                &reg,
                &remap,
                checked,
                p,
                &img,
                &flushed[ce],
                &epochs[ce + 1..],
            );
            checked += 1;
        }
    }
    assert!(checked >= EPOCHS, "only {checked} power cuts checked");
    eprintln!("{checked} power cuts checked");
}

/// Open `img` as a device (journal replay), read every block: none may fail its check, and
/// each sector holds `base` (the last completed flush) or a later write.
fn check_cut(
    reg: &udm_core::Registry,
    remap: &RemapType,
    n: usize,
    p: u64,
    img: &[u8],
    base: &[u8],
    later: &[Vec<(u64, Vec<u8>)>],
) {
    let mem = MemDevice::new("cut", Sectors((img.len() / 512) as u64));
    write(&mem, 0, img);
    let key = format!("cut{n}");
    remap.insert(&key, Arc::new(mem));
    create(reg, &key, &format!("0 {} testdev {key}", img.len() / 512)).unwrap();
    let name = format!("ci{n}");
    create(
        reg,
        &name,
        &format!("0 {p} integrity /dev/mapper/{key} 0 {REST}"),
    )
    .unwrap();
    {
        let (dev, _g) = open(reg, &name);
        let got = udm_io::sync::read_at(&*dev, Sectors(0), (p * 512) as usize)
            .unwrap_or_else(|e| panic!("cut {n}: a block fails its check after replay: {e}"))
            .into_vec();
        for s in 0..p as usize {
            let r = s * 512..(s + 1) * 512;
            if got[r.clone()] == base[r.clone()] {
                continue;
            }
            let ok = later.iter().flatten().any(|(ws, d)| {
                let ws = *ws as usize;
                (ws..ws + 8).contains(&s) && d[(s - ws) * 512..(s - ws + 1) * 512] == got[r.clone()]
            });
            assert!(ok, "cut {n}: sector {s} lost its flushed data");
        }
    }
    reg.remove(&sel(&name), false).unwrap();
    reg.remove(&sel(&key), false).unwrap();
}
