//! `cache_dump`, `cache_check`, `cache_restore`, `cache_repair`, `cache_metadata_size` and
//! `cache_writeback` as thin-provisioning-tools 0.9 has them. Like 0.9, the dump takes a
//! block's dirty state from its mapping's flag (the version 2 dirty bitset is not read) and
//! lists no discards.

use super::getopt::{getopt_long, Key};
use super::{attr, base64_decode, base64_encode, long, open_meta, Streams, VERSION};
use crate::array::{self, bitset};
use crate::block_manager::BlockManager;
use crate::cache::{unpack_mapping, CacheMetadata, CacheSuperblock, PolicyId, M_DIRTY, M_VALID};
use crate::io::MetaIo;
use crate::{le64, superblock};
use std::fmt::Write as _;
use std::sync::Arc;

/// A cache's metadata as the XML has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheDump {
    pub uuid: String,
    pub block_size: u64,
    pub nr_cache_blocks: u64,
    pub policy: String,
    pub hint_width: u64,
    /// (cache block, origin block, dirty), in cache block order.
    pub mappings: Vec<(u64, u64, bool)>,
    /// (cache block, hint bytes) for mapped blocks.
    pub hints: Vec<(u64, Vec<u8>)>,
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The hint width the tools see: the stored size only with the variable-hint-size
/// incompat bit, else 4 (0.9 stores 0 for 4).
pub fn hint_width(sb: &CacheSuperblock) -> u32 {
    if sb.incompat_flags & 1 != 0 {
        sb.policy_hint_size
    } else {
        4
    }
}

/// Read the superblock of `io` as the tools do.
pub fn read_superblock(io: &dyn MetaIo) -> Result<CacheSuperblock, String> {
    if io.nr_blocks() == 0 {
        return Err("Metadata is not large enough for superblock.".into());
    }
    let b = superblock::read_block0(io).map_err(|e| super::sb_error(&e))?;
    CacheSuperblock::decode(&b).map_err(|e| super::sb_error(&e))
}

/// Read the metadata on `io` (read-only). `repair`: skip what cannot be read.
pub fn read_dump(io: Arc<dyn MetaIo>, repair: bool) -> Result<CacheDump, String> {
    let sb = read_superblock(&*io)?;
    let damage = || {
        "metadata contains errors (run cache_check for details).\nperhaps you wanted to run with --repair ?"
            .to_string()
    };
    let mut bm = BlockManager::new(io, 1024);
    let mut d = CacheDump {
        uuid: cstr(&sb.uuid),
        block_size: sb.data_block_size as u64,
        nr_cache_blocks: sb.cache_blocks as u64,
        policy: cstr(&sb.policy_name),
        hint_width: hint_width(&sb) as u64,
        ..CacheDump::default()
    };
    let nr = sb.cache_blocks as u64;
    let r = array::walk(&mut bm, sb.mapping_root, 8, &mut |cb, v| {
        let (ob, flags) = unpack_mapping(le64(v, 0));
        if cb < nr && flags & M_VALID != 0 {
            d.mappings.push((cb, ob, flags & M_DIRTY != 0));
        }
        Ok(())
    });
    if r.is_err() && !repair {
        return Err(damage());
    }
    if sb.hint_root != 0 && hint_width(&sb) > 0 {
        let valid: std::collections::HashSet<u64> = d.mappings.iter().map(|m| m.0).collect();
        let mut hints = Vec::new();
        let r = array::walk(&mut bm, sb.hint_root, hint_width(&sb), &mut |cb, v| {
            if valid.contains(&cb) {
                hints.push((cb, v.to_vec()));
            }
            Ok(())
        });
        if r.is_err() && !repair {
            return Err(damage());
        }
        d.hints = hints;
    }
    Ok(d)
}

