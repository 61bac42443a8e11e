//! `udm luks …` and `cryptsetup`: LUKS1/LUKS2 and plain dm-crypt volumes with cryptsetup
//! 2.6's commands, options, messages and exit codes — offline header work on files and block
//! devices (luksFormat, luksDump, isLuks, luksUUID, keyslots, header backup) and activation
//! through the udm daemon (open, close, status, resize).

mod dm;
mod dump;
mod format;
mod hdr;
mod integrity;
mod pass;
mod progress;
mod slots;
pub use dm::shown_device;

use crate::dmctl;

use crate::optparse::{popt_num, popt_unknown, PoptSpec, PoptStop};
use std::io::{Read, Write};
use std::path::PathBuf;

/// Where a run reads and writes and which daemon it talks to.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// Passphrases and `--key-file -` come from here.
    pub input: &'a mut dyn Read,
    /// True when `input` is a terminal (prompt, no echo).
    pub tty: bool,
    pub socket: PathBuf,
}

/// A failed action: the errno libcryptsetup would return (messages already printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed(pub i32);

/// Print `msg` and fail with `errno`.
pub fn fail(io: &mut Io<'_>, errno: i32, msg: impl std::fmt::Display) -> Failed {
    let _ = writeln!(io.err, "{msg}");
    Failed(errno)
}

/// Parsed options (cryptsetup's popt table, the part udm implements).
#[derive(Debug, Default, Clone)]
pub struct Opts {
    pub ty: Option<String>,
    /// Put a LUKS2 volume key into the table, not into the key store.
    pub disable_keyring: bool,
    pub key_file: Option<String>,
    pub keyfile_size: Option<usize>,
    pub keyfile_offset: u64,
    pub new_keyfile_size: Option<usize>,
    pub new_keyfile_offset: u64,
    pub new_key_slot: Option<u32>,
    pub readonly: bool,
    pub test_passphrase: bool,
    pub allow_discards: bool,
    pub cipher: Option<String>,
    pub key_size: Option<u32>,
    pub hash: Option<String>,
    pub pbkdf: Option<String>,
    pub pbkdf_memory: Option<u32>,
    pub pbkdf_parallel: Option<u32>,
    pub iter_time: Option<u64>,
    pub pbkdf_force_iterations: Option<u32>,
    pub sector_size: Option<u32>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    pub subsystem: Option<String>,
    pub key_slot: Option<u32>,
    pub batch: bool,
    pub verbose: bool,
    pub dump_volume_key: bool,
    pub volume_key_file: Option<String>,
    pub header_backup_file: Option<String>,
    pub offset: Option<u64>,
    pub skip: Option<u64>,
    pub size: Option<u64>,
    pub iv_large_sectors: bool,
    pub perf: Vec<String>,
    /// `--integrity` (`hmac-sha256`, `aead`, `poly1305`) for an authenticated LUKS2 volume.
    pub integrity: Option<String>,
    /// `--integrity-no-wipe`: leave the tags of a new authenticated volume unwritten.
    pub integrity_no_wipe: bool,
}

const USAGE: &str = "[OPTION...] <action> <action-specific>";

/// The options udm implements, in cryptsetup's `--help` layout.
const OPTIONS: &str = "
Help options:
  -?, --help                           Show this help message
      --usage                          Display brief usage
  -V, --version                        Print package version

