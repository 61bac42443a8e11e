//! lvm2's report output: aligned columns with lvm2's minimum widths (headings and strings
//! left, numbers and sizes right, a two-space indent), `--separator` (unaligned),
//! `--noheadings`, `--reportformat json`, and sizes in lvm2's units (`--units`, default `r`:
//! powers of 1024 with two decimals and `<` when the shown value was rounded up).

use super::fields::{Field, Kind, Val};

/// `--units` and `--nosuffix`.
#[derive(Clone, Copy, Debug)]
pub struct Units {
    pub unit: char,
    pub suffix: bool,
}

impl Default for Units {
    fn default() -> Self {
        Units {
            unit: 'r',
            suffix: true,
        }
    }
}

impl Units {
    /// Units from a `--units` argument (one of `hHrRbBsSkKmMgGtTpPeE`).
    pub fn parse(s: &str, suffix: bool) -> Option<Units> {
        let mut c = s.chars();
        let unit = c.next()?;
        if c.next().is_some() || !"hHrRbBsSkKmMgGtTpPeE".contains(unit) {
            return None;
        }
        Some(Units { unit, suffix })
    }
}

/// Output style: headings, separator (unaligned when set), JSON.
#[derive(Clone, Debug, Default)]
pub struct Style {
    pub headings: bool,
    pub separator: Option<String>,
    pub json: bool,
    pub units: Units,
}

/// A size in sectors in `u` units, as lvm2 prints it.
pub fn size(sectors: u64, u: Units) -> String {
    let bytes = sectors as u128 * 512;
    let (si, letters) = if u.unit.is_ascii_uppercase() && !"BS".contains(u.unit) {
        (true, ["E", "P", "T", "G", "M", "K"])
    } else {
        (false, ["e", "p", "t", "g", "m", "k"])
    };
    let base: u128 = if si { 1000 } else { 1024 };
    let human = "hHrR".contains(u.unit);
    if sectors == 0 {
        let suffix = match u.unit {
            _ if human => " ",
            'b' | 'B' => "B",
            's' | 'S' => "S",
            c => letters[6 - "kmgtpe".find(c.to_ascii_lowercase()).unwrap_or(0) - 1],
        };
        return format!("0{}", if u.suffix { suffix } else { "" });
    }
    if !human {
        return match u.unit {
            'b' | 'B' => format!("{bytes}{}", if u.suffix { "B" } else { "" }),
            's' | 'S' => format!("{sectors}{}", if u.suffix { "S" } else { "" }),
            c => {
                let i = "kmgtpe".find(c.to_ascii_lowercase()).unwrap_or(0);
                let unit = base.pow(i as u32 + 1);
                let letter = letters[5 - i];
                format!(
                    "{:.2}{}",
                    bytes as f64 / unit as f64,
                    if u.suffix { letter } else { "" }
                )
            }
        };
    }
    let mut unit: u128 = base.pow(6);
    for letter in letters {
        if bytes >= unit {
            // Hundredths exactly: "<" (units r/R) when showing two decimals rounds up,
            // round-half-even on an exact tie as the C library rounds.
            let (hundredths, rem) = ((bytes * 100) / unit, (bytes * 100) % unit);
            let up = rem * 2 > unit || (rem * 2 == unit && hundredths % 2 == 1);
            let prefix = if up && "rR".contains(u.unit) { "<" } else { "" };
            return format!("{prefix}{:.2}{letter}", bytes as f64 / unit as f64);
        }
        unit /= base;
    }
    format!("{bytes}{}", if si { "B" } else { "b" })
}

/// A value as report text.
pub fn text(v: &Val, u: Units) -> String {
    match v {
        Val::Str(s) => s.clone(),
        Val::Num(n) => n.to_string(),
        Val::Size(s) => size(*s, u),
        Val::List(l) => l.join(","),
    }
}

fn right(k: Kind) -> bool {
    matches!(k, Kind::Num | Kind::Size | Kind::Pct)
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The report for `rows` (one value per field) under `fields`; `name` is the JSON object
/// name (`pv`, `vg`, `lv`, `seg`).
pub fn render(fields: &[&Field], rows: &[Vec<Val>], style: &Style, name: &str) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|v| text(v, style.units)).collect())
        .collect();
    let mut out = String::new();
    if style.json {
        out.push_str("  {\n      \"report\": [\n          {\n");
        out.push_str(&format!("              \"{name}\": [\n"));
        for (i, r) in cells.iter().enumerate() {
            let kv: Vec<String> = fields
                .iter()
                .zip(r)
                .map(|(f, v)| format!("{}:{}", json_str(f.id), json_str(v)))
                .collect();
            out.push_str(&format!("                  {{{}}}", kv.join(", ")));
            out.push_str(if i + 1 < cells.len() { ",\n" } else { "\n" });
        }
        out.push_str("              ]\n          }\n      ]\n  }\n");
        return out;
    }
    if let Some(sep) = &style.separator {
        let mut line = |vals: Vec<&str>| {
            out.push_str("  ");
            out.push_str(&vals.join(sep));
            out.push('\n');
        };
        if style.headings {
            line(fields.iter().map(|f| f.heading).collect());
        }
        for r in &cells {
            line(r.iter().map(String::as_str).collect());
        }
        return out;
    }
    let mut widths: Vec<usize> = fields
        .iter()
        .map(|f| f.width.max(f.heading.len()))
        .collect();
    for r in &cells {
        for (w, v) in widths.iter_mut().zip(r) {
            *w = (*w).max(v.chars().count());
        }
    }
    let mut line = |vals: &mut dyn Iterator<Item = (usize, &str, bool)>| {
        out.push_str("  ");
        for (i, (w, v, right)) in vals.enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let pad = " ".repeat(w.saturating_sub(v.chars().count()));
            if right {
                out.push_str(&pad);
                out.push_str(v);
            } else {
                out.push_str(v);
                out.push_str(&pad);
            }
        }
        out.push('\n');
    };
    if style.headings {
        line(
            &mut fields
                .iter()
                .zip(&widths)
                .map(|(f, w)| (*w, f.heading, false)),
        );
    }
    for r in &cells {
        line(
            &mut fields
                .iter()
                .zip(&widths)
                .zip(r)
                .map(|((f, w), v)| (*w, v.as_str(), right(f.kind))),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_lvm2() {
        let r = Units::default();
        assert_eq!(size(0, r), "0 ");
        assert_eq!(size(60 * 2048, r), "60.00m");
        assert_eq!(size(2043 * 2048, r), "<2.00g");
        assert_eq!(size(3000 * 2048 - 2048, r), "<2.93g");
        assert_eq!(size(956 * 2048, r), "956.00m");
        assert_eq!(size(1, r), "512b");
        let u = |c, s| Units { unit: c, suffix: s };
        assert_eq!(size(2043 * 2048, u('h', true)), "2.00g");
        assert_eq!(size(122880, u('S', true)), "122880S");
        assert_eq!(size(0, u('k', true)), "0k");
        assert_eq!(size(24576, u('k', true)), "12288.00k");
        assert_eq!(size(40960, u('m', false)), "20.00");
        assert_eq!(size(245760, u('b', false)), "125829120");
        assert_eq!(size(2048, u('H', true)), "1.05M");
    }
}