/// The XML `cache_dump` prints.
pub fn write_xml(d: &CacheDump) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<superblock uuid=\"{}\" block_size=\"{}\" nr_cache_blocks=\"{}\" policy=\"{}\" hint_width=\"{}\">",
        d.uuid, d.block_size, d.nr_cache_blocks, d.policy, d.hint_width
    );
    s.push_str("  <mappings>\n");
    for (cb, ob, dirty) in &d.mappings {
        let _ = writeln!(
            s,
            "    <mapping cache_block=\"{cb}\" origin_block=\"{ob}\" dirty=\"{dirty}\"/>"
        );
    }
    s.push_str("  </mappings>\n  <hints>\n");
    for (cb, h) in &d.hints {
        let _ = writeln!(
            s,
            "    <hint cache_block=\"{cb}\" data=\"{}\"/>",
            base64_encode(h)
        );
    }
    s.push_str("  </hints>\n</superblock>\n");
    s
}

/// Parse cache XML.
pub fn parse_xml(text: &str) -> Result<CacheDump, String> {
    let mut d: Option<CacheDump> = None;
    for (name, closing, a) in super::tags(text)? {
        if closing {
            continue;
        }
        let need = |d: &mut Option<CacheDump>| d.take().ok_or("missing superblock".to_string());
        match name.as_str() {
            "superblock" => {
                d = Some(CacheDump {
                    uuid: attr(&a, "uuid")?,
                    block_size: attr(&a, "block_size")?,
                    nr_cache_blocks: attr(&a, "nr_cache_blocks")?,
                    policy: attr(&a, "policy")?,
                    hint_width: attr(&a, "hint_width")?,
                    ..CacheDump::default()
                })
            }
            "mappings" | "hints" | "discards" | "discard" => {}
            "mapping" => {
                let mut cur = need(&mut d)?;
                let dirty = match attr::<String>(&a, "dirty")?.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err("bad boolean value".into()),
                };
                cur.mappings
                    .push((attr(&a, "cache_block")?, attr(&a, "origin_block")?, dirty));
                d = Some(cur);
            }
            "hint" => {
                let mut cur = need(&mut d)?;
                let cb: u64 = attr(&a, "cache_block")?;
                let data = base64_decode(&attr::<String>(&a, "data")?).ok_or_else(|| {
                    format!("invalid base64 encoding of hint for cache block {cb}")
                })?;
                cur.hints.push((cb, data));
                d = Some(cur);
            }
            _ => return Err("unknown tag type".into()),
        }
    }
    d.ok_or_else(|| "no superblock in the XML".into())
}

/// Write `d` into fresh metadata on `io` (`cache_restore`'s restorer).
pub fn restore_dump(
    io: Arc<dyn MetaIo>,
    d: &CacheDump,
    version: u32,
    clean_shutdown: bool,
) -> Result<(), String> {
    let e = |e: crate::PdataError| e.to_string();
    if d.hint_width != 4 {
        return Err(format!("unsupported hint width {}", d.hint_width));
    }
    let mut md = CacheMetadata::format(io, d.block_size as u32, version).map_err(e)?;
    md.resize(d.nr_cache_blocks).map_err(e)?;
    for &(cb, ob, dirty) in &d.mappings {
        if cb >= d.nr_cache_blocks {
            return Err(format!("cache block {cb} out of range"));
        }
        md.insert(cb, ob).map_err(e)?;
        md.set_dirty(cb, dirty).map_err(e)?;
    }
    let mut hints = vec![0u32; d.nr_cache_blocks as usize];
    for (cb, h) in &d.hints {
        if let (Some(slot), Ok(b)) = (hints.get_mut(*cb as usize), <[u8; 4]>::try_from(&h[..])) {
            *slot = u32::from_le_bytes(b);
        }
    }
    let policy = PolicyId {
        name: d.policy.clone(),
        version: [0; 3],
        hint_size: 4,
    };
    md.write_hints(&policy, &hints).map_err(e)?;
    md.commit(clean_shutdown).map_err(e)
}

fn usage_dump() -> &'static str {
    "Usage: cache_dump [options] {device|file}\nOptions:\n  {-h|--help}\n  {-o <xml file>}\n  {-V|--version}\n  {--repair}\n"
}

