//! What `integritysetup` does beyond parsing its command line, as a library: the table it
//! loads for `format` and `open`, formatting (a temporary 8-sector device that makes the
//! target write superblock and journal, then the wipe that gives every block a tag), the
//! text of `dump`, and `status` from a live table line.

use super::params::{IntegrityParams, Mode};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use udm_formats::integrity::{Superblock, FLAG_FIXED_HMAC, FLAG_FIXED_PADDING, FLAG_RECALCULATING};
use udm_io::{BlockDevice, Sectors};

/// What the integritysetup options say about the table (the library's
/// `crypt_params_integrity` plus activation flags).
#[derive(Debug, Clone, Default)]
pub struct SetupOpts {
    /// Kernel hash name (`crc32c`, `hmac(sha256)`), from `--integrity` (`hmac-sha256`).
    pub integrity: String,
    pub integrity_key: Option<Vec<u8>>,
    pub journal_integrity: Option<String>,
    pub journal_integrity_key: Option<Vec<u8>>,
    /// Kernel cipher name for `journal_crypt` (`cbc(aes)`), from `--journal-crypt cbc-aes`.
    pub journal_crypt: Option<String>,
    pub journal_crypt_key: Option<Vec<u8>>,
    pub tag_size: Option<u32>,
    pub sector_size: Option<u32>,
    pub journal_size: Option<u64>,
    pub interleave_sectors: Option<u32>,
    pub journal_watermark: Option<u32>,
    pub journal_commit_time: Option<u32>,
    pub buffer_sectors: Option<u32>,
    pub sectors_per_bit: Option<u64>,
    pub bitmap_flush_time: Option<u32>,
    pub mode: Option<Mode>,
    pub recalculate: bool,
    pub recalculate_reset: bool,
    pub legacy_padding: bool,
    pub legacy_hmac: bool,
    pub legacy_recalculate: bool,
    pub allow_discards: bool,
    /// `--data-device`: data lives there; the integrity device holds only superblock,
    /// journal and tags (the table's `meta_device:`).
    pub data_device: Option<String>,
}

/// The kernel name of a `--journal-crypt` cipher (`cbc-aes` → `cbc(aes)`; `chacha20` and
/// names already in the kernel's form stay).
pub fn kernel_cipher(a: &str) -> String {
    match a.split_once('-') {
        Some((m, c)) if !a.contains('(') && !m.is_empty() && !c.is_empty() => format!("{m}({c})"),
        _ => a.to_string(),
    }
}

/// The kernel name of an integritysetup algorithm (`hmac-sha256` → `hmac(sha256)`).
pub fn kernel_alg(a: &str) -> String {
    match a.strip_prefix("hmac-") {
        Some(h) => format!("hmac({h})"),
        None => a.to_string(),
    }
}

