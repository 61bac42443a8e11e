//! Command-line switches: dmsetup's option table for the shared `getopt_long` work-alike
//! (`crate::optparse`: permutation, `--opt=value`, bundled short options, unique-prefix long
//! options, glibc's exact error texts).

use crate::optparse::{Item, Parser, Spec, Style};
use std::collections::HashMap;

/// Every dmsetup switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum O {
    AddNodeOnCreate,
    AddNodeOnResume,
    Alias,
    AllDevices,
    AllPrograms,
    AllRegions,
    Area,
    Areas,
    AreaSize,
    Bounds,
    Checks,
    Clear,
    Columns,
    Concise,
    Count,
    Deferred,
    Exec,
    Filemap,
    Follow,
    Force,
    Foreground,
    Gid,
    Group,
    GroupId,
    Help,
    Histogram,
    Inactive,
    Interval,
    Length,
    Major,
    MangleName,
    Minor,
    Mode,
    NamePrefixes,
    NoFlush,
    NoGroup,
    NoHeadings,
    NoLockfs,
    NoMonitor,
    NoOpenCount,
    NoSuffix,
    NoTable,
    NoTimeSuffix,
    NoUdevRules,
    NoUdevSync,
    Options,
    Precise,
    ProgramId,
    Raw,
    ReadAhead,
    ReadOnly,
    Region,
    RegionId,
    Regions,
    Relative,
    Retry,
    Rows,
    Segments,
    Select,
    Separator,
    SetUuid,
    ShowKeys,
    Sort,
    Start,
    /// udm's own `status --stats`: print the device's I/O counters too.
    Stats,
    Table,
    Target,
    Tree,
    UdevCookie,
    Uid,
    Unbuffered,
    Units,
    Unquoted,
    UserData,
    Uuid,
    Verbose,
    VerifyUdev,
    Version,
    Yes,
}

/// Long options in the order of the Debian 1.02.185 binary's table (glibc lists ambiguous
/// candidates in table order, so the order is visible in error messages).
const LONG: &[(&str, bool, O)] = &[
    ("alias", true, O::Alias),
    ("alldevices", false, O::AllDevices),
    ("allprograms", false, O::AllPrograms),
    ("allregions", false, O::AllRegions),
    ("area", false, O::Area),
    ("areas", true, O::Areas),
    ("areasize", true, O::AreaSize),
    ("addnodeonresume", false, O::AddNodeOnResume),
    ("addnodeoncreate", false, O::AddNodeOnCreate),
    ("bounds", true, O::Bounds),
    ("checks", false, O::Checks),
    ("clear", false, O::Clear),
    ("columns", false, O::Columns),
    ("concise", false, O::Concise),
    ("count", true, O::Count),
    ("deferred", false, O::Deferred),
    ("exec", true, O::Exec),
    ("filemap", false, O::Filemap),
    ("follow", true, O::Follow),
    ("force", false, O::Force),
    ("foreground", false, O::Foreground),
    ("gid", true, O::Gid),
    ("group", false, O::Group),
    ("groupid", true, O::GroupId),
    ("help", false, O::Help),
    ("histogram", false, O::Histogram),
    ("inactive", false, O::Inactive),
    ("interval", true, O::Interval),
    ("length", true, O::Length),
    ("manglename", true, O::MangleName),
    ("major", true, O::Major),
    ("minor", true, O::Minor),
    ("mode", true, O::Mode),
    ("nameprefixes", false, O::NamePrefixes),
    ("nogroup", false, O::NoGroup),
    ("noflush", false, O::NoFlush),
    ("noheadings", false, O::NoHeadings),
    ("nolockfs", false, O::NoLockfs),
    ("noopencount", false, O::NoOpenCount),
    ("nosuffix", false, O::NoSuffix),
    ("notable", false, O::NoTable),
    ("notimesuffix", false, O::NoTimeSuffix),
    ("nomonitor", false, O::NoMonitor),
    ("noudevrules", false, O::NoUdevRules),
    ("noudevsync", false, O::NoUdevSync),
    ("options", true, O::Options),
    ("precise", false, O::Precise),
    ("programid", true, O::ProgramId),
    ("readonly", false, O::ReadOnly),
    ("raw", false, O::Raw),
    ("readahead", true, O::ReadAhead),
    ("region", false, O::Region),
    ("regions", true, O::Regions),
    ("regionid", true, O::RegionId),
    ("relative", false, O::Relative),
    ("retry", false, O::Retry),
    ("rows", false, O::Rows),
    ("select", true, O::Select),
    ("segments", false, O::Segments),
    ("separator", true, O::Separator),
    ("setuuid", false, O::SetUuid),
    ("showkeys", false, O::ShowKeys),
    ("sort", true, O::Sort),
    ("start", true, O::Start),
    ("table", true, O::Table),
    ("target", true, O::Target),
    ("tree", false, O::Tree),
    ("udevcookie", true, O::UdevCookie),
    ("uid", true, O::Uid),
    ("units", true, O::Units),
    ("uuid", true, O::Uuid),
    ("unbuffered", false, O::Unbuffered),
    ("unquoted", false, O::Unquoted),
    ("userdata", true, O::UserData),
    ("verbose", true, O::Verbose),
    ("verifyudev", false, O::VerifyUdev),
    ("version", false, O::Version),
    ("yes", false, O::Yes),
];

