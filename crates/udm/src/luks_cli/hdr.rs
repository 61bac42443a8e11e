//! Reading a LUKS header from a device or file, unlocking a keyslot (KDF → keyslot area
//! decryption → AF merge → digest check), and the header commands: isLuks, luksUUID,
//! luksHeaderBackup, luksHeaderRestore.

use super::{fail, Failed, Io, Opts};
use std::fs::File;
use std::os::unix::fs::FileExt;
use udm_formats::luks::{self, af, kdf, luks1, luks2, LuksError, Zeroizing};
use udm_targets::crypt::{CipherSpec, SectorCipher};

/// Bytes read for header parsing: the largest primary plus secondary copy.
const HDR_READ: u64 = 8 << 20;

/// An open device or image.
pub struct Dev {
    pub path: String,
    pub file: File,
    pub size: u64,
}

impl Dev {
    pub fn read_at(&self, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.file.read_exact_at(&mut b, off)?;
        Ok(b)
    }
}

/// Open a device read-only or read-write; cryptsetup's message when it is missing.
pub fn open_dev(io: &mut Io<'_>, path: &str, write: bool) -> Result<Dev, Failed> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path);
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

/// Size of a file or block device in bytes.
pub fn block_size(f: &File) -> u64 {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::End(0)).unwrap_or(0)
}

/// A parsed header of either version.
pub enum Header {
    L1(Box<luks1::Header>),
    L2(Box<luks2::Metadata>),
}

impl Header {
    pub fn uuid(&self) -> &str {
        match self {
            Header::L1(h) => &h.uuid,
            Header::L2(m) => &m.bin.uuid,
        }
    }
    pub fn version(&self) -> u32 {
        match self {
            Header::L1(_) => 1,
            Header::L2(_) => 2,
        }
    }
}

/// Read and check the header; `Err(None)` (silently) when there is no LUKS header at all.
pub fn try_load(dev: &Dev) -> Result<Header, LuksError> {
    let n = dev.size.min(HDR_READ) as usize;
    let b = dev.read_at(0, n).map_err(|_| LuksError::NotLuks)?;
    // A damaged primary (no magic) may still have a good LUKS2 secondary.
    match luks::version(&b) {
        Ok(1) => Ok(Header::L1(Box::new(luks1::Header::parse(
            &b,
            Some(dev.size / 512),
        )?))),
        Ok(2) | Err(LuksError::NotLuks) => {
            let (m, _) = luks2::Metadata::read(&b)?;
            Ok(Header::L2(Box::new(m)))
        }
        Ok(v) => Err(LuksError::Version(v)),
        Err(e) => Err(e),
    }
}