/// `cache_dump`.
pub fn dump(args: &[String], io: &mut Streams<'_>) -> i32 {
    let lo = long(&[
        ("help", false, Key::Short('h')),
        ("output", true, Key::Short('o')),
        ("version", false, Key::Short('V')),
        ("repair", false, Key::Long(1)),
    ]);
    let p = match getopt_long(&io.prog.clone(), args, "ho:V", &lo) {
        Ok(p) => p,
        Err(m) => {
            io.e(&m);
            let _ = io.err.write_all(usage_dump().as_bytes());
            return 1;
        }
    };
    let (mut out, mut repair) = (None, false);
    for o in &p.opts {
        match o.key {
            Key::Short('h') => {
                io.o(usage_dump());
                return 0;
            }
            Key::Short('V') => {
                io.o(&format!("{VERSION}\n"));
                return 0;
            }
            Key::Short('o') => out = o.value.clone(),
            _ => repair = true,
        }
    }
    let Some(input) = p.operands.first() else {
        io.e("No input file provided.");
        let _ = io.err.write_all(usage_dump().as_bytes());
        return 1;
    };
    let xml = match open_meta(input, false).and_then(|m| read_dump(m, repair)) {
        Ok(d) => write_xml(&d),
        Err(m) => {
            io.e(&m);
            return 1;
        }
    };
    match out.as_deref() {
        None | Some("-") => io.o(&xml),
        Some(path) => {
            if let Err(e) = std::fs::write(path, xml) {
                io.e(&format!("{path}: {e}"));
                return 1;
            }
        }
    }
    0
}

fn usage_check() -> &'static str {
    "Usage: cache_check [options] {device|file}\nOptions:\n  {-q|--quiet}\n  {-h|--help}\n  {-V|--version}\n  {--clear-needs-check-flag}\n  {--super-block-only}\n  {--skip-mappings}\n  {--skip-hints}\n  {--skip-discards}\n"
}

