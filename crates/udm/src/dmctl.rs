//! Shared by the cryptsetup-family tools (`udm luks`, `udm verity`): connecting to the daemon,
//! reporting a failed request in libdm's words, absolute paths for table arguments (the daemon
//! resolves them, not the caller's directory), and cryptsetup's exit codes and `-v` summary.

use std::io::Write;
use std::path::Path;
pub use udm_proto::libdm::{connect, load_and_resume, report};

/// The absolute form of a path argument (unchanged if it does not exist), escaped as one
/// word of a table line (`udm_core::escape_arg`).
pub fn abs(path: &str) -> String {
    let p = std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string());
    udm_core::escape_arg(&p).into_owned()
}

/// cryptsetup's exit code for an errno (0 ok, 1 bad parameters, 2 no permission or bad
/// passphrase, 3 out of memory, 4 wrong device, 5 busy or exists).
pub fn exit_code(errno: i32) -> i32 {
    match errno {
        0 => 0,
        libc::EEXIST | libc::EBUSY => 5,
        libc::ENOTBLK | libc::ENODEV => 4,
        libc::ENOMEM => 3,
        libc::EPERM => 2,
        _ => 1,
    }
}

/// The exit code for an action's result, with cryptsetup's `-v` summary line on `out`.
pub fn finish(out: &mut dyn Write, verbose: bool, errno: i32) -> i32 {
    let code = exit_code(errno);
    if verbose {
        if code == 0 {
            let _ = writeln!(out, "Command successful.");
        } else {
            let why = match code {
                1 => "wrong or missing parameters",
                2 => "no permission or bad passphrase",
                3 => "out of memory",
                4 => "wrong device or file specified",
                5 => "device already exists or device is busy",
                _ => "unknown error",
            };
            let _ = writeln!(out, "Command failed with code -{code} ({why}).");
        }
    }
    code
}

/// A table line's params with every relative path that names an existing file or block
/// device (from the caller's working directory) made absolute, so the daemon, whose working
/// directory differs, opens the same file. Words are split and re-escaped as the kernel
/// splits them (`udm_core::split_args`/`escape_arg`); params without such a word come back
/// unchanged, byte for byte.
pub fn absolute_words(params: &str) -> String {
    match std::env::current_dir() {
        Ok(cwd) => absolute_words_in(params, &cwd),
        Err(_) => params.to_string(),
    }
}

/// `absolute_words` with relative paths taken from `base`.
fn absolute_words_in(params: &str, base: &Path) -> String {
    let words = udm_core::split_args(params);
    let mut changed = false;
    let out: Vec<String> = words
        .into_iter()
        .map(|w| match relative_device(&w, base) {
            Some(abs) => {
                changed = true;
                abs
            }
            None => w,
        })
        .collect();
    if !changed {
        return params.to_string();
    }
    let escaped: Vec<_> = out.iter().map(|w| udm_core::escape_arg(w)).collect();
    escaped.join(" ")
}

/// The absolute path of `word` when it is a relative path to an existing regular file or
/// block device; numbers, `major:minor`, keys (`:32:logon:…`) and options never are.
fn relative_device(word: &str, base: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    if word.is_empty()
        || word.starts_with('/')
        || word.starts_with(':')
        || word.contains("://")
        || word.chars().all(|c| c.is_ascii_digit() || c == ':')
    {
        return None;
    }
    let path = base.join(word);
    let m = std::fs::metadata(&path).ok()?;
    if !(m.is_file() || m.file_type().is_block_device()) {
        return None;
    }
    let abs = std::fs::canonicalize(path).ok()?;
    Some(abs.to_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_become_absolute_and_stay_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let spaced = dir.path().join("an image");
        std::fs::write(&spaced, b"x").unwrap();
        std::fs::write(dir.path().join("0"), b"x").unwrap();
        let got = absolute_words_in("an\\ image 0", dir.path());
        let untouched = absolute_words_in("2  8 253:0 0 missing.img 0", dir.path());
        let abs = std::fs::canonicalize(&spaced).unwrap();
        let want = format!("{} 0", udm_core::escape_arg(abs.to_str().unwrap()));
        assert_eq!(got, want);
        assert_eq!(udm_core::split_args(&got)[0], abs.to_str().unwrap());
        assert_eq!(untouched, "2  8 253:0 0 missing.img 0");
    }
}
