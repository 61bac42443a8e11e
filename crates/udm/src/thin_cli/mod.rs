//! `udm thin <tool>` and the thin-provisioning-tools names (`thin_dump`, `thin_check`, …):
//! argv and the standard streams handed to `udm_pdata::tools`, which holds the tools'
//! options, output and exit codes.

use std::io::Write;
use udm_pdata::tools::{run_thin, Console};

/// The tools, by their thin-provisioning-tools names.
pub const TOOLS: &[&str] = udm_pdata::tools::THIN_TOOLS;

/// `udm thin <tool> …`.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(|s| s.as_str()) {
        Some("shrink") => run("thin_shrink", &args[1..]),
        Some(t) if TOOLS.contains(&format!("thin_{t}").as_str()) => {
            run(&format!("thin_{t}"), &args[1..])
        }
        Some(t) if TOOLS.contains(&t) => run(t, &args[1..]),
        _ => {
            eprintln!(
                "Usage: udm thin {{dump|check|restore|repair|ls|delta|trim|metadata_size|shrink}} [options] …"
            );
            1
        }
    }
}

/// Run `tool` (one of [`TOOLS`], or `thin_shrink`) with its arguments.
pub fn run(tool: &str, args: &[String]) -> i32 {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let rc = run_thin(
        tool,
        args,
        &mut Console {
            out: &mut out,
            err: &mut err,
        },
    );
    let _ = out.flush();
    rc
}
