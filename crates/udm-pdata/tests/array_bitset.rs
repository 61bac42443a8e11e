//! dm-array and the bitset against `Vec` models: resizes (grow and shrink across block
//! boundaries), sets, gets and walks, with a clone sharing every block (as a metadata
//! snapshot would); after each commit a reopen reads back the models and the metadata
//! space map agrees with a walk of both arrays.

mod common;

use common::{check_scratch_counts, commit_scratch, reopen_scratch, value};
use proptest::prelude::*;
use std::sync::Arc;
use udm_pdata::array::{self, bitset};
use udm_pdata::btree::NoRefs;
use udm_pdata::check::Leaves;
use udm_pdata::io::MemIo;
use udm_pdata::space_map::SM_ROOT_SIZE;
use udm_pdata::tm::TransactionManager;

#[derive(Debug, Clone)]
enum Op {
    Resize(bool, u64, u64),
    Set(bool, u64, u64),
    Clone,
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<bool>(), 0u64..3000, any::<u64>()).prop_map(|(t, n, d)| Op::Resize(t, n, d)),
        5 => (any::<bool>(), any::<u64>(), any::<u64>()).prop_map(|(t, i, v)| Op::Set(t, i, v)),
        1 => Just(Op::Clone),
        2 => Just(Op::Commit),
    ]
}

/// Commit with the two roots in a scratch superblock.
fn commit(tm: &mut TransactionManager, roots: [u64; 2]) {
    commit_scratch(tm, [0; SM_ROOT_SIZE], roots, 0);
}

fn reopen(io: &MemIo) -> (TransactionManager, [u64; 2]) {
    let (tm, sb) = reopen_scratch(io);
    (tm, [sb.data_mapping_root, sb.device_details_root])
}

fn read_all(tm: &mut TransactionManager, root: u64, vs: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    array::walk(tm, root, vs, &mut |i, v| {
        assert_eq!(i, out.len() as u64);
        out.push(v.to_vec());
        Ok(())
    })
    .unwrap();
    out
}

proptest! {
    #![proptest_config(common::config(48))]
    #[test]
    fn arrays_match_models(vs in prop_oneof![Just(4u32), Just(8), Just(12), Just(64)], ops in prop::collection::vec(op(), 1..30)) {
        let io = MemIo::new(2048);
        let mut tm = TransactionManager::format(Arc::new(io.clone())).unwrap();
        let mut roots = [array::empty(&mut tm).unwrap(), array::empty(&mut tm).unwrap()];
        let mut models: [Vec<Vec<u8>>; 2] = Default::default();
        for o in &ops {
            match *o {
                Op::Resize(t, n, d) => {
                    let t = t as usize;
                    let old = models[t].len() as u64;
                    roots[t] = array::resize(&mut tm, roots[t], vs, old, n, &value(d, vs), &mut NoRefs).unwrap();
                    models[t].resize(n as usize, value(d, vs));
                }
                Op::Set(t, i, v) => {
                    let t = t as usize;
                    if models[t].is_empty() {
                        continue;
                    }
                    let i = i % models[t].len() as u64;
                    roots[t] = array::set(&mut tm, roots[t], vs, i, &value(v, vs), &mut NoRefs).unwrap();
                    models[t][i as usize] = value(v, vs);
                    prop_assert_eq!(array::get(&mut tm, roots[t], vs, i).unwrap(), Some(value(v, vs)));
                }
                Op::Clone => {
                    array::del(&mut tm, roots[1], vs, &mut NoRefs).unwrap();
                    tm.inc(roots[0]).unwrap();
                    roots[1] = roots[0];
                    models[1] = models[0].clone();
                }
                Op::Commit => {
                    commit(&mut tm, roots);
                    check_scratch_counts(&io, &Leaves::ArrayBlocks);
                    let (t, r) = reopen(&io);
                    tm = t;
                    roots = r;
                    for (k, model) in models.iter().enumerate() {
                        prop_assert!(&read_all(&mut tm, roots[k], vs) == model, "array {} differs", k);
                    }
                }
            }
        }
        for (k, model) in models.iter().enumerate() {
            prop_assert!(&read_all(&mut tm, roots[k], vs) == model, "array {} differs", k);
            prop_assert_eq!(array::get(&mut tm, roots[k], vs, model.len() as u64).unwrap(), None);
        }
        commit(&mut tm, roots);
        check_scratch_counts(&io, &Leaves::ArrayBlocks);
    }

    #[test]
    fn bitset_matches_model(ops in prop::collection::vec((0u8..4, 0u64..70_000, any::<bool>()), 1..60)) {
        let io = MemIo::new(1024);
        let mut tm = TransactionManager::format(Arc::new(io.clone())).unwrap();
        let mut root = bitset::empty(&mut tm).unwrap();
        let mut model: Vec<bool> = Vec::new();
        for (kind, n, v) in ops {
            match kind {
                0 => {
                    root = bitset::resize(&mut tm, root, model.len() as u64, n, v).unwrap();
                    model.resize(n as usize, v);
                }
                1 | 2 if !model.is_empty() => {
                    let bit = n % model.len() as u64;
                    root = bitset::set(&mut tm, root, bit, v).unwrap();
                    model[bit as usize] = v;
                    prop_assert_eq!(bitset::test(&mut tm, root, bit).unwrap(), v);
                }
                3 => {
                    commit(&mut tm, [root, root]);
                    let (t, r) = reopen(&io);
                    tm = t;
                    root = r[0];
                }
                _ => {}
            }
            prop_assert!(bitset::collect(&mut tm, root, model.len() as u64).unwrap() == model);
        }
    }
}