Options:
  -M, --type=STRING                    Type of device metadata: luks, luks1, luks2, plain
  -c, --cipher=STRING                  The cipher used to encrypt the disk (see /proc/crypto)
  -h, --hash=STRING                    The hash used to create the encryption key from the
                                       passphrase
  -s, --key-size=BITS                  The size of the encryption key
  -d, --key-file=STRING                Read the key from a file
  -l, --keyfile-size=bytes             Limits the read from keyfile
      --keyfile-offset=bytes           Number of bytes to skip in keyfile
      --new-keyfile-size=bytes         Limits the read from newly added keyfile
      --new-keyfile-offset=bytes       Number of bytes to skip in newly added keyfile
      --new-key-slot=INT               Slot number for new key (default is first free)
  -S, --key-slot=INT                   Slot number for new key (default is first free)
      --volume-key-file=STRING         Use the volume key from (or, with luksDump, save it
                                       to) a file
      --dump-volume-key                Dump volume key instead of keyslots info
      --header-backup-file=STRING      File with LUKS header and keyslots backup
  -o, --offset=SECTORS                 The start offset in the backend device
  -p, --skip=SECTORS                   How many sectors of the encrypted data to skip
  -b, --size=SECTORS                   The size of the device
      --sector-size=INT                Encryption sector size (default: 512 bytes)
      --iv-large-sectors               Use IV counted in sector size (not in 512 bytes)
  -I, --integrity=STRING               Data integrity algorithm (LUKS2 only)
      --integrity-no-wipe              Do not wipe device after format
      --pbkdf=STRING                   PBKDF algorithm (for LUKS2): argon2i, argon2id, pbkdf2
      --pbkdf-memory=kilobytes         PBKDF memory cost limit
      --pbkdf-parallel=threads         PBKDF parallel cost
  -i, --iter-time=msecs                PBKDF iteration time for LUKS (in ms)
      --pbkdf-force-iterations=LONG    PBKDF iterations cost (forced, disables benchmark)
      --uuid=STRING                    UUID for device to use
      --label=STRING                   Set label for the LUKS2 device
      --subsystem=STRING               Set subsystem label for the LUKS2 device
  -r, --readonly                       Create a readonly mapping
      --allow-discards                 Allow discards (aka TRIM) requests for device
      --test-passphrase                Do not activate device, just check passphrase
  -q, --batch-mode                     Do not ask for confirmation (scripted luksFormat)
  -v, --verbose                        Shows more detailed error messages
      --debug                          Show debug messages
";

const HELP: &str = "
<action> is one of:
\topen <device> [--type <type>] [<name>] - open device as <name>
\tclose <name> - close device (remove mapping)
\tresize <name> - resize active device
\tstatus <name> - show device status
\tluksFormat <device> [<new key file>] - formats a LUKS device
\tluksAddKey <device> [<new key file>] - add key to LUKS device
\tluksRemoveKey <device> [<key file>] - removes supplied key or key file from LUKS device
\tluksChangeKey <device> [<key file>] - changes supplied key or key file of LUKS device
\tluksKillSlot <device> <key slot> - wipes key with number <key slot> from LUKS device
\tluksUUID <device> - print UUID of LUKS device
\tisLuks <device> - tests <device> for LUKS partition header
\tluksDump <device> - dump LUKS partition information
\tluksHeaderBackup <device> - Backup LUKS device header and keyslots
\tluksHeaderRestore <device> - Restore LUKS device header and keyslots

<name> is the device to create under /dev/mapper
<device> is the encrypted device
<key slot> is the LUKS key slot number to modify
<key file> optional key file for the new key for luksAddKey action

Default compiled-in key and passphrase parameters:
\tMaximum keyfile size: 8192kB, Maximum interactive passphrase length 512 (characters)
Default PBKDF for LUKS1: pbkdf2, iteration time: 2000 (ms)
Default PBKDF for LUKS2: argon2id
\tIteration time: 2000, Memory required: 1048576kB, Parallel threads: 4

Default compiled-in device cipher parameters:
\tloop-AES: aes, Key 256 bits
\tplain: aes-cbc-essiv:sha256, Key: 256 bits, Password hashing: ripemd160
\tLUKS: aes-xts-plain64, Key: 256 bits, LUKS header hashing: sha256, RNG: /dev/urandom
\tLUKS: Default keysize with XTS mode (two internal keys) will be doubled.
";

enum Parsed {
    Run(Box<Opts>, Vec<String>),
    Exit(i32),
}

fn usage_fail(io: &mut Io<'_>, prog: &str, msg: &str) -> Parsed {
    let _ = writeln!(io.err, "Usage: {prog} {USAGE}");
    let _ = writeln!(io.err, "{msg}");
    Parsed::Exit(1)
}