fn hex(k: &[u8]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

/// The target arguments after `<dev> <offset>` for these options: `<tag> <mode> <n> opts…`.
/// `format` adds the layout options (journal size, interleave, fix_padding/fix_hmac);
/// `sb` (when opening) supplies tag and sector size and the fixed-padding/HMAC flags.
pub fn table_rest(o: &SetupOpts, sb: Option<&Superblock>, format: bool) -> String {
    table_rest_meta(o, sb, format, None)
}

/// [`table_rest`] with `meta_device:<meta>` when the metadata is on its own device.
pub fn table_rest_meta(
    o: &SetupOpts,
    sb: Option<&Superblock>,
    format: bool,
    meta: Option<&str>,
) -> String {
    let tag = match sb {
        Some(sb) => sb.integrity_tag_size as u32,
        None => o.tag_size.unwrap_or_else(|| default_tag_size(&o.integrity)),
    };
    let sector = match sb {
        Some(sb) => 512u32 << sb.log2_sectors_per_block,
        None => o.sector_size.unwrap_or(512),
    };
    let mode = o.mode.unwrap_or(Mode::Journal);
    let mut w: Vec<String> = Vec::new();
    if let Some(m) = meta {
        w.push(format!("meta_device:{}", udm_core::Escaped(m)));
    }
    if format {
        if let Some(j) = o.journal_size {
            w.push(format!("journal_sectors:{}", j / 512));
        }
        if let Some(i) = o.interleave_sectors {
            w.push(format!("interleave_sectors:{i}"));
        }
    }
    if let Some(b) = o.buffer_sectors {
        w.push(format!("buffer_sectors:{b}"));
    }
    if mode == Mode::Journal {
        if let Some(v) = o.journal_watermark {
            w.push(format!("journal_watermark:{v}"));
        }
        if let Some(v) = o.journal_commit_time {
            w.push(format!("commit_time:{v}"));
        }
    }
    if mode == Mode::Bitmap {
        if let Some(v) = o.sectors_per_bit {
            w.push(format!("sectors_per_bit:{v}"));
        }
        if let Some(v) = o.bitmap_flush_time {
            w.push(format!("bitmap_flush_interval:{v}"));
        }
    }
    if sector != 512 {
        w.push(format!("block_size:{sector}"));
    }
    if o.recalculate && !format {
        w.push("recalculate".into());
    }
    if o.recalculate_reset && !format {
        w.push("reset_recalculate".into());
    }
    if o.allow_discards && !format {
        w.push("allow_discards".into());
    }
    let (pad, hmac) = match sb {
        Some(sb) => (sb.has(FLAG_FIXED_PADDING), sb.has(FLAG_FIXED_HMAC)),
        None => (!o.legacy_padding, !o.legacy_hmac),
    };
    if pad {
        w.push("fix_padding".into());
    }
    if hmac {
        w.push("fix_hmac".into());
    }
    if o.legacy_recalculate {
        w.push("legacy_recalculate".into());
    }
    let key = |k: &Option<Vec<u8>>| {
        k.as_ref()
            .map(|k| format!(":{}", hex(k)))
            .unwrap_or_default()
    };
    // `--integrity none`: tags come from the layer above (an authenticated crypt).
    if o.integrity != "none" {
        w.push(format!(
            "internal_hash:{}{}",
            o.integrity,
            key(&o.integrity_key)
        ));
    }
    if let Some(j) = &o.journal_integrity {
        w.push(format!("journal_mac:{j}{}", key(&o.journal_integrity_key)));
    }
    if let Some(c) = &o.journal_crypt {
        w.push(format!("journal_crypt:{c}{}", key(&o.journal_crypt_key)));
    }
    format!("{tag} {} {} {}", mode.letter(), w.len(), w.join(" "))
}

/// The tag size integritysetup picks for a hash when `--tag-size` is not given.
pub fn default_tag_size(alg: &str) -> u32 {
    match alg {
        "crc32c" | "crc32" => 4,
        "sha1" | "hmac(sha1)" => 20,
        "sha256" | "hmac(sha256)" => 32,
        "sha512" | "hmac(sha512)" => 64,
        _ => 4,
    }
}

/// Why formatting failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Table(String),
    #[error("I/O error: {0}")]
    Io(#[from] udm_io::IoError),
    #[error("cannot open {0}")]
    Open(String),
}

/// Read the superblock at the start of `dev`, if it has one.
pub fn read_superblock(dev: &dyn BlockDevice) -> Option<Superblock> {
    let b = udm_io::sync::read_at(dev, Sectors(0), 512).ok()?;
    Superblock::decode(b.as_slice()).ok()
}

/// The superblock of the file or device at `path`: `Err(())` when it cannot be opened,
/// `Ok(None)` when it has no integrity superblock.
#[allow(clippy::result_unit_err)]
pub fn read_superblock_at(path: &Path) -> Result<Option<Superblock>, ()> {
    read_superblock_at_sector(path, 0)
}

/// The superblock at `sector` of the file or device at `path` (LUKS2 puts it at the data
/// segment's offset).
#[allow(clippy::result_unit_err)]
pub fn read_superblock_at_sector(path: &Path, sector: u64) -> Result<Option<Superblock>, ()> {
    let f = udm_io::file::FileDevice::open(path, true).map_err(|_| ())?;
    let b = udm_io::sync::read_at(&f, Sectors(sector), 512).map_err(|_| ())?;
    Ok(Superblock::decode(b.as_slice()).ok())
}

/// What fills the data area after formatting, so every block has a valid tag.
pub enum Wipe<'a> {
    /// Nothing (`--no-wipe`, `--integrity-no-wipe`): tags stay invalid until written.
    None,
    /// Zeros through a direct-mode integrity device (integritysetup).
    Zeros,
    /// Zeros through a crypt mapping over a direct-mode integrity device, as cryptsetup
    /// wipes an authenticated LUKS2 volume.
    Crypt {
        /// The crypt table's params for a device path (the integrity device's
        /// `/dev/mapper/…` name in the formatting registry).
        params: &'a dyn Fn(&str) -> String,
    },
}

/// Format `path` (a file or block device) as integritysetup does: a temporary 8-sector
/// device writes superblock and journal; unless `no_wipe`, every block is then written
/// with zeros through a direct-mode device so it has a valid tag. Returns the superblock.
pub fn format(path: &Path, o: &SetupOpts, no_wipe: bool) -> Result<Superblock, SetupError> {
    let wipe = if no_wipe { Wipe::None } else { Wipe::Zeros };
    format_at(path, 0, o, &wipe)
}

