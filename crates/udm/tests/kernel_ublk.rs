//! ublk in refvm (the real kernel's ublk_drv): `udm daemon --ublk` turns a udm linear
//! device into /dev/ublkb0; mkfs.ext4, mount, fio with verify, umount, e2fsck clean, and
//! `udm remove` makes the block device go away.

use std::path::Path;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

#[cfg(feature = "ublk")]
#[test]
fn kernel_ublk_mkfs_mount_fio_verify_remove() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::copy(bin(), share.join("udm")).unwrap();
    let disk = udm_testkit::image(dir.path(), "disk.img", 96 << 20);
    let script = r#"set -e
modprobe ublk_drv
./udm daemon --socket /tmp/udm.ctl --nbd-socket /tmp/udm.nbd --no-fuse --ublk 2> daemon.log &
for i in $(seq 300); do [ -S /tmp/udm.ctl ] && break; sleep 0.1; done
export UDM_SOCKET=/tmp/udm.ctl
./udm create u --table "0 196608 linear /dev/vda 0"
for i in $(seq 300); do [ -b /dev/ublkb0 ] && break; sleep 0.1; done
echo "size $(blockdev --getsize64 /dev/ublkb0)"
echo "queues $(ls /sys/block/ublkb0/mq | wc -l) cpus $(nproc)"
mkfs.ext4 -q /dev/ublkb0
mkdir -p /mnt/u
mount /dev/ublkb0 /mnt/u
# One job per CPU pinned to it, so every hardware queue carries I/O.
fio --name=v --directory=/mnt/u --size=8m --rw=randwrite --bs=4k --iodepth=1 \
  --numjobs=$(nproc) --cpus_allowed_policy=split --cpus_allowed=0-$(($(nproc) - 1)) \
  --ioengine=psync --direct=1 --verify=crc32c --verify_fatal=1 --verify_state_save=0 \
  --output=fio.txt
echo "fio $?"
# Requests were served on every queue (the kernel counts dispatches per hardware queue).
for q in /sys/kernel/debug/block/ublkb0/hctx*; do
  [ -e "$q/dispatched" ] && echo "hctx $(basename $q) $(awk '{s+=$2} END {print s+0}' $q/dispatched)" || true
done
umount /mnt/u
e2fsck -fn /dev/ublkb0 > fsck.txt 2>&1
echo "fsck $?"
./udm remove u
for i in $(seq 100); do [ -b /dev/ublkb0 ] || break; sleep 0.1; done
[ -b /dev/ublkb0 ] || echo gone
kill %1
wait %1 || true
"#;
    let (out, err, code) = udm_testkit::refvm_run(&run, &[&disk], Some(&share), script);
    let log = std::fs::read_to_string(share.join("daemon.log")).unwrap_or_default();
    eprintln!("{out}");
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}\n{log}");
    assert!(
        out.contains(&format!("size {}", 96u64 << 20)),
        "{out}\n{log}"
    );
    assert!(out.contains("fio 0"), "{out}");
    // One hardware queue per guest CPU (multi-queue).
    let q = out
        .lines()
        .find_map(|l| l.strip_prefix("queues "))
        .unwrap_or_else(|| panic!("no queue count: {out}"));
    let w: Vec<&str> = q.split_whitespace().collect();
    assert_eq!((w.len(), w.get(1)), (3, Some(&"cpus")), "{out}");
    assert_eq!(w[0], w[2], "one queue per CPU: {out}");
    assert!(w[0].parse::<u32>().unwrap() >= 2, "{out}");
    // Where the kernel shows per-queue dispatch counts, every queue served requests.
    for l in out.lines().filter(|l| l.starts_with("hctx ")) {
        let n: u64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 0, "an idle hardware queue: {out}");
    }
    assert!(out.contains("fsck 0"), "{out}");
    assert!(out.contains("gone"), "{out}\n{log}");
    let fio = std::fs::read_to_string(share.join("fio.txt")).unwrap_or_default();
    assert!(!fio.contains("verify: bad"), "{fio}");
}

/// `udm daemon --ublk` where ublk cannot work: it exits at once with a failure status and
/// `reason` on stderr.
fn ublk_refused(reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("control");
    let mut child = std::process::Command::new(bin())
        .arg("daemon")
        .arg("--socket")
        .arg(&ctl)
        .arg("--nbd-socket")
        .arg(dir.path().join("nbd.sock"))
        .args(["--no-fuse", "--ublk"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A hang guard, not a timing check: the refusal comes before the daemon serves anything.
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("`udm daemon --ublk` kept running; expected it to refuse ({reason})");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "daemon --ublk succeeded: {err}");
    assert!(err.contains(reason), "stderr lacks {reason:?}: {err}");
}

/// Built without the feature, `--ublk` is refused with the reason.
#[cfg(not(feature = "ublk"))]
#[test]
fn kernel_ublk_needs_the_feature() {
    ublk_refused("built without the `ublk` feature");
}

/// Built with the feature, `--ublk` needs the kernel's ublk_drv: refused with the reason
/// when /dev/ublk-control is missing, serving when it is there.
#[cfg(feature = "ublk")]
#[test]
fn ublk_needs_the_kernel_driver() {
    if Path::new("/dev/ublk-control").exists() {
        let d = udm_testkit::Daemon::start_with(bin(), &["--no-fuse", "--ublk"]);
        assert!(d.socket.exists(), "{}", d.log());
    } else {
        ublk_refused("the kernel has no ublk");
    }
}
