//! Loop devices for tests that hand image files to real tools (lvm2, kpartx): attached with
//! `losetup -f --show`, detached when the guard drops.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An attached loop device; detached on drop.
pub struct LoopDev {
    pub dev: PathBuf,
}

impl LoopDev {
    /// Attach `image` to a free loop device. None (with a SKIP line) when losetup or loop
    /// devices are unavailable; under `UDM_REQUIRE_TOOLS=1` that panics instead.
    pub fn attach(image: &Path) -> Option<LoopDev> {
        LoopDev::attach_with(image, &[])
    }

    /// As `attach`, with extra `losetup` options (e.g. `--sector-size 4096`).
    pub fn attach_with(image: &Path, opts: &[&str]) -> Option<LoopDev> {
        if !crate::require_tool("losetup") {
            return None;
        }
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .args(opts)
            .arg(image)
            .output()
            .expect("spawn losetup");
        if !out.status.success() {
            let msg = format!(
                "losetup {} failed: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            if std::env::var("UDM_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
                panic!("{msg} (UDM_REQUIRE_TOOLS=1)");
            }
            eprintln!("SKIP: {msg}");
            return None;
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Some(LoopDev { dev })
    }

    /// The device path as a string.
    pub fn path(&self) -> &str {
        self.dev.to_str().expect("loop device paths are UTF-8")
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}
