//! `era_dump`, `era_check`, `era_restore` and `era_invalidate` as thin-provisioning-tools
//! 0.9 has them. The current writeset (the one in the superblock) is in none of them: only
//! archived writesets and the era array are, as in 0.9.

use super::getopt::{getopt_long, Key, Parsed};
use super::{attr, long, open_meta, Streams, VERSION};
use crate::array::{self, bitset};
use crate::block_manager::BlockManager;
use crate::btree;
use crate::era::{EraMetadata, EraSuperblock, WRITESET_SIZE};
use crate::io::MetaIo;
use crate::tm::SUPERBLOCK;
use crate::{le32, le64, superblock};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

/// An era metadata device as the XML has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EraDump {
    pub uuid: String,
    pub block_size: u32,
    pub nr_blocks: u32,
    pub current_era: u32,
    /// Archived writesets in era order: (era, bits).
    pub writesets: Vec<(u32, Vec<bool>)>,
    pub eras: Vec<u32>,
}

fn damage() -> String {
    "metadata contains errors (run era_check for details).\nperhaps you wanted to run with --repair ?".into()
}

/// The superblock at `at` (0, or a metadata snapshot).
pub fn read_superblock(io: &dyn MetaIo, at: u64) -> Result<EraSuperblock, String> {
    if io.nr_blocks() == 0 {
        return Err("Metadata is not large enough for superblock.".into());
    }
    let b = if at == SUPERBLOCK {
        superblock::read_block0(io).map_err(|e| super::sb_error(&e))?
    } else {
        let mut b = [0u8; crate::BLOCK_SIZE];
        io.read_block(at, &mut b).map_err(|e| e.to_string())?;
        b
    };
    EraSuperblock::decode(&b, at).map_err(|e| super::sb_error(&e))
}

/// Read the metadata on `io` (read-only), from the superblock at `at`.
pub fn read_dump(io: Arc<dyn MetaIo>, at: u64, repair: bool) -> Result<EraDump, String> {
    let sb = read_superblock(&*io, at)?;
    let uuid_end = sb.uuid.iter().position(|&c| c == 0).unwrap_or(16);
    let mut d = EraDump {
        uuid: String::from_utf8_lossy(&sb.uuid[..uuid_end]).into_owned(),
        block_size: sb.data_block_size,
        nr_blocks: sb.nr_blocks,
        current_era: sb.current_era,
        ..EraDump::default()
    };
    let mut bm = BlockManager::new(io, 1024);
    match btree::collect(&mut bm, sb.writeset_tree_root, WRITESET_SIZE) {
        Ok(sets) => {
            for (era, v) in sets {
                let n = le32(&v, 0) as u64;
                match bitset::collect(&mut bm, le64(&v, 4), n) {
                    Ok(bits) => d.writesets.push((era as u32, bits)),
                    Err(_) if repair => {}
                    Err(_) => return Err(damage()),
                }
            }
        }
        Err(_) if repair => {}
        Err(_) => return Err(damage()),
    }
    let r = array::walk(&mut bm, sb.era_array_root, 4, &mut |i, v| {
        if i < sb.nr_blocks as u64 {
            d.eras.push(le32(v, 0));
        }
        Ok(())
    });
    if r.is_err() && !repair {
        return Err(damage());
    }
    Ok(d)
}

/// The XML `era_dump` prints; `logical` folds the writesets into the era array.
pub fn write_xml(d: &EraDump, logical: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<superblock uuid=\"{}\" block_size=\"{}\" nr_blocks=\"{}\" current_era=\"{}\">",
        d.uuid, d.block_size, d.nr_blocks, d.current_era
    );
    let mut latest: BTreeMap<usize, u32> = BTreeMap::new();
    for (era, bits) in &d.writesets {
        if logical {
            // 0.9 inserts into a std::map, which keeps the first (lowest) era marking a
            // block; the era array wins when it is later.
            for (b, _) in bits.iter().enumerate().filter(|(_, &v)| v) {
                latest.entry(b).or_insert(*era);
            }
            continue;
        }
        let _ = writeln!(s, "  <writeset era=\"{era}\" nr_bits=\"{}\">", bits.len());
        for (b, v) in bits.iter().enumerate() {
            let _ = writeln!(s, "    <bit block=\"{b}\" value=\"{v}\"/>");
        }
        s.push_str("  </writeset>\n");
    }
    s.push_str("  <era_array>\n");
    for (b, &era) in d.eras.iter().enumerate() {
        let era = latest.get(&b).map_or(era, |&w| w.max(era));
        let _ = writeln!(s, "    <era block=\"{b}\" era=\"{era}\"/>");
    }
    s.push_str("  </era_array>\n</superblock>\n");
    s
}

