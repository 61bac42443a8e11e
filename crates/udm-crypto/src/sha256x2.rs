//! SHA-256 of two equally long messages at once with the x86 SHA extensions: the two
//! compression functions run interleaved, so each `sha256rnds2` of one message fills the
//! latency of the other's (one stream alone leaves the unit idle most cycles). dm-verity
//! hashes many equal-sized blocks, so pairing them nearly doubles its hashing speed.
//! Without the SHA extensions [`sha256_x2`] returns `None` and callers hash one at a time.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// The SHA-256 round constants.
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// The SHA-256 initial hash value.
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Whether this CPU has the SHA extensions (and the SSE levels the code uses); off with
/// `UDM_NO_SHA_NI` set, to measure or test the one-at-a-time path.
pub fn available() -> bool {
    static A: OnceLock<bool> = OnceLock::new();
    *A.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("sha")
                && std::is_x86_feature_detected!("sse4.1")
                && std::is_x86_feature_detected!("ssse3")
                && std::env::var_os("UDM_NO_SHA_NI").is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// The 64-byte block `k` of `prefix ‖ data ‖ suffix ‖ padding` (total message length
/// `len`), borrowed straight from `data` when it lies inside it, else assembled in `tmp`.
fn block<'a>(
    prefix: &[u8],
    data: &'a [u8],
    suffix: &[u8],
    k: usize,
    tmp: &'a mut [u8; 64],
) -> &'a [u8] {
    let (p, d) = (prefix.len(), data.len());
    let at = k * 64;
    if at >= p && at + 64 <= p + d {
        return &data[at - p..at - p + 64];
    }
    let len = p + d + suffix.len();
    for (j, t) in tmp.iter_mut().enumerate() {
        let i = at + j;
        *t = if i < p {
            prefix[i]
        } else if i < p + d {
            data[i - p]
        } else if i < len {
            suffix[i - p - d]
        } else if i == len {
            0x80
        } else {
            0
        };
    }
    // The bit length goes in the last 8 bytes of the last block.
    let blocks = (len + 9).div_ceil(64);
    if k + 1 == blocks {
        tmp[56..].copy_from_slice(&((len as u64) * 8).to_be_bytes());
    }
    tmp
}

