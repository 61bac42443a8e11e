//! thin-provisioning-tools' XML form of dm-thin metadata: reading metadata into a
//! [`ThinDump`] (what `thin_dump` prints), writing the XML in the same layout as
//! `thin_dump` 0.9 (runs of consecutive blocks with one time become `range_mapping`),
//! parsing it back, and restoring it into fresh metadata (`thin_restore`).

use crate::block_manager::BlockManager;
use crate::btree;
use crate::checksum::BlockKind;
use crate::error::{PdataError, Result};
use crate::io::MetaIo;
use crate::le64;
use crate::space_map::SmRoot;
use crate::thin::{unpack_block_time, DeviceDetails, ThinMetadata, ThinSuperblock, DETAILS_SIZE};
use crate::tm::SUPERBLOCK;
use std::io::Write;
use std::sync::Arc;

/// One thin device in a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpDevice {
    pub dev_id: u64,
    pub details: DeviceDetails,
    /// (virtual block, data block, time), in virtual block order.
    pub mappings: Vec<(u64, u64, u32)>,
}

/// The whole of a pool's metadata as the XML describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinDump {
    pub uuid: String,
    pub time: u32,
    pub transaction: u64,
    pub flags: u32,
    pub version: u32,
    pub data_block_size: u32,
    pub nr_data_blocks: u64,
    /// The held metadata snapshot's block in the superblock read (0: none; not in the
    /// XML `thin_dump` writes).
    pub metadata_snap: u64,
    pub devices: Vec<DumpDevice>,
}

/// What to dump.
#[derive(Debug, Clone, Default)]
pub struct DumpOpts {
    /// Dump the held metadata snapshot: `Some(None)` the one the superblock names,
    /// `Some(Some(b))` the copy at block `b`.
    pub metadata_snap: Option<Option<u64>>,
    /// Only this device.
    pub dev_id: Option<u64>,
    /// Devices without their mappings.
    pub skip_mappings: bool,
}

/// Read the metadata on `io` (read-only).
pub fn read_dump(io: Arc<dyn MetaIo>, opts: &DumpOpts) -> Result<ThinDump> {
    let mut bm = BlockManager::new(io, 1024);
    let sb = ThinSuperblock::decode(&*bm.read_raw(SUPERBLOCK)?, SUPERBLOCK)?;
    let src = match opts.metadata_snap {
        None => sb.clone(),
        Some(at) => {
            let b = at.unwrap_or(sb.metadata_snap);
            if b == 0 {
                return Err(PdataError::Invalid("no metadata snapshot is held".into()));
            }
            ThinSuperblock::decode(&*bm.read(b, BlockKind::ThinSuperblock)?, b)?
        }
    };
    // A held snapshot's copy has zeroed space map roots: thin_dump then says 0 blocks.
    let nr_data_blocks = if src.data_sm_root.iter().all(|&b| b == 0) {
        0
    } else {
        SmRoot::unpack(&src.data_sm_root)?.nr_blocks
    };
    let mut devices = Vec::new();
    for (dev, v) in btree::collect(&mut bm, src.device_details_root, DETAILS_SIZE)? {
        if opts.dev_id.is_some_and(|d| d != dev) {
            continue;
        }
        let details = DeviceDetails::unpack(&v);
        let mut mappings = Vec::new();
        if !opts.skip_mappings {
            let root = btree::lookup(&mut bm, src.data_mapping_root, dev, 8)?.ok_or_else(|| {
                PdataError::Inconsistent(format!("device {dev} has no mapping tree"))
            })?;
            btree::walk_from(&mut bm, le64(&root, 0), 8, 0, &mut |k, v| {
                let (b, t) = unpack_block_time(le64(v, 0));
                mappings.push((k, b, t));
                Ok(true)
            })?;
        }
        devices.push(DumpDevice {
            dev_id: dev,
            details,
            mappings,
        });
    }
    Ok(ThinDump {
        uuid: String::new(),
        time: src.time,
        transaction: src.trans_id,
        flags: src.flags,
        version: src.version,
        data_block_size: src.data_block_size,
        nr_data_blocks,
        metadata_snap: src.metadata_snap,
        devices,
    })
}