/// Parse era XML meant for a metadata device of `meta_blocks` blocks. Counts that could
/// not fit that device (the era array's length, the writesets' bits) are refused before
/// anything is allocated for them, so a hostile number cannot ask for unbounded memory.
pub fn parse_xml(text: &str, meta_blocks: u64) -> Result<EraDump, String> {
    let mut d: Option<EraDump> = None;
    let mut ws: Option<(u32, Vec<bool>)> = None;
    // 64-bit words of all writesets so far: they share the metadata device.
    let mut ws_words = 0u64;
    let fits = |what: &str, len: u64, vs: u32| {
        array::ensure_fits(what, len, vs, meta_blocks).map_err(|e| e.to_string())
    };
    for (name, closing, a) in super::tags(text)? {
        let cur = || "missing superblock".to_string();
        match (name.as_str(), closing) {
            ("superblock", false) => {
                let nr_blocks: u32 = attr(&a, "nr_blocks")?;
                fits("era blocks", nr_blocks as u64, 4)?;
                d = Some(EraDump {
                    uuid: attr(&a, "uuid")?,
                    block_size: attr(&a, "block_size")?,
                    nr_blocks,
                    current_era: attr(&a, "current_era")?,
                    ..EraDump::default()
                })
            }
            ("writeset", false) => {
                if ws.is_some() {
                    return Err("attempt to begin writeset when already in one".into());
                }
                let n: u32 = attr(&a, "nr_bits")?;
                ws_words += (n as u64).div_ceil(64);
                fits("writeset words", ws_words, 8)?;
                ws = Some((attr(&a, "era")?, vec![false; n as usize]));
            }
            ("writeset", true) => {
                let w = ws.take().ok_or("no writeset to end")?;
                d.as_mut().ok_or_else(cur)?.writesets.push(w);
            }
            ("bit", false) => {
                let w = ws.as_mut().ok_or("bit outside a writeset")?;
                let b: usize = attr(&a, "block")?;
                let v = match attr::<String>(&a, "value")?.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err("bad value for bit".into()),
                };
                *w.1.get_mut(b).ok_or("bit out of range")? = v;
            }
            ("era", false) => {
                let dd = d.as_mut().ok_or_else(cur)?;
                let b: usize = attr(&a, "block")?;
                let era: u32 = attr(&a, "era")?;
                if b >= dd.nr_blocks as usize {
                    return Err(format!(
                        "era block {b} out of range ({} blocks)",
                        dd.nr_blocks
                    ));
                }
                if dd.eras.len() <= b {
                    dd.eras.resize(b + 1, 0);
                }
                dd.eras[b] = era;
            }
            ("superblock" | "era_array" | "bit" | "era", _) => {}
            _ => return Err("unknown tag type".into()),
        }
    }
    d.ok_or_else(|| "no superblock in the XML".into())
}

/// Write `d` into fresh metadata on `io`.
pub fn restore_dump(io: Arc<dyn MetaIo>, d: &EraDump) -> Result<(), String> {
    let e = |e: crate::PdataError| e.to_string();
    let mut md = EraMetadata::format(io, d.block_size).map_err(e)?;
    md.resize(d.nr_blocks).map_err(e)?;
    md.restore_state(d.current_era, &d.writesets, &d.eras)
        .map_err(e)?;
    md.commit().map_err(e)
}

