//! Verity images built in-process with udm-formats (data, tree, optional FEC) for the
//! `verity` target tests and the kernel differential test.

#![allow(dead_code)]

use super::common::{lines, sel};
use std::path::{Path, PathBuf};
use udm_core::StatusType;
use udm_formats::verity::fec::FecSource;
use udm_formats::verity::{BlockHasher, FecLayout, Geometry, HashAlg, HashType, ReedSolomon};
pub use udm_testkit::rng::pseudo;

/// A verity image made in-process: data file, hash file (no superblock, tree at block 0 or a
/// superblock-sized gap), optional FEC file.
pub struct Img {
    pub data: PathBuf,
    pub hash: PathBuf,
    pub fec: Option<(PathBuf, u64)>, // (file, fec_blocks)
    pub bs: u32,
    pub blocks: u64,
    pub hash_start: u64,
    pub root: String,
    pub content: Vec<u8>,
}

pub fn make(dir: &Path, bs: u32, blocks: u64, zero_blocks: &[u64], fec_roots: Option<u32>) -> Img {
    let mut content = pseudo((bs as u64 * blocks) as usize, blocks * 31 + bs as u64);
    for &z in zero_blocks {
        let o = (z * bs as u64) as usize;
        content[o..o + bs as usize].fill(0);
    }
    let hash_start = 1;
    let geo = Geometry::new(
        HashType::Normal,
        HashAlg::Sha256,
        bs,
        bs,
        blocks,
        hash_start,
    )
    .unwrap();
    let hasher = BlockHasher::new(HashAlg::Sha256, HashType::Normal, &[0xab, 0xcd]);
    let leaves: Vec<_> = content
        .chunks(bs as usize)
        .map(|c| hasher.digest(c))
        .collect();
    let (tree, root) = geo.build_from_leaves(&hasher, &leaves);
    let mut hash_img = vec![0u8; bs as usize]; // where a superblock would be
    hash_img.extend_from_slice(&tree);
    let data = dir.join("data.img");
    let hash = dir.join("hash.img");
    std::fs::write(&data, &content).unwrap();
    std::fs::write(&hash, &hash_img).unwrap();
    let fec = fec_roots.map(|roots| {
        let fec_blocks = blocks + geo.tree_blocks();
        let l = FecLayout::new(roots, bs, fec_blocks, blocks, hash_start).unwrap();
        let rs = ReedSolomon::new(roots as usize);
        let zero = vec![0u8; bs as usize];
        let mut out = vec![0u8; l.parity_bytes() as usize];
        let per = bs as usize * roots as usize;
        for n in 0..l.rounds {
            let blks: Vec<&[u8]> = l
                .round_blocks(n)
                .map(|vb| match l.source(vb) {
                    FecSource::Data(b) => &content[(b * bs as u64) as usize..][..bs as usize],
                    FecSource::Hash(h) => &hash_img[(h * bs as u64) as usize..][..bs as usize],
                    FecSource::Zero => &zero[..],
                })
                .collect();
            l.encode_round(&rs, &blks, &mut out[n as usize * per..][..per]);
        }
        let f = dir.join("fec.img");
        std::fs::write(&f, &out).unwrap();
        (f, fec_blocks)
    });
    Img {
        data,
        hash,
        fec,
        bs,
        blocks,
        hash_start,
        root: root.hex(),
        content,
    }
}

impl Img {
    pub fn table(&self, opts: &str) -> String {
        self.table_fec(opts, true)
    }

    /// The table line, with the FEC options only when `with_fec` (and the image has FEC).
    pub fn table_fec(&self, opts: &str, with_fec: bool) -> String {
        let sectors = self.blocks * self.bs as u64 / 512;
        let mut t = format!(
            "0 {sectors} verity 1 {} {} {} {} {} {} sha256 {} abcd",
            self.data.display(),
            self.hash.display(),
            self.bs,
            self.bs,
            self.blocks,
            self.hash_start,
            self.root
        );
        let mut words: Vec<String> = opts.split_whitespace().map(String::from).collect();
        if let (Some((f, n)), true) = (&self.fec, with_fec) {
            words.extend(
                format!(
                    "use_fec_from_device {} fec_roots 2 fec_blocks {n}",
                    f.display()
                )
                .split(' ')
                .map(String::from),
            );
        }
        if !words.is_empty() {
            t.push_str(&format!(" {} {}", words.len(), words.join(" ")));
        }
        t
    }
}

pub fn flip(path: &Path, off: u64, mask: u8) {
    let mut v = std::fs::read(path).unwrap();
    v[off as usize] ^= mask;
    std::fs::write(path, v).unwrap();
}

pub fn create_ro(
    reg: &udm_core::Registry,
    name: &str,
    table: &str,
) -> Result<(), udm_core::DmError> {
    reg.create(name, "")?;
    let r = reg
        .load(&sel(name), &lines(table), true)
        .and_then(|_| reg.resume(&sel(name)).map(|_| ()));
    if r.is_err() {
        let _ = reg.remove(&sel(name), false);
    }
    r
}

pub fn info(reg: &udm_core::Registry, name: &str) -> String {
    reg.status(&sel(name), false, StatusType::Info).unwrap().1[0]
        .params
        .clone()
}

/// Read every block; return the indices that fail.
pub fn failing_blocks(dev: &dyn udm_io::BlockDevice, bs: u32, blocks: u64) -> Vec<u64> {
    (0..blocks)
        .filter(|b| {
            udm_io::sync::read_at(dev, udm_io::Sectors(b * bs as u64 / 512), bs as usize).is_err()
        })
        .collect()
}