/// udm's additions to dmsetup's switches. They match only when spelled in full, so every
/// abbreviation (and glibc's ambiguity message listing candidates) stays dmsetup's.
const UDM_LONG: &[(&str, bool, O)] = &[("stats", false, O::Stats)];

/// `getopt` short option string of dmsetup: "cCfG:hj:m:M:no:O:rS:u:U:vy".
fn short(c: char) -> Option<(bool, O)> {
    Some(match c {
        'c' | 'C' => (false, O::Columns),
        'f' => (false, O::Force),
        'G' => (true, O::Gid),
        'h' => (false, O::Help),
        'j' => (true, O::Major),
        'm' => (true, O::Minor),
        'M' => (true, O::Mode),
        'n' => (false, O::NoTable),
        'o' => (true, O::Options),
        'O' => (true, O::Sort),
        'r' => (false, O::ReadOnly),
        'S' => (true, O::Select),
        'u' => (true, O::Uuid),
        'U' => (true, O::Uid),
        'v' => (false, O::Verbose),
        'y' => (false, O::Yes),
        _ => return None,
    })
}

/// Parsed switches: how often each was given and the last value of those with an argument.
#[derive(Debug, Default, Clone)]
pub struct Opts {
    counts: HashMap<O, u32>,
    values: HashMap<O, String>,
    /// Non-option arguments, in order.
    pub args: Vec<String>,
}

impl Opts {
    pub fn has(&self, o: O) -> bool {
        self.count(o) > 0
    }
    pub fn count(&self, o: O) -> u32 {
        self.counts.get(&o).copied().unwrap_or(0)
    }
    pub fn str(&self, o: O) -> Option<&str> {
        self.values.get(&o).map(|s| s.as_str())
    }
    /// `atoi` of the option's value (0 when absent).
    pub fn int(&self, o: O) -> i32 {
        self.str(o).map(udm_report::dm::cnum::atoi).unwrap_or(0)
    }
    pub fn set(&mut self, o: O, on: bool) {
        if on {
            *self.counts.entry(o).or_insert(0) += 1;
        } else {
            self.counts.remove(&o);
        }
    }
    pub fn set_value(&mut self, o: O, v: &str) {
        self.set(o, true);
        self.values.insert(o, v.to_string());
    }
    fn add(&mut self, o: O, v: Option<String>) {
        *self.counts.entry(o).or_insert(0) += 1;
        if let Some(v) = v {
            self.values.insert(o, v);
        }
    }
}

/// dmsetup's switches for the shared getopt tokenizer.
struct DmsetupSpec;

impl Spec for DmsetupSpec {
    type Key = O;
    const STYLE: Style = Style::Getopt;
    fn long(&self, name: &str) -> Result<(O, String, bool), Vec<String>> {
        find_long(name)
            .map(|(n, a, id)| (id, n.to_string(), a))
            .map_err(|c| c.into_iter().map(String::from).collect())
    }
    fn short(&self, c: char) -> Option<(O, String, bool)> {
        short(c).map(|(a, id)| (id, c.to_string(), a))
    }
}

