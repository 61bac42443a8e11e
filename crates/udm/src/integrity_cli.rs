//! `udm integrity …` and `integritysetup`: format and dump (offline, on files or devices),
//! open, close and status (through the udm daemon), with integritysetup 2.6's options and
//! output. The work is in `udm_targets::integrity::setup`; this file parses and prints.

use crate::dmctl;
use crate::optparse::{popt_num, popt_unknown, PoptSpec, PoptStop};
use crate::progress::Progress;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use udm_proto::{Client, DevSel, Line, Reply, Request};
use udm_targets::integrity::setup::{self, SetupOpts};
use udm_targets::integrity::Mode;

const TAKES_VALUE: [&str; 20] = [
    "journal-size",
    "interleave-sectors",
    "journal-watermark",
    "journal-commit-time",
    "bitmap-sectors-per-bit",
    "bitmap-flush-time",
    "tag-size",
    "sector-size",
    "buffer-sectors",
    "data-device",
    "integrity",
    "integrity-key-file",
    "integrity-key-size",
    "journal-integrity",
    "journal-integrity-key-file",
    "journal-integrity-key-size",
    "journal-crypt",
    "journal-crypt-key-file",
    "journal-crypt-key-size",
    "progress-frequency",
];

fn short(c: char) -> Option<&'static str> {
    Some(match c {
        'q' => "batch-mode",
        'v' => "verbose",
        'V' => "version",
        '?' => "help",
        'j' => "journal-size",
        't' => "tag-size",
        's' => "sector-size",
        'I' => "integrity",
        'D' => "integrity-no-journal",
        'R' => "integrity-recovery-mode",
        'B' => "integrity-bitmap-mode",
        _ => return None,
    })
}

#[derive(Default)]
struct Cli {
    o: SetupOpts,
    key_file: Option<String>,
    key_size: Option<usize>,
    jkey_file: Option<String>,
    jkey_size: Option<usize>,
    ckey_file: Option<String>,
    ckey_size: Option<usize>,
    batch: bool,
    verbose: bool,
    no_wipe: bool,
    progress_frequency: u64,
    progress_json: bool,
}

fn usage_fail(err: &mut dyn Write, prog: &str, msg: &str) -> i32 {
    let _ = writeln!(
        err,
        "Usage: {prog} [-?Vq] [OPTION...] <action> <action-specific>"
    );
    let _ = writeln!(err, "{prog}: {msg}");
    1
}

fn read_key(err: &mut dyn Write, file: &str, size: usize) -> Result<Vec<u8>, i32> {
    if size == 0 || size > 4096 {
        let _ = writeln!(err, "Invalid key size.");
        return Err(1);
    }
    let Ok(b) = std::fs::read(file) else {
        let _ = writeln!(err, "Cannot read keyfile {file}.");
        return Err(1);
    };
    if b.len() < size {
        let _ = writeln!(err, "Cannot read {size} bytes from keyfile {file}.");
        return Err(1);
    }
    Ok(b[..size].to_vec())
}

