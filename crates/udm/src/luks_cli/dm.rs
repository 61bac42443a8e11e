//! The actions that talk to the device-mapper — here the udm daemon: `open` (LUKS1, LUKS2,
//! plain; or only `--test-passphrase`), `close`, `status`, `resize`.

use super::hdr::{self, Header};
use super::{fail, pass, Failed, Io, Opts};
use crate::dmctl::{self, abs};
use std::io::Write;
use udm_formats::luks::Zeroizing;
use udm_proto::{Client, ClientError, DevSel, Line, Reply, Request};
use udm_targets::crypt::setup::{
    keyring_desc, luks2_integrity_cipher, parse_status, table_params, CryptFlags,
    CryptMapping as Mapping,
};

fn connect(io: &mut Io<'_>) -> Result<Client, Failed> {
    dmctl::connect(&io.socket, io.err).ok_or(Failed(libc::ENOTSUP))
}

fn report(io: &mut Io<'_>, op: &str, name: &str, e: &ClientError) -> Failed {
    Failed(dmctl::report(io.err, op, name, e))
}

/// The activation flags of the command line, as table words.
fn flags(o: &Opts) -> CryptFlags {
    CryptFlags {
        allow_discards: o.allow_discards,
        perf: o.perf.clone(),
        iv_large_sectors: o.iv_large_sectors,
    }
}

/// Create, load and resume `name` (removing it again if any step fails).
fn activate(io: &mut Io<'_>, o: &Opts, name: &str, dev: &str, m: &Mapping) -> Result<(), Failed> {
    let mut c = connect(io)?;
    let sel = DevSel::Name(name.to_string());
    if c.call(Request::Info {
        dev: sel.clone(),
        inactive: false,
    })
    .is_ok()
    {
        return Err(fail(
            io,
            libc::EEXIST,
            format!("Device {name} already exists."),
        ));
    }
    if m.sectors == 0 {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Device {dev} is too small."),
        ));
    }
    c.call(Request::Create {
        name: name.to_string(),
        uuid: m.uuid.clone(),
    })
    .map_err(|e| report(io, "create", name, &e))?;
    if let Some(desc) = &m.key_desc {
        let added = c.call(Request::KeyAdd {
            ktype: "logon".into(),
            desc: desc.clone(),
            key: udm_proto::SecretBytes(m.key.to_vec()),
        });
        if let Err(e) = added {
            let _ = c.call(Request::Remove {
                dev: sel.clone(),
                deferred: false,
            });
            return Err(report(io, "key add", name, &e));
        }
    }
    let params = table_params(m, &flags(o), &abs(dev));
    let line = Line {
        start: 0,
        len: m.sectors,
        ttype: "crypt".into(),
        params: params.to_string(),
    };
    let r = dmctl::load_and_resume(&mut c, io.err, name, vec![line], o.readonly).map_err(Failed);
    if r.is_err() {
        if let Some(desc) = &m.key_desc {
            let _ = c.call(Request::KeyRemove {
                ktype: "logon".into(),
                desc: desc.clone(),
            });
        }
    }
    r
}

