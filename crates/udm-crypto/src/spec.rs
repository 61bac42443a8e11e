//! dm-crypt cipher specifications: the legacy `cipher[:keycount]-chainmode-ivmode[:ivopts]`
//! form and the `capi:<crypto api spec>-ivmode[:ivopts]` form, parsed with the kernel's rules
//! and error messages.

use std::str::FromStr;

/// Chaining mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    Xts,
    Cbc,
    Ecb,
}

/// IV generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvMode {
    /// 32-bit little-endian sector number.
    Plain,
    /// 64-bit little-endian sector number.
    Plain64,
    /// 64-bit big-endian sector number in the last 8 bytes.
    Plain64Be,
    /// Sector number encrypted with a key hashed from the volume key (hash name).
    Essiv(String),
    /// Big-endian narrow-block count, from 1.
    Benbi,
    /// All zeroes.
    Null,
    /// Random (needs integrity metadata to store it; refused without).
    Random,
}

/// A parsed cipher specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CipherSpec {
    /// Block cipher name (`aes`, `serpent`, `twofish`, `cipher_null`).
    pub cipher: String,
    pub chain: Chain,
    pub iv: Option<IvMode>,
    /// Number of keys (a power of two); sectors use key `sector % keycount`.
    pub keycount: u32,
}

/// A cipher specification the kernel would refuse, with its constructor message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("Bad cipher specification")]
    Bad,
    #[error("Bad cipher key count specification")]
    KeyCount,
    #[error("IV mechanism required")]
    IvRequired,
    #[error("Digest algorithm missing for ESSIV mode")]
    EssivDigest,
    /// Unknown cipher or chaining mode (ENOENT).
    #[error("Error allocating crypto tfm")]
    Alloc,
    #[error("Invalid IV mode")]
    IvMode,
}

impl SpecError {
    /// The errno the kernel returns.
    pub fn errno(&self) -> i32 {
        match self {
            SpecError::Alloc => libc::ENOENT,
            _ => libc::EINVAL,
        }
    }
}

fn chain_of(s: &str) -> Result<Chain, SpecError> {
    match s {
        "xts" => Ok(Chain::Xts),
        "cbc" => Ok(Chain::Cbc),
        "ecb" => Ok(Chain::Ecb),
        _ => Err(SpecError::Alloc),
    }
}

fn check_cipher(c: &str) -> Result<(), SpecError> {
    match super::cipher::key_sizes(c) {
        Some(_) => Ok(()),
        None => Err(SpecError::Alloc),
    }
}

fn iv_of(
    chain: Chain,
    mode: Option<&str>,
    opts: Option<&str>,
) -> Result<Option<IvMode>, SpecError> {
    if chain == Chain::Ecb {
        // No IV for ECB: the kernel warns "Selected cipher does not support IVs" and goes on.
        return Ok(None);
    }
    let Some(mode) = mode else {
        return Ok(None);
    };
    Ok(Some(match mode {
        "plain" => IvMode::Plain,
        "plain64" => IvMode::Plain64,
        "plain64be" => IvMode::Plain64Be,
        "essiv" => IvMode::Essiv(opts.unwrap_or_default().to_string()),
        "benbi" => IvMode::Benbi,
        "null" => IvMode::Null,
        "random" => IvMode::Random,
        _ => return Err(SpecError::IvMode),
    }))
}