/// `try_load` with cryptsetup's messages; `want` restricts the version (`--type`).
pub fn load(io: &mut Io<'_>, dev: &Dev, want: Option<u32>) -> Result<Header, Failed> {
    match try_load(dev) {
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

/// Decrypt a keyslot area (`len` bytes at `off`) with `cipher` keyed by `key`.
fn read_area(
    dev: &Dev,
    cipher: &str,
    key: &[u8],
    off: u64,
    len: u64,
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let spec: CipherSpec = cipher
        .parse()
        .map_err(|_| LuksError::Unsupported(format!("cipher {cipher}")))?;
    let c = SectorCipher::new(&spec, key, 512, false)
        .map_err(|e| LuksError::Unsupported(format!("cipher {cipher}: {e}")))?;
    if off.checked_add(len).is_none_or(|end| end > dev.size) {
        return Err(LuksError::Corrupt(
            "keyslot area beyond the device end".into(),
        ));
    }
    let mut b = Zeroizing::new(
        dev.read_at(off, len as usize)
            .map_err(|e| LuksError::Invalid(format!("cannot read the keyslot area: {e}")))?,
    );
    c.decrypt(&mut b, 0);
    Ok(b)
}

/// Try one LUKS1 keyslot.
fn try_slot1(
    dev: &Dev,
    h: &luks1::Header,
    i: usize,
    pass: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, LuksError> {
    let s = &h.slots[i];
    let k = kdf::Kdf::Pbkdf2 {
        hash: h.hash.clone(),
        iterations: s.iterations,
    };
    let key = {
        let _p = super::progress::start(&k);
        kdf::derive(&k, pass, &s.salt, h.key_bytes as usize)?
    };
    let len = af::area_bytes(h.key_bytes as usize, s.stripes);
    let area = read_area(dev, &h.cipher_spec(), &key, s.offset as u64 * 512, len)?;
    let n = h.key_bytes as usize * s.stripes as usize;
    let vk = af::merge(&area[..n], h.key_bytes as usize, s.stripes, &h.hash)?;
    Ok(h.verify_key(&vk)?.then_some(vk))
}

/// Check a candidate LUKS2 volume key against a digest.
pub fn digest_ok(d: &luks2::DigestEntry, vk: &[u8]) -> Result<bool, LuksError> {
    let k = kdf::Kdf::Pbkdf2 {
        hash: d.hash.clone(),
        iterations: d.iterations,
    };
    Ok(kdf::derive(&k, vk, &d.salt, d.digest.len())?[..] == d.digest[..])
}

/// Try one LUKS2 keyslot.
fn try_slot2(
    dev: &Dev,
    m: &luks2::Metadata,
    ks: &luks2::Keyslot,
    pass: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, LuksError> {
    let Some(d) = m.digest_for_keyslot(ks.id) else {
        return Ok(None);
    };
    let key = {
        let _p = super::progress::start(&ks.kdf);
        kdf::derive(&ks.kdf, pass, &ks.salt, ks.area_key_size)?
    };
    let len = af::area_bytes(ks.key_size, ks.af_stripes);
    let area = read_area(dev, &ks.area_encryption, &key, ks.area_offset, len)?;
    let n = ks.key_size * ks.af_stripes as usize;
    let vk = af::merge(&area[..n], ks.key_size, ks.af_stripes, &ks.af_hash)?;
    Ok(digest_ok(d, &vk)?.then_some(vk))
}

/// Find the keyslot `pass` opens (only `slot` if given): (slot, volume key).
pub fn unlock(
    io: &mut Io<'_>,
    dev: &Dev,
    h: &Header,
    pass: &[u8],
    slot: Option<u32>,
) -> Result<(u32, Zeroizing<Vec<u8>>), Failed> {
    let mut last_err = None;
    let mut tried = 0;
    match h {
        Header::L1(h) => {
            for i in 0..luks1::SLOTS {
                if !h.slots[i].active || slot.is_some_and(|s| s as usize != i) {
                    continue;
                }
                tried += 1;
                match try_slot1(dev, h, i, pass) {
                    Ok(Some(vk)) => return Ok((i as u32, vk)),
                    Ok(None) => {}
                    Err(e) => last_err = Some(e),
                }
            }
        }
        Header::L2(m) => {
            let mut order: Vec<&luks2::Keyslot> = m
                .keyslots
                .iter()
                .filter(|k| slot.map_or(k.priority != Some(0), |s| s == k.id))
                .collect();
            order.sort_by_key(|k| std::cmp::Reverse(k.priority.unwrap_or(1)));
            for ks in order {
                tried += 1;
                match try_slot2(dev, m, ks, pass) {
                    Ok(Some(vk)) => return Ok((ks.id, vk)),
                    Ok(None) => {}
                    Err(e) => last_err = Some(e),
                }
            }
        }
    }
    if tried == 0 {
        return Err(fail(io, libc::ENOENT, "No usable keyslot is available."));
    }
    if let Some(e) = last_err {
        if !matches!(e, LuksError::Corrupt(_)) {
            let _ = writeln!(io.err, "Keyslot open failed: {e}");
        }
    }
    Err(fail(
        io,
        libc::EPERM,
        "No key available with this passphrase.",
    ))
}

/// `isLuks <device>`: exit 0 for a LUKS header (of `--type`), 1 otherwise, silently.
pub fn is_luks(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let dev = open_dev(io, &pos[0], false)?;
    match try_load(&dev) {
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

/// Bytes of the header and keyslot areas (everything before the data).
pub fn header_area(h: &Header) -> u64 {
    match h {
        Header::L1(h) => h.payload_offset as u64 * 512,
        Header::L2(m) => m
            .segment()
            .map(|s| s.offset)
            .unwrap_or(2 * m.bin.hdr_size + m.keyslots_size),
    }
}

/// Bytes cryptsetup puts in a header backup: LUKS1 up to the end of the last keyslot area
/// (4 KiB rounded), LUKS2 both header copies and the keyslots area.
pub fn backup_size(h: &Header) -> u64 {
    match h {
        Header::L1(h) => {
            let end = h
                .slots
                .iter()
                .map(|s| s.offset as u64 + af::area_bytes(h.key_bytes as usize, s.stripes) / 512)
                .fold(8, u64::max);
            (end * 512).div_ceil(4096) * 4096
        }
        Header::L2(m) => 2 * m.bin.hdr_size + m.keyslots_size,
    }
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
    let n = backup_size(&h).min(dev.size);
    let b = dev.read_at(0, n as usize).map_err(|e| {
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
    let need = backup_size(&h);
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
