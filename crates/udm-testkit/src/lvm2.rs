//! Real lvm2 as a test oracle, confined to given devices: every command runs with
//! activation off, no backups or archives, no devices file and a filter accepting only the
//! test's devices, so it never touches the host's disks or the kernel's device-mapper.

use std::process::{Command, Output};

/// lvm2 commands limited to a set of devices.
pub struct Lvm2 {
    config: String,
}

impl Lvm2 {
    /// lvm2 restricted to `devices`; None (SKIP) without the `lvm` tool, a panic under
    /// `UDM_REQUIRE_TOOLS=1`.
    pub fn new(devices: &[&str]) -> Option<Lvm2> {
        if !crate::require_tool("lvm") {
            return None;
        }
        let accept: Vec<String> = devices.iter().map(|d| format!("\"a|^{d}$|\"")).collect();
        let config = format!(
            "global{{activation=0}} backup{{backup=0 archive=0}} \
             devices{{use_devicesfile=0 scan_lvs=0 obtain_device_list_from_udev=0 \
             filter=[{},\"r|.*|\"]}}",
            accept.join(",")
        );
        Some(Lvm2 { config })
    }

    /// The same lvm2 reading archives and backups from the given directories (still
    /// writing none).
    pub fn with_backup_dirs(&self, backup: &std::path::Path, archive: &std::path::Path) -> Lvm2 {
        let dirs = format!(
            "backup{{backup=0 archive=0 backup_dir=\"{}\" archive_dir=\"{}\"}}",
            backup.display(),
            archive.display()
        );
        Lvm2 {
            config: self.config.replace("backup{backup=0 archive=0}", &dirs),
        }
    }

    /// Run `lvm CMD ARGS…` and return its output whatever the exit status.
    pub fn cmd(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new("lvm")
            .arg(cmd)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .unwrap_or_else(|e| panic!("spawn lvm {cmd}: {e}"))
    }

    /// Run `lvm CMD ARGS…`, panic with its output unless it succeeds; return stdout.
    pub fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.cmd(cmd, args);
        if !out.status.success() {
            panic!(
                "lvm {cmd} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Sparse PV images `pv0.img`, `pv1.img`… in `dir`, of the given sizes in MiB.
pub fn pv_images(dir: &std::path::Path, sizes_mib: &[u64]) -> Vec<std::path::PathBuf> {
    sizes_mib
        .iter()
        .enumerate()
        .map(|(i, m)| crate::image(dir, &format!("pv{i}.img"), m << 20))
        .collect()
}

/// A loop device over each of `images`, in order; None (SKIP) where any cannot be had.
pub fn attach_all(images: &[std::path::PathBuf]) -> Option<Vec<crate::loopdev::LoopDev>> {
    images
        .iter()
        .map(|i| crate::loopdev::LoopDev::attach(i))
        .collect()
}

/// PV images ([`pv_images`]) in a fresh temporary directory, a loop device over each, and
/// lvm2 confined to those devices: `(dir, images, loops, lvm)`. None (SKIP) without the
/// `lvm` tool (a panic under `UDM_REQUIRE_TOOLS=1`) or without loop devices.
#[allow(clippy::type_complexity)]
pub fn loop_pvs(
    sizes_mib: &[u64],
) -> Option<(
    tempfile::TempDir,
    Vec<std::path::PathBuf>,
    Vec<crate::loopdev::LoopDev>,
    Lvm2,
)> {
    if !crate::require_tool("lvm") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let images = pv_images(dir.path(), sizes_mib);
    let loops = attach_all(&images)?;
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    let lvm = Lvm2::new(&d)?;
    Some((dir, images, loops, lvm))
}

/// What every udm-against-lvm2 LVM test starts from: loop-device PVs of the given sizes, real
/// lvm2 confined to them, a running udm daemon and the udm CLI bound to it. Fields drop in
/// order: the CLI and daemon before the loop devices and their directory.
pub struct LvmRig {
    pub e: crate::udmcli::UdmCli,
    pub daemon: crate::Daemon,
    pub lvm: Lvm2,
    pub loops: Vec<crate::loopdev::LoopDev>,
    pub images: Vec<std::path::PathBuf>,
    pub dir: tempfile::TempDir,
    /// The PVs' paths joined by commas, for `--devices`.
    pub devs: String,
}

impl LvmRig {
    /// `None` when lvm2 or loop devices are missing (a skip unless `UDM_REQUIRE_TOOLS=1`).
    pub fn start(sizes_mib: &[u64], udm: &std::path::Path) -> Option<LvmRig> {
        let (dir, images, loops, lvm) = loop_pvs(sizes_mib)?;
        let devs = loops.iter().map(|l| l.path()).collect::<Vec<_>>().join(",");
        let daemon = crate::Daemon::start(udm);
        let e = crate::udmcli::UdmCli {
            bin: udm.to_path_buf(),
            socket: daemon.socket.clone(),
            state: dir.path().join("state"),
        };
        Some(LvmRig {
            e,
            daemon,
            lvm,
            loops,
            images,
            dir,
            devs,
        })
    }

    /// The PVs' device paths.
    pub fn paths(&self) -> Vec<&str> {
        self.loops.iter().map(|l| l.path()).collect()
    }

    /// `udm lvm CMD --devices <the PVs> ARGS…`, which must succeed; its stdout.
    pub fn run(&self, cmd: &str, args: &[&str]) -> String {
        self.e
            .ok(cmd, &[&["--devices", &self.devs][..], args].concat())
    }
}

/// The `logical_volumes` section of a metadata text (a backup file or a metadata area's
/// copy) line by line, without ids, creation times and hosts, and comments: what two VGs
/// made by the same commands share.
pub fn lv_section(text: &str) -> Vec<String> {
    let start = text.find("\tlogical_volumes {").expect("logical_volumes");
    text[start..]
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("id = ")
                || t.starts_with("creation_time = ")
                || t.starts_with("creation_host = "))
        })
        .map(|l| l.split("\t#").next().unwrap().trim_end().to_string())
        .collect()
}

/// Assert two [`lv_section`]s are equal, naming the first differing line with the lines
/// before it.
pub fn assert_same_lvs(ours: &[String], theirs: &[String]) {
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(
            a,
            b,
            "metadata line {i} after {:?}",
            &theirs[i.saturating_sub(12)..i]
        );
    }
    assert_eq!(ours.len(), theirs.len(), "metadata lines");
}
