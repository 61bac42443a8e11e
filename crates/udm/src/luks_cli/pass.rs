//! Passphrases and key files: a terminal prompt without echo, one line from a non-terminal
//! stdin, or a key file (`-` = all of stdin) with `--keyfile-offset` / `--keyfile-size`.
//! Never from argv; every buffer is zeroized.

use super::{fail, Failed, Io};
use std::io::Read;
use udm_formats::luks::Zeroizing;

/// The largest key file cryptsetup reads (8192 KiB).
const MAX_KEYFILE: usize = 8192 * 1024;
/// The longest interactive passphrase.
const MAX_PASS: usize = 512;

/// Turns terminal echo off while alive.
struct NoEcho(Option<libc::termios>);

impl NoEcho {
    fn new() -> NoEcho {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0 or fails.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a termios for the duration of the call.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return NoEcho(None);
        }
        let mut quiet = t;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: valid pointer to a termios for the duration of the call.
        unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &quiet) };
        NoEcho(Some(t))
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the settings read in `new`; valid pointer for the call.
            unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, t) };
        }
    }
}

/// One line from `input` (without the newline), at most `max` bytes.
fn read_line(input: &mut dyn Read, max: usize) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut line = Zeroizing::new(Vec::new());
    let mut b = [0u8; 1];
    while line.len() < max {
        match input.read(&mut b)? {
            0 => break,
            _ if b[0] == b'\n' => break,
            _ => line.push(b[0]),
        }
    }
    Ok(line)
}

/// Read a key file (or all of stdin for `-`), honouring offset and size limits.
pub fn read_key_file(
    io: &mut Io<'_>,
    path: &str,
    offset: u64,
    size: Option<usize>,
) -> Result<Zeroizing<Vec<u8>>, Failed> {
    let limit = size.unwrap_or(MAX_KEYFILE);
    let mut all = Zeroizing::new(Vec::new());
    let r = if path == "-" {
        io.input
            .take(offset + limit as u64)
            .read_to_end(&mut all)
            .map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|f| {
            f.take(offset + limit as u64)
                .read_to_end(&mut all)
                .map(|_| ())
        })
    };
    if r.is_err() {
        return Err(fail(io, libc::EINVAL, "Failed to open key file."));
    }
    let start = (offset as usize).min(all.len());
    let key = Zeroizing::new(all[start..].to_vec());
    if size.is_some_and(|s| key.len() < s) {
        return Err(fail(
            io,
            libc::EINVAL,
            "Cannot read requested amount of data.",
        ));
    }
    Ok(key)
}

/// A passphrase: from the key file if given, else the terminal (prompting, no echo; with
/// `verify` asking twice), else one line of stdin.
pub fn get(
    io: &mut Io<'_>,
    key_file: Option<&str>,
    offset: u64,
    size: Option<usize>,
    prompt: &str,
    verify: bool,
) -> Result<Zeroizing<Vec<u8>>, Failed> {
    if let Some(kf) = key_file {
        return read_key_file(io, kf, offset, size);
    }
    if !io.tty {
        let line = read_line(io.input, MAX_PASS)
            .map_err(|_| fail(io, libc::EINVAL, "Error reading passphrase."))?;
        return Ok(line);
    }
    let ask = |io: &mut Io<'_>, p: &str| -> Result<Zeroizing<Vec<u8>>, Failed> {
        let _ = write!(io.err, "{p}");
        let _ = io.err.flush();
        let guard = NoEcho::new();
        let line = read_line(io.input, MAX_PASS);
        drop(guard);
        let _ = writeln!(io.err);
        line.map_err(|_| fail(io, libc::EINVAL, "Error reading passphrase from terminal."))
    };
    let pass = ask(io, prompt)?;
    if verify {
        let again = ask(io, "Verify passphrase: ")?;
        if *again != *pass {
            return Err(fail(io, libc::EPERM, "Passphrases do not match."));
        }
    }
    Ok(pass)
}
