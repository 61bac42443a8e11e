//! Fuzzing the control socket a local user can write to: valid request frames (every kind
//! of request, tables for targets with on-disk metadata and messages), mutated as bytes
//! (bit flips, truncation, overwritten bytes) and as JSON (numbers set to 0 / all ones /
//! random, strings swapped for hostile words), sent to an embedded daemon. Every frame gets
//! a reply (an errno for bad ones), no daemon thread panics, and the daemon keeps serving.

use proptest::prelude::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use udm_daemon::{Daemon, DaemonConfig};
use udm_proto::{Client, DevSel, Line, Request, RequestFrame, SecretBytes, PROTO_VERSION};
use udm_testkit::mutate::{field_value, hostile_number, mutated, mutations};

static PANICS: AtomicUsize = AtomicUsize::new(0);

struct Fixture {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    /// Tables the requests load (one per target kind), by device name.
    tables: Vec<(String, Line)>,
}

fn line(len: u64, ttype: &str, params: String) -> Line {
    Line {
        start: 0,
        len,
        ttype: ttype.into(),
        params,
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |p| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(p)
        }));
        let dir = tempfile::tempdir().unwrap();
        let img = |name: &str, bytes: u64| udm_testkit::image(dir.path(), name, bytes);
        let (a, b) = (img("a", 4 << 20), img("b", 4 << 20));
        let (meta, data) = (img("meta", 4 << 20), img("data", 8 << 20));
        let (cmeta, cfast) = (img("cmeta", 4 << 20), img("cfast", 4 << 20));
        let emeta = img("emeta", 4 << 20);
        let p = |p: &Path| p.display().to_string();
        let tables = vec![
            ("z".into(), line(64, "zero", String::new())),
            ("lin".into(), line(2048, "linear", format!("{} 0", p(&a)))),
            (
                "str".into(),
                line(2048, "striped", format!("2 8 {} 0 {} 0", p(&a), p(&b))),
            ),
            (
                "fl".into(),
                line(2048, "flakey", format!("{} 0 1 1", p(&a))),
            ),
            (
                "dust".into(),
                line(2048, "dust", format!("{} 0 512", p(&a))),
            ),
            (
                "sw".into(),
                line(2048, "switch", format!("2 64 0 {} 0 {} 0", p(&a), p(&b))),
            ),
            (
                "pool".into(),
                line(
                    16384,
                    "thin-pool",
                    format!("{} {} 128 0", p(&meta), p(&data)),
                ),
            ),
            (
                "era".into(),
                line(2048, "era", format!("{} {} 128", p(&emeta), p(&b))),
            ),
            (
                "cache".into(),
                line(
                    2048,
                    "cache",
                    format!(
                        "{} {} {} 64 1 writethrough default 0",
                        p(&cmeta),
                        p(&cfast),
                        p(&b)
                    ),
                ),
            ),
        ];
        let mut cfg = DaemonConfig::default();
        cfg.socket = Some(dir.path().join("control"));
        cfg.no_fuse = true;
        cfg.state_dir = Some(dir.path().join("state"));
        let daemon = Daemon::start(&cfg).unwrap();
        let f = Fixture {
            _dir: dir,
            daemon,
            tables,
        };
        for k in 0..f.tables.len() {
            live(&f, k);
        }
        f
    })
}

/// Make table `k`'s device exist and be live (a case may have removed, renamed, cleared or
/// suspended it), so the mutated requests reach live targets.
fn live(f: &Fixture, k: usize) {
    let (dev, table) = &f.tables[k];
    let mut c = Client::connect(f.daemon.socket()).unwrap();
    let _ = c.call(Request::Create {
        name: dev.clone(),
        uuid: String::new(),
    });
    let _ = c.call(Request::Load {
        dev: name(dev),
        table: vec![table.clone()],
        read_only: false,
    });
    let r = c.call(Request::Resume {
        dev: name(dev),
        noflush: false,
        nolockfs: false,
    });
    r.unwrap_or_else(|e| panic!("{dev} does not resume: {e}"));
}

fn name(n: &str) -> DevSel {
    DevSel::Name(n.into())
}

