//! The offline veritysetup actions — `format`, `verify`, `dump` — and the parameter loading
//! they share with `open` (superblock or command line, read by
//! `udm_formats::verity::device`), with veritysetup's messages.

use super::progress::Progress;
use super::{Failed, Io, Opts};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use udm_formats::verity::build::{self, FecInputs};
use udm_formats::verity::device::{Header, HeaderParams};
use udm_formats::verity::superblock::{Superblock, SB_SIZE};
use udm_formats::verity::{Digest, FecLayout, Geometry, VerityError};

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
) -> Result<Header, Failed> {
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
    Header::from_superblock(&sb, o.hash_offset).map_err(|_| invalid(io))
}

/// Parameters from the command line (format, or `--no-superblock`), checked in
/// veritysetup's order. `data` gives the default data size.
pub fn hdr_from_opts(
    io: &mut Io<'_>,
    o: &Opts,
    hash_path: &str,
    data: Option<&File>,
) -> Result<Header, Failed> {
    let p = HeaderParams {
        salt: o.salt.as_deref(),
        format: o.format,
        data_block_size: o.data_block_size,
        hash_block_size: o.hash_block_size,
        hash_offset: o.hash_offset,
        fec_offset: o.fec_offset,
        data_blocks: o.data_blocks,
        data_size: data.map(dev_size),
        hash: o.hash.as_deref(),
        uuid: o.uuid.as_deref(),
        no_superblock: o.no_superblock,
    };
    Header::from_params(&p).map_err(|e| match e {
        VerityError::BadUuid => fail(
            io,
            libc::EINVAL,
            format!("Wrong VERITY UUID format provided on device {hash_path}."),
        ),
        VerityError::Random(_) => fail(io, libc::EIO, e),
        e => fail(io, libc::EINVAL, e),
    })
}

/// FEC parameters of a format/dump: the layout, with veritysetup's checks.
pub fn fec_layout(
    io: &mut Io<'_>,
    o: &Opts,
    h: &Header,
    hash_path: &str,
    hash_size: u64,
) -> Result<Option<FecLayout>, Failed> {
    let Some(fec_path) = o.fec_device.as_deref() else {
        return Ok(None);
    };
    let end = if same_file(hash_path, fec_path) {
        o.fec_offset
    } else {
        hash_size
    };
    match h.fec_layout(o.fec_roots, o.fec_offset, end) {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            if e == VerityError::BadRoots {
                let _ = writeln!(io.err, "{e}");
            }
            Err(fail(io, libc::EINVAL, e))
        }
    }
}

/// veritysetup's "Device offset overflow." check: the data area and the tree must have byte
/// sizes that fit in 64 bits.
pub fn check_offsets(io: &mut Io<'_>, h: &Header, geo: &Geometry) -> Result<(), Failed> {
    if h.offsets_fit(geo) {
        Ok(())
    } else {
        Err(fail(io, libc::EINVAL, "Device offset overflow."))
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
    if h.data_blocks == 0 || dev_size(&data) < h.data_bytes() {
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
        let b = h
            .to_superblock()
            .to_bytes()
            .map_err(|e| fail(io, libc::EINVAL, e))?;
        hash.write_all_at(&b, h.hash_offset).map_err(|_| {
            fail(
                io,
                libc::EIO,
                format!("Error during update of verity header on device {hash_path}."),
            )
        })?;
    }
    let hash_size = dev_size(&hash);
    let fec = fec_layout(io, o, &h, hash_path, hash_size)?;
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
    let text = h.describe(
        hash_path,
        &geo,
        fec.as_ref().map(|f| (f, o.fec_offset)),
        Some(&root),
    );
    let _ = io.out.write_all(text.as_bytes());
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
    h: &Header,
) -> Result<Digest, Failed> {
    let root = match (arg, &o.root_hash_file) {
        (_, Some(f)) => {
            let s = std::fs::read_to_string(f)
                .map_err(|_| fail(io, libc::EINVAL, format!("Cannot read root hash file {f}.")))?;
            h.root_hash_file(&s)
        }
        (Some(a), None) => h.root_hash(a),
        (None, None) => {
            return Err(fail(
                io,
                libc::EINVAL,
                "Command requires <root_hash> or --root-hash-file option as argument.",
            ))
        }
    };
    root.map_err(|e| fail(io, libc::EINVAL, e))
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
    let fec = fec_layout(io, o, &h, &pos[0], dev_size(&hash))?;
    let text = h.describe(&pos[0], &geo, fec.as_ref().map(|f| (f, o.fec_offset)), None);
    let _ = io.out.write_all(text.as_bytes());
    Ok(())
}
