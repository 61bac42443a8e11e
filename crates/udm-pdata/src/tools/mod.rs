//! thin-provisioning-tools 0.9's commands over this crate. The thin tools (`thin_dump`,
//! `thin_check`, `thin_restore`, `thin_repair`, `thin_ls`, `thin_delta`, `thin_trim`,
//! `thin_metadata_size`, and udm's own `thin shrink`) run through [`run_thin`] with a
//! [`Console`]; the cache and era tools (`cache_check`, `cache_dump`, `cache_restore`,
//! `cache_repair`, `cache_metadata_size`, `cache_writeback`, `era_check`, `era_dump`,
//! `era_restore`, `era_invalidate`) through [`run`] with [`Streams`]. Option handling,
//! messages, XML, checks and exit codes are the real tools'; a binary only hands argv over
//! and prints what comes back.

pub mod cache_tools;
mod cache_writeback;
pub mod era_tools;
pub mod getopt;
pub mod opts;
mod thin_check;
mod thin_delta;
mod thin_dump;
mod thin_ls;
mod thin_shrink;
mod thin_size;
mod thin_trim;

use crate::io::{FileIo, MetaIo};
use crate::{PdataError, BLOCK_SIZE};
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;

/// The version the tools report (`-V`), that of the thin-provisioning-tools they mimic.
pub const VERSION: &str = "0.9.0";

/// The thin tools, by their thin-provisioning-tools names.
pub const THIN_TOOLS: &[&str] = &[
    "thin_dump",
    "thin_check",
    "thin_restore",
    "thin_metadata_size",
    "thin_ls",
    "thin_repair",
    "thin_delta",
    "thin_trim",
];

/// Where a tool prints: its standard output and standard error.
pub struct Console<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

/// Run thin tool `tool` (one of [`THIN_TOOLS`], or `thin_shrink` for `udm thin shrink`)
/// with its arguments; the exit code.
pub fn run_thin(tool: &str, args: &[String], con: &mut Console<'_>) -> i32 {
    let rc = match tool {
        "thin_dump" => thin_dump::dump(args, con),
        "thin_check" => thin_check::main(args, con),
        "thin_restore" => thin_dump::restore(args, con),
        "thin_repair" => thin_dump::repair(args, con),
        "thin_metadata_size" => thin_size::main(args, con),
        "thin_ls" => thin_ls::main(args, con),
        "thin_delta" => thin_delta::main(args, con),
        "thin_trim" => thin_trim::main(args, con),
        "thin_shrink" => thin_shrink::main(args, con),
        _ => 1,
    };
    let _ = con.out.flush();
    let _ = con.err.flush();
    rc
}

/// Open a metadata device or file for the tools.
pub fn open_io(path: &str, write: bool) -> std::io::Result<Arc<dyn MetaIo>> {
    let f = OpenOptions::new().read(true).write(write).open(path)?;
    Ok(Arc::new(FileIo::new(f)?))
}

/// The cache and era commands, by name.
pub const TOOLS: &[&str] = &[
    "cache_check",
    "cache_dump",
    "cache_restore",
    "cache_repair",
    "cache_metadata_size",
    "cache_writeback",
    "era_check",
    "era_dump",
    "era_restore",
    "era_invalidate",
];

/// Run `tool` with `args` (without the program name); `prog` is the name it was invoked as
/// (getopt's messages start with it). Output goes to `out` and `err`.
pub fn run(
    tool: &str,
    prog: &str,
    args: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut io = Streams {
        out,
        err,
        prog: prog.to_string(),
    };
    match tool {
        "cache_check" => cache_tools::check(args, &mut io),
        "cache_dump" => cache_tools::dump(args, &mut io),
        "cache_restore" => cache_tools::restore(args, &mut io),
        "cache_repair" => cache_tools::repair(args, &mut io),
        "cache_metadata_size" => cache_tools::metadata_size(args, &mut io),
        "cache_writeback" => cache_tools::writeback(args, &mut io),
        "era_check" => era_tools::check(args, &mut io),
        "era_dump" => era_tools::dump(args, &mut io),
        "era_restore" => era_tools::restore(args, &mut io),
        "era_invalidate" => era_tools::invalidate(args, &mut io),
        _ => {
            let _ = writeln!(io.err, "Unknown command '{tool}'");
            1
        }
    }
}

/// A command's stdout and stderr.
pub struct Streams<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// argv[0] as invoked.
    pub prog: String,
}

impl Streams<'_> {
    /// A line on stderr.
    pub fn e(&mut self, line: &str) {
        let _ = writeln!(self.err, "{line}");
    }
    /// Text on stdout.
    pub fn o(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
    }
}

/// The long options of a command, built tersely.
pub(crate) fn long(opts: &[(&'static str, bool, getopt::Key)]) -> Vec<getopt::LongOpt> {
    opts.iter()
        .map(|&(name, arg, key)| getopt::LongOpt {
            name,
            has_arg: if arg {
                getopt::HasArg::Required
            } else {
                getopt::HasArg::No
            },
            key,
        })
        .collect()
}

/// `open_bm` of the real tools, read-only: the metadata file or block device at `path`.
pub(crate) fn open_meta(path: &str, write: bool) -> Result<Arc<dyn MetaIo>, String> {
    let md = std::fs::metadata(path).map_err(|_| "Couldn't stat path".to_string())?;
    use std::os::unix::fs::FileTypeExt;
    if !md.is_file() && !md.file_type().is_block_device() {
        return Err("bad path".into());
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    let io = FileIo::new(f).map_err(|e| format!("{path}: {e}"))?;
    Ok(Arc::new(io))
}

/// The length of a file or block device (0 when it cannot be had).
pub(crate) fn file_len(path: &str) -> u64 {
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)))
        .unwrap_or(0)
}