fn parse(
    err: &mut dyn Write,
    out: &mut dyn Write,
    prog: &str,
    args: &[String],
) -> Result<(Cli, Vec<String>), i32> {
    let spec = PoptSpec {
        takes_value: &TAKES_VALUE,
        short,
    };
    let mut c = Cli {
        o: SetupOpts {
            integrity: "crc32c".into(),
            ..SetupOpts::default()
        },
        ..Cli::default()
    };
    let read = spec.read(args, |name, val, _| {
        let o = &mut c.o;
        match name {
            "journal-size" => o.journal_size = Some(popt_num(name, &val)?),
            "interleave-sectors" => o.interleave_sectors = Some(popt_num(name, &val)?),
            "journal-watermark" => o.journal_watermark = Some(popt_num(name, &val)?),
            "journal-commit-time" => o.journal_commit_time = Some(popt_num(name, &val)?),
            "bitmap-sectors-per-bit" => o.sectors_per_bit = Some(popt_num(name, &val)?),
            "bitmap-flush-time" => o.bitmap_flush_time = Some(popt_num(name, &val)?),
            "tag-size" => o.tag_size = Some(popt_num(name, &val)?),
            "sector-size" => o.sector_size = Some(popt_num(name, &val)?),
            "buffer-sectors" => o.buffer_sectors = Some(popt_num(name, &val)?),
            "integrity" => o.integrity = setup::kernel_alg(&val),
            "integrity-key-file" => c.key_file = Some(val),
            "integrity-key-size" => c.key_size = Some(popt_num(name, &val)?),
            "journal-integrity" => o.journal_integrity = Some(setup::kernel_alg(&val)),
            "journal-integrity-key-file" => c.jkey_file = Some(val),
            "journal-integrity-key-size" => c.jkey_size = Some(popt_num(name, &val)?),
            "journal-crypt" => o.journal_crypt = Some(setup::kernel_cipher(&val)),
            "journal-crypt-key-file" => c.ckey_file = Some(val),
            "journal-crypt-key-size" => c.ckey_size = Some(popt_num(name, &val)?),
            "data-device" => c.o.data_device = Some(val),
            "integrity-no-journal" => o.mode = Some(Mode::Direct),
            "integrity-recovery-mode" => o.mode = Some(Mode::Recovery),
            "integrity-bitmap-mode" => o.mode = Some(Mode::Bitmap),
            "integrity-recalculate" => o.recalculate = true,
            "integrity-recalculate-reset" => o.recalculate_reset = true,
            "integrity-legacy-padding" => o.legacy_padding = true,
            "integrity-legacy-hmac" => o.legacy_hmac = true,
            "integrity-legacy-recalculate" => o.legacy_recalculate = true,
            "allow-discards" => o.allow_discards = true,
            "no-wipe" => c.no_wipe = true,
            "batch-mode" => c.batch = true,
            "verbose" => c.verbose = true,
            "debug" => c.verbose = true,
            "progress-frequency" => c.progress_frequency = popt_num(name, &val)?,
            "progress-json" => c.progress_json = true,
            "wipe" | "deferred" | "cancel-deferred" => {}
            "version" => {
                let _ = writeln!(out, "integritysetup 2.6.1");
                return Err(PoptStop::Exit(0));
            }
            "help" | "usage" => {
                let _ = writeln!(out, "Usage: {prog} [OPTION...] <action> <action-specific>");
                let _ = writeln!(out, "\n<action> is one of:\n\tformat <integrity_device> - format device\n\topen <integrity_device> <name> - open device as <name>\n\tclose <name> - close device (remove mapping)\n\tstatus <name> - show active device status\n\tdump <integrity_device> - show on-disk information");
                return Err(PoptStop::Exit(0));
            }
            _ => return Err(popt_unknown(name)),
        }
        Ok(())
    });
    let pos = match read {
        Ok(pos) => pos,
        Err(PoptStop::Usage(msg)) => return Err(usage_fail(err, prog, &msg)),
        Err(PoptStop::Exit(code)) => return Err(code),
    };
    if let Some(f) = c.key_file.clone() {
        let size = c
            .key_size
            .unwrap_or_else(|| default_key_size(&c.o.integrity));
        c.o.integrity_key = Some(read_key(err, &f, size)?);
    }
    if let Some(f) = c.jkey_file.clone() {
        let j = c.o.journal_integrity.clone().unwrap_or_default();
        let size = c.jkey_size.unwrap_or_else(|| default_key_size(&j));
        c.o.journal_integrity_key = Some(read_key(err, &f, size)?);
    }
    if c.ckey_file.is_some() != c.ckey_size.is_some() {
        return Err(usage_fail(
            err,
            prog,
            "Both journal encryption key file and key size options must be specified.",
        ));
    }
    if c.ckey_file.is_some() && c.o.journal_crypt.is_none() {
        return Err(usage_fail(
            err,
            prog,
            "Journal encryption algorithm must be specified if journal encryption key is used.",
        ));
    }
    if let (Some(f), Some(n)) = (c.ckey_file.clone(), c.ckey_size) {
        c.o.journal_crypt_key = Some(read_key(err, &f, n)?);
    }
    Ok((c, pos))
}

fn default_key_size(alg: &str) -> usize {
    match alg {
        "hmac(sha1)" => 20,
        "hmac(sha256)" => 32,
        "hmac(sha512)" => 64,
        _ => 0,
    }
}

