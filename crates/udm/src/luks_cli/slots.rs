//! Keyslot commands: luksAddKey, luksRemoveKey, luksChangeKey, luksKillSlot.

use super::{fail, Failed, Io, Opts};

fn todo(io: &mut Io<'_>, what: &str) -> Result<(), Failed> {
    Err(fail(
        io,
        libc::ENOTSUP,
        format!("{what}: not implemented in udm yet."),
    ))
}

pub fn add_key(io: &mut Io<'_>, _o: &Opts, _pos: &[String]) -> Result<(), Failed> {
    todo(io, "luksAddKey")
}
pub fn remove_key(io: &mut Io<'_>, _o: &Opts, _pos: &[String]) -> Result<(), Failed> {
    todo(io, "luksRemoveKey")
}
pub fn change_key(io: &mut Io<'_>, _o: &Opts, _pos: &[String]) -> Result<(), Failed> {
    todo(io, "luksChangeKey")
}
pub fn kill_slot(io: &mut Io<'_>, _o: &Opts, _pos: &[String]) -> Result<(), Failed> {
    todo(io, "luksKillSlot")
}
