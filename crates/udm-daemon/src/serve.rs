//! Serving the control socket: one thread per client, length-prefixed JSON frames, each
//! request dispatched onto the Registry (the dm ioctl set) or the key store.

use crate::state::State;
use crate::wire::Wire;
use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use udm_core::{DmError, Registry, StatusType, TableLine};
use udm_proto::{
    read_frame, write_frame, RemoteError, Reply, ReplyFrame, Request, RequestFrame, PROTO_VERSION,
};

/// What `DaemonInfo` requests report about the exports, the state file, and how to stop.
pub(crate) struct DaemonInfo {
    pub nbd_socket: Option<String>,
    pub nbd_tcp: Option<String>,
    pub fuse_dir: Option<String>,
    pub state: Arc<State>,
    /// Set by `run`: starts the orderly shutdown (`Stop` requests).
    pub stop: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

pub(crate) fn serve_client(c: UnixStream, registry: &Registry, info: &DaemonInfo) {
    let Ok(wc) = c.try_clone() else { return };
    let mut r = BufReader::new(c);
    let mut w = BufWriter::new(wc);
    loop {
        let frame: RequestFrame = match read_frame(&mut r) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("control client: {e}");
                let reply = ReplyFrame {
                    v: PROTO_VERSION,
                    reply: Err(RemoteError {
                        errno: libc::EPROTO,
                        kind: "protocol".into(),
                        message: e.to_string(),
                    }),
                };
                let _ = write_frame(&mut w, &reply);
                return;
            }
        };
        let reply = if frame.v != PROTO_VERSION {
            Err(RemoteError {
                errno: libc::EPROTO,
                kind: "protocol".into(),
                message: format!(
                    "protocol version {} not supported (daemon speaks {PROTO_VERSION})",
                    frame.v
                ),
            })
        } else {
            tracing::debug!(req = %loggable(&frame.req), "control request");
            let changes = changes_devices(&frame.req);
            let r = handle(registry, info, frame.req).map_err(remote);
            if changes {
                info.state.save(registry);
            }
            r
        };
        if write_frame(
            &mut w,
            &ReplyFrame {
                v: PROTO_VERSION,
                reply,
            },
        )
        .is_err()
        {
            return;
        }
    }
}

/// A request as it may appear in the log: crypt keys in tables and `key set` messages masked
/// (as `dmsetup table` masks them), key-store payloads never shown.
fn loggable(req: &Request) -> String {
    match req {
        Request::Load {
            dev,
            table,
            read_only,
        } => {
            let lines: Vec<String> = table
                .iter()
                .map(|l| {
                    let p = if l.ttype == "crypt" {
                        udm_targets::crypt::mask_key(&l.params)
                    } else {
                        l.params.clone()
                    };
                    format!("{} {} {} {p}", l.start, l.len, l.ttype)
                })
                .collect();
            format!("Load {{ dev: {dev:?}, read_only: {read_only}, table: {lines:?} }}")
        }
        Request::Message { dev, sector, argv }
            if argv.first().map(String::as_str) == Some("key") =>
        {
            format!("Message {{ dev: {dev:?}, sector: {sector}, argv: [\"key\", …] }}")
        }
        other => format!("{other:?}"),
    }
}

/// Requests after which the state file is written again.
fn changes_devices(req: &Request) -> bool {
    matches!(
        req,
        Request::Create { .. }
            | Request::Remove { .. }
            | Request::RemoveAll { .. }
            | Request::Rename { .. }
            | Request::SetUuid { .. }
            | Request::Suspend { .. }
            | Request::Resume { .. }
    )
}

/// Names become FUSE file and NBD export names: no control characters (NUL included, as
/// the kernel's names are C strings).
fn check_name(name: &str) -> Result<(), DmError> {
    if name.chars().any(char::is_control) {
        return Err(DmError::invalid(format!(
            "Invalid device name {name:?}: control characters are not allowed"
        )));
    }
    Ok(())
}

fn remote(e: DmError) -> RemoteError {
    let kind = match &e {
        DmError::NoDevice => "nodev",
        DmError::Busy(_) => "busy",
        DmError::Invalid(_) => "invalid",
        DmError::Table { .. } => "table",
        _ => "errno",
    };
    RemoteError {
        errno: e.errno(),
        kind: kind.into(),
        message: e.to_string(),
    }
}

