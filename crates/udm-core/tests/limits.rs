//! Limits stack through tables as the kernel's `blk_stack_limits` does; flushes and discards
//! fan out to targets as many times as they ask; status flags reach every target.

use parking_lot::Mutex;
use std::sync::Arc;
use udm_core::{
    MapResult, Registry, StatusFlags, StatusType, Target, TargetCtx, TargetError, TargetType,
    TargetTypes,
};
use udm_io::{sync, Bio, Limits, MemDevice, Op, Sectors};
use udm_testkit::gate::{GateDevice, Limited, RemapType};
use udm_testkit::registry::{create, sel};

#[test]
fn stack_follows_blk_stack_limits() {
    let a = Limits {
        logical_block_size: 512,
        physical_block_size: 4096,
        io_min: 4096,
        io_opt: 3 * 65536,
        max_sectors: Sectors(2048),
        discard_granularity: 4096,
        max_discard_sectors: Sectors(0),
    };
    let b = Limits {
        logical_block_size: 4096,
        physical_block_size: 4096,
        io_min: 8192,
        io_opt: 2 * 65536,
        max_sectors: Sectors(256),
        discard_granularity: 65536,
        max_discard_sectors: Sectors(1024),
    };
    let mut t = Limits::stacking();
    t.stack(&a);
    t.stack(&b);
    assert_eq!(
        t,
        Limits {
            logical_block_size: 4096,
            physical_block_size: 4096,
            io_min: 8192,
            io_opt: 6 * 65536,
            max_sectors: Sectors(256),
            discard_granularity: 65536,
            max_discard_sectors: Sectors(1024),
        }
    );
    assert_eq!(udm_io::lcm_not_zero(0, 7), 7);
    assert_eq!(udm_io::min_not_zero(Sectors(0), Sectors(0)), Sectors(0));
}

#[test]
fn table_limits_stack_over_targets_and_split_discards() {
    let types = TargetTypes::new();
    let remap = RemapType::new();
    types.register(Arc::new(remap.clone()));
    let reg = Registry::new(types);
    let lim = |io_opt, maxd| Limits {
        io_opt,
        max_discard_sectors: Sectors(maxd),
        discard_granularity: 4096,
        ..Limits::default()
    };
    let gate = GateDevice::new(Arc::new(Limited(
        MemDevice::new("a", Sectors(64)),
        lim(4 * 4096, 8),
    )));
    gate.open();
    remap.insert("a", gate.clone());
    remap.insert(
        "b",
        Arc::new(Limited(MemDevice::new("b", Sectors(64)), lim(6 * 4096, 0))),
    );
    create(&reg, "d", "0 64 testdev a\n64 64 testdev b").unwrap();
    let (dev, _g) = reg.open(&sel("d")).unwrap();
    let l = dev.limits();
    assert_eq!((l.io_opt, l.max_discard_sectors), (12 * 4096, Sectors(8)));
    assert_eq!(l.discard_granularity, 4096);
    // A discard longer than the smallest max discard reaches the device in aligned pieces.
    sync::discard(dev.as_ref(), Sectors(3), Sectors(20)).unwrap();
    let seen: Vec<_> = gate
        .log()
        .iter()
        .filter(|r| r.op == Op::Discard)
        .map(|r| (r.sector.0, r.len.0))
        .collect();
    assert_eq!(seen, vec![(3, 5), (8, 8), (16, 7)]);
}

/// (op, target_bio_nr, sector, len) of each bio a `fan` target saw.
type Seen = Arc<Mutex<Vec<(Op, u32, u64, u64)>>>;

/// Records the flushes and discards it receives and which copy each was.
struct FanType;
struct Fan {
    flushes: u32,
    discards: u32,
    seen: Seen,
}

static SEEN: std::sync::OnceLock<Seen> = std::sync::OnceLock::new();

impl Target for Fan {
    fn map(&self, bio: Bio) -> MapResult {
        self.seen
            .lock()
            .push((bio.op, bio.target_bio_nr(), bio.sector.0, bio.len().0));
        bio.complete(Ok(()));
        MapResult::Submitted
    }
    fn num_flush_bios(&self) -> u32 {
        self.flushes
    }
    fn num_discard_bios(&self) -> u32 {
        self.discards
    }
    fn status(&self, _ty: StatusType, flags: StatusFlags) -> String {
        format!("noflush={}", flags.noflush)
    }
}

impl TargetType for FanType {
    fn name(&self) -> &'static str {
        "fan"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        _ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(Fan {
            flushes: args[0].parse().unwrap(),
            discards: args[1].parse().unwrap(),
            seen: SEEN.get_or_init(Default::default).clone(),
        }))
    }
}

/// A registry with the `fan` type and device `name` made from `table`.
fn fans(name: &str, table: &str) -> Registry {
    let types = TargetTypes::new();
    types.register(Arc::new(FanType));
    let reg = Registry::new(types);
    create(&reg, name, table).unwrap();
    reg
}

#[test]
fn flush_and_discard_fan_out_as_targets_ask() {
    let reg = fans("d", "0 8 fan 3 2\n8 8 fan 0 0");
    let (dev, _g) = reg.open(&sel("d")).unwrap();
    let seen = SEEN.get_or_init(Default::default).clone();
    sync::flush(dev.as_ref()).unwrap();
    assert_eq!(
        *seen.lock(),
        vec![
            (Op::Flush, 0, 0, 0),
            (Op::Flush, 1, 0, 0),
            (Op::Flush, 2, 0, 0)
        ]
    );
    seen.lock().clear();
    sync::discard(dev.as_ref(), Sectors(2), Sectors(4)).unwrap();
    assert_eq!(
        *seen.lock(),
        vec![(Op::Discard, 0, 2, 4), (Op::Discard, 1, 2, 4)]
    );
    // A target that takes no discards fails them.
    assert_eq!(
        sync::discard(dev.as_ref(), Sectors(8), Sectors(4)),
        Err(udm_io::IoError::NotSupported)
    );
}

#[test]
fn status_flags_reach_every_target() {
    let reg = fans("s", "0 8 fan 1 1\n8 8 fan 1 1");
    let params = |flags| {
        reg.status_with(&sel("s"), false, StatusType::Info, flags)
            .unwrap()
            .1
            .into_iter()
            .map(|t| t.params)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        params(StatusFlags::NOFLUSH),
        ["noflush=true", "noflush=true"]
    );
    assert_eq!(
        params(StatusFlags::NONE),
        ["noflush=false", "noflush=false"]
    );
}
