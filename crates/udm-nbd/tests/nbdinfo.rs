//! The server against `nbdinfo` (libnbd): export info as JSON, the export list, and the
//! allocation map of a sparse file.

mod common;

use common::*;
use std::process::Command;
use std::sync::Arc;
use udm_io::{FileDevice, Sectors};
use udm_testkit::{require_tool, run};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("nbdinfo JSON {e}: {s}"))
}

#[test]
fn nbdinfo_json_sizes_and_flags() {
    if !require_tool("nbdinfo") {
        return;
    }
    let (s, _, _) = serve_standard();
    let v = json(&run(Command::new("nbdinfo")
        .arg("--json")
        .arg(s.uri("mem"))));
    assert_eq!(v["protocol"], "newstyle-fixed");
    assert_eq!(v["structured"], true);
    let e = &v["exports"][0];
    assert_eq!(e["export-name"], "mem");
    assert_eq!(e["export-size"], 4 << 20);
    assert_eq!(e["is_read_only"], false);
    assert_eq!(e["block_size_minimum"], 512);
    assert_eq!(e["block_size_preferred"], 4096);
    assert_eq!(e["block_size_maximum"], 32 << 20);
    for f in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_df",
        "can_multi_conn",
    ] {
        assert_eq!(e[f], true, "{f}");
    }
    assert!(e["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "base:allocation"));

    let v = json(&run(Command::new("nbdinfo")
        .arg("--json")
        .arg(s.uri("pattern"))));
    let e = &v["exports"][0];
    assert_eq!(e["is_read_only"], true);
    assert_eq!(e["can_trim"], false);
    assert_eq!(e["export-size"], 4 << 20);
}

#[test]
fn nbdinfo_list() {
    if !require_tool("nbdinfo") {
        return;
    }
    let (s, _, _) = serve_standard();
    let uri = format!("nbd+unix://?socket={}", s.sock.display());
    let v = json(&run(Command::new("nbdinfo")
        .arg("--list")
        .arg("--json")
        .arg(&uri)));
    let names: Vec<String> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["file", "mem", "pattern"]);
    let sizes: Vec<u64> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [8 << 20, 4 << 20, 4 << 20]);
    let text = run(Command::new("nbdinfo").arg("--list").arg(&uri));
    assert!(text.contains("export=\"mem\""), "{text}");
}

#[test]
fn nbdinfo_default_export_and_unknown() {
    if !require_tool("nbdinfo") {
        return;
    }
    let s = serve();
    let img = udm_testkit::image(s.dir.path(), "one.img", 1 << 20);
    s.add(
        "one",
        Arc::new(FileDevice::open(&img, false).unwrap()),
        false,
    );
    let uri = format!("nbd+unix:///?socket={}", s.sock.display());
    assert_eq!(
        run(Command::new("nbdinfo").arg("--size").arg(&uri)).trim(),
        (1u64 << 20).to_string()
    );
    let out = output(Command::new("nbdinfo").arg("--size").arg(s.uri("missing")));
    assert!(!out.status.success());
    s.add(
        "two",
        Arc::new(udm_io::MemDevice::new("two", Sectors(8))),
        false,
    );
    let out = output(Command::new("nbdinfo").arg("--size").arg(&uri));
    assert!(
        !out.status.success(),
        "empty name with two exports must fail"
    );
}

#[test]
fn nbdinfo_map_sparse_file() {
    if !require_tool("nbdinfo") {
        return;
    }
    let (s, _, img) = serve_standard();
    // Data at [1 MiB, 1 MiB + 128 KiB); the rest of the 8 MiB file is a hole.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &noise(128 << 10, 3), 1 << 20).unwrap();
    f.sync_all().unwrap();
    let v = json(&run(Command::new("nbdinfo")
        .arg("--map")
        .arg("--json")
        .arg(s.uri("file"))));
    let runs: Vec<(u64, u64, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["type"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(runs.iter().map(|r| r.1).sum::<u64>(), 8 << 20, "{runs:?}");
    assert_eq!(runs[0], (0, 1 << 20, 3), "{runs:?}");
    assert_eq!(runs[1], (1 << 20, 128 << 10, 0), "{runs:?}");
    assert_eq!(
        runs[2],
        (
            (1 << 20) + (128 << 10),
            (8 << 20) - (1 << 20) - (128 << 10),
            3
        ),
        "{runs:?}"
    );
    let text = run(Command::new("nbdinfo").arg("--map").arg(s.uri("file")));
    assert!(text.contains("hole,zero"), "{text}");
    assert!(text.contains("data"), "{text}");
}
