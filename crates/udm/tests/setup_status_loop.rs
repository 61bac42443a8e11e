//! `cryptsetup status` and `veritysetup status` on loop devices name the loop device and the
//! file behind it, as the real tools print them (captured in refvm, kernel 6.1,
//! cryptsetup 2.6.1: `device:  /dev/loop0` + `loop:    /tmp/d.img`; `data device:` +
//! `data loop:`, `hash device:` + `hash loop:`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use udm_testkit::loopdev::LoopDev;
use udm_testkit::tool::root_hash;
use udm_testkit::Daemon;

fn tool(d: &Daemon, name: &str, args: &[&str]) -> Output {
    let link = d.dir.path().join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_udm"), &link).unwrap();
    }
    Command::new(&link)
        .args(args)
        .env("UDM_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

fn p(x: &Path) -> String {
    x.display().to_string()
}

#[test]
fn status_names_loop_devices_and_their_files() {
    if !udm_testkit::require_tool("losetup") || !udm_testkit::require_tool("veritysetup") {
        return;
    }
    let d = Daemon::start(Path::new(env!("CARGO_BIN_EXE_udm")));
    let data: PathBuf = udm_testkit::image(d.dir.path(), "d.img", 16 << 20);
    let hash: PathBuf = udm_testkit::image(d.dir.path(), "h.img", 16 << 20);
    let Some(l0) = LoopDev::attach(&data) else {
        return;
    };
    let Some(l1) = LoopDev::attach(&hash) else {
        return;
    };
    let key = d.dir.path().join("k");
    std::fs::write(&key, [b'Z'; 64]).unwrap();
    ok(tool(
        &d,
        "cryptsetup",
        &[
            "open",
            "--type",
            "plain",
            "--cipher",
            "aes-xts-plain64",
            "--key-size",
            "256",
            "--key-file",
            &p(&key),
            l0.path(),
            "pl",
        ],
    ));
    let st = ok(tool(&d, "cryptsetup", &["status", "pl"]));
    ok(tool(&d, "cryptsetup", &["close", "pl"]));
    assert_eq!(
        st,
        format!(
            "/dev/mapper/pl is active.\n  type:    PLAIN\n  cipher:  aes-xts-plain64\n  \
             keysize: 256 bits\n  key location: dm-crypt\n  device:  {}\n  loop:    {}\n  \
             sector size:  512\n  offset:  0 sectors\n  size:    32768 sectors\n  \
             mode:    read/write\n",
            l0.path(),
            p(&data)
        )
    );
    // The hash tree is written by the real veritysetup (udm's format is tested elsewhere).
    let f = Command::new("/usr/sbin/veritysetup")
        .args(["format", "--salt", "00", l0.path(), l1.path()])
        .output()
        .unwrap();
    assert!(f.status.success(), "{f:?}");
    let out = String::from_utf8(f.stdout).unwrap();
    let root = root_hash(&out);
    ok(tool(
        &d,
        "veritysetup",
        &["open", l0.path(), "v", l1.path(), &root],
    ));
    let st = ok(tool(&d, "veritysetup", &["status", "v"]));
    ok(tool(&d, "veritysetup", &["close", "v"]));
    assert_eq!(
        st,
        format!(
            "/dev/mapper/v is active.\n  type:        VERITY\n  status:      verified\n  \
             hash type:   1\n  data block:  4096\n  hash block:  4096\n  hash name:   sha256\n  \
             salt:        00\n  data device: {}\n  data loop:   {}\n  size:        32768 sectors\n  \
             mode:        readonly\n  hash device: {}\n  hash loop:   {}\n  \
             hash offset: 8 sectors\n  root hash:   {root}\n",
            l0.path(),
            p(&data),
            l1.path(),
            p(&hash)
        )
    );
}
