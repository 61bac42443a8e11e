//! `udm verity …` and `veritysetup`: format, verify, dump (offline, on files) and open, close,
//! status (through the udm daemon), with veritysetup 2.6's options, output and exit codes.

mod actions;
mod dm;
mod progress;

use crate::dmctl;

use crate::optparse::{popt_num, popt_unknown, PoptSpec, PoptStop};
use std::io::Write;
use std::path::PathBuf;

/// Where a run writes and which daemon it talks to.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub socket: PathBuf,
}

/// A failed action: the errno veritysetup's library would return (messages already printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed(pub i32);

/// Parsed command-line options (veritysetup's popt table).
#[derive(Debug, Default, Clone)]
pub struct Opts {
    pub hash: Option<String>,
    pub salt: Option<String>,
    pub uuid: Option<String>,
    pub data_block_size: Option<u32>,
    pub hash_block_size: Option<u32>,
    pub data_blocks: Option<u64>,
    pub hash_offset: u64,
    pub fec_device: Option<String>,
    pub fec_offset: u64,
    pub fec_roots: Option<u32>,
    pub format: Option<u32>,
    pub no_superblock: bool,
    pub ignore_corruption: bool,
    pub restart_on_corruption: bool,
    pub panic_on_corruption: bool,
    pub ignore_zero_blocks: bool,
    pub check_at_most_once: bool,
    pub use_tasklets: bool,
    pub root_hash_file: Option<String>,
    pub root_hash_signature: Option<String>,
    pub deferred: bool,
    pub cancel_deferred: bool,
    pub verbose: bool,
    pub debug: bool,
}

const USAGE: &str = "[-?Vv] [-?|--help] [--usage] [-V|--version]
        [--cancel-deferred] [--check-at-most-once] [--data-block-size=bytes]
        [--data-blocks=blocks] [--debug] [--deferred] [--fec-device=path]
        [--fec-offset=bytes] [--fec-roots=bytes] [--format=number]
        [-h|--hash=string] [--hash-block-size=bytes] [--hash-offset=bytes]
        [--ignore-corruption] [--ignore-zero-blocks] [--no-superblock]
        [--panic-on-corruption] [--restart-on-corruption]
        [--root-hash-file=STRING] [--root-hash-signature=STRING]
        [-s|--salt=hex string] [--use-tasklets] [--uuid=STRING]
        [-v|--verbose] [OPTION...] <action> <action-specific>
";

const HELP: &str = "
<action> is one of:
\tformat <data_device> <hash_device> - format device
\tverify <data_device> <hash_device> [<root_hash>] - verify device
\topen <data_device> <name> <hash_device> [<root_hash>] - open device as <name>
\tclose <name> - close device (remove mapping)
\tstatus <name> - show active device status
\tdump <hash_device> - show on-disk information

<name> is the device to create under /dev/mapper
<data_device> is the data device
<hash_device> is the device containing verification data
<root_hash> hash of the root node on <hash_device>

Default compiled-in dm-verity parameters:
\tHash: sha256, Data block (bytes): 4096, Hash block (bytes): 4096, Salt size: 32, Hash format: 1
";

enum Parsed {
    Run(Box<Opts>, Vec<String>),
    Exit(i32),
}

fn usage_fail(io: &mut Io<'_>, prog: &str, msg: &str) -> Parsed {
    let _ = write!(io.err, "Usage: {prog} {USAGE}");
    let _ = writeln!(io.err, "{prog}: {msg}");
    Parsed::Exit(1)
}

const TAKES_VALUE: [&str; 13] = [
    "hash",
    "salt",
    "uuid",
    "data-block-size",
    "hash-block-size",
    "data-blocks",
    "hash-offset",
    "fec-device",
    "fec-offset",
    "fec-roots",
    "format",
    "root-hash-file",
    "root-hash-signature",
];

fn short(c: char) -> Option<&'static str> {
    Some(match c {
        'h' => "hash",
        's' => "salt",
        'v' => "verbose",
        'V' => "version",
        '?' => "help",
        _ => return None,
    })
}

