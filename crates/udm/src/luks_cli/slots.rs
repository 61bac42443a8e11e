//! Keyslot commands: luksAddKey, luksRemoveKey, luksChangeKey, luksKillSlot, with cryptsetup
//! 2.6's prompts, messages and exit codes. The keyslot changes themselves (ordered so that a
//! failed command leaves the old keyslots usable) are `udm_formats::luks::edit`.

use super::format::kdf_params;
use super::hdr::{self, kerr, Dev, Header, Progress};
use super::{fail, pass, Failed, Io, Opts};
use udm_formats::luks::edit::{self, active_count, slot_active, slot_max};
use udm_formats::luks::{Writes, Zeroizing};

fn verbose(io: &mut Io<'_>, o: &Opts, msg: impl std::fmt::Display) {
    if o.verbose {
        let _ = writeln!(io.out, "{msg}");
    }
}

/// cryptsetup's `yesDialog`: asks only on a terminal without `--batch-mode`.
fn yes_dialog(io: &mut Io<'_>, o: &Opts, msg: &str, fail_msg: &str) -> Result<(), Failed> {
    if !io.tty || o.batch {
        return Ok(());
    }
    let _ = write!(
        io.out,
        "\nWARNING!\n========\n{msg}\n\nAre you sure? (Type 'yes' in capital letters): "
    );
    let _ = io.out.flush();
    let mut line = Zeroizing::new(Vec::new());
    let mut b = [0u8; 1];
    while let Ok(1) = io.input.read(&mut b) {
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    if &line[..] != b"YES" {
        return Err(fail(io, libc::EPERM, fail_msg));
    }
    Ok(())
}

/// The device opened read-write and its header (`--type` restricts the version).
fn load(io: &mut Io<'_>, o: &Opts, path: &str) -> Result<(Dev, Header), Failed> {
    let dev = hdr::open_dev(io, path, true)?;
    let h = hdr::load(io, &dev, hdr::wanted(o))?;
    Ok((dev, h))
}

/// The passphrase of an existing keyslot (`--key-file` or prompt).
fn old_pass(io: &mut Io<'_>, o: &Opts, prompt: &str) -> Result<Zeroizing<Vec<u8>>, Failed> {
    pass::get(
        io,
        o.key_file.as_deref(),
        o.keyfile_offset,
        o.keyfile_size,
        prompt,
        false,
    )
}

/// The new passphrase: the `<new key file>` argument, or a prompt asked twice.
fn new_pass(
    io: &mut Io<'_>,
    o: &Opts,
    file: Option<&String>,
    prompt: &str,
) -> Result<Zeroizing<Vec<u8>>, Failed> {
    match file {
        Some(f) => pass::read_key_file(io, f, o.new_keyfile_offset, o.new_keyfile_size),
        None => pass::get(io, None, 0, None, prompt, true),
    }
}

fn apply(io: &mut Io<'_>, dev: &Dev, w: Writes) -> Result<(), Failed> {
    for (off, b) in &w {
        hdr::write_all(io, dev, *off, b)?;
    }
    Ok(())
}

/// `luksAddKey <device> [<new key file>]`.
pub fn add_key(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    // cryptsetup 2.6: --new-key-slot names the new slot and --key-slot the one to unlock;
    // --key-slot alone names the new slot.
    let (want, from) = match o.new_key_slot {
        Some(n) => (Some(n), o.key_slot),
        None => (o.key_slot, None),
    };
    if o.new_key_slot.is_none() && o.key_slot.is_some() {
        let _ = writeln!(
            io.out,
            "WARNING: The --key-slot parameter is used for new keyslot number."
        );
    }
    let (dev, h) = load(io, o, &pos[0])?;
    let pw = old_pass(io, o, "Enter any existing passphrase: ")?;
    if from.is_some_and(|f| !slot_active(&h, f)) {
        // cryptsetup fails here without a message.
        return Err(Failed(libc::EINVAL));
    }
    let (via, vk) = hdr::unlock(io, &dev, &h, &pw, from)?;
    drop(pw);
    verbose(io, o, format!("Key slot {via} unlocked."));
    let new = edit::pick_free(&h, want).map_err(|e| kerr(io, e))?;
    let npw = new_pass(io, o, pos.get(1), "Enter new passphrase for key slot: ")?;
    let writes = edit::add_key(h, via, new, &vk, &npw, &kdf_params(o), &Progress)
        .map_err(|e| kerr(io, e))?;
    apply(io, &dev, writes)?;
    verbose(io, o, format!("Key slot {new} created."));
    Ok(())
}

/// Destroy keyslot `s` of a loaded header: header first, then the area wipe.
fn destroy(io: &mut Io<'_>, dev: &Dev, h: Header, s: u32) -> Result<(), Failed> {
    let writes = edit::destroy(h, s).map_err(|e| kerr(io, e))?;
    apply(io, dev, writes)
}

/// `luksRemoveKey <device> [<key file>]`.
pub fn remove_key(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let (dev, h) = load(io, o, &pos[0])?;
    let kf = pos.get(1).or(o.key_file.as_ref());
    let pw = pass::get(
        io,
        kf.map(String::as_str),
        o.keyfile_offset,
        o.keyfile_size,
        "Enter passphrase to be deleted: ",
        false,
    )?;
    let (s, _vk) = hdr::unlock(io, &dev, &h, &pw, None)?;
    drop(pw);
    verbose(io, o, format!("Key slot {s} selected for deletion."));
    if active_count(&h) == 1 {
        yes_dialog(
            io,
            o,
            "This is the last keyslot. Device will become unusable after purging this key.",
            "Operation aborted, the keyslot was NOT wiped.",
        )?;
    }
    destroy(io, &dev, h, s)?;
    verbose(io, o, format!("Key slot {s} removed."));
    Ok(())
}

/// C's `atoi`: optional sign and leading digits, 0 when there are none.
fn atoi(a: &str) -> i64 {
    let t = a.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = t
        .bytes()
        .take_while(u8::is_ascii_digit)
        .take(10)
        .fold(0i64, |n, d| n * 10 + (d - b'0') as i64);
    if neg {
        -n
    } else {
        n
    }
}

/// `luksKillSlot <device> <key slot>`.
pub fn kill_slot(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let (dev, h) = load(io, o, &pos[0])?;
    let max = slot_max(&h);
    // cryptsetup reads the number with atoi(): junk is slot 0, a bad number fails silently.
    let s = atoi(&pos[1]);
    if s < 0 || s >= max as i64 {
        return Err(Failed(libc::EINVAL));
    }
    let s = s as u32;
    if !slot_active(&h, s) {
        return Err(fail(
            io,
            libc::EINVAL,
            format!("Keyslot {s} is not active."),
        ));
    }
    verbose(io, o, format!("Keyslot {s} is selected for deletion."));
    let last = active_count(&h) == 1;
    if !o.batch || o.key_file.is_some() || !io.tty {
        if last && o.key_file.is_none() {
            yes_dialog(
                io,
                o,
                "This is the last keyslot. Device will become unusable after purging this key.",
                "Operation aborted, the keyslot was NOT wiped.",
            )?;
        }
        let pw = old_pass(io, o, "Enter any remaining passphrase: ")?;
        let from_stdin = o.key_file.as_deref().is_none_or(|f| f == "-");
        // cryptsetup ignores a failed read of stdin here (nothing to read: no check).
        if !(pw.is_empty() && from_stdin) {
            let ok = if last {
                hdr::unlock(io, &dev, &h, &pw, Some(s)).is_ok()
            } else {
                (0..max)
                    .filter(|&x| x != s && slot_active(&h, x))
                    .any(|x| h.unlock(&dev, &pw, Some(x), &Progress).is_ok())
            };
            if !ok {
                if last {
                    return Err(Failed(libc::EPERM));
                }
                return Err(fail(
                    io,
                    libc::EPERM,
                    "No key available with this passphrase.",
                ));
            }
        }
    }
    destroy(io, &dev, h, s)?;
    verbose(io, o, format!("Key slot {s} removed."));
    Ok(())
}

/// `luksChangeKey <device> [<new key file>]`: LUKS1 moves the key to a free slot when there
/// is one (else rewrites it in place); LUKS2 keeps the keyslot id with a new area.
pub fn change_key(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let (dev, h) = load(io, o, &pos[0])?;
    if o.key_slot.is_some_and(|s| s >= slot_max(&h)) {
        return Err(fail(io, libc::EINVAL, "Key slot is invalid."));
    }
    let pw = old_pass(io, o, "Enter passphrase to be changed: ")?;
    let (old, vk) = hdr::unlock(io, &dev, &h, &pw, o.key_slot)?;
    drop(pw);
    verbose(io, o, format!("Key slot {old} unlocked."));
    let npw = new_pass(io, o, pos.get(1), "Enter new passphrase: ")?;
    let (new, writes) =
        edit::change_key(h, old, &vk, &npw, &kdf_params(o), &Progress).map_err(|e| kerr(io, e))?;
    apply(io, &dev, writes)?;
    verbose(io, o, format!("Key slot {new} created."));
    Ok(())
}
