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
    // Module targets first (they print first), then the core ones, as a fresh kernel lists them.
    types.register(Arc::new(zero::ZeroType));
    types.register(Arc::new(striped::StripedType));
    types.register(Arc::new(linear::LinearType));
    types.register(Arc::new(error::ErrorType));
}

/// A `TargetTypes` with every built-in target registered.
pub fn builtin() -> TargetTypes {
    let t = TargetTypes::new();
    register_builtin(&t);
    t
}
