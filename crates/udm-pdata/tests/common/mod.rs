//! Shared by udm-pdata's tests: a model of thin metadata (devices → mappings) driven by
//! the same operations as [`ThinMetadata`], the fixed, printed proptest seed, pool and
//! mapping helpers, and a scratch superblock for tests of single structures (btrees,
//! arrays, space maps) that commits their roots and checks their reference counts.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use std::collections::BTreeMap;
use std::sync::Arc;
use udm_pdata::block_manager::BlockManager;
use udm_pdata::check::{check_thin, compare, Leaves, RefWalker};
use udm_pdata::io::{MemIo, MetaIo};
use udm_pdata::space_map::{SmRoot, SM_ROOT_SIZE};
use udm_pdata::thin::{ThinMetadata, ThinSuperblock};
use udm_pdata::tm::{TransactionManager, SUPERBLOCK};

/// Devices → (virtual block → data block).
pub type Devs = BTreeMap<u64, BTreeMap<u64, u64>>;

/// The proptest config: `udm_testkit::prop`'s printed seed (`UDM_PROPTEST_SEED`
/// overrides it), with failures kept in a `proptest-regressions` file beside each test.
pub fn config(cases: u32) -> Config {
    Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..udm_testkit::prop::config(cases)
    }
}

/// Map each of `vblocks` of `dev` to a freshly allocated data block; returns the new
/// mappings.
pub fn fill(
    md: &mut ThinMetadata,
    dev: u64,
    vblocks: impl IntoIterator<Item = u64>,
) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for v in vblocks {
        let b = md.alloc_data_block().unwrap();
        md.insert(dev, v, b).unwrap();
        m.insert(v, b);
    }
    m
}

/// Device `dev`'s mappings as udm reads them (vblock → data block).
pub fn mappings(md: &mut ThinMetadata, dev: u64) -> BTreeMap<u64, u64> {
    md.mappings(dev)
        .unwrap()
        .into_iter()
        .map(|(v, b, _)| (v, b))
        .collect()
}

/// Every device's mappings as udm reads them.
pub fn devices(md: &mut ThinMetadata) -> Devs {
    let mut devs = Devs::new();
    for (d, _) in md.devices().unwrap() {
        devs.insert(d, mappings(md, d));
    }
    devs
}

/// The number in attribute `name` of one line of a tool's XML dump.
pub fn attr(line: &str, name: &str) -> Option<u64> {
    let pat = format!(" {name}=\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    line[start..end].parse().ok()
}

/// A value of `vs` bytes made from `v` (its little-endian bytes, repeated).
pub fn value(v: u64, vs: u32) -> Vec<u8> {
    v.to_le_bytes()
        .iter()
        .cycle()
        .take(vs as usize)
        .copied()
        .collect()
}

/// Commit with a scratch superblock holding the metadata space map, `data_sm_root`, two
/// tree roots (as the mapping and details roots) and `tag` (as `incompat_flags`).
pub fn commit_scratch(
    tm: &mut TransactionManager,
    data_sm_root: [u8; SM_ROOT_SIZE],
    roots: [u64; 2],
    tag: u32,
) {
    let meta = tm.pre_commit().unwrap();
    let sb = ThinSuperblock {
        flags: 0,
        uuid: [0; 16],
        version: 2,
        time: 0,
        trans_id: 0,
        metadata_snap: 0,
        data_sm_root,
        metadata_sm_root: meta.pack(),
        data_mapping_root: roots[0],
        device_details_root: roots[1],
        data_block_size: 128,
        metadata_block_size: 8,
        metadata_nr_blocks: meta.nr_blocks,
        compat_flags: 0,
        compat_ro_flags: 0,
        incompat_flags: tag,
    };
    tm.commit(sb.encode()).unwrap();
}

/// Reopen what [`commit_scratch`] committed: the transaction manager and the superblock.
pub fn reopen_scratch(io: &MemIo) -> (TransactionManager, ThinSuperblock) {
    let sb = ThinSuperblock::decode(&io.block(SUPERBLOCK), SUPERBLOCK).unwrap();
    let tm = TransactionManager::open(Arc::new(io.clone()), &sb.metadata_sm_root).unwrap();
    (tm, sb)
}

/// Walk the trees at `roots` (their leaves hold `leaves`) and the metadata space map at
/// `sm_root` from disk, counting the superblock too; the counts must agree.
pub fn check_counts(io: Arc<dyn MetaIo>, sm_root: &[u8], roots: &[u64], leaves: &Leaves) {
    let mut bm = BlockManager::new(io, 256);
    let mut w = RefWalker::default();
    w.meta_ref(SUPERBLOCK);
    let sm = w
        .metadata_sm(&mut bm, &SmRoot::unpack(sm_root).unwrap())
        .unwrap();
    for &root in roots {
        w.tree(&mut bm, root, leaves).unwrap();
    }
    let problems = compare("metadata", &w.meta, &sm);
    assert!(problems.is_empty(), "{problems:?}");
}

/// [`check_counts`] for both trees of the scratch superblock on `io`.
pub fn check_scratch_counts(io: &MemIo, leaves: &Leaves) {
    let sb = ThinSuperblock::decode(&io.block(SUPERBLOCK), SUPERBLOCK).unwrap();
    let roots = [sb.data_mapping_root, sb.device_details_root];
    check_counts(Arc::new(io.clone()), &sb.metadata_sm_root, &roots, leaves);
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
    pub devs: Devs,
    /// The devices as the held metadata snapshot saw them.
    pub held: Option<Devs>,
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
                    m.extend(fill(md, d, s..s + n));
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
    pub fn read_held(md: &mut ThinMetadata) -> Option<Devs> {
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

    /// udm's checker passes on `io`, and the metadata reopened from it holds exactly the
    /// model; returns the reopened metadata.
    pub fn verify_reopened(&self, io: &MemIo) -> ThinMetadata {
        check_thin(Arc::new(io.clone())).unwrap();
        let mut md = ThinMetadata::open(Arc::new(io.clone())).unwrap();
        self.verify(&mut md);
        md
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
            let got = mappings(md, d);
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

/// Damage live (checksummed) blocks of `io` but keep their checksums valid, so the
/// structural checks are what must catch it: each `(pick, offset, mask)` XORs `mask` into
/// byte `offset` (past the checksum) of live block `pick` (modulo their number).
pub fn damage_resealed(io: &MemIo, hits: &[(usize, usize, u8)]) {
    use udm_pdata::checksum::{identify, seal, BlockKind};
    let live: Vec<(u64, BlockKind)> = (0..io.nr_blocks())
        .filter_map(|b| identify(&io.block(b)).map(|k| (b, k)))
        .collect();
    for &(pick, off, mask) in hits {
        let (b, kind) = live[pick % live.len()];
        io.corrupt(b, off.max(4), mask);
        let mut buf = *io.block(b);
        seal(&mut buf, kind);
        let cur = io.block(b);
        for (i, (x, y)) in cur[..4].iter().zip(&buf[..4]).enumerate() {
            if x != y {
                io.corrupt(b, i, x ^ y);
            }
        }
    }
}
