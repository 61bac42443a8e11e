//! The daemon's key store: what `:<size>:<logon|user|encrypted|trusted>:<description>` key
//! references in crypt tables resolve to (the kernel looks them up in its keyring). Keys come
//! in through the control socket (`udm key add`), never on a command line, and are zeroized
//! when replaced or removed.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// Key types a reference may name.
pub const KEY_TYPES: [&str; 4] = ["logon", "user", "encrypted", "trusted"];

type Store = Mutex<HashMap<(String, String), Zeroizing<Vec<u8>>>>;

fn store() -> &'static Store {
    static S: OnceLock<Store> = OnceLock::new();
    S.get_or_init(Store::default)
}

/// Why a key could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown key type {0:?} (logon, user, encrypted or trusted)")]
    Type(String),
    #[error("a key description must be non-empty and without whitespace")]
    Desc,
}

impl KeyError {
    pub fn errno(&self) -> i32 {
        libc::EINVAL
    }
}

/// A key given as hex text (`udm key add --hex`): whitespace ignored, an even number of hex
/// digits; `None` otherwise. Every copy is zeroized when dropped.
pub fn decode_hex(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let digits: Zeroizing<Vec<u8>> = Zeroizing::new(
        text.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(digits.len() / 2));
    for p in digits.chunks(2) {
        let v = |c: u8| (c as char).to_digit(16);
        out.push((v(p[0])? * 16 + v(p[1])?) as u8);
    }
    Some(out)
}

/// Store (or replace) the key `ktype:desc`.
pub fn add(ktype: &str, desc: &str, key: &[u8]) -> Result<(), KeyError> {
    if !KEY_TYPES.contains(&ktype) {
        return Err(KeyError::Type(ktype.to_string()));
    }
    if desc.is_empty() || desc.chars().any(char::is_whitespace) {
        return Err(KeyError::Desc);
    }
    store().lock().insert(
        (ktype.to_string(), desc.to_string()),
        Zeroizing::new(key.to_vec()),
    );
    Ok(())
}

/// Remove a key; true if it was there.
pub fn remove(ktype: &str, desc: &str) -> bool {
    store()
        .lock()
        .remove(&(ktype.to_string(), desc.to_string()))
        .is_some()
}

/// A copy of the key `ktype:desc`.
pub fn lookup(ktype: &str, desc: &str) -> Option<Zeroizing<Vec<u8>>> {
    store()
        .lock()
        .get(&(ktype.to_string(), desc.to_string()))
        .map(|k| Zeroizing::new(k.to_vec()))
}

/// Descriptions of the stored keys as `type:desc` (never the keys), sorted.
pub fn list() -> Vec<String> {
    let mut v: Vec<String> = store()
        .lock()
        .keys()
        .map(|(t, d)| format!("{t}:{d}"))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys() {
        assert_eq!(
            decode_hex(b"00 ff\nA0").unwrap().as_slice(),
            &[0, 0xff, 0xa0]
        );
        assert!(decode_hex(b"abc").is_none());
        assert!(decode_hex(b"zz").is_none());
        assert!(decode_hex(b"").unwrap().is_empty());
    }
}
