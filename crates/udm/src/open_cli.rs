//! `udm open IMAGE` and `udm close IMAGE`: the whole stack inside a disk image in one
//! command. Partitions come up as kpartx makes them, each LUKS volume found (on a
//! partition, or the whole image) is opened as cryptsetup would (the passphrase is asked
//! for, or read from `--key-file`), and every LVM volume group on what is left is activated
//! as `vgchange -ay` would. The devices made are listed with their FUSE paths and NBD URIs,
//! and remembered (in the state directory, as `udm_daemon::opened` records them) so that
//! `close` removes them in reverse order. An image can be an NBD export
//! (`nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=…`, `nbds://`): it is mapped first
//! as a linear device over the export.

use crate::{dmctl, kpartx, luks_cli, lvm};
use std::io::Write;
use std::path::PathBuf;
use udm_daemon::opened::{Kind, Opened};
use udm_formats::lvm::{scan_pv, LvmError};
use udm_proto::{Client, DevSel, Reply, Request};

const USAGE: &str = "\
Usage: udm open [--key-file FILE] IMAGE     bring up partitions, LUKS volumes and LVM VGs
       udm close IMAGE                      take them down again (reverse order)
";

fn names(c: &mut Client) -> Vec<String> {
    match c.call(Request::List) {
        Ok(Reply::List(v)) => v.into_iter().map(|d| d.name).collect(),
        _ => Vec::new(),
    }
}

/// Where the devices opened for `image` are remembered.
fn record(image: &str) -> PathBuf {
    Opened::record_path(&udm_lvm::devices::state_dir(), image)
}

/// The first 4 KiB of a host path or `/dev/mapper/NAME`.
fn head(dev: &str) -> Option<Vec<u8>> {
    let d = udm_lvm::devices::open(dev, false).ok()?;
    let mut b = vec![0u8; 4096];
    d.read_at(0, &mut b).ok()?;
    Some(b)
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// `udm open` / `udm close`.
pub fn main(cmd: &str, args: &[String]) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let mut key_file = None;
    let mut image = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--key-file" | "-d" => key_file = it.next().cloned(),
            "--help" | "-h" => {
                print!("{USAGE}");
                return 0;
            }
            s if !s.starts_with('-') && image.is_none() => image = Some(s.to_string()),
            _ => {
                let _ = write!(err, "{USAGE}");
                return 1;
            }
        }
    }
    let Some(image) = image else {
        let _ = write!(err, "{USAGE}");
        return 1;
    };
    let image = udm_lvm::devices::canonical(&image);
    let Some(mut c) = dmctl::connect(&udm_proto::default_socket(), &mut err) else {
        return 1;
    };
    if cmd == "close" {
        return close(&mut c, &image, &mut out, &mut err);
    }
    let rec = record(&image);
    if rec.exists() {
        let _ = writeln!(err, "{image} is already open (udm close {image} first)");
        return 1;
    }
    let mut made = Opened::default();
    let r = remote_base(&mut c, &image, &mut made, &mut err)
        .and_then(|dev| open(&mut c, &dev, key_file.as_deref(), &mut made, &mut err));
    if let Err(m) = r {
        let _ = writeln!(err, "udm open: {m}");
        for (n, _) in made.devices.iter().rev() {
            let _ = c.call(Request::Remove {
                dev: DevSel::Name(n.clone()),
                deferred: false,
            });
        }
        return 1;
    }
    let text = made.to_text();
    if let Some(d) = rec.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    if let Err(e) = std::fs::write(&rec, text) {
        let _ = writeln!(
            err,
            "udm open: cannot record the devices in {}: {e}",
            rec.display()
        );
    }
    let (nbd, fuse) = match c.call(Request::DaemonInfo) {
        Ok(Reply::Daemon {
            nbd_socket,
            fuse_dir,
            ..
        }) => (nbd_socket, fuse_dir),
        _ => (None, None),
    };
    let _ = out.write_all(
        made.export_lines(fuse.as_deref(), nbd.as_deref())
            .as_bytes(),
    );
    0
}

