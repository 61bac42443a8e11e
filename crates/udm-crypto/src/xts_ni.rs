//! AES-XTS with AES-NI: eight blocks in flight per round, the tweaks kept in SSE registers.
//! This is the speed path (about OpenSSL's speed per core); the portable path in `cipher.rs`
//! (any cipher, via the `aes` crate's multi-block calls) is used where AES-NI is missing.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use zeroize::Zeroize;

/// The AES S-box, computed (multiplicative inverse in GF(2^8) and the affine map).
fn sbox() -> [u8; 256] {
    let mut s = [0u8; 256];
    let (mut p, mut q) = (1u8, 1u8);
    loop {
        p = p ^ (p << 1) ^ if p & 0x80 != 0 { 0x1b } else { 0 };
        q ^= q << 1;
        q ^= q << 2;
        q ^= q << 4;
        if q & 0x80 != 0 {
            q ^= 0x09;
        }
        let x = q ^ q.rotate_left(1) ^ q.rotate_left(2) ^ q.rotate_left(3) ^ q.rotate_left(4);
        s[p as usize] = x ^ 0x63;
        if p == 1 {
            break;
        }
    }
    s[0] = 0x63;
    s
}

/// FIPS-197 key expansion: `rounds + 1` round keys of 16 bytes for a 16/24/32-byte key.
pub(crate) fn expand_key(key: &[u8]) -> Option<(Vec<[u8; 16]>, usize)> {
    let nk = key.len() / 4;
    if !matches!(key.len(), 16 | 24 | 32) {
        return None;
    }
    let nr = nk + 6;
    let sb = sbox();
    let mut w: Vec<[u8; 4]> = key.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
    let mut rcon = 1u8;
    for i in nk..4 * (nr + 1) {
        let mut t = w[i - 1];
        if i % nk == 0 {
            t = [
                sb[t[1] as usize] ^ rcon,
                sb[t[2] as usize],
                sb[t[3] as usize],
                sb[t[0] as usize],
            ];
            rcon = (rcon << 1) ^ if rcon & 0x80 != 0 { 0x1b } else { 0 };
        } else if nk > 6 && i % nk == 4 {
            t = t.map(|b| sb[b as usize]);
        }
        let prev = w[i - nk];
        w.push([
            prev[0] ^ t[0],
            prev[1] ^ t[1],
            prev[2] ^ t[2],
            prev[3] ^ t[3],
        ]);
    }
    let rk = w
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 16];
            for (j, x) in c.iter().enumerate() {
                b[j * 4..j * 4 + 4].copy_from_slice(x);
            }
            b
        })
        .collect();
    w.zeroize();
    Some((rk, nr))
}

/// Units per batch in `AesNiXts::process_units` (their first tweaks computed together).
pub(crate) const UNITS: usize = 16;

/// Keyed AES-XTS (data key and tweak key) for AES-NI.
pub(crate) struct AesNiXts {
    enc: [[u8; 16]; 15],
    dec: [[u8; 16]; 15],
    tweak: [[u8; 16]; 15],
    rounds: usize,
    /// VAES + VPCLMULQDQ + AVX2 + AVX were detected: two blocks per instruction in 256-bit
    /// registers. Only `new` sets it.
    vaes: bool,
}

impl Drop for AesNiXts {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.dec.zeroize();
        self.tweak.zeroize();
    }
}

