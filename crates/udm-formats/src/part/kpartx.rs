//! kpartx's rules for the mappings it makes from a partition table: partition names, the
//! order slices are handled in, and which device-mapper UUIDs are its partitions.

use super::Slice;

/// kpartx's partition name: `/` after the first character becomes `!`.
pub fn partname(mapname: &str, delim: &str, n: usize) -> String {
    let s = format!("{mapname}{delim}{n}");
    s.char_indices()
        .map(|(i, c)| if i > 0 && c == '/' { '!' } else { c })
        .collect()
}

/// The order kpartx handles slices in: non-empty uncontained ones, then contained ones.
pub fn order(slices: &[Slice]) -> (Vec<usize>, Vec<usize>) {
    let used = || (0..slices.len()).filter(|&i| slices[i].size != 0);
    (
        used().filter(|&i| slices[i].container.is_none()).collect(),
        used().filter(|&i| slices[i].container.is_some()).collect(),
    )
}

/// kpartx's `check_uuid`: is `part_uuid` a kpartx partition UUID of `uuid`?
pub fn check_uuid(uuid: &str, part_uuid: &str) -> Result<(), &'static str> {
    match part_uuid.split_once('-') {
        Some((_, rest)) if part_uuid.starts_with("part") => {
            if rest == uuid {
                Ok(())
            } else {
                Err("a partition of a different device")
            }
        }
        _ => Err("not a kpartx partition"),
    }
}