fn connect(socket: &Path, err: &mut dyn Write) -> Result<Client, i32> {
    dmctl::connect(socket, err).ok_or(libc::EINVAL)
}

/// Run with explicit streams and control socket (tests call this directly).
pub fn run(
    out: &mut dyn Write,
    err: &mut dyn Write,
    socket: &Path,
    prog: &str,
    args: &[String],
) -> i32 {
    let (c, mut pos) = match parse(err, out, prog, args) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if pos.is_empty() {
        return usage_fail(err, prog, "Argument <action> missing.");
    }
    let action = pos.remove(0);
    let need = match action.as_str() {
        "format" | "close" | "status" | "dump" => 1,
        "open" => 2,
        _ => return usage_fail(err, prog, "Unknown action."),
    };
    if pos.len() < need {
        let desc = if need == 2 {
            "<integrity_device> <name>"
        } else if action == "format" || action == "dump" {
            "<integrity_device>"
        } else {
            "<name>"
        };
        return usage_fail(
            err,
            prog,
            &format!("{action}: requires {desc} as arguments"),
        );
    }
    let r = match action.as_str() {
        "format" => format(out, err, &c, &pos[0]),
        "dump" => dump(out, err, &pos[0]),
        "open" => open(err, socket, &c, &pos[0], &pos[1]),
        "close" => close(err, socket, &pos[0]),
        _ => status(out, err, socket, &pos[0]),
    };
    dmctl::finish(out, c.verbose, r.err().unwrap_or(0))
}

fn format(out: &mut dyn Write, err: &mut dyn Write, c: &Cli, dev: &str) -> Result<(), i32> {
    if !c.batch {
        let _ = write!(
            out,
            "\nWARNING!\n========\nThis will overwrite data on {dev} irrevocably.\n\nAre you sure? (Type 'yes' in capital letters): "
        );
        let _ = out.flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if line.trim_end() != "YES" {
            let _ = write!(err, "Operation aborted.\n\n");
            return Err(libc::EINVAL);
        }
    }
    let wipe = if c.no_wipe {
        setup::Wipe::None
    } else {
        setup::Wipe::Zeros
    };
    let out = std::cell::RefCell::new(out);
    let mut formatted = |sb: &udm_formats::integrity::Superblock| {
        let mut out = out.borrow_mut();
        if !c.batch {
            let _ = writeln!(
                out,
                "Formatted with tag size {}, internal integrity {}.",
                sb.integrity_tag_size, c.o.integrity
            );
            if !c.no_wipe {
                let _ = writeln!(out, "Wiping device to initialize integrity checksum.\nYou can interrupt this by pressing CTRL+c (rest of not wiped device will contain invalid checksum).");
            }
        }
        let _ = out.flush();
    };
    // A file is wiped through a loop device: the tool names its backing file.
    let shown = match std::fs::metadata(dev) {
        Ok(m) if m.is_file() => std::fs::canonicalize(dev)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| dev.to_string()),
        _ => dev.to_string(),
    };
    let mut prog = Progress::new(c.progress_frequency, c.batch, c.progress_json, &shown);
    let mut report = |size: u64, done: u64| {
        if let Some(t) = prog.report(size, done) {
            let mut out = out.borrow_mut();
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
        }
    };
    setup::format_at_with(
        &PathBuf::from(dev),
        0,
        &c.o,
        &wipe,
        &mut formatted,
        &mut report,
    )
    .map_err(|e| {
        let _ = writeln!(err, "Cannot format integrity for device {dev}.");
        let _ = writeln!(err, "{e}");
        libc::EINVAL
    })?;
    Ok(())
}

fn read_sb(err: &mut dyn Write, dev: &str) -> Result<udm_formats::integrity::Superblock, i32> {
    match setup::read_superblock_at(Path::new(dev)) {
        Ok(Some(sb)) => Ok(sb),
        Ok(None) => Err(libc::EINVAL),
        Err(()) => {
            let _ = writeln!(err, "Device {dev} does not exist or access denied.");
            Err(libc::EINVAL)
        }
    }
}

