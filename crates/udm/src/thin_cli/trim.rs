//! `thin_trim --metadata-dev META --data-dev DATA`: discard the data blocks no device
//! maps (BLKDISCARD on a block device, as thin_trim; udm also punches holes in a regular
//! file, which thin_trim refuses). Unlike thin_trim 0.9, the run after the last mapped
//! block starts after it (0.9 discards that mapped block too).

use super::open_io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use udm_pdata::thin_trim::free_runs;
use udm_pdata::PdataError;

const USAGE: &str =
    "Usage: thin_trim [options] --metadata-dev {device|file} --data-dev {device|file}
Options:
  {-h|--help}
  {-V|--version}
";

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
pub fn main(args: &[String]) -> i32 {
    let (mut meta, mut data) = (None, None);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return 0;
            }
            "-V" | "--version" => {
                println!("0.9.0");
                return 0;
            }
            "--metadata-dev" => {
                i += 1;
                meta = args.get(i).cloned();
            }
            "--data-dev" => {
                i += 1;
                data = args.get(i).cloned();
            }
            _ => {
                eprint!("{USAGE}");
                return 1;
            }
        }
        i += 1;
    }
    let (Some(meta), Some(data)) = (meta, data) else {
        eprint!("{USAGE}");
        return 1;
    };
    let r = open_io(&meta, false)
        .map_err(PdataError::from_io)
        .and_then(free_runs);
    let (bs, nr, runs) = match r {
        Ok(p) => (p.data_block_size, p.nr_blocks, p.runs),
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let f = match std::fs::OpenOptions::new().write(true).open(&data) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{data}: {e}");
            return 1;
        }
    };
    let block_dev = f.metadata().is_ok_and(|m| m.file_type().is_block_device());
    let bytes = u64::from(bs) * 512;
    match size_of(&f, block_dev) {
        Ok(s) if s == nr * bytes => {}
        Ok(_) => {
            eprintln!("Data device is not the expected size");
            return 1;
        }
        Err(e) => {
            eprintln!("{data}: {e}");
            return 1;
        }
    }
    for (b, e) in runs {
        eprintln!("emitting discard for blocks ({b}, {e}]");
        if let Err(err) = discard(&f, block_dev, b * bytes, (e - b) * bytes) {
            eprintln!("{data}: discard failed: {err}");
            return 1;
        }
    }
    0
}
