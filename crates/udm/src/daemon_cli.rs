//! `udm daemon [options]` (and `udm` alone, the quickstart): argv into a
//! `udm_daemon::DaemonConfig`, logging set up, then the daemon library runs it.

use anyhow::{bail, Context, Result};
use std::time::Duration;
use udm_daemon::DaemonConfig;

fn parse_opts(args: &[String]) -> Result<DaemonConfig> {
    let mut o = DaemonConfig::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut val = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{key} needs a value")),
            }
        };
        match key {
            "--socket" => o.socket = Some(val()?.into()),
            "--nbd-socket" => o.nbd_socket = Some(val()?.into()),
            "--nbd-listen" => o.nbd_listen = Some(val()?),
            "--nbd-insecure" => o.nbd_insecure = true,
            "--nbd-group" => o.nbd_group = Some(val()?),
            "--state-dir" => o.state_dir = Some(val()?.into()),
            "--no-restore" => o.no_restore = true,
            "--fuse" => o.fuse = Some(val()?.into()),
            "--no-fuse" => o.no_fuse = true,
            "--fuse-buffered" => o.fuse_buffered = true,
            "--ublk" => o.ublk = true,
            "--tls" => o.tls = Some(val()?.into()),
            "--tls-optional" => o.tls_optional = true,
            "--tls-verify-peer" => o.tls_verify_peer = true,
            "--verity-trusted-certs" => o.verity_trusted_certs.push(val()?.into()),
            "--nbd-allow" => o.nbd_policy.allow.get_or_insert_with(Vec::new).extend(
                val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "--nbd-read-only" => o.nbd_policy.read_only.extend(
                val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "--nbd-outage-limit" => {
                let v = val()?;
                let s: f64 = v
                    .parse()
                    .ok()
                    .filter(|s| (0.0..=86_400.0).contains(s))
                    .with_context(|| format!("--nbd-outage-limit {v}: expected seconds"))?;
                o.nbd_outage_limit = Some(Duration::from_secs_f64(s));
            }
            "--multipath-conf" => {
                let f = val()?;
                let text = std::fs::read_to_string(&f).with_context(|| format!("read {f}"))?;
                o.multipathd = udm_daemon::multipathd::MultipathdConfig::parse(&text)
                    .map_err(|e| anyhow::anyhow!("{f}: {e}"))?;
            }
            "--no-multipathd" => o.multipathd.enabled = false,
            "--foreground" | "-f" => {}
            "-h" | "--help" => {
                print!("{}", super::USAGE);
                std::process::exit(0);
            }
            other => bail!("unknown daemon option {other:?} (see udm --help)"),
        }
    }
    Ok(o)
}

/// `udm daemon stop [--force] [--socket PATH]`: ask the daemon to shut down (drain, flush,
/// close the exports, as SIGTERM) and wait until it is gone. Refused while devices are open,
/// unless `--force`.
fn stop(args: &[String]) -> Result<()> {
    let mut force = false;
    let mut socket = udm_proto::default_socket();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--force" | "-f" => force = true,
            "--socket" => socket = it.next().context("--socket needs a value")?.into(),
            s if s.starts_with("--socket=") => socket = s["--socket=".len()..].into(),
            other => bail!("unknown option {other:?} (udm daemon stop [--force] [--socket PATH])"),
        }
    }
    udm_daemon::client::stop_daemon(&socket, force, Duration::from_secs(60))?;
    eprintln!("udm: daemon stopped");
    Ok(())
}

/// Entry point: `udm daemon ARGS…`; `quickstart` also creates the demo device `udm0`.
pub fn main(args: &[String], quickstart: bool) -> Result<()> {
    if args.first().map(String::as_str) == Some("stop") {
        return stop(&args[1..]);
    }
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UDM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cfg = parse_opts(args)?;
    cfg.quickstart = quickstart;
    Ok(udm_daemon::run(&cfg)?)
}
