//! udm-targets: the device-mapper targets, one module per target, and `register_builtin`.

pub mod error;
pub mod linear;
pub mod striped;
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
}

/// A `TargetTypes` with every built-in target registered.
pub fn builtin() -> TargetTypes {
    let t = TargetTypes::new();
    register_builtin(&t);
    t
}
