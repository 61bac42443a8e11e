//! The table lines `table_round_trip` generates: one [`Spec`] per target type with the
//! choices its parameters need, the tables of option sets the generator picks from, and
//! the proptest strategies (including the awkward file names devices get).

use proptest::prelude::*;
use udm_targets::flakey::{CorruptByte, FlakeyFeatures};

/// One table line to build: its type, length and the choices its params need.
#[derive(Debug, Clone)]
pub(crate) enum Spec {
    /// An integrity device (a singleton) on a fresh 4 MiB image: (mode J/B/D, hash
    /// crc32c/sha256/hmac(sha256), 4 KiB blocks, fix_padding, allow_discards, len).
    Integrity(u8, u8, bool, bool, bool, u64),
    /// A thin-pool (a singleton: its table has only this line): (log2 block size in
    /// sectors 7..=9, low water mark, feature flags, data blocks).
    ThinPool(u32, u64, [bool; 5], u64),
    /// A thin device of the pool the test makes first (`253:0`): (device id, external
    /// origin, len).
    Thin(u64, bool, u64),
    SnapOrigin(u64),
    /// (store code P/PO/N, log2 chunk in sectors, feature count 0..=2, merge, len)
    Snapshot(&'static str, u32, u8, bool, u64),
    Error(u64),
    Zero(u64),
    Linear(u64, u64),
    Striped {
        n: usize,
        chunk: u64,
        rows: u64,
        offs: Vec<u64>,
    },
    Delay(Vec<(u64, u32)>, u64),
    Flakey {
        off: u64,
        up: u32,
        down: u32,
        feat: FlakeyFeatures,
        len: u64,
    },
    Dust {
        off: u64,
        shift: u32,
        len: u64,
    },
    LogWrites(u64),
    Unstriped {
        stripes: u32,
        chunk: u32,
        stripe: u32,
        off: u64,
        rows: u64,
    },
    /// (kind index, extra devices, log2 chunk/8, rows, option choices)
    Raid {
        kind: usize,
        extra: usize,
        chunk: u32,
        rows: u64,
        opts: [u8; 8],
    },
    Switch {
        region: u32,
        offs: Vec<u64>,
        len: u64,
    },
    Ebs {
        off: u64,
        e_bs: u32,
        u_bs: Option<u32>,
        len: u64,
    },
    Crypt {
        cipher: usize,
        key: Vec<u8>,
        iv: u64,
        off: u64,
        flags: [bool; 6],
        ss4k: bool,
        len: u64,
    },
    Verity(VeritySpec),
    Cache {
        features: usize,
        policy: usize,
        len: u64,
    },
    Era {
        bs: u64,
        len: u64,
    },
    Clone {
        region: u64,
        args: usize,
        len: u64,
    },
    /// (disk log, log2 region size 1..=3, sync mode 0..3, leg offsets, features 0..3, len)
    Mirror {
        disk: bool,
        region: u32,
        sync: u8,
        offs: Vec<u64>,
        features: u8,
        len: u64,
    },
    /// A multipath table (a singleton): (queue_if_no_path, groups of (selector, paths), len)
    Multipath {
        qinp: bool,
        groups: Vec<(usize, usize)>,
        len: u64,
    },
    Writecache {
        bs: u64,
        opts: usize,
        len: u64,
    },
}

/// Path selectors with their group status and per-path table args as printed.
pub(crate) const SELECTORS: &[(&str, &str, &str)] = &[
    ("round-robin", "0 ", "1 "),
    ("queue-length", "0 ", "1 "),
    ("service-time", "0 ", "1 7 "),
    ("historical-service-time", "2 900 3 ", "0 "),
];

pub(crate) const CACHE_FEATURES: &[&str] = &[
    "0",
    "1 writethrough",
    "2 metadata2 writeback",
    "3 passthrough metadata2 no_discard_passdown",
];
pub(crate) const CACHE_POLICIES: &[&str] = &[
    "smq 0",
    "mq 2 sequential_threshold 7",
    "cleaner 0",
    "default 2 migration_threshold 512",
];
pub(crate) const WRITECACHE_OPTS: &[&str] = &[
    "0",
    "2 start_sector 8",
    "4 high_watermark 60 low_watermark 40",
    "7 writeback_jobs 4 autocommit_blocks 16 autocommit_time 500 cleaner",
    "5 max_age 1000 metadata_only pause_writeback 100",
];
pub(crate) const CLONE_ARGS: &[&str] = &[
    "",
    " 1 no_hydration",
    " 2 no_hydration no_discard_passdown 2 hydration_threshold 3",
    " 0 4 hydration_batch_size 2 hydration_threshold 0",
];

#[derive(Debug, Clone)]
pub(crate) struct VeritySpec {
    pub(crate) sha1: bool,
    pub(crate) blocks: u64,
    pub(crate) hash_start: u64,
    pub(crate) digest: Vec<u8>,
    pub(crate) salt: Vec<u8>,
    pub(crate) mode: u8,
    pub(crate) flags: [bool; 3],
    pub(crate) fec: Option<(u32, u64)>,
}

/// Every type the generator covers; the test checks this is every registered type.
pub(crate) const COVERED: &[&str] = &[
    "thin-pool",
    "thin",
    "snapshot-origin",
    "snapshot",
    "snapshot-merge",
    "error",
    "zero",
    "linear",
    "striped",
    "delay",
    "flakey",
    "dust",
    "log-writes",
    "unstriped",
    "switch",
    "ebs",
    "crypt",
    "verity",
    "cache",
    "era",
    "clone",
    "mirror",
    "multipath",
    "writecache",
    "raid",
    "integrity",
];

/// raid types for the generator: (name, parity devices, minimum devices).
pub(crate) const RAID_KINDS: &[(&str, usize, usize)] = &[
    ("raid0", 0, 2),
    ("raid1", 0, 2),
    ("raid10", 0, 2),
    ("raid4", 1, 3),
    ("raid5_la", 1, 3),
    ("raid5_ra", 1, 3),
    ("raid5_ls", 1, 3),
    ("raid5_rs", 1, 3),
    ("raid5_n", 1, 3),
    ("raid6_zr", 2, 4),
    ("raid6_nr", 2, 4),
    ("raid6_nc", 2, 4),
    ("raid6_n_6", 2, 4),
    ("raid6_ls_6", 2, 4),
    ("raid6_rs_6", 2, 4),
    ("raid6_la_6", 2, 4),
    ("raid6_ra_6", 2, 4),
];

pub(crate) const CIPHERS: &[(&str, usize)] = &[
    ("aes-xts-plain64", 64),
    ("aes-cbc-essiv:sha256", 32),
    ("aes-cbc-plain", 16),
];

/// Target lengths are multiples of 8 sectors, so any mix of lines stays aligned to 4 KiB.
pub(crate) fn len8() -> impl Strategy<Value = u64> {
    (1u64..=8).prop_map(|k| k * 8)
}

pub(crate) fn flakey_features() -> impl Strategy<Value = FlakeyFeatures> {
    let none = FlakeyFeatures::default();
    let corrupt = (
        1u32..5000,
        any::<bool>(),
        any::<u8>(),
        prop_oneof![Just(0u32), Just(1 << 17)],
    )
        .prop_map(|(byte, write, value, flags)| CorruptByte {
            byte,
            write,
            value,
            flags,
        });
    prop_oneof![
        Just(none),
        (any::<bool>(), 0u8..3).prop_map(move |(er, w)| FlakeyFeatures {
            error_reads: er,
            drop_writes: w == 1,
            error_writes: w == 2,
            ..none
        }),
        corrupt.prop_map(move |c| FlakeyFeatures {
            corrupt: Some(c),
            error_reads: c.write,
            drop_writes: !c.write,
            ..none
        }),
        (1u32..=1_000_000_000, 1u32..=1_000_000_000).prop_map(move |(r, w)| FlakeyFeatures {
            random_read_corrupt: r,
            random_write_corrupt: w,
            ..none
        }),
    ]
}

pub(crate) fn verity_spec() -> impl Strategy<Value = VeritySpec> {
    (
        any::<bool>(),
        1u64..=8,
        0u64..4,
        proptest::collection::vec(any::<u8>(), 32),
        proptest::collection::vec(any::<u8>(), 0..8),
        0u8..4,
        any::<[bool; 3]>(),
        proptest::option::of((2u32..=24, 0u64..3)),
    )
        .prop_map(
            |(sha1, blocks, hash_start, mut digest, salt, mode, flags, fec)| {
                digest.truncate(if sha1 { 20 } else { 32 });
                VeritySpec {
                    sha1,
                    blocks,
                    hash_start,
                    digest,
                    salt,
                    mode,
                    flags,
                    fec,
                }
            },
        )
}

pub(crate) fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (7u32..10, 0u64..100, any::<[bool; 5]>(), 1u64..8)
            .prop_map(|(bs, lwm, f, blocks)| Spec::ThinPool(bs, lwm, f, blocks)),
        (0u64..4, any::<bool>(), len8()).prop_map(|(id, o, len)| Spec::Thin(id, o, len)),
        len8().prop_map(Spec::SnapOrigin),
        (
            prop_oneof![Just("P"), Just("PO"), Just("N")],
            3u32..7,
            0u8..3,
            any::<bool>(),
            len8()
        )
            .prop_map(|(k, c, f, merge, l)| {
                // snapshot-merge takes persistent stores and no features.
                let merge = merge && k != "N";
                Spec::Snapshot(k, c, if merge { 0 } else { f }, merge, l)
            }),
        len8().prop_map(Spec::Error),
        len8().prop_map(Spec::Zero),
        (0u64..64, len8()).prop_map(|(o, l)| Spec::Linear(o, l)),
        (
            1usize..4,
            prop_oneof![Just(8u64), Just(16)],
            1u64..3,
            proptest::collection::vec(0u64..64, 3)
        )
            .prop_map(|(n, chunk, rows, offs)| Spec::Striped {
                n,
                chunk,
                rows,
                offs
            }),
        (
            prop_oneof![Just(1usize), Just(2), Just(3)],
            proptest::collection::vec((0u64..64, 0u32..5000), 3),
            len8()
        )
            .prop_map(|(n, c, l)| Spec::Delay(c[..n].to_vec(), l)),
        (0u64..64, 0u32..100, 0u32..100, flakey_features(), len8()).prop_filter_map(
            "up + down > 0",
            |(off, up, down, feat, len)| (up + down > 0).then_some(Spec::Flakey {
                off,
                up,
                down,
                feat,
                len
            })
        ),
        (0u64..64, 0u32..4, len8()).prop_map(|(off, shift, len)| Spec::Dust { off, shift, len }),
        len8().prop_map(Spec::LogWrites),
        (
            1u32..4,
            prop_oneof![Just(8u32), Just(16)],
            0u32..4,
            0u64..64,
            1u64..3
        )
            .prop_map(|(stripes, chunk, stripe, off, rows)| Spec::Unstriped {
                stripes,
                chunk,
                stripe: stripe % stripes,
                off,
                rows
            }),
        (1u32..64, proptest::collection::vec(0u64..64, 1..4), len8())
            .prop_map(|(region, offs, len)| Spec::Switch { region, offs, len }),
        (0u64..8, 0u32..4, proptest::option::of(0u32..4), len8()).prop_map(|(o, e, u, len)| {
            Spec::Ebs {
                off: o * 8,
                e_bs: 1 << e,
                u_bs: u.map(|u| 1 << u),
                len,
            }
        }),
        (
            0..CIPHERS.len(),
            proptest::collection::vec(any::<u8>(), 64),
            0u64..16,
            0u64..64,
            any::<[bool; 6]>(),
            any::<bool>(),
            len8()
        )
            .prop_map(|(cipher, mut key, iv, off, flags, ss4k, len)| {
                key.truncate(CIPHERS[cipher].1);
                Spec::Crypt {
                    cipher,
                    key,
                    iv: if ss4k { iv * 8 } else { iv },
                    off,
                    flags,
                    ss4k,
                    len,
                }
            }),
        verity_spec().prop_map(Spec::Verity),
        (0..CACHE_FEATURES.len(), 0..CACHE_POLICIES.len(), len8()).prop_map(
            |(features, policy, len)| Spec::Cache {
                features,
                policy,
                len
            }
        ),
        (1u64..4, len8()).prop_map(|(k, len)| Spec::Era { bs: 8 * k, len }),
        (
            0u8..3,
            0u8..3,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            len8()
        )
            .prop_map(|(m, h, b, p, d, len)| Spec::Integrity(m, h, b, p, d, len)),
        (0u32..3, 0..CLONE_ARGS.len(), len8()).prop_map(|(k, args, len)| Spec::Clone {
            region: 8 << k,
            args,
            len
        }),
        (
            any::<bool>(),
            1u32..4,
            0u8..3,
            proptest::collection::vec(0u64..64, 2..4),
            0u8..3,
            len8()
        )
            .prop_map(|(disk, region, sync, offs, features, len)| Spec::Mirror {
                disk,
                region,
                sync,
                offs,
                features,
                len
            }),
        (
            any::<bool>(),
            proptest::collection::vec((0..SELECTORS.len(), 1usize..3), 1..3),
            len8()
        )
            .prop_map(|(qinp, groups, len)| Spec::Multipath { qinp, groups, len }),
        (any::<bool>(), 0..WRITECACHE_OPTS.len(), len8()).prop_map(|(big, opts, len)| {
            Spec::Writecache {
                bs: if big { 4096 } else { 512 },
                opts,
                len,
            }
        }),
        (
            0..RAID_KINDS.len(),
            0usize..3,
            0u32..4,
            1u64..4,
            any::<[u8; 8]>()
        )
            .prop_map(|(kind, extra, chunk, rows, opts)| Spec::Raid {
                kind,
                extra,
                chunk,
                rows,
                opts
            }),
    ]
}

/// A file name with the characters that need escaping (and some that must not be).
pub(crate) fn awkward_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(' '),
            Just('\\'),
            Just('\t'),
            Just(':'),
            Just('é'),
            Just('\u{a0}'),
            proptest::char::range('a', 'z'),
        ],
        1..8,
    )
    .prop_map(|c| c.into_iter().collect())
}
