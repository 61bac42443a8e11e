//! The real thin-provisioning-tools against the udm targets: metadata `thin_restore` made
//! (two devices sharing blocks, range and single mappings) opens in a udm pool and reads
//! the right data; writes through udm break sharing correctly; afterwards `thin_check`
//! passes and `thin_dump` lists exactly what udm mapped.

use std::collections::BTreeMap;
use std::process::Command;
use udm_testkit::dm::{create, message, open, read, reg, sel, write};
use udm_testkit::require_tool;
use udm_testkit::thin::{thin_check, thin_dump, PoolFiles};

const BS: u64 = 128;
const BLOCK: usize = (BS * 512) as usize;
const DATA_BLOCKS: u64 = 64;

fn fill(b: u64) -> Vec<u8> {
    vec![b as u8 + 1; BLOCK]
}

#[test]
fn thin_restore_metadata_opens_in_udm() {
    if !["thin_check", "thin_dump", "thin_restore"]
        .iter()
        .all(|t| require_tool(t))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, DATA_BLOCKS);
    // Device 0: virtual 0..10 → data 0..10, virtual 20 → data 30.
    // Device 1 (a snapshot of 0): shares data 0..5 at virtual 0..5, own block 31 at 7.
    let xml = format!(
        r#"<superblock uuid="" time="1" transaction="3" flags="0" version="2" data_block_size="{BS}" nr_data_blocks="{DATA_BLOCKS}">
  <device dev_id="0" mapped_blocks="11" transaction="0" creation_time="0" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="10" time="0"/>
    <single_mapping origin_block="20" data_block="30" time="0"/>
  </device>
  <device dev_id="1" mapped_blocks="6" transaction="1" creation_time="1" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="5" time="0"/>
    <single_mapping origin_block="7" data_block="31" time="1"/>
  </device>
</superblock>
"#
    );
    let xml_path = dir.path().join("in.xml");
    std::fs::write(&xml_path, xml).unwrap();
    let out = Command::new("thin_restore")
        .arg("-i")
        .arg(&xml_path)
        .arg("-o")
        .arg(&files.meta)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut data = Vec::with_capacity(DATA_BLOCKS as usize * BLOCK);
    for b in 0..DATA_BLOCKS {
        data.extend(fill(b));
    }
    std::fs::write(&files.data, &data).unwrap();

    let mut want: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    want.insert(0, (0..10).map(|v| (v, v)).chain([(20, 30)]).collect());
    want.insert(1, (0..5).map(|v| (v, v)).chain([(7, 31)]).collect());
    let reg = reg();
    create(&reg, "pool", &files.table("0")).unwrap();
    let st = udm_testkit::dm::status(&reg, "pool");
    assert!(st.contains(" 3 ") && st.contains(" 12/64 "), "{st}");
    for id in 0..2u64 {
        create(
            &reg,
            &format!("t{id}"),
            &format!("0 {} thin /dev/mapper/pool {id}", 32 * BS),
        )
        .unwrap();
        let (dev, _g) = open(&reg, &format!("t{id}"));
        for v in 0..32 {
            let got = read(dev.as_ref(), v * BS, BLOCK).unwrap();
            let exp = want[&id]
                .get(&v)
                .map(|&b| fill(b))
                .unwrap_or(vec![0; BLOCK]);
            assert!(got == exp, "device {id} block {v}");
        }
    }
    // Overwrite part of shared block 2 on device 1: device 0 keeps the old data.
    {
        let (t1, _g) = open(&reg, "t1");
        write(t1.as_ref(), 2 * BS + 8, &[0xAB; 4096]).unwrap();
        let mut exp = fill(2);
        exp[4096..8192].fill(0xAB);
        assert!(read(t1.as_ref(), 2 * BS, BLOCK).unwrap() == exp);
        let (t0, _g0) = open(&reg, "t0");
        assert!(read(t0.as_ref(), 2 * BS, BLOCK).unwrap() == fill(2));
        // And a first write to device 0 block 15.
        write(t0.as_ref(), 15 * BS, &fill(40)).unwrap();
    }
    for n in ["t0", "t1", "pool"] {
        reg.remove(&sel(n), false).unwrap();
    }
    drop(reg);
    thin_check(&files.meta).unwrap();
    let (_, dump) = thin_dump(&files.meta);
    let new1 = dump[&1][&2];
    assert!(
        new1 != 2 && new1 != 30 && new1 != 31 && new1 >= 10,
        "block {new1}"
    );
    let new0 = dump[&0][&15];
    assert!(new0 != new1 && new0 >= 10);
    want.get_mut(&1).unwrap().insert(2, new1);
    want.get_mut(&0).unwrap().insert(15, new0);
    assert_eq!(dump, want);
    // The messages work on restored metadata too.
    let reg = udm_testkit::dm::reg();
    create(&reg, "pool", &files.table("0")).unwrap();
    message(&reg, "pool", "delete 1").unwrap();
    reg.remove(&sel("pool"), false).unwrap();
    drop(reg);
    thin_check(&files.meta).unwrap();
    assert_eq!(
        thin_dump(&files.meta).1.keys().copied().collect::<Vec<_>>(),
        vec![0]
    );
}
