//! The device descriptions that travel in requests and replies: how a request names a device,
//! what `info` reports, a table's dependencies and status lines. The daemon converts its
//! engine's types to these; their serde form is the wire format.

use serde::{Deserialize, Serialize};

/// How a request names a device (the kernel's lookup precedence: uuid, then name, then dev).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DevSel {
    Name(String),
    Uuid(String),
    Dev(u32, u32),
}

/// What `info` reports about a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevInfo {
    pub name: String,
    pub uuid: String,
    pub major: u32,
    pub minor: u32,
    pub open_count: i32,
    pub event_nr: u32,
    pub suspended: bool,
    pub read_only: bool,
    pub live_table: bool,
    pub inactive_table: bool,
    pub target_count: u32,
    pub deferred_remove: bool,
    /// Resumed at least once (a device node exists, even without a table).
    #[serde(default)]
    pub resumed: bool,
}

/// A device used by a table, as `deps` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dep {
    /// `major:minor` or a path.
    pub id: String,
    /// Device number when it has one.
    pub devno: Option<(u32, u32)>,
    /// Name of the mapped device when it is one.
    pub dm_name: Option<String>,
}

/// One target's status (or table) line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub start: u64,
    pub len: u64,
    pub ttype: String,
    pub params: String,
}
