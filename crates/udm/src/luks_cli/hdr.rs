//! Opening a LUKS device or image, reading its header and unlocking a keyslot with
//! cryptsetup's messages (the work is `udm_formats::luks`), and the header commands: isLuks,
//! luksUUID, luksHeaderBackup, luksHeaderRestore.

use super::{fail, progress, Failed, Io, Opts};
use std::fs::File;
use std::os::unix::fs::FileExt;
pub use udm_formats::luks::Header;
use udm_formats::luks::{self, KeyslotError, LuksError, ReadAt, Zeroizing};

/// An open device or image.
pub struct Dev {
    pub path: String,
    pub file: File,
    pub size: u64,
}

impl Dev {
    pub fn read_vec(&self, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.file.read_exact_at(&mut b, off)?;
        Ok(b)
    }
}

impl ReadAt for Dev {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, off)
    }
}

/// Open a device read-only or read-write; cryptsetup's message when it is missing.
pub fn open_dev(io: &mut Io<'_>, path: &str, write: bool) -> Result<Dev, Failed> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(udm_file(&io.socket, path));
    let Ok(file) = f else {
        return Err(fail(
            io,
            libc::ENODEV,
            format!("Device {path} does not exist or access denied."),
        ));
    };
    let size = block_size(&file);
    Ok(Dev {
        path: path.to_string(),
        file,
        size,
    })
}

/// A udm device (`/dev/mapper/NAME` not on the host) is read through the daemon's file
/// export; anything else is opened as given.
fn udm_file(socket: &std::path::Path, path: &str) -> std::path::PathBuf {
    let plain = std::path::PathBuf::from(path);
    let Some(name) = path.strip_prefix("/dev/mapper/") else {
        return plain;
    };
    if plain.exists() {
        return plain;
    }
    let Ok(mut c) = udm_proto::Client::connect(socket) else {
        return plain;
    };
    match c.call(udm_proto::Request::DaemonInfo) {
        Ok(udm_proto::Reply::Daemon {
            fuse_dir: Some(d), ..
        }) => std::path::Path::new(&d).join(name),
        _ => plain,
    }
}

/// Size of a file or block device in bytes.
pub fn block_size(f: &File) -> u64 {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::End(0)).unwrap_or(0)
}

/// The header with cryptsetup's messages; `want` restricts the version (`--type`).
pub fn load(io: &mut Io<'_>, dev: &Dev, want: Option<u32>) -> Result<Header, Failed> {
    match Header::load(dev) {
        Ok(h) if want.is_none_or(|w| w == h.version()) => Ok(h),
        Ok(_) | Err(LuksError::NotLuks) => Err(fail(
            io,
            libc::EINVAL,
            format!("Device {} is not a valid LUKS device.", dev.path),
        )),
        Err(e) => Err(fail(
            io,
            e.errno(),
            format!("Device {} is not a valid LUKS device ({e}).", dev.path),
        )),
    }
}

/// The version `--type` asks for (`luks` = any).
pub fn wanted(o: &Opts) -> Option<u32> {
    match o.ty.as_deref() {
        Some("luks1") => Some(1),
        Some("luks2") => Some(2),
        _ => None,
    }
}

/// Shows key-derivation progress on a terminal.
pub struct Progress;

impl luks::KdfWatch for Progress {
    fn begin(&self, kdf: &luks::kdf::Kdf) -> Box<dyn std::any::Any> {
        Box::new(progress::start(kdf))
    }
}

/// A keyslot error as cryptsetup prints it.
pub fn kerr(io: &mut Io<'_>, e: KeyslotError) -> Failed {
    fail(io, e.errno(), e)
}

/// Find the keyslot `pass` opens (only `slot` if given): (slot, volume key).
pub fn unlock(
    io: &mut Io<'_>,
    dev: &Dev,
    h: &Header,
    pass: &[u8],
    slot: Option<u32>,
) -> Result<(u32, Zeroizing<Vec<u8>>), Failed> {
    h.unlock(dev, pass, slot, &Progress).map_err(|e| {
        if let KeyslotError::WrongPassphrase { last: Some(l) } = &e {
            if !matches!(l, LuksError::Corrupt(_)) {
                let _ = writeln!(io.err, "Keyslot open failed: {l}");
            }
        }
        kerr(io, e)
    })
}

