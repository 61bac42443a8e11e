//! udm-targets: the device-mapper targets, one module per target, and `register_builtin`.

pub mod crypt;
pub mod delay;
pub mod dust;
pub mod ebs;
pub mod error;
pub mod flakey;
pub mod kscan;
pub mod linear;
pub mod log_writes;
pub mod striped;
pub mod switch;
pub mod unstriped;
pub mod verity;
pub mod zero;

use std::sync::Arc;
use udm_core::TargetTypes;

/// Register every built-in target. Registration order is the reverse of `dmsetup targets`
/// order (the kernel lists the most recently registered first).
pub fn register_builtin(types: &TargetTypes) {
    // The kernel registers error, linear, striped at init, then module targets as they load;
    // `dmsetup targets` on 6.1 with dm-zero loaded prints zero, striped, linear, error.
    types.register(Arc::new(error::ErrorType));
    types.register(Arc::new(linear::LinearType));
    types.register(Arc::new(striped::StripedType));
    types.register(Arc::new(zero::ZeroType));
    // Fault-injection and test targets (modules in the kernel), in the order
    // `modprobe -a dm-delay dm-flakey dm-dust dm-log-writes dm-unstripe dm-switch dm-ebs`
    // registers them (so `dmsetup targets` lists ebs first).
    types.register(Arc::new(delay::DelayType::new()));
    types.register(Arc::new(flakey::FlakeyType::new()));
    types.register(Arc::new(dust::DustType));
    types.register(Arc::new(log_writes::LogWritesType));
    types.register(Arc::new(unstriped::UnstripedType));
    types.register(Arc::new(switch::SwitchType));
    types.register(Arc::new(ebs::EbsType));
    types.register(Arc::new(verity::VerityType));
    types.register(Arc::new(crypt::CryptType));
}

/// A `TargetTypes` with every built-in target registered.
pub fn builtin() -> TargetTypes {
    let t = TargetTypes::new();
    register_builtin(&t);
    t
}