const TAKES_VALUE: [&str; 28] = [
    "integrity",
    "type",
    "key-file",
    "keyfile-size",
    "keyfile-offset",
    "new-keyfile-size",
    "new-keyfile-offset",
    "new-key-slot",
    "cipher",
    "key-size",
    "hash",
    "pbkdf",
    "pbkdf-memory",
    "pbkdf-parallel",
    "iter-time",
    "pbkdf-force-iterations",
    "sector-size",
    "uuid",
    "label",
    "subsystem",
    "key-slot",
    "volume-key-file",
    "master-key-file",
    "header-backup-file",
    "offset",
    "skip",
    "size",
    "new-keyfile",
];

fn short(c: char) -> Option<&'static str> {
    Some(match c {
        'd' => "key-file",
        'l' => "keyfile-size",
        'r' => "readonly",
        'c' => "cipher",
        's' => "key-size",
        'h' => "hash",
        'i' => "iter-time",
        'S' => "key-slot",
        'q' => "batch-mode",
        'v' => "verbose",
        'o' => "offset",
        'p' => "skip",
        'b' => "size",
        'M' => "type",
        'V' => "version",
        '?' => "help",
        'I' => "integrity",
        _ => return None,
    })
}

fn parse(io: &mut Io<'_>, prog: &str, args: &[String]) -> Parsed {
    let spec = PoptSpec {
        takes_value: &TAKES_VALUE,
        short,
    };
    let mut o = Opts::default();
    let read = spec.read(args, |name, val, pos| {
        match name {
            "type" => o.ty = Some(val),
            "key-file" => o.key_file = Some(val),
            "keyfile-size" => o.keyfile_size = Some(popt_num(name, &val)?),
            "keyfile-offset" => o.keyfile_offset = popt_num(name, &val)?,
            "new-keyfile-size" => o.new_keyfile_size = Some(popt_num(name, &val)?),
            "new-keyfile-offset" => o.new_keyfile_offset = popt_num(name, &val)?,
            "new-key-slot" => o.new_key_slot = Some(popt_num(name, &val)?),
            "new-keyfile" => pos.push(val),
            "readonly" => o.readonly = true,
            "test-passphrase" => o.test_passphrase = true,
            "allow-discards" => o.allow_discards = true,
            "cipher" => o.cipher = Some(val),
            "key-size" => o.key_size = Some(popt_num(name, &val)?),
            "hash" => o.hash = Some(val),
            "pbkdf" => o.pbkdf = Some(val),
            "pbkdf-memory" => o.pbkdf_memory = Some(popt_num(name, &val)?),
            "pbkdf-parallel" => o.pbkdf_parallel = Some(popt_num(name, &val)?),
            "iter-time" => o.iter_time = Some(popt_num(name, &val)?),
            "pbkdf-force-iterations" => o.pbkdf_force_iterations = Some(popt_num(name, &val)?),
            "sector-size" => o.sector_size = Some(popt_num(name, &val)?),
            "uuid" => o.uuid = Some(val),
            "label" => o.label = Some(val),
            "subsystem" => o.subsystem = Some(val),
            "key-slot" => o.key_slot = Some(popt_num(name, &val)?),
            "batch-mode" => o.batch = true,
            "verbose" => o.verbose = true,
            "debug" => o.verbose = true,
            "dump-volume-key" | "dump-master-key" => o.dump_volume_key = true,
            "volume-key-file" | "master-key-file" => o.volume_key_file = Some(val),
            "header-backup-file" => o.header_backup_file = Some(val),
            "offset" => o.offset = Some(popt_num(name, &val)?),
            "skip" => o.skip = Some(popt_num(name, &val)?),
            "size" => o.size = Some(popt_num(name, &val)?),
            "iv-large-sectors" => o.iv_large_sectors = true,
            "integrity" => o.integrity = Some(val),
            "integrity-no-wipe" => o.integrity_no_wipe = true,
            "disable-keyring" => o.disable_keyring = true,
            "disable-locks" | "disable-external-tokens" | "force-password" => {}
            p if p.starts_with("perf-") => o.perf.push(p[5..].replace('-', "_")),
            "version" => {
                let _ = writeln!(
                    io.out,
                    "cryptsetup 2.6.1 (udm {})",
                    env!("CARGO_PKG_VERSION")
                );
                return Err(PoptStop::Exit(0));
            }
            "help" => {
                let _ = writeln!(io.out, "Usage: {prog} {USAGE}");
                let _ = write!(io.out, "{OPTIONS}{HELP}");
                return Err(PoptStop::Exit(0));
            }
            "usage" => {
                let _ = writeln!(io.out, "Usage: {prog} {USAGE}");
                return Err(PoptStop::Exit(0));
            }
            _ => return Err(popt_unknown(name)),
        }
        Ok(())
    });
    match read {
        Ok(pos) => Parsed::Run(Box::new(o), pos),
        Err(PoptStop::Usage(msg)) => usage_fail(io, prog, &msg),
        Err(PoptStop::Exit(c)) => Parsed::Exit(c),
    }
}