/// `cache_check`.
pub fn check(args: &[String], io: &mut Streams<'_>) -> i32 {
    let lo = long(&[
        ("quiet", false, Key::Short('q')),
        ("super-block-only", false, Key::Long(1)),
        ("skip-mappings", false, Key::Long(2)),
        ("skip-hints", false, Key::Long(3)),
        ("skip-discards", false, Key::Long(4)),
        ("clear-needs-check-flag", false, Key::Long(5)),
        ("help", false, Key::Short('h')),
        ("version", false, Key::Short('V')),
    ]);
    let p = match getopt_long(&io.prog.clone(), args, "qhV", &lo) {
        Ok(p) => p,
        Err(m) => {
            io.e(&m);
            let _ = io.err.write_all(usage_check().as_bytes());
            return 1;
        }
    };
    let (mut maps, mut hints, mut discards, mut quiet, mut clear) =
        (true, true, true, false, false);
    for o in &p.opts {
        match o.key {
            Key::Long(1) => (maps, hints) = (false, false),
            Key::Long(2) => maps = false,
            Key::Long(3) => hints = false,
            Key::Long(4) => discards = false,
            Key::Long(5) => clear = true,
            Key::Short('q') => quiet = true,
            Key::Short('h') => {
                io.o(usage_check());
                return 0;
            }
            _ => {
                io.o(&format!("{VERSION}\n"));
                return 0;
            }
        }
    }
    let (mut n, meta) = match super::open_for_check(p.operands.first(), io, quiet, usage_check()) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let path = &p.operands[0]; // present: open_for_check took it
    n.line("examining superblock");
    let sb = match read_superblock(&*meta) {
        Ok(sb) => sb,
        Err(m) => {
            n.depth = 1;
            n.line("superblock is corrupt");
            n.depth = 2;
            n.line(&m);
            if super::looks_like_xml(&*meta) {
                n.depth = 0;
                n.line("This looks like XML.  cache_check only checks the binary metadata format.");
            }
            return 1;
        }
    };
    let mut bm = BlockManager::new(meta.clone(), 1024);
    let mut ok = true;
    let nr = sb.cache_blocks as u64;
    if maps {
        n.line("examining mapping array");
        let mut count = 0u64;
        let mut bad = None;
        let r = array::walk(&mut bm, sb.mapping_root, 8, &mut |cb, v| {
            count += 1;
            let (ob, flags) = unpack_mapping(le64(v, 0));
            if cb < nr && flags & M_VALID == 0 && flags & M_DIRTY != 0 && bad.is_none() {
                bad = Some((cb, ob, flags));
            }
            Ok(())
        });
        n.depth = 1;
        if let Err(e) = r {
            n.line(&format!("missing mappings [0, {nr}):"));
            n.depth = 2;
            n.line(&e.to_string());
            ok = false;
        } else if count < nr {
            n.line(&format!("missing mappings [{count}, {nr}):"));
            ok = false;
        }
        if let Some((cb, ob, flags)) = bad {
            n.line("invalid mapping:");
            n.depth = 2;
            n.line(&format!(
                "mapping has dirty flag but not valid flag [cblock = {cb}, oblock = {ob}, flags = {flags}]"
            ));
            ok = false;
        }
        n.depth = 0;
        if sb.version >= 2 && bitset::collect(&mut bm, sb.dirty_root, nr).is_err() {
            ok = false;
        }
    }
    if hints {
        if sb.hint_root == 0 {
            n.line("no hint array present");
        } else {
            n.line("examining hint array");
            let w = hint_width(&sb).max(1);
            if let Err(e) = array::walk(&mut bm, sb.hint_root, w, &mut |_, _| Ok(())) {
                n.depth = 1;
                n.line(&format!("missing mappings [0, {nr}):"));
                n.depth = 2;
                n.line(&e.to_string());
                n.depth = 0;
                ok = false;
            }
        }
    }
    if discards {
        if sb.discard_root == 0 {
            n.line("no discard bitset present");
        } else {
            n.line("examining discard bitset");
            if bitset::collect(&mut bm, sb.discard_root, sb.discard_nr_blocks).is_err() {
                n.depth = 1;
                n.line(&format!(
                    "missing discard bits [0, {})",
                    sb.discard_nr_blocks
                ));
                ok = false;
            }
        }
    }
    drop(bm);
    if ok && clear && sb.flags & crate::cache::NEEDS_CHECK != 0 {
        let r = open_meta(path, true).map_err(|_| ()).and_then(|m| {
            let mut sb2 = sb.clone();
            sb2.flags &= !crate::cache::NEEDS_CHECK;
            m.write_block(0, &sb2.encode()).map_err(|_| ())?;
            m.flush().map_err(|_| ())
        });
        if r.is_err() {
            return 1;
        }
    }
    if ok {
        0
    } else {
        1
    }
}

fn usage_restore() -> &'static str {
    "Usage: cache_restore [options]\nOptions:\n  {-h|--help}\n  {-i|--input} <input xml file>\n  {-o|--output} <output device or file>\n  {-q|--quiet}\n  {--metadata-version} <1 or 2>\n  {-V|--version}\n\n  {--debug-override-metadata-version} <integer>\n  {--omit-clean-shutdown}\n"
}

