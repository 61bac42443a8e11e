//! Helpers shared by udm-io's integration tests (a module of each test crate: these tests
//! cannot use udm-testkit, which links its own copy of udm-io).

use udm_io::FileDevice;

/// A fresh file of `size` zero bytes in a temporary directory, opened as a device; the
/// directory lives as long as the returned guard.
pub fn zero_file_device(
    size: usize,
    read_only: bool,
) -> (tempfile::TempDir, std::path::PathBuf, FileDevice) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; size]).unwrap();
    let dev = FileDevice::open(&path, read_only).unwrap();
    (dir, path, dev)
}
