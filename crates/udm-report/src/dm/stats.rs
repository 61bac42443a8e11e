//! The dmstats client side of dm-stats messages (`udm stats`): the `@stats_create` words for
//! a region and its areas, `@stats_list` lines read back into regions, and the `list` and
//! `report` tables.

/// A `udm stats` request that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    #[error("--start needs --length")]
    StartWithoutLength,
    #[error("--areas and --areasize exclude each other")]
    AreasAndAreaSize,
    #[error("{name}: bad counters {line:?}")]
    BadCounters { name: String, line: String },
}

impl StatsError {
    pub fn errno(&self) -> i32 {
        libc::EINVAL
    }
}

/// What `create` asks for (sectors as given on the command line).
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateArgs<'a> {
    pub start: Option<&'a str>,
    pub length: Option<&'a str>,
    /// Split into this many areas.
    pub areas: Option<&'a str>,
    /// Split into areas of this many sectors.
    pub area_size: Option<&'a str>,
    pub program_id: Option<&'a str>,
    pub aux_data: Option<&'a str>,
}

/// The `@stats_create <range> <step> [<program_id> <aux_data>]` message: the whole device
/// (`-`) or `start+length`; `/N` areas or an area size; one area by default.
pub fn create_argv(a: &CreateArgs<'_>) -> Result<Vec<String>, StatsError> {
    let range = match (a.start, a.length) {
        (None, None) => "-".to_string(),
        (s, Some(l)) => format!("{}+{l}", s.unwrap_or("0")),
        (Some(_), None) => return Err(StatsError::StartWithoutLength),
    };
    let step = match (a.areas, a.area_size) {
        (Some(n), None) => format!("/{n}"),
        (None, Some(s)) => s.to_string(),
        (None, None) => "/1".to_string(),
        _ => return Err(StatsError::AreasAndAreaSize),
    };
    let mut argv = vec!["@stats_create".to_string(), range, step];
    if let Some(p) = a.program_id {
        argv.push(p.to_string());
        argv.push(a.aux_data.unwrap_or("-").to_string());
    }
    Ok(argv)
}

/// The number of areas the region `id` of a `@stats_list` answer has (1 when it cannot be
/// read from the list).
pub fn created_areas(list: &str, id: &str) -> u64 {
    list.lines()
        .find(|l| l.starts_with(&format!("{id}:")))
        .and_then(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let len: u64 = w.get(1)?.split('+').nth(1)?.parse().ok()?;
            let step: u64 = w.get(2)?.parse().ok()?;
            Some(len.div_ceil(step.max(1)))
        })
        .unwrap_or(1)
}

/// The region ids of a `@stats_list` answer.
pub fn region_ids(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|x| x.split(':').next().map(str::to_string))
        .collect()
}

/// The header of `udm stats list`.
pub fn list_header() -> String {
    format!(
        "{:<16} {:>5} {:>12} {:>12} {:>8} {:>12} {:<10} AuxData",
        "Name", "RgID", "RStart", "RSize", "#Areas", "ASize", "ProgID"
    )
}

/// The `udm stats list` rows of device `name` from its `@stats_list` answer (lines that are
/// not regions are skipped).
pub fn list_rows(name: &str, list: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for l in list.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (Some(id), Some(range), Some(step)) = (w.first(), w.get(1), w.get(2)) else {
            continue;
        };
        let (start, len) = range.split_once('+').unwrap_or((range, "0"));
        let (len_n, step_n): (u64, u64) = (len.parse().unwrap_or(0), step.parse().unwrap_or(1));
        rows.push(format!(
            "{:<16} {:>5} {:>12} {:>12} {:>8} {:>12} {:<10} {}",
            name,
            id.trim_end_matches(':'),
            start,
            len,
            len_n.div_ceil(step_n.max(1)),
            step,
            w.get(3).unwrap_or(&"-"),
            w.get(4).unwrap_or(&"-")
        ));
    }
    rows
}

/// The header of `udm stats report`.
pub fn report_header() -> String {
    format!(
        "{:<16} {:>9} {:>11} {:>8} {:>9} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "Name",
        "Reads",
        "RdSectors",
        "RdMs",
        "Writes",
        "WrSectors",
        "WrMs",
        "InFlight",
        "IoMs",
        "QueueMs",
        "Discards",
        "Flushes"
    )
}

/// The `udm stats report` row of device `name` from its `@diskstats` line.
pub fn report_row(name: &str, line: &str) -> Result<String, StatsError> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 17 {
        return Err(StatsError::BadCounters {
            name: name.to_string(),
            line: line.to_string(),
        });
    }
    Ok(format!(
        "{:<16} {:>9} {:>11} {:>8} {:>9} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
        name, f[0], f[2], f[3], f[4], f[6], f[7], f[8], f[9], f[10], f[11], f[15]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_messages() {
        let a = |c: CreateArgs<'_>| create_argv(&c);
        assert_eq!(
            a(CreateArgs::default()).unwrap(),
            ["@stats_create", "-", "/1"]
        );
        let c = CreateArgs {
            start: Some("8"),
            length: Some("100"),
            area_size: Some("10"),
            program_id: Some("p"),
            ..CreateArgs::default()
        };
        assert_eq!(a(c).unwrap(), ["@stats_create", "8+100", "10", "p", "-"]);
        let c = CreateArgs {
            length: Some("100"),
            areas: Some("4"),
            ..CreateArgs::default()
        };
        assert_eq!(a(c).unwrap(), ["@stats_create", "0+100", "/4"]);
        let c = CreateArgs {
            start: Some("8"),
            ..CreateArgs::default()
        };
        assert_eq!(a(c).unwrap_err(), StatsError::StartWithoutLength);
        let c = CreateArgs {
            areas: Some("2"),
            area_size: Some("8"),
            ..CreateArgs::default()
        };
        assert_eq!(a(c).unwrap_err(), StatsError::AreasAndAreaSize);
    }

    #[test]
    fn lists_and_reports() {
        let list = "0: 0+100 10 - -\n1: 8+64 64 prog hello\n";
        assert_eq!(created_areas(list, "0"), 10);
        assert_eq!(created_areas(list, "1"), 1);
        assert_eq!(created_areas(list, "7"), 1);
        assert_eq!(region_ids(list), ["0", "1"]);
        let rows = list_rows("dev", list);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1],
            format!(
                "{:<16} {:>5} {:>12} {:>12} {:>8} {:>12} {:<10} hello",
                "dev", "1", "8", "64", 1, "64", "prog"
            )
        );
        assert!(list_header().starts_with("Name             "));
        assert!(list_rows("d", "junk\n").is_empty());
        let line = "1 0 8 2 3 0 24 1 0 4 5 6 0 0 0 7 0";
        let row = report_row("d", line).unwrap();
        let w: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            w,
            ["d", "1", "8", "2", "3", "24", "1", "0", "4", "5", "6", "7"]
        );
        assert_eq!(report_header().len(), row.len());
        assert!(matches!(
            report_row("d", "1 2"),
            Err(StatsError::BadCounters { .. })
        ));
    }
}
