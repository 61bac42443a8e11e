//! The `BlockDevice` conformance suite (udm-testkit) against mapped devices: a two-segment
//! linear table (I/O split at the target boundary), the same read-only, and a crypt table
//! with 4096-byte sectors (the suite then works in whole 4 KiB blocks).

mod common;

use common::{create_with, registry, sel};
use udm_io::{PatternDevice, Sectors};
use udm_testkit::conformance::{run, zeroes, Spec};

const SIZE: u64 = 65536;

/// `dmsetup create [--readonly]` and open the device.
fn mapped(
    reg: &udm_core::Registry,
    name: &str,
    table: &str,
    read_only: bool,
) -> (
    std::sync::Arc<dyn udm_io::BlockDevice>,
    udm_core::registry::OpenGuard,
) {
    create_with(reg, name, table, read_only).unwrap();
    reg.open(&sel(name)).unwrap()
}

#[test]
fn linear_mapped_device_conforms() {
    let dir = tempfile::tempdir().unwrap();
    // Two segments, swapped: the device's first half is the file's second half.
    let img = udm_testkit::image(dir.path(), "a.img", SIZE * 512 + (1 << 20));
    let half = SIZE / 2;
    let p = img.display();
    let table = format!(
        "0 {half} linear {p} {}\n{half} {half} linear {p} 2048\n",
        half + 2048
    );
    let reg = registry();
    let (dev, _g) = mapped(&reg, "lin", &table, false);
    let spec = Spec {
        content: Some(zeroes),
        discard_zeroes: true,
        ..Spec::writable(Sectors(SIZE))
    };
    run("linear", &*dev, &spec);
}

#[test]
fn read_only_mapped_device_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let size = 20480u64;
    let img = dir.path().join("p.img");
    let mut data = vec![0u8; (size * 512) as usize];
    PatternDevice::fill(&mut data, 0);
    std::fs::write(&img, &data).unwrap();
    let table = format!("0 {size} linear {} 0\n", img.display());
    let reg = registry();
    let (dev, _g) = mapped(&reg, "ro", &table, true);
    run(
        "read-only linear",
        &*dev,
        &Spec::read_only(Sectors(size), PatternDevice::fill),
    );
}

#[test]
fn crypt_4k_mapped_device_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let img = udm_testkit::image(dir.path(), "c.img", SIZE * 512);
    let key = udm_testkit::rng::hex_key(64, 9);
    let table = format!(
        "0 {SIZE} crypt aes-xts-plain64 {key} 0 {} 0 1 sector_size:4096\n",
        img.display()
    );
    let reg = registry();
    let (dev, _g) = mapped(&reg, "c4k", &table, false);
    let spec = Spec {
        logical_block_size: 4096,
        discard: false,
        write_zeroes: false,
        ..Spec::writable(Sectors(SIZE))
    };
    run("crypt 4k", &*dev, &spec);
}
