//! The offline veritysetup actions — `format`, `verify`, `dump` — and the parameter loading
//! they share with `open` (superblock or command line), with veritysetup's messages.

use super::progress::Progress;
use super::{Failed, Io, Opts};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use udm_formats::verity::build::{self, FecInputs};
use udm_formats::verity::superblock::{self, block_size_ok, Superblock, SB_SIZE};
use udm_formats::verity::{
    from_hex, to_hex, BlockHasher, Digest, FecLayout, Geometry, HashAlg, HashType, VerityError,
};

/// Everything veritysetup knows about a verity device (its `crypt_params_verity`).
#[derive(Debug, Clone)]
pub struct Hdr {
    pub hash_type: HashType,
    pub alg: HashAlg,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
    /// UUID from the superblock (none with `--no-superblock`).
    pub uuid: Option<[u8; 16]>,
    pub hash_offset: u64,
    pub superblock: bool,
}

impl Hdr {
    pub fn hash_start(&self) -> u64 {
        superblock::hash_start_block(self.hash_offset, self.hash_block_size, self.superblock)
    }
    pub fn geometry(&self) -> Result<Geometry, VerityError> {
        Geometry::new(
            self.hash_type,
            self.alg,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start(),
        )
    }
    pub fn hasher(&self) -> BlockHasher {
        BlockHasher::new(self.alg, self.hash_type, &self.salt)
    }
}

pub fn fail(io: &mut Io<'_>, errno: i32, msg: impl std::fmt::Display) -> Failed {
    let _ = writeln!(io.err, "{msg}");
    Failed(errno)
}

/// Open an existing device or file read-only ("does not exist or access denied" otherwise).
pub fn open_ro(io: &mut Io<'_>, path: &str) -> Result<File, Failed> {
    File::open(path).map_err(|_| {
        fail(
            io,
            libc::ENODEV,
            format!("Device {path} does not exist or access denied."),
        )
    })
}

/// Size of a file or block device in bytes.
pub fn dev_size(f: &File) -> u64 {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::End(0)).unwrap_or(0)
}

/// Same underlying file (device + inode)?
pub fn same_file(a: &str, b: &str) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Load the header: from the superblock at `--hash-offset`, or from the options with
/// `--no-superblock` (then without `--data-blocks` the data device, when given, is
/// covered whole, as veritysetup does).
pub fn load_hdr(
    io: &mut Io<'_>,
    o: &Opts,
    hash_path: &str,
    hash: &File,
    data: Option<&File>,
) -> Result<Hdr, Failed> {
    if o.no_superblock {
        return hdr_from_opts(io, o, hash_path, data);
    }
    if !o.hash_offset.is_multiple_of(512) {
        return Err(fail(io, libc::EINVAL, "Unsupported VERITY hash offset."));
    }
    let mut b = vec![0u8; SB_SIZE];
    let invalid = |io: &mut Io<'_>| {
        fail(
            io,
            libc::EINVAL,
            format!("Device {hash_path} is not a valid VERITY device."),
        )
    };
    if hash.read_exact_at(&mut b, o.hash_offset).is_err() {
        return Err(invalid(io));
    }
    let sb = match Superblock::parse(&b) {
        Ok(sb) => sb,
        Err(VerityError::BadSignature) => return Err(invalid(io)),
        Err(e) => {
            let _ = writeln!(io.err, "{e}");
            return Err(invalid(io));
        }
    };
    let alg = HashAlg::from_name(&sb.algorithm).map_err(|_| invalid(io))?;
    Ok(Hdr {
        hash_type: HashType::from_u32(sb.hash_type).unwrap_or(HashType::Normal),
        alg,
        data_block_size: sb.data_block_size,
        hash_block_size: sb.hash_block_size,
        data_blocks: sb.data_blocks,
        salt: sb.salt.clone(),
        uuid: Some(sb.uuid),
        hash_offset: o.hash_offset,
        superblock: true,
    })
}

