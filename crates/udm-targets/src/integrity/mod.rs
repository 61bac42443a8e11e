//! `integrity`: a tag (checksum or MAC) per block kept beside the data, so silent corruption
//! reads as an error (EILSEQ) instead of wrong data — dm-integrity, target version 1.10.0 as
//! in kernel 6.1, with its on-disk format (`udm_formats::integrity`): journal (J), bitmap (B),
//! direct (D) and recovery (R) modes, a metadata device, block sizes up to 4 KiB, internal
//! hashes crc32c/sha1/sha256/sha512 and their HMACs, journal MACs, journal encryption
//! (`jcrypt`), recalculation and discards.

mod bitmap;
mod core;
mod jcrypt;
mod jmode;
pub mod params;
mod ranges;
pub mod setup;
mod tagcache;
pub mod tags;
mod target;

pub use params::{AlgSpec, IntegrityParams, Mode};
pub use target::Integrity;

use self::core::{Inner, State};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64};
use std::sync::Arc;
use udm_core::{Target, TargetCtx, TargetError, TargetFeatures, TargetType};
use udm_formats::integrity::{
    bitmap_blocks, journal::JOURNAL_SECTOR_DATA, Geometry, IntegrityFormatError, Superblock,
    TagHash, DEFAULT_MAX_JOURNAL_SECTORS, DEFAULT_SECTORS_PER_BITMAP_BIT, FLAG_FIXED_HMAC,
    FLAG_FIXED_PADDING, FLAG_HAVE_JOURNAL_MAC, FLAG_RECALCULATING, MAX_LOG2_INTERLEAVE_SECTORS,
    MAX_VERSION, MIN_LOG2_INTERLEAVE_SECTORS,
};

pub struct IntegrityType;

/// The largest tag: what fits in a journal entry of a 4 KiB block.
const MAX_TAG_SIZE: u32 = (JOURNAL_SECTOR_DATA - 8 - (8 + 8 * 8)) as u32;

fn inval(m: &str) -> TargetError {
    TargetError::invalid(m)
}

fn get_hash(
    a: &Option<AlgSpec>,
    err_alg: &str,
    err_key: &str,
) -> Result<Option<TagHash>, TargetError> {
    let Some(a) = a else { return Ok(None) };
    let key = a.key();
    TagHash::new(&a.alg, key.as_deref())
        .map(Some)
        .map_err(|e| match e {
            IntegrityFormatError::NeedKey => TargetError::with_errno(libc::ENOKEY, err_key),
            e => TargetError::with_errno(e.errno(), err_alg).with_detail(e.to_string()),
        })
}

/// What the kernel's `initialize_superblock` decides for an empty device.
fn initialize_superblock(
    p: &IntegrityParams,
    tag_size: u32,
    jmac: bool,
    journal_sectors: u32,
    data_sectors: u64,
    meta_sectors: u64,
    log2_buffer: &mut u8,
) -> Result<(Superblock, Geometry), TargetError> {
    let too_small = || inval("Could not initialize superblock");
    let mut sb = Superblock {
        integrity_tag_size: tag_size as u16,
        log2_sectors_per_block: p.sectors_per_block.trailing_zeros() as u8,
        ..Superblock::default()
    };
    if jmac {
        sb.flags |= FLAG_HAVE_JOURNAL_MAC;
    }
    let jg =
        udm_formats::integrity::JournalGeometry::new(tag_size, sb.log2_sectors_per_block, jmac, 1);
    let journal_sections = (journal_sectors / jg.section_sectors).max(1);
    if p.fix_hmac && (p.internal_hash.is_some() || p.journal_mac.is_some()) {
        sb.flags |= FLAG_FIXED_HMAC;
        getrandom::getrandom(&mut sb.salt).map_err(|_| too_small())?;
    }
    let meta = p.meta_device.is_some();
    let mut geo;
    if !meta {
        if p.fix_padding {
            sb.flags |= FLAG_FIXED_PADDING;
        }
        sb.journal_sections = journal_sections;
        let il = if p.interleave_sectors == 0 {
            udm_formats::integrity::DEFAULT_INTERLEAVE_SECTORS
        } else {
            p.interleave_sectors
        };
        sb.log2_interleave_sectors = (31 - il.leading_zeros()) as u8;
        sb.log2_interleave_sectors = sb
            .log2_interleave_sectors
            .clamp(MIN_LOG2_INTERLEAVE_SECTORS, MAX_LOG2_INTERLEAVE_SECTORS);
        geo = geometry(p, &sb, *log2_buffer);
        if geo.compute_provided(data_sectors, meta_sectors) == 0 {
            return Err(too_small());
        }
    } else {
        sb.log2_interleave_sectors = 0;
        geo = geometry(p, &sb, *log2_buffer);
        if geo.compute_provided(data_sectors, meta_sectors) == 0 {
            return Err(too_small());
        }
        loop {
            sb.journal_sections = 0;
            let top = 31 - journal_sections.leading_zeros();
            for bit in (0..=top).rev() {
                let prev = sb.journal_sections;
                let t = prev | (1 << bit);
                if t > journal_sections {
                    continue;
                }
                sb.journal_sections = t;
                geo = geometry(p, &sb, *log2_buffer);
                if !geo.fits(geo_provided(data_sectors, &sb), meta_sectors) {
                    sb.journal_sections = prev;
                }
            }
            if sb.journal_sections != 0 {
                break;
            }
            if *log2_buffer > 3 {
                *log2_buffer -= 1;
                continue;
            }
            return Err(too_small());
        }
        geo = geometry(p, &sb, *log2_buffer);
        geo.compute_provided(data_sectors, meta_sectors);
    }
    sb.provided_data_sectors = geo.provided_data_sectors;
    sb.version = sb.version_for(p.mode == Mode::Bitmap, meta);
    Ok((sb, geo))
}

