//! The snapshot module (the kernel's dm-snapshot): `snapshot`, `snapshot-origin` and
//! `snapshot-merge`, registered in that order as one module.
//!
//! Snapshots and origins find each other through an `OriginHub` published under the origin
//! device's id (the kernel's origin hash): whoever is constructed first makes it, the others
//! join it. Each snapshot's shared state (`SnapShared`) is also published under that key, so
//! a reloaded snapshot or a merge takes over the live store of the same COW device instead of
//! re-reading it (the kernel's handover).

mod commit;
mod copyout;
pub mod cow;
mod hold;
mod merge;
mod origin;
mod snap;

pub use cow::{DiskHeader, Store, StoreError, StoreKind};
pub use merge::MergeType;
pub use origin::OriginType;
pub use snap::SnapshotType;

use std::fmt;
use std::str::FromStr;
use udm_core::{ArgReader, Escaped, TargetError};

/// `snapshot` / `snapshot-merge` table parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotParams {
    pub origin: String,
    pub cow: String,
    pub kind: StoreKind,
    /// Sectors; 0 takes the chunk size from an existing header.
    pub chunk: u64,
    pub discard_zeroes_cow: bool,
    pub discard_passdown_origin: bool,
}

impl SnapshotParams {
    pub fn from_args(args: &[String]) -> Result<Self, TargetError> {
        if args.len() < 4 {
            return Err(TargetError::invalid("requires 4 or more arguments"));
        }
        let mut r = ArgReader::new(args);
        let origin = r.next("requires 4 or more arguments")?.to_string();
        let cow = r.next("requires 4 or more arguments")?.to_string();
        let ty = r.next("requires 4 or more arguments")?;
        let kind = match ty.to_ascii_uppercase().as_str() {
            "P" => StoreKind::Persistent { overflow: false },
            "PO" => StoreKind::Persistent { overflow: true },
            "N" => StoreKind::Transient,
            t if t.starts_with('P') => {
                return Err(TargetError::invalid("Unsupported persistent store option"))
            }
            _ => return Err(TargetError::invalid("Exception store type is not P or N")),
        };
        let chunk: u64 = r.num("Invalid chunk size")?;
        if chunk != 0 && !chunk.is_power_of_two() {
            return Err(TargetError::invalid("Chunk size is not a power of 2"));
        }
        if chunk > (i32::MAX as u64 >> 9) {
            return Err(TargetError::invalid("Chunk size is too high"));
        }
        let mut p = SnapshotParams {
            origin,
            cow,
            kind,
            chunk,
            discard_zeroes_cow: false,
            discard_passdown_origin: false,
        };
        if r.remaining() > 0 {
            let n: usize = r.num("Invalid number of feature arguments")?;
            if n > 2 || n > r.remaining() {
                return Err(TargetError::invalid("Invalid number of feature arguments"));
            }
            for _ in 0..n {
                match r.next("Invalid number of feature arguments")? {
                    "discard_zeroes_cow" => p.discard_zeroes_cow = true,
                    "discard_passdown_origin" => p.discard_passdown_origin = true,
                    _ => return Err(TargetError::invalid("Unrecognised feature requested")),
                }
            }
            if r.remaining() > 0 {
                return Err(TargetError::invalid("Invalid number of feature arguments"));
            }
            if p.discard_passdown_origin && !p.discard_zeroes_cow {
                return Err(TargetError::invalid(
                    "discard_passdown_origin feature depends on discard_zeroes_cow",
                ));
            }
        }
        Ok(p)
    }
}

impl FromStr for SnapshotParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        SnapshotParams::from_args(&udm_core::split_args(s))
    }
}

impl fmt::Display for SnapshotParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            Escaped(&self.origin),
            Escaped(&self.cow),
            self.kind.code(),
            self.chunk
        )?;
        let n = self.discard_zeroes_cow as u32 + self.discard_passdown_origin as u32;
        if n > 0 {
            write!(f, " {n}")?;
            if self.discard_zeroes_cow {
                f.write_str(" discard_zeroes_cow")?;
            }
            if self.discard_passdown_origin {
                f.write_str(" discard_passdown_origin")?;
            }
        }
        Ok(())
    }
}

/// `snapshot-origin <origin>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginParams {
    pub origin: String,
}

impl FromStr for OriginParams {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        let a = udm_core::split_args(s);
        if a.len() != 1 {
            return Err(TargetError::invalid(
                "origin: incorrect number of arguments",
            ));
        }
        Ok(OriginParams {
            origin: a[0].clone(),
        })
    }
}

impl fmt::Display for OriginParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Escaped(&self.origin))
    }
}
