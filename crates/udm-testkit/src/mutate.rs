//! Mutations of a valid on-disk image for fuzz tests: bit flips, byte and field overwrites
//! (with the values that break length arithmetic: 0, 1, all ones, the sign bit) and
//! truncation. Starting from a valid image lets the damage reach past the magic and checksum
//! checks into the deep parts of a parser; the proptest strategy [`mutations`] shrinks to
//! the fewest, smallest changes when a case fails.

use proptest::prelude::*;

/// One change to an image. Offsets are taken modulo the image length, so a strategy can
/// draw them before it knows the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Flip bit `bit % 8` of byte `at`.
    Flip { at: usize, bit: u8 },
    /// Overwrite byte `at`.
    Byte { at: usize, v: u8 },
    /// Overwrite the little-endian field of `width` bytes (2, 4 or 8) at `at` with the low
    /// bytes of `v`. Field offsets come from the caller's `fields` list.
    Field { at: usize, width: usize, v: u64 },
    /// Cut the image to `keep` bytes (modulo its length + 1).
    Truncate { keep: usize },
}

/// Values that break size and offset arithmetic, and any value.
pub fn field_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u32::MAX as u64),
        Just(1 << 63),
        Just(1 << 31),
        0u64..4096,
        any::<u64>(),
    ]
}

/// Numbers as text that break numeric parsing and size arithmetic: 0, 1, -1, the edges of
/// u32, i64 and u64, a number past u64, and any short number.
pub fn hostile_number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "4294967295",
            "4294967296",
            "9223372036854775807",
            "18446744073709551615",
            "99999999999999999999999",
        ])
        .prop_map(str::to_string),
        "[0-9]{1,12}",
    ]
}

/// Byte ranges of the XML attribute values (`name="…"`) in `text` that are plain decimal
/// numbers: the places a [`hostile_number`] goes.
pub fn xml_numbers(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut v = Vec::new();
    for (i, _) in text.match_indices("=\"") {
        let s = i + 2;
        let Some(len) = b[s..].iter().position(|&c| c == b'"') else {
            break;
        };
        let e = s + len;
        if e > s && b[s..e].iter().all(u8::is_ascii_digit) {
            v.push((s, e));
        }
    }
    v
}

/// `text` with each `(range, value)` of `edits` written over its range (ranges from
/// [`xml_numbers`]; a range edited twice keeps one of the values).
pub fn replace_ranges(text: &str, edits: &[((usize, usize), String)]) -> String {
    let mut picks = edits.to_vec();
    picks.sort_by_key(|p| std::cmp::Reverse(p.0));
    picks.dedup_by_key(|p| p.0);
    let mut out = text.to_string();
    for ((s, e), v) in &picks {
        out.replace_range(*s..*e, v);
    }
    out
}

/// One mutation: a flip or byte anywhere, or a field overwrite at one of `fields` (byte
/// offsets of the image's header fields). Truncations are rare so most cases keep the
/// whole image.
pub fn mutation(fields: Vec<usize>) -> impl Strategy<Value = Mutation> {
    let field = if fields.is_empty() {
        (
            any::<usize>(),
            prop_oneof![Just(2usize), Just(4), Just(8)],
            field_value(),
        )
            .prop_map(|(at, width, v)| Mutation::Field { at, width, v })
            .boxed()
    } else {
        (
            prop::sample::select(fields),
            prop_oneof![Just(2usize), Just(4), Just(8)],
            field_value(),
        )
            .prop_map(|(at, width, v)| Mutation::Field { at, width, v })
            .boxed()
    };
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, v)| Mutation::Byte { at, v }),
        4 => field,
        1 => any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
    ]
}

/// Between `min` and `max` mutations (inclusive), fields drawn from `fields`.
pub fn mutations(
    fields: Vec<usize>,
    min: usize,
    max: usize,
) -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(fields), min..=max)
}

/// Apply `muts` in order. An image that becomes empty stays empty.
pub fn apply(img: &mut Vec<u8>, muts: &[Mutation]) {
    for m in muts {
        let len = img.len();
        if len == 0 {
            return;
        }
        match *m {
            Mutation::Flip { at, bit } => img[at % len] ^= 1 << (bit % 8),
            Mutation::Byte { at, v } => img[at % len] = v,
            Mutation::Field { at, width, v } => {
                let at = at % len;
                let end = (at + width).min(len);
                img[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
            Mutation::Truncate { keep } => img.truncate(keep % (len + 1)),
        }
    }
}

/// `base` with `muts` applied.
pub fn mutated(base: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut v = base.to_vec();
    apply(&mut v, muts);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_change_what_they_say() {
        let base = vec![0u8; 16];
        let v = mutated(&base, &[Mutation::Flip { at: 17, bit: 9 }]);
        assert_eq!(v[1], 2);
        let v = mutated(
            &base,
            &[Mutation::Field {
                at: 12,
                width: 8,
                v: u64::MAX,
            }],
        );
        assert_eq!(&v[12..], &[0xff; 4]);
        assert!(v[..12].iter().all(|&b| b == 0));
        let v = mutated(
            &base,
            &[
                Mutation::Byte { at: 3, v: 7 },
                Mutation::Truncate { keep: 20 },
            ],
        );
        assert_eq!(v.len(), 3);
        assert_eq!(mutated(&base, &[Mutation::Truncate { keep: 16 }]).len(), 16);
    }

    #[test]
    fn xml_numbers_are_found_and_replaced() {
        let t = r#"<a x="12" y="ab" z="" w="7"/>"#;
        let at = xml_numbers(t);
        assert_eq!(at.len(), 2);
        assert_eq!(&t[at[0].0..at[0].1], "12");
        let r = replace_ranges(t, &[(at[1], "-1".into()), (at[0], "99999".into())]);
        assert_eq!(r, r#"<a x="99999" y="ab" z="" w="-1"/>"#);
    }
}
