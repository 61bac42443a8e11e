//! `thin_trim --metadata-dev META --data-dev DATA`: discard the data blocks no device
//! maps (BLKDISCARD on a block device, as thin_trim; udm also punches holes in a regular
//! file, which thin_trim refuses). Unlike thin_trim 0.9, the run after the last mapped
//! block starts after it (0.9 discards that mapped block too).

use super::opts::{parse, Arg, Item, Spec, HELP, VERSION};
use super::{open_io, Console};
use crate::thin_trim::free_runs;
use crate::PdataError;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;

const USAGE: &str =
    "Usage: thin_trim [options] --metadata-dev {device|file} --data-dev {device|file}
Options:
  {-h|--help}
  {-V|--version}
";

const SPECS: &[Spec] = &[
    HELP,
    VERSION,
    Spec::new("meta", &["--metadata-dev"], Arg::Value),
    Spec::new("data", &["--data-dev"], Arg::Value),
];

const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

fn discard(f: &std::fs::File, block_dev: bool, off: u64, len: u64) -> std::io::Result<()> {
    let fd = f.as_raw_fd();
    let r = if block_dev {
        let range = [off, len];
        // SAFETY: BLKDISCARD reads two u64 from the pointer, valid for the call.
        unsafe { libc::ioctl(fd, BLKDISCARD, range.as_ptr()) }
    } else {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate takes plain integers; fd is valid.
        unsafe { libc::fallocate(fd, mode, off as libc::off_t, len as libc::off_t) }
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn size_of(f: &std::fs::File, block_dev: bool) -> std::io::Result<u64> {
    if !block_dev {
        return Ok(f.metadata()?.len());
    }
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, valid for the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

/// `thin_trim [options]`.
pub fn main(args: &[String], con: &mut Console<'_>) -> i32 {
    let (mut meta, mut data) = (None, None);
    for item in parse(args, SPECS, false) {
        match item {
            Item::Opt { id: "help", .. } => return con.help(USAGE),
            Item::Opt { id: "version", .. } => return con.version(),
            Item::Opt {
                id: "meta", value, ..
            } => meta = value,
            Item::Opt {
                id: "data", value, ..
            } => data = value,
            _ => return con.usage_error(None, USAGE),
        }
    }
    let (Some(meta), Some(data)) = (meta, data) else {
        return con.usage_error(None, USAGE);
    };
    let r = open_io(&meta, false)
        .map_err(PdataError::from_io)
        .and_then(free_runs);
    let (bs, nr, runs) = match r {
        Ok(p) => (p.data_block_size, p.nr_blocks, p.runs),
        Err(e) => return con.fail(e),
    };
    let f = match std::fs::OpenOptions::new().write(true).open(&data) {
        Ok(f) => f,
        Err(e) => return con.fail(format!("{data}: {e}")),
    };
    let block_dev = f.metadata().is_ok_and(|m| m.file_type().is_block_device());
    let bytes = u64::from(bs) * 512;
    match size_of(&f, block_dev) {
        Ok(s) if s == nr * bytes => {}
        Ok(_) => return con.fail("Data device is not the expected size"),
        Err(e) => return con.fail(format!("{data}: {e}")),
    }
    for (b, e) in runs {
        let _ = writeln!(con.err, "emitting discard for blocks ({b}, {e}]");
        if let Err(err) = discard(&f, block_dev, b * bytes, (e - b) * bytes) {
            return con.fail(format!("{data}: discard failed: {err}"));
        }
    }
    0
}
