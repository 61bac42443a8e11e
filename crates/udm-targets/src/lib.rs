//! udm-targets: the device-mapper targets, one module per target, and `register_builtin`.

pub mod cache;
pub mod clone;
pub mod crypt;
pub mod delay;
pub mod dust;
pub mod ebs;
pub mod era;
pub mod error;
pub mod flakey;
pub mod integrity;
pub mod kscan;
pub mod linear;
pub mod log_writes;
pub mod mirror;
pub mod multipath;
mod pieces;
pub mod raid;
pub mod snapshot;
pub mod striped;
pub mod switch;
pub mod thin;
pub mod unstriped;
pub mod verity;
pub mod writecache;
pub mod zero;

use std::sync::Arc;
use udm_core::{TargetType, TargetTypes};

/// Register every built-in target the way the kernel has them: error, linear and striped
/// in the core (dm-mod registers them at init, so `dmsetup targets` on a fresh 6.1 kernel
/// prints striped, linear, error), every other target as a module that registers its types
/// when a table first names one (the kernel's `request_module("dm-<type>")`).
pub fn register_builtin(types: &TargetTypes) {
    types.register(Arc::new(error::ErrorType));
    types.register(Arc::new(linear::LinearType));
    types.register(Arc::new(striped::StripedType));
    let module = |name: &str, t: Arc<dyn TargetType>| types.register_module(name, vec![t]);
    module("zero", Arc::new(zero::ZeroType));
    module("delay", Arc::new(delay::DelayType::new()));
    module("flakey", Arc::new(flakey::FlakeyType::new()));
    module("dust", Arc::new(dust::DustType));
    module("log-writes", Arc::new(log_writes::LogWritesType));
    module("unstripe", Arc::new(unstriped::UnstripedType));
    module("switch", Arc::new(switch::SwitchType));
    module("ebs", Arc::new(ebs::EbsType));
    module("verity", Arc::new(verity::VerityType));
    module("crypt", Arc::new(crypt::CryptType));
    types.register_module(
        "snapshot",
        vec![
            Arc::new(snapshot::SnapshotType),
            Arc::new(snapshot::OriginType),
            Arc::new(snapshot::MergeType),
        ],
    );
    // dm-thin-pool registers `thin` then `thin-pool`, so `targets` lists the pool first.
    types.register_module(
        "thin-pool",
        vec![
            Arc::new(thin::ThinType),
            Arc::new(thin::ThinPoolType::default()),
        ],
    );
    module("cache", Arc::new(cache::CacheType));
    module("era", Arc::new(era::EraType));
    module("clone", Arc::new(clone::CloneType));
    module("mirror", Arc::new(mirror::MirrorType));
    module("multipath", Arc::new(multipath::MultipathType));
    module("writecache", Arc::new(writecache::WritecacheType));
    module("raid", Arc::new(raid::RaidType));
    module("integrity", Arc::new(integrity::IntegrityType));
}

/// A `TargetTypes` with every built-in target registered.
pub fn builtin() -> TargetTypes {
    let t = TargetTypes::new();
    register_builtin(&t);
    t
}