/// [`format`] with the integrity device starting at `offset` sectors of `path` (LUKS2 puts
/// it at the data segment) and a choice of [`Wipe`].
pub fn format_at(
    path: &Path,
    offset: u64,
    o: &SetupOpts,
    wipe: &Wipe<'_>,
) -> Result<Superblock, SetupError> {
    format_at_with(path, offset, o, wipe, &mut |_| {}, &mut |_, _| {})
}

/// [`format_at`] with hooks for the tool's output: `formatted` runs once superblock and
/// journal are written, before the wipe; `progress(size, done)` (bytes) after each 1 MiB
/// the wipe writes.
pub fn format_at_with(
    path: &Path,
    offset: u64,
    o: &SetupOpts,
    wipe: &Wipe<'_>,
    formatted: &mut dyn FnMut(&Superblock),
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Superblock, SetupError> {
    let dev: Arc<dyn BlockDevice> = Arc::new(
        udm_io::file::FileDevice::open(path, false)
            .map_err(|_| SetupError::Open(path.display().to_string()))?,
    );
    let read_sb = || -> Result<Superblock, SetupError> {
        let b = udm_io::sync::read_at(dev.as_ref(), Sectors(offset), 512)?;
        Superblock::decode(b.as_slice()).map_err(|_| SetupError::Table("no superblock".into()))
    };
    // The first sectors must be zero for the target to format.
    udm_io::sync::write_at(dev.as_ref(), Sectors(offset), &[0u8; 4096])?;
    let reg = udm_core::Registry::new(crate::builtin());
    let p = path.display().to_string();
    let run = |name: &str, table: String| -> Result<(), SetupError> {
        let lines =
            udm_core::parse_table_text(&table).map_err(|e| SetupError::Table(e.to_string()))?;
        let sel = udm_core::DevSel::Name(name.into());
        reg.create(name, "")
            .map_err(|e| SetupError::Table(e.to_string()))?;
        let r = reg
            .load(&sel, &lines, false)
            .and_then(|_| reg.resume(&sel).map(|_| ()));
        if let Err(e) = r {
            let _ = reg.remove(&sel, false);
            return Err(SetupError::Table(e.to_string()));
        }
        Ok(())
    };
    let remove = |name: &str| {
        reg.remove(&udm_core::DevSel::Name(name.into()), false)
            .map_err(|e| SetupError::Table(e.to_string()))
    };
    // With a data device, `path` holds the metadata and the table names both.
    let (esc, meta) = match &o.data_device {
        Some(d) => (udm_core::Escaped(d).to_string(), Some(p.as_str())),
        None => (udm_core::Escaped(&p).to_string(), None),
    };
    run(
        "fmt",
        format!(
            "0 8 integrity {esc} {offset} {}",
            table_rest_meta(o, None, true, meta)
        ),
    )?;
    remove("fmt")?;
    let sb = read_sb()?;
    formatted(&sb);
    if matches!(wipe, Wipe::None) {
        return Ok(sb);
    }
    let direct = SetupOpts {
        mode: Some(Mode::Direct),
        ..o.clone()
    };
    let rest = table_rest_meta(&direct, Some(&sb), false, meta);
    let n = sb.provided_data_sectors;
    run("wipe", format!("0 {n} integrity {esc} {offset} {rest}"))?;
    let top = match wipe {
        Wipe::Crypt { params } => {
            if let Err(e) = run(
                "wipe-crypt",
                format!("0 {n} crypt {}", params("/dev/mapper/wipe")),
            ) {
                let _ = remove("wipe");
                return Err(e);
            }
            "wipe-crypt"
        }
        _ => "wipe",
    };
    let mut zeros_through = || -> Result<(), SetupError> {
        let sel = udm_core::DevSel::Name(top.into());
        let (d, _g) = reg
            .open(&sel)
            .map_err(|e| SetupError::Table(e.to_string()))?;
        let chunk = 1u64 << 11;
        let zeros = vec![0u8; (chunk * 512) as usize];
        let mut s = 0;
        while s < n {
            let k = chunk.min(n - s);
            udm_io::sync::write_at(d.as_ref(), Sectors(s), &zeros[..(k * 512) as usize])?;
            s += k;
            progress(n * 512, s * 512);
        }
        udm_io::sync::flush(d.as_ref())?;
        Ok(())
    };
    let r = zeros_through();
    if top != "wipe" {
        remove(top)?;
    }
    remove("wipe")?;
    r?;
    read_sb()
}

/// `integritysetup dump` text (2.6).
pub fn dump_text(shown: &str, sb: &Superblock) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Info for integrity device {shown}.");
    let _ = writeln!(s, "superblock_version {}", sb.version);
    let _ = writeln!(s, "log2_interleave_sectors {}", sb.log2_interleave_sectors);
    let _ = writeln!(s, "integrity_tag_size {}", sb.integrity_tag_size);
    let _ = writeln!(s, "journal_sections {}", sb.journal_sections);
    let _ = writeln!(s, "provided_data_sectors {}", sb.provided_data_sectors);
    let _ = writeln!(s, "sector_size {}", 512u32 << sb.log2_sectors_per_block);
    if sb.version >= 2 && sb.has(FLAG_RECALCULATING) {
        let _ = writeln!(s, "recalc_sector {}", sb.recalc_sector);
    }
    let _ = writeln!(
        s,
        "log2_blocks_per_bitmap {}",
        sb.log2_blocks_per_bitmap_bit
    );
    let flags: String = sb.flag_names().iter().map(|f| format!("{f} ")).collect();
    let _ = writeln!(s, "flags {flags}");
    s
}

