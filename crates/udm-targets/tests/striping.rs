//! Striping maths against a naive model: random stripe counts, chunk sizes, leg offsets,
//! I/O offsets and lengths; data written through the device lands where the model says.

mod common;
use common::*;
use proptest::prelude::*;
use udm_io::Sectors;
use udm_targets::striped::map_sector;

/// The model: walk the device sector by sector, dealing chunks to legs round-robin.
fn model(stripes: u64, chunk: u64, len: u64) -> Vec<(usize, u64)> {
    let mut next_on_leg = vec![0u64; stripes as usize];
    let mut out = Vec::with_capacity(len as usize);
    let mut leg = 0usize;
    let mut in_chunk = 0;
    for _ in 0..len {
        out.push((leg, next_on_leg[leg]));
        next_on_leg[leg] += 1;
        in_chunk += 1;
        if in_chunk == chunk {
            in_chunk = 0;
            leg = (leg + 1) % stripes as usize;
        }
    }
    out
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(256))]
    #[test]
    fn map_sector_matches_model(stripes in 1u64..7, chunk in 1u64..40, rows in 1u64..6) {
        let len = stripes * chunk * rows;
        let m = model(stripes, chunk, len);
        for (s, want) in m.iter().enumerate() {
            let (leg, off) = map_sector(Sectors(s as u64), stripes, Sectors(chunk));
            prop_assert_eq!((leg, off.0), *want);
        }
    }
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(24))]
    #[test]
    fn io_through_the_device_lands_per_model(
        stripes in 1u64..5,
        chunk_pow in 0u32..5,
        rows in 1u64..5,
        offs in proptest::collection::vec(0u64..9, 4),
        io in proptest::collection::vec((0u64..1000, 1u64..200, any::<u8>()), 1..6),
    ) {
        let chunk = 1u64 << chunk_pow; // 1..16 sectors
        let width = chunk * rows;
        let len = width * stripes;
        let dir = tempfile::tempdir().unwrap();
        let legs: Vec<_> = (0..stripes as usize)
            .map(|i| image(dir.path(), &format!("leg{i}.img"), width + offs[i], 0))
            .collect();
        let mut table = format!("0 {len} striped {stripes} {chunk}");
        for (i, l) in legs.iter().enumerate() {
            table.push_str(&format!(" {} {}", l.display(), offs[i]));
        }
        let reg = registry();
        create(&reg, "s", &table).unwrap();
        let (dev, _g) = open(&reg, "s");
        let m = model(stripes, chunk, len);
        let mut expect = vec![0u8; (len * 512) as usize];
        for (o, l, byte) in io {
            let o = o % len;
            let l = l.min(len - o);
            let data: Vec<u8> = (0..l * 512).map(|i| byte.wrapping_add((i / 512) as u8)).collect();
            write(dev.as_ref(), o, &data);
            expect[(o * 512) as usize..((o + l) * 512) as usize].copy_from_slice(&data);
        }
        // Reading through the device gives back what was written.
        prop_assert_eq!(read(dev.as_ref(), 0, (len * 512) as usize), expect.clone());
        // Each leg file holds each sector where the model puts it.
        let files: Vec<Vec<u8>> = legs.iter().map(|l| std::fs::read(l).unwrap()).collect();
        for (s, (leg, off)) in m.iter().enumerate() {
            let at = ((off + offs[*leg]) * 512) as usize;
            prop_assert_eq!(&files[*leg][at..at + 512], &expect[s * 512..s * 512 + 512]);
        }
    }
}