fn dump(out: &mut dyn Write, err: &mut dyn Write, dev: &str) -> Result<(), i32> {
    let sb = read_sb(err, dev)?;
    let _ = write!(out, "{}", setup::dump_text(dev, &sb));
    Ok(())
}

fn open(err: &mut dyn Write, socket: &Path, c: &Cli, dev: &str, name: &str) -> Result<(), i32> {
    let sb = read_sb(err, dev)?;
    // With `--data-device`, `dev` holds only the metadata.
    let (data, meta) = match &c.o.data_device {
        Some(d) => (dmctl::abs(d), Some(dmctl::abs(dev))),
        None => (dmctl::abs(dev), None),
    };
    let rest = setup::table_rest_meta(&c.o, Some(&sb), false, meta.as_deref());
    let line = Line {
        start: 0,
        len: sb.provided_data_sectors,
        ttype: "integrity".into(),
        params: format!("{data} 0 {rest}"),
    };
    let mut cl = connect(socket, err)?;
    match cl.call(Request::Create {
        name: name.into(),
        uuid: format!("CRYPT-INTEGRITY-{name}"),
    }) {
        Ok(_) => {}
        Err(e) if e.errno() == libc::EBUSY || e.errno() == libc::EEXIST => {
            let _ = writeln!(err, "Device {name} already exists.");
            return Err(libc::EEXIST);
        }
        Err(e) => return Err(dmctl::report(err, "create", name, &e)),
    }
    dmctl::load_and_resume(&mut cl, err, name, vec![line], false)
}

fn close(err: &mut dyn Write, socket: &Path, name: &str) -> Result<(), i32> {
    let mut cl = connect(socket, err)?;
    match cl.call(Request::Remove {
        dev: DevSel::Name(name.into()),
        deferred: false,
    }) {
        Ok(_) => Ok(()),
        Err(e) if e.errno() == libc::ENXIO => {
            let _ = writeln!(err, "Device {name} is not active.");
            Err(libc::ENODEV)
        }
        Err(e) if e.errno() == libc::EBUSY => {
            let _ = writeln!(err, "Device {name} is still in use.");
            Err(libc::EBUSY)
        }
        Err(e) => Err(dmctl::report(err, "remove", name, &e)),
    }
}

fn status(out: &mut dyn Write, err: &mut dyn Write, socket: &Path, arg: &str) -> Result<(), i32> {
    let name = arg.trim_start_matches("/dev/mapper/").to_string();
    let shown = if arg.contains('/') {
        arg.to_string()
    } else {
        format!("/dev/mapper/{name}")
    };
    let mut cl = connect(socket, err)?;
    let sel = DevSel::Name(name.clone());
    let info = match cl.call(Request::Info {
        dev: sel.clone(),
        inactive: false,
    }) {
        Ok(Reply::Info(i)) => i,
        _ => {
            let _ = writeln!(out, "{shown} is inactive.");
            return Err(libc::ENODEV);
        }
    };
    let busy = if info.open_count > 0 {
        " and is in use"
    } else {
        ""
    };
    let _ = writeln!(out, "{shown} is active{busy}.");
    let mut get = |table: bool| match cl.call(Request::Status {
        dev: sel.clone(),
        inactive: false,
        table,
        noflush: false,
    }) {
        Ok(Reply::Status { targets, .. }) => targets.into_iter().next(),
        _ => None,
    };
    let (Some(t), Some(st)) = (get(true), get(false)) else {
        return Ok(());
    };
    let Some(l) = (t.ttype == "integrity")
        .then(|| setup::parse_live(&t.params))
        .flatten()
    else {
        let _ = writeln!(out, "  type:    n/a");
        return Ok(());
    };
    let (device, _) = crate::luks_cli::shown_device(&l.params.dev);
    let failures = st
        .params
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .to_string();
    let _ = write!(
        out,
        "{}",
        setup::status_text(&l, &device, t.len, info.read_only, &failures)
    );
    Ok(())
}

/// Entry point: `udm integrity ARGS…` or a link named `integritysetup`.
pub fn main(prog: &str, args: &[String]) -> i32 {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let code = run(&mut out, &mut err, &udm_proto::default_socket(), prog, args);
    let _ = out.flush();
    code
}
