//! The veritysetup actions that talk to the device-mapper — here the udm daemon: `open`
//! (create + load a read-only `verity` table + resume), `close`, `status`.

use super::actions::{self, fail, open_ro};
use super::dmctl::{self, abs};
use super::{Failed, Io, Opts};
use std::io::Write;
use udm_formats::verity::device::{salt_text, FecTable, Header, OnCorruption, TableOptions};
use udm_formats::verity::{to_hex, Digest};
use udm_proto::{Client, ClientError, DevSel, Line, Reply, Request, SecretBytes};
use udm_targets::verity::VerityParams;

fn connect(io: &mut Io<'_>) -> Result<Client, Failed> {
    dmctl::connect(&io.socket, io.err).ok_or(Failed(libc::EINVAL))
}

fn report(io: &mut Io<'_>, op: &str, name: &str, e: &ClientError) -> Failed {
    Failed(dmctl::report(io.err, op, name, e))
}

/// The `verity` table line veritysetup would load.
fn table_line(
    o: &Opts,
    h: &Header,
    (data, hash): (&str, &str),
    root: &Digest,
    hash_size: u64,
    sig_key_desc: Option<String>,
) -> Line {
    let on_corruption = if o.ignore_corruption {
        OnCorruption::Ignore
    } else if o.restart_on_corruption {
        OnCorruption::Restart
    } else if o.panic_on_corruption {
        OnCorruption::Panic
    } else {
        OnCorruption::Eio
    };
    let fec = o.fec_device.as_ref().map(|f| {
        let end = if actions::same_file(hash, f) {
            o.fec_offset
        } else {
            hash_size
        };
        FecTable {
            dev: abs(f),
            roots: o.fec_roots.unwrap_or(2),
            blocks: h.fec_blocks(end),
            offset: o.fec_offset,
        }
    });
    let opts = TableOptions {
        on_corruption,
        ignore_zero_blocks: o.ignore_zero_blocks,
        check_at_most_once: o.check_at_most_once,
        try_verify_in_tasklet: o.use_tasklets,
        fec,
        sig_key_desc,
    };
    Line {
        start: 0,
        len: h.table_sectors(),
        ttype: "verity".into(),
        params: h.table_params(&abs(data), &abs(hash), root, &opts),
    }
}

/// The `--root-hash-signature` file, with veritysetup's errors.
fn read_signature(io: &mut Io<'_>, f: &str) -> Result<Vec<u8>, Failed> {
    let ok = std::fs::metadata(f).is_ok_and(|m| m.is_file() && m.len() > 0);
    if !ok {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Invalid signature file {f}."),
        ));
    }
    std::fs::read(f).map_err(|_| fail(io, libc::EINVAL, format!("Cannot read signature file {f}.")))
}

/// `open <data_device> <name> <hash_device> [<root_hash>]`.
pub fn open(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    if pos.len() < 4 && o.root_hash_file.is_none() {
        return Err(fail(
            io,
            libc::EINVAL,
            "Command requires <root_hash> or --root-hash-file option as argument.",
        ));
    }
    let (data_path, name, hash_path) = (&pos[0], &pos[1], &pos[2]);
    let data = open_ro(io, data_path)?;
    let hash = open_ro(io, hash_path)?;
    let h = actions::load_hdr(io, o, hash_path, &hash, Some(&data))?;
    let root = actions::root_arg(io, o, pos.get(3), &h)?;
    let geo = h
        .geometry()
        .map_err(|_| fail(io, libc::EINVAL, "Unsupported VERITY block size."))?;
    actions::check_offsets(io, &h, &geo)?;
    let sig = match &o.root_hash_signature {
        Some(f) => Some(read_signature(io, f)?),
        None => None,
    };
    // veritysetup puts the signature in the keyring as a `user` key and names it in the
    // table; here the key goes to the daemon's key store.
    let sig_desc = sig.as_ref().map(|_| h.sig_key_desc(name));
    let line = table_line(
        o,
        &h,
        (data_path, hash_path),
        &root,
        actions::dev_size(&hash),
        sig_desc.clone(),
    );
    let uuid = h.dm_uuid(name);
    let mut c = connect(io)?;
    if let (Some(sig), Some(desc)) = (sig, &sig_desc) {
        c.call(Request::KeyAdd {
            ktype: "user".into(),
            desc: desc.clone(),
            key: SecretBytes(sig),
        })
        .map_err(|e| report(io, "key add", name, &e))?;
    }
    let sel = DevSel::Name(name.clone());
    match c.call(Request::Create {
        name: name.clone(),
        uuid,
    }) {
        Ok(_) => {}
        Err(e) if e.errno() == libc::EBUSY || e.errno() == libc::EEXIST => {
            return Err(fail(
                io,
                libc::EEXIST,
                format!("Device {name} already exists."),
            ))
        }
        Err(e) => return Err(report(io, "create", name, &e)),
    }
    dmctl::load_and_resume(&mut c, io.err, name, vec![line], true).map_err(Failed)?;
    if let Ok(Reply::Status { targets, .. }) = c.call(Request::Status {
        dev: sel,
        inactive: false,
        table: false,
        noflush: false,
    }) {
        if targets.first().is_some_and(|t| t.params.starts_with('C')) {
            let _ = writeln!(
                io.err,
                "Verity device detected corruption after activation."
            );
        }
    }
    Ok(())
}

