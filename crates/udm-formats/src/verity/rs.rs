//! Reed-Solomon over GF(2^8) with the parameters dm-verity FEC uses everywhere: field polynomial
//! 0x11d, first consecutive root 0, primitive element 1, `nroots` parity symbols, full-length
//! codewords of 255 symbols (data first, parity last; symbol 0 is the highest-degree
//! coefficient). This is the classic systematic code of the kernel's `lib/reed_solomon` and
//! cryptsetup's `rs_encode_char`/`rs_decode_char`, so parity bytes match byte for byte.
//! Decoding corrects up to `nroots / 2` errors, or more when erasure positions are known
//! (`2*errors + erasures <= nroots`).

/// Symbols per codeword.
pub const NN: usize = 255;
/// Log of zero in index form.
const A0: usize = NN;

struct Gf {
    alpha_to: [u8; 256],
    index_of: [usize; 256],
}

const fn build_gf() -> Gf {
    let mut alpha_to = [0u8; 256];
    let mut index_of = [0usize; 256];
    index_of[0] = A0;
    alpha_to[A0] = 0;
    let mut sr: u32 = 1;
    let mut i = 0;
    while i < NN {
        index_of[sr as usize] = i;
        alpha_to[i] = sr as u8;
        sr <<= 1;
        if sr & 0x100 != 0 {
            sr ^= 0x11d;
        }
        sr &= 0xff;
        i += 1;
    }
    Gf { alpha_to, index_of }
}

static GF: Gf = build_gf();

#[inline]
fn modnn(x: usize) -> usize {
    x % NN
}

/// A Reed-Solomon code with `nroots` parity symbols per 255-symbol codeword.
#[derive(Debug, Clone)]
pub struct ReedSolomon {
    nroots: usize,
    /// Generator polynomial in index form, `genpoly[0..=nroots]`.
    genpoly: Vec<usize>,
}

/// The codeword could not be corrected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("uncorrectable Reed-Solomon codeword")]
pub struct Uncorrectable;

impl ReedSolomon {
    /// A code with `nroots` parity symbols (1..=254).
    pub fn new(nroots: usize) -> ReedSolomon {
        assert!((1..NN).contains(&nroots), "nroots {nroots} out of range");
        let gf = &GF;
        let mut g = vec![0u8; nroots + 1];
        g[0] = 1;
        // Multiply by (x + alpha^root) for root = 0 .. nroots-1 (fcr 0, prim 1).
        for i in 0..nroots {
            let root = i;
            g[i + 1] = 1;
            for j in (1..=i).rev() {
                g[j] = if g[j] != 0 {
                    g[j - 1] ^ gf.alpha_to[modnn(gf.index_of[g[j] as usize] + root)]
                } else {
                    g[j - 1]
                };
            }
            g[0] = gf.alpha_to[modnn(gf.index_of[g[0] as usize] + root)];
        }
        let genpoly = g.iter().map(|&c| gf.index_of[c as usize]).collect();
        ReedSolomon { nroots, genpoly }
    }

    pub fn nroots(&self) -> usize {
        self.nroots
    }

    /// Data symbols per codeword.
    pub fn data_len(&self) -> usize {
        NN - self.nroots
    }

    /// Compute the parity of `data` (`255 - nroots` symbols) into `parity` (`nroots`).
    pub fn encode(&self, data: &[u8], parity: &mut [u8]) {
        let gf = &GF;
        let nr = self.nroots;
        debug_assert_eq!(data.len(), NN - nr);
        debug_assert_eq!(parity.len(), nr);
        parity.fill(0);
        for &d in data {
            let feedback = gf.index_of[(d ^ parity[0]) as usize];
            if feedback != A0 {
                for (j, p) in parity.iter_mut().enumerate().skip(1) {
                    *p ^= gf.alpha_to[modnn(feedback + self.genpoly[nr - j])];
                }
            }
            parity.copy_within(1.., 0);
            parity[nr - 1] = if feedback != A0 {
                gf.alpha_to[modnn(feedback + self.genpoly[0])]
            } else {
                0
            };
        }
    }

