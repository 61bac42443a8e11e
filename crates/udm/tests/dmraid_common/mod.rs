//! Helpers shared by the `udm dmraid` kernel tests: the data pattern md writes in the guest,
//! the guest's output files, and dmraid's text with the guest's disk names as the host's
//! image paths.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `len` bytes that differ in every sector and with every `salt`.
pub fn pattern(len: usize, salt: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32 / 512).wrapping_mul(2_654_435_761) ^ (i as u32) ^ salt) as u8)
        .collect()
}

/// A file the guest wrote.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// dmraid's text with each guest disk `/dev/<sds[i]>` replaced by `imgs[i]`.
pub fn mapped(text: &str, sds: &[&str], imgs: &[PathBuf]) -> String {
    let mut t = text.to_string();
    for (sd, img) in sds.iter().zip(imgs) {
        t = t.replace(&format!("/dev/{sd}"), img.to_str().unwrap());
    }
    t
}

/// The lines of `text`, sorted.
pub fn sorted(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(String::from).collect();
    v.sort();
    v
}

/// Copy each guest disk's serial (`<sd>.serial` in `share`) beside its image, where
/// `udm dmraid` looks for it.
pub fn serials(share: &Path, sds: &[&str], imgs: &[PathBuf]) {
    for (sd, img) in sds.iter().zip(imgs) {
        let serial = read(&share.join(format!("{sd}.serial")));
        std::fs::write(format!("{}.serial", img.display()), serial).unwrap();
    }
}

/// A temporary directory with a `share` folder for the guest and one 40 MiB image per guest
/// disk of `sds` (`<sd>.img`).
pub fn disks(sds: &[&str]) -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let imgs = sds
        .iter()
        .map(|sd| udm_testkit::image(dir.path(), &format!("{sd}.img"), 40 << 20))
        .collect();
    (dir, share, imgs)
}
