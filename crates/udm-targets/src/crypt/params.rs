//! The `crypt` table line: `<cipher> <key> <iv_offset> <dev> <offset> [<#opts> <opt>…]`,
//! parsed in the kernel's order with its messages, and printed back as the kernel prints it.

use std::fmt;
use udm_core::TargetError;
use udm_io::Sectors;
use zeroize::Zeroizing;

/// How the table names the key.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// Hex key (the decoded bytes).
    Hex(Zeroizing<Vec<u8>>),
    /// `-`: no key (only the null cipher takes one).
    Empty,
    /// `:<size>:<type>:<description>`: a key from the daemon's key store.
    Keyring {
        size: u32,
        ktype: String,
        desc: String,
    },
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Hex(k) => write!(f, "Hex(<{} bytes>)", k.len()),
            KeySpec::Empty => f.write_str("Empty"),
            KeySpec::Keyring { size, ktype, desc } => write!(f, ":{size}:{ktype}:{desc}"),
        }
    }
}

impl KeySpec {
    /// Key size in bytes.
    pub fn size(&self) -> usize {
        match self {
            KeySpec::Hex(k) => k.len(),
            KeySpec::Empty => 0,
            KeySpec::Keyring { size, .. } => *size as usize,
        }
    }
}

fn bad_key() -> TargetError {
    TargetError::invalid("Error decoding and setting key")
}

/// Key size as the kernel's `get_key_size` reads it (hex length / 2, or the `:<size>:` field).
pub fn key_size(word: &str) -> Result<usize, TargetError> {
    if !word.starts_with(':') {
        return Ok(word.len() / 2);
    }
    let rest = &word[1..];
    let (n, _) = rest
        .split_once(':')
        .ok_or_else(|| TargetError::invalid("Cannot parse key size"))?;
    udm_core::args::parse_num::<u32>(n)
        .map(|n| n as usize)
        .ok_or_else(|| TargetError::invalid("Cannot parse key size"))
}

/// Parse a key word (already checked by `key_size`): hex, `-`, or a key-store reference.
pub fn parse_key(word: &str) -> Result<KeySpec, TargetError> {
    let size = key_size(word)?;
    if word == "-" {
        return Ok(KeySpec::Empty);
    }
    if size == 0 && !word.starts_with(':') {
        return Err(bad_key());
    }
    if let Some(rest) = word.strip_prefix(':') {
        let (n, r) = rest.split_once(':').ok_or_else(bad_key)?;
        let size: u32 = udm_core::args::parse_num(n).ok_or_else(bad_key)?;
        if size == 0 || r.chars().any(char::is_whitespace) {
            return Err(bad_key());
        }
        let (ktype, desc) = r.split_once(':').ok_or_else(bad_key)?;
        if desc.is_empty() || !super::keyring::KEY_TYPES.contains(&ktype) {
            return Err(bad_key());
        }
        return Ok(KeySpec::Keyring {
            size,
            ktype: ktype.to_string(),
            desc: desc.to_string(),
        });
    }
    let hex = &word.as_bytes()[..size * 2];
    let mut out = Zeroizing::new(vec![0u8; size]);
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad_key())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad_key())?;
    }
    Ok(KeySpec::Hex(out))
}

/// Lower-case hex of `b`.
pub fn to_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Optional arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    pub allow_discards: bool,
    pub same_cpu_crypt: bool,
    pub submit_from_crypt_cpus: bool,
    pub no_read_workqueue: bool,
    pub no_write_workqueue: bool,
    /// Crypt sector size in bytes (512 unless `sector_size:N`).
    pub sector_size: u32,
    pub iv_large_sectors: bool,
    /// `integrity:<bytes>:<none|aead>` (accepted for its messages; needs an integrity device).
    pub integrity: Option<(u32, bool)>,
}