/// SHA-256 of `prefix ‖ a ‖ suffix` and of `prefix ‖ b ‖ suffix`, or `None` when the CPU
/// has no SHA extensions or `a` and `b` differ in length.
pub fn sha256_x2(prefix: &[u8], a: &[u8], b: &[u8], suffix: &[u8]) -> Option<[[u8; 32]; 2]> {
    if a.len() != b.len() || !available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let len = prefix.len() + a.len() + suffix.len();
        let blocks = (len + 9).div_ceil(64);
        // SAFETY: `available()` returned true above, so the CPU has SHA, SSSE3 and SSE4.1
        // (checked with `is_x86_feature_detected!`); SSE2 is part of x86_64 itself.
        let mut st = unsafe { Lanes::new() };
        let (mut ta, mut tb) = ([0u8; 64], [0u8; 64]);
        for k in 0..blocks {
            let ba = block(prefix, a, suffix, k, &mut ta);
            let bb = block(prefix, b, suffix, k, &mut tb);
            // SAFETY: the features were detected by `available()` above; `block` returns
            // exactly 64 bytes for each lane.
            unsafe { st.compress(ba, bb) };
        }
        // SAFETY: the features were detected by `available()` above.
        Some(unsafe { st.finish() })
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Two SHA-256 states in the SHA extensions' layout (ABEF and CDGH per lane).
#[cfg(target_arch = "x86_64")]
struct Lanes {
    abef: [__m128i; 2],
    cdgh: [__m128i; 2],
}

#[cfg(target_arch = "x86_64")]
impl Lanes {
    /// Both lanes at the SHA-256 initial state.
    ///
    /// # Safety
    ///
    /// The CPU must have the SHA extensions, SSE2, SSSE3 and SSE4.1 ([`available`] says so).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn new() -> Lanes {
        // SAFETY: 16-byte unaligned loads from the 32-byte H0 array.
        let (dcba, hgfe) = unsafe {
            (
                _mm_loadu_si128(H0.as_ptr().cast()),
                _mm_loadu_si128(H0.as_ptr().add(4).cast()),
            )
        };
        let cdab = _mm_shuffle_epi32(dcba, 0xb1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1b);
        let abef = _mm_alignr_epi8(cdab, efgh, 8);
        let cdgh = _mm_blend_epi16(efgh, cdab, 0xf0);
        Lanes {
            abef: [abef; 2],
            cdgh: [cdgh; 2],
        }
    }

    /// One 64-byte block into each lane, the two lanes' instructions interleaved.
    ///
    /// # Safety
    ///
    /// The CPU must have the SHA extensions, SSE2, SSSE3 and SSE4.1 ([`available`] says so).
    /// `a` and `b` must be 64 bytes each (asserted: shorter slices panic, they are not read
    /// past their end).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress(&mut self, a: &[u8], b: &[u8]) {
        assert!(a.len() == 64 && b.len() == 64);
        let bswap = _mm_set_epi64x(0x0c0d0e0f08090a0b, 0x0405060700010203);
        let (save_abef, save_cdgh) = (self.abef, self.cdgh);
        let src = [a.as_ptr(), b.as_ptr()];
        // w[l][j % 4]: message words 4j..4j+4 of lane l.
        let mut w = [[_mm_setzero_si128(); 4]; 2];
        for j in 0..16 {
            // SAFETY: 16-byte unaligned load from the 64-byte round-constant table.
            let kq = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * j).cast()) };
            for l in 0..2 {
                let q = if j < 4 {
                    // SAFETY: bytes 16j..16j+16 of a 64-byte block; unaligned load.
                    let m = unsafe { _mm_loadu_si128(src[l].add(16 * j).cast()) };
                    _mm_shuffle_epi8(m, bswap)
                } else {
                    let x = _mm_sha256msg1_epu32(w[l][j % 4], w[l][(j + 1) % 4]);
                    let x =
                        _mm_add_epi32(x, _mm_alignr_epi8(w[l][(j + 3) % 4], w[l][(j + 2) % 4], 4));
                    _mm_sha256msg2_epu32(x, w[l][(j + 3) % 4])
                };
                w[l][j % 4] = q;
                let m = _mm_add_epi32(q, kq);
                self.cdgh[l] = _mm_sha256rnds2_epu32(self.cdgh[l], self.abef[l], m);
                let m = _mm_shuffle_epi32(m, 0x0e);
                self.abef[l] = _mm_sha256rnds2_epu32(self.abef[l], self.cdgh[l], m);
            }
        }
        for l in 0..2 {
            self.abef[l] = _mm_add_epi32(self.abef[l], save_abef[l]);
            self.cdgh[l] = _mm_add_epi32(self.cdgh[l], save_cdgh[l]);
        }
    }

    /// The two digests, big-endian.
    ///
    /// # Safety
    ///
    /// The CPU must have the SHA extensions, SSE2, SSSE3 and SSE4.1 ([`available`] says so).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn finish(&self) -> [[u8; 32]; 2] {
        let mut out = [[0u8; 32]; 2];
        for (l, o) in out.iter_mut().enumerate() {
            let feba = _mm_shuffle_epi32(self.abef[l], 0x1b);
            let dchg = _mm_shuffle_epi32(self.cdgh[l], 0xb1);
            let dcba = _mm_blend_epi16(feba, dchg, 0xf0);
            let hgfe = _mm_alignr_epi8(dchg, feba, 8);
            let mut words = [0u32; 8];
            // SAFETY: 16-byte unaligned stores into a 32-byte array.
            unsafe {
                _mm_storeu_si128(words.as_mut_ptr().cast(), dcba);
                _mm_storeu_si128(words.as_mut_ptr().add(4).cast(), hgfe);
            }
            for (c, w) in o.chunks_mut(4).zip(words) {
                c.copy_from_slice(&w.to_be_bytes());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn one(prefix: &[u8], d: &[u8], suffix: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(prefix);
        h.update(d);
        h.update(suffix);
        h.finalize().into()
    }

    #[test]
    fn known_answers() {
        if !available() {
            eprintln!("no SHA extensions on this CPU: nothing to compare");
            return;
        }
        // FIPS 180-2 examples: "abc" and the 56-byte two-block message.
        let [x, y] = sha256_x2(b"", b"abc", b"abc", b"").unwrap();
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!((hex(x), hex(y)), (want.to_string(), want.to_string()));
        let m = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        let [x, _] = sha256_x2(b"", m, m, b"").unwrap();
        assert_eq!(
            hex(x),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn matches_sha2_crate_for_every_length_and_salt() {
        if !available() {
            eprintln!("no SHA extensions on this CPU: nothing to compare");
            return;
        }
        let salt: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(29) ^ 0x5a).collect();
        for len in (0..300).chain([511, 512, 513, 1024, 4096, 4097]) {
            let a: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let b: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
            for (p, s) in [
                (0, 0),
                (1, 0),
                (0, 1),
                (32, 0),
                (0, 32),
                (55, 0),
                (64, 9),
                (100, 0),
            ] {
                let (p, s) = (&salt[..p], &salt[..s]);
                let [x, y] = sha256_x2(p, &a, &b, s).unwrap();
                assert_eq!(
                    x,
                    one(p, &a, s),
                    "len {len} prefix {} suffix {}",
                    p.len(),
                    s.len()
                );
                assert_eq!(
                    y,
                    one(p, &b, s),
                    "len {len} prefix {} suffix {}",
                    p.len(),
                    s.len()
                );
            }
        }
        assert!(sha256_x2(b"", b"ab", b"abc", b"").is_none());
    }
}