impl AesNiXts {
    /// `None` when the CPU has no AES-NI or a key is not an AES key.
    pub(crate) fn new(data_key: &[u8], tweak_key: &[u8]) -> Option<AesNiXts> {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::is_x86_feature_detected!("aes") || !std::is_x86_feature_detected!("sse2") {
                return None;
            }
            let (ek, nr) = expand_key(data_key)?;
            let (tk, nr2) = expand_key(tweak_key)?;
            if nr != nr2 {
                return None;
            }
            let mut x = AesNiXts {
                enc: [[0; 16]; 15],
                dec: [[0; 16]; 15],
                tweak: [[0; 16]; 15],
                rounds: nr,
                vaes: std::is_x86_feature_detected!("vaes")
                    && std::is_x86_feature_detected!("vpclmulqdq")
                    && std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("avx")
                    && std::env::var_os("UDM_CRYPT_NO_VAES").is_none(),
            };
            x.enc[..=nr].copy_from_slice(&ek);
            x.tweak[..=nr].copy_from_slice(&tk);
            // SAFETY: `is_x86_feature_detected!` found AES-NI and SSE2 at the top of `new`.
            unsafe { x.make_dec_keys() };
            Some(x)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (data_key, tweak_key);
            None
        }
    }

    /// Decryption round keys: the encryption keys reversed, the inner ones through InvMixColumns.
    ///
    /// # Safety
    ///
    /// The CPU must have AES-NI and SSE2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "aes,sse2")]
    unsafe fn make_dec_keys(&mut self) {
        let nr = self.rounds;
        self.dec[0] = self.enc[nr];
        self.dec[nr] = self.enc[0];
        for i in 1..nr {
            // SAFETY: loads/stores of 16 bytes from/to 16-byte arrays (unaligned forms).
            unsafe {
                let k = _mm_loadu_si128(self.enc[nr - i].as_ptr().cast());
                _mm_storeu_si128(self.dec[i].as_mut_ptr().cast(), _mm_aesimc_si128(k));
            }
        }
    }

    /// Encrypt or decrypt one data unit (a whole number of 16-byte blocks) in place.
    pub(crate) fn process(&self, iv: &[u8; 16], buf: &mut [u8], enc: bool) {
        debug_assert_eq!(buf.len() % 16, 0);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `AesNiXts` is only built by `new`, which returns `None` unless
        // `is_x86_feature_detected!` finds AES-NI and SSE2; `self.vaes` is true only when
        // `new` also found VAES, VPCLMULQDQ, AVX2 and AVX — what `process_vaes` needs. In
        // place: source and destination are the same `buf.len()` bytes of `buf`.
        unsafe {
            let (len, dst) = (buf.len(), buf.as_mut_ptr());
            match (self.vaes, enc) {
                (true, true) => self.process_vaes::<true>(self.first_tweak(iv), dst, dst, len),
                (true, false) => self.process_vaes::<false>(self.first_tweak(iv), dst, dst, len),
                (false, true) => self.process_ni::<true>(iv, buf),
                (false, false) => self.process_ni::<false>(iv, buf),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (iv, buf, enc);
            unreachable!("AesNiXts is never built off x86_64")
        }
    }

    /// As `process`, reading `src` and writing `dst` (same length): the 256-bit path loads
    /// from one and stores to the other, with no copy first.
    pub(crate) fn process_into(&self, iv: &[u8; 16], src: &[u8], dst: &mut [u8], enc: bool) {
        assert_eq!(src.len(), dst.len(), "process_into: lengths differ");
        debug_assert_eq!(src.len() % 16, 0);
        #[cfg(target_arch = "x86_64")]
        if self.vaes {
            // SAFETY: as in `process` for the CPU features; `src` and `dst` are distinct
            // slices (one shared, one exclusive borrow) of `src.len()` bytes each.
            unsafe {
                let (from, to, len) = (src.as_ptr(), dst.as_mut_ptr(), src.len());
                let t = self.first_tweak(iv);
                if enc {
                    self.process_vaes::<true>(t, from, to, len)
                } else {
                    self.process_vaes::<false>(t, from, to, len)
                }
            }
            return;
        }
        dst.copy_from_slice(src);
        self.process(iv, dst, enc)
    }

    /// Encrypt or decrypt `ivs.len()` equal data units of `dst`, unit k with IV `ivs[k]`:
    /// read from `src` (as long as `dst`) when given, else in place. With VAES the units'
    /// first tweaks are computed together, `UNITS` IVs in flight through the tweak key's
    /// rounds, so no unit waits for the latency of its own tweak (fifteen dependent rounds,
    /// as long as the data rounds of a whole 512-byte unit) before its data rounds start.
    pub(crate) fn process_units(
        &self,
        ivs: &[[u8; 16]],
        src: Option<&[u8]>,
        dst: &mut [u8],
        enc: bool,
    ) {
        let n = ivs.len();
        if n == 0 {
            return;
        }
        assert!(
            dst.len().is_multiple_of(n) && src.is_none_or(|s| s.len() == dst.len()),
            "process_units: lengths differ"
        );
        let unit = dst.len() / n;
        debug_assert_eq!(unit % 16, 0);
        #[cfg(target_arch = "x86_64")]
        if self.vaes && n > 1 {
            let mut tweaks = [[0u8; 16]; UNITS];
            for (c, chunk) in ivs.chunks(UNITS).enumerate() {
                // SAFETY: `self.vaes` is true only when `new` found AES-NI, SSE2, AVX, AVX2,
                // VAES and VPCLMULQDQ, what `first_tweaks_vaes` needs; `chunk` holds at most
                // `UNITS` IVs.
                unsafe { self.first_tweaks_vaes(chunk, &mut tweaks) };
                for (j, t) in tweaks[..chunk.len()].iter().enumerate() {
                    let off = (c * UNITS + j) * unit;
                    let to = dst[off..off + unit].as_mut_ptr();
                    let from = src.map_or(to.cast_const(), |s| s[off..off + unit].as_ptr());
                    // SAFETY: CPU features as above; `from` and `to` are `unit` bytes inside
                    // `src` (a shared borrow, so not overlapping the exclusive `dst`) or the
                    // same bytes of `dst` for in place; the 16-byte load is from an array.
                    unsafe {
                        let t = _mm_loadu_si128(t.as_ptr().cast());
                        if enc {
                            self.process_vaes::<true>(t, from, to, unit)
                        } else {
                            self.process_vaes::<false>(t, from, to, unit)
                        }
                    }
                }
            }
            return;
        }
        for (k, iv) in ivs.iter().enumerate() {
            let d = &mut dst[k * unit..(k + 1) * unit];
            match src {
                Some(s) => self.process_into(iv, &s[k * unit..(k + 1) * unit], d, enc),
                None => self.process(iv, d, enc),
            }
        }
    }

    /// The 128-bit path for one data unit.
    ///
    /// # Safety
    ///
    /// The CPU must have AES-NI and SSE2 (true for any `AesNiXts`: `new` checks).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "aes,sse2")]
    unsafe fn process_ni<const ENC: bool>(&self, iv: &[u8; 16], buf: &mut [u8]) {
        // SAFETY: this function's own contract: the CPU has AES-NI and SSE2, all that
        // `first_tweak` and `blocks_from` need.
        unsafe {
            let t = self.first_tweak(iv);
            self.blocks_from::<ENC>(t, buf)
        }
    }

    /// The 128-bit loop from tweak `t` on, over the whole 16-byte blocks of `buf`.
    ///
    /// # Safety
    ///
    /// The CPU must have AES-NI and SSE2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "aes,sse2")]
    unsafe fn blocks_from<const ENC: bool>(&self, mut t: __m128i, buf: &mut [u8]) {
        let enc = ENC;
        let nr = self.rounds;
        let mut rk = [_mm_setzero_si128(); 15];
        let keys = if enc { &self.enc } else { &self.dec };
        for (r, k) in rk.iter_mut().zip(keys.iter()).take(nr + 1) {
            // SAFETY: 16-byte unaligned load from a 16-byte array.
            *r = unsafe { _mm_loadu_si128(k.as_ptr().cast()) };
        }
        let poly = _mm_set_epi32(1, 1, 1, 0x87);
        // t·α in GF(2^128): shift each lane left, carry lane tops up, reduce with 0x87.
        let double = |t: __m128i| {
            let c = _mm_and_si128(_mm_shuffle_epi32(_mm_srai_epi32(t, 31), 0x93), poly);
            _mm_xor_si128(_mm_slli_epi32(t, 1), c)
        };
        let n = buf.len() / 16;
        let p = buf.as_mut_ptr() as *mut __m128i;
        let mut i = 0;
        while i + 8 <= n {
            let mut tw = [t; 8];
            for k in 1..8 {
                tw[k] = double(tw[k - 1]);
            }
            let mut b = [_mm_setzero_si128(); 8];
            for k in 0..8 {
                // SAFETY: block i + k < n lies inside `buf` (n = len / 16); unaligned load.
                let x = unsafe { _mm_loadu_si128(p.add(i + k)) };
                b[k] = _mm_xor_si128(_mm_xor_si128(x, tw[k]), rk[0]);
            }
            for r in rk.iter().take(nr).skip(1) {
                for x in b.iter_mut() {
                    *x = if enc {
                        _mm_aesenc_si128(*x, *r)
                    } else {
                        _mm_aesdec_si128(*x, *r)
                    };
                }
            }
            for k in 0..8 {
                let x = if enc {
                    _mm_aesenclast_si128(b[k], rk[nr])
                } else {
                    _mm_aesdeclast_si128(b[k], rk[nr])
                };
                // SAFETY: block i + k < n lies inside `buf`; unaligned store.
                unsafe { _mm_storeu_si128(p.add(i + k), _mm_xor_si128(x, tw[k])) };
            }
            t = double(tw[7]);
            i += 8;
        }
        while i < n {
            // SAFETY: block i < n lies inside `buf`; unaligned load.
            let mut x = unsafe { _mm_xor_si128(_mm_loadu_si128(p.add(i)), t) };
            x = _mm_xor_si128(x, rk[0]);
            for r in rk.iter().take(nr).skip(1) {
                x = if enc {
                    _mm_aesenc_si128(x, *r)
                } else {
                    _mm_aesdec_si128(x, *r)
                };
            }
            x = if enc {
                _mm_aesenclast_si128(x, rk[nr])
            } else {
                _mm_aesdeclast_si128(x, rk[nr])
            };
            // SAFETY: block i < n lies inside `buf`; unaligned store.
            unsafe { _mm_storeu_si128(p.add(i), _mm_xor_si128(x, t)) };
            t = double(t);
            i += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl AesNiXts {
    /// The first tweak: the IV encrypted with the tweak key.
    ///
    /// # Safety
    ///
    /// The CPU must have AES-NI and SSE2.
    #[target_feature(enable = "aes,sse2")]
    unsafe fn first_tweak(&self, iv: &[u8; 16]) -> __m128i {
        let nr = self.rounds;
        // SAFETY: 16-byte unaligned load from the IV array.
        let mut t = unsafe { _mm_loadu_si128(iv.as_ptr().cast()) };
        for (i, k) in self.tweak.iter().take(nr + 1).enumerate() {
            // SAFETY: 16-byte unaligned load from a 16-byte array.
            let k = unsafe { _mm_loadu_si128(k.as_ptr().cast()) };
            t = match i {
                0 => _mm_xor_si128(t, k),
                i if i == nr => _mm_aesenclast_si128(t, k),
                _ => _mm_aesenc_si128(t, k),
            };
        }
        t
    }

    /// The first tweaks of up to `UNITS` units (their IVs encrypted with the tweak key),
    /// two per 256-bit register, all in flight through each round together.
    ///
    /// # Safety
    ///
    /// The CPU must have AES-NI, SSE2, AVX, AVX2 and VAES; `ivs.len() <= UNITS`.
    #[target_feature(enable = "aes,sse2,avx,avx2,vaes")]
    unsafe fn first_tweaks_vaes(&self, ivs: &[[u8; 16]], out: &mut [[u8; 16]; UNITS]) {
        let nr = self.rounds;
        let mut lanes = [[0u8; 16]; UNITS];
        lanes[..ivs.len()].copy_from_slice(ivs);
        // SAFETY: 16-byte unaligned loads from 16-byte round-key arrays, broadcast.
        let key = |r: usize| unsafe {
            _mm256_broadcastsi128_si256(_mm_loadu_si128(self.tweak[r].as_ptr().cast()))
        };
        let mut b = [_mm256_setzero_si256(); UNITS / 2];
        let k0 = key(0);
        for (k, x) in b.iter_mut().enumerate() {
            // SAFETY: 32 bytes, lanes 2k and 2k+1 of the `lanes` array; unaligned load.
            *x = _mm256_xor_si256(
                unsafe { _mm256_loadu_si256(lanes[2 * k..].as_ptr().cast()) },
                k0,
            );
        }
        for r in 1..nr {
            let k = key(r);
            for x in b.iter_mut() {
                *x = _mm256_aesenc_epi128(*x, k);
            }
        }
        let kl = key(nr);
        for (k, x) in b.iter().enumerate() {
            // SAFETY: 32 bytes into `out[2k]` and `out[2k + 1]`; unaligned store.
            unsafe {
                _mm256_storeu_si256(
                    out[2 * k..].as_mut_ptr().cast(),
                    _mm256_aesenclast_epi128(*x, kl),
                )
            };
        }
    }

    /// The VAES loop: sixteen blocks per step in eight 256-bit registers; the tail (fewer
    /// than sixteen blocks) goes through the 128-bit loop with the running tweak.
    ///
    /// The tweaks come from carry-less multiplications by powers of α, independent of each
    /// other (the first sixteen in four dependent steps; each later step multiplies all
    /// sixteen by α¹⁶ at once, `times_x16`), instead of a chain of dependent doublings, one
    /// per block, which kept the AES units waiting.
    ///
    /// The unit is the `len` bytes at `src`, written to the `len` bytes at `dst` (the same
    /// bytes for in place; otherwise the two ranges must not overlap).
    ///
    /// # Safety
    ///
    /// The CPU must have AES-NI, SSE2, AVX, AVX2, VAES and VPCLMULQDQ (`self.vaes` says
    /// `new` found them); `src` must be valid for reads and `dst` for writes of `len` bytes,
    /// both for the whole call, and either equal or not overlapping.
    #[target_feature(enable = "aes,sse2,avx,avx2,vaes,vpclmulqdq")]
    unsafe fn process_vaes<const ENC: bool>(
        &self,
        mut t: __m128i,
        src: *const u8,
        dst: *mut u8,
        len: usize,
    ) {
        let nr = self.rounds;
        let keys = if ENC { &self.enc } else { &self.dec };
        let mut rk = [_mm256_setzero_si256(); 15];
        for (r, k) in rk.iter_mut().zip(keys.iter()).take(nr + 1) {
            // SAFETY: 16-byte unaligned load from a 16-byte array, broadcast to both lanes.
            *r = unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(k.as_ptr().cast())) };
        }
        let poly = _mm_set_epi32(1, 1, 1, 0x87);
        let double = |t: __m128i| {
            let c = _mm_and_si128(_mm_shuffle_epi32(_mm_srai_epi32(t, 31), 0x93), poly);
            _mm_xor_si128(_mm_slli_epi32(t, 1), c)
        };
        let red = _mm256_set_epi64x(0, 0x87, 0, 0x87);
        // t·x¹⁶ in each lane: the 128-bit value shifted up two bytes, and the sixteen bits
        // shifted out folded back in times x⁷+x²+x+1 (at most 23 bits: no second fold).
        let times_x16 = |v: __m256i| {
            let top = _mm256_bsrli_epi128::<14>(v);
            _mm256_xor_si256(
                _mm256_bslli_epi128::<2>(v),
                _mm256_clmulepi64_epi128::<0x00>(top, red),
            )
        };
        let n = len / 16;
        let (from, p) = (src as *const __m256i, dst as *mut __m256i);
        let mut i = 0;
        if n >= 16 {
            // The first sixteen tweaks in four dependent steps instead of fifteen: (t, tα),
            // then times α², α⁴ and α⁸ of what is there (the 128-bit value shifted up by
            // 2 or 4 bits across its halves, the bits shifted out folded back in).
            let times_x2 = |v: __m256i| {
                let up = _mm256_or_si256(
                    _mm256_slli_epi64::<2>(v),
                    _mm256_srli_epi64::<62>(_mm256_bslli_epi128::<8>(v)),
                );
                let top = _mm256_srli_epi64::<62>(_mm256_bsrli_epi128::<8>(v));
                _mm256_xor_si256(up, _mm256_clmulepi64_epi128::<0x00>(top, red))
            };
            let times_x4 = |v: __m256i| {
                let up = _mm256_or_si256(
                    _mm256_slli_epi64::<4>(v),
                    _mm256_srli_epi64::<60>(_mm256_bslli_epi128::<8>(v)),
                );
                let top = _mm256_srli_epi64::<60>(_mm256_bsrli_epi128::<8>(v));
                _mm256_xor_si256(up, _mm256_clmulepi64_epi128::<0x00>(top, red))
            };
            let times_x8 = |v: __m256i| {
                let top = _mm256_bsrli_epi128::<15>(v);
                _mm256_xor_si256(
                    _mm256_bslli_epi128::<1>(v),
                    _mm256_clmulepi64_epi128::<0x00>(top, red),
                )
            };
            let mut tw = [_mm256_setzero_si256(); 8];
            tw[0] = _mm256_set_m128i(double(t), t);
            tw[1] = times_x2(tw[0]);
            tw[2] = times_x4(tw[0]);
            tw[3] = times_x4(tw[1]);
            for k in 0..4 {
                tw[k + 4] = times_x8(tw[k]);
            }
            loop {
                let mut b = [_mm256_setzero_si256(); 8];
                for k in 0..8 {
                    // SAFETY: blocks i + 2k, i + 2k + 1 < n lie inside the unit; unaligned
                    // load from the source.
                    let x = unsafe { _mm256_loadu_si256(from.add(i / 2 + k)) };
                    b[k] = _mm256_xor_si256(_mm256_xor_si256(x, tw[k]), rk[0]);
                }
                for r in rk.iter().take(nr).skip(1) {
                    for x in b.iter_mut() {
                        *x = if ENC {
                            _mm256_aesenc_epi128(*x, *r)
                        } else {
                            _mm256_aesdec_epi128(*x, *r)
                        };
                    }
                }
                for k in 0..8 {
                    let x = if ENC {
                        _mm256_aesenclast_epi128(b[k], rk[nr])
                    } else {
                        _mm256_aesdeclast_epi128(b[k], rk[nr])
                    };
                    // SAFETY: as for the load above; unaligned store to the destination
                    // (in place, to the 32 bytes just loaded and no longer needed).
                    unsafe { _mm256_storeu_si256(p.add(i / 2 + k), _mm256_xor_si256(x, tw[k])) };
                }
                i += 16;
                // The tweak of block i (the low lane of the first register, stepped on).
                t = _mm256_castsi256_si128(times_x16(tw[0]));
                if i + 16 > n {
                    break;
                }
                for x in tw.iter_mut() {
                    *x = times_x16(*x);
                }
            }
        }
        if i < n {
            // SAFETY: this function's contract includes AES-NI and SSE2 and the two ranges;
            // the tail (blocks i..n) is brought to the destination, then processed there in
            // place, continuing with the running tweak.
            unsafe {
                let tail = (n - i) * 16;
                if !std::ptr::eq(src, dst) {
                    std::ptr::copy_nonoverlapping(src.add(i * 16), dst.add(i * 16), tail);
                }
                self.blocks_from::<ENC>(t, std::slice::from_raw_parts_mut(dst.add(i * 16), tail))
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{BlockEncrypt, KeyInit};

    type EncFn = Box<dyn Fn(&mut [u8; 16])>;

    #[test]
    fn vaes_and_128_bit_loops_agree() {
        let key: Vec<u8> = (0..64u8).collect();
        let Some(mut x) = AesNiXts::new(&key[..32], &key[32..]) else {
            return;
        };
        if !x.vaes {
            return;
        }
        for len in [256usize, 272, 512, 528, 4096, 4144, 65536] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let iv = [9u8; 16];
            let mut a = plain.clone();
            x.process(&iv, &mut a, true);
            x.vaes = false;
            let mut b = plain.clone();
            x.process(&iv, &mut b, true);
            assert_eq!(a, b, "len {len}");
            x.process(&iv, &mut b, false);
            assert_eq!(b, plain);
            x.vaes = true;
            // Out of place: the same bytes, and the source is left alone.
            let mut c = vec![0u8; len];
            x.process_into(&iv, &plain, &mut c, true);
            assert_eq!(c, a, "len {len} into");
            let mut d = vec![0u8; len];
            x.process_into(&iv, &c, &mut d, false);
            assert_eq!(d, plain, "len {len} into, back");
        }
    }

    #[test]
    fn batched_units_match_one_unit_at_a_time() {
        let key: Vec<u8> = (0..64u8).map(|i| i ^ 0x5a).collect();
        let Some(mut x) = AesNiXts::new(&key[..32], &key[32..]) else {
            return;
        };
        let ivs: Vec<[u8; 16]> = (0..21u8).map(|i| [i.wrapping_mul(47); 16]).collect();
        let plain: Vec<u8> = (0..21 * 512).map(|i| (i * 5) as u8).collect();
        let mut want = plain.clone();
        for (iv, u) in ivs.iter().zip(want.chunks_mut(512)) {
            x.process(iv, u, true);
        }
        for vaes in [x.vaes, false] {
            x.vaes = vaes;
            let mut got = plain.clone();
            x.process_units(&ivs, None, &mut got, true);
            assert_eq!(got, want, "in place, vaes={vaes}");
            let mut back = vec![0u8; plain.len()];
            x.process_units(&ivs, Some(&got), &mut back, false);
            assert_eq!(back, plain, "into, vaes={vaes}");
        }
    }

    #[test]
    fn key_expansion_matches_aes_crate() {
        for len in [16, 24, 32] {
            let key: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let (rk, nr) = expand_key(&key).unwrap();
            // Encrypt one block with the schedule in software-free form: compare through
            // AES-NI when present, else only the first round key (the key itself).
            assert_eq!(&rk[0][..], &key[..16]);
            assert_eq!(nr, len / 4 + 6);
            if let Some(x) = AesNiXts::new(&key, &key) {
                let mut block = [0x42u8; 16];
                x.process(&[0; 16], &mut block, true);
                x.process(&[0; 16], &mut block, false);
                assert_eq!(block, [0x42; 16]);
                // XTS of a zero IV's first block = E_k1(P ^ T) ^ T with T = E_k2(0).
                let c: EncFn = match len {
                    16 => {
                        let a = aes::Aes128::new_from_slice(&key).unwrap();
                        Box::new(move |b| a.encrypt_block(b.into()))
                    }
                    24 => {
                        let a = aes::Aes192::new_from_slice(&key).unwrap();
                        Box::new(move |b| a.encrypt_block(b.into()))
                    }
                    _ => {
                        let a = aes::Aes256::new_from_slice(&key).unwrap();
                        Box::new(move |b| a.encrypt_block(b.into()))
                    }
                };
                let mut t = [0u8; 16];
                c(&mut t);
                let mut want = [0x42u8; 16];
                for (w, t) in want.iter_mut().zip(t) {
                    *w ^= t;
                }
                c(&mut want);
                for (w, t) in want.iter_mut().zip(t) {
                    *w ^= t;
                }
                let mut got = [0x42u8; 16];
                x.process(&[0; 16], &mut got, true);
                assert_eq!(got, want, "AES-{}", len * 8);
            }
        }
    }
}
