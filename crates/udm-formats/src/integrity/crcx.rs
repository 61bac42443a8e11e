//! crc32c tags of many blocks at once: the tag of a block is `crc32c([salt,] sector_le64,
//! block)`, one short serial CRC per block (512 bytes: 64 dependent `crc32` steps, bound by
//! the instruction's latency of 3 cycles). With SSE 4.2 three blocks run side by side, one
//! CRC state each, interleaved word by word, so the instruction's throughput of one per
//! cycle is used. The result is the same as the `crc32c` crate's per block (tested
//! against it); without SSE 4.2, or for the blocks left over, that crate computes it.

/// crc32c of `[salt,] sector_le64, block` for each block of `data` (`bb` bytes each, `bb` a
/// multiple of 8), the block `i` at logical sector `sector + i * step`; the CRC's four
/// little-endian bytes are written cut or zero-padded to `ts` bytes per block into `out`.
pub fn crc32c_tags(
    salt: Option<&[u8; 16]>,
    sector: u64,
    step: u64,
    data: &[u8],
    bb: usize,
    out: &mut [u8],
    ts: usize,
) {
    let blocks = data.len() / bb;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if bb.is_multiple_of(8) && std::arch::is_x86_feature_detected!("sse4.2") {
        while done + 3 <= blocks {
            let b = |k: usize| &data[(done + k) * bb..(done + k + 1) * bb];
            let s = |k: usize| sector + (done + k) as u64 * step;
            // SAFETY: SSE 4.2 is present (checked just above), the only requirement of
            // this function's `target_feature`.
            let c = unsafe { crc3(salt, [s(0), s(1), s(2)], [b(0), b(1), b(2)]) };
            for (k, c) in c.into_iter().enumerate() {
                put(&mut out[(done + k) * ts..(done + k + 1) * ts], c);
            }
            done += 3;
        }
    }
    for i in done..blocks {
        let t = &mut out[i * ts..(i + 1) * ts];
        crc32c_tag(
            salt,
            sector + i as u64 * step,
            &data[i * bb..(i + 1) * bb],
            t,
        );
    }
}

/// The crc32c tag of one block at logical `sector` into `out` (cut or zero-padded).
pub fn crc32c_tag(salt: Option<&[u8; 16]>, sector: u64, block: &[u8], out: &mut [u8]) {
    let mut c = 0u32;
    if let Some(salt) = salt {
        c = crc32c::crc32c_append(c, salt);
    }
    c = crc32c::crc32c_append(c, &sector.to_le_bytes());
    put(out, crc32c::crc32c_append(c, block));
}

fn put(t: &mut [u8], c: u32) {
    let d = c.to_le_bytes();
    let n = t.len().min(4);
    t[..n].copy_from_slice(&d[..n]);
    t[n..].fill(0);
}

/// Three tags side by side; the blocks have the same length, a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc3(salt: Option<&[u8; 16]>, sec: [u64; 3], blk: [&[u8]; 3]) -> [u32; 3] {
    use std::arch::x86_64::_mm_crc32_u64;
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let mut c = [u32::MAX as u64; 3];
    if let Some(s) = salt {
        for i in [0, 8] {
            let w = word(s, i);
            for c in c.iter_mut() {
                *c = _mm_crc32_u64(*c, w);
            }
        }
    }
    for k in 0..3 {
        c[k] = _mm_crc32_u64(c[k], sec[k]);
    }
    let [b0, b1, b2] = blk;
    let n = b0.len().min(b1.len()).min(b2.len());
    let mut i = 0;
    while i + 8 <= n {
        c[0] = _mm_crc32_u64(c[0], word(b0, i));
        c[1] = _mm_crc32_u64(c[1], word(b1, i));
        c[2] = _mm_crc32_u64(c[2], word(b2, i));
        i += 8;
    }
    c.map(|c| !(c as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one_by_one(
        salt: Option<&[u8; 16]>,
        sector: u64,
        step: u64,
        data: &[u8],
        bb: usize,
        ts: usize,
    ) -> Vec<u8> {
        let mut out = vec![0xaa; data.len() / bb * ts];
        for (i, b) in data.chunks(bb).enumerate() {
            let mut c = 0u32;
            if let Some(s) = salt {
                c = crc32c::crc32c_append(c, s);
            }
            c = crc32c::crc32c_append(c, &(sector + i as u64 * step).to_le_bytes());
            c = crc32c::crc32c_append(c, b);
            put(&mut out[i * ts..(i + 1) * ts], c);
        }
        out
    }

    #[test]
    fn known_value_of_a_zero_block() {
        // crc32c of 8 zero bytes (sector 0) then 512 zero bytes, computed independently by
        // the crc32c crate over one buffer.
        let all = vec![0u8; 520];
        let want = crc32c::crc32c(&all);
        let mut out = [0u8; 12];
        crc32c_tags(None, 0, 0, &[0u8; 1536], 512, &mut out, 4);
        for t in out.chunks(4) {
            assert_eq!(t, &want.to_le_bytes()[..]);
        }
    }

    proptest! {
        #![proptest_config(udm_testkit::prop::config(200))]
        #[test]
        fn same_tags_as_one_block_at_a_time(
            l2bb in 9usize..=12,
            blocks in 0usize..10,
            ts in 1usize..=9,
            sector in any::<u64>(),
            salted in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let bb = 1 << l2bb;
            let mut x = seed | 1;
            let data: Vec<u8> = (0..bb * blocks).map(|_| {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8
            }).collect();
            let salt = [seed as u8 ^ 0x5a; 16];
            let salt = salted.then_some(&salt);
            let step = (bb / 512) as u64;
            let sector = sector >> 4;
            let mut out = vec![0xaa; blocks * ts];
            crc32c_tags(salt, sector, step, &data, bb, &mut out, ts);
            prop_assert_eq!(out, one_by_one(salt, sector, step, &data, bb, ts));
        }
    }
}