fn parse(io: &mut Io<'_>, prog: &str, args: &[String]) -> Parsed {
    let spec = PoptSpec {
        takes_value: &TAKES_VALUE,
        short,
    };
    let mut o = Opts::default();
    let read = spec.read(args, |name, val, _| {
        match name {
            "hash" => o.hash = Some(val),
            "salt" => o.salt = Some(val),
            "uuid" => o.uuid = Some(val),
            "data-block-size" => o.data_block_size = Some(popt_num(name, &val)?),
            "hash-block-size" => o.hash_block_size = Some(popt_num(name, &val)?),
            "data-blocks" => o.data_blocks = Some(popt_num(name, &val)?),
            "hash-offset" => o.hash_offset = popt_num(name, &val)?,
            "fec-device" => o.fec_device = Some(val),
            "fec-offset" => o.fec_offset = popt_num(name, &val)?,
            "fec-roots" => o.fec_roots = Some(popt_num(name, &val)?),
            "format" => o.format = Some(popt_num(name, &val)?),
            "root-hash-file" => o.root_hash_file = Some(val),
            "root-hash-signature" => o.root_hash_signature = Some(val),
            "no-superblock" => o.no_superblock = true,
            "ignore-corruption" => o.ignore_corruption = true,
            "restart-on-corruption" => o.restart_on_corruption = true,
            "panic-on-corruption" => o.panic_on_corruption = true,
            "ignore-zero-blocks" => o.ignore_zero_blocks = true,
            "check-at-most-once" => o.check_at_most_once = true,
            "use-tasklets" => o.use_tasklets = true,
            "deferred" => o.deferred = true,
            "cancel-deferred" => o.cancel_deferred = true,
            "verbose" => o.verbose = true,
            "debug" => {
                o.debug = true;
                o.verbose = true
            }
            "version" => {
                let _ = writeln!(
                    io.out,
                    "veritysetup 2.6.1 (udm {})",
                    env!("CARGO_PKG_VERSION")
                );
                return Err(PoptStop::Exit(0));
            }
            "help" => {
                let _ = writeln!(
                    io.out,
                    "Usage: {prog} [OPTION...] <action> <action-specific>"
                );
                let _ = write!(io.out, "{HELP}");
                return Err(PoptStop::Exit(0));
            }
            "usage" => {
                let _ = write!(io.out, "Usage: {prog} {USAGE}");
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

/// Run with explicit output streams and control socket (tests call this directly).
pub fn run(io: &mut Io<'_>, prog: &str, args: &[String]) -> i32 {
    let (opts, mut pos) = match parse(io, prog, args) {
        Parsed::Run(o, p) => (o, p),
        Parsed::Exit(c) => return c,
    };
    if pos.is_empty() {
        let _ = usage_fail(io, prog, "Argument <action> missing.");
        return 1;
    }
    let mut action = pos.remove(0);
    if action == "create" && pos.len() > 1 {
        pos.swap(0, 1);
        action = "open".into();
    } else if action == "remove" {
        action = "close".into();
    }
    let (need, desc) = match action.as_str() {
        "format" => (2, "<data_device> <hash_device>"),
        "verify" => (2, "<data_device> <hash_device> [<root_hash>]"),
        "open" => (3, "<data_device> <name> <hash_device> [<root_hash>]"),
        "close" => (1, "<name>"),
        "status" => (1, "<name>"),
        "dump" => (1, "<hash_device>"),
        _ => {
            let _ = usage_fail(io, prog, "Unknown action.");
            return 1;
        }
    };
    if pos.len() < need {
        let _ = usage_fail(io, prog, &format!("{action}: requires {desc} as arguments"));
        return 1;
    }
    let conflicts = [
        (
            opts.ignore_corruption && opts.restart_on_corruption,
            "Option --ignore-corruption and --restart-on-corruption cannot be used together.",
        ),
        (
            opts.panic_on_corruption && opts.restart_on_corruption,
            "Option --panic-on-corruption and --restart-on-corruption cannot be used together.",
        ),
        (
            opts.cancel_deferred && opts.deferred,
            "Options --cancel-deferred and --deferred cannot be used at the same time.",
        ),
    ];
    for (bad, msg) in conflicts {
        if bad {
            let _ = usage_fail(io, prog, msg);
            return 1;
        }
    }
    let r = match action.as_str() {
        "format" => actions::format(io, &opts, &pos),
        "verify" => actions::verify(io, &opts, &pos),
        "dump" => actions::dump(io, &opts, &pos),
        "open" => dm::open(io, &opts, &pos),
        "close" => dm::close(io, &opts, &pos),
        _ => dm::status(io, &opts, &pos),
    };
    let errno = match r {
        Ok(()) => 0,
        Err(Failed(e)) => e,
    };
    dmctl::finish(io.out, opts.verbose, errno)
}

/// Entry point: `udm verity ARGS…` (prog "udm verity") or a link named `veritysetup`.
pub fn main(prog: &str, args: &[String]) -> i32 {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        socket: udm_proto::default_socket(),
    };
    let code = run(&mut io, prog, args);
    let _ = io.out.flush();
    code
}
