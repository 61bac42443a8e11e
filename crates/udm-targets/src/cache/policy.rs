//! Cache policies: `smq` (with `mq` and `default` as aliases) and `cleaner`.
//!
//! The policy names and tunables; the smq policy itself is in [`super::smq`] (hints are
//! cache-queue levels, kept across clean shutdowns). `cleaner` never promotes and writes
//! every dirty block back.

use std::fmt;
use std::str::FromStr;
use udm_core::TargetError;
use udm_pdata::cache::PolicyId;

/// Which policy a table names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyName {
    Smq,
    /// `mq`: smq under the old name, accepting (and ignoring) mq's tunables.
    Mq,
    /// `default`: smq.
    Default,
    Cleaner,
}

impl FromStr for PolicyName {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        Ok(match s {
            "smq" => PolicyName::Smq,
            "mq" => PolicyName::Mq,
            "default" => PolicyName::Default,
            "cleaner" => PolicyName::Cleaner,
            _ => return Err(TargetError::invalid("Error creating cache's policy")),
        })
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyName::Smq => "smq",
            PolicyName::Mq => "mq",
            PolicyName::Default => "default",
            PolicyName::Cleaner => "cleaner",
        })
    }
}

/// mq's tunables: accepted, without effect.
const MQ_TUNABLES: [&str; 5] = [
    "random_threshold",
    "sequential_threshold",
    "discard_promote_adjustment",
    "read_promote_adjustment",
    "write_promote_adjustment",
];

impl PolicyName {
    /// The name status prints and the metadata records (`default` resolves to smq).
    pub fn real_name(self) -> &'static str {
        match self {
            PolicyName::Smq | PolicyName::Default => "smq",
            PolicyName::Mq => "mq",
            PolicyName::Cleaner => "cleaner",
        }
    }

    /// Name, version and hint size as stored in the superblock.
    pub fn id(self) -> PolicyId {
        PolicyId {
            name: self.real_name().to_string(),
            version: [2, 0, 0],
            hint_size: 4,
        }
    }

    /// Set a policy tunable (`<key> <value>` from the table or a message).
    pub fn set_config(self, key: &str, value: &str) -> Result<(), TargetError> {
        if self == PolicyName::Mq
            && MQ_TUNABLES.iter().any(|k| k.eq_ignore_ascii_case(key))
            && crate::kscan::scan_u64(value).is_some()
        {
            return Ok(());
        }
        Err(TargetError::invalid(format!(
            "bad config value for {key}: {value}"
        )))
    }

    /// The `<#policy args> <policy args>*` part of the status line (each word followed by a
    /// space).
    pub fn emit_config(self) -> String {
        if self == PolicyName::Mq {
            let mut s = String::from("10 ");
            for k in MQ_TUNABLES {
                s.push_str(k);
                s.push_str(" 0 ");
            }
            s
        } else {
            "0 ".to_string()
        }
    }

    /// Whether misses may promote.
    pub fn promotes(self) -> bool {
        self != PolicyName::Cleaner
    }
}
