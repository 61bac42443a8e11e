//! Model test: random writes, reads, discards, flushes, snapshots (of snapshots) and deletes
//! on thin devices of one pool, checked against a byte model of every device, with the
//! thin status lines checked against the model's mapped blocks. At the end the metadata
//! passes the real `thin_check`, `thin_dump` lists exactly the mapped blocks, and a fresh
//! registry reopens the pool with every device's data intact. Fixed seed, printed.

use std::collections::{BTreeMap, BTreeSet};
use udm_core::Registry;
use udm_testkit::dm::{create, message, open, read, reg, sel, status, write};
use udm_testkit::rng::XorShift;
use udm_testkit::thin::{thin_check, thin_dump, PoolFiles};

const BS: u64 = 128;
const THIN_SECTORS: u64 = 64 * BS;
const DATA_BLOCKS: u64 = 1024;

struct Dev {
    bytes: Vec<u8>,
    mapped: BTreeSet<u64>,
}

fn thin_table(id: u64) -> String {
    format!("0 {THIN_SECTORS} thin /dev/mapper/pool {id}")
}

fn name(id: u64) -> String {
    format!("thin{id}")
}

fn activate(reg: &Registry, id: u64) {
    create(reg, &name(id), &thin_table(id)).unwrap();
}

fn check_status(reg: &Registry, id: u64, d: &Dev) {
    let want = match d.mapped.last() {
        Some(h) => format!("{} {}", d.mapped.len() as u64 * BS, (h + 1) * BS - 1),
        None => format!("{} -", d.mapped.len() as u64 * BS),
    };
    assert_eq!(
        status(reg, &name(id)),
        format!("0 {THIN_SECTORS} thin {want}\n"),
        "thin {id}"
    );
}

fn check_all(reg: &Registry, devs: &BTreeMap<u64, Dev>) {
    for (&id, d) in devs {
        let (dev, _g) = open(reg, &name(id));
        let got = read(dev.as_ref(), 0, d.bytes.len()).unwrap();
        assert!(got == d.bytes, "thin {id} contents differ from the model");
    }
}

#[test]
fn thin_model_random_ops() {
    let seed = udm_testkit::prop::seed();
    eprintln!("thin model: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed);
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 8, BS, DATA_BLOCKS);
    let reg = reg();
    create(&reg, "pool", &files.table("0")).unwrap();
    message(&reg, "pool", "create_thin 0").unwrap();
    activate(&reg, 0);
    let mut devs = BTreeMap::new();
    devs.insert(
        0,
        Dev {
            bytes: vec![0; (THIN_SECTORS * 512) as usize],
            mapped: BTreeSet::new(),
        },
    );
    let mut next_id = 1;
    for step in 0..400 {
        let ids: Vec<u64> = devs.keys().copied().collect();
        let id = ids[rng.below(ids.len() as u64) as usize];
        let sector = rng.below(THIN_SECTORS);
        let len = 1 + rng.below((THIN_SECTORS - sector).min(3 * BS));
        let (off, n) = ((sector * 512) as usize, (len * 512) as usize);
        match rng.below(100) {
            0..=39 => {
                let data = rng.bytes(n);
                let (dev, _g) = open(&reg, &name(id));
                write(dev.as_ref(), sector, &data).unwrap();
                let d = devs.get_mut(&id).unwrap();
                d.bytes[off..off + n].copy_from_slice(&data);
                d.mapped.extend(sector / BS..(sector + len).div_ceil(BS));
            }
            40..=64 => {
                let (dev, _g) = open(&reg, &name(id));
                let got = read(dev.as_ref(), sector, n).unwrap();
                assert!(
                    got == devs[&id].bytes[off..off + n],
                    "step {step}: read thin {id} @{sector}+{len}"
                );
            }
            65..=74 => {
                let (dev, _g) = open(&reg, &name(id));
                udm_io::sync::discard(dev.as_ref(), udm_io::Sectors(sector), udm_io::Sectors(len))
                    .unwrap();
                let d = devs.get_mut(&id).unwrap();
                for v in sector.div_ceil(BS)..(sector + len) / BS {
                    d.mapped.remove(&v);
                    let a = (v * BS * 512) as usize;
                    d.bytes[a..a + (BS * 512) as usize].fill(0);
                }
            }
            75..=82 => {
                let (dev, _g) = open(&reg, &name(id));
                udm_io::sync::flush(dev.as_ref()).unwrap();
                check_status(&reg, id, &devs[&id]);
            }
            83..=92 if devs.len() < 6 => {
                let new = next_id;
                next_id += 1;
                reg.suspend(&sel(&name(id)), false, false).unwrap();
                message(&reg, "pool", &format!("create_snap {new} {id}")).unwrap();
                reg.resume(&sel(&name(id))).unwrap();
                activate(&reg, new);
                let d = &devs[&id];
                let copy = Dev {
                    bytes: d.bytes.clone(),
                    mapped: d.mapped.clone(),
                };
                devs.insert(new, copy);
            }
            93..=99 if devs.len() > 1 => {
                reg.remove(&sel(&name(id)), false).unwrap();
                let e = message(&reg, "pool", &format!("delete {id}"));
                e.unwrap();
                devs.remove(&id);
            }
            _ => check_status(&reg, id, &devs[&id]),
        }
    }
    check_all(&reg, &devs);
    for (&id, d) in &devs {
        check_status(&reg, id, d);
    }
    // A pool status commits; then the real tools see exactly the model's mappings.
    let st = status(&reg, "pool");
    eprintln!("pool: {st}");
    thin_check(&files.meta).unwrap();
    let (_, dump) = thin_dump(&files.meta);
    assert_eq!(
        dump.keys().copied().collect::<Vec<_>>(),
        devs.keys().copied().collect::<Vec<_>>()
    );
    for (&id, d) in &devs {
        let mapped: BTreeSet<u64> = dump[&id].keys().copied().collect();
        assert_eq!(mapped, d.mapped, "thin_dump mappings of device {id}");
    }
    for &id in devs.keys() {
        reg.remove(&sel(&name(id)), false).unwrap();
    }
    reg.remove(&sel("pool"), false).unwrap();
    drop(reg);

    // Reopen in a fresh registry: same data.
    let reg = udm_testkit::dm::reg();
    create(&reg, "pool", &files.table("0")).unwrap();
    for &id in devs.keys() {
        activate(&reg, id);
    }
    check_all(&reg, &devs);
}
