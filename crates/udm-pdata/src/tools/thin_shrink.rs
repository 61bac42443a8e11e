//! `udm thin shrink`: options and printing over [`crate::thin_shrink`].

use super::opts::{parse, Arg, Item, Spec, HELP};
use super::Console;

const USAGE: &str =
    "Usage: udm thin shrink --metadata <meta dev> --data <data dev> --nr-blocks <data blocks>
Shrinks an inactive pool's data device, moving mapped blocks above the new end down.
A regular data file is truncated to the new size.
";

const SPECS: &[Spec] = &[
    HELP,
    Spec::new("metadata", &["--metadata"], Arg::Value),
    Spec::new("data", &["--data"], Arg::Value),
    Spec::new("nr-blocks", &["--nr-blocks"], Arg::Value),
];

/// `udm thin shrink …`.
pub fn main(args: &[String], con: &mut Console<'_>) -> i32 {
    let (mut meta, mut data, mut nr) = (None, None, None);
    for item in parse(args, SPECS, true) {
        match item {
            Item::Opt { id: "help", .. } => return con.help(USAGE),
            Item::Opt {
                id: "metadata",
                value,
                ..
            } => meta = value,
            Item::Opt {
                id: "data", value, ..
            } => data = value,
            Item::Opt { value, .. } => match value.map(|v| v.parse::<u64>()) {
                Some(Ok(n)) => nr = Some(n),
                _ => return con.fail("--nr-blocks needs a number of data blocks"),
            },
            _ => return con.usage_error(None, USAGE),
        }
    }
    let (Some(meta), Some(data), Some(nr)) = (meta, data, nr) else {
        return con.usage_error(None, USAGE);
    };
    match crate::thin_shrink::shrink_paths(meta.as_ref(), data.as_ref(), nr) {
        Ok(r) => {
            let _ = writeln!(
                con.out,
                "moved {} blocks; data device shrunk from {} to {} blocks ({} sectors)",
                r.moves.len(),
                r.old_nr_blocks,
                r.new_nr_blocks,
                r.new_nr_blocks * r.data_block_size as u64
            );
            0
        }
        Err(e) => con.fail(format!("thin shrink: {e}")),
    }
}
