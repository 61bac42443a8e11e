//! RAID-5 parity and RAID-6 P+Q syndromes over GF(2^8) (polynomial 0x11d, generator 2, as
//! md's raid6 library), with recovery of one or two missing blocks.
//!
//! The hot loops work on 64-bit words: P is a word-wise XOR, Q a Horner evaluation whose
//! multiply-by-2 is done on eight bytes at once (SWAR), which the compiler vectorises.
//! Recovery multiplies by constants through 256-entry tables.

use std::sync::OnceLock;

struct Tables {
    exp: [u8; 512],
    log: [u8; 256],
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut exp = [0u8; 512];
        let mut log = [0u8; 256];
        let mut x: u16 = 1;
        for (i, e) in exp.iter_mut().take(255).enumerate() {
            *e = x as u8;
            log[x as usize] = i as u8;
            x <<= 1;
            if x & 0x100 != 0 {
                x ^= 0x11d;
            }
        }
        let (lo, hi) = exp.split_at_mut(255);
        for (i, e) in hi.iter_mut().enumerate() {
            *e = lo[i % 255];
        }
        Tables { exp, log }
    })
}

/// a * b in GF(2^8).
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    let t = tables();
    t.exp[t.log[a as usize] as usize + t.log[b as usize] as usize]
}

/// g^n.
pub fn pow2(n: usize) -> u8 {
    tables().exp[n % 255]
}

/// Multiplicative inverse (a != 0).
pub fn inv(a: u8) -> u8 {
    let t = tables();
    t.exp[255 - t.log[a as usize] as usize]
}

fn mul_table(c: u8) -> [u8; 256] {
    let mut t = [0u8; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = mul(c, i as u8);
    }
    t
}

#[inline]
fn x2(v: u64) -> u64 {
    let hi = v & 0x8080_8080_8080_8080;
    ((v << 1) & 0xfefe_fefe_fefe_fefe) ^ ((hi >> 7).wrapping_mul(0x1d))
}

pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    let (dc, dr) = dst.split_at_mut(dst.len() / 8 * 8);
    let (sc, sr) = src.split_at(dc.len());
    for (d, s) in dc.chunks_exact_mut(8).zip(sc.chunks_exact(8)) {
        let v = u64::from_ne_bytes(d.try_into().unwrap_or([0; 8]))
            ^ u64::from_ne_bytes(s.try_into().unwrap_or([0; 8]));
        d.copy_from_slice(&v.to_ne_bytes());
    }
    for (d, s) in dr.iter_mut().zip(sr) {
        *d ^= s;
    }
}

/// P = XOR of the data blocks (holes are zero). All blocks have `p.len()` bytes.
pub fn gen_p(data: &[Option<&[u8]>], p: &mut [u8]) {
    p.fill(0);
    for d in data.iter().flatten() {
        xor_into(p, d);
    }
}

/// Q = sum g^i * D_i over the syndrome slots (holes are zero).
pub fn gen_q(data: &[Option<&[u8]>], q: &mut [u8]) {
    q.fill(0);
    let len = q.len();
    let words = len / 8;
    for w in 0..words {
        let mut acc = 0u64;
        for d in data.iter().rev() {
            acc = x2(acc);
            if let Some(d) = d {
                acc ^= u64::from_le_bytes(d[w * 8..w * 8 + 8].try_into().unwrap_or([0; 8]));
            }
        }
        q[w * 8..w * 8 + 8].copy_from_slice(&acc.to_le_bytes());
    }
    for b in words * 8..len {
        let mut acc = 0u8;
        for d in data.iter().rev() {
            acc = mul(acc, 2);
            if let Some(d) = d {
                acc ^= d[b];
            }
        }
        q[b] = acc;
    }
}