impl Features {
    /// Parse `[<#opts> <opt>…]` (the kernel's `crypt_ctr_optional`); `len` is the target length.
    pub fn parse(args: &[String], len: Sectors) -> Result<Features, TargetError> {
        let mut f = Features {
            sector_size: 512,
            ..Features::default()
        };
        if args.is_empty() {
            return Ok(f);
        }
        let nerr = || TargetError::invalid("Invalid number of feature args");
        let n: usize = udm_core::args::parse_num(&args[0]).ok_or_else(nerr)?;
        if n > 8 || n > args.len() - 1 {
            return Err(nerr());
        }
        for o in &args[1..=n] {
            let lo = o.to_ascii_lowercase();
            match lo.as_str() {
                "allow_discards" => f.allow_discards = true,
                "same_cpu_crypt" => f.same_cpu_crypt = true,
                "submit_from_crypt_cpus" => f.submit_from_crypt_cpus = true,
                "no_read_workqueue" => f.no_read_workqueue = true,
                "no_write_workqueue" => f.no_write_workqueue = true,
                "iv_large_sectors" => f.iv_large_sectors = true,
                _ => {
                    if let Some(v) = o.strip_prefix("integrity:") {
                        let (n, ty) = v.split_once(':').unwrap_or((v, ""));
                        let n: u32 = udm_core::args::parse_num(n)
                            .ok_or_else(|| TargetError::invalid("Invalid feature arguments"))?;
                        if n == 0 || n > 255 {
                            return Err(TargetError::invalid("Invalid integrity arguments"));
                        }
                        let aead = ty.eq_ignore_ascii_case("aead");
                        if !aead && !ty.eq_ignore_ascii_case("none") {
                            return Err(TargetError::invalid("Unknown integrity profile"));
                        }
                        f.integrity = Some((n, aead));
                    } else if let Some(v) = o.strip_prefix("sector_size:") {
                        let ss: u16 = udm_core::args::parse_num(v)
                            .ok_or_else(|| TargetError::invalid("Invalid feature arguments"))?;
                        if !(512..=4096).contains(&ss) || !ss.is_power_of_two() {
                            return Err(TargetError::invalid(
                                "Invalid feature value for sector_size",
                            ));
                        }
                        if len.0 & ((ss as u64 >> 9) - 1) != 0 {
                            return Err(TargetError::invalid(
                                "Device size is not multiple of sector_size feature",
                            ));
                        }
                        f.sector_size = ss as u32;
                    } else {
                        return Err(TargetError::invalid("Invalid feature arguments"));
                    }
                }
            }
        }
        Ok(f)
    }

    /// The feature words in the kernel's fixed order.
    pub fn words(&self) -> Vec<String> {
        let mut w = Vec::new();
        let flags = [
            (self.allow_discards, "allow_discards"),
            (self.same_cpu_crypt, "same_cpu_crypt"),
            (self.submit_from_crypt_cpus, "submit_from_crypt_cpus"),
            (self.no_read_workqueue, "no_read_workqueue"),
            (self.no_write_workqueue, "no_write_workqueue"),
        ];
        w.extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_string()));
        if let Some((n, aead)) = self.integrity {
            w.push(format!(
                "integrity:{n}:{}",
                if aead { "aead" } else { "none" }
            ));
        }
        if self.sector_size != 512 {
            w.push(format!("sector_size:{}", self.sector_size));
        }
        if self.iv_large_sectors {
            w.push("iv_large_sectors".into());
        }
        w
    }
}

/// Format a table line's params: `cipher key iv_offset dev offset [n opts…]`, the device
/// escaped for `split_args`.
pub fn format_table(
    cipher: &str,
    key: &str,
    iv_offset: u64,
    dev: &str,
    offset: Sectors,
    f: &Features,
) -> String {
    let dev = udm_core::Escaped(dev);
    let mut s = format!("{cipher} {key} {iv_offset} {dev} {offset}");
    let w = f.words();
    if !w.is_empty() {
        s.push_str(&format!(" {} {}", w.len(), w.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn keys() {
        assert_eq!(key_size(":32:logon:a:b").unwrap(), 32);
        assert!(key_size(":x:logon:a").is_err());
        assert!(key_size(":32").is_err());
        assert_eq!(parse_key("-").unwrap(), KeySpec::Empty);
        assert!(parse_key("0").is_err());
        assert!(parse_key("zz").is_err());
        match parse_key("0aFf1").unwrap() {
            KeySpec::Hex(k) => assert_eq!(&k[..], &[0x0a, 0xff]),
            k => panic!("{k:?}"),
        }
        match parse_key(":16:logon:cryptsetup:x").unwrap() {
            KeySpec::Keyring { size, ktype, desc } => {
                assert_eq!(
                    (size, ktype.as_str(), desc.as_str()),
                    (16, "logon", "cryptsetup:x")
                )
            }
            k => panic!("{k:?}"),
        }
        assert!(parse_key(":16:bogus:x").is_err());
    }

    #[test]
    fn features_round_trip_in_kernel_order() {
        let f = Features::parse(
            &v("5 iv_large_sectors sector_size:4096 no_write_workqueue ALLOW_DISCARDS same_cpu_crypt"),
            Sectors(8),
        )
        .unwrap();
        assert_eq!(
            f.words().join(" "),
            "allow_discards same_cpu_crypt no_write_workqueue sector_size:4096 iv_large_sectors"
        );
        let e = |a: &str, len| Features::parse(&v(a), Sectors(len)).unwrap_err().msg;
        assert_eq!(e("2 allow_discards", 8), "Invalid number of feature args");
        assert_eq!(
            e("9 a b c d e f g h i", 8),
            "Invalid number of feature args"
        );
        assert_eq!(
            e("1 sector_size:1000", 8),
            "Invalid feature value for sector_size"
        );
        assert_eq!(
            e("1 sector_size:4096", 4),
            "Device size is not multiple of sector_size feature"
        );
        assert_eq!(e("1 bogus", 8), "Invalid feature arguments");
    }
}
