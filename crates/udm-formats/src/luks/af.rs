//! The anti-forensic information splitter (AF, from TKS1) that LUKS1 and LUKS2 (`af.type
//! "luks1"`) use: a key becomes `stripes` blocks whose XOR-and-diffuse chain gives it back.

use super::{random_bytes, LuksError, Zeroizing};
use sha2::Digest;

/// Digest size of a hash LUKS may name, or `None` if unsupported.
pub fn hash_size(hash: &str) -> Option<usize> {
    Some(match hash {
        "sha1" | "ripemd160" => 20,
        "sha224" => 28,
        "sha256" => 32,
        "sha384" => 48,
        "sha512" => 64,
        _ => return None,
    })
}

fn digest(hash: &str, parts: &[&[u8]]) -> Vec<u8> {
    macro_rules! h {
        ($t:ty) => {{
            let mut d = <$t>::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }};
    }
    match hash {
        "sha1" => h!(sha1::Sha1),
        "sha224" => h!(sha2::Sha224),
        "sha256" => h!(sha2::Sha256),
        "sha384" => h!(sha2::Sha384),
        "sha512" => h!(sha2::Sha512),
        _ => h!(ripemd::Ripemd160),
    }
}

/// The diffuse step: each digest-sized chunk `i` becomes `H(be32(i) || chunk)` (truncated for
/// the last, short chunk).
fn diffuse(buf: &mut [u8], hash: &str, ds: usize) {
    for (i, chunk) in buf.chunks_mut(ds).enumerate() {
        let d = digest(hash, &[&(i as u32).to_be_bytes(), chunk]);
        let n = chunk.len();
        chunk.copy_from_slice(&d[..n]);
    }
}

fn check(hash: &str, key_len: usize, stripes: u32, src_len: usize) -> Result<usize, LuksError> {
    let ds = hash_size(hash).ok_or_else(|| LuksError::Unsupported(format!("hash {hash}")))?;
    if stripes == 0 || key_len == 0 || src_len != key_len * stripes as usize {
        return Err(LuksError::Invalid(format!(
            "AF material of {src_len} bytes does not hold {stripes} stripes of {key_len}"
        )));
    }
    Ok(ds)
}

/// Recover a `key_len`-byte key from `stripes` AF blocks.
pub fn merge(
    src: &[u8],
    key_len: usize,
    stripes: u32,
    hash: &str,
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let ds = check(hash, key_len, stripes, src.len())?;
    let mut acc = Zeroizing::new(vec![0u8; key_len]);
    let blocks: Vec<&[u8]> = src.chunks(key_len).collect();
    for b in &blocks[..blocks.len() - 1] {
        for (a, x) in acc.iter_mut().zip(b.iter()) {
            *a ^= x;
        }
        diffuse(&mut acc, hash, ds);
    }
    for (a, x) in acc.iter_mut().zip(blocks[blocks.len() - 1]) {
        *a ^= x;
    }
    Ok(acc)
}

/// Split `key` into `stripes` AF blocks (random except the last).
pub fn split(key: &[u8], stripes: u32, hash: &str) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let n = key.len();
    let ds = check(hash, n, stripes, n * stripes as usize)?;
    let mut out = random_bytes(n * stripes as usize);
    let mut acc = Zeroizing::new(vec![0u8; n]);
    for b in out[..n * (stripes as usize - 1)].chunks(n) {
        for (a, x) in acc.iter_mut().zip(b) {
            *a ^= x;
        }
        diffuse(&mut acc, hash, ds);
    }
    let last = &mut out[n * (stripes as usize - 1)..];
    for ((l, a), k) in last.iter_mut().zip(acc.iter()).zip(key) {
        *l = a ^ k;
    }
    Ok(out)
}

/// Bytes of AF material for a key, rounded up to whole 512-byte sectors (as on disk).
pub fn area_bytes(key_len: usize, stripes: u32) -> u64 {
    ((key_len as u64 * stripes as u64).div_ceil(512)) * 512
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_merge() {
        for hash in ["sha1", "sha256", "sha512", "ripemd160"] {
            for len in [16usize, 32, 33, 64] {
                let key: Vec<u8> = (0..len as u8).collect();
                let m = split(&key, 4000, hash).unwrap();
                assert_eq!(&merge(&m, len, 4000, hash).unwrap()[..], &key[..]);
                let mut bad = m.clone();
                bad[5] ^= 1;
                assert_ne!(&merge(&bad, len, 4000, hash).unwrap()[..], &key[..]);
            }
        }
        assert!(merge(&[0; 10], 4, 3, "sha256").is_err());
        assert!(split(&[0; 4], 3, "md4").is_err());
    }
}