/// Parameters from the command line (format, or `--no-superblock`), checked in
/// veritysetup's order. `data` gives the default data size.
pub fn hdr_from_opts(
    io: &mut Io<'_>,
    o: &Opts,
    hash_path: &str,
    data: Option<&File>,
) -> Result<Hdr, Failed> {
    let salt = match o.salt.as_deref() {
        Some("-") => Vec::new(),
        Some(s) => match from_hex(s).filter(|v| v.len() <= superblock::MAX_SALT) {
            Some(v) => v,
            None => return Err(fail(io, libc::EINVAL, "Invalid salt string specified.")),
        },
        None => {
            let mut v = vec![0u8; 32];
            File::open("/dev/urandom")
                .and_then(|f| f.read_exact_at(&mut v, 0))
                .map_err(|e| fail(io, libc::EIO, format!("Cannot read random bytes: {e}")))?;
            v
        }
    };
    let ty = o.format.unwrap_or(1);
    let Some(hash_type) = HashType::from_u32(ty) else {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Unsupported VERITY hash type {}.", ty as i32),
        ));
    };
    let dbs = o.data_block_size.unwrap_or(4096);
    let hbs = o.hash_block_size.unwrap_or(4096);
    if !block_size_ok(dbs) || !block_size_ok(hbs) {
        return Err(fail(io, libc::EINVAL, "Unsupported VERITY block size."));
    }
    if !o.hash_offset.is_multiple_of(512) {
        return Err(fail(io, libc::EINVAL, "Unsupported VERITY hash offset."));
    }
    if !o.fec_offset.is_multiple_of(512) {
        return Err(fail(io, libc::EINVAL, "Unsupported VERITY FEC offset."));
    }
    let data_blocks = match (o.data_blocks, data) {
        (Some(n), _) if n > 0 => n,
        (_, Some(f)) => dev_size(f) / dbs as u64,
        (_, None) => 0,
    };
    let name = o.hash.as_deref().unwrap_or("sha256");
    let alg = HashAlg::from_name(name).map_err(|e| fail(io, libc::EINVAL, e))?;
    let uuid = match (&o.uuid, o.no_superblock) {
        (_, true) => None,
        (Some(u), false) => Some(superblock::parse_uuid(u).map_err(|_| {
            fail(
                io,
                libc::EINVAL,
                format!("Wrong VERITY UUID format provided on device {hash_path}."),
            )
        })?),
        (None, false) => {
            let mut u = [0u8; 16];
            File::open("/dev/urandom")
                .and_then(|f| f.read_exact_at(&mut u, 0))
                .map_err(|e| fail(io, libc::EIO, format!("Cannot read random bytes: {e}")))?;
            u[6] = (u[6] & 0x0f) | 0x40;
            u[8] = (u[8] & 0x3f) | 0x80;
            Some(u)
        }
    };
    Ok(Hdr {
        hash_type,
        alg,
        data_block_size: dbs,
        hash_block_size: hbs,
        data_blocks,
        salt,
        uuid,
        hash_offset: o.hash_offset,
        superblock: !o.no_superblock,
    })
}

/// FEC parameters of a format/open: (layout, roots) with veritysetup's checks.
pub fn fec_layout(
    io: &mut Io<'_>,
    o: &Opts,
    h: &Hdr,
    geo: &Geometry,
    hash_path: &str,
    hash_size: u64,
) -> Result<Option<FecLayout>, Failed> {
    let Some(fec_path) = o.fec_device.as_deref() else {
        return Ok(None);
    };
    if h.data_block_size != h.hash_block_size {
        return Err(fail(io, libc::EINVAL, "Block sizes must match for FEC."));
    }
    let roots = o
        .fec_roots
        .unwrap_or(udm_formats::verity::fec::DEFAULT_ROOTS);
    if !(2..=24).contains(&roots) {
        let _ = writeln!(io.err, "Invalid number of parity bytes.");
        return Err(fail(io, libc::EINVAL, "Invalid number of parity bytes."));
    }
    if !o.fec_offset.is_multiple_of(512) {
        return Err(fail(io, libc::EINVAL, "Unsupported VERITY FEC offset."));
    }
    // veritysetup's VERITY_FEC_blocks: the hash device from the tree on, up to the FEC area
    // when FEC shares the hash device, else to its end.
    let bs = h.data_block_size as u64;
    let end = if same_file(hash_path, fec_path) {
        o.fec_offset
    } else {
        hash_size
    };
    let hash_part = (end / bs).saturating_sub(geo.hash_start);
    let blocks = h.data_blocks + hash_part;
    FecLayout::new(
        roots,
        h.data_block_size,
        blocks,
        h.data_blocks,
        geo.hash_start,
    )
    .map(Some)
    .map_err(|e| fail(io, libc::EINVAL, e))
}

/// veritysetup's "Device offset overflow." check: the data area and the tree must have byte
/// sizes that fit in 64 bits.
pub fn check_offsets(io: &mut Io<'_>, h: &Hdr, geo: &Geometry) -> Result<(), Failed> {
    let ok = h
        .data_blocks
        .checked_mul(h.data_block_size as u64)
        .is_some()
        && geo
            .hash_end()
            .checked_mul(h.hash_block_size as u64)
            .is_some();
    if ok {
        Ok(())
    } else {
        Err(fail(io, libc::EINVAL, "Device offset overflow."))
    }
}

