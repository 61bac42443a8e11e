//! Sizes in lvm2's report units (`--units`, default `r`: powers of 1024 with two decimals
//! and `<` when the shown value was rounded up; `--nosuffix`), and lvm2's long size form
//! (`20.00 MiB`) that the display commands and messages use.

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

/// lvm2's long size display: `20.00 MiB`, `<15.88 TiB` when rounded up (`0   ` for
/// nothing), powers of 1024 as the short `r` units.
pub fn long_size(sectors: u64) -> String {
    if sectors == 0 {
        return "0   ".into();
    }
    let short = size(sectors, Units::default());
    let (num, unit) = short.split_at(short.len() - 1);
    let unit = match unit {
        "k" => "KiB",
        "m" => "MiB",
        "g" => "GiB",
        "t" => "TiB",
        "p" => "PiB",
        "e" => "EiB",
        _ => return format!("{} B", sectors * 512),
    };
    format!("{num} {unit}")
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
        assert_eq!(long_size(40960), "20.00 MiB");
        assert_eq!(long_size(33292800 * 128 * 8), "<15.88 TiB");
        assert_eq!(long_size(0), "0   ");
    }
}