/// The checkers' path checks (`guarded_stat` and the file type).
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let md = std::fs::metadata(path).map_err(|e| {
        let s = e.to_string();
        let s = s.split(" (os error").next().unwrap_or(&s).to_string();
        format!("{path}: {s}")
    })?;
    if !md.is_file() && !md.file_type().is_block_device() {
        return Err(format!("{path}: Not a block device or regular file"));
    }
    Ok(())
}

/// The cache and era checkers' common start: the input operand (or the usage), its path
/// checks, the size check and the open; the nested printer and the metadata, or the exit code.
pub(crate) fn open_for_check<'a, 'b>(
    path: Option<&String>,
    io: &'a mut Streams<'b>,
    quiet: bool,
    usage: &str,
) -> Result<(Nested<'a, 'b>, Arc<dyn MetaIo>), i32> {
    let Some(path) = path else {
        io.e("No input file provided.");
        let _ = io.err.write_all(usage.as_bytes());
        return Err(1);
    };
    if let Err(m) = check_path(path) {
        if !quiet {
            io.e(&m);
        }
        return Err(1);
    }
    let mut n = Nested {
        io,
        quiet,
        depth: 0,
    };
    if file_len(path) < BLOCK_SIZE as u64 {
        n.line("Metadata device/file too small.  Is this binary metadata?");
        return Err(1);
    }
    match open_meta(path, false) {
        Ok(m) => Ok((n, m)),
        Err(m) => {
            n.line(&m);
            Err(1)
        }
    }
}

/// `check_output_file_requirements`: the restore target must exist and be big enough.
pub(crate) fn check_output(path: &str, io: &mut Streams<'_>) -> bool {
    let explain = "The output file should either be a block device,\n\
                   or an existing file.  The file needs to be large\n\
                   enough to hold the metadata.";
    let md = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => {
            let _ = write!(io.err, "Output file does not exist.\n\n{explain}\n");
            return false;
        }
    };
    if md.is_file() {
        let why = if md.len() == 0 {
            "Zero size output file."
        } else if md.len() < 32 * 1024 {
            "Output file too small."
        } else {
            return true;
        };
        let _ = write!(io.err, "{why}\n\n{explain}\n");
        return false;
    }
    true
}

/// The message a superblock read failure gives in the real tools.
pub(crate) fn sb_error(e: &PdataError) -> String {
    match e {
        PdataError::Checksum { .. } => "bad checksum in superblock".into(),
        other => other.to_string(),
    }
}

/// Whether block 0 looks like XML (`check_for_xml`).
pub(crate) fn looks_like_xml(io: &dyn MetaIo) -> bool {
    let mut b = [0u8; BLOCK_SIZE];
    if io.read_block(0, &mut b).is_err() {
        return false;
    }
    let t = String::from_utf8_lossy(&b);
    t.trim_start().starts_with("<superblock") || t.trim_start().starts_with("<?xml")
}

/// `nested_output`: lines indented two spaces per nesting level, off when quiet.
pub(crate) struct Nested<'a, 'b> {
    pub io: &'a mut Streams<'b>,
    pub quiet: bool,
    pub depth: usize,
}

impl Nested<'_, '_> {
    pub fn line(&mut self, s: &str) {
        if !self.quiet {
            let pad = " ".repeat(self.depth * 2);
            let _ = writeln!(self.io.err, "{pad}{s}");
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (hints in the cache XML).
pub fn base64_encode(data: &[u8]) -> String {
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decode base64; `None` when malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for q in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for &c in q {
            let v = if c == b'=' {
                pad += 1;
                0
            } else {
                if pad > 0 {
                    return None;
                }
                B64.iter().position(|&b| b == c)? as u32
            };
            n = n << 6 | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad.min(2)]);
    }
    Some(out)
}

/// The XML attributes of one tag body (`name a="1" b="x"`), entities decoded.
pub(crate) fn attrs(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq]
            .split_whitespace()
            .last()
            .unwrap_or("")
            .to_string();
        let after = rest[eq + 1..].trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(end) = after[1..].find(q) else { break };
        let v = after[1..1 + end]
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        out.push((name, v));
        rest = &after[end + 2..];
    }
    out
}

/// One XML tag: its name, whether it closes, its attributes.
pub(crate) type Tag = (String, bool, Vec<(String, String)>);

/// The tags of an XML text, comments and declarations skipped.
pub(crate) fn tags(text: &str) -> Result<Vec<Tag>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        let gt = rest[lt..].find('>').ok_or("Parse error: unclosed token")? + lt;
        let body = &rest[lt + 1..gt];
        rest = &rest[gt + 1..];
        if body.starts_with('?') || body.starts_with('!') {
            continue;
        }
        let closing = body.starts_with('/');
        let name = body
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("")
            .to_string();
        out.push((name, closing, attrs(body)));
    }
    Ok(out)
}

/// A required attribute, parsed.
pub(crate) fn attr<T: std::str::FromStr>(a: &[(String, String)], name: &str) -> Result<T, String> {
    let v = a
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| format!("could not find attribute: {name}"))?;
    v.parse()
        .map_err(|_| format!("bad attribute value: {name}=\"{v}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_encode(&[0, 0, 0, 0]), "AAAAAA==");
        assert_eq!(base64_encode(&[1, 0, 0, 0]), "AQAAAA==");
        assert_eq!(base64_encode(b"abc"), "YWJj");
        for n in 0..10u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&v)).unwrap(), v);
        }
        assert!(base64_decode("A=AA").is_none());
    }
}
