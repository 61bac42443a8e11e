//! udm-lvm: lvm2's commands as a library. A command is a parsed [`Cmdline`] (or
//! [`report::ReportOpts`] for `pvs`/`vgs`/`lvs`) run against the PVs it may read, writing
//! lvm2's messages to the given writers and returning lvm2's exit status; the `udm` binary
//! only turns argv into these and prints.
//!
//! - [`devices`]: which devices are read (`--devices`, devices files) and how they open
//!   (image files, block devices, udm devices through the daemon's NBD export).
//! - [`session`]: labelled PVs found, a VG with its disks, committing a changed VG.
//! - [`activate`]: loading the tables `udm_formats::lvm::dmplan` plans into the daemon.
//! - [`report`]: `pvs`/`vgs`/`lvs` over `udm_report`; [`display`]: the `*display` forms.
//! - [`scan`]: `pvscan`, `vgscan`, `lvscan`, `vgck`.
//! - [`pvresize`]; [`backup`]: `vgcfgbackup`, `vgcfgrestore`.
//! - [`vgcmds`], [`lvcmds`], [`lvchange`]: the commands that change PVs, VGs and LVs; [`pools`]: thin
//!   pools, thin volumes, cache pools and caches; [`raid`]: raid and mirror LVs;
//!   [`thinsnap`]: thin snapshots and external origins; [`convert`]: `lvconvert`.

pub mod activate;
pub mod backup;
pub mod convert;
pub mod devices;
pub mod display;
pub mod lvchange;
pub mod lvcmds;
pub mod pools;
pub mod pvresize;
pub mod raid;
pub mod report;
pub mod scan;
pub mod session;
pub mod thinsnap;
pub mod vgcmds;

use std::io::Write;

pub use session::Cmdline;

/// lvm2's exit status for a command that failed.
pub const ECMD_FAILED: i32 = 5;

/// Prints lvm2's indented error line and gives the command's failure status.
pub(crate) fn fail(err: &mut dyn std::io::Write, m: &str) -> i32 {
    let _ = writeln!(err, "  {m}");
    ECMD_FAILED
}
/// lvm2's exit status for a bad command line.
pub const EINVALID_CMD_LINE: i32 = 3;

/// The commands besides the reports (also the names the binary answers to).
pub const COMMANDS: &[&str] = &[
    "pvcreate",
    "pvremove",
    "vgcreate",
    "vgextend",
    "vgreduce",
    "vgremove",
    "vgrename",
    "vgchange",
    "lvcreate",
    "lvremove",
    "lvrename",
    "lvextend",
    "lvreduce",
    "lvresize",
    "lvchange",
    "pvdisplay",
    "vgdisplay",
    "lvdisplay",
    "pvscan",
    "vgscan",
    "lvscan",
    "vgck",
    "pvresize",
    "vgcfgbackup",
    "vgcfgrestore",
    "lvconvert",
];

/// Run command `cmd` (one of [`COMMANDS`]) with its parsed command line.
pub fn run(cmd: &str, cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match cmd {
        "pvcreate" => vgcmds::pvcreate_cmd(cl, out, err),
        "pvremove" => vgcmds::pvremove_cmd(cl, out, err),
        "vgcreate" => vgcmds::vgcreate_cmd(cl, out, err),
        "vgextend" => vgcmds::vgextend_cmd(cl, out, err),
        "vgreduce" => vgcmds::vgreduce_cmd(cl, out, err),
        "vgremove" => vgcmds::vgremove_cmd(cl, out, err),
        "vgrename" => vgcmds::vgrename_cmd(cl, out, err),
        "vgchange" => vgcmds::vgchange_cmd(cl, out, err),
        "lvcreate" => lvcmds::lvcreate_cmd(cl, out, err),
        "lvremove" => lvcmds::lvremove_cmd(cl, out, err),
        "lvrename" => lvcmds::lvrename_cmd(cl, out, err),
        "lvchange" => lvchange::lvchange_cmd(cl, out, err),
        "lvextend" | "lvreduce" | "lvresize" => lvcmds::lvresize_cmd(cmd, cl, out, err),
        "pvdisplay" | "vgdisplay" | "lvdisplay" => display::display_cmd(cmd, cl, out, err),
        "pvscan" => scan::pvscan_cmd(cl, out, err),
        "vgscan" => scan::vgscan_cmd(cl, out, err),
        "lvscan" => scan::lvscan_cmd(cl, out, err),
        "vgck" => scan::vgck_cmd(cl, out, err),
        "pvresize" => pvresize::pvresize_cmd(cl, out, err),
        "vgcfgbackup" => backup::vgcfgbackup_cmd(cl, out, err),
        "vgcfgrestore" => backup::vgcfgrestore_cmd(cl, out, err),
        "lvconvert" => convert::lvconvert_cmd(cl, out, err),
        _ => {
            let _ = writeln!(
                err,
                "  udm lvm: no such command '{cmd}' ({})",
                COMMANDS.join(", ")
            );
            EINVALID_CMD_LINE
        }
    }
}