/// An `nbd://`, `nbds://` or `nbd+unix://` image comes up first as a linear device over
/// the export (the daemon connects to it), and the stack is opened on that device; a
/// local image is used as it is.
fn remote_base(
    c: &mut Client,
    image: &str,
    made: &mut Opened,
    err: &mut dyn Write,
) -> Result<String, String> {
    if !image.starts_with("nbd") || !image.contains("://") {
        return Ok(image.to_string());
    }
    let spec = udm_nbd::RemoteSpec::parse(image).map_err(|e| format!("{image}: {e}"))?;
    let size = udm_nbd::NbdClient::connect(&spec.addr, &spec.export)
        .map_err(|e| format!("{image}: {e}"))?
        .size();
    let name = format!(
        "nbd_{}",
        image
            .split("://")
            .nth(1)
            .unwrap_or("")
            .chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
            .collect::<String>()
    );
    c.call(Request::Create {
        name: name.clone(),
        uuid: String::new(),
    })
    .map_err(|e| {
        dmctl::report(err, "create", &name, &e);
        format!("cannot create {name}")
    })?;
    let line = udm_proto::Line {
        start: 0,
        len: size / 512,
        ttype: "linear".into(),
        params: format!("{} 0", udm_core::escape_arg(image)),
    };
    dmctl::load_and_resume(c, err, &name, vec![line], false)
        .map_err(|_| format!("cannot map {image}"))?;
    made.devices.push((name.clone(), Kind::Nbd));
    Ok(format!("/dev/mapper/{name}"))
}

fn open(
    c: &mut Client,
    image: &str,
    key_file: Option<&str>,
    made: &mut Opened,
    err: &mut dyn Write,
) -> Result<(), String> {
    // Partitions.
    let before = names(c);
    let mut sink = Vec::new();
    let r = kpartx::run(&["-a".into(), image.into()], &mut sink, err);
    if r != 0 {
        return Err(format!("partitions of {image} could not be mapped"));
    }
    let parts = made.add_new(&before, names(c), Kind::Partition);
    let mut layer: Vec<String> = if parts.is_empty() {
        vec![image.to_string()]
    } else {
        parts.iter().map(|n| format!("/dev/mapper/{n}")).collect()
    };
    // LUKS volumes.
    let mut next = Vec::new();
    for dev in &layer {
        let Some(h) = head(dev) else {
            return Err(format!("cannot read {dev}"));
        };
        if !h.starts_with(&udm_formats::luks::MAGIC) {
            next.push(dev.clone());
            continue;
        }
        let name = format!("{}_crypt", basename(dev));
        let mut args: Vec<String> = vec!["open".into(), dev.clone(), name.clone()];
        if let Some(k) = key_file {
            args.extend(["--key-file".into(), k.into()]);
        }
        let mut stdout = std::io::stdout();
        let mut input = std::io::stdin();
        // SAFETY: isatty only inspects the file descriptor.
        let tty = unsafe { libc::isatty(0) } == 1;
        let mut io = luks_cli::Io {
            out: &mut stdout,
            err: &mut *err,
            input: &mut input,
            tty,
            socket: udm_proto::default_socket(),
        };
        if luks_cli::run(&mut io, "cryptsetup", &args) != 0 {
            return Err(format!("cannot open the LUKS volume on {dev}"));
        }
        made.devices.push((name.clone(), Kind::Crypt));
        next.push(format!("/dev/mapper/{name}"));
    }
    layer = next;
    // LVM volume groups on what is left.
    let mut vgs: Vec<String> = Vec::new();
    let mut pvs: Vec<String> = Vec::new();
    for dev in &layer {
        let Ok(d) = udm_lvm::devices::open(dev, false) else {
            continue;
        };
        match scan_pv(&*d) {
            Ok(p) => {
                pvs.push(dev.clone());
                vgs.extend(p.vg);
            }
            Err(LvmError::NoLabel) => {}
            Err(e) => return Err(format!("{dev}: {e}")),
        }
    }
    vgs.sort();
    vgs.dedup();
    if !vgs.is_empty() {
        let before = names(c);
        let mut args = vec!["-ay".to_string(), "--devices".into(), pvs.join(",")];
        args.extend(vgs.iter().cloned());
        let code = lvm::run("vgchange", &args);
        made.add_new(&before, names(c), Kind::Lvm);
        if code != 0 {
            return Err(format!("volume groups {} did not activate", vgs.join(", ")));
        }
    }
    Ok(())
}

fn close(c: &mut Client, image: &str, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let rec = record(image);
    let Ok(text) = std::fs::read_to_string(&rec) else {
        let _ = writeln!(err, "udm close: {image} is not open");
        return 1;
    };
    let mut rc = 0;
    for name in Opened::removal_order(&text) {
        match c.call(Request::Remove {
            dev: DevSel::Name(name.clone()),
            deferred: false,
        }) {
            Ok(_) => {}
            Err(e) if e.errno() == libc::ENXIO || e.errno() == libc::ENODEV => {}
            Err(e) => {
                dmctl::report(err, "remove", &name, &e);
                rc = 1;
            }
        }
    }
    if rc == 0 {
        let _ = std::fs::remove_file(&rec);
        let _ = writeln!(out, "{image} closed");
    }
    rc
}