fn geo_provided(data_sectors: u64, sb: &Superblock) -> u64 {
    data_sectors & !((1u64 << sb.log2_sectors_per_block) - 1)
}

fn geometry(p: &IntegrityParams, sb: &Superblock, log2_buffer: u8) -> Geometry {
    Geometry::new(
        p.start,
        sb.integrity_tag_size as u32,
        sb.log2_interleave_sectors,
        sb.log2_sectors_per_block,
        sb.flags,
        sb.journal_sections,
        p.meta_device.is_some(),
        log2_buffer,
    )
}

impl TargetType for IntegrityType {
    fn name(&self) -> &'static str {
        "integrity"
    }
    fn version(&self) -> [u32; 3] {
        [1, 10, 0]
    }
    fn features(&self) -> TargetFeatures {
        TargetFeatures {
            singleton: true,
            ..TargetFeatures::default()
        }
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = IntegrityParams::from_args(args)?;
        let lookup = |e: TargetError| {
            let d = e.to_string();
            TargetError::with_errno(e.errno, "Device lookup failed").with_detail(d)
        };
        let data = ctx.get_device(&p.dev).map_err(lookup)?;
        let meta = match &p.meta_device {
            Some(m) => Some(ctx.get_device(m).map_err(lookup)?),
            None => None,
        };
        let data_sectors = data.dev.size().0;
        let meta_sectors = meta.as_ref().map_or(data_sectors, |m| m.dev.size().0);
        let journal_sectors = if p.journal_sectors == 0 {
            DEFAULT_MAX_JOURNAL_SECTORS.min(data_sectors >> 7) as u32
        } else {
            p.journal_sectors
        };
        let buffer_sectors = p.buffer_sectors.max(1);
        let mut log2_buffer = ((31 - buffer_sectors.leading_zeros()) as u8).min(31 - 9);
        let hash = get_hash(
            &p.internal_hash,
            "Invalid internal hash",
            "Error setting internal hash key",
        )?;
        let jmac = get_hash(
            &p.journal_mac,
            "Invalid journal mac",
            "Error setting journal mac key",
        )?;
        let tag_size = match (p.tag_size, &hash) {
            (Some(t), _) => t,
            (None, Some(h)) => h.digest_size() as u32,
            (None, None) => return Err(inval("Unknown tag size")),
        };
        if tag_size > MAX_TAG_SIZE {
            return Err(inval("Too big tag size"));
        }
        if p.mode == Mode::Bitmap && hash.is_none() {
            return Err(inval("Bitmap mode can be only used with internal hash"));
        }
        if p.allow_discards && hash.is_none() {
            return Err(inval("Discard can be only used with internal hash"));
        }
        let meta_h = meta.as_ref().unwrap_or(&data);
        let raw = target::read_sb_area(meta_h.dev.as_ref(), p.start)
            .map_err(|e| TargetError::with_errno(e.errno(), "Error reading superblock"))?;
        let mut should_write = false;
        let (mut sb, raw) = if Superblock::has_magic(&raw) {
            let sb = Superblock::decode(&raw).map_err(|_| inval("Error reading superblock"))?;
            if let (Some(m), true) = (&jmac, sb.has(FLAG_FIXED_HMAC) && p.mode != Mode::Recovery) {
                let n = m.digest_size();
                if m.digest(&[&raw[..512 - n]]) != raw[512 - n..512] {
                    return Err(TargetError::with_errno(
                        libc::EILSEQ,
                        "Error reading superblock",
                    ));
                }
            }
            (sb, raw)
        } else {
            if p.mode != Mode::Recovery && raw.iter().any(|&b| b != 0) {
                return Err(inval("The device is not initialized"));
            }
            let (sb, _) = initialize_superblock(
                &p,
                tag_size,
                jmac.is_some(),
                journal_sectors,
                data_sectors,
                meta_sectors,
                &mut log2_buffer,
            )?;
            should_write = p.mode != Mode::Recovery;
            (sb, vec![0u8; raw.len()])
        };
        if sb.version == 0 || sb.version > MAX_VERSION {
            return Err(inval("Unknown version"));
        }
        if sb.integrity_tag_size as u32 != tag_size {
            return Err(inval(
                "Tag size doesn't match the information in superblock",
            ));
        }
        if sb.log2_sectors_per_block as u32 != p.sectors_per_block.trailing_zeros() {
            return Err(inval(
                "Block size doesn't match the information in superblock",
            ));
        }
        if sb.journal_sections == 0 {
            return Err(inval("Corrupted superblock, journal_sections is 0"));
        }
        let li = sb.log2_interleave_sectors;
        if (meta.is_none()
            && !(MIN_LOG2_INTERLEAVE_SECTORS..=MAX_LOG2_INTERLEAVE_SECTORS).contains(&li))
            || (meta.is_some() && li != 0)
        {
            return Err(inval("Invalid interleave_sectors in the superblock"));
        }
        if sb.has(udm_formats::integrity::FLAG_HAVE_JOURNAL_MAC) != jmac.is_some() {
            return Err(inval("Journal mac mismatch"));
        }
        let mut geo = geometry(&p, &sb, log2_buffer);
        let provided = geo.compute_provided(data_sectors, meta_sectors);
        if provided == 0 {
            return Err(inval("The device is too small"));
        }
        loop {
            geo = geometry(&p, &sb, log2_buffer);
            if geo.fits(provided, meta_sectors) {
                break;
            }
            if meta.is_some() && log2_buffer > 3 {
                log2_buffer -= 1;
                continue;
            }
            return Err(inval("The device is too small"));
        }
        let mut l2spbit = p
            .log2_sectors_per_bit
            .unwrap_or(DEFAULT_SECTORS_PER_BITMAP_BIT.ilog2() as u8)
            .max(sb.log2_sectors_per_block);
        let bits_in_journal = (geo.journal.sectors() << 12).min(u32::MAX as u64);
        if bits_in_journal > 0 {
            while bits_in_journal < (provided + (1u64 << l2spbit) - 1) >> l2spbit {
                l2spbit += 1;
            }
        }
        let l2bpb = l2spbit - sb.log2_sectors_per_block;
        if should_write {
            sb.log2_blocks_per_bitmap_bit = l2bpb;
        }
        let n_bitmap_blocks = bitmap_blocks(provided, sb.log2_sectors_per_block, l2bpb);
        if meta.is_none() {
            log2_buffer = log2_buffer.min(geo.metadata_run.trailing_zeros() as u8);
            geo.log2_buffer_sectors = log2_buffer;
        }
        if ctx.len.0 > provided {
            return Err(inval(
                "Not enough provided sectors for requested mapping size",
            ));
        }
        let entries = geo.journal.entries() as u64;
        let threshold = ((entries * (100 - p.journal_watermark as u64) + 50) / 100) as u32;
        if p.recalculate && !sb.has(FLAG_RECALCULATING) {
            sb.flags |= FLAG_RECALCULATING;
            sb.recalc_sector = 0;
        }
        if hash.is_none() && sb.has(FLAG_RECALCULATING) {
            return Err(inval(
                "Recalculate can only be specified with internal_hash",
            ));
        }
        let hkey = hash.as_ref().is_some_and(TagHash::is_keyed);
        let mkey = jmac.as_ref().is_some_and(TagHash::is_keyed);
        let disable = !p.legacy_recalculate
            && if !sb.has(FLAG_FIXED_HMAC) {
                hkey || mkey
            } else {
                hkey && !mkey
            };
        if sb.has(FLAG_RECALCULATING) && sb.recalc_sector < provided && disable {
            return Err(TargetError::with_errno(
                libc::EOPNOTSUPP,
                "Recalculating with HMAC is disabled for security reasons - if you really need it, use the argument \"legacy_recalculate\"",
            ));
        }
        let jbytes = if p.mode == Mode::Recovery {
            0
        } else {
            geo.journal.bytes()
        };
        if jbytes > (1usize << 30) {
            return Err(TargetError::with_errno(
                libc::ENOMEM,
                "Journal doesn't fit into memory",
            ));
        }
        let jcrypt = match &p.journal_crypt {
            Some(a) => Some(jcrypt::JournalCrypt::new(a, &geo.journal)?),
            None => None,
        };
        let bm = (n_bitmap_blocks * udm_formats::integrity::BITMAP_BLOCK_SIZE) as usize;
        let inner = Arc::new(Inner {
            p: p.clone(),
            geo,
            mode: p.mode,
            hash,
            jmac,
            jcrypt,
            data,
            meta,
            sb: Mutex::new((sb, raw)),
            tag_size: tag_size as usize,
            log2_blocks_per_bit: l2bpb,
            n_bitmap_blocks,
            threshold,
            bitmap_flush_ms: target::flush_interval_ms(p.bitmap_flush_interval),
            mismatches: AtomicU64::new(0),
            failed: AtomicI32::new(0),
            st: Mutex::new(State {
                journal: vec![0u8; jbytes],
                commit_seq: 0,
                committed_section: 0,
                n_committed: 0,
                uncommitted_section: 0,
                n_uncommitted: 0,
                free_section: 0,
                free_section_entry: 0,
                free_sectors: 0,
                latest: HashMap::default(),
                wrote_to_journal: false,
                journal_uptodate: false,
                just_formatted: false,
                recalc_bitmap: vec![0u8; if p.mode == Mode::Bitmap { bm } else { 0 }],
                may_write: vec![0u8; if p.mode == Mode::Bitmap { bm } else { 0 }],
                commit_deadline: None,
                bitmap_deadline: None,
                kick: false,
            }),
            io_lock: RwLock::new(()),
            wake: Condvar::new(),
            wb_wake: Condvar::new(),
            bufs: udm_io::BufPool::new(16),
            room: Condvar::new(),
            commit_lock: Mutex::new(()),
            ranges: Default::default(),
            tag_lock: Mutex::new(()),
            tag_cache: Default::default(),
            stop: AtomicBool::new(false),
            recalc_running: AtomicBool::new(false),
            resumed: AtomicBool::new(false),
        });
        if should_write {
            let mut st = inner.st.lock();
            let n = inner.geo.journal.sections;
            inner.init_journal(&mut st, 0, n, 0);
            if inner.failed().is_some() {
                return Err(inval("Error initializing journal"));
            }
            inner
                .write_sb()
                .map_err(|e| TargetError::with_errno(e.errno(), "Error initializing superblock"))?;
            st.just_formatted = true;
        }
        let threads = target::spawn_timer(&inner);
        // Without an internal hash the tags come from the layer above (crypt): publish the
        // tag interface under this device (not possible in a standalone table).
        let publication = if inner.hash.is_none() {
            let t = Arc::new(tags::TagDevice {
                inner: inner.clone(),
            });
            ctx.publish(&t).ok().map(|p| (t, p))
        } else {
            None
        };
        Ok(Box::new(Integrity {
            inner,
            pool: target::pool(),
            _publication: publication,
            threads,
        }))
    }
}
