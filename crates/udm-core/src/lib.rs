//! udm-core: the device-mapper engine — target traits, table parsing and validation,
//! `MappedDevice` (the data plane) and `Registry` (the control plane, mirroring the dm ioctls).

pub mod args;
pub mod clock;
pub mod copier;
pub mod device;
pub mod error;
pub mod klog;
pub mod lookup;
pub mod registry;
pub mod resolve;
pub mod stats;
pub mod table;
pub mod target;
pub mod worker;

pub use args::{escape_arg, split_args, ArgReader, Escaped};
pub use copier::{Copier, CopyOutcome, Loc};
pub use device::{DevInfo, MappedDevice, SuspendOpts};
pub use error::DmError;
pub use lookup::{Publication, Published};
pub use registry::{DevSel, DeviceProvider, ProviderError, Registry, RegistryEvent, TargetStatus};
pub use resolve::DevHandle;
pub use table::{parse_table_text, Table, TableLine};
pub use target::{
    DeviceLink, DeviceState, EventTrigger, MapResult, Requeuer, StatusFlags, StatusType, Target,
    TargetCtx, TargetError, TargetFeatures, TargetType, TargetTypes,
};
pub use worker::Worker;

/// The major number udm gives mapped devices (what the kernel's dm commonly gets).
pub const DM_MAJOR: u32 = 253;
