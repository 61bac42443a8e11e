//! Key derivation for keyslots and digests: PBKDF2 (HMAC with sha1/sha256/sha512/…) and
//! Argon2i/Argon2id, with the parameters LUKS stores.

use super::{LuksError, Zeroizing};

/// A key-derivation function with its parameters (the salt is passed separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kdf {
    Pbkdf2 {
        hash: String,
        iterations: u32,
    },
    Argon2 {
        /// `argon2i` or `argon2id`.
        id: bool,
        /// Passes.
        time: u32,
        /// KiB.
        memory: u32,
        /// Lanes.
        cpus: u32,
    },
}

impl Kdf {
    /// The LUKS2 `type` name.
    pub fn name(&self) -> &'static str {
        match self {
            Kdf::Pbkdf2 { .. } => "pbkdf2",
            Kdf::Argon2 { id: true, .. } => "argon2id",
            Kdf::Argon2 { id: false, .. } => "argon2i",
        }
    }
}

fn pbkdf2_hmac(hash: &str, pass: &[u8], salt: &[u8], iter: u32, out: &mut [u8]) -> bool {
    use pbkdf2::pbkdf2_hmac as p;
    match hash {
        "sha1" => p::<sha1::Sha1>(pass, salt, iter, out),
        "sha224" => p::<sha2::Sha224>(pass, salt, iter, out),
        "sha256" => p::<sha2::Sha256>(pass, salt, iter, out),
        "sha384" => p::<sha2::Sha384>(pass, salt, iter, out),
        "sha512" => p::<sha2::Sha512>(pass, salt, iter, out),
        "ripemd160" => p::<ripemd::Ripemd160>(pass, salt, iter, out),
        _ => return false,
    }
    true
}

/// Derive `len` bytes from `pass` and `salt`.
pub fn derive(
    kdf: &Kdf,
    pass: &[u8],
    salt: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    match kdf {
        Kdf::Pbkdf2 { hash, iterations } => {
            if *iterations == 0 {
                return Err(LuksError::Invalid("PBKDF2 with 0 iterations".into()));
            }
            if !pbkdf2_hmac(hash, pass, salt, *iterations, &mut out) {
                return Err(LuksError::Unsupported(format!("hash {hash}")));
            }
        }
        Kdf::Argon2 {
            id,
            time,
            memory,
            cpus,
        } => {
            let params = argon2::Params::new(*memory, *time, *cpus, Some(len))
                .map_err(|e| LuksError::Invalid(format!("Argon2 parameters: {e}")))?;
            let alg = if *id {
                argon2::Algorithm::Argon2id
            } else {
                argon2::Algorithm::Argon2i
            };
            argon2::Argon2::new(alg, argon2::Version::V0x13, params)
                .hash_password_into(pass, salt, &mut out)
                .map_err(|e| LuksError::Invalid(format!("Argon2: {e}")))?;
        }
    }
    Ok(out)
}

/// PBKDF2 iterations per second for `hash` (a short measurement, for `--iter-time`).
pub fn pbkdf2_speed(hash: &str, key_len: usize) -> Result<u64, LuksError> {
    let mut out = vec![0u8; key_len.max(1)];
    let mut iter = 1000u32;
    loop {
        let t = std::time::Instant::now();
        if !pbkdf2_hmac(hash, b"udm-benchmark", &[0u8; 32], iter, &mut out) {
            return Err(LuksError::Unsupported(format!("hash {hash}")));
        }
        let el = t.elapsed().as_secs_f64();
        if el > 0.05 || iter >= 1 << 24 {
            return Ok(((iter as f64 / el.max(1e-6)) as u64).max(1000));
        }
        iter *= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn pbkdf2_rfc6070() {
        let k = Kdf::Pbkdf2 {
            hash: "sha1".into(),
            iterations: 2,
        };
        let out = derive(&k, b"password", b"salt", 20).unwrap();
        assert_eq!(hex(&out), "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
    }

    #[test]
    fn argon2_runs_with_small_memory() {
        let k = Kdf::Argon2 {
            id: true,
            time: 1,
            memory: 64,
            cpus: 1,
        };
        let a = derive(&k, b"pw", &[1; 32], 32).unwrap();
        let b = derive(&k, b"pw", &[1; 32], 32).unwrap();
        assert_eq!(a, b);
        assert!(derive(&k, b"pw", &[1; 32], 0).is_err() || a.len() == 32);
    }
}
