//! What `udm open IMAGE` brought up, remembered in the state directory so that `udm close
//! IMAGE` removes it again in reverse order: one `NAME KIND` line per device, in the order
//! the devices were made (an NBD export's map, partitions, then LUKS volumes, then logical
//! volumes).

use std::path::{Path, PathBuf};

/// What a device made by `udm open` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A linear map over a remote NBD export the image was named by.
    Nbd,
    Partition,
    Crypt,
    Lvm,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Nbd => "nbd",
            Kind::Partition => "partition",
            Kind::Crypt => "crypt",
            Kind::Lvm => "lvm",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The devices one `udm open` made, in the order it made them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    pub devices: Vec<(String, Kind)>,
}

impl Opened {
    /// The record file of `image` under the state directory `state_dir`.
    pub fn record_path(state_dir: &Path, image: &str) -> PathBuf {
        let key: String = image
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        state_dir.join("open").join(key)
    }

    /// Add the devices of `after` that are not in `before` (device lists before and after a
    /// step), as `kind`.
    pub fn add_new(&mut self, before: &[String], after: Vec<String>, kind: Kind) -> Vec<String> {
        let new: Vec<String> = after.into_iter().filter(|n| !before.contains(n)).collect();
        self.devices.extend(new.iter().map(|n| (n.clone(), kind)));
        new
    }

    /// The record file's text.
    pub fn to_text(&self) -> String {
        self.devices
            .iter()
            .map(|(n, k)| format!("{n} {k}\n"))
            .collect()
    }

    /// The names in a record file's text, last made first (the order to remove them in).
    pub fn removal_order(text: &str) -> Vec<String> {
        text.lines()
            .rev()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// One line per device: name, kind, its FUSE file and NBD URI (`-` for an export the
    /// daemon does not run).
    pub fn export_lines(&self, fuse_dir: Option<&str>, nbd_socket: Option<&str>) -> String {
        let mut s = String::new();
        for (n, k) in &self.devices {
            let f = fuse_dir.map_or("-".to_string(), |d| format!("{d}/{n}"));
            let u = nbd_socket.map_or("-".to_string(), |s| format!("nbd+unix:///{n}?socket={s}"));
            s.push_str(&format!("{n}\t{k}\t{f}\t{u}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_reverse() {
        assert_eq!(
            Opened::record_path(Path::new("/s"), "/img/a b.img"),
            PathBuf::from("/s/open/_img_a_b_img")
        );
        let mut o = Opened::default();
        let before = vec!["x".to_string()];
        let new = o.add_new(
            &before,
            vec!["x".into(), "d1".into(), "d2".into()],
            Kind::Partition,
        );
        assert_eq!(new, ["d1", "d2"]);
        o.add_new(&[], vec!["d1_crypt".into()], Kind::Crypt);
        let text = o.to_text();
        assert_eq!(text, "d1 partition\nd2 partition\nd1_crypt crypt\n");
        assert_eq!(Opened::removal_order(&text), ["d1_crypt", "d2", "d1"]);
        let lines = o.export_lines(Some("/m"), None);
        assert!(lines.starts_with("d1\tpartition\t/m/d1\t-\n"));
        let lines = o.export_lines(None, Some("/n.sock"));
        assert!(lines.ends_with("d1_crypt\tcrypt\t-\tnbd+unix:///d1_crypt?socket=/n.sock\n"));
    }
}
