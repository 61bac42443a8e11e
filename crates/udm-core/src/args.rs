//! Kernel-style argument splitting and typed reading of table parameters (`dm_split_args`,
//! `dm_read_arg`).

use crate::target::TargetError;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// The bytes the kernel's `isspace` treats as word separators that can occur in UTF-8 text
/// on their own: space, `\t`, `\n`, `\v`, `\f`, `\r`.
pub fn is_arg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Split params into words exactly as the kernel's `dm_split_args` does: runs of whitespace
/// separate words; a backslash followed by any character stands for that character (`\ `
/// a space inside a word, `\\` a backslash, `\a` just `a`); a backslash that ends the text is
/// kept as itself.
///
/// One deliberate difference: the kernel's `isspace` also matches byte 0xA0 (Latin-1 NBSP),
/// which in UTF-8 text only occurs inside a multi-byte character; the kernel would cut that
/// character in half, udm keeps it whole (see `is_arg_space`).
pub fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|&c| is_arg_space(c)).is_some() {}
        if chars.peek().is_none() {
            return out;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => word.push(chars.next().unwrap_or('\\')),
                c if is_arg_space(c) => break,
                c => word.push(c),
            }
        }
        out.push(word);
    }
}

/// Quote one word for a table line so that `split_args` (and the kernel) give it back
/// unchanged: a backslash goes before every backslash and whitespace character. Words
/// without them are borrowed as they are.
pub fn escape_arg(word: &str) -> Cow<'_, str> {
    if !word.chars().any(|c| c == '\\' || is_arg_space(c)) {
        return Cow::Borrowed(word);
    }
    let mut o = String::with_capacity(word.len() + 4);
    for c in word.chars() {
        if c == '\\' || is_arg_space(c) {
            o.push('\\');
        }
        o.push(c);
    }
    Cow::Owned(o)
}

/// Displays a word escaped with `escape_arg`: what a target's params `Display` writes for a
/// device (an image path may hold spaces or backslashes; `major:minor` never does).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_arg(self.0))
    }
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
    fn splits_as_the_kernel() {
        assert_eq!(split_args("  a b\\ c  d\\\\ "), vec!["a", "b c", "d\\"]);
        assert!(split_args("   ").is_empty());
        assert!(split_args("").is_empty());
        // Every kernel whitespace byte separates; other characters never do.
        assert_eq!(
            split_args("a\tb\nc\x0bd\x0ce\rf"),
            vec!["a", "b", "c", "d", "e", "f"]
        );
        assert_eq!(
            split_args("a\u{a0}b\u{2003}c\u{85}d"),
            vec!["a\u{a0}b\u{2003}c\u{85}d"]
        );
        // A backslash before any other character stands for that character.
        assert_eq!(split_args("\\a\\:b \\\tc"), vec!["a:b", "\tc"]);
        assert_eq!(split_args("\\é"), vec!["é"]);
        // A trailing backslash is kept as itself.
        assert_eq!(split_args("a b\\"), vec!["a", "b\\"]);
        assert_eq!(split_args("\\"), vec!["\\"]);
        assert_eq!(split_args("x \\\\\\"), vec!["x", "\\\\"]);
        // An escaped space alone is a word.
        assert_eq!(split_args("a \\  b"), vec!["a", " ", "b"]);
    }
    #[test]
    fn escaping_round_trips() {
        let words = [
            "plain",
            "my disk",
            "a\\b",
            "tab\there",
            " ",
            "\\",
            "end\\",
            "\r\n",
        ];
        let line: Vec<String> = words.iter().map(|w| escape_arg(w).into_owned()).collect();
        assert_eq!(split_args(&line.join(" ")), words);
        assert!(matches!(escape_arg("8:16"), Cow::Borrowed("8:16")));
        assert_eq!(escape_arg("/tmp/my disk\\x"), "/tmp/my\\ disk\\\\x");
        assert_eq!(Escaped("a b").to_string(), "a\\ b");
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