/// `isLuks <device>`: exit 0 for a LUKS header (of `--type`), 1 otherwise, silently.
pub fn is_luks(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let dev = open_dev(io, &pos[0], false)?;
    match Header::load(&dev) {
        Ok(h) if wanted(o).is_none_or(|w| w == h.version()) => Ok(()),
        _ => {
            if o.verbose {
                let _ = writeln!(io.err, "Device {} is not a valid LUKS device.", pos[0]);
            }
            Err(Failed(libc::EINVAL))
        }
    }
}

/// `luksUUID <device>` (`--uuid` sets it).
pub fn uuid(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let dev = open_dev(io, &pos[0], o.uuid.is_some())?;
    let h = load(io, &dev, None)?;
    let Some(new) = &o.uuid else {
        let _ = writeln!(io.out, "{}", h.uuid());
        return Ok(());
    };
    if !luks::valid_uuid(new) {
        return Err(fail(io, libc::EINVAL, "Wrong LUKS UUID format provided."));
    }
    match h {
        Header::L1(mut h) => {
            h.uuid = new.clone();
            let b = h.to_bytes().map_err(|e| fail(io, e.errno(), e))?;
            write_all(io, &dev, 0, &b)
        }
        Header::L2(mut m) => {
            m.bin.uuid = new.clone();
            let b = m.to_bytes().map_err(|e| fail(io, e.errno(), e))?;
            write_all(io, &dev, 0, &b)
        }
    }
}

/// Write bytes at an offset, with cryptsetup's message on failure.
pub fn write_all(io: &mut Io<'_>, dev: &Dev, off: u64, b: &[u8]) -> Result<(), Failed> {
    dev.file
        .write_all_at(b, off)
        .and_then(|_| dev.file.sync_data())
        .map_err(|e| {
            fail(
                io,
                libc::EIO,
                format!("Cannot write to device {}: {e}", dev.path),
            )
        })
}

/// `luksHeaderBackup <device> --header-backup-file <file>`.
pub fn backup(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let Some(file) = &o.header_backup_file else {
        return Err(fail(
            io,
            libc::EINVAL,
            "Option --header-backup-file is required.",
        ));
    };
    let dev = open_dev(io, &pos[0], false)?;
    let h = load(io, &dev, None)?;
    if std::path::Path::new(file).exists() {
        return Err(fail(
            io,
            libc::EEXIST,
            format!("Requested header backup file {file} already exists."),
        ));
    }
    let n = h.backup_size().min(dev.size);
    let b = dev.read_vec(0, n as usize).map_err(|e| {
        fail(
            io,
            libc::EIO,
            format!("Cannot read device {}: {e}", dev.path),
        )
    })?;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(file)
        .and_then(|mut f| f.write_all(&b))
        .map_err(|e| {
            fail(
                io,
                libc::EIO,
                format!("Cannot create header backup file {file}: {e}"),
            )
        })
}

/// `luksHeaderRestore <device> --header-backup-file <file>`.
pub fn restore(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let Some(file) = &o.header_backup_file else {
        return Err(fail(
            io,
            libc::EINVAL,
            "Option --header-backup-file is required.",
        ));
    };
    let Ok(img) = std::fs::read(file) else {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Cannot open header backup file {file}."),
        ));
    };
    let bdev = Dev {
        path: file.clone(),
        file: File::open(file).map_err(|_| Failed(libc::EINVAL))?,
        size: img.len() as u64,
    };
    let h = load(io, &bdev, None)?;
    let need = h.backup_size();
    if (img.len() as u64) < need {
        return Err(fail(
            io,
            libc::EINVAL,
            "Backup file does not contain valid LUKS header.",
        ));
    }
    let dev = open_dev(io, &pos[0], true)?;
    if dev.size < need {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Device {} is too small.", dev.path),
        ));
    }
    if !o.batch {
        let _ = writeln!(
            io.err,
            "WARNING!\n========\nDevice {} already contains LUKS header. Replacing header will destroy existing keyslots.",
            dev.path
        );
    }
    write_all(io, &dev, 0, &img[..need as usize])
}
