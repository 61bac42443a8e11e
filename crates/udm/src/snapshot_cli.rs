//! `udm snapshot dump COW`: print a persistent snapshot COW's header and exception table
//! (old chunk -> new chunk, in on-disk order), for debugging and tests.

use std::path::Path;

const USAGE: &str = "Usage: udm snapshot dump COW   (COW: a block device or image file)\n";

pub fn main(args: &[String]) -> i32 {
    let [cmd, cow] = args else {
        eprint!("{USAGE}");
        return 2;
    };
    if cmd != "dump" {
        eprint!("{USAGE}");
        return 2;
    }
    match udm_targets::snapshot::cow::dump_file(Path::new(cow)) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("udm snapshot: {cow}: {e}");
            1
        }
    }
}
