//! `udm thin shrink`: argv and printing over `udm_pdata::thin_shrink`.

const USAGE: &str =
    "Usage: udm thin shrink --metadata <meta dev> --data <data dev> --nr-blocks <data blocks>
Shrinks an inactive pool's data device, moving mapped blocks above the new end down.
A regular data file is truncated to the new size.
";

/// `udm thin shrink …`.
pub fn main(args: &[String]) -> i32 {
    let (mut meta, mut data, mut nr) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return 0;
            }
            "--metadata" => meta = it.next().cloned(),
            "--data" => data = it.next().cloned(),
            "--nr-blocks" => match it.next().map(|v| v.parse::<u64>()) {
                Some(Ok(n)) => nr = Some(n),
                _ => {
                    eprintln!("--nr-blocks needs a number of data blocks");
                    return 1;
                }
            },
            _ => {
                eprint!("{USAGE}");
                return 1;
            }
        }
    }
    let (Some(meta), Some(data), Some(nr)) = (meta, data, nr) else {
        eprint!("{USAGE}");
        return 1;
    };
    match udm_pdata::thin_shrink::shrink_paths(meta.as_ref(), data.as_ref(), nr) {
        Ok(r) => {
            println!(
                "moved {} blocks; data device shrunk from {} to {} blocks ({} sectors)",
                r.moves.len(),
                r.old_nr_blocks,
                r.new_nr_blocks,
                r.new_nr_blocks * r.data_block_size as u64
            );
            0
        }
        Err(e) => {
            eprintln!("thin shrink: {e}");
            1
        }
    }
}
