//! Registry helpers for engine tests (cargo feature `registry`): create a device the way
//! `dmsetup create` does, against an in-process `udm_core::Registry`.

use udm_core::{DevSel, DmError, Registry};

/// Select a device by name.
pub fn sel(name: &str) -> DevSel {
    DevSel::Name(name.to_string())
}

/// `dmsetup create NAME --table TABLE`: create, load, resume; on a load or resume failure
/// the device is removed again (as libdm does). Panics if `table` does not parse.
pub fn create(reg: &Registry, name: &str, table: &str) -> Result<(), DmError> {
    create_with(reg, name, table, false)
}

/// As [`create`], with the table loaded read-only when `read_only`.
pub fn create_with(
    reg: &Registry,
    name: &str,
    table: &str,
    read_only: bool,
) -> Result<(), DmError> {
    let lines = udm_core::parse_table_text(table).expect("table text parses");
    reg.create(name, "")?;
    let r = reg
        .load(&sel(name), &lines, read_only)
        .and_then(|_| reg.resume(&sel(name)).map(|_| ()));
    if r.is_err() {
        let _ = reg.remove(&sel(name), false);
    }
    r
}
