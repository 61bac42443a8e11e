//! `thin_delta`: how two thin devices' mappings differ, block by block (same data block,
//! different data blocks, only in the left, only in the right), and its XML in both
//! forms: runs of one kind over consecutive virtual blocks, or (verbose) groups of one
//! kind holding ranges consecutive in both virtual and data blocks.

use crate::thin_xml::ThinDump;
use std::io::Write;

/// How a virtual block compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Same,
    Different,
    LeftOnly,
    RightOnly,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Same => "same",
            Kind::Different => "different",
            Kind::LeftOnly => "left_only",
            Kind::RightOnly => "right_only",
        }
    }
}

/// One compared block: virtual block, kind, left and right data blocks (when mapped).
pub type Entry = (u64, Kind, Option<u64>, Option<u64>);

/// Merge two devices' mappings (each in virtual block order).
pub fn compare(left: &[(u64, u64, u32)], right: &[(u64, u64, u32)]) -> Vec<Entry> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < left.len() || j < right.len() {
        let l = left.get(i);
        let r = right.get(j);
        match (l, r) {
            (Some(&(lv, ld, _)), Some(&(rv, rd, _))) if lv == rv => {
                let k = if ld == rd {
                    Kind::Same
                } else {
                    Kind::Different
                };
                out.push((lv, k, Some(ld), Some(rd)));
                i += 1;
                j += 1;
            }
            (Some(&(lv, ld, _)), r) if r.is_none_or(|&(rv, _, _)| lv < rv) => {
                out.push((lv, Kind::LeftOnly, Some(ld), None));
                i += 1;
            }
            (_, Some(&(rv, rd, _))) => {
                out.push((rv, Kind::RightOnly, None, Some(rd)));
                j += 1;
            }
            _ => unreachable!("one side has an entry"),
        }
    }
    out
}

/// Write the delta of devices `a` and `b` as thin_delta does.
pub fn write_delta(
    d: &ThinDump,
    a: u64,
    b: u64,
    entries: &[Entry],
    verbose: bool,
    w: &mut dyn Write,
) -> std::io::Result<()> {
    write!(
        w,
        "<superblock uuid=\"{}\" time=\"{}\" transaction=\"{}\" data_block_size=\"{}\" nr_data_blocks=\"{}\"",
        d.uuid, d.time, d.transaction, d.data_block_size, d.nr_data_blocks
    )?;
    if d.metadata_snap != 0 {
        write!(w, " metadata_snap=\"{}\"", d.metadata_snap)?;
    }
    writeln!(w, ">")?;
    writeln!(w, "  <diff left=\"{a}\" right=\"{b}\">")?;
    if verbose {
        write_verbose(entries, w)?;
    } else {
        let mut i = 0;
        while i < entries.len() {
            let (v, k, _, _) = entries[i];
            let mut n = 1;
            while i + (n as usize) < entries.len() {
                let (v2, k2, _, _) = entries[i + n as usize];
                if k2 != k || v2 != v + n {
                    break;
                }
                n += 1;
            }
            writeln!(w, "    <{} begin=\"{v}\" length=\"{n}\"/>", k.tag())?;
            i += n as usize;
        }
    }
    writeln!(w, "  </diff>")?;
    writeln!(w, "</superblock>")
}

fn write_verbose(entries: &[Entry], w: &mut dyn Write) -> std::io::Result<()> {
    let step = |x: Option<u64>, n: u64| x.map(|x| x + n);
    let mut i = 0;
    while i < entries.len() {
        let kind = entries[i].1;
        writeln!(w, "    <{}>", kind.tag())?;
        while i < entries.len() && entries[i].1 == kind {
            let (v, _, l, r) = entries[i];
            let mut n = 1u64;
            while let Some(&(v2, k2, l2, r2)) = entries.get(i + n as usize) {
                if k2 != kind || v2 != v + n || l2 != step(l, n) || r2 != step(r, n) {
                    break;
                }
                n += 1;
            }
            let data = match (l, r) {
                (Some(l), Some(r)) if kind == Kind::Different => {
                    format!("left_data_begin=\"{l}\" right_data_begin=\"{r}\"")
                }
                (Some(x), _) | (_, Some(x)) => format!("data_begin=\"{x}\""),
                (None, None) => unreachable!("an entry is mapped on one side"),
            };
            writeln!(w, "      <range begin=\"{v}\" {data} length=\"{n}\"/>")?;
            i += n as usize;
        }
        writeln!(w, "    </{}>", kind.tag())?;
    }
    Ok(())
}
