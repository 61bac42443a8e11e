//! dm-array and the bitset against `Vec` models: resizes (grow and shrink across block
//! boundaries), sets, gets and walks, with a clone sharing every block (as a metadata
//! snapshot would); after each commit a reopen reads back the models and the metadata
//! space map agrees with a walk of both arrays.

mod common;

use proptest::prelude::*;
use std::sync::Arc;
use udm_pdata::array::{self, bitset};
use udm_pdata::block_manager::BlockManager;
use udm_pdata::btree::NoRefs;
use udm_pdata::check::{compare, Leaves, RefWalker};
use udm_pdata::io::{MemIo, MetaIo};
use udm_pdata::space_map::{SmRoot, SM_ROOT_SIZE};
use udm_pdata::thin::ThinSuperblock;
use udm_pdata::tm::{TransactionManager, SUPERBLOCK};

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

fn val(v: u64, vs: u32) -> Vec<u8> {
    v.to_le_bytes()
        .iter()
        .cycle()
        .take(vs as usize)
        .copied()
        .collect()
}

/// Commit with the two roots (and a length/value size) in a scratch superblock.
fn commit(tm: &mut TransactionManager, roots: [u64; 2]) {
    let m = tm.pre_commit().unwrap();
    let sb = ThinSuperblock {
        flags: 0,
        uuid: [0; 16],
        version: 2,
        time: 0,
        trans_id: 0,
        metadata_snap: 0,
        data_sm_root: [0; SM_ROOT_SIZE],
        metadata_sm_root: m.pack(),
        data_mapping_root: roots[0],
        device_details_root: roots[1],
        data_block_size: 128,
        metadata_block_size: 8,
        metadata_nr_blocks: m.nr_blocks,
        compat_flags: 0,
        compat_ro_flags: 0,
        incompat_flags: 0,
    };
    tm.commit(sb.encode()).unwrap();
}

fn reopen(io: &MemIo) -> (TransactionManager, [u64; 2]) {
    let sb = ThinSuperblock::decode(&io.block(SUPERBLOCK), SUPERBLOCK).unwrap();
    let tm = TransactionManager::open(Arc::new(io.clone()), &sb.metadata_sm_root).unwrap();
    (tm, [sb.data_mapping_root, sb.device_details_root])
}

fn check_counts(io: &MemIo) {
    let sb = ThinSuperblock::decode(&io.block(SUPERBLOCK), SUPERBLOCK).unwrap();
    let mut bm = BlockManager::new(Arc::new(io.clone()) as Arc<dyn MetaIo>, 256);
    let mut w = RefWalker::default();
    w.meta_ref(SUPERBLOCK);
    let sm = w
        .metadata_sm(&mut bm, &SmRoot::unpack(&sb.metadata_sm_root).unwrap())
        .unwrap();
    w.tree(&mut bm, sb.data_mapping_root, &Leaves::ArrayBlocks)
        .unwrap();
    w.tree(&mut bm, sb.device_details_root, &Leaves::ArrayBlocks)
        .unwrap();
    let problems = compare("metadata", &w.meta, &sm);
    assert!(problems.is_empty(), "{problems:?}");
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
                    roots[t] = array::resize(&mut tm, roots[t], vs, old, n, &val(d, vs), &mut NoRefs).unwrap();
                    models[t].resize(n as usize, val(d, vs));
                }
                Op::Set(t, i, v) => {
                    let t = t as usize;
                    if models[t].is_empty() {
                        continue;
                    }
                    let i = i % models[t].len() as u64;
                    roots[t] = array::set(&mut tm, roots[t], vs, i, &val(v, vs), &mut NoRefs).unwrap();
                    models[t][i as usize] = val(v, vs);
                    prop_assert_eq!(array::get(&mut tm, roots[t], vs, i).unwrap(), Some(val(v, vs)));
                }
                Op::Clone => {
                    array::del(&mut tm, roots[1], vs, &mut NoRefs).unwrap();
                    tm.inc(roots[0]).unwrap();
                    roots[1] = roots[0];
                    models[1] = models[0].clone();
                }
                Op::Commit => {
                    commit(&mut tm, roots);
                    check_counts(&io);
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
        check_counts(&io);
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