fn parse(
    prog: &str,
    args: &[String],
    short: &str,
    lo: &[(&'static str, bool, Key)],
    usage: &str,
    io: &mut Streams<'_>,
) -> Option<Parsed> {
    match getopt_long(prog, args, short, &long(lo)) {
        Ok(p) => Some(p),
        Err(m) => {
            io.e(&m);
            let _ = io.err.write_all(usage.as_bytes());
            None
        }
    }
}

fn emit(out: Option<&str>, text: &str, io: &mut Streams<'_>) -> i32 {
    match out {
        None | Some("-") => io.o(text),
        Some(p) => {
            if let Err(e) = std::fs::write(p, text) {
                io.e(&format!("{p}: {e}"));
                return 1;
            }
        }
    }
    0
}

const DUMP_USAGE: &str = "Usage: era_dump [options] {device|file}\nOptions:\n  {-h|--help}\n  {-o <xml file>}\n  {-V|--version}\n  {--repair}\n  {--logical}\n";

/// `era_dump`.
pub fn dump(args: &[String], io: &mut Streams<'_>) -> i32 {
    let lo = [
        ("help", false, Key::Short('h')),
        ("output", true, Key::Short('o')),
        ("version", false, Key::Short('V')),
        ("repair", false, Key::Long(1)),
        ("logical", false, Key::Long(2)),
    ];
    let Some(p) = parse(&io.prog.clone(), args, "ho:V", &lo, DUMP_USAGE, io) else {
        return 1;
    };
    let (mut out, mut repair, mut logical) = (None, false, false);
    for o in &p.opts {
        match o.key {
            Key::Short('h') => {
                io.o(DUMP_USAGE);
                return 0;
            }
            Key::Short('V') => {
                io.o(&format!("{VERSION}\n"));
                return 0;
            }
            Key::Short('o') => out = o.value.clone(),
            Key::Long(1) => repair = true,
            _ => logical = true,
        }
    }
    let Some(input) = p.operands.first() else {
        io.e("No input file provided.");
        let _ = io.err.write_all(DUMP_USAGE.as_bytes());
        return 1;
    };
    match open_meta(input, false).and_then(|m| read_dump(m, SUPERBLOCK, repair)) {
        Ok(d) => emit(out.as_deref(), &write_xml(&d, logical), io),
        Err(m) => {
            io.e(&m);
            1
        }
    }
}

const CHECK_USAGE: &str = "Usage: era_check [options] {device|file}\nOptions:\n  {-q|--quiet}\n  {-h|--help}\n  {-V|--version}\n  {--super-block-only}\n";

/// `era_check`.
pub fn check(args: &[String], io: &mut Streams<'_>) -> i32 {
    let lo = [
        ("quiet", false, Key::Short('q')),
        ("super-block-only", false, Key::Long(1)),
        ("help", false, Key::Short('h')),
        ("version", false, Key::Short('V')),
    ];
    let Some(p) = parse(&io.prog.clone(), args, "qhV", &lo, CHECK_USAGE, io) else {
        return 1;
    };
    let (mut quiet, mut sb_only) = (false, false);
    for o in &p.opts {
        match o.key {
            Key::Short('q') => quiet = true,
            Key::Long(1) => sb_only = true,
            Key::Short('h') => {
                io.o(CHECK_USAGE);
                return 0;
            }
            _ => {
                io.o(&format!("{VERSION}\n"));
                return 0;
            }
        }
    }
    let (mut n, meta) = match super::open_for_check(p.operands.first(), io, quiet, CHECK_USAGE) {
        Ok(v) => v,
        Err(code) => return code,
    };
    n.line("examining superblock");
    let sb = match read_superblock(&*meta, SUPERBLOCK) {
        Ok(sb) => sb,
        Err(m) => {
            n.depth = 1;
            n.line("superblock is corrupt");
            n.depth = 2;
            n.line(&m);
            if super::looks_like_xml(&*meta) {
                n.depth = 0;
                n.line("This looks like XML.  era_check only checks the binary metadata format.");
            }
            return 1;
        }
    };
    if sb_only {
        return 0;
    }
    let d = match read_dump(meta, SUPERBLOCK, true) {
        Ok(d) => d,
        Err(m) => {
            n.line(&m);
            return 1;
        }
    };
    let mut ok = true;
    if d.eras.len() < d.nr_blocks as usize {
        n.line("missing eras from era array");
        ok = false;
    }
    if let Some((b, &e)) = d.eras.iter().enumerate().find(|(_, &e)| e > sb.current_era) {
        n.line("invalid era in era array");
        n.depth = 1;
        n.line("era is beyond the current era");
        n.line(&format!("block: {b}, era: {e}"));
        ok = false;
    }
    if ok {
        0
    } else {
        1
    }
}

const RESTORE_USAGE: &str = "Usage: era_restore [options]\nOptions:\n  {-h|--help}\n  {-i|--input} <input xml file>\n  {-o|--output} <output device or file>\n  {-q|--quiet}\n  {-V|--version}\n";

/// `era_restore`.
pub fn restore(args: &[String], io: &mut Streams<'_>) -> i32 {
    let lo = [
        ("help", false, Key::Short('h')),
        ("input", true, Key::Short('i')),
        ("output", true, Key::Short('o')),
        ("quiet", false, Key::Short('q')),
        ("version", false, Key::Short('V')),
    ];
    let Some(p) = parse(&io.prog.clone(), args, "hi:o:qV", &lo, RESTORE_USAGE, io) else {
        return 1;
    };
    let (mut input, mut output) = (None, None);
    for o in &p.opts {
        match o.key {
            Key::Short('h') => {
                io.o(RESTORE_USAGE);
                return 0;
            }
            Key::Short('i') => input = o.value.clone(),
            Key::Short('o') => output = o.value.clone(),
            Key::Short('q') => {}
            _ => {
                io.o(&format!("{VERSION}\n"));
                return 0;
            }
        }
    }
    if !p.operands.is_empty() {
        let _ = io.err.write_all(RESTORE_USAGE.as_bytes());
        return 1;
    }
    let Some(input) = input else {
        io.e("No input file provided.\n");
        let _ = io.err.write_all(RESTORE_USAGE.as_bytes());
        return 1;
    };
    let Some(output) = output else {
        io.e("No output file provided.\n");
        let _ = io.err.write_all(RESTORE_USAGE.as_bytes());
        return 1;
    };
    if !super::check_output(&output, io) {
        return 1;
    }
    let r = open_meta(&output, true).and_then(|m| {
        let text = std::fs::read_to_string(&input).map_err(|_| "Couldn't stat file".to_string())?;
        let meta_blocks = m.nr_blocks();
        restore_dump(m, &parse_xml(&text, meta_blocks)?)
    });
    if let Err(m) = r {
        io.e(&m);
        return 1;
    }
    0
}

const INVALIDATE_USAGE: &str = "Usage: era_invalidate [options] --written-since <era> {device|file}\nOptions:\n  {-h|--help}\n  {-o <xml file>}\n  {--metadata-snapshot}\n  {-V|--version}\n";

/// Blocks written in era `since` or later: the era array and the archived writesets.
pub fn written_since(d: &EraDump, since: u32) -> BTreeSet<u32> {
    let mut set: BTreeSet<u32> = (0..d.nr_blocks.min(d.eras.len() as u32))
        .filter(|&b| d.eras[b as usize] >= since)
        .collect();
    for (era, bits) in d.writesets.iter().filter(|w| w.0 >= since) {
        let _ = era;
        set.extend(
            bits.iter()
                .enumerate()
                .filter(|(_, &v)| v)
                .map(|(b, _)| b as u32),
        );
    }
    set
}

/// `era_invalidate`'s XML: single blocks and runs.
pub fn blocks_xml(set: &BTreeSet<u32>) -> String {
    let mut s = String::from("<blocks>\n");
    let v: Vec<u32> = set.iter().copied().collect();
    let mut i = 0;
    while i < v.len() {
        let b = v[i];
        let mut e = b + 1;
        i += 1;
        while i < v.len() && v[i] == e {
            e += 1;
            i += 1;
        }
        if e - b == 1 {
            let _ = writeln!(s, "  <block block=\"{b}\"/>");
        } else {
            let _ = writeln!(s, "  <range begin=\"{b}\" end = \"{e}\"/>");
        }
    }
    s.push_str("</blocks>\n");
    s
}

/// `era_invalidate`.
pub fn invalidate(args: &[String], io: &mut Streams<'_>) -> i32 {
    let lo = [
        ("help", false, Key::Short('h')),
        ("output", true, Key::Short('o')),
        ("version", false, Key::Short('V')),
        ("metadata-snapshot", false, Key::Long(1)),
        ("written-since", true, Key::Long(2)),
    ];
    let Some(p) = parse(&io.prog.clone(), args, "ho:V", &lo, INVALIDATE_USAGE, io) else {
        return 1;
    };
    let (mut out, mut snap, mut since) = (None, false, None);
    for o in &p.opts {
        match o.key {
            Key::Short('h') => {
                io.o(INVALIDATE_USAGE);
                return 0;
            }
            Key::Short('V') => {
                io.o(&format!("{VERSION}\n"));
                return 0;
            }
            Key::Short('o') => out = o.value.clone(),
            Key::Long(1) => snap = true,
            _ => match o.value.as_deref().and_then(|v| v.parse::<u32>().ok()) {
                Some(v) => since = Some(v),
                None => {
                    io.e("bad lexical cast: source type value could not be interpreted as target");
                    return 1;
                }
            },
        }
    }
    let Some(input) = p.operands.first() else {
        io.e("No input file provided.");
        let _ = io.err.write_all(INVALIDATE_USAGE.as_bytes());
        return 1;
    };
    let Some(since) = since else {
        io.e("Please specify --written-since");
        let _ = io.err.write_all(INVALIDATE_USAGE.as_bytes());
        return 1;
    };
    let r = open_meta(input, false).and_then(|m| {
        let at = if snap {
            let sb = read_superblock(&*m, SUPERBLOCK)?;
            if sb.metadata_snap == 0 {
                return Err("no metadata snapshot taken.".to_string());
            }
            sb.metadata_snap
        } else {
            SUPERBLOCK
        };
        read_superblock(&*m, at)?;
        read_dump(m, at, false)
            .map_err(|_| "metadata contains errors (run era_check for details).".to_string())
    });
    match r {
        Ok(d) => emit(out.as_deref(), &blocks_xml(&written_since(&d, since)), io),
        Err(m) => {
            io.e(&m);
            1
        }
    }
}
