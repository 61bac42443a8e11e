//! `luksFormat`.

use super::{fail, Failed, Io, Opts};

/// `luksFormat <device> [<key file>]`.
pub fn format(io: &mut Io<'_>, _o: &Opts, _pos: &[String]) -> Result<(), Failed> {
    Err(fail(
        io,
        libc::ENOTSUP,
        "luksFormat: not implemented in udm yet.",
    ))
}
