//! What cryptsetup builds and reads back, as a library (the binary only parses argv and
//! prints): the `crypt` table line of a mapping (LUKS1, LUKS2 with its key in the key store,
//! plain; optionally over an integrity device: `integrity:N:aead`), and the fields
//! `cryptsetup status` shows, parsed from a live table line.

use super::params::to_hex;
use zeroize::Zeroizing;

/// What a crypt mapping needs.
pub struct CryptMapping {
    pub cipher: String,
    pub key: Zeroizing<Vec<u8>>,
    pub iv_offset: u64,
    /// Data offset on the device, in sectors.
    pub offset: u64,
    pub sectors: u64,
    pub sector_size: u32,
    pub uuid: String,
    /// LUKS2: the key goes into the key store as `logon` key `cryptsetup:<uuid>-d0` and the
    /// table names it (`:<size>:logon:cryptsetup:…`), as cryptsetup uses the kernel keyring.
    pub key_desc: Option<String>,
    /// Tag bytes per sector and the integrity profile (`aead`, `none`), when the
    /// mapping sits on an integrity device.
    pub integrity: Option<(u32, String)>,
}

/// Activation flags that become optional table words.
#[derive(Debug, Clone, Default)]
pub struct CryptFlags {
    pub allow_discards: bool,
    /// `same_cpu_crypt`, `submit_from_crypt_cpus`, `no_read_workqueue`, `no_write_workqueue`.
    pub perf: Vec<String>,
    pub iv_large_sectors: bool,
}

/// The logon-key description cryptsetup gives a LUKS2 volume key (segment 0).
pub fn keyring_desc(uuid: &str) -> String {
    format!("cryptsetup:{uuid}-d0")
}

const PERF: [&str; 4] = [
    "same_cpu_crypt",
    "submit_from_crypt_cpus",
    "no_read_workqueue",
    "no_write_workqueue",
];

/// The optional-argument words, in the kernel's order.
pub fn feature_words(
    f: &CryptFlags,
    sector_size: u32,
    integrity: Option<&(u32, String)>,
) -> Vec<String> {
    let mut w = Vec::new();
    if f.allow_discards {
        w.push("allow_discards".to_string());
    }
    for p in PERF {
        if f.perf.iter().any(|x| x == p) {
            w.push(p.to_string());
        }
    }
    if let Some((n, ty)) = integrity {
        w.push(format!("integrity:{n}:{ty}"));
    }
    if sector_size != 512 {
        w.push(format!("sector_size:{sector_size}"));
    }
    if f.iv_large_sectors {
        w.push("iv_large_sectors".into());
    }
    w
}

/// The table params of mapping `m` over device `dev` (an absolute path or `maj:min`).
pub fn table_params(m: &CryptMapping, f: &CryptFlags, dev: &str) -> Zeroizing<String> {
    let mut s = Zeroizing::new(format!(
        "{} {} {} {} {}",
        m.cipher,
        match &m.key_desc {
            Some(d) => format!(":{}:logon:{d}", m.key.len()),
            None if m.key.is_empty() => "-".to_string(),
            None => to_hex(&m.key),
        },
        m.iv_offset,
        dev,
        m.offset
    ));
    let w = feature_words(f, m.sector_size, m.integrity.as_ref());
    if !w.is_empty() {
        s.push_str(&format!(" {} {}", w.len(), w.join(" ")));
    }
    s
}

/// The kernel cipher and the per-sector integrity tag size of a LUKS2 segment with
/// `encryption` (`aes-xts-random`, `aes-gcm-random`, `chacha20-random`) and integrity type
/// (`hmac(sha256)`, `aead`, `poly1305`), as cryptsetup maps them; None when udm has no such
/// authenticated cipher.
pub fn luks2_integrity_cipher(encryption: &str, integrity: &str) -> Option<(String, u32)> {
    let mut p = encryption.splitn(3, '-');
    let (cipher, mode, iv) = (p.next()?, p.next()?, p.next().unwrap_or(""));
    let (api, tag) = match (cipher, mode, iv, integrity) {
        ("aes", "xts", "random", "hmac(sha256)") => ("authenc(hmac(sha256),xts(aes))", 16 + 32),
        ("aes", "gcm", "random", "aead") => ("gcm(aes)", 12 + 16),
        ("chacha20", "random", "", "poly1305") => ("rfc7539(chacha20,poly1305)", 12 + 16),
        _ => return None,
    };
    Some((format!("capi:{api}-random"), tag))
}

/// The fields of a live `crypt` table line that `cryptsetup status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptStatus {
    pub cipher: String,
    pub key_bits: u64,
    /// The key is in the key store (`keyring`), not the table (`dm-crypt`).
    pub in_keyring: bool,
    pub device: String,
    pub iv_offset: String,
    pub offset: String,
    pub sector_size: String,
    /// `discards` and the performance flags, as cryptsetup names them.
    pub flags: Vec<String>,
    pub integrity: Option<(u32, String)>,
}

/// Parse the params of a live `crypt` table line.
pub fn parse_status(params: &str) -> Option<CryptStatus> {
    let w = udm_core::split_args(params);
    if w.len() < 5 {
        return None;
    }
    let key_bits = if w[1].starts_with(':') {
        w[1].split(':')
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            * 8
    } else {
        w[1].len() as u64 * 4
    };
    let opts = w.get(6..).unwrap_or(&[]);
    let flags = opts
        .iter()
        .map(String::as_str)
        .filter(|x| *x == "allow_discards" || PERF.contains(x))
        .map(|x| if x == "allow_discards" { "discards" } else { x }.to_string())
        .collect();
    let integrity = opts.iter().find_map(|x| {
        let (n, ty) = x.strip_prefix("integrity:")?.split_once(':')?;
        Some((n.parse().ok()?, ty.to_string()))
    });
    Some(CryptStatus {
        cipher: w[0].clone(),
        key_bits,
        in_keyring: w[1].starts_with(':'),
        device: w[3].clone(),
        iv_offset: w[2].clone(),
        offset: w[4].clone(),
        sector_size: opts
            .iter()
            .find_map(|x| x.strip_prefix("sector_size:"))
            .unwrap_or("512")
            .to_string(),
        flags,
        integrity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_status_round_trip() {
        let m = CryptMapping {
            cipher: "capi:authenc(hmac(sha256),xts(aes))-random".into(),
            key: Zeroizing::new(vec![1; 96]),
            iv_offset: 0,
            offset: 0,
            sectors: 100,
            sector_size: 4096,
            uuid: "u".into(),
            key_desc: Some(keyring_desc("abc")),
            integrity: Some((48, "aead".into())),
        };
        let f = CryptFlags {
            allow_discards: true,
            perf: vec!["no_read_workqueue".into()],
            iv_large_sectors: false,
        };
        let t = table_params(&m, &f, "/dev/mapper/x_dif");
        assert_eq!(
            t.as_str(),
            "capi:authenc(hmac(sha256),xts(aes))-random :96:logon:cryptsetup:abc-d0 0 /dev/mapper/x_dif 0 4 allow_discards no_read_workqueue integrity:48:aead sector_size:4096"
        );
        let s = parse_status(&t).unwrap();
        assert_eq!(s.key_bits, 768);
        assert!(s.in_keyring);
        assert_eq!(s.flags, ["discards", "no_read_workqueue"]);
        assert_eq!(s.integrity, Some((48, "aead".into())));
        assert_eq!(s.sector_size, "4096");
    }
}
