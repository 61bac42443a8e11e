//! C's number parsing as dmsetup uses it on its arguments (`atoi`, whole-string `strtoul`),
//! so odd input means what it means to the C tools.

/// C `atoi`: optional leading space and sign, then digits; anything else stops the number.
pub fn atoi(s: &str) -> i32 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut v: i64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            break;
        }
        v = (v * 10 + (b - b'0') as i64).min(i64::from(i32::MAX) + 1);
    }
    let v = if neg { -v } else { v };
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// C `strtoul(s, &end, base)` requiring the whole string to be consumed; `None` on junk,
/// empty input or overflow. Base 0 accepts `0x` (hex) and leading-`0` (octal) forms.
pub fn strtoul_full(s: &str, base: u32) -> Option<u64> {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) =
        if (base == 0 || base == 16) && (t.starts_with("0x") || t.starts_with("0X")) && t.len() > 2
        {
            (16, &t[2..])
        } else if base == 0 && t.starts_with('0') && t.len() > 1 {
            (8, &t[1..])
        } else if base == 0 {
            (10, t)
        } else {
            (base, t)
        };
    if digits.is_empty() {
        return None;
    }
    let v = u64::from_str_radix(digits, radix).ok()?;
    Some(if neg { v.wrapping_neg() } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_number_helpers() {
        assert_eq!(atoi(" 12abc"), 12);
        assert_eq!(atoi("-3"), -3);
        assert_eq!(atoi("x"), 0);
        assert_eq!(atoi("99999999999"), i32::MAX);
        assert_eq!(strtoul_full("0x00410000", 0), Some(0x0041_0000));
        assert_eq!(strtoul_full("010", 0), Some(8));
        assert_eq!(strtoul_full("010", 8), Some(8));
        assert_eq!(strtoul_full("12abc", 0), None);
        assert_eq!(strtoul_full("", 0), None);
    }
}