/// What `integritysetup status` shows of a live `integrity` table line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStatus {
    pub params: IntegrityParams,
    pub tag_size: u32,
    pub interleave_sectors: u32,
    pub journal_sectors: u32,
    pub sectors_per_bit: Option<u64>,
    pub bitmap_flush_interval: Option<u32>,
}

/// Parse the table params of a live integrity device (the kernel's normalized line).
pub fn parse_live(params: &str) -> Option<LiveStatus> {
    let words = udm_core::split_args(params);
    let p = IntegrityParams::from_args(&words).ok()?;
    let num = |k: &str| {
        words
            .iter()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.parse::<u64>().ok()))
    };
    Some(LiveStatus {
        tag_size: p.tag_size.unwrap_or(0),
        interleave_sectors: num("interleave_sectors:").unwrap_or(0) as u32,
        journal_sectors: num("journal_sectors:").unwrap_or(0) as u32,
        sectors_per_bit: num("sectors_per_bit:"),
        bitmap_flush_interval: num("bitmap_flush_interval:").map(|v| v as u32),
        params: p,
    })
}

/// The lines of `integritysetup status` after "… is active." (2.6 layout); `device` is the
/// data device as shown, `failures` the status line's mismatch count, `size` the sectors.
pub fn status_text(
    l: &LiveStatus,
    device: &str,
    size: u64,
    read_only: bool,
    failures: &str,
) -> String {
    let p = &l.params;
    let mut s = String::new();
    let _ = writeln!(s, "  type:    INTEGRITY");
    let _ = writeln!(s, "  tag size: {}", l.tag_size);
    let alg = p
        .internal_hash
        .as_ref()
        .map_or("(none)", |a| a.alg.as_str());
    let _ = writeln!(s, "  integrity: {alg}");
    let _ = writeln!(s, "  device:  {device}");
    let _ = writeln!(s, "  sector size:  {} bytes", p.sectors_per_block * 512);
    let _ = writeln!(s, "  interleave sectors: {}", l.interleave_sectors);
    let _ = writeln!(s, "  size:    {size} sectors");
    let _ = writeln!(
        s,
        "  mode:    {}",
        if read_only { "readonly" } else { "read/write" }
    );
    let _ = writeln!(s, "  failures: {failures}");
    match p.mode {
        Mode::Journal => {
            let _ = writeln!(
                s,
                "  journal size: {} bytes",
                l.journal_sectors as u64 * 512
            );
            let _ = writeln!(s, "  journal watermark: {}%", p.journal_watermark);
            let _ = writeln!(s, "  journal commit time: {} ms", p.commit_time);
            if let Some(m) = &p.journal_mac {
                let _ = writeln!(s, "  journal integrity MAC: {}", m.alg);
            }
            if let Some(c) = &p.journal_crypt {
                let _ = writeln!(s, "  journal encryption: {}", c.alg);
            }
        }
        Mode::Bitmap => {
            let _ = writeln!(
                s,
                "  bitmap 512-byte sectors per bit: {}",
                l.sectors_per_bit.unwrap_or(0)
            );
            let _ = writeln!(
                s,
                "  bitmap flush interval: {} ms",
                l.bitmap_flush_interval.unwrap_or(0)
            );
            let _ = writeln!(s, "  journal: not active");
        }
        _ => {
            let _ = writeln!(s, "  journal: not active");
        }
    }
    if p.allow_discards {
        let _ = writeln!(s, "  flags: discards ");
    }
    s
}