/// `cache_restore`.
pub fn restore(args: &[String], io: &mut Streams<'_>) -> i32 {
    let lo = long(&[
        ("debug-override-metadata-version", true, Key::Long(0)),
        ("omit-clean-shutdown", false, Key::Long(1)),
        ("metadata-version", true, Key::Long(2)),
        ("help", false, Key::Short('h')),
        ("input", true, Key::Short('i')),
        ("output", true, Key::Short('o')),
        ("quiet", false, Key::Short('q')),
        ("version", false, Key::Short('V')),
    ]);
    let p = match getopt_long(&io.prog.clone(), args, "hi:o:qV", &lo) {
        Ok(p) => p,
        Err(m) => {
            io.e(&m);
            let _ = io.err.write_all(usage_restore().as_bytes());
            return 1;
        }
    };
    let (mut input, mut output, mut version, mut clean, mut over) = (None, None, 1u32, true, None);
    for o in &p.opts {
        let v = o.value.clone();
        match o.key {
            Key::Long(0) => over = v.and_then(|v| v.parse::<u32>().ok()),
            Key::Long(1) => clean = false,
            Key::Long(2) => match v.as_deref() {
                Some("1") => version = 1,
                Some("2") => version = 2,
                _ => {
                    io.e("Bad metadata version\n");
                    return 1;
                }
            },
            Key::Short('h') => {
                io.o(usage_restore());
                return 0;
            }
            Key::Short('i') => input = v,
            Key::Short('o') => output = v,
            Key::Short('q') => {}
            _ => {
                io.o(&format!("{VERSION}\n"));
                return 0;
            }
        }
    }
    if !p.operands.is_empty() {
        let _ = io.err.write_all(usage_restore().as_bytes());
        return 1;
    }
    let Some(input) = input else {
        io.e("No input file provided.\n");
        let _ = io.err.write_all(usage_restore().as_bytes());
        return 1;
    };
    let Some(output) = output else {
        io.e("No output file provided.\n");
        let _ = io.err.write_all(usage_restore().as_bytes());
        return 1;
    };
    if !super::check_output(&output, io) {
        return 1;
    }
    let r = open_meta(&output, true).and_then(|m| {
        let text = std::fs::read_to_string(&input).map_err(|_| "Couldn't stat file".to_string())?;
        let d = parse_xml(&text)?;
        restore_dump(m.clone(), &d, version, clean)?;
        if let Some(v) = over {
            override_version(&*m, v)?;
        }
        Ok(())
    });
    if let Err(m) = r {
        io.e(&m);
        return 1;
    }
    0
}

fn override_version(m: &dyn MetaIo, v: u32) -> Result<(), String> {
    let mut b = superblock::read_block0(m).map_err(|e| e.to_string())?;
    b[40..44].copy_from_slice(&v.to_le_bytes());
    crate::checksum::seal(&mut b, crate::checksum::BlockKind::CacheSuperblock);
    m.write_block(0, &b).map_err(|e| e.to_string())?;
    m.flush().map_err(|e| e.to_string())
}

fn usage_repair() -> &'static str {
    "Usage: cache_repair [options] {device|file}\nOptions:\n  {-h|--help}\n  {-i|--input} <input metadata (binary format)>\n  {-o|--output} <output metadata (binary format)>\n  {-V|--version}\n"
}

/// `cache_repair`: dump what can be read of the input into fresh output metadata.
pub fn repair(args: &[String], io: &mut Streams<'_>) -> i32 {
    let lo = long(&[
        ("help", false, Key::Short('h')),
        ("input", true, Key::Short('i')),
        ("output", true, Key::Short('o')),
        ("version", false, Key::Short('V')),
    ]);
    let p = match getopt_long(&io.prog.clone(), args, "hi:o:V", &lo) {
        Ok(p) => p,
        Err(m) => {
            io.e(&m);
            let _ = io.err.write_all(usage_repair().as_bytes());
            return 1;
        }
    };
    let (mut input, mut output) = (None, None);
    for o in &p.opts {
        match o.key {
            Key::Short('h') => {
                io.o(usage_repair());
                return 0;
            }
            Key::Short('i') => input = o.value.clone(),
            Key::Short('o') => output = o.value.clone(),
            _ => {
                io.o(&format!("{VERSION}\n"));
                return 0;
            }
        }
    }
    let Some(input) = input else {
        io.e("no input file provided");
        let _ = io.err.write_all(usage_repair().as_bytes());
        return 1;
    };
    let Some(output) = output else {
        io.e("No output file provided.");
        let _ = io.err.write_all(usage_repair().as_bytes());
        return 1;
    };
    if !super::check_output(&output, io) {
        return 1;
    }
    let r = open_meta(&input, false)
        .and_then(|m| read_dump(m, true))
        .and_then(|d| {
            let v = open_meta(&input, false)
                .and_then(|m| read_superblock(&*m))
                .map(|sb| sb.version)
                .unwrap_or(1);
            open_meta(&output, true).and_then(|m| restore_dump(m, &d, v, true))
        });
    if let Err(m) = r {
        io.e(&m);
        return 1;
    }
    0
}

