//! Kernel-faithful number parsing for target constructors and messages: `sscanf("%llu%c")`,
//! `sscanf("%u%c")` (as `dm_read_arg` uses it), `kstrtouint`/`kstrtoull`, and the
//! `dm_read_arg`/`dm_read_arg_group` helpers built on them.

use udm_core::TargetError;

/// The kernel's `sscanf(s, "%llu%c", ..) == 1`: decimal digits only (no sign, no prefix),
/// nothing after them. Overflow wraps, as `simple_strntoull` does.
pub fn scan_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(10).wrapping_add((b - b'0') as u64)
    }))
}

/// `sscanf(s, "%u%c", ..) == 1`: as `scan_u64`, then truncated to 32 bits as the kernel
/// stores it.
pub fn scan_u32(s: &str) -> Option<u32> {
    scan_u64(s).map(|v| v as u32)
}

/// `kstrtoull(s, 10, ..)`: an optional `+`, decimal digits, an optional trailing newline;
/// overflow is an error.
pub fn kstrtou64(s: &str) -> Option<u64> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `kstrtouint(s, 10, ..)`.
pub fn kstrtou32(s: &str) -> Option<u32> {
    kstrtou64(s).and_then(|v| u32::try_from(v).ok())
}

/// The kernel's `struct dm_arg`: an inclusive range and the error to report.
pub struct DmArg {
    pub min: u32,
    pub max: u32,
    pub error: &'static str,
}

/// A cursor over constructor words (`struct dm_arg_set`).
pub struct ArgSet<'a> {
    args: &'a [String],
    pos: usize,
}

impl<'a> ArgSet<'a> {
    pub fn new(args: &'a [String]) -> ArgSet<'a> {
        ArgSet { args, pos: 0 }
    }
    /// Words left.
    pub fn argc(&self) -> usize {
        self.args.len() - self.pos
    }
    /// `dm_shift_arg`: the next word, if any.
    pub fn shift(&mut self) -> Option<&'a str> {
        let a = self.args.get(self.pos)?;
        self.pos += 1;
        Some(a)
    }
    /// `dm_read_arg`.
    pub fn read_arg(&mut self, a: &DmArg) -> Result<u32, TargetError> {
        self.validate(a, false)
    }
    /// `dm_read_arg_group`: a count that must not exceed the words left.
    pub fn read_arg_group(&mut self, a: &DmArg) -> Result<u32, TargetError> {
        self.validate(a, true)
    }
    fn validate(&mut self, a: &DmArg, grouped: bool) -> Result<u32, TargetError> {
        let v = self.shift().and_then(scan_u32);
        match v {
            Some(v) if v >= a.min && v <= a.max && (!grouped || self.argc() >= v as usize) => Ok(v),
            _ => Err(TargetError::invalid(a.error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sscanf_rules() {
        assert_eq!(scan_u64("42"), Some(42));
        assert_eq!(scan_u64("+42"), None);
        assert_eq!(scan_u64("-1"), None);
        assert_eq!(scan_u64("0x10"), None);
        assert_eq!(scan_u64("1 "), None);
        assert_eq!(scan_u32("4294967297"), Some(1));
    }

    #[test]
    fn kstrto_rules() {
        assert_eq!(kstrtou32("+7"), Some(7));
        assert_eq!(kstrtou32("7\n"), Some(7));
        assert_eq!(kstrtou32("4294967296"), None);
        assert_eq!(kstrtou64("x"), None);
    }

    #[test]
    fn arg_group_checks_words_left() {
        let w: Vec<String> = ["2", "a"].iter().map(|s| s.to_string()).collect();
        let mut s = ArgSet::new(&w);
        let g = DmArg {
            min: 0,
            max: 6,
            error: "bad",
        };
        assert_eq!(s.read_arg_group(&g).unwrap_err().msg, "bad");
    }
}
