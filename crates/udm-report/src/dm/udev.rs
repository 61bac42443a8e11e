//! libdm's udev cookies as dmsetup shows them. udm sends no uevents, so there is never a
//! transaction to wait for; what is left is the cookie's value and the flags it carries.

use super::cnum::strtoul_full;

/// A cookie argument (`strtoul(s, 0)`): non-zero and within 32 bits.
pub fn cookie_value(s: &str) -> Option<u32> {
    strtoul_full(s, 0)
        .filter(|v| *v != 0 && *v <= u64::from(u32::MAX))
        .map(|v| v as u32)
}

/// The names of the flags in a cookie's upper 16 bits (libdm's `DM_UDEV_*_FLAG`).
const FLAG_NAMES: [&str; 7] = [
    "DISABLE_DM_RULES",
    "DISABLE_SUBSYSTEM_RULES",
    "DISABLE_DISK_RULES",
    "DISABLE_OTHER_RULES",
    "LOW_PRIORITY",
    "DISABLE_LIBRARY_FALLBACK",
    "PRIMARY_SOURCE",
];

/// `udevflags COOKIE`: one `NAME='1'` line per flag set.
pub fn flags_text(cookie: u32) -> String {
    let flags = cookie >> 16;
    let mut s = String::new();
    for i in 0..16 {
        if flags & (1 << i) == 0 {
            continue;
        }
        if let Some(n) = FLAG_NAMES.get(i) {
            s.push_str(&format!("DM_UDEV_{n}_FLAG='1'\n"));
        } else if i < 8 {
            s.push_str(&format!("DM_UDEV_FLAG{i}='1'\n"));
        } else {
            s.push_str(&format!("DM_SUBSYSTEM_UDEV_FLAG{}='1'\n", i - 8));
        }
    }
    s
}

/// `udevcomplete COOKIE`'s line.
pub fn complete_text(cookie: u32) -> String {
    format!("DM_COOKIE_COMPLETED=0x{cookie:<10x}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        assert_eq!(cookie_value("0x0d4d0001"), Some(0x0d4d_0001));
        assert_eq!(cookie_value("0"), None);
        assert_eq!(cookie_value("0x100000000"), None);
        assert_eq!(cookie_value("017"), Some(15));
        assert_eq!(
            flags_text(0x0081_0d4d),
            "DM_UDEV_DISABLE_DM_RULES_FLAG='1'\nDM_UDEV_FLAG7='1'\n"
        );
        assert_eq!(
            flags_text(0x4040_0000),
            "DM_UDEV_PRIMARY_SOURCE_FLAG='1'\nDM_SUBSYSTEM_UDEV_FLAG6='1'\n"
        );
        assert_eq!(
            complete_text(0xd4d0001),
            "DM_COOKIE_COMPLETED=0xd4d0001   \n"
        );
    }
}