impl FromStr for CipherSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<CipherSpec, SpecError> {
        if let Some(rest) = s.strip_prefix("capi:") {
            return parse_capi(rest);
        }
        if s.contains('(') {
            return Err(SpecError::Bad);
        }
        let mut parts = s.splitn(2, '-');
        let head = parts.next().unwrap_or_default();
        let tail = parts.next();
        let (cipher, keycount) = match head.split_once(':') {
            None => (head, 1),
            Some((c, n)) => {
                let n: u32 = parse_num(n).ok_or(SpecError::KeyCount)?;
                if !n.is_power_of_two() {
                    return Err(SpecError::KeyCount);
                }
                (c, n)
            }
        };
        let (mut chain, mut ivmode, mut ivopts) = (None, None, None);
        if let Some(t) = tail {
            let mut p = t.splitn(2, '-');
            chain = p.next();
            if let Some(iv) = p.next() {
                match iv.split_once(':') {
                    Some((m, o)) => {
                        ivmode = Some(m);
                        ivopts = Some(o);
                    }
                    None => ivmode = Some(iv),
                }
            }
        }
        if chain.is_none() || (chain == Some("plain") && ivmode.is_none()) {
            chain = Some("cbc");
            ivmode = Some("plain");
        }
        let chain_s = chain.unwrap_or("cbc");
        if chain_s != "ecb" && ivmode.is_none() {
            return Err(SpecError::IvRequired);
        }
        if ivmode == Some("essiv") && ivopts.is_none() {
            return Err(SpecError::EssivDigest);
        }
        check_cipher(cipher)?;
        let chain = chain_of(chain_s)?;
        let iv = iv_of(chain, ivmode, ivopts)?;
        Ok(CipherSpec {
            cipher: cipher.to_string(),
            chain,
            iv,
            keycount,
        })
    }
}

/// `capi:mode(cipher)-ivmode[:ivopts]`.
fn parse_capi(rest: &str) -> Result<CipherSpec, SpecError> {
    let (rest, ivopts) = match rest.rfind(':') {
        Some(p) => (&rest[..p], Some(&rest[p + 1..])),
        None => (rest, None),
    };
    let (api, ivmode) = match rest.rfind('-') {
        Some(p) => (&rest[..p], Some(&rest[p + 1..])),
        None => (rest, None),
    };
    if ivmode == Some("essiv") && ivopts.is_none() {
        return Err(SpecError::EssivDigest);
    }
    let (mode, cipher) = api
        .strip_suffix(')')
        .and_then(|a| a.split_once('('))
        .ok_or(SpecError::Alloc)?;
    check_cipher(cipher)?;
    let chain = chain_of(mode)?;
    let iv = iv_of(chain, ivmode, ivopts)?;
    Ok(CipherSpec {
        cipher: cipher.to_string(),
        chain,
        iv,
        keycount: 1,
    })
}

/// A plain decimal number (digits only, as the kernel's `kstrtouint` with base 10 takes it).
fn parse_num<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_capi_forms() {
        let s: CipherSpec = "aes-xts-plain64".parse().unwrap();
        assert_eq!(
            (s.chain, s.iv, s.keycount),
            (Chain::Xts, Some(IvMode::Plain64), 1)
        );
        let s: CipherSpec = "aes-cbc-essiv:sha256".parse().unwrap();
        assert_eq!(s.iv, Some(IvMode::Essiv("sha256".into())));
        let s: CipherSpec = "aes".parse().unwrap();
        assert_eq!((s.chain, s.iv), (Chain::Cbc, Some(IvMode::Plain)));
        let s: CipherSpec = "aes-plain".parse().unwrap();
        assert_eq!((s.chain, s.iv), (Chain::Cbc, Some(IvMode::Plain)));
        let s: CipherSpec = "capi:xts(aes)-plain64".parse().unwrap();
        assert_eq!((s.cipher.as_str(), s.chain), ("aes", Chain::Xts));
        let s: CipherSpec = "capi:cbc(aes)-essiv:sha256".parse().unwrap();
        assert_eq!(s.iv, Some(IvMode::Essiv("sha256".into())));
        let s: CipherSpec = "aes:4-cbc-plain".parse().unwrap();
        assert_eq!(s.keycount, 4);
        let s: CipherSpec = "aes-ecb-whatever".parse().unwrap();
        assert_eq!(s.iv, None);
    }

    #[test]
    fn kernel_errors() {
        let e = |s: &str| s.parse::<CipherSpec>().unwrap_err().to_string();
        assert_eq!(e("aes-cbc"), "IV mechanism required");
        assert_eq!(e("aes:3-cbc-plain"), "Bad cipher key count specification");
        assert_eq!(e("xts(aes)-plain64"), "Bad cipher specification");
        assert_eq!(
            e("aes-cbc-essiv"),
            "Digest algorithm missing for ESSIV mode"
        );
        assert_eq!(e("blowfishy-cbc-plain"), "Error allocating crypto tfm");
        assert_eq!(e("aes-ofb-plain"), "Error allocating crypto tfm");
        assert_eq!(e("aes-cbc-bogus"), "Invalid IV mode");
    }
}