/// The header lines veritysetup prints for `format` and `dump`.
#[allow(clippy::too_many_arguments)]
fn print_hdr(
    io: &mut Io<'_>,
    hash_path: &str,
    h: &Hdr,
    geo: &Geometry,
    fec: Option<&FecLayout>,
    fec_offset: u64,
    root: Option<&Digest>,
) {
    let o = &mut io.out;
    let uuid = h
        .uuid
        .map(|u| superblock::format_uuid(&u))
        .unwrap_or_default();
    let _ = writeln!(o, "VERITY header information for {hash_path}");
    let _ = writeln!(o, "UUID:            \t{uuid}");
    let _ = writeln!(o, "Hash type:       \t{}", h.hash_type.as_u32());
    let _ = writeln!(o, "Data blocks:     \t{}", h.data_blocks);
    let _ = writeln!(o, "Data block size: \t{}", h.data_block_size);
    let _ = writeln!(o, "Hash blocks:     \t{}", geo.tree_blocks());
    let _ = writeln!(o, "Hash block size: \t{}", h.hash_block_size);
    let _ = writeln!(o, "Hash algorithm:  \t{}", h.alg.name());
    if let Some(f) = fec {
        let _ = writeln!(o, "FEC RS roots:   \t{}", f.roots);
        let _ = writeln!(o, "FEC blocks:     \t{}", f.parity_blocks());
    }
    let salt = if h.salt.is_empty() {
        "-".to_string()
    } else {
        to_hex(&h.salt)
    };
    let _ = writeln!(o, "Salt:            \t{salt}");
    if let Some(r) = root {
        let _ = writeln!(o, "Root hash:      \t{}", r.hex());
    }
    if h.hash_offset == 0 {
        let size = geo.hash_end().wrapping_mul(h.hash_block_size as u64); // as C computes it
        let _ = writeln!(o, "Hash device size: \t{size} [bytes]");
    }
    if let (Some(f), 0) = (fec, fec_offset) {
        let _ = writeln!(o, "FEC device size: \t{} [bytes]", f.parity_bytes());
    }
}

fn create_if_missing(io: &mut Io<'_>, path: &str, what: &str) -> Result<(), Failed> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => Err(fail(
            io,
            libc::EINVAL,
            format!("Cannot create {what} image {path} for writing."),
        )),
    }
}

fn io_err(io: &mut Io<'_>, what: &str) -> Failed {
    fail(io, libc::EIO, format!("Input/output error while {what}."))
}

/// `format <data_device> <hash_device>`.
pub fn format(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let (data_path, hash_path) = (pos[0].as_str(), pos[1].as_str());
    create_if_missing(io, hash_path, "hash")?;
    if let Some(f) = &o.fec_device {
        create_if_missing(io, f, "FEC")?;
    }
    let data = open_ro(io, data_path)?;
    let h = hdr_from_opts(io, o, hash_path, Some(&data))?;
    let geo = h
        .geometry()
        .map_err(|_| fail(io, libc::EINVAL, "Unsupported VERITY block size."))?;
    check_offsets(io, &h, &geo)?;
    if h.data_blocks == 0 || dev_size(&data) < h.data_blocks * h.data_block_size as u64 {
        return Err(fail(
            io,
            libc::EIO,
            "Input/output error while creating hash area.",
        ));
    }
    let hash = OpenOptions::new()
        .read(true)
        .write(true)
        .open(hash_path)
        .map_err(|_| fail(io, libc::EINVAL, format!("Cannot open device {hash_path}.")))?;
    let hasher = h.hasher();
    let (tree, root) = Progress::new(geo.data_blocks)
        .run("Hashing", |p| build::build_tree(&data, &geo, &hasher, p))
        .map_err(|_| io_err(io, "creating hash area"))?;
    hash.write_all_at(&tree, geo.hash_start * h.hash_block_size as u64)
        .map_err(|_| io_err(io, "creating hash area"))?;
    if h.superblock {
        let sb = Superblock {
            hash_type: h.hash_type.as_u32(),
            uuid: h.uuid.unwrap_or_default(),
            algorithm: h.alg.name().to_string(),
            data_block_size: h.data_block_size,
            hash_block_size: h.hash_block_size,
            data_blocks: h.data_blocks,
            salt: h.salt.clone(),
        };
        let b = sb.to_bytes().map_err(|e| fail(io, libc::EINVAL, e))?;
        hash.write_all_at(&b, h.hash_offset).map_err(|_| {
            fail(
                io,
                libc::EIO,
                format!("Error during update of verity header on device {hash_path}."),
            )
        })?;
    }
    let hash_size = dev_size(&hash);
    let fec = fec_layout(io, o, &h, &geo, hash_path, hash_size)?;
    if let (Some(l), Some(fp)) = (&fec, &o.fec_device) {
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .open(fp)
            .map_err(|_| fail(io, libc::EINVAL, format!("Cannot open device {fp}.")))?;
        let inputs = FecInputs {
            data: &data,
            hash: &hash,
        };
        Progress::new(l.rounds)
            .run("Encoding", |p| {
                build::write_fec(l, &inputs, &out, o.fec_offset, p)
            })
            .map_err(|_| io_err(io, "creating FEC area"))?;
    }
    print_hdr(
        io,
        hash_path,
        &h,
        &geo,
        fec.as_ref(),
        o.fec_offset,
        Some(&root),
    );
    if let Some(p) = &o.root_hash_file {
        std::fs::write(p, root.hex()).map_err(|_| {
            fail(
                io,
                libc::EINVAL,
                format!("Cannot create root hash file {p} for writing."),
            )
        })?;
    }
    Ok(())
}