/// Run with explicit streams and control socket (tests call this directly).
pub fn run(io: &mut Io<'_>, prog: &str, args: &[String]) -> i32 {
    let (mut opts, mut pos) = match parse(io, prog, args) {
        Parsed::Run(o, p) => (o, p),
        Parsed::Exit(c) => return c,
    };
    if pos.is_empty() {
        let _ = usage_fail(io, prog, "Argument <action> missing.");
        return 1;
    }
    let mut action = pos.remove(0);
    // Old action names.
    let alias = match action.as_str() {
        "create" if pos.len() > 1 => {
            pos.swap(0, 1);
            Some(("open", "plain"))
        }
        "plainOpen" => Some(("open", "plain")),
        "luksOpen" => Some(("open", "luks")),
        "remove" | "luksClose" | "plainClose" => Some(("close", "")),
        "luksErase" => None,
        _ => None,
    };
    if let Some((a, t)) = alias {
        action = a.into();
        if !t.is_empty() && opts.ty.is_none() {
            opts.ty = Some(t.into());
        }
    }
    let (need, desc) = match action.as_str() {
        "open" => (1, "<device> [--type <type>] [<name>]"),
        "close" | "status" | "resize" => (1, "<name>"),
        "luksFormat" | "luksAddKey" | "luksRemoveKey" | "luksChangeKey" | "luksUUID" | "isLuks"
        | "luksDump" | "luksHeaderBackup" | "luksHeaderRestore" => (1, "<device>"),
        "luksKillSlot" => (2, "<device> <key slot>"),
        _ => {
            let _ = usage_fail(io, prog, "Unknown action.");
            return 1;
        }
    };
    if pos.len() < need || (action == "open" && pos.len() < 2 && !opts.test_passphrase) {
        let _ = usage_fail(io, prog, &format!("{action}: requires {desc} as arguments"));
        return 1;
    }
    let r = match action.as_str() {
        "open" => dm::open(io, &opts, &pos),
        "close" => dm::close(io, &opts, &pos),
        // `udm luks status` names the device file that exists; `cryptsetup` keeps its text.
        "status" => dm::status(io, &opts, &pos, prog != "cryptsetup"),
        "resize" => dm::resize(io, &opts, &pos),
        "luksFormat" => format::format(io, &opts, &pos),
        "luksDump" => dump::dump(io, &opts, &pos),
        "isLuks" => hdr::is_luks(io, &opts, &pos),
        "luksUUID" => hdr::uuid(io, &opts, &pos),
        "luksHeaderBackup" => hdr::backup(io, &opts, &pos),
        "luksHeaderRestore" => hdr::restore(io, &opts, &pos),
        "luksAddKey" => slots::add_key(io, &opts, &pos),
        "luksRemoveKey" => slots::remove_key(io, &opts, &pos),
        "luksChangeKey" => slots::change_key(io, &opts, &pos),
        _ => slots::kill_slot(io, &opts, &pos),
    };
    let errno = match r {
        Ok(()) => 0,
        Err(Failed(e)) => e,
    };
    dmctl::finish(io.out, opts.verbose, errno)
}

/// Entry point: `udm luks ARGS…` (prog "udm luks") or a link named `cryptsetup`.
pub fn main(prog: &str, args: &[String]) -> i32 {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut input = std::io::stdin();
    // SAFETY: isatty only inspects the file descriptor.
    let tty = unsafe { libc::isatty(0) } == 1;
    progress::enable_on_tty();
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        input: &mut input,
        tty,
        socket: udm_proto::default_socket(),
    };
    let code = run(&mut io, prog, args);
    let _ = io.out.flush();
    code
}
