//! lvm2's report layout: aligned columns with lvm2's minimum widths, left-aligned headings
//! and strings, right-aligned numbers and sizes, a two-space indent, sizes in lvm2's default
//! `r` units (powers of 1024, two decimals, `<` when the shown value was rounded up).

/// How a column's values align.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One report column: heading, lvm2's minimum width, alignment.
#[derive(Clone, Copy)]
pub struct Column {
    pub heading: &'static str,
    pub width: usize,
    pub align: Align,
}

const fn col(heading: &'static str, width: usize, align: Align) -> Column {
    Column {
        heading,
        width,
        align,
    }
}

use Align::{Left, Right};

/// `pvs` default columns: PV VG Fmt Attr PSize PFree.
pub const PVS: [Column; 6] = [
    col("PV", 10, Left),
    col("VG", 0, Left),
    col("Fmt", 0, Left),
    col("Attr", 0, Left),
    col("PSize", 0, Right),
    col("PFree", 0, Right),
];

/// `vgs` default columns: VG #PV #LV #SN Attr VSize VFree.
pub const VGS: [Column; 7] = [
    col("VG", 0, Left),
    col("#PV", 0, Right),
    col("#LV", 0, Right),
    col("#SN", 0, Right),
    col("Attr", 5, Left),
    col("VSize", 0, Right),
    col("VFree", 0, Right),
];

/// `lvs` default columns: LV VG Attr LSize Pool Origin Data% Meta% Move Log Cpy%Sync Convert.
pub const LVS: [Column; 12] = [
    col("LV", 4, Left),
    col("VG", 0, Left),
    col("Attr", 0, Left),
    col("LSize", 0, Right),
    col("Pool", 0, Left),
    col("Origin", 0, Left),
    col("Data%", 6, Right),
    col("Meta%", 6, Right),
    col("Move", 0, Left),
    col("Log", 0, Left),
    col("Cpy%Sync", 0, Right),
    col("Convert", 0, Left),
];

/// The report text for `rows` (already sorted) under `cols`.
pub fn render(cols: &[Column], rows: &[Vec<String>], headings: bool) -> String {
    let mut widths: Vec<usize> = cols.iter().map(|c| c.width.max(c.heading.len())).collect();
    for r in rows {
        for (w, v) in widths.iter_mut().zip(r) {
            *w = (*w).max(v.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = (usize, &str, Align)>| {
        out.push_str("  ");
        let mut first = true;
        for (w, v, a) in cells {
            if !first {
                out.push(' ');
            }
            first = false;
            let pad = w.saturating_sub(v.chars().count());
            if a == Right {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(v);
            } else {
                out.push_str(v);
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    if headings {
        line(&mut cols.iter().zip(&widths).map(|(c, w)| (*w, c.heading, Left)));
    }
    for r in rows {
        line(
            &mut cols
                .iter()
                .zip(&widths)
                .zip(r)
                .map(|((c, w), v)| (*w, v.as_str(), c.align)),
        );
    }
    out
}

/// A size in sectors as lvm2 shows it with its default units (`r`).
pub fn size(sectors: u64) -> String {
    if sectors == 0 {
        return "0 ".into();
    }
    let bytes = sectors as u128 * 512;
    const SUFFIX: [&str; 6] = ["e", "p", "t", "g", "m", "k"];
    let mut unit: u128 = 1 << 60;
    for s in SUFFIX {
        if bytes >= unit {
            // Hundredths exactly: "<" when showing two decimals rounds the value up
            // (round-half-even on an exact tie, as the C library rounds).
            let (hundredths, rem) = ((bytes * 100) / unit, (bytes * 100) % unit);
            let up = rem * 2 > unit || (rem * 2 == unit && hundredths % 2 == 1);
            let prefix = if up { "<" } else { "" };
            return format!("{prefix}{:.2}{s}", bytes as f64 / unit as f64);
        }
        unit >>= 10;
    }
    format!("{bytes}b")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_lvm2() {
        assert_eq!(size(0), "0 ");
        assert_eq!(size(60 * 2048), "60.00m");
        assert_eq!(size(2043 * 2048), "<2.00g");
        assert_eq!(size(3000 * 2048 - 2048), "<2.93g");
        assert_eq!(size(956 * 2048), "956.00m");
        assert_eq!(size(1), "512b");
    }

    #[test]
    fn render_pads_like_lvm2() {
        let rows = vec![vec![
            "vg1".into(),
            "1".into(),
            "1".into(),
            "0".into(),
            "wz--n-".into(),
            "60.00m".into(),
            "0 ".into(),
        ]];
        assert_eq!(
            render(&VGS, &rows, true),
            "  VG  #PV #LV #SN Attr   VSize  VFree\n  vg1   1   1   0 wz--n- 60.00m    0 \n"
        );
    }
}
