//! udm: the multi-call binary — `udm daemon`, `udm <dmsetup command>`, and `dmsetup` when
//! invoked through a link of that name; with no arguments it runs the quickstart daemon.

mod cache_era_cli;
mod daemon_cli;
mod dmctl;
mod dmesg_cli;
mod dmraid;
mod dmsetup;
mod integrity_cli;
mod key_cli;
mod kpartx;
mod logwrites;
mod luks_cli;
mod lvm;
mod multipath_cli;
mod open_cli;
mod optparse;
mod progress;
mod snapshot_cli;
mod stats_cli;
mod thin_cli;
mod verity_cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let prog = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_else(|| "udm".into());
    let code = match prog.as_str() {
        "dmsetup" | "devmap_name" => dmsetup::run(&prog, &args[1..]),
        "dmstats" => stats_cli::main(&args[1..]),
        "veritysetup" => verity_cli::main("veritysetup", &args[1..]),
        "cryptsetup" => luks_cli::main("cryptsetup", &args[1..]),
        "integritysetup" => integrity_cli::main("integritysetup", &args[1..]),
        "kpartx" => kpartx::main(&args[1..]),
        "multipath" => multipath_cli::main(&args[1..]),
        "dmraid" => dmraid::main(&args[1..]),
        "pvs" | "vgs" | "lvs" | "lvm" => lvm::run(&prog, &args[1..]),
        p if thin_cli::TOOLS.contains(&p) => thin_cli::run(p, &args[1..]),
        p if cache_era_cli::is_tool(p) => cache_era_cli::run(p, &args[0], &args[1..]),
        p if lvm::COMMANDS.contains(&p) => lvm::run(p, &args[1..]),
        _ => match args.get(1).map(|s| s.as_str()) {
            Some("daemon") => report(daemon_cli::main(&args[2..], false)),
            Some("stats") => stats_cli::main(&args[2..]),
            Some("log-writes") => logwrites::main(&args[2..]),
            Some("verity") => verity_cli::main("udm verity", &args[2..]),
            Some("luks") => luks_cli::main("udm luks", &args[2..]),
            Some("integrity") => integrity_cli::main("udm integrity", &args[2..]),
            Some("lvm") => lvm::main(&args[2..]),
            Some("key") => key_cli::main(&args[2..]),
            Some("dmesg") => dmesg_cli::main(&args[2..]),
            Some("kpartx") => kpartx::main(&args[2..]),
            Some("multipath") => multipath_cli::main(&args[2..]),
            Some("dmraid") => dmraid::main(&args[2..]),
            Some(c @ ("open" | "close")) => open_cli::main(c, &args[2..]),
            Some("thin") => thin_cli::main(&args[2..]),
            Some(g @ ("cache" | "era")) => cache_era_cli::group(g, &args[2..]),
            Some("snapshot") => snapshot_cli::main(&args[2..]),
            None => report(daemon_cli::main(&[], true)),
            Some("--help") if args.len() == 2 => {
                print!("{}", USAGE);
                0
            }
            Some("--version") | Some("-V") if args.len() == 2 => {
                println!("udm {}", env!("CARGO_PKG_VERSION"));
                dmsetup::run("udm", &args[1..])
            }
            Some(_) => dmsetup::run("udm", &args[1..]),
        },
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn report(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("udm: {e:#}");
            1
        }
    }
}

const USAGE: &str = "\
udm: userspace device-mapper

