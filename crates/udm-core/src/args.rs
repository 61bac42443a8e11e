//! Kernel-style argument splitting and typed reading of table parameters (`dm_split_args`,
//! `dm_read_arg`).

use crate::target::TargetError;
use std::str::FromStr;

/// Split params on whitespace; a backslash escapes the next character (as `dm_split_args`).
pub fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            in_word = true;
        } else if c.is_whitespace() {
            if in_word {
                out.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// Reads a target's arguments in order with the kernel's checks.
pub struct ArgReader<'a> {
    args: &'a [String],
    pos: usize,
}

impl<'a> ArgReader<'a> {
    pub fn new(args: &'a [String]) -> ArgReader<'a> {
        ArgReader { args, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.args.len() - self.pos
    }
    /// Next word, or `err` if none is left.
    pub fn next(&mut self, err: &str) -> Result<&'a str, TargetError> {
        let a = self
            .args
            .get(self.pos)
            .ok_or_else(|| TargetError::invalid(err))?;
        self.pos += 1;
        Ok(a)
    }
    /// Next word parsed as a number: unsigned decimal, nothing trailing.
    pub fn num<T: FromStr>(&mut self, err: &str) -> Result<T, TargetError> {
        let a = self.next(err)?;
        parse_num(a).ok_or_else(|| TargetError::invalid(err))
    }
    /// Next word as a number within `[lo, hi]`.
    pub fn num_in(&mut self, lo: u64, hi: u64, err: &str) -> Result<u64, TargetError> {
        let v: u64 = self.num(err)?;
        if v < lo || v > hi {
            return Err(TargetError::invalid(err));
        }
        Ok(v)
    }
    /// The rest of the words.
    pub fn rest(&mut self) -> &'a [String] {
        let r = &self.args[self.pos..];
        self.pos = self.args.len();
        r
    }
}

/// Parse an unsigned decimal with no sign, spaces or trailing characters.
pub fn parse_num<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn splits_with_escapes() {
        assert_eq!(split_args("  a b\\ c  d\\\\ "), vec!["a", "b c", "d\\"]);
        assert!(split_args("   ").is_empty());
    }
    #[test]
    fn numbers_are_strict() {
        assert_eq!(parse_num::<u64>("12"), Some(12));
        assert_eq!(parse_num::<u64>("12x"), None);
        assert_eq!(parse_num::<u64>("-1"), None);
        assert_eq!(parse_num::<u64>("+1"), None);
        assert_eq!(parse_num::<u64>(""), None);
        assert_eq!(parse_num::<u8>("256"), None);
    }
}
