//! `thin_metadata_size`: argv and printing over `udm_pdata::thin_size`.

use udm_pdata::thin_size::{format_value, metadata_sectors, unit};

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

fn fail(m: &str) -> i32 {
    eprintln!("thin_metadata_size - {m}");
    1
}

/// `thin_metadata_size [options]`.
pub fn main(args: &[String]) -> i32 {
    let sectors = unit('s');
    let (mut block, mut pool, mut thins) = (None, None, None);
    let mut out_unit = 's';
    let mut numeric: Option<Option<String>> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ if a.len() > 2 && a.starts_with('-') && !a.starts_with("--") => {
                (&a[..2], Some(a[2..].to_string()))
            }
            _ => (a, None),
        };
        let needs = matches!(
            name,
            "-b" | "--block-size" | "-s" | "--pool-size" | "-m" | "--max-thins" | "-u" | "--unit"
        );
        let value = if needs {
            match inline.clone().or_else(|| {
                i += 1;
                args.get(i).cloned()
            }) {
                Some(v) => v,
                None => {
                    let o = name.trim_start_matches('-');
                    eprintln!("thin_metadata_size: option requires an argument -- '{o}'");
                    return 1;
                }
            }
        } else {
            String::new()
        };
        let r = match name {
            "-h" | "--help" => {
                print!("{USAGE}");
                return 0;
            }
            "-V" | "--version" => {
                println!("0.9.0");
                return 0;
            }
            "-b" | "--block-size" => parse_size(&value, sectors).map(|s| block = Some(s)),
            "-s" | "--pool-size" => parse_size(&value, sectors).map(|s| pool = Some(s)),
            "-m" | "--max-thins" => parse_size(&value, None).map(|s| thins = Some(s)),
            "-u" | "--unit" => {
                let mut cs = value.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) if unit(c).is_some() => {
                        out_unit = c;
                        Ok(())
                    }
                    _ => Err("output unit specifier invalid!".to_string()),
                }
            }
            "-n" | "--numeric-only" => {
                numeric = Some(inline);
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(m) = r {
            return fail(&m);
        }
        i += 1;
    }
    let Some(block) = block.filter(|b| b.sectors() > 0) else {
        return fail("block size required!");
    };
    let Some(pool) = pool.filter(|p| p.sectors() > 0) else {
        return fail("pool size required!");
    };
    let Some(thins) = thins.filter(|t| t.n > 0) else {
        return fail("max thins required!");
    };
    if !block.sectors().is_power_of_two() {
        return fail("block size must be 2^^N");
    }
    if pool.sectors() <= block.sectors() {
        return fail("pool size must be larger than block size");
    }
    let nr_blocks = (pool.sectors() / block.sectors()) as u64;
    let sectors = metadata_sectors(nr_blocks, thins.bytes as u64);
    let (mult, uname) = unit(out_unit).expect("checked unit");
    let value = format_value(sectors as f64 * 512.0 / mult);
    match numeric {
        Some(Some(k)) if k == "short" => println!("{value}{out_unit}"),
        Some(Some(k)) if k == "long" => println!("{value}{uname}"),
        Some(_) => println!("{value}"),
        None => println!(
            "thin_metadata_size - {value} {uname} estimated metadata area size for \"--block-size={} --pool-size={} --max-thins={}\"",
            block.echo, pool.echo, thins.echo
        ),
    }
    0
}
