//! `thin_metadata_size`: getopt-style options and printing over [`crate::thin_size`].

use super::opts::{parse, Arg, Item, Spec, HELP, VERSION};
use super::Console;
use crate::thin_size::{format_value, metadata_sectors, unit};

const USAGE: &str = "Thin Provisioning Metadata Device Size Calculator.
Usage: thin_metadata_size [options]
\t-b  --block-size BLOCKSIZE[bskKmMgGtTpPeEzZyY]  Block size of thin provisioned devices.
\t-s  --pool-size SIZE[bskKmMgGtTpPeEzZyY]        Size of pool device.
\t-m  --max-thins #MAXTHINS[bskKmMgGtTpPeEzZyY]   Maximum sum of all thin devices and snapshots.
\t-u  --unit {bskKmMgGtTpPeEzZyY}                 Output unit specifier.
\t-n  --numeric-only [short|long]                 Output numeric value only (optionally with short/long unit identifier).
\t-h  --help                                      This help.
\t-V  --version                                   Print thin provisioning tools version.
";

const SPECS: &[Spec] = &[
    HELP,
    VERSION,
    Spec::new("block", &["-b", "--block-size"], Arg::Value),
    Spec::new("pool", &["-s", "--pool-size"], Arg::Value),
    Spec::new("thins", &["-m", "--max-thins"], Arg::Value),
    Spec::new("unit", &["-u", "--unit"], Arg::Value),
    Spec::new("numeric", &["-n", "--numeric-only"], Arg::InlineOnly),
];

/// A size argument: its number, that times its unit's bytes (`default` without a letter)
/// and the number with the unit's name as echoed.
struct Size {
    n: u64,
    bytes: u128,
    echo: String,
}

impl Size {
    /// Whole sectors, as the tool keeps sizes.
    fn sectors(&self) -> u128 {
        self.bytes / 512
    }
}

fn parse_size(v: &str, default: Option<(f64, &'static str)>) -> Result<Size, String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "Invalid unit specifier!".to_string())?;
    let mut cs = suffix.chars();
    let (mult, name) = match (cs.next(), cs.next()) {
        (None, _) => default.unwrap_or((1.0, "")),
        (Some(c), None) => unit(c).ok_or("Invalid unit specifier!")?,
        _ => return Err("Invalid unit specifier!".into()),
    };
    Ok(Size {
        n,
        bytes: u128::from(n) * mult as u128,
        echo: format!("{n}{name}"),
    })
}

/// `thin_metadata_size [options]`.
pub fn main(args: &[String], con: &mut Console<'_>) -> i32 {
    let fail = |con: &mut Console<'_>, m: &str| con.fail(format!("thin_metadata_size - {m}"));
    let sectors = unit('s');
    let (mut block, mut pool, mut thins) = (None, None, None);
    let mut out_unit = 's';
    let mut numeric: Option<Option<String>> = None;
    for item in parse(args, SPECS, true) {
        let Item::Opt { id, name, value } = item else {
            continue; // getopt's complaints aside, the tool ignores what it does not know
        };
        let r = match (id, value) {
            ("help", _) => return con.help(USAGE),
            ("version", _) => return con.version(),
            ("numeric", v) => {
                numeric = Some(v);
                Ok(())
            }
            (_, None) => {
                let o = name.trim_start_matches('-');
                let m = format!("thin_metadata_size: option requires an argument -- '{o}'");
                return con.fail(m);
            }
            ("block", Some(v)) => parse_size(&v, sectors).map(|s| block = Some(s)),
            ("pool", Some(v)) => parse_size(&v, sectors).map(|s| pool = Some(s)),
            ("thins", Some(v)) => parse_size(&v, None).map(|s| thins = Some(s)),
            (_, Some(v)) => {
                let mut cs = v.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) if unit(c).is_some() => {
                        out_unit = c;
                        Ok(())
                    }
                    _ => Err("output unit specifier invalid!".to_string()),
                }
            }
        };
        if let Err(m) = r {
            return fail(con, &m);
        }
    }
    let Some(block) = block.filter(|b| b.sectors() > 0) else {
        return fail(con, "block size required!");
    };
    let Some(pool) = pool.filter(|p| p.sectors() > 0) else {
        return fail(con, "pool size required!");
    };
    let Some(thins) = thins.filter(|t| t.n > 0) else {
        return fail(con, "max thins required!");
    };
    if !block.sectors().is_power_of_two() {
        return fail(con, "block size must be 2^^N");
    }
    if pool.sectors() <= block.sectors() {
        return fail(con, "pool size must be larger than block size");
    }
    let nr_blocks = (pool.sectors() / block.sectors()) as u64;
    let sectors = metadata_sectors(nr_blocks, thins.bytes as u64);
    let (mult, uname) = unit(out_unit).expect("checked unit");
    let value = format_value(sectors as f64 * 512.0 / mult);
    let line = match numeric {
        Some(Some(k)) if k == "short" => format!("{value}{out_unit}"),
        Some(Some(k)) if k == "long" => format!("{value}{uname}"),
        Some(_) => value,
        None => format!(
            "thin_metadata_size - {value} {uname} estimated metadata area size for \"--block-size={} --pool-size={} --max-thins={}\"",
            block.echo, pool.echo, thins.echo
        ),
    };
    let _ = writeln!(con.out, "{line}");
    0
}