/// `close <name>`.
pub fn close(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let name = &pos[0];
    let mut c = connect(io)?;
    let sel = DevSel::Name(name.clone());
    if o.cancel_deferred {
        // udm removes at once or fails while open; nothing is ever pending.
        return Ok(());
    }
    match c.call(Request::Remove {
        dev: sel,
        deferred: o.deferred,
    }) {
        Ok(_) => Ok(()),
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
        Err(e) => Err(report(io, "remove", name, &e)),
    }
}

/// `status <name>`.
pub fn status(io: &mut Io<'_>, _o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let name = pos[0].trim_start_matches("/dev/mapper/").to_string();
    let shown = if pos[0].contains('/') {
        pos[0].clone()
    } else {
        format!("/dev/mapper/{name}")
    };
    let mut c = connect(io)?;
    let sel = DevSel::Name(name.clone());
    let info = match c.call(Request::Info {
        dev: sel.clone(),
        inactive: false,
    }) {
        Ok(Reply::Info(i)) => i,
        _ => {
            let _ = writeln!(io.out, "{shown} is inactive.");
            return Err(Failed(libc::ENODEV));
        }
    };
    let busy = if info.open_count > 0 {
        " and is in use"
    } else {
        ""
    };
    let _ = writeln!(io.out, "{shown} is active{busy}.");
    let is_verity = info.uuid.starts_with("CRYPT-VERITY-");
    let _ = writeln!(
        io.out,
        "  type:        {}",
        if is_verity { "VERITY" } else { "n/a" }
    );
    let get = |c: &mut Client, table: bool| match c.call(Request::Status {
        dev: sel.clone(),
        inactive: false,
        table,
        noflush: false,
    }) {
        Ok(Reply::Status { targets, .. }) => targets.into_iter().next(),
        _ => None,
    };
    let (Some(t), Some(st)) = (get(&mut c, true), get(&mut c, false)) else {
        return Ok(());
    };
    if t.ttype != "verity" {
        return Ok(());
    }
    let Ok(p) = t.params.parse::<VerityParams>() else {
        return Ok(());
    };
    let o = &mut io.out;
    let state = if st.params.starts_with('C') {
        "corrupted"
    } else {
        "verified"
    };
    let _ = writeln!(o, "  status:      {state}");
    let _ = writeln!(o, "  hash type:   {}", p.version);
    let _ = writeln!(o, "  data block:  {}", p.data_block_size);
    let _ = writeln!(o, "  hash block:  {}", p.hash_block_size);
    let _ = writeln!(o, "  hash name:   {}", p.alg);
    let _ = writeln!(o, "  salt:        {}", salt_text(&p.salt));
    let (data_dev, data_loop) = crate::luks_cli::shown_device(&p.data_dev.to_string());
    let _ = writeln!(o, "  data device: {data_dev}");
    if let Some(f) = data_loop {
        let _ = writeln!(o, "  data loop:   {f}");
    }
    let _ = writeln!(o, "  size:        {} sectors", t.len);
    let mode = if info.read_only {
        "readonly"
    } else {
        "read/write"
    };
    let _ = writeln!(o, "  mode:        {mode}");
    let (hash_dev, hash_loop) = crate::luks_cli::shown_device(&p.hash_dev.to_string());
    let _ = writeln!(o, "  hash device: {hash_dev}");
    if let Some(f) = hash_loop {
        let _ = writeln!(o, "  hash loop:   {f}");
    }
    let hbs = p.hash_block_size as u64;
    let _ = writeln!(o, "  hash offset: {} sectors", p.hash_start * hbs / 512);
    if let Some(f) = &p.fec.dev {
        let _ = writeln!(o, "  FEC device:  {f}");
        let _ = writeln!(o, "  FEC offset:  {} sectors", p.fec.start * hbs / 512);
        let _ = writeln!(o, "  FEC roots:   {}", p.fec.roots.unwrap_or(0));
    }
    let _ = writeln!(o, "  root hash:   {}", to_hex(&p.root_digest));
    use udm_targets::verity::Mode;
    let flags = [
        (p.mode == Mode::Logging, "ignore_corruption "),
        (p.mode == Mode::Restart, "restart_on_corruption "),
        (p.mode == Mode::Panic, "panic_on_corruption "),
        (p.ignore_zero_blocks, "ignore_zero_blocks "),
        (p.check_at_most_once, "check_at_most_once"),
        (p.try_verify_in_tasklet, "try_verify_in_tasklet"),
    ];
    if flags.iter().any(|f| f.0) {
        let s: String = flags.iter().filter(|f| f.0).map(|f| f.1).collect();
        let _ = writeln!(o, "  flags:       {s}");
    }
    Ok(())
}
