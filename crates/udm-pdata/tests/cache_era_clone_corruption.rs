//! Corrupt cache, era and clone metadata (random bit flips in random metadata blocks, fixed
//! printed seed) never panics the parsers: opening and walking either succeeds or returns an
//! error. Checksums catch most flips; the rest must still be handled as data.

use std::sync::Arc;
use udm_pdata::cache::{CacheMetadata, PolicyId};
use udm_pdata::clone::CloneMetadata;
use udm_pdata::era::EraMetadata;
use udm_pdata::io::{MemIo, MetaIo};
use udm_testkit::rng::XorShift;

const BLOCKS: u64 = 256;

fn corrupt_copies(image: &[u8], rng: &mut XorShift, mut probe: impl FnMut(Arc<dyn MetaIo>)) {
    let used = (0..BLOCKS)
        .filter(|&b| {
            image[(b * 4096) as usize..((b + 1) * 4096) as usize]
                .iter()
                .any(|&x| x != 0)
        })
        .collect::<Vec<_>>();
    for _ in 0..300 {
        let io = MemIo::from_bytes(image);
        for _ in 0..1 + rng.below(3) {
            let b = used[rng.below(used.len() as u64) as usize];
            let off = rng.below(4096) as usize;
            io.corrupt(b, off, 1 << rng.below(8));
        }
        probe(Arc::new(io));
    }
}

#[test]
fn corrupt_cache_era_clone_metadata_gives_errors_not_panics() {
    let seed = udm_testkit::prop::seed();
    eprintln!("metadata corruption: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed);
    let smq = PolicyId {
        name: "smq".into(),
        version: [2, 0, 0],
        hint_size: 4,
    };

    // cache, v2, with mappings, dirty bits, hints and discards.
    let io = Arc::new(MemIo::new(BLOCKS));
    let mut md = CacheMetadata::format(io.clone(), 128, 2).unwrap();
    md.resize(1500).unwrap();
    md.resize_discards(128, 900).unwrap();
    for cb in (0..1500).step_by(3) {
        md.insert(cb, cb * 5 + 1).unwrap();
        md.set_dirty(cb, cb % 2 == 0).unwrap();
    }
    md.set_discard(7, true).unwrap();
    md.write_hints(&smq, &vec![9; 1500]).unwrap();
    md.commit(true).unwrap();
    let image = io.to_bytes();
    let (mut ok, mut err) = (0, 0);
    corrupt_copies(&image, &mut rng, |io| {
        let r = CacheMetadata::open(io, 128).and_then(|mut m| {
            m.mappings(Some(&smq))?;
            m.discards()?;
            m.insert(1, 2)?;
            m.commit(true)
        });
        if r.is_ok() {
            ok += 1
        } else {
            err += 1
        }
    });
    eprintln!("cache: {ok} opened, {err} refused");
    assert!(err > 0, "no corruption was ever detected");

    // era with archived writesets, a digested era array and a held snapshot.
    let io = Arc::new(MemIo::new(BLOCKS));
    let mut md = EraMetadata::format(io.clone(), 64).unwrap();
    md.resize(3000).unwrap();
    for era in 0..4u64 {
        md.rollover().unwrap();
        for b in (era..3000).step_by(5 + era as usize) {
            md.mark(b).unwrap();
        }
    }
    md.digest_one().unwrap();
    md.take_snap().unwrap();
    md.commit().unwrap();
    let image = io.to_bytes();
    let (mut ok, mut err) = (0, 0);
    corrupt_copies(&image, &mut rng, |io| {
        let r = EraMetadata::open(io, 64).and_then(|mut m| {
            m.writesets()?;
            m.era_array()?;
            m.current_bits()?;
            while m.digest_one()? {}
            m.drop_snap()?;
            m.commit()
        });
        if r.is_ok() {
            ok += 1
        } else {
            err += 1
        }
    });
    eprintln!("era: {ok} opened, {err} refused");
    assert!(err > 0, "no corruption was ever detected");

    // clone with some hydrated regions.
    let io = Arc::new(MemIo::new(BLOCKS));
    let mut md = CloneMetadata::open_or_format(io.clone(), 8, 8 * 20_000).unwrap();
    for r in (0..20_000).step_by(7) {
        md.set_hydrated(r).unwrap();
    }
    md.commit().unwrap();
    let image = io.to_bytes();
    let (mut ok, mut err) = (0, 0);
    corrupt_copies(&image, &mut rng, |io| {
        let r = CloneMetadata::open_or_format(io, 8, 8 * 20_000).and_then(|mut m| {
            m.hydrated()?;
            m.set_hydrated(3)?;
            m.commit()
        });
        if r.is_ok() {
            ok += 1
        } else {
            err += 1
        }
    });
    eprintln!("clone: {ok} opened, {err} refused");
    assert!(err > 0, "no corruption was ever detected");
}
