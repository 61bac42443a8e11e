//! The cache and era tools of thin-provisioning-tools (`cache_check`, `cache_dump`, …,
//! `era_invalidate`) and `udm cache <tool>` / `udm era <tool>`: argv goes to
//! `udm_pdata::tools`, which does the work; this prints its output.

use std::io::Write;

/// Whether `name` is one of the tools.
pub fn is_tool(name: &str) -> bool {
    udm_pdata::tools::TOOLS.contains(&name)
}

/// Run tool `name`, invoked as `prog`, with `args` (without the program name).
pub fn run(name: &str, prog: &str, args: &[String]) -> i32 {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let code = udm_pdata::tools::run(name, prog, args, &mut out, &mut err);
    let _ = out.flush();
    code
}

/// `udm cache <tool> …` / `udm era <tool> …` (`check` or `cache_check` both name a tool).
pub fn group(group: &str, args: &[String]) -> i32 {
    let name = args.first().map(|t| {
        if t.starts_with(&format!("{group}_")) {
            t.clone()
        } else {
            format!("{group}_{t}")
        }
    });
    match name {
        Some(n) if is_tool(&n) => run(&n, &n, &args[1..]),
        _ => {
            let tools: Vec<&str> = udm_pdata::tools::TOOLS
                .iter()
                .filter_map(|t| t.strip_prefix(&format!("{group}_")))
                .collect();
            eprintln!("Usage: udm {group} {{{}}} [options] …", tools.join("|"));
            1
        }
    }
}
