//! PV and VG operations on images: `pvcreate` (label, PV header, empty metadata area),
//! writing a VG's metadata to every metadata area of every PV (text first, then the
//! precommit slot, then the commit slot, so the old copy stays readable until the commit),
//! and reading a VG back from a set of PVs (highest valid seqno; damaged copies fall back).

use super::label::{DiskLocn, LvmId, PvHeader, LABEL_SECTOR, PV_EXT_USED, PV_HEADER_EXTENSION_VSN};
use super::mda::{MdaHeader, RawLocn, MDA_HEADER_SIZE};
use super::model::Metadata;
use super::{calc_crc, LvmError, INITIAL_CRC, SECTOR_SIZE};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Byte access to a PV: an image file, a block device, or memory.
pub trait Disk {
    /// A name for messages (the path).
    fn name(&self) -> String;
    /// Size in bytes.
    fn size(&self) -> Result<u64, LvmError>;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), LvmError>;
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), LvmError>;
    /// Make written data durable (a no-op in memory).
    fn flush(&mut self) -> Result<(), LvmError> {
        Ok(())
    }
}

/// An image file or block device opened for [`Disk`] access.
pub struct ImageFile {
    pub path: PathBuf,
    file: File,
}

fn io_err(what: &str, e: std::io::Error) -> LvmError {
    LvmError::Io {
        what: what.to_string(),
        reason: e.to_string(),
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

impl ImageFile {
    /// Open `path` read-only or read-write.
    pub fn open(path: &Path, writable: bool) -> Result<ImageFile, LvmError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| io_err(&path.display().to_string(), e))?;
        Ok(ImageFile {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl Disk for ImageFile {
    fn name(&self) -> String {
        self.path.display().to_string()
    }
    fn size(&self) -> Result<u64, LvmError> {
        use std::io::{Seek, SeekFrom};
        // Seeking to the end gives block device sizes too.
        (&self.file)
            .seek(SeekFrom::End(0))
            .map_err(|e| io_err(&self.name(), e))
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), LvmError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| io_err(&self.name(), e))
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), LvmError> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| io_err(&self.name(), e))
    }
    fn flush(&mut self) -> Result<(), LvmError> {
        self.file.sync_data().map_err(|e| io_err(&self.name(), e))
    }
}

/// A PV in memory (tests, fuzzing).
pub struct MemDisk(pub Vec<u8>);

