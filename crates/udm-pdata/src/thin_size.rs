//! `thin_metadata_size`'s estimate and its unit handling: metadata sectors for a pool of
//! `nr_blocks` data blocks and `max_thins` devices (one 8-sector block per 126 mappings,
//! the mapping leaves taken as half full, plus a root block per device), and the
//! b/s/k/K/m/M/… unit letters with their names.

/// Sectors per 4 KiB metadata block.
const META_SECTORS: u64 = 8;
/// Mappings per leaf, assuming half-full leaves.
const MAPPINGS_PER_LEAF: u64 = 126;

/// Estimated metadata size in 512-byte sectors.
pub fn metadata_sectors(nr_blocks: u64, max_thins: u64) -> u64 {
    nr_blocks.div_ceil(MAPPINGS_PER_LEAF) * META_SECTORS + max_thins * META_SECTORS
}

/// A unit letter: its size in bytes and its long name, or None for an unknown letter.
pub fn unit(c: char) -> Option<(f64, &'static str)> {
    const BIN: [(char, &str); 8] = [
        ('k', "kibibytes"),
        ('m', "mebibytes"),
        ('g', "gibibytes"),
        ('t', "tebibytes"),
        ('p', "pebibytes"),
        ('e', "exbibytes"),
        ('z', "zebibytes"),
        ('y', "yobibytes"),
    ];
    const DEC: [(char, &str); 8] = [
        ('K', "kilobytes"),
        ('M', "megabytes"),
        ('G', "gigabytes"),
        ('T', "terabytes"),
        ('P', "petabytes"),
        ('E', "exabytes"),
        ('Z', "zettabytes"),
        ('Y', "yottabytes"),
    ];
    match c {
        'b' => return Some((1.0, "bytes")),
        's' => return Some((512.0, "sectors")),
        _ => {}
    }
    if let Some(i) = BIN.iter().position(|&(l, _)| l == c) {
        return Some((1024f64.powi(i as i32 + 1), BIN[i].1));
    }
    DEC.iter()
        .position(|&(l, _)| l == c)
        .map(|i| (1000f64.powi(i as i32 + 1), DEC[i].1))
}

/// A value printed as the tool does: whole numbers plainly, others with two decimals,
/// tiny ones as `d.dde-XX`.
pub fn format_value(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 0.01 {
        format!("{v:.2}")
    } else {
        let s = format!("{v:.2e}");
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_printf() {
        assert_eq!(format_value(533012.0), "533012");
        assert_eq!(format_value(520.5195), "520.52");
        assert_eq!(format_value(0.004224), "4.22e-03");
        assert_eq!(metadata_sectors(16 << 20, 100), 1066024);
    }
}
