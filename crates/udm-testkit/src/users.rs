//! A second local user for tests of what other users can and cannot do: `udmtest`, created
//! (`useradd -m`) when missing. Needs root: without it the tests skip, unless
//! `UDM_REQUIRE_TOOLS=1`, where they fail.

use std::process::Command;

/// The second user's name.
pub const NAME: &str = "udmtest";

/// The second user's (uid, gid), creating it if needed; `None` (after a SKIP line) when
/// this process is not root and `UDM_REQUIRE_TOOLS` is unset.
pub fn second_user() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, NAME]).output().ok()?;
        String::from_utf8(o.stdout).ok()?.trim().parse().ok()
    };
    let root = id_of_self() == 0;
    if !root {
        if std::env::var("UDM_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
            panic!("tests with a second local user need root (UDM_REQUIRE_TOOLS=1)");
        }
        eprintln!("SKIP: not root, no second local user");
        return None;
    }
    if id("-u").is_none() {
        // Two tests may race to create it; the loser's failure is fine if the user exists.
        let _ = Command::new("useradd").args(["-m", NAME]).status();
    }
    Some((
        id("-u").expect("useradd udmtest"),
        id("-g").expect("udmtest's group"),
    ))
}

fn id_of_self() -> u32 {
    let o = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(u32::MAX)
}

/// `setpriv --reuid udmtest --regid udmtest --init-groups PROGRAM`: a command run as the
/// second user (environment kept). setpriv execs the program itself, so killing the child
/// kills the program.
pub fn as_second_user(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", NAME, "--regid", NAME, "--init-groups", "--"])
        .arg(program);
    c
}