    /// Correct a whole codeword in place (`data ++ parity`, 255 symbols), given optional
    /// erasure positions. Returns the number of symbols corrected.
    pub fn decode(&self, cw: &mut [u8], erasures: &[usize]) -> Result<usize, Uncorrectable> {
        let gf = &GF;
        let nr = self.nroots;
        debug_assert_eq!(cw.len(), NN);
        if erasures.len() > nr {
            return Err(Uncorrectable);
        }
        // Syndromes: evaluate the codeword at alpha^i.
        let mut s = vec![cw[0]; nr];
        for &c in &cw[1..] {
            for (i, si) in s.iter_mut().enumerate() {
                *si = if *si == 0 {
                    c
                } else {
                    c ^ gf.alpha_to[modnn(gf.index_of[*si as usize] + i)]
                };
            }
        }
        if s.iter().all(|&x| x == 0) {
            return Ok(0);
        }
        let s: Vec<usize> = s.iter().map(|&x| gf.index_of[x as usize]).collect();

        // Erasure locator as the starting lambda.
        let mut lambda = vec![0u8; nr + 1];
        lambda[0] = 1;
        let no_eras = erasures.len();
        if no_eras > 0 {
            lambda[1] = gf.alpha_to[modnn(NN - 1 - erasures[0])];
            for (i, &e) in erasures.iter().enumerate().skip(1) {
                let u = modnn(NN - 1 - e);
                for j in (1..=i + 1).rev() {
                    let tmp = gf.index_of[lambda[j - 1] as usize];
                    if tmp != A0 {
                        lambda[j] ^= gf.alpha_to[modnn(u + tmp)];
                    }
                }
            }
        }
        let mut b: Vec<usize> = lambda.iter().map(|&x| gf.index_of[x as usize]).collect();
        let mut t = vec![0u8; nr + 1];

        // Berlekamp-Massey.
        let mut el = no_eras;
        for r in (no_eras + 1)..=nr {
            let mut discr = 0u8;
            for i in 0..r {
                if lambda[i] != 0 && s[r - i - 1] != A0 {
                    discr ^= gf.alpha_to[modnn(gf.index_of[lambda[i] as usize] + s[r - i - 1])];
                }
            }
            let discr = gf.index_of[discr as usize];
            if discr == A0 {
                b.copy_within(0..nr, 1);
                b[0] = A0;
                continue;
            }
            t[0] = lambda[0];
            for i in 0..nr {
                t[i + 1] = if b[i] != A0 {
                    lambda[i + 1] ^ gf.alpha_to[modnn(discr + b[i])]
                } else {
                    lambda[i + 1]
                };
            }
            if 2 * el < r + no_eras {
                el = r + no_eras - el;
                for i in 0..=nr {
                    b[i] = if lambda[i] == 0 {
                        A0
                    } else {
                        modnn(gf.index_of[lambda[i] as usize] + NN - discr)
                    };
                }
            } else {
                b.copy_within(0..nr, 1);
                b[0] = A0;
            }
            lambda.copy_from_slice(&t);
        }

        // Lambda in index form and its degree.
        let lam: Vec<usize> = lambda.iter().map(|&x| gf.index_of[x as usize]).collect();
        let deg_lambda = lam.iter().rposition(|&x| x != A0).unwrap_or(0);
        if deg_lambda == 0 {
            return Err(Uncorrectable);
        }

        // Chien search.
        let mut reg = lam.clone();
        let mut roots = Vec::with_capacity(deg_lambda);
        let mut locs = Vec::with_capacity(deg_lambda);
        for i in 1..=NN {
            let mut q = 1u8;
            for j in (1..=deg_lambda).rev() {
                if reg[j] != A0 {
                    reg[j] = modnn(reg[j] + j);
                    q ^= gf.alpha_to[reg[j]];
                }
            }
            if q != 0 {
                continue;
            }
            roots.push(i);
            locs.push(i - 1);
            if roots.len() == deg_lambda {
                break;
            }
        }
        if roots.len() != deg_lambda {
            return Err(Uncorrectable);
        }

        // Error evaluator omega = s * lambda mod x^nroots, index form.
        let deg_omega = deg_lambda - 1;
        let mut omega = vec![A0; deg_omega + 1];
        for (i, o) in omega.iter_mut().enumerate() {
            let mut tmp = 0u8;
            for j in (0..=i).rev() {
                if s[i - j] != A0 && lam[j] != A0 {
                    tmp ^= gf.alpha_to[modnn(s[i - j] + lam[j])];
                }
            }
            *o = gf.index_of[tmp as usize];
        }

        // Forney: error values.
        for (&root, &loc) in roots.iter().zip(&locs).rev() {
            let mut num1 = 0u8;
            for (i, &o) in omega.iter().enumerate().rev() {
                if o != A0 {
                    num1 ^= gf.alpha_to[modnn(o + i * root)];
                }
            }
            // fcr = 0: num2 = alpha^(root * (fcr - 1)) = alpha^(-root).
            let num2 = gf.alpha_to[modnn(NN - root % NN)];
            let mut den = 0u8;
            let top = deg_lambda.min(nr - 1) & !1;
            let mut i = top as isize;
            while i >= 0 {
                let iu = i as usize;
                if lam[iu + 1] != A0 {
                    den ^= gf.alpha_to[modnn(lam[iu + 1] + iu * root)];
                }
                i -= 2;
            }
            if den == 0 {
                return Err(Uncorrectable);
            }
            if num1 != 0 {
                cw[loc] ^= gf.alpha_to[modnn(
                    gf.index_of[num1 as usize] + gf.index_of[num2 as usize] + NN
                        - gf.index_of[den as usize],
                )];
            }
        }
        Ok(roots.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codeword(rs: &ReedSolomon, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        let data: Vec<u8> = (0..rs.data_len())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut par = vec![0u8; rs.nroots()];
        rs.encode(&data, &mut par);
        let mut cw = data;
        cw.extend_from_slice(&par);
        cw
    }

    #[test]
    fn known_parity() {
        // Parity of 253 zero bytes followed by nothing is zero; of a single 1 at the end it is
        // the generator's low coefficients (x^2 mod g(x) for g = (x+1)(x+a)).
        let rs = ReedSolomon::new(2);
        let mut data = vec![0u8; 253];
        let mut p = [0u8; 2];
        rs.encode(&data, &mut p);
        assert_eq!(p, [0, 0]);
        data[252] = 1;
        rs.encode(&data, &mut p);
        // g(x) = x^2 + 3x + 2 over GF(256)/0x11d, so x^2 = 3x + 2 (mod g).
        assert_eq!(p, [3, 2]);
    }

    proptest! {
        #![proptest_config(udm_testkit::prop::config(256))]
        #[test]
        fn corrects_up_to_half_the_roots(
            roots in 2usize..=24, seed in any::<u64>(),
            errs in proptest::collection::vec((0usize..255, 1u8..=255), 0..12)
        ) {
            let rs = ReedSolomon::new(roots);
            let good = codeword(&rs, seed);
            let mut cw = good.clone();
            let mut positions = std::collections::BTreeSet::new();
            for &(p, v) in errs.iter().take(roots / 2) {
                if positions.insert(p) {
                    cw[p] ^= v;
                }
            }
            let n = rs.decode(&mut cw, &[]).unwrap();
            prop_assert_eq!(n, positions.len());
            prop_assert_eq!(cw, good);
        }

        #[test]
        fn corrects_erasures_up_to_the_roots(
            roots in 2usize..=24, seed in any::<u64>(),
            pos in proptest::collection::btree_set(0usize..255, 0..24)
        ) {
            let rs = ReedSolomon::new(roots);
            let good = codeword(&rs, seed);
            let mut cw = good.clone();
            let eras: Vec<usize> = pos.into_iter().take(roots).collect();
            for &p in &eras {
                cw[p] ^= 0x5a;
            }
            rs.decode(&mut cw, &eras).unwrap();
            prop_assert_eq!(cw, good);
        }
    }

    #[test]
    fn too_many_errors_never_panic() {
        let rs = ReedSolomon::new(2);
        let good = codeword(&rs, 7);
        for a in 0..40 {
            let mut cw = good.clone();
            cw[a] ^= 1;
            cw[a + 100] ^= 2;
            cw[a + 200] ^= 3;
            // Either detected or miscorrected to another codeword; never a panic.
            let _ = rs.decode(&mut cw, &[]);
        }
    }
}