/// cryptsetup's plain-mode passphrase hashing, with its message for an unknown hash.
fn plain_hash(
    io: &mut Io<'_>,
    hash: &str,
    pass: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, Failed> {
    udm_formats::luks::create::plain_key(hash, pass, len).ok_or_else(|| {
        fail(
            io,
            libc::EINVAL,
            format!("Couldn't find hash algorithm {hash}."),
        )
    })
}

fn open_plain(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let path = &pos[0];
    let dev = hdr::open_dev(io, path, !o.readonly)?;
    let cipher = o.cipher.clone().unwrap_or("aes-cbc-essiv:sha256".into());
    let key_len = (o.key_size.unwrap_or(256) / 8) as usize;
    let key = if let Some(kf) = &o.key_file {
        if o.hash.is_some() {
            // cryptsetup prints it with log_std: on stdout.
            let _ = writeln!(
                io.out,
                "WARNING: The --hash parameter is being ignored in plain mode with keyfile specified."
            );
        }
        let k = pass::read_key_file(
            io,
            kf,
            o.keyfile_offset,
            Some(o.keyfile_size.unwrap_or(key_len)),
        )?;
        Zeroizing::new(k[..key_len.min(k.len())].to_vec())
    } else {
        let prompt = "Enter passphrase for ".to_string() + path + ": ";
        let p = pass::get(io, None, 0, None, &prompt, false)?;
        plain_hash(io, o.hash.as_deref().unwrap_or("ripemd160"), &p, key_len)?
    };
    let offset = o.offset.unwrap_or(0);
    let sectors = match o.size {
        Some(s) => s,
        None => (dev.size / 512).saturating_sub(offset),
    };
    let name = &pos[1];
    let m = Mapping {
        cipher,
        key,
        iv_offset: o.skip.unwrap_or(0),
        offset,
        sectors,
        sector_size: o.sector_size.unwrap_or(512),
        uuid: format!("CRYPT-PLAIN-{name}"),
        key_desc: None,
        integrity: None,
    };
    activate(io, o, name, path, &m)
}

/// `open <device> [<name>]`.
pub fn open(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    match o.ty.as_deref() {
        None | Some("luks") | Some("luks1") | Some("luks2") => {}
        Some("plain") => return open_plain(io, o, pos),
        Some(t) => {
            return Err(fail(
                io,
                libc::EINVAL,
                format!("Unknown or unsupported device type {t} requested (udm: luks, luks1, luks2, plain)."),
            ))
        }
    }
    let path = &pos[0];
    let dev = hdr::open_dev(io, path, false)?;
    let h = hdr::load(io, &dev, hdr::wanted(o))?;
    let prompt = format!("Enter passphrase for {path}: ");
    let p = pass::get(
        io,
        o.key_file.as_deref(),
        o.keyfile_offset,
        o.keyfile_size,
        &prompt,
        false,
    )?;
    let (slot, vk) = hdr::unlock(io, &dev, &h, &p, o.key_slot)?;
    if o.verbose {
        let _ = writeln!(io.out, "Key slot {slot} unlocked.");
    }
    if o.test_passphrase {
        return Ok(());
    }
    let name = &pos[1];
    let nodash: String = h.uuid().chars().filter(|c| *c != '-').collect();
    let dev_sectors = dev.size / 512;
    let m = match &h {
        Header::L1(h) => Mapping {
            cipher: h.cipher_spec(),
            key: vk,
            iv_offset: 0,
            offset: h.payload_offset as u64,
            sectors: dev_sectors.saturating_sub(h.payload_offset as u64),
            sector_size: 512,
            uuid: format!("CRYPT-LUKS1-{nodash}-{name}"),
            key_desc: None,
            integrity: None,
        },
        Header::L2(md) => {
            let Some(s) = md.segment() else {
                return Err(fail(
                    io,
                    libc::EINVAL,
                    "No data segment in the LUKS2 header.",
                ));
            };
            let off = s.offset / 512;
            let spb = (s.sector_size / 512) as u64;
            let sectors = match s.size {
                Some(b) => b / 512,
                None => dev_sectors.saturating_sub(off),
            };
            let m = Mapping {
                cipher: s.encryption.clone(),
                key: vk,
                iv_offset: s.iv_tweak,
                offset: off,
                sectors: sectors / spb * spb,
                sector_size: s.sector_size,
                uuid: format!("CRYPT-LUKS2-{nodash}-{name}"),
                key_desc: (!o.disable_keyring).then(|| keyring_desc(h.uuid())),
                integrity: None,
            };
            if let Some(it) = &s.integrity {
                return open_with_integrity(io, o, name, path, m, &s.encryption, it);
            }
            m
        }
    };
    activate(io, o, name, path, &m)
}

/// An authenticated LUKS2 volume: the integrity device `<name>_dif` at the data offset
/// (its superblock gives the size), then the crypt mapping over it.
fn open_with_integrity(
    io: &mut Io<'_>,
    o: &Opts,
    name: &str,
    path: &str,
    mut m: Mapping,
    encryption: &str,
    integrity: &str,
) -> Result<(), Failed> {
    let Some((cipher, tag)) = luks2_integrity_cipher(encryption, integrity) else {
        return Err(fail(
            io,
            libc::ENOTSUP,
            format!("udm has no authenticated cipher {encryption} with integrity {integrity}."),
        ));
    };
    let sb = match udm_targets::integrity::setup::read_superblock_at_sector(
        std::path::Path::new(path),
        m.offset,
    ) {
        Ok(Some(sb)) => sb,
        _ => {
            return Err(fail(
                io,
                libc::EINVAL,
                format!("No integrity superblock at the data offset of {path}."),
            ))
        }
    };
    let dif = format!("{name}_dif");
    let mut c = connect(io)?;
    c.call(Request::Create {
        name: dif.clone(),
        uuid: format!("CRYPT-SUBDEV-{}", m.uuid.trim_start_matches("CRYPT-")),
    })
    .map_err(|e| report(io, "create", &dif, &e))?;
    let line = Line {
        start: 0,
        len: sb.provided_data_sectors,
        ttype: "integrity".into(),
        params: format!("{} {} {tag} J 0", abs(path), m.offset),
    };
    dmctl::load_and_resume(&mut c, io.err, &dif, vec![line], o.readonly).map_err(Failed)?;
    m.cipher = cipher;
    m.offset = 0;
    m.sectors = sb.provided_data_sectors;
    m.integrity = Some((tag, "aead".into()));
    let r = activate(io, o, name, &format!("/dev/mapper/{dif}"), &m);
    if r.is_err() {
        let _ = c.call(Request::Remove {
            dev: DevSel::Name(dif),
            deferred: false,
        });
    }
    r
}

/// `close <name>`.
pub fn close(io: &mut Io<'_>, _o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let name = pos[0].trim_start_matches("/dev/mapper/").to_string();
    let mut c = connect(io)?;
    // A volume key in the key store goes with the mapping, as cryptsetup unlinks it.
    let key_desc = live(&mut c, &name).and_then(|(_, t)| {
        let w = udm_core::split_args(&t.params);
        let key = w.get(1)?;
        let desc = key.splitn(4, ':').nth(3)?;
        (key.starts_with(':') && desc.starts_with("cryptsetup:")).then(|| desc.to_string())
    });
    match c.call(Request::Remove {
        dev: DevSel::Name(name.clone()),
        deferred: false,
    }) {
        Ok(_) => {
            if let Some(desc) = key_desc {
                let _ = c.call(Request::KeyRemove {
                    ktype: "logon".into(),
                    desc,
                });
            }
            // The integrity device under an authenticated LUKS2 volume.
            let _ = c.call(Request::Remove {
                dev: DevSel::Name(format!("{name}_dif")),
                deferred: false,
            });
            Ok(())
        }
        Err(e) if e.errno() == libc::ENXIO => Err(fail(
            io,
            libc::ENODEV,
            format!("Device {name} is not active."),
        )),
        Err(e) if e.errno() == libc::EBUSY => Err(fail(
            io,
            libc::EBUSY,
            format!("Device {name} is still in use."),
        )),
        Err(e) => Err(report(io, "remove", &name, &e)),
    }
}

/// The live crypt table line of `name`: (info, line).
fn live(c: &mut Client, name: &str) -> Option<(udm_proto::DevInfo, udm_proto::TargetStatus)> {
    match c.call(Request::Status {
        dev: DevSel::Name(name.to_string()),
        inactive: false,
        table: true,
        noflush: false,
    }) {
        Ok(Reply::Status { info, targets }) => targets.into_iter().next().map(|t| (info, t)),
        _ => None,
    }
}

/// `status <name>`.
pub fn status(io: &mut Io<'_>, _o: &Opts, pos: &[String], real: bool) -> Result<(), Failed> {
    let name = pos[0].trim_start_matches("/dev/mapper/").to_string();
    let mut shown = format!("/dev/mapper/{name}");
    let mut c = connect(io)?;
    if real && !std::path::Path::new(&shown).exists() {
        // The daemon's FUSE file, when /dev/mapper has no such node.
        if let Ok(Reply::Daemon {
            fuse_dir: Some(d), ..
        }) = c.call(Request::DaemonInfo)
        {
            shown = format!("{d}/{name}");
        }
    }
    let Some((info, t)) = live(&mut c, &name) else {
        let _ = writeln!(io.out, "{shown} is inactive.");
        return Err(Failed(libc::ENODEV));
    };
    let busy = if info.open_count > 0 {
        " and is in use"
    } else {
        ""
    };
    let _ = writeln!(io.out, "{shown} is active{busy}.");
    let ty = ["LUKS1", "LUKS2", "PLAIN"]
        .into_iter()
        .find(|p| info.uuid.starts_with(&format!("CRYPT-{p}-")))
        .unwrap_or("n/a");
    let _ = writeln!(io.out, "  type:    {ty}");
    if t.ttype != "crypt" {
        return Ok(());
    }
    let Some(cs) = parse_status(&t.params) else {
        return Ok(());
    };
    let o = &mut io.out;
    let _ = writeln!(o, "  cipher:  {}", cs.cipher);
    let _ = writeln!(o, "  keysize: {} bits", cs.key_bits);
    let location = if cs.in_keyring { "keyring" } else { "dm-crypt" };
    let _ = writeln!(o, "  key location: {location}");
    if let Some((_, ty)) = &cs.integrity {
        let _ = writeln!(o, "  integrity: {ty}");
    }
    let (device, backing) = shown_device(&cs.device);
    let _ = writeln!(o, "  device:  {device}");
    if let Some(file) = backing {
        let _ = writeln!(o, "  loop:    {file}");
    }
    let _ = writeln!(o, "  sector size:  {}", cs.sector_size);
    let _ = writeln!(o, "  offset:  {} sectors", cs.offset);
    let _ = writeln!(o, "  size:    {} sectors", t.len);
    if cs.iv_offset != "0" {
        let _ = writeln!(o, "  skipped: {} sectors", cs.iv_offset);
    }
    let mode = if info.read_only {
        "readonly"
    } else {
        "read/write"
    };
    let _ = writeln!(o, "  mode:    {mode}");
    let flags = &cs.flags;
    if !flags.is_empty() {
        let _ = writeln!(o, "  flags:   {} ", flags.join(" "));
    }
    Ok(())
}

/// How cryptsetup/veritysetup name a table's device: its `/dev` node (from `maj:min` or a
/// path), and for a loop device the file behind it (the `loop:` line).
pub fn shown_device(dev: &str) -> (String, Option<String>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let devno = match udm_core::resolve::parse_devno(dev) {
        Some(n) => Some(n),
        None => std::fs::metadata(dev)
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .map(|m| (libc::major(m.rdev()), libc::minor(m.rdev()))),
    };
    let Some((ma, mi)) = devno else {
        return (dev.to_string(), None);
    };
    let kname = std::fs::read_to_string(format!("/sys/dev/block/{ma}:{mi}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
        });
    let Some(kname) = kname else {
        return (dev.to_string(), None);
    };
    let backing = std::fs::read_to_string(format!("/sys/block/{kname}/loop/backing_file"))
        .ok()
        .map(|s| s.trim_end().to_string());
    (format!("/dev/{kname}"), backing)
}

/// `resize <name> [--size N]`: reload the mapping with the backing device's new size.
pub fn resize(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let name = pos[0].trim_start_matches("/dev/mapper/").to_string();
    let mut c = connect(io)?;
    let Some((info, t)) = live(&mut c, &name) else {
        return Err(fail(
            io,
            libc::ENODEV,
            format!("Device {name} is not active."),
        ));
    };
    let w = udm_core::split_args(&t.params);
    if t.ttype != "crypt" || w.len() < 5 {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Device {name} is not a crypt device."),
        ));
    }
    let offset: u64 = w[4].parse().unwrap_or(0);
    let ss: u64 = w
        .iter()
        .find_map(|x| x.strip_prefix("sector_size:"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let sectors = match o.size {
        Some(s) => s,
        None => {
            let Ok(f) = std::fs::File::open(&w[3]) else {
                return Err(fail(
                    io,
                    libc::ENODEV,
                    format!("Device {} does not exist or access denied.", w[3]),
                ));
            };
            (hdr::block_size(&f) / 512).saturating_sub(offset)
        }
    };
    let spb = ss / 512;
    if sectors == 0 || sectors % spb != 0 {
        return Err(fail(
            io,
            libc::EINVAL,
            "Device size is not aligned to requested sector size.",
        ));
    }
    let sel = DevSel::Name(name.clone());
    let params = Zeroizing::new(t.params.clone());
    c.call(Request::Load {
        dev: sel.clone(),
        table: vec![Line {
            start: 0,
            len: sectors,
            ttype: "crypt".into(),
            params: params.to_string(),
        }],
        read_only: info.read_only,
    })
    .map_err(|e| report(io, "reload", &name, &e))?;
    c.call(Request::Suspend {
        dev: sel.clone(),
        noflush: false,
        nolockfs: false,
    })
    .and_then(|_| {
        c.call(Request::Resume {
            dev: sel,
            noflush: false,
            nolockfs: false,
        })
    })
    .map_err(|e| report(io, "resume", &name, &e))?;
    Ok(())
}