/// The valid requests the cases start from: `k` picks one.
fn base_request(f: &Fixture, k: usize) -> Request {
    let (dev, table) = &f.tables[k % f.tables.len()];
    let d = name(dev);
    let argv = |w: &[&str]| w.iter().map(|s| s.to_string()).collect();
    let msgs: [Vec<String>; 8] = [
        argv(&["addbadblock", "3"]),
        argv(&["set_region_mappings", "0:1", "R1,0"]),
        argv(&["create_thin", "0"]),
        argv(&["create_snap", "1", "0"]),
        argv(&["set_transaction_id", "0", "1"]),
        argv(&["checkpoint"]),
        argv(&["migration_threshold", "2048"]),
        argv(&["invalidate_cblocks", "0-4"]),
    ];
    match (k / f.tables.len()) % 16 {
        0 => Request::Create {
            name: dev.clone(),
            uuid: format!("UDM-FUZZ-{dev}"),
        },
        1 => Request::Load {
            dev: d,
            table: vec![table.clone()],
            read_only: false,
        },
        2 => Request::Resume {
            dev: d,
            noflush: false,
            nolockfs: false,
        },
        3 => Request::Message {
            dev: d,
            sector: 0,
            argv: msgs[k % msgs.len()].clone(),
        },
        4 => Request::Status {
            dev: d,
            inactive: false,
            table: k.is_multiple_of(2),
            noflush: false,
        },
        5 => Request::Info {
            dev: d,
            inactive: true,
        },
        6 => Request::Deps {
            dev: d,
            inactive: false,
        },
        7 => Request::Suspend {
            dev: d,
            noflush: true,
            nolockfs: false,
        },
        8 => Request::Rename {
            dev: d,
            new_name: format!("{dev}2"),
        },
        9 => Request::SetUuid {
            dev: d,
            uuid: "u".into(),
        },
        10 => Request::SetGeometry {
            dev: d,
            cylinders: 1,
            heads: 2,
            sectors: 3,
            start: 0,
        },
        11 => Request::SetGeometryText {
            dev: d,
            geometry: "1 2 3 0".into(),
        },
        12 => Request::KeyAdd {
            ktype: "logon".into(),
            desc: "cr:k".into(),
            key: SecretBytes(vec![1; 32]),
        },
        13 => Request::TargetVersion {
            name: table.ttype.clone(),
        },
        14 => Request::Clear { dev: d },
        _ => Request::Remove {
            dev: d,
            deferred: k.is_multiple_of(2),
        },
    }
}

/// Hostile words for string leaves.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        hostile_number(),
        prop::sample::select(vec![
            "",
            "ffffffffffffffff:ffffffff",
            "0 0 0 0 0 0 0 0",
            "../../../etc/passwd",
            "a\nb\0c",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,40}",
        "\\PC{0,12}",
    ]
}

/// Replace leaves of `v` chosen by `picks` (leaf index modulo the leaf count).
fn mutate_json(v: &mut Value, picks: &[(usize, u64, String, bool)]) {
    fn leaves<'a>(v: &'a mut Value, out: &mut Vec<&'a mut Value>) {
        match v {
            Value::Object(m) => m.values_mut().for_each(|x| leaves(x, out)),
            Value::Array(a) => a.iter_mut().for_each(|x| leaves(x, out)),
            _ => out.push(v),
        }
    }
    for (at, n, s, grow) in picks {
        let mut ls = Vec::new();
        leaves(v, &mut ls);
        if ls.is_empty() {
            return;
        }
        let count = ls.len();
        let leaf = &mut ls[*at % count];
        **leaf = match &**leaf {
            Value::Number(_) => Value::from(*n),
            Value::Bool(b) => Value::Bool(!b),
            Value::String(old) if *grow => Value::String(format!("{old} {s}")),
            _ => Value::String(s.clone()),
        };
    }
}

/// Send `body` as one frame; the reply's bytes, or None when the daemon closed the
/// connection without one.
fn exchange(socket: &Path, body: &[u8]) -> Option<Vec<u8>> {
    let mut c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    c.write_all(&frame).unwrap();
    let mut len = [0u8; 4];
    c.read_exact(&mut len).ok()?;
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut reply).expect("a whole reply frame");
    Some(reply)
}

/// Requests the fuzzer must not send: stopping the daemon, and waits that outlast a case.
fn unsendable(body: &[u8]) -> bool {
    match serde_json::from_slice::<RequestFrame>(body) {
        Ok(f) => {
            matches!(f.req, Request::Stop { .. })
                || matches!(f.req, Request::Wait { timeout_ms, .. } if timeout_ms > 1000)
        }
        Err(_) => false,
    }
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(300))]

    #[test]
    fn mutated_requests_get_replies_and_the_daemon_survives(
        k in 0usize..1000,
        as_json in any::<bool>(),
        byte_muts in mutations(Vec::new(), 1, 4),
        json_muts in prop::collection::vec((any::<usize>(), field_value(), word(), any::<bool>()), 1..4),
    ) {
        let f = fixture();
        let frame = RequestFrame { v: PROTO_VERSION, req: base_request(f, k) };
        let mut v = serde_json::to_value(&frame).unwrap();
        let body = if as_json {
            mutate_json(&mut v, &json_muts);
            serde_json::to_vec(&v).unwrap()
        } else {
            mutated(&serde_json::to_vec(&v).unwrap(), &byte_muts)
        };
        if unsendable(&body) {
            return Ok(());
        }
        let reply = exchange(f.daemon.socket(), &body);
        prop_assert!(reply.is_some(), "no reply to {}", String::from_utf8_lossy(&body));
        let reply: serde_json::Value = serde_json::from_slice(&reply.unwrap()).unwrap();
        prop_assert!(reply.get("reply").is_some(), "{reply}");
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a daemon thread panicked on {}", String::from_utf8_lossy(&body));
        live(f, k % f.tables.len());
        // The daemon still answers.
        let ok = exchange(f.daemon.socket(), &serde_json::to_vec(&RequestFrame { v: PROTO_VERSION, req: Request::Version }).unwrap());
        prop_assert!(ok.is_some_and(|r| String::from_utf8_lossy(&r).contains("Ok")));
    }
}
