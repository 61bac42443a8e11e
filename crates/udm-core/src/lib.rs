//! udm-core: the device-mapper engine — target traits, table parsing and validation,
//! `MappedDevice` (the data plane) and `Registry` (the control plane, mirroring the dm ioctls).

pub mod args;
pub mod clock;
pub mod device;
pub mod error;
pub mod registry;
pub mod resolve;
pub mod stats;
pub mod table;
pub mod target;

pub use args::{split_args, ArgReader};
pub use device::{DevInfo, MappedDevice};
pub use error::DmError;
pub use registry::{DevSel, DeviceProvider, ProviderError, Registry, RegistryEvent, TargetStatus};
pub use resolve::DevHandle;
pub use table::{parse_table_text, Table, TableLine};
pub use target::{
    EventTrigger, MapResult, StatusType, Target, TargetCtx, TargetError, TargetFeatures,
    TargetType, TargetTypes,
};

/// The major number udm gives mapped devices (what the kernel's dm commonly gets).
pub const DM_MAJOR: u32 = 253;
