//! The writecache index (newest entry per sector, chains of older ones) against a simple
//! model — a map from sector to its entries oldest to newest — through writes, overwrites,
//! writeback, commits, discards and a reload from the metadata image (a crash), with a
//! fixed, printed proptest seed.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const BS: u64 = 8;
const N: u64 = 24;
/// Sectors range over this many blocks: more than the cache holds, so it fills.
const SPAN: u64 = 40;

#[derive(Debug, Clone)]
enum Op {
    /// A one-block write to block `.0` (`writecache_map_write`'s choice of entry).
    Write(u64),
    /// Write back and free the `.0`-th oldest committed entry that is alone for its sector.
    Writeback(usize),
    /// `writecache_flush`: raise the sequence count and release superseded entries.
    Commit,
    /// Drop the entries of blocks `[.0, .0 + .1)`.
    Discard(u64, u64),
    /// Rebuild the state from the metadata image, as after a crash.
    Reload,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SPAN).prop_map(Op::Write),
        2 => (0..N as usize).prop_map(Op::Writeback),
        2 => Just(Op::Commit),
        1 => (0..SPAN, 1..6u64).prop_map(|(a, n)| Op::Discard(a, n)),
        1 => Just(Op::Reload),
    ]
}

type Model = BTreeMap<u64, Vec<u32>>;

fn fresh() -> State {
    let mut st = State::new(format::metadata_bytes(N, BS) as usize, N);
    for i in 0..N as u32 {
        st.set_entry(i, NONE, NONE);
        st.add_free(i);
    }
    st
}

fn free(st: &mut State, i: u32) {
    st.unlink(i);
    st.clear_seq(i);
    st.add_free(i);
}

fn apply(st: &mut State, m: &mut Model, op: &Op) {
    match *op {
        Op::Write(b) => {
            let sector = b * BS;
            if st.find(sector).is_some_and(|i| !st.committed(i)) {
                return; // an uncommitted hit is overwritten in place
            }
            let Some(i) = st.pop_free(None) else { return };
            let seq = st.seq_count;
            st.set_entry(i, sector, seq);
            st.insert(i);
            m.entry(sector).or_default().push(i);
        }
        Op::Writeback(k) => {
            let pick = st
                .lru
                .values()
                .copied()
                .filter(|&i| st.committed(i) && !st.is_dup(st.entries[i as usize].sector))
                .nth(k);
            if let Some(i) = pick {
                let sector = st.entries[i as usize].sector;
                free(st, i);
                m.remove(&sector);
            }
        }
        Op::Commit => {
            st.seq_count += 1;
            let sc = st.seq_count;
            st.meta[24..32].copy_from_slice(&sc.to_le_bytes());
            let dups: Vec<u64> = st.dups.iter().copied().collect();
            for s in dups {
                let newest = st.find(s).expect("dup cached");
                let old: Vec<u32> = st.chain(newest).skip(1).collect();
                for i in old {
                    free(st, i);
                }
                let v = m.get_mut(&s).expect("modelled");
                v.drain(..v.len() - 1);
            }
        }
        Op::Discard(a, n) => {
            for i in st.entries_in(a * BS, (a + n) * BS) {
                free(st, i);
            }
            let gone: Vec<u64> = m.range(a * BS..(a + n) * BS).map(|(&s, _)| s).collect();
            for s in gone {
                m.remove(&s);
            }
        }
        Op::Reload => {
            let mut st2 = fresh();
            let (changed, identical) = st2.load(st.meta.clone(), BS);
            assert!(identical.is_empty(), "two entries of one sequence count");
            let had_uncommitted = m.values().flatten().any(|&i| !st.committed(i));
            assert_eq!(changed, had_uncommitted, "image changed by the reload");
            for v in m.values_mut() {
                v.retain(|&i| st.committed(i));
                v.drain(..v.len().saturating_sub(1));
            }
            m.retain(|_, v| !v.is_empty());
            *st = st2;
        }
    }
}

fn check(st: &State, m: &Model) {
    let mut in_tree = 0;
    for b in 0..SPAN + 1 {
        let s = b * BS;
        let want = m.get(&s);
        assert_eq!(st.find(s), want.map(|v| *v.last().unwrap()), "find {s}");
        assert_eq!(st.cached(s), want.is_some());
        assert_eq!(st.is_dup(s), want.is_some_and(|v| v.len() > 1), "dup {s}");
        assert_eq!(st.dups.contains(&s), st.is_dup(s));
        if let Some(v) = want {
            let chain: Vec<u32> = st.chain(*v.last().unwrap()).collect();
            let rev: Vec<u32> = v.iter().rev().copied().collect();
            assert_eq!(chain, rev, "chain {s}");
            in_tree += v.len();
        }
        let following = m.range(s..).next().map(|(&f, v)| {
            if f == s {
                (f, *v.last().unwrap())
            } else {
                (f, v[0])
            }
        });
        assert_eq!(st.find_following(s), following, "following {s}");
        let mut got = st.entries_in(s, s + 5 * BS);
        let mut want: Vec<u32> = m
            .range(s..s + 5 * BS)
            .flat_map(|(_, v)| v.clone())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "entries in [{s}, +5 blocks)");
    }
    assert_eq!(st.lru.len(), in_tree);
    assert_eq!(
        st.free_count() as usize + in_tree,
        N as usize,
        "blocks lost"
    );
    for (&s, v) in m {
        for &i in v {
            assert_eq!(format::read_entry(&st.meta, i as u64).0, s, "image of {i}");
        }
    }
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(300))]

    #[test]
    fn index_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut st = fresh();
        let mut m = Model::new();
        for o in &ops {
            apply(&mut st, &mut m, o);
            check(&st, &m);
        }
    }
}

#[test]
fn dirty_regions_are_listed_once_in_order() {
    let mut d = Dirty::default();
    for r in [5, 1, 5, 3, 1] {
        d.mark(r);
    }
    assert!(!d.is_empty());
    assert_eq!(d.take(), vec![1, 3, 5]);
    assert!(d.is_empty());
    d.mark(3);
    assert_eq!(d.take(), vec![3]);
}