fn handle(reg: &Registry, info: &DaemonInfo, req: Request) -> Result<Reply, DmError> {
    Ok(match req {
        Request::Version => Reply::Version(reg.version()),
        Request::RemoveAll { deferred } => Reply::Remaining(reg.remove_all(deferred)),
        Request::List => Reply::List(reg.list().wire()),
        Request::Create { name, uuid } => {
            check_name(&name)?;
            let created = reg.create(&name, &uuid)?;
            // Created anew (e.g. `udm luks open`): no longer waiting to be restored.
            info.state.forget(&name);
            Reply::Info(created.wire())
        }
        Request::Remove { dev, deferred } => Reply::Info(reg.remove(&dev.wire(), deferred)?.wire()),
        Request::Rename { dev, new_name } => {
            check_name(&new_name)?;
            Reply::Info(reg.rename(&dev.wire(), &new_name)?.wire())
        }
        Request::SetUuid { dev, uuid } => Reply::Info(reg.set_uuid(&dev.wire(), &uuid)?.wire()),
        Request::Suspend {
            dev,
            noflush,
            nolockfs,
        } => Reply::Info(reg.suspend(&dev.wire(), noflush, nolockfs)?.wire()),
        Request::Resume { dev, noflush, .. } => {
            // A saved device waiting for its key comes back on `resume NAME`.
            if let udm_proto::DevSel::Name(n) = &dev {
                if reg.info(&dev.clone().wire(), false).is_err() {
                    if let Some(r) = info.state.resume_pending(reg, n) {
                        r.map_err(|m| DmError::Errno {
                            errno: libc::ENOKEY,
                            msg: format!("{n}: {m}"),
                        })?;
                    }
                }
            }
            let opts = udm_core::SuspendOpts {
                noflush,
                ..Default::default()
            };
            Reply::Info(reg.resume_with(&dev.wire(), opts)?.wire())
        }
        Request::Info { dev, inactive } => Reply::Info(reg.info(&dev.wire(), inactive)?.wire()),
        Request::Wait {
            dev,
            event_nr,
            inactive,
            timeout_ms,
        } => {
            let dev = dev.wire();
            let t = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
            reg.wait(&dev, event_nr, t)?;
            let (info, targets) = reg.status(&dev, inactive, StatusType::Info)?;
            Reply::Status {
                info: info.wire(),
                targets: targets.wire(),
            }
        }
        Request::Load {
            dev,
            table,
            read_only,
        } => {
            let lines: Vec<TableLine> = table.wire();
            Reply::Info(reg.load(&dev.wire(), &lines, read_only)?.wire())
        }
        Request::Clear { dev } => Reply::Info(reg.clear(&dev.wire())?.wire()),
        Request::Deps { dev, inactive } => {
            let (info, deps) = reg.deps(&dev.wire(), inactive)?;
            Reply::Deps {
                info: info.wire(),
                deps: deps.wire(),
            }
        }
        Request::Status {
            dev,
            inactive,
            table,
            noflush,
        } => {
            let ty = if table {
                StatusType::Table
            } else {
                StatusType::Info
            };
            let flags = udm_core::StatusFlags { noflush };
            let (info, targets) = reg.status_with(&dev.wire(), inactive, ty, flags)?;
            Reply::Status {
                info: info.wire(),
                targets: targets.wire(),
            }
        }
        Request::ListVersions => Reply::Versions(reg.list_versions()),
        Request::TargetVersion { name } => match reg.target_version(&name) {
            Some(v) => Reply::Versions(vec![(name, v)]),
            None => return Err(DmError::invalid(format!("{name}: no such target type"))),
        },
        Request::Dmesg { clear } => Reply::Dmesg(if clear {
            udm_core::klog::take()
        } else {
            udm_core::klog::lines()
        }),
        Request::KeyAdd { ktype, desc, key } => {
            udm_targets::crypt::keyring::add(&ktype, &desc, &key.0).map_err(|e| {
                DmError::Errno {
                    errno: e.errno(),
                    msg: e.to_string(),
                }
            })?;
            Reply::Ok
        }
        Request::KeyRemove { ktype, desc } => {
            if !udm_targets::crypt::keyring::remove(&ktype, &desc) {
                return Err(DmError::Errno {
                    errno: libc::ENOKEY,
                    msg: format!("no key {ktype}:{desc}"),
                });
            }
            Reply::Ok
        }
        Request::Message { dev, sector, argv } => {
            Reply::Message(reg.message(&dev.wire(), sector, &argv)?)
        }
        Request::SetGeometry {
            dev,
            cylinders,
            heads,
            sectors,
            start,
        } => {
            reg.set_geometry(&dev.wire(), cylinders, heads, sectors, start)?;
            Reply::Ok
        }
        Request::SetGeometryText { dev, geometry } => {
            reg.set_geometry_str(&dev.wire(), &geometry)?;
            Reply::Ok
        }
        Request::DaemonInfo => Reply::Daemon {
            pid: std::process::id(),
            nbd_socket: info.nbd_socket.clone(),
            nbd_tcp: info.nbd_tcp.clone(),
            fuse_dir: info.fuse_dir.clone(),
        },
        Request::Pending => Reply::Pending(info.state.pending()),
        Request::Stop { force } => {
            let open: Vec<String> = reg
                .list()
                .into_iter()
                .filter(|d| d.open_count > 0)
                .map(|d| format!("{} (open count {})", d.name, d.open_count))
                .collect();
            if !open.is_empty() && !force {
                return Err(DmError::Busy(format!(
                    "devices are open: {} (stop --force closes them)",
                    open.join(", ")
                )));
            }
            let Some(stop) = info.stop.get() else {
                return Err(DmError::Errno {
                    errno: libc::EOPNOTSUPP,
                    msg: "this daemon is embedded: its embedder stops it".into(),
                });
            };
            tracing::info!("stop requested by a client");
            stop();
            Reply::Ok
        }
        other => {
            return Err(DmError::Errno {
                errno: libc::EOPNOTSUPP,
                msg: format!("request not supported by this daemon: {other:?}"),
            })
        }
    })
}