/// Runs of a device's mappings: (origin, data, length, time), consecutive in both blocks
/// with one time.
pub fn runs(mappings: &[(u64, u64, u32)]) -> Vec<(u64, u64, u64, u32)> {
    let mut out: Vec<(u64, u64, u64, u32)> = Vec::new();
    for &(o, d, t) in mappings {
        if let Some(last) = out.last_mut() {
            if last.0 + last.2 == o && last.1 + last.2 == d && last.3 == t {
                last.2 += 1;
                continue;
            }
        }
        out.push((o, d, 1, t));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Write `d` as `thin_dump` does.
pub fn write_xml(d: &ThinDump, w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        w,
        "<superblock uuid=\"{}\" time=\"{}\" transaction=\"{}\" flags=\"{}\" version=\"{}\" data_block_size=\"{}\" nr_data_blocks=\"{}\">",
        escape(&d.uuid), d.time, d.transaction, d.flags, d.version, d.data_block_size, d.nr_data_blocks
    )?;
    for dev in &d.devices {
        let x = &dev.details;
        writeln!(
            w,
            "  <device dev_id=\"{}\" mapped_blocks=\"{}\" transaction=\"{}\" creation_time=\"{}\" snap_time=\"{}\">",
            dev.dev_id, x.mapped_blocks, x.transaction_id, x.creation_time, x.snapshotted_time
        )?;
        for (o, b, n, t) in runs(&dev.mappings) {
            if n == 1 {
                writeln!(
                    w,
                    "    <single_mapping origin_block=\"{o}\" data_block=\"{b}\" time=\"{t}\"/>"
                )?;
            } else {
                writeln!(
                    w,
                    "    <range_mapping origin_begin=\"{o}\" data_begin=\"{b}\" length=\"{n}\" time=\"{t}\"/>"
                )?;
            }
        }
        writeln!(w, "  </device>")?;
    }
    writeln!(w, "</superblock>")
}

/// Write `d` as `thin_dump -f human_readable` does.
pub fn write_human(d: &ThinDump, w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        w,
        "begin superblock: \"{}\", {}, {}, {}, {}, {}, {}",
        d.uuid, d.time, d.transaction, d.flags, d.version, d.data_block_size, d.nr_data_blocks
    )?;
    for dev in &d.devices {
        let x = &dev.details;
        writeln!(w, "device: {}", dev.dev_id)?;
        writeln!(w, "mapped_blocks: {}", x.mapped_blocks)?;
        writeln!(w, "transaction: {}", x.transaction_id)?;
        writeln!(w, "creation time: {}", x.creation_time)?;
        writeln!(w, "snap time: {}", x.snapshotted_time)?;
        for (o, b, n, t) in runs(&dev.mappings) {
            if n == 1 {
                writeln!(w, "    {o} -> {b}, {t}")?;
            } else {
                writeln!(w, "    ({o}..{}) -> ({b}..{}), {t}", o + n - 1, b + n - 1)?;
            }
        }
        writeln!(w)?;
    }
    writeln!(w, "end superblock")
}

/// The attributes of one tag `<name a="1" …>`.
fn attrs(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq]
            .split_whitespace()
            .last()
            .unwrap_or("")
            .to_string();
        let after = &rest[eq + 2..];
        let Some(end) = after.find('"') else { break };
        let value = after[..end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        out.push((name, value));
        rest = &after[end + 1..];
    }
    out
}

fn get<T: std::str::FromStr>(a: &[(String, String)], tag: &str, name: &str) -> Result<T> {
    let v = a
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| PdataError::Invalid(format!("<{tag}> lacks attribute {name}")))?;
    v.parse()
        .map_err(|_| PdataError::Invalid(format!("<{tag}>: bad {name}=\"{v}\"")))
}

fn opt<T: std::str::FromStr>(a: &[(String, String)], tag: &str, name: &str, d: T) -> Result<T> {
    if a.iter().any(|(n, _)| n == name) {
        get(a, tag, name)
    } else {
        Ok(d)
    }
}