/// The root hash from the command line or `--root-hash-file`.
pub fn root_arg(
    io: &mut Io<'_>,
    o: &Opts,
    arg: Option<&String>,
    h: &Hdr,
) -> Result<Digest, Failed> {
    let hex = match (arg, &o.root_hash_file) {
        (_, Some(f)) => {
            let s = std::fs::read_to_string(f)
                .map_err(|_| fail(io, libc::EINVAL, format!("Cannot read root hash file {f}.")))?;
            s.trim().chars().take(h.alg.digest_size() * 2).collect()
        }
        (Some(a), None) => a.clone(),
        (None, None) => {
            return Err(fail(
                io,
                libc::EINVAL,
                "Command requires <root_hash> or --root-hash-file option as argument.",
            ))
        }
    };
    match from_hex(&hex) {
        Some(v) if v.len() == h.alg.digest_size() => Ok(Digest::from_slice(&v)),
        _ => Err(fail(
            io,
            libc::EINVAL,
            "Invalid root hash string specified.",
        )),
    }
}

/// `verify <data_device> <hash_device> [<root_hash>]`.
pub fn verify(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    if pos.len() < 3 && o.root_hash_file.is_none() {
        return Err(fail(
            io,
            libc::EINVAL,
            "Command requires <root_hash> or --root-hash-file option as argument.",
        ));
    }
    let data = open_ro(io, &pos[0])?;
    let hash = open_ro(io, &pos[1])?;
    let h = load_hdr(io, o, &pos[1], &hash, Some(&data))?;
    let root = root_arg(io, o, pos.get(2), &h)?;
    let geo = h
        .geometry()
        .map_err(|_| fail(io, libc::EINVAL, "Unsupported VERITY block size."))?;
    check_offsets(io, &h, &geo)?;
    if h.data_blocks == 0 {
        return Ok(());
    }
    let short = dev_size(&data) < h.data_blocks * h.data_block_size as u64
        || dev_size(&hash) < geo.hash_end() * h.hash_block_size as u64;
    if short {
        return Err(fail(io, libc::EIO, "Verification of data area failed."));
    }
    let hasher = h.hasher();
    let (tree, computed_root) = Progress::new(geo.data_blocks)
        .run("Hashing", |p| build::build_tree(&data, &geo, &hasher, p))
        .map_err(|_| io_err(io, "verifying hash area"))?;
    let mut disk = vec![0u8; tree.len()];
    hash.read_exact_at(&mut disk, geo.hash_start * h.hash_block_size as u64)
        .map_err(|_| io_err(io, "verifying hash area"))?;
    if let Err(m) = build::compare_tree(&geo, &tree, &disk) {
        let _ = writeln!(io.err, "{m}");
        return Err(fail(io, libc::EPERM, "Verification of data area failed."));
    }
    if computed_root != root {
        return Err(fail(io, libc::EPERM, "Verification of root hash failed."));
    }
    Ok(())
}

/// `dump <hash_device>`.
pub fn dump(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let hash = open_ro(io, &pos[0])?;
    if o.no_superblock {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Device {} is not a valid VERITY device.", pos[0]),
        ));
    }
    let h = load_hdr(io, o, &pos[0], &hash, None)?;
    let geo = h.geometry().map_err(|_| {
        fail(
            io,
            libc::EINVAL,
            format!("Device {} is not a valid VERITY device.", pos[0]),
        )
    })?;
    let fec = fec_layout(io, o, &h, &geo, &pos[0], dev_size(&hash))?;
    print_hdr(io, &pos[0], &h, &geo, fec.as_ref(), o.fec_offset, None);
    Ok(())
}