impl Disk for MemDisk {
    fn name(&self) -> String {
        "memory".into()
    }
    fn size(&self) -> Result<u64, LvmError> {
        Ok(self.0.len() as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), LvmError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.0.len() as u64);
        let Some(end) = end else {
            return Err(LvmError::Io {
                what: "memory".into(),
                reason: format!("read past the end at {offset}"),
                errno: libc::EIO,
            });
        };
        buf.copy_from_slice(&self.0[offset as usize..end as usize]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), LvmError> {
        let end = offset as usize + buf.len();
        if end > self.0.len() {
            return Err(LvmError::Io {
                what: "memory".into(),
                reason: format!("write past the end at {offset}"),
                errno: libc::ENOSPC,
            });
        }
        self.0[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
}

/// pvcreate's layout choices.
#[derive(Debug, Clone)]
pub struct PvcreateOptions {
    /// The PV uuid (random when None).
    pub uuid: Option<LvmId>,
    /// Where the data area starts (`--dataalignment`), bytes; the metadata area fills the
    /// space between 4 KiB and here.
    pub data_offset: u64,
    /// Metadata areas (`--metadatacopies`): 1, or 2 for a second area at the end of the
    /// device (its size rounded up to 1 MiB, its start aligned down to 1 MiB, as lvm2 does).
    pub metadata_copies: u32,
}

impl Default for PvcreateOptions {
    fn default() -> Self {
        PvcreateOptions {
            uuid: None,
            data_offset: 1 << 20,
            metadata_copies: 1,
        }
    }
}

/// Where pvcreate puts the metadata area.
pub const MDA_OFFSET: u64 = 4096;

/// Read the label and PV header of `disk`.
pub fn read_label(disk: &dyn Disk) -> Result<PvHeader, LvmError> {
    let size = disk.size()?;
    let mut head = vec![0u8; (4 * SECTOR_SIZE).min(size) as usize];
    disk.read_at(0, &mut head)?;
    PvHeader::find(&head)
}

/// Make `disk` a PV: label in sector 1, one metadata area at 4 KiB with an empty header, the
/// data area from `data_offset` to the end. Other LVM labels in the first sectors are wiped.
pub fn pvcreate(disk: &mut dyn Disk, opts: &PvcreateOptions) -> Result<PvHeader, LvmError> {
    let size = disk.size()?;
    let mda1_size = opts.data_offset.saturating_sub(MDA_OFFSET);
    let mda2_size = mda1_size.div_ceil(1 << 20) << 20;
    let mut need = opts.data_offset + (1 << 20);
    if opts.metadata_copies == 2 {
        need += mda2_size + (1 << 20);
    } else if opts.metadata_copies != 1 {
        return Err(LvmError::Invalid(format!(
            "metadata copies must be 1 or 2, not {}",
            opts.metadata_copies
        )));
    }
    if opts.data_offset < MDA_OFFSET + 2 * MDA_HEADER_SIZE
        || !opts.data_offset.is_multiple_of(SECTOR_SIZE)
    {
        return Err(LvmError::Invalid(format!(
            "data offset {} leaves no room for metadata",
            opts.data_offset
        )));
    }
    if size < need {
        return Err(LvmError::TooSmall { size, need });
    }
    let hdr = PvHeader {
        label_sector: LABEL_SECTOR,
        pv_uuid: opts.uuid.unwrap_or_else(LvmId::random),
        device_size: size,
        data_areas: vec![DiskLocn {
            offset: opts.data_offset,
            size: 0,
        }],
        metadata_areas: vec![DiskLocn {
            offset: MDA_OFFSET,
            size: mda1_size,
        }],
        ext_version: PV_HEADER_EXTENSION_VSN,
        ext_flags: 0,
        bootloader_areas: vec![],
    };
    let mut hdr = hdr;
    if opts.metadata_copies == 2 {
        let start = (size - mda2_size) & !((1 << 20) - 1);
        hdr.metadata_areas.push(DiskLocn {
            offset: start,
            size: mda2_size,
        });
    }
    let label = hdr.encode()?;
    let mut head = [0u8; 2048];
    disk.read_at(0, &mut head)?;
    for s in 0..4u64 {
        if s != LABEL_SECTOR && head[(s * 512) as usize..][..8] == super::label::LABEL_ID {
            disk.write_at(s * 512, &[0u8; 512])?;
        }
    }
    for a in &hdr.metadata_areas {
        disk.write_at(a.offset, &MdaHeader::new(a.offset, a.size).encode())?;
    }
    disk.write_at(LABEL_SECTOR * SECTOR_SIZE, &label)?;
    disk.flush()?;
    Ok(hdr)
}

/// Largest metadata text read (lvm2's text for thousands of LVs stays far below).
pub const MAX_TEXT: u64 = 256 << 20;

/// One metadata area's copy of the text, read and checked.
fn read_copy(disk: &dyn Disk, area: &DiskLocn) -> Result<Option<(Vec<u8>, u32)>, LvmError> {
    let disk_size = disk.size()?;
    if area
        .offset
        .checked_add(area.size)
        .is_none_or(|end| end > disk_size)
    {
        return Err(LvmError::BadPvHeader(format!(
            "metadata area {}+{} lies beyond the end of {}",
            area.offset,
            area.size,
            disk.name()
        )));
    }
    let mut hb = [0u8; MDA_HEADER_SIZE as usize];
    disk.read_at(area.offset, &mut hb)?;
    let h = MdaHeader::decode(area.offset, &hb)?;
    if h.size != area.size {
        return Err(LvmError::BadMdaHeader {
            offset: area.offset,
            reason: format!("size {} differs from the PV header's {}", h.size, area.size),
        });
    }
    let r = h.raw_locns[0];
    if r.is_empty() || r.is_ignored() {
        return Ok(None);
    }
    if r.size > MAX_TEXT {
        return Err(LvmError::BadMetadata {
            offset: area.offset + r.offset,
            reason: format!("metadata size {} is implausibly large", r.size),
        });
    }
    let mut text = Vec::with_capacity(r.size as usize);
    for (off, len) in h.pieces(&r) {
        let mut b = vec![0u8; len as usize];
        disk.read_at(area.offset + off, &mut b)?;
        text.extend_from_slice(&b);
    }
    let crc = calc_crc(INITIAL_CRC, &text);
    if crc != r.checksum {
        return Err(LvmError::BadMetadata {
            offset: area.offset + r.offset,
            reason: format!(
                "checksum 0x{crc:08x} does not match 0x{:08x} in the header",
                r.checksum
            ),
        });
    }
    Ok(Some((text, crc)))
}

/// A VG read from a set of PVs.
#[derive(Debug, Clone)]
pub struct ReadVg {
    pub metadata: Metadata,
    /// The chosen text (with its NUL).
    pub text: Vec<u8>,
    /// For each PV of the VG (in VG order): the index of the disk holding it, if given.
    pub pv_disks: Vec<Option<usize>>,
    /// Copies that were damaged or older than the chosen one, said plainly.
    pub warnings: Vec<String>,
}

/// Read the VG named `vgname` (or the only VG present) from `disks`: every metadata copy on
/// every PV is checked, the highest seqno wins; damaged copies are skipped with a warning;
/// two different texts with one seqno are an error.
pub fn read_vg(disks: &[&dyn Disk], vgname: Option<&str>) -> Result<ReadVg, LvmError> {
    let mut reasons = Vec::new();
    let mut labels = Vec::new();
    let mut copies: Vec<(Metadata, Vec<u8>, u32, String)> = Vec::new();
    for d in disks {
        let hdr = match read_label(*d) {
            Ok(h) => h,
            Err(e) => {
                reasons.push(format!("{}: {e}", d.name()));
                labels.push(None);
                continue;
            }
        };
        for (i, area) in hdr.metadata_areas.iter().enumerate() {
            let place = format!("{} mda{}", d.name(), i + 1);
            match read_copy(*d, area) {
                Ok(None) => {}
                Ok(Some((text, crc))) => match Metadata::parse(&text) {
                    Ok(m) => copies.push((m, text, crc, place)),
                    Err(e) => reasons.push(format!("{place}: {e}")),
                },
                Err(e) => reasons.push(format!("{place}: {e}")),
            }
        }
        labels.push(Some(hdr));
    }
    let mut names: Vec<&str> = copies.iter().map(|c| c.0.vg.name.as_str()).collect();
    names.sort();
    names.dedup();
    let want = match vgname {
        Some(n) => n.to_string(),
        None if names.len() == 1 => names[0].to_string(),
        None if names.is_empty() => {
            return Err(LvmError::NoValidMetadata {
                vg: "(any)".into(),
                reasons: if reasons.is_empty() {
                    "no metadata on these PVs".into()
                } else {
                    reasons.join("; ")
                },
            })
        }
        None => {
            return Err(LvmError::Inconsistent(format!(
                "several VGs on these PVs ({}); name one",
                names.join(", ")
            )))
        }
    };
    let mine: Vec<_> = copies.into_iter().filter(|c| c.0.vg.name == want).collect();
    let Some(best) = mine.iter().max_by_key(|c| c.0.vg.seqno) else {
        return Err(LvmError::NoValidMetadata {
            vg: want,
            reasons: if reasons.is_empty() {
                "not found on these PVs".into()
            } else {
                reasons.join("; ")
            },
        });
    };
    let mut warnings: Vec<String> = reasons;
    for c in &mine {
        if c.0.vg.id != best.0.vg.id {
            return Err(LvmError::Inconsistent(format!(
                "two VGs named {want} with ids {} ({}) and {} ({})",
                best.0.vg.id, best.3, c.0.vg.id, c.3
            )));
        }
        if c.0.vg.seqno == best.0.vg.seqno && c.2 != best.2 {
            return Err(LvmError::Inconsistent(format!(
                "VG {want} seqno {} differs between {} and {}",
                c.0.vg.seqno, best.3, c.3
            )));
        }
        if c.0.vg.seqno < best.0.vg.seqno {
            warnings.push(format!(
                "{} has old metadata (seqno {} < {})",
                c.3, c.0.vg.seqno, best.0.vg.seqno
            ));
        }
    }
    let pv_disks = best
        .0
        .vg
        .pvs
        .iter()
        .map(|p| {
            labels
                .iter()
                .position(|l| l.as_ref().is_some_and(|l| l.pv_uuid == p.id))
        })
        .collect();
    Ok(ReadVg {
        metadata: best.0.clone(),
        text: best.1.clone(),
        pv_disks,
        warnings,
    })
}

/// New text written to every metadata area and precommitted; [`Staged::commit`] makes it
/// the current copy. Until then readers see the previous copy.
#[derive(Debug)]
pub struct Staged {
    /// Per disk: its label (to be marked in use) and each area's new header (None for an
    /// ignored area).
    plan: Vec<(PvHeader, Vec<Option<MdaHeader>>)>,
}

/// Write `meta` to every metadata area of `disks` (which must be exactly the VG's PVs, by
/// uuid), and precommit it. Everything is checked before the first byte is written.
pub fn stage_vg(meta: &Metadata, disks: &mut [&mut dyn Disk]) -> Result<Staged, LvmError> {
    let vg = &meta.vg;
    vg.validate()?;
    let text = meta.to_bytes();
    let mut plan = Vec::new();
    let mut seen = Vec::new();
    for d in disks.iter() {
        let hdr = read_label(&**d)?;
        if !vg.pvs.iter().any(|p| p.id == hdr.pv_uuid) {
            return Err(LvmError::Invalid(format!(
                "{} (PV {}) is not in VG {}",
                d.name(),
                hdr.pv_uuid,
                vg.name
            )));
        }
        if seen.contains(&hdr.pv_uuid) {
            return Err(LvmError::Invalid(format!("PV {} given twice", hdr.pv_uuid)));
        }
        seen.push(hdr.pv_uuid);
        let mut heads = Vec::new();
        for area in &hdr.metadata_areas {
            let mut hb = [0u8; MDA_HEADER_SIZE as usize];
            d.read_at(area.offset, &mut hb)?;
            // A damaged header is rewritten empty (as lvm2 repairs it): the text goes first.
            let mut h = MdaHeader::decode(area.offset, &hb)
                .unwrap_or_else(|_| MdaHeader::new(area.offset, area.size));
            // An ignored area (`--metadataignore y`) is left as it is, as lvm2 leaves it.
            if h.raw_locns[0].is_ignored() {
                heads.push(None);
                continue;
            }
            h.size = area.size;
            let new = h.place(&vg.name, &text)?;
            if h.raw_locns[0].is_empty() {
                h.raw_locns[0] = RawLocn::default();
            }
            h.raw_locns[1] = new;
            heads.push(Some(h));
        }
        plan.push((hdr, heads));
    }
    if let Some(p) = vg.pvs.iter().find(|p| !seen.contains(&p.id)) {
        return Err(LvmError::NotFound(format!(
            "PV {} ({}) of VG {} is missing",
            p.id, p.name, vg.name
        )));
    }
    for (d, (_, heads)) in disks.iter_mut().zip(&plan) {
        for h in heads.iter().flatten() {
            let [(off, len), (woff, wlen)] = h.pieces(&h.raw_locns[1]);
            d.write_at(h.start + off, &text[..len as usize])?;
            if wlen > 0 {
                d.write_at(h.start + woff, &text[len as usize..])?;
            }
        }
        d.flush()?;
    }
    for (d, (_, heads)) in disks.iter_mut().zip(&plan) {
        for h in heads.iter().flatten() {
            d.write_at(h.start, &h.encode())?;
        }
        d.flush()?;
    }
    Ok(Staged { plan })
}

impl Staged {
    /// Commit: slot 0 takes the new location, slot 1 is cleared, and each PV's label is
    /// marked as belonging to a VG. `disks` in the same order as for [`stage_vg`].
    pub fn commit(self, disks: &mut [&mut dyn Disk]) -> Result<(), LvmError> {
        for (d, (mut hdr, heads)) in disks.iter_mut().zip(self.plan) {
            for mut h in heads.into_iter().flatten() {
                h.raw_locns[0] = h.raw_locns[1];
                h.raw_locns[1] = RawLocn::default();
                d.write_at(h.start, &h.encode())?;
            }
            if hdr.ext_version >= PV_HEADER_EXTENSION_VSN && hdr.ext_flags & PV_EXT_USED == 0 {
                hdr.ext_flags |= PV_EXT_USED;
                d.write_at(hdr.label_sector * SECTOR_SIZE, &hdr.encode()?)?;
            }
            d.flush()?;
        }
        Ok(())
    }
}

/// [`stage_vg`] then [`Staged::commit`].
pub fn write_vg(meta: &Metadata, disks: &mut [&mut dyn Disk]) -> Result<(), LvmError> {
    stage_vg(meta, disks)?.commit(disks)
}

/// What one device holds: its PV header and the VG its newest metadata copy names (None
/// for an orphan PV, one with no metadata yet).
#[derive(Debug, Clone)]
pub struct PvScan {
    pub header: PvHeader,
    pub vg: Option<String>,
    /// Damaged copies seen, said plainly.
    pub warnings: Vec<String>,
}

/// Scan one device: label, then every metadata copy; the newest valid copy names the VG.
/// No label is [`LvmError::NoLabel`]; damaged copies are warnings unless none is valid.
pub fn scan_pv(disk: &dyn Disk) -> Result<PvScan, LvmError> {
    let header = read_label(disk)?;
    let mut best: Option<(u64, String)> = None;
    let mut warnings = Vec::new();
    for (i, area) in header.metadata_areas.iter().enumerate() {
        let parsed = read_copy(disk, area).and_then(|c| match c {
            None => Ok(None),
            Some((text, _)) => Metadata::parse(&text).map(Some),
        });
        match parsed {
            Ok(Some(m)) if best.as_ref().is_none_or(|b| m.vg.seqno > b.0) => {
                best = Some((m.vg.seqno, m.vg.name))
            }
            Ok(_) => {}
            Err(e) => warnings.push(format!("{} mda{}: {e}", disk.name(), i + 1)),
        }
    }
    if best.is_none() && !warnings.is_empty() {
        return Err(LvmError::NoValidMetadata {
            vg: "(unknown)".into(),
            reasons: warnings.join("; "),
        });
    }
    Ok(PvScan {
        header,
        vg: best.map(|b| b.1),
        warnings,
    })
}