/// Parse thin_dump XML meant for a metadata device of `meta_blocks` blocks. Every mapping
/// takes a slot in a btree leaf there, so more mappings than all of its blocks could hold
/// as full leaves are refused as they are read — a hostile range length cannot ask for
/// unbounded memory.
pub fn parse_xml(text: &str, meta_blocks: u64) -> Result<ThinDump> {
    let mut dump: Option<ThinDump> = None;
    let mut cur: Option<DumpDevice> = None;
    let max_mappings = meta_blocks.saturating_mul(btree::max_entries(8) as u64);
    let mut nr_mappings = 0u64;
    let mut take = |n: u64| {
        nr_mappings = nr_mappings.saturating_add(n);
        if nr_mappings > max_mappings {
            return Err(bad(&format!(
                "over {max_mappings} mappings cannot fit a metadata device of {meta_blocks} blocks"
            )));
        }
        Ok(())
    };
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        let gt = rest[lt..]
            .find('>')
            .ok_or_else(|| PdataError::Invalid("unterminated tag".into()))?
            + lt;
        let tag = &rest[lt + 1..gt];
        rest = &rest[gt + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        let closing = tag.starts_with('/');
        let a = attrs(tag);
        match (name, closing) {
            ("superblock", false) => {
                dump = Some(ThinDump {
                    uuid: opt(&a, name, "uuid", String::new())?,
                    time: get(&a, name, "time")?,
                    transaction: get(&a, name, "transaction")?,
                    flags: opt(&a, name, "flags", 0)?,
                    version: opt(&a, name, "version", 2)?,
                    data_block_size: get(&a, name, "data_block_size")?,
                    nr_data_blocks: get(&a, name, "nr_data_blocks")?,
                    metadata_snap: 0,
                    devices: Vec::new(),
                })
            }
            ("device", false) => {
                cur = Some(DumpDevice {
                    dev_id: get(&a, name, "dev_id")?,
                    details: DeviceDetails {
                        mapped_blocks: get(&a, name, "mapped_blocks")?,
                        transaction_id: get(&a, name, "transaction")?,
                        creation_time: get(&a, name, "creation_time")?,
                        snapshotted_time: get(&a, name, "snap_time")?,
                    },
                    mappings: Vec::new(),
                })
            }
            ("device", true) => {
                let dev = cur
                    .take()
                    .ok_or_else(|| bad("</device> outside a device"))?;
                dump.as_mut()
                    .ok_or_else(|| bad("<device> outside <superblock>"))?
                    .devices
                    .push(dev);
            }
            ("single_mapping", false) => {
                let dev = cur
                    .as_mut()
                    .ok_or_else(|| bad("mapping outside a device"))?;
                take(1)?;
                dev.mappings.push((
                    get(&a, name, "origin_block")?,
                    get(&a, name, "data_block")?,
                    get(&a, name, "time")?,
                ));
            }
            ("range_mapping", false) => {
                let dev = cur
                    .as_mut()
                    .ok_or_else(|| bad("mapping outside a device"))?;
                let o: u64 = get(&a, name, "origin_begin")?;
                let d: u64 = get(&a, name, "data_begin")?;
                let n: u64 = get(&a, name, "length")?;
                let t: u32 = get(&a, name, "time")?;
                // The range is expanded block by block: it must lie inside the data device
                // (a hostile length would otherwise ask for any amount of memory).
                let nr_data = dump.as_ref().map_or(0, |x| x.nr_data_blocks);
                if d.checked_add(n).is_none_or(|end| end > nr_data) || o.checked_add(n).is_none() {
                    return Err(bad(&format!(
                        "range mapping of {n} blocks at data block {d} (origin {o}) lies past the {nr_data} data blocks"
                    )));
                }
                take(n)?;
                dev.mappings.extend((0..n).map(|i| (o + i, d + i, t)));
            }
            ("superblock", true) => {}
            _ => return Err(bad(&format!("unexpected tag <{tag}>"))),
        }
    }
    dump.ok_or_else(|| bad("no <superblock> in the XML"))
}

fn bad(m: &str) -> PdataError {
    PdataError::Invalid(m.to_string())
}

/// Format `io` afresh and write `d` into it, committed.
pub fn restore(io: Arc<dyn MetaIo>, d: &ThinDump) -> Result<()> {
    let mut md = ThinMetadata::format(io, d.data_block_size, d.nr_data_blocks)?;
    md.set_time(d.time);
    md.set_transaction_id(d.transaction);
    md.set_flags(d.flags);
    for dev in &d.devices {
        md.restore_device(dev.dev_id, dev.details)?;
        for &(o, b, t) in &dev.mappings {
            md.restore_mapping(dev.dev_id, o, b, t)?;
        }
    }
    md.commit()
}
