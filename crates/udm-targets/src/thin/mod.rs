//! `thin-pool` and `thin` (dm-thin, target version 1.23.0): thin provisioning over a pool
//! whose metadata is the kernel's on-disk format (`udm_pdata::thin`), so a pool moves
//! between the kernel and udm in both directions.
//!
//! - [`params`]: the two table lines;
//! - [`pool`]: the pool object shared by the pool table (and its reloads) and its thin
//!   devices, with the metadata behind a lock and the pool's own worker;
//! - [`pool_target`]: the `thin-pool` target (constructor, messages, status, resize);
//! - [`thin`]: the `thin` target; `io`: its bios on the pool's worker; `batch`: the
//!   worker's queue, provisioning whole-block writes side by side;
//! - [`status`]: the kernel's status lines.

mod batch;
mod io;
pub mod metaio;
pub mod params;
pub mod pool;
pub mod pool_target;
pub mod status;
#[allow(clippy::module_inception)]
pub mod thin;

pub use params::{PoolFeatures, PoolParams, ThinParams};
pub use pool::{Pool, PoolMode};

use std::time::Duration;
use udm_core::{Target, TargetCtx, TargetError, TargetFeatures, TargetType};

/// The kernel's default `no_space_timeout` (seconds a full pool queues I/O).
pub const NO_SPACE_TIMEOUT: Duration = Duration::from_secs(60);

/// dm-thin's version in kernel 6.1.
pub const VERSION: [u32; 3] = [1, 22, 0];

/// The `thin-pool` target type.
pub struct ThinPoolType {
    /// How long a pool out of data space queues bios before failing them.
    pub no_space_timeout: Duration,
}

impl Default for ThinPoolType {
    fn default() -> ThinPoolType {
        ThinPoolType {
            no_space_timeout: NO_SPACE_TIMEOUT,
        }
    }
}

impl TargetType for ThinPoolType {
    fn name(&self) -> &'static str {
        "thin-pool"
    }
    fn version(&self) -> [u32; 3] {
        VERSION
    }
    fn features(&self) -> TargetFeatures {
        TargetFeatures {
            singleton: true,
            immutable: true,
            always_writeable: true,
        }
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        pool_target::construct(ctx, args, self.no_space_timeout)
    }
}

/// The `thin` target type.
pub struct ThinType;

impl TargetType for ThinType {
    fn name(&self) -> &'static str {
        "thin"
    }
    fn version(&self) -> [u32; 3] {
        VERSION
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        thin::construct(ctx, args)
    }
}
