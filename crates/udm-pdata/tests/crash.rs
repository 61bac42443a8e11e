//! Random crashes between and during commits: the in-memory device drops every write
//! after a random crash point, and of the writes not yet flushed keeps none, all, or a
//! random subset. Reopening must give exactly the last committed state (or, when the
//! crash hit a commit after its superblock write was issued, that commit's state), with
//! both space maps consistent, and the recovered pool must take new commits.

mod common;

use common::{devices, op, Model, Op};
use proptest::prelude::*;
use std::sync::Arc;
use udm_pdata::check::check_thin;
use udm_pdata::io::{CrashKeep, MemIo};
use udm_pdata::thin::ThinMetadata;

fn keep() -> impl Strategy<Value = CrashKeep> {
    prop_oneof![
        Just(CrashKeep::Nothing),
        Just(CrashKeep::Everything),
        any::<u64>().prop_map(CrashKeep::Random),
    ]
}

proptest! {
    #![proptest_config(common::config(96))]
    #[test]
    fn reopen_after_crash_gives_last_commit(
        ops in prop::collection::vec(op(), 1..30),
        crash_at in 0u64..160,
        keep in keep(),
        cache in prop_oneof![Just(16usize), Just(4096)],
    ) {
        let io = MemIo::new(4096);
        let mut md = ThinMetadata::format(Arc::new(io.clone()), 128, 40_000).unwrap();
        // A small cache writes uncommitted blocks out early, before their commit.
        md.tm().bm().set_capacity(cache).unwrap();
        io.crash_after(crash_at);
        let mut model = Model::default();
        let mut committed = model.clone();
        let mut in_flight: Option<Model> = None;
        for o in ops.iter().chain(std::iter::once(&Op::Commit)) {
            if io.crashed() {
                break;
            }
            if model.apply(&mut md, o) {
                if io.crashed() {
                    in_flight = Some(model.clone());
                } else {
                    committed = model.clone();
                }
            }
        }
        drop(md);
        let image = io.crash_image(keep);
        check_thin(Arc::new(image.clone())).unwrap();
        let mut md = ThinMetadata::open(Arc::new(image.clone())).unwrap();
        let mut state = Model { devs: devices(&mut md), held: Model::read_held(&mut md) };
        let same = |m: &Model| m.devs == state.devs && m.held.is_some() == state.held.is_some();
        let ok = same(&committed) || (keep != CrashKeep::Nothing && in_flight.as_ref().is_some_and(same));
        prop_assert!(ok, "reopened state is neither the last commit nor the in-flight one");
        state.verify(&mut md);
        // The recovered pool keeps working.
        for o in [Op::Create(9), Op::Insert(9, 0, 300), Op::Commit] {
            state.apply(&mut md, &o);
        }
        state.verify_reopened(&image);
    }
}

/// Nothing reachable from the committed superblock is overwritten before the next
/// superblock: with every write since the last flush dropped, the old state is intact
/// even though a whole new transaction's blocks were written.
#[test]
fn uncommitted_writes_never_touch_committed_blocks() {
    let io = MemIo::new(4096);
    let mut md = ThinMetadata::format(Arc::new(io.clone()), 128, 40_000).unwrap();
    let mut model = Model::default();
    for o in [Op::Create(1), Op::Insert(1, 0, 2000), Op::Commit] {
        model.apply(&mut md, &o);
    }
    // A second transaction rewrites most of the tree; its commit loses the superblock.
    for o in [
        Op::Remove(1, 0, 2000, 2),
        Op::Insert(1, 5000, 500),
        Op::Snap(2, 1),
    ] {
        model.apply(&mut md, &o);
    }
    io.crash_on_write(0);
    md.commit().unwrap();
    assert!(io.crashed(), "the superblock write should have been cut");
    // Phase one reached the disk (it was flushed); only the superblock is missing.
    let image = io.crash_image(CrashKeep::Everything);
    check_thin(Arc::new(image.clone())).unwrap();
    let mut md = ThinMetadata::open(Arc::new(image)).unwrap();
    let got: Vec<_> = md.mappings(1).unwrap();
    assert_eq!(got.len(), 2000);
    assert!(md.details(2).unwrap().is_none());
    let mut first = Model::default();
    first
        .devs
        .insert(1, got.iter().map(|&(v, b, _)| (v, b)).collect());
    assert!(first.devs[&1].keys().copied().eq(0..2000));
}
