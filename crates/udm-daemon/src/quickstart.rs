//! The quickstart (`udm` with no arguments): an image file in the state directory and a
//! linear device `udm0` over it.

use crate::DaemonError;
use std::path::Path;
use udm_core::{DevSel, Registry, TableLine};
use udm_io::Sectors;

/// Create `udm0`: a linear device over `udm0.img` in the state directory.
pub(crate) fn device(
    registry: &Registry,
    nbd_socket: &Path,
    dir: &Path,
) -> Result<(), DaemonError> {
    std::fs::create_dir_all(dir).map_err(DaemonError::io(format!("create {}", dir.display())))?;
    let img = dir.join("udm0.img");
    if !img.exists() {
        std::fs::File::create(&img)?.set_len(1 << 30)?;
    }
    let size = std::fs::metadata(&img)?.len() / 512;
    let name = "udm0";
    registry
        .create(name, "")
        .map_err(|e| DaemonError::Config(format!("create {name}: {e}")))?;
    let sel = DevSel::Name(name.into());
    let line = TableLine {
        start: Sectors(0),
        len: Sectors(size),
        ttype: "linear".into(),
        // Escaped: a state directory with a space in its path is one table word.
        params: format!("{} 0", udm_core::escape_arg(&img.display().to_string())),
    };
    registry
        .load(&sel, &[line], false)
        .map_err(|e| DaemonError::Config(format!("load {name}: {e}")))?;
    registry
        .resume(&sel)
        .map_err(|e| DaemonError::Config(format!("resume {name}: {e}")))?;
    eprintln!(
        "udm: device {name}: linear over {} ({} MiB)",
        img.display(),
        size / 2048
    );
    eprintln!(
        "udm: try   nbdinfo 'nbd+unix:///{name}?socket={}'",
        nbd_socket.display()
    );
    eprintln!("udm: and   UDM_SOCKET=... udm ls / udm table {name}   (stop with Ctrl-C)");
    Ok(())
}
