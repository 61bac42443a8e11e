//! udm-testkit: helpers shared by udm's tests — outside-tool probes that obey
//! `UDM_REQUIRE_TOOLS`, and image-file helpers.

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when `tool` is on PATH. When it is missing: with `UDM_REQUIRE_TOOLS=1` (CI) this
/// panics so the run fails; otherwise it prints a SKIP line and returns false.
pub fn require_tool(tool: &str) -> bool {
    if which(tool).is_some() {
        return true;
    }
    if std::env::var("UDM_REQUIRE_TOOLS")
        .map(|v| v == "1")
        .unwrap_or(false)
    {
        panic!("required tool `{tool}` is missing (UDM_REQUIRE_TOOLS=1)");
    }
    eprintln!("SKIP: `{tool}` not installed");
    false
}

/// Full path of `tool` on PATH (also /sbin and /usr/sbin).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/sbin", "/usr/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

/// Create a sparse image file of `bytes` bytes.
pub fn image(dir: &Path, name: &str, bytes: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).expect("create image");
    f.set_len(bytes).expect("size image");
    p
}

/// Run a command, panic with its stderr if it fails, return stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The reference VM's `run.sh` (real kernel device-mapper), when it is built: `UDM_REFVM` or
/// `../shared/refvm/run.sh` beside the checkout, with its cache (`REFVM_CACHE`, default
/// /var/cache/refvm) present. Missing → panics under `UDM_REQUIRE_TOOLS=1`, else SKIP + None.
pub fn refvm() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = std::env::var_os("UDM_REFVM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/refvm/run.sh"));
    let cache = std::env::var_os("REFVM_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/refvm"));
    let built = cache.join("stamps").is_dir();
    if run.is_file() && built {
        return Some(run);
    }
    if std::env::var("UDM_REQUIRE_TOOLS").map(|v| v == "1").unwrap_or(false) {
        panic!("refvm is not available ({} built: {built}); run ../shared/refvm/build.sh", run.display());
    }
    eprintln!("SKIP: refvm not available ({})", run.display());
    None
}

/// Run a script in refvm with the given disks and shared dir; returns (stdout, stderr, code).
pub fn refvm_run(run: &Path, disks: &[&Path], share: Option<&Path>, script: &str) -> (String, String, i32) {
    let mut cmd = Command::new(run);
    for d in disks {
        cmd.arg("--disk").arg(d);
    }
    if let Some(s) = share {
        cmd.arg("--share").arg(s);
    }
    cmd.arg("--").arg(script).env("REFVM_QUIET_TCG", "1");
    let out = cmd.output().expect("run refvm");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}
