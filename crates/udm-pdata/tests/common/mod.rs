//! Shared by udm-pdata's tests: a model of thin metadata (devices → mappings) driven by
//! the same operations as [`ThinMetadata`], and the fixed, printed proptest seed.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use std::collections::BTreeMap;
use udm_pdata::thin::ThinMetadata;

/// The proptest seed: `UDM_PDATA_SEED` or a fixed default; printed so a run can be replayed.
pub fn config(cases: u32) -> Config {
    let seed = std::env::var("UDM_PDATA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7564_6d70_6461_7461u64);
    eprintln!("proptest seed: {seed} (set UDM_PDATA_SEED to change)");
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// One operation on thin metadata.
#[derive(Debug, Clone)]
pub enum Op {
    Create(u64),
    Snap(u64, u64),
    Delete(u64),
    /// Map `n` consecutive blocks from `start` to freshly allocated data blocks.
    Insert(u64, u64, u64),
    /// Unmap `n` blocks from `start`, every `step`th.
    Remove(u64, u64, u64, u64),
    Commit,
    /// Reserve a metadata snapshot (committing), or release the held one.
    MetaSnap,
}

/// Operations over up to four devices and a virtual range that makes trees split.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u64..4).prop_map(Op::Create),
        1 => (0u64..4, 0u64..4).prop_map(|(a, b)| Op::Snap(a, b)),
        1 => (0u64..4).prop_map(Op::Delete),
        5 => (0u64..4, 0u64..3000, 1u64..400).prop_map(|(d, s, n)| Op::Insert(d, s, n)),
        3 => (0u64..4, 0u64..3000, 1u64..400, 1u64..4).prop_map(|(d, s, n, k)| Op::Remove(d, s, n, k)),
        2 => Just(Op::Commit),
        1 => Just(Op::MetaSnap),
    ]
}

/// Devices → (virtual block → data block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub devs: BTreeMap<u64, BTreeMap<u64, u64>>,
    /// The devices as the held metadata snapshot saw them.
    pub held: Option<BTreeMap<u64, BTreeMap<u64, u64>>>,
}

impl Model {
    /// Apply `op` to both; operations the model rejects (missing or existing devices)
    /// are checked to fail in udm too. Returns true for a commit.
    pub fn apply(&mut self, md: &mut ThinMetadata, op: &Op) -> bool {
        match *op {
            Op::Create(d) => {
                let r = md.create_thin(d);
                match self.devs.entry(d) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        assert!(r.is_err(), "create of existing device {d} succeeded")
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        r.unwrap();
                        e.insert(BTreeMap::new());
                    }
                }
            }
            Op::Snap(d, o) => {
                let r = md.create_snap(d, o);
                if self.devs.contains_key(&d) || !self.devs.contains_key(&o) {
                    assert!(r.is_err(), "bad snapshot {d} of {o} succeeded");
                } else {
                    r.unwrap();
                    let m = self.devs[&o].clone();
                    self.devs.insert(d, m);
                }
            }
            Op::Delete(d) => {
                let r = md.delete(d);
                if self.devs.remove(&d).is_some() {
                    r.unwrap();
                } else {
                    assert!(r.is_err(), "delete of missing device {d} succeeded");
                }
            }
            Op::Insert(d, s, n) => {
                if let Some(m) = self.devs.get_mut(&d) {
                    for v in s..s + n {
                        let b = md.alloc_data_block().unwrap();
                        md.insert(d, v, b).unwrap();
                        m.insert(v, b);
                    }
                }
            }
            Op::Remove(d, s, n, k) => {
                if let Some(m) = self.devs.get_mut(&d) {
                    for v in (s..s + n).step_by(k as usize) {
                        let was = md.remove(d, v).unwrap();
                        assert_eq!(was, m.remove(&v).is_some(), "remove {d}/{v}");
                    }
                }
            }
            Op::Commit => {
                md.commit().unwrap();
                return true;
            }
            Op::MetaSnap => {
                if self.held.take().is_some() {
                    md.release_metadata_snap().unwrap();
                } else {
                    md.reserve_metadata_snap().unwrap();
                    self.held = Some(self.devs.clone());
                    return true;
                }
            }
        }
        false
    }

    /// Devices → mappings as the held metadata snapshot of `md` records them.
    pub fn read_held(md: &mut ThinMetadata) -> Option<BTreeMap<u64, BTreeMap<u64, u64>>> {
        use udm_pdata::btree;
        use udm_pdata::checksum::BlockKind;
        use udm_pdata::thin::{unpack_block_time, ThinSuperblock};
        let b = md.superblock().metadata_snap;
        if b == 0 {
            return None;
        }
        let tm = md.tm();
        let sb =
            ThinSuperblock::decode(&tm.read(b, BlockKind::ThinSuperblock).unwrap(), b).unwrap();
        let mut out = BTreeMap::new();
        for (dev, root) in btree::collect(tm, sb.data_mapping_root, 8).unwrap() {
            let m = btree::collect(tm, btree::value_u64(&root), 8)
                .unwrap()
                .into_iter()
                .map(|(v, x)| (v, unpack_block_time(btree::value_u64(&x)).0))
                .collect();
            out.insert(dev, m);
        }
        Some(out)
    }

    /// Assert udm's metadata holds exactly the model.
    pub fn verify(&self, md: &mut ThinMetadata) {
        assert!(
            Model::read_held(md) == self.held,
            "held metadata snapshot differs"
        );
        let devs: Vec<u64> = md.devices().unwrap().into_iter().map(|(d, _)| d).collect();
        assert_eq!(
            devs,
            self.devs.keys().copied().collect::<Vec<_>>(),
            "device list"
        );
        for (&d, m) in &self.devs {
            let got: BTreeMap<u64, u64> = md
                .mappings(d)
                .unwrap()
                .into_iter()
                .map(|(v, b, _)| (v, b))
                .collect();
            if &got != m {
                let diff = got
                    .iter()
                    .map(|(k, v)| (*k, Some(*v)))
                    .chain(m.keys().map(|k| (*k, None)))
                    .find(|(k, _)| got.get(k) != m.get(k))
                    .map(|(k, _)| (k, got.get(&k), m.get(&k)));
                panic!(
                    "device {d}: {} mappings in udm, {} in the model; first difference (vblock, udm, model): {diff:?}",
                    got.len(),
                    m.len()
                );
            }
            assert_eq!(
                md.details(d).unwrap().unwrap().mapped_blocks,
                m.len() as u64
            );
            for (&v, &b) in m.iter().step_by(97) {
                assert_eq!(md.lookup(d, v).unwrap().map(|x| x.0), Some(b));
            }
        }
    }
}