fn usage_size() -> &'static str {
    "Usage: cache_metadata_size [options]\nOptions:\n  {-h|--help}\n  {-V|--version}\n  {--block-size <sectors>}\n  {--device-size <sectors>}\n  {--nr-blocks <natural>}\n  {--max-hint-width <nr bytes>}\n\nThese all relate to the size of the fast device (eg, SSD), rather\nthan the whole cached device.\n"
}

/// `cache_metadata_size`'s estimate in sectors for `nr_blocks` cache blocks.
pub fn metadata_sectors(nr_blocks: u64, max_hint_width: u32) -> u64 {
    let transaction_overhead = 4 * 2048;
    let mapping = nr_blocks * 16 / 512;
    let hints = nr_blocks * (max_hint_width as u64 + 8) / 512;
    transaction_overhead + mapping + hints
}

/// `cache_metadata_size`.
pub fn metadata_size(args: &[String], io: &mut Streams<'_>) -> i32 {
    let lo = long(&[
        ("block-size", true, Key::Long(0)),
        ("device-size", true, Key::Long(1)),
        ("nr-blocks", true, Key::Long(2)),
        ("max-hint-width", true, Key::Long(3)),
        ("help", false, Key::Short('h')),
        ("version", false, Key::Short('V')),
    ]);
    let p = match getopt_long(&io.prog.clone(), args, "hV", &lo) {
        Ok(p) => p,
        Err(m) => {
            io.e(&m);
            let _ = io.err.write_all(usage_size().as_bytes());
            io.e("Invalid command line");
            return 1;
        }
    };
    let (mut bs, mut dev, mut nr, mut width) = (None, None, None, 4u32);
    let bad = |io: &mut Streams<'_>| {
        io.e("bad lexical cast: source type value could not be interpreted as target");
        1
    };
    for o in &p.opts {
        let v = o.value.as_deref().unwrap_or("");
        match o.key {
            Key::Long(0) => match v.parse::<u32>() {
                Ok(x) => bs = Some(x as u64),
                Err(_) => return bad(io),
            },
            Key::Long(1) => match v.parse::<u64>() {
                Ok(x) => dev = Some(x),
                Err(_) => return bad(io),
            },
            Key::Long(2) => match v.parse::<u64>() {
                Ok(x) => nr = Some(x),
                Err(_) => return bad(io),
            },
            Key::Long(3) => match v.parse::<u32>() {
                Ok(x) => width = x,
                Err(_) => return bad(io),
            },
            Key::Short('h') => {
                io.o(usage_size());
                return 0;
            }
            _ => {
                io.o(&format!("{VERSION}\n"));
                return 0;
            }
        }
    }
    let n = match (dev, bs, nr) {
        (Some(_), None, _) => {
            io.e("If you specify --device-size you must also give --block-size.");
            return 1;
        }
        (Some(d), Some(b), n) => {
            let blocks = d.checked_div(b).unwrap_or(0);
            if n.is_some_and(|n| n != blocks) {
                io.e("Contradictory arguments given, --nr-blocks doesn't match the --device-size and --block-size.");
                return 1;
            }
            blocks
        }
        (None, Some(_), _) => {
            io.e("If you specify --block-size you must also give --device-size.");
            return 1;
        }
        (None, None, Some(n)) => n,
        (None, None, None) => {
            io.e("Please specify either --device-size and --block-size, or --nr-blocks.");
            return 1;
        }
    };
    io.o(&format!("{} sectors\n", metadata_sectors(n, width)));
    0
}

pub use super::cache_writeback::writeback;
