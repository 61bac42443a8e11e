//! Thin metadata (nested btrees, snapshots, both space maps) against a `BTreeMap` model:
//! after every commit the space maps agree with a full walk, and a reopen from the device
//! reads back exactly the model.

mod common;

use common::{op, Model};
use proptest::prelude::*;
use std::sync::Arc;
use udm_pdata::check::check_thin;
use udm_pdata::io::MemIo;
use udm_pdata::thin::ThinMetadata;

proptest! {
    #![proptest_config(common::config(48))]
    #[test]
    fn thin_metadata_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let io = MemIo::new(4096);
        let mut md = ThinMetadata::format(Arc::new(io.clone()), 128, 40_000).unwrap();
        let mut model = Model::default();
        for o in &ops {
            if model.apply(&mut md, o) {
                md = model.verify_reopened(&io);
            }
        }
        model.verify(&mut md);
        md.commit().unwrap();
        let report = check_thin(Arc::new(io.clone())).unwrap();
        prop_assert_eq!(report.devices, model.devs.len());
        model.verify_reopened(&io);
    }
}

/// A remove that empties leaves and merges nodes, then a reinsert: the tree shrinks back
/// and stays consistent.
#[test]
fn fill_then_drain_one_device() {
    let io = MemIo::new(4096);
    let mut md = ThinMetadata::format(Arc::new(io.clone()), 128, 100_000).unwrap();
    md.create_thin(7).unwrap();
    common::fill(&mut md, 7, 0..20_000);
    md.commit().unwrap();
    let full = check_thin(Arc::new(io.clone())).unwrap();
    assert_eq!(full.data_used, 20_000);
    for v in (0..20_000).rev() {
        assert!(md.remove(7, v).unwrap());
    }
    md.commit().unwrap();
    let empty = check_thin(Arc::new(io.clone())).unwrap();
    assert_eq!(empty.data_used, 0);
    assert!(
        empty.metadata_used < full.metadata_used / 4,
        "{empty:?} vs {full:?}"
    );
    assert!(md.mappings(7).unwrap().is_empty());
}

/// Regression (found by the crash test): with a metadata snapshot held, the top level of
/// the mapping tree is shared, so adding a device must copy it with a reference to every
/// subtree; and a release then reserve cycle keeps counts exact at every commit.
#[test]
fn metadata_snapshot_cycles_keep_counts() {
    let io = MemIo::new(4096);
    let mut md = ThinMetadata::format(Arc::new(io.clone()), 128, 40_000).unwrap();
    let mut model = Model::default();
    use common::Op::*;
    for o in [
        MetaSnap,
        MetaSnap,
        Create(0),
        MetaSnap,
        Create(9),
        Insert(9, 0, 300),
        Insert(0, 0, 300),
    ] {
        model.apply(&mut md, &o);
        md.commit().unwrap();
        check_thin(Arc::new(io.clone())).unwrap_or_else(|e| panic!("after {o:?}: {e}"));
        model.verify(&mut md);
    }
    model.verify_reopened(&io);
}
