//! Opening the devices a table names: regular files and block devices (opened once, shared),
//! and other mapped devices (stacking), behind `DevHandle`s.

use crate::target::TargetError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use udm_io::{BlockDevice, DevId, FileDevice};

/// An open device used by a table. Dropping the last handle closes it (and, for a mapped
/// device, drops its open count).
pub struct DevHandle {
    pub id: DevId,
    pub dev: Arc<dyn BlockDevice>,
    /// The mapped device's name when this is a udm device (for `deps -o devname`, `ls --tree`).
    pub dm_name: Option<String>,
    _guard: Option<Box<dyn Send + Sync>>,
}

impl DevHandle {
    pub fn new(
        id: DevId,
        dev: Arc<dyn BlockDevice>,
        dm_name: Option<String>,
        guard: Option<Box<dyn Send + Sync>>,
    ) -> DevHandle {
        DevHandle {
            id,
            dev,
            dm_name,
            _guard: guard,
        }
    }
}

/// Turns a device argument into an open handle.
pub trait Resolver {
    fn resolve(&self, spec: &str, read_only: bool) -> Result<Arc<DevHandle>, TargetError>;
}

/// (st_dev, st_ino) of a file, or (0, rdev) of a block device.
type FileKey = (u64, u64);

/// Files and block devices opened by tables, shared by identity (st_dev, st_ino / rdev).
#[derive(Default)]
pub struct FileCache {
    open: Mutex<HashMap<FileKey, (Weak<FileDevice>, bool)>>,
}

impl FileCache {
    /// Open (or share) `path`. A read-write request upgrades a read-only shared handle.
    /// A file that grew or shrank since it was opened gets a fresh handle with the new size
    /// (the old tables keep theirs), as a resized block device shows its new capacity.
    pub fn open(&self, path: &Path, read_only: bool) -> std::io::Result<Arc<FileDevice>> {
        let key = FileDevice::identity(path)?;
        let now = std::fs::metadata(path)?;
        let mut g = self.open.lock();
        if let Some((w, ro)) = g.get(&key) {
            if let Some(d) = w.upgrade() {
                let same_size = !now.is_file() || d.size().0 == now.len() / 512;
                if (read_only || !*ro) && same_size {
                    return Ok(d);
                }
            }
        }
        let d = Arc::new(FileDevice::open(path, read_only)?);
        g.insert(key, (Arc::downgrade(&d), d.read_only()));
        g.retain(|_, (w, _)| w.strong_count() > 0);
        Ok(d)
    }
}

/// Parse `major:minor` exactly (decimal, nothing else).
pub fn parse_devno(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((crate::args::parse_num(a)?, crate::args::parse_num(b)?))
}
