//! Single-level copy-on-write btrees against `BTreeMap`s, for several value sizes: two
//! trees that share nodes after a clone (as snapshots do) diverge without affecting each
//! other; lookups, range walks and reopen after commit match the models; and the metadata
//! space map agrees with a walk of both trees at every commit.

mod common;

use common::{check_scratch_counts, commit_scratch, reopen_scratch, value};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use udm_pdata::btree::{self, NoRefs};
use udm_pdata::check::Leaves;
use udm_pdata::io::MemIo;
use udm_pdata::space_map::SM_ROOT_SIZE;
use udm_pdata::tm::TransactionManager;

#[derive(Debug, Clone)]
enum Op {
    Insert(bool, u64, u64),
    InsertRun(bool, u64, u64),
    Remove(bool, u64),
    RemoveRun(bool, u64, u64),
    WalkFrom(bool, u64),
    /// Make tree B a clone of tree A (sharing every node).
    Clone,
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), 0u64..6000, any::<u64>()).prop_map(|(t, k, v)| Op::Insert(t, k, v)),
        3 => (any::<bool>(), 0u64..6000, 1u64..700).prop_map(|(t, k, n)| Op::InsertRun(t, k, n)),
        2 => (any::<bool>(), 0u64..6000).prop_map(|(t, k)| Op::Remove(t, k)),
        2 => (any::<bool>(), 0u64..6000, 1u64..900).prop_map(|(t, k, n)| Op::RemoveRun(t, k, n)),
        1 => (any::<bool>(), 0u64..6500).prop_map(|(t, k)| Op::WalkFrom(t, k)),
        1 => Just(Op::Clone),
        2 => Just(Op::Commit),
    ]
}

struct Trees {
    io: MemIo,
    tm: TransactionManager,
    roots: [u64; 2],
    vs: u32,
}

impl Trees {
    /// Commit the roots, and the value size as the tag.
    fn commit(&mut self) {
        commit_scratch(&mut self.tm, [0; SM_ROOT_SIZE], self.roots, self.vs);
    }

    fn reopen(io: MemIo) -> Trees {
        let (tm, sb) = reopen_scratch(&io);
        Trees {
            io,
            tm,
            roots: [sb.data_mapping_root, sb.device_details_root],
            vs: sb.incompat_flags,
        }
    }

    /// Walk both trees and the metadata space map from disk; compare the counts.
    fn check(&self) {
        check_scratch_counts(&self.io, &Leaves::Plain(self.vs));
    }
}

fn verify(trees: &mut Trees, models: &[BTreeMap<u64, u64>; 2]) {
    for (t, model) in models.iter().enumerate() {
        let got = btree::collect(&mut trees.tm, trees.roots[t], trees.vs).unwrap();
        let want: Vec<(u64, Vec<u8>)> = model
            .iter()
            .map(|(k, v)| (*k, value(*v, trees.vs)))
            .collect();
        assert!(
            got == want,
            "tree {t}: {} entries, model {}",
            got.len(),
            want.len()
        );
    }
}

proptest! {
    #![proptest_config(common::config(48))]
    #[test]
    fn btrees_match_models(vs in prop_oneof![Just(4u32), Just(8), Just(16), Just(24)], ops in prop::collection::vec(op(), 1..40)) {
        let io = MemIo::new(2048);
        let mut tm = TransactionManager::format(Arc::new(io.clone())).unwrap();
        let roots = [btree::empty(&mut tm, vs).unwrap(), btree::empty(&mut tm, vs).unwrap()];
        let mut trees = Trees { io: io.clone(), tm, roots, vs };
        let mut models: [BTreeMap<u64, u64>; 2] = Default::default();
        for o in &ops {
            match *o {
                Op::Insert(t, k, v) => {
                    let t = t as usize;
                    trees.roots[t] = btree::insert(&mut trees.tm, trees.roots[t], k, &value(v, vs), &mut NoRefs).unwrap();
                    models[t].insert(k, v);
                }
                Op::InsertRun(t, k, n) => {
                    let t = t as usize;
                    for i in k..k + n {
                        trees.roots[t] = btree::insert(&mut trees.tm, trees.roots[t], i, &value(i * 7, vs), &mut NoRefs).unwrap();
                        models[t].insert(i, i * 7);
                    }
                }
                Op::Remove(t, k) => {
                    let t = t as usize;
                    let (r, old) = btree::remove(&mut trees.tm, trees.roots[t], k, vs, &mut NoRefs).unwrap();
                    trees.roots[t] = r;
                    prop_assert_eq!(old, models[t].remove(&k).map(|v| value(v, vs)));
                }
                Op::RemoveRun(t, k, n) => {
                    let t = t as usize;
                    for i in k..k + n {
                        let (r, old) = btree::remove(&mut trees.tm, trees.roots[t], i, vs, &mut NoRefs).unwrap();
                        trees.roots[t] = r;
                        prop_assert_eq!(old.is_some(), models[t].remove(&i).is_some());
                    }
                }
                Op::WalkFrom(t, k) => {
                    let t = t as usize;
                    let mut got = Vec::new();
                    btree::walk_from(&mut trees.tm, trees.roots[t], vs, k, &mut |key, _| {
                        got.push(key);
                        Ok(got.len() < 50)
                    }).unwrap();
                    let want: Vec<u64> = models[t].range(k..).map(|(k, _)| *k).take(50).collect();
                    prop_assert_eq!(got, want);
                    for probe in [k, k + 1, k.saturating_sub(1)] {
                        let got = btree::lookup(&mut trees.tm, trees.roots[t], probe, vs).unwrap();
                        prop_assert_eq!(got, models[t].get(&probe).map(|v| value(*v, vs)));
                    }
                }
                Op::Clone => {
                    btree::del(&mut trees.tm, trees.roots[1], vs, &mut NoRefs).unwrap();
                    trees.tm.inc(trees.roots[0]).unwrap();
                    trees.roots[1] = trees.roots[0];
                    models[1] = models[0].clone();
                }
                Op::Commit => {
                    trees.commit();
                    trees.check();
                    trees = Trees::reopen(io.clone());
                    verify(&mut trees, &models);
                }
            }
        }
        verify(&mut trees, &models);
        trees.commit();
        trees.check();
    }
}