Usage:
  udm                     start the daemon with defaults and an image-backed demo device `udm0`
  udm daemon [options]    run the daemon in the foreground
      --socket PATH         control socket (default: $UDM_SOCKET, $XDG_RUNTIME_DIR/udm/control,
                            /run/udm/control for root, else /tmp/udm-UID/control in a
                            directory the daemon creates 0700 and refuses if others can write)
      --nbd-socket PATH     NBD unix socket (default: nbd.sock beside the control socket)
      --nbd-group GROUP     let GROUP use the NBD unix socket too (mode 0660; else 0600)
      --nbd-listen HOST:PORT  also serve NBD over TCP (off by default); needs --tls DIR,
                            since plain TCP lets anyone who reaches the port read and write
                            every device, decrypted ones included
      --nbd-insecure        allow --nbd-listen without TLS (or with --tls-optional)
      --fuse DIR            devices as files in DIR (default: `mapper` beside the control
                            socket when FUSE is usable); --no-fuse; --fuse-buffered
      --nbd-outage-limit SECS  how long I/O to an unreachable nbd:// device waits (30)
      --nbd-allow NAMES     only export these (comma list; PREFIX* matches)
      --nbd-read-only NAMES export these read-only
      --tls DIR [--tls-optional] [--tls-verify-peer]   NBD over TLS (DIR: ca-cert.pem,
                            server-cert.pem, server-key.pem); plaintext refused unless optional
      --ublk                also export every device as /dev/ublkbN (kernel ublk_drv)
      --state-dir DIR       where the state file lives (default: $UDM_STATE_DIR,
                            $XDG_DATA_HOME/udm, ~/.local/share/udm); devices come back when
                            the daemon starts again; keys are never saved, so devices whose
                            tables hold keys wait (`udm ls`) for `udm luks open` or
                            `udm key add` then `udm resume NAME`
      --no-restore          do not restore the saved devices
      --multipath-conf FILE  path checker settings for multipath devices (multipath.conf's
                            defaults: polling_interval, checker_timeout, path_checker,
                            no_path_retry, failback); --no-multipathd turns checking off
      --verity-trusted-certs DIR  trust the X.509 certificates (PEM/DER files) in DIR for
                            verity root hash signatures (root_hash_sig_key_desc)
  udm daemon stop [--force]  stop the daemon (drain, flush); refused while devices are
                          open unless --force
  udm --version           udm's version, then the dmsetup-style version lines
  udm stats create|list|print|clear|delete|report|device …   I/O counters (dmstats)
  udm luks luksFormat|open|close|status|luksDump|isLuks|luksUUID|… LUKS1/2 (a `cryptsetup` link too)
  udm key add [--hex] logon|user DESC < KEY   put a key in the daemon's key store (crypt
                          tables name it as :LEN:logon:DESC); never on the command line
  udm dmesg [-c|-C]       the kernel-style log (`device-mapper: …` reasons for failures, target
                          messages); -c clears it after printing, -C only clears
  udm verity format|verify|open|close|status|dump …   dm-verity (a `veritysetup` link too)
  udm integrity format|open|close|status|dump …      dm-integrity (an `integritysetup` link too)
  udm kpartx -l|-a|-u|-d [-p DELIM] [-r] [-v] DISK   partition mappings (a `kpartx` link too)
  udm open [--key-file F] IMAGE   partitions, LUKS volumes and LVM VGs inside an image, as
                          devices (listed with FUSE paths and NBD URIs); udm close IMAGE
  udm lvm COMMAND …       lvm2's commands (pvcreate, vgcreate, lvcreate, vgchange, lvs, …;
                          also as links of those names)
  udm log-writes replay|dump …   replay a dm-log-writes log onto a device or image, or list it
  udm thin dump|check|restore|repair|ls|delta|trim|metadata_size …   thin-provisioning-tools
                          0.9's tools, same options, output and exit codes (also as
                          thin_dump, thin_check, … links)
  udm multipath -ll [NAME]  multipath devices' groups and paths, as `multipath -ll` (a
                          `multipath` link too)
  udm cache check|dump|restore|repair|metadata_size|writeback …   and
  udm era check|dump|restore|invalidate …   thin-provisioning-tools 0.9's cache and era
                          tools (also as cache_check, era_dump, … links)
  udm snapshot dump COW           print a snapshot COW's header and exception table
  udm <dmsetup command>   any dmsetup command (create, ls, info, table, status, remove, …);
                          `udm help` lists them. A link named `dmsetup` behaves as dmsetup.
";
