//! Space maps against a `HashMap` model: random allocations, increments (up to counts far
//! above 2, so the overflow btree and counts above 255 are used) and decrements in a disk
//! space map and the metadata space map survive commit and reopen exactly, across
//! bitmap boundaries; freed blocks are not reused before the next commit.

mod common;

use common::{commit_scratch, reopen_scratch};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use udm_pdata::io::MemIo;
use udm_pdata::space_map::DiskSpaceMap;
use udm_pdata::tm::TransactionManager;

#[derive(Debug, Clone)]
enum Op {
    Alloc(u16),
    Inc(u32, u16),
    Dec(u32, u16),
    Commit,
}

fn op(nr: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u16..200).prop_map(Op::Alloc),
        3 => (0..nr, 1u16..300).prop_map(|(b, n)| Op::Inc(b, n)),
        2 => (0..nr, 1u16..300).prop_map(|(b, n)| Op::Dec(b, n)),
        1 => Just(Op::Commit),
    ]
}

const DATA_BLOCKS: u32 = 40_000;

fn commit(tm: &mut TransactionManager, data: &mut DiskSpaceMap) {
    let d = data.commit(tm).unwrap();
    commit_scratch(tm, d.pack(), [0, 0], 0);
    data.begin();
}

fn reopen(io: &MemIo) -> (TransactionManager, DiskSpaceMap) {
    let (mut tm, sb) = reopen_scratch(io);
    let data = DiskSpaceMap::open(&mut tm, &sb.data_sm_root).unwrap();
    (tm, data)
}

proptest! {
    #![proptest_config(common::config(48))]
    #[test]
    fn disk_space_map_matches_model(ops in prop::collection::vec(op(DATA_BLOCKS), 1..40)) {
        let io = MemIo::new(1024);
        let mut tm = TransactionManager::format(Arc::new(io.clone())).unwrap();
        let mut data = DiskSpaceMap::format(&mut tm, DATA_BLOCKS as u64).unwrap();
        let mut model: HashMap<u64, u32> = HashMap::new();
        let mut freed_this_txn: Vec<u64> = Vec::new();
        for o in &ops {
            match *o {
                Op::Alloc(n) => {
                    for _ in 0..n {
                        let b = data.alloc().unwrap();
                        prop_assert_eq!(model.get(&b).copied().unwrap_or(0), 0, "allocated a used block");
                        prop_assert!(!freed_this_txn.contains(&b), "reused block {} freed in this transaction", b);
                        model.insert(b, 1);
                    }
                }
                Op::Inc(b, n) => {
                    for _ in 0..n {
                        data.inc(b as u64).unwrap();
                    }
                    *model.entry(b as u64).or_default() += n as u32;
                }
                Op::Dec(b, n) => {
                    let have = model.get(&(b as u64)).copied().unwrap_or(0);
                    for _ in 0..(n as u32).min(have) {
                        data.dec(b as u64).unwrap();
                    }
                    if have > 0 && have <= n as u32 {
                        freed_this_txn.push(b as u64);
                    }
                    if have == 0 {
                        prop_assert!(data.dec(b as u64).is_err());
                    }
                    model.insert(b as u64, have.saturating_sub(n as u32));
                }
                Op::Commit => {
                    commit(&mut tm, &mut data);
                    freed_this_txn.clear();
                    let (t, d) = reopen(&io);
                    tm = t;
                    data = d;
                    for b in 0..DATA_BLOCKS as u64 {
                        prop_assert_eq!(data.get(b), model.get(&b).copied().unwrap_or(0), "block {}", b);
                    }
                    let used = model.values().filter(|&&c| c > 0).count() as u64;
                    prop_assert_eq!(data.core().nr_allocated(), used);
                }
            }
        }
    }
}

/// Metadata blocks referenced many times keep their counts (through the metadata space
/// map's own overflow tree), and a bitmap boundary is crossed.
#[test]
fn metadata_space_map_counts_above_two_survive_reopen() {
    let io = MemIo::new(40_000);
    let mut tm = TransactionManager::format(Arc::new(io.clone())).unwrap();
    let mut data = DiskSpaceMap::format(&mut tm, 100).unwrap();
    let mut blocks = Vec::new();
    for _ in 0..20_000 {
        blocks.push(tm.alloc().unwrap());
    }
    assert!(blocks.iter().any(|&b| b > 16_320), "second bitmap used");
    for (i, &b) in blocks.iter().enumerate().step_by(101) {
        for _ in 0..(i % 700) {
            tm.inc(b).unwrap();
        }
    }
    commit(&mut tm, &mut data);
    let expect: Vec<(u64, u32)> = blocks.iter().map(|&b| (b, tm.ref_count(b))).collect();
    assert!(expect.iter().any(|&(_, c)| c > 255));
    let (tm, _) = reopen(&io);
    for (b, c) in expect {
        assert_eq!(tm.ref_count(b), c, "metadata block {b}");
    }
    assert_eq!(tm.sm().root().nr_blocks, 40_000);
}