/// Parse `argv` (without the program name) like `getopt_long` with dmsetup's option table.
/// On error returns the glibc diagnostic line (without the trailing newline).
pub fn parse(prog: &str, argv: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    for item in Parser::new(&DmsetupSpec, argv) {
        match item.map_err(|e| e.getopt_message(prog))? {
            Item::Opt { key, value, .. } => o.add(key, value),
            Item::Arg(a) => o.args.push(a),
        }
    }
    Ok(o)
}

/// Exact match, else the unique prefix match; `Err(candidates)` otherwise.
fn find_long(name: &str) -> Result<(&'static str, bool, O), Vec<&'static str>> {
    if let Some(&(n, a, id)) = LONG.iter().chain(UDM_LONG).find(|(n, _, _)| *n == name) {
        return Ok((n, a, id));
    }
    let cands: Vec<&(&str, bool, O)> = LONG
        .iter()
        .filter(|(n, _, _)| n.starts_with(name))
        .collect();
    match cands.as_slice() {
        [one] => Ok((one.0, one.1, one.2)),
        _ => Err(cands.iter().map(|c| c.0).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Opts, String> {
        parse(
            "dmsetup",
            &v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn udm_switches_match_only_in_full() {
        assert!(p(&["status", "--stats", "x"]).unwrap().has(O::Stats));
        // Abbreviations keep dmsetup's meaning and messages.
        assert!(p(&["--sta", "1"]).unwrap().has(O::Start));
        assert!(p(&["--st", "1"]).unwrap().has(O::Start));
        assert_eq!(
            p(&["--s"]).unwrap_err(),
            "dmsetup: option '--s' is ambiguous; possibilities: '--select' '--segments' \
             '--separator' '--setuuid' '--showkeys' '--sort' '--start'"
        );
    }

    #[test]
    fn permutation_and_values() {
        let o = p(&[
            "info",
            "-c",
            "dev",
            "--separator=,",
            "-o",
            "name",
            "--noheadings",
        ])
        .unwrap();
        assert_eq!(o.args, vec!["info", "dev"]);
        assert!(o.has(O::Columns));
        assert_eq!(o.str(O::Separator), Some(","));
        assert_eq!(o.str(O::Options), Some("name"));
        assert!(o.has(O::NoHeadings));
    }

    #[test]
    fn bundled_short_options() {
        let o = p(&["-cvv", "-oname", "info"]).unwrap();
        assert_eq!(o.count(O::Verbose), 2);
        assert!(o.has(O::Columns));
        assert_eq!(o.str(O::Options), Some("name"));
        let o = p(&["-vj", "253", "-m0", "info"]).unwrap();
        assert_eq!(o.int(O::Major), 253);
        assert_eq!(o.int(O::Minor), 0);
    }

    #[test]
    fn prefixes_and_errors() {
        assert!(p(&["--nohead", "ls"]).unwrap().has(O::NoHeadings));
        assert_eq!(
            p(&["--nou"]).unwrap_err(),
            "dmsetup: option '--nou' is ambiguous; possibilities: '--noudevrules' '--noudevsync'"
        );
        assert_eq!(
            p(&["--foo=1"]).unwrap_err(),
            "dmsetup: unrecognized option '--foo=1'"
        );
        assert_eq!(p(&["-Z"]).unwrap_err(), "dmsetup: invalid option -- 'Z'");
        assert_eq!(
            p(&["ls", "-o"]).unwrap_err(),
            "dmsetup: option requires an argument -- 'o'"
        );
        assert_eq!(
            p(&["--opt"]).unwrap_err(),
            "dmsetup: option '--options' requires an argument"
        );
        assert_eq!(
            p(&["--noheadings=1"]).unwrap_err(),
            "dmsetup: option '--noheadings' doesn't allow an argument"
        );
        // --verbose takes an argument in dmsetup's table.
        let o = p(&["--verbose", "version"]).unwrap();
        assert!(o.args.is_empty());
    }

    #[test]
    fn double_dash_ends_options() {
        let o = p(&["message", "--", "dev", "0", "-x"]).unwrap();
        assert_eq!(o.args, vec!["message", "dev", "0", "-x"]);
    }
}