/// Rebuild missing blocks of one stripe. `blocks[0..n]` are the syndrome slots (data or
/// holes; a hole is `Some` zeroes and never missing), `blocks[n]` is P and `blocks[n+1]` Q
/// (raid6 only; raid5 passes n+1 blocks). `missing` lists the indices to rebuild (at most
/// two, at most one without Q); their contents on entry are ignored. False if the set
/// cannot be rebuilt.
pub fn reconstruct(blocks: &mut [Vec<u8>], n: usize, missing: &[usize]) -> bool {
    let has_q = blocks.len() == n + 2;
    let len = blocks.first().map_or(0, |b| b.len());
    let mut data_missing: Vec<usize> = missing.iter().copied().filter(|&i| i < n).collect();
    data_missing.sort_unstable();
    let p_missing = missing.contains(&n);
    let q_missing = has_q && missing.contains(&(n + 1));
    if missing.len() > if has_q { 2 } else { 1 } {
        return false;
    }
    let syndrome =
        |blocks: &[Vec<u8>], skip: &[usize], out_p: &mut Vec<u8>, out_q: &mut Vec<u8>| {
            let refs: Vec<Option<&[u8]>> = (0..n)
                .map(|i| (!skip.contains(&i)).then(|| blocks[i].as_slice()))
                .collect();
            gen_p(&refs, out_p);
            if has_q {
                gen_q(&refs, out_q);
            }
        };
    let mut pp = vec![0u8; len];
    let mut qq = vec![0u8; if has_q { len } else { 0 }];
    match (data_missing.as_slice(), p_missing, q_missing) {
        ([], _, _) => {
            syndrome(blocks, &[], &mut pp, &mut qq);
            if p_missing {
                blocks[n] = pp;
            }
            if q_missing {
                blocks[n + 1] = qq;
            }
        }
        (&[x], false, _) => {
            // D_x = P ^ (P of the others).
            syndrome(blocks, &[x], &mut pp, &mut qq);
            xor_into(&mut pp, &blocks[n]);
            blocks[x] = pp;
            if q_missing {
                syndrome(blocks, &[], &mut vec![0u8; len], &mut qq);
                blocks[n + 1] = qq;
            }
        }
        (&[x], true, false) => {
            // D_x = (Q ^ Q_without_x) * g^-x.
            syndrome(blocks, &[x], &mut pp, &mut qq);
            xor_into(&mut qq, &blocks[n + 1]);
            let t = mul_table(inv(pow2(x)));
            blocks[x] = qq.iter().map(|&b| t[b as usize]).collect();
            syndrome(blocks, &[], &mut pp, &mut vec![0u8; len]);
            blocks[n] = pp;
        }
        (&[x, y], false, false) => {
            syndrome(blocks, &[x, y], &mut pp, &mut qq);
            xor_into(&mut pp, &blocks[n]); // Dx ^ Dy
            xor_into(&mut qq, &blocks[n + 1]); // g^x Dx ^ g^y Dy
            let gyx = pow2(y - x);
            let denom = inv(gyx ^ 1);
            let a = mul_table(mul(gyx, denom));
            let b = mul_table(mul(inv(pow2(x)), denom));
            let dx: Vec<u8> = pp
                .iter()
                .zip(&qq)
                .map(|(&p, &q)| a[p as usize] ^ b[q as usize])
                .collect();
            let mut dy = pp;
            xor_into(&mut dy, &dx);
            blocks[x] = dx;
            blocks[y] = dy;
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripe(n: usize, len: usize, seed: u8) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                (0..len)
                    .map(|j| (i as u8).wrapping_mul(31) ^ (j as u8).wrapping_mul(seed) ^ 0x5a)
                    .collect()
            })
            .collect();
        let refs: Vec<Option<&[u8]>> = v.iter().map(|b| Some(b.as_slice())).collect();
        let mut p = vec![0; len];
        let mut q = vec![0; len];
        gen_p(&refs, &mut p);
        gen_q(&refs, &mut q);
        v.push(p);
        v.push(q);
        v
    }

    #[test]
    fn q_matches_bytewise_definition() {
        let s = stripe(5, 37, 7);
        for b in 0..37 {
            let mut q = 0u8;
            for (i, d) in s[..5].iter().enumerate() {
                q ^= mul(pow2(i), d[b]);
            }
            assert_eq!(s[6][b], q, "byte {b}");
        }
    }

    #[test]
    fn every_one_or_two_failures_recover() {
        let n = 5;
        let good = stripe(n, 64, 13);
        for x in 0..n + 2 {
            for y in x..n + 2 {
                let missing: Vec<usize> = if x == y { vec![x] } else { vec![x, y] };
                let mut s = good.clone();
                for &m in &missing {
                    s[m] = vec![0xee; 64];
                }
                assert!(reconstruct(&mut s, n, &missing), "{missing:?}");
                assert_eq!(s, good, "{missing:?}");
            }
        }
        let mut s = good.clone();
        assert!(!reconstruct(&mut s, n, &[0, 1, 2]));
    }
}
