//! Every registered target type round-trips its table line: a generated valid table (one to
//! three lines, any target types, every device an image file whose path holds spaces, tabs,
//! backslashes and non-ASCII) is created, `status(Table)` prints each line's canonical params
//! (devices escaped as `dm_split_args` reads them), the printed text parses to the same lines,
//! and reloading the device with it constructs the same table again.
//!
//! The seed is fixed (`UDM_PROPTEST_SEED` overrides it) and printed; failures are kept in
//! `table_round_trip.proptest-regressions`.

mod common;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use udm_core::{parse_table_text, Escaped, StatusType, TableLine};
use udm_formats::verity::{FecLayout, Geometry, HashAlg, HashType};
use udm_io::Sectors;
use udm_targets::crypt::params::{format_table, Features};
use udm_targets::delay::{DelayClassParams, DelayParams};
use udm_targets::dust::DustParams;
use udm_targets::ebs::EbsParams;
use udm_targets::flakey::{CorruptByte, FlakeyFeatures, FlakeyParams};
use udm_targets::linear::LinearParams;
use udm_targets::log_writes::LogWritesParams;
use udm_targets::mirror::log::{LogParams, SyncMode};
use udm_targets::mirror::MirrorParams;
use udm_targets::striped::StripedParams;
use udm_targets::switch::SwitchParams;
use udm_targets::unstriped::UnstripedParams;
use udm_targets::verity::{FecParams, Mode, VerityParams};

const DEFAULT_SEED: u64 = 0x7564_6d5f_6172_6773;

fn config() -> ProptestConfig {
    let seed = std::env::var("UDM_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("table_round_trip: proptest seed {seed} (set UDM_PROPTEST_SEED to change)");
    ProptestConfig {
        cases: 48,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    }
}

/// One table line to build: its type, length and the choices its params need.
#[derive(Debug, Clone)]
enum Spec {
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
const SELECTORS: &[(&str, &str, &str)] = &[
    ("round-robin", "0 ", "1 "),
    ("queue-length", "0 ", "1 "),
    ("service-time", "0 ", "1 7 "),
    ("historical-service-time", "2 900 3 ", "0 "),
];

const CACHE_FEATURES: &[&str] = &[
    "0",
    "1 writethrough",
    "2 metadata2 writeback",
    "3 passthrough metadata2 no_discard_passdown",
];
const CACHE_POLICIES: &[&str] = &[
    "smq 0",
    "mq 2 sequential_threshold 7",
    "cleaner 0",
    "default 2 migration_threshold 512",
];
const WRITECACHE_OPTS: &[&str] = &[
    "0",
    "2 start_sector 8",
    "4 high_watermark 60 low_watermark 40",
    "7 writeback_jobs 4 autocommit_blocks 16 autocommit_time 500 cleaner",
    "5 max_age 1000 metadata_only pause_writeback 100",
];
const CLONE_ARGS: &[&str] = &[
    "",
    " 1 no_hydration",
    " 2 no_hydration no_discard_passdown 2 hydration_threshold 3",
    " 0 4 hydration_batch_size 2 hydration_threshold 0",
];

#[derive(Debug, Clone)]
struct VeritySpec {
    sha1: bool,
    blocks: u64,
    hash_start: u64,
    digest: Vec<u8>,
    salt: Vec<u8>,
    mode: u8,
    flags: [bool; 3],
    fec: Option<(u32, u64)>,
}

/// Every type the generator covers; the test checks this is every registered type.
const COVERED: &[&str] = &[
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
const RAID_KINDS: &[(&str, usize, usize)] = &[
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

const CIPHERS: &[(&str, usize)] = &[
    ("aes-xts-plain64", 64),
    ("aes-cbc-essiv:sha256", 32),
    ("aes-cbc-plain", 16),
];

/// Target lengths are multiples of 8 sectors, so any mix of lines stays aligned to 4 KiB.
fn len8() -> impl Strategy<Value = u64> {
    (1u64..=8).prop_map(|k| k * 8)
}

fn flakey_features() -> impl Strategy<Value = FlakeyFeatures> {
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

fn verity_spec() -> impl Strategy<Value = VeritySpec> {
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

fn spec() -> impl Strategy<Value = Spec> {
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
fn awkward_name() -> impl Strategy<Value = String> {
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

/// Makes the image files a case needs, each under a new awkward name.
struct Files<'a> {
    dir: &'a Path,
    names: &'a [String],
    used: usize,
}

impl Files<'_> {
    /// A sparse image of `sectors` sectors; its path as the table names it (unescaped).
    fn image(&mut self, sectors: u64) -> String {
        let name = format!(
            "{}{}.img",
            self.used,
            self.names[self.used % self.names.len()]
        );
        self.used += 1;
        let p: PathBuf = self.dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .set_len(sectors * 512)
            .unwrap();
        p.to_str().unwrap().to_string()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The line's type, length and canonical params (what `status(Table)` must print).
fn render(s: &Spec, f: &mut Files<'_>) -> (&'static str, u64, String) {
    match s {
        Spec::Integrity(mode, hash, b4k, pad, discards, len) => {
            let dev = f.image(8192);
            let (tag, alg) = [
                (4u32, "crc32c".to_string()),
                (32, "sha256".into()),
                (32, format!("hmac(sha256):{}", "0123456789abcdef".repeat(4))),
            ][*hash as usize]
                .clone();
            let l2spb = if *b4k { 3u8 } else { 0 };
            let ss =
                udm_formats::integrity::JournalGeometry::new(tag, l2spb, false, 1).section_sectors;
            let sections = (64 / ss).max(1);
            let padding: u64 = if *pad { 4096 } else { 131072 };
            let run = ((tag as u64) << (15 - l2spb)).div_ceil(padding) * padding / 512;
            let buf = 7u32.min(run.trailing_zeros());
            let mut o: Vec<String> = Vec::new();
            if *b4k {
                o.push("block_size:4096".into());
            }
            if *discards {
                o.push("allow_discards".into());
            }
            o.push(format!("journal_sectors:{}", ss * sections));
            o.push("interleave_sectors:32768".into());
            o.push(format!("buffer_sectors:{}", 1 << buf));
            match mode {
                0 => o.extend(["journal_watermark:50".into(), "commit_time:10000".into()]),
                1 => o.extend([
                    "sectors_per_bit:32768".into(),
                    "bitmap_flush_interval:10000".into(),
                ]),
                _ => {}
            }
            if *pad {
                o.push("fix_padding".into());
            }
            o.push(format!("internal_hash:{alg}"));
            let p = format!(
                "{} 0 {tag} {} {} {}",
                Escaped(&dev),
                ["J", "B", "D"][*mode as usize],
                o.len(),
                o.join(" ")
            );
            ("integrity", *len, p)
        }
        Spec::ThinPool(bs, lwm, feats, blocks) => {
            let len = blocks << bs;
            let p = udm_targets::thin::params::PoolParams {
                meta_dev: f.image(4096),
                data_dev: f.image(len),
                block_size: 1 << bs,
                low_water: *lwm,
                features: udm_targets::thin::params::PoolFeatures {
                    zero_new_blocks: feats[0],
                    discard_enabled: feats[1],
                    // passdown is only printed (and only meaningful) with discards on
                    discard_passdown: feats[2] || !feats[1],
                    // read_only needs metadata that is already formatted
                    read_only: false,
                    error_if_no_space: feats[4],
                },
            };
            ("thin-pool", len, p.to_string())
        }
        Spec::Thin(id, origin, len) => {
            let p = udm_targets::thin::params::ThinParams {
                pool_dev: "253:0".into(),
                dev_id: *id,
                origin: origin.then(|| f.image(*len)),
            };
            ("thin", *len, p.to_string())
        }
        Spec::SnapOrigin(len) => {
            let p = udm_targets::snapshot::OriginParams {
                origin: f.image(*len),
            };
            ("snapshot-origin", *len, p.to_string())
        }
        Spec::Snapshot(kind, chunk, feats, merge, len) => {
            let origin = f.image(*len);
            let cow = f.image(4096);
            let line = format!(
                "{} {} {kind} {}{}",
                udm_core::Escaped(&origin),
                udm_core::Escaped(&cow),
                1u64 << chunk,
                match feats {
                    0 => "",
                    1 => " 1 discard_zeroes_cow",
                    _ => " 2 discard_zeroes_cow discard_passdown_origin",
                }
            );
            let p: udm_targets::snapshot::SnapshotParams = line.parse().unwrap();
            let ty = if *merge { "snapshot-merge" } else { "snapshot" };
            (ty, *len, p.to_string())
        }
        Spec::Error(l) => ("error", *l, String::new()),
        Spec::Zero(l) => ("zero", *l, String::new()),
        Spec::Linear(off, len) => {
            let dev = f.image(off + len);
            (
                "linear",
                *len,
                LinearParams {
                    dev,
                    offset: Sectors(*off),
                }
                .to_string(),
            )
        }
        Spec::Striped {
            n,
            chunk,
            rows,
            offs,
        } => {
            let legs = offs[..*n]
                .iter()
                .map(|o| (f.image(o + chunk * rows), Sectors(*o)))
                .collect();
            let len = *n as u64 * chunk * rows;
            (
                "striped",
                len,
                StripedParams {
                    chunk: Sectors(*chunk),
                    legs,
                }
                .to_string(),
            )
        }
        Spec::Delay(classes, len) => {
            let classes = classes
                .iter()
                .map(|(o, ms)| DelayClassParams {
                    dev: f.image(o + len),
                    offset: Sectors(*o),
                    delay_ms: *ms,
                })
                .collect();
            ("delay", *len, DelayParams { classes }.to_string())
        }
        Spec::Flakey {
            off,
            up,
            down,
            feat,
            len,
        } => {
            let p = FlakeyParams {
                dev: f.image(off + len),
                offset: Sectors(*off),
                up: *up,
                down: *down,
                features: *feat,
            };
            ("flakey", *len, p.to_string())
        }
        Spec::Cache {
            features,
            policy,
            len,
        } => {
            let (m, c, o) = (f.image(1024), f.image(256), f.image(*len));
            let p = format!(
                "{} {} {} 64 {} {}",
                Escaped(&m),
                Escaped(&c),
                Escaped(&o),
                CACHE_FEATURES[*features],
                CACHE_POLICIES[*policy]
            );
            ("cache", *len, p)
        }
        Spec::Era { bs, len } => {
            let (m, o) = (f.image(1024), f.image(*len));
            ("era", *len, format!("{} {} {bs}", Escaped(&m), Escaped(&o)))
        }
        Spec::Clone { region, args, len } => {
            let (m, d, src) = (f.image(1024), f.image(*len), f.image(*len));
            let p = format!(
                "{} {} {} {region}{}",
                Escaped(&m),
                Escaped(&d),
                Escaped(&src),
                CLONE_ARGS[*args]
            );
            ("clone", *len, p)
        }
        Spec::Mirror {
            disk,
            region,
            sync,
            offs,
            features,
            len,
        } => {
            let sync = [SyncMode::Default, SyncMode::NoSync, SyncMode::Force][*sync as usize];
            let p = MirrorParams {
                log: LogParams {
                    dev: disk.then(|| f.image(8)),
                    region_size: 1 << region,
                    sync,
                },
                legs: offs.iter().map(|o| (f.image(o + len), *o)).collect(),
                handle_errors: *features > 0,
                keep_log: *features > 1,
            };
            ("mirror", *len, p.to_string())
        }
        Spec::Multipath { qinp, groups, len } => {
            let mut p = format!(
                "{} {}0 {} 1 ",
                *qinp as u32,
                if *qinp { "queue_if_no_path " } else { "" },
                groups.len()
            );
            for (sel, n) in groups {
                let (name, group, path) = SELECTORS[*sel];
                let nargs = path.split_whitespace().count();
                p.push_str(&format!("{name} {group}{n} {nargs} "));
                for _ in 0..*n {
                    p.push_str(&format!("{} {path}", Escaped(&f.image(*len))));
                }
            }
            ("multipath", *len, p)
        }
        Spec::Writecache { bs, opts, len } => {
            let (o, c) = (f.image(*len), f.image(64));
            let p = format!(
                "s {} {} {bs} {}",
                Escaped(&o),
                Escaped(&c),
                WRITECACHE_OPTS[*opts]
            );
            ("writecache", *len, p)
        }
        Spec::Raid {
            kind,
            extra,
            chunk,
            rows,
            opts,
        } => render_raid(*kind, *extra, *chunk, *rows, opts, f),
        Spec::Dust { off, shift, len } => {
            let p = DustParams {
                dev: f.image(off + len),
                offset: Sectors(*off),
                blksz: 512 << shift,
            };
            ("dust", *len, p.to_string())
        }
        Spec::LogWrites(len) => {
            let p = LogWritesParams {
                dev: f.image(*len),
                log_dev: f.image(256),
            };
            ("log-writes", *len, p.to_string())
        }
        Spec::Unstriped {
            stripes,
            chunk,
            stripe,
            off,
            rows,
        } => {
            let len = *chunk as u64 * rows;
            let dev = f.image(off + len * *stripes as u64);
            let p = UnstripedParams {
                stripes: *stripes,
                chunk: *chunk,
                stripe: *stripe,
                dev,
                offset: Sectors(*off),
            };
            ("unstriped", len, p.to_string())
        }
        Spec::Switch { region, offs, len } => {
            let paths = offs
                .iter()
                .map(|o| (f.image(o + len), Sectors(*o)))
                .collect();
            (
                "switch",
                *len,
                SwitchParams {
                    region: *region,
                    paths,
                }
                .to_string(),
            )
        }
        Spec::Ebs {
            off,
            e_bs,
            u_bs,
            len,
        } => {
            let p = EbsParams {
                dev: f.image(off + len),
                offset: Sectors(*off),
                e_bs: *e_bs,
                u_bs: *u_bs,
            };
            ("ebs", *len, p.to_string())
        }
        Spec::Crypt {
            cipher,
            key,
            iv,
            off,
            flags,
            ss4k,
            len,
        } => {
            // The device area must be aligned to the target's sector size (as the kernel's
            // device_area_is_invalid checks after io_hints).
            let off = if *ss4k { off / 8 * 8 } else { *off };
            let off = &off;
            let dev = f.image(off + len);
            let feats = Features {
                allow_discards: flags[0],
                same_cpu_crypt: flags[1],
                submit_from_crypt_cpus: flags[2],
                no_read_workqueue: flags[3],
                no_write_workqueue: flags[4],
                sector_size: if *ss4k { 4096 } else { 512 },
                iv_large_sectors: flags[5],
                integrity: None,
            };
            let p = format_table(
                CIPHERS[*cipher].0,
                &hex(key),
                *iv,
                &dev,
                Sectors(*off),
                &feats,
            );
            ("crypt", *len, p)
        }
        Spec::Verity(v) => {
            let alg = HashAlg::from_name(if v.sha1 { "sha1" } else { "sha256" }).unwrap();
            let geo =
                Geometry::new(HashType::Normal, alg, 4096, 4096, v.blocks, v.hash_start).unwrap();
            let len = v.blocks * 8;
            let data_dev = f.image(len);
            // Room for the tree and, with FEC, the hash area FEC covers.
            let hash_dev = f.image((geo.hash_end() + 4) * 8);
            let fec = match v.fec {
                None => FecParams::default(),
                Some((roots, start)) => {
                    let blocks = v.blocks + geo.tree_blocks();
                    let layout =
                        FecLayout::new(roots, 4096, blocks, v.blocks, v.hash_start).unwrap();
                    let dev = f.image(start * 8 + layout.parity_bytes().div_ceil(512));
                    FecParams {
                        dev: Some(dev),
                        roots: Some(roots),
                        blocks: Some(blocks),
                        start,
                    }
                }
            };
            let p = VerityParams {
                version: 1,
                data_dev,
                hash_dev,
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: v.blocks,
                hash_start: v.hash_start,
                alg: alg.name().to_string(),
                root_digest: v.digest.clone(),
                salt: v.salt.clone(),
                mode: [Mode::Eio, Mode::Logging, Mode::Restart, Mode::Panic][v.mode as usize],
                ignore_zero_blocks: v.flags[0],
                check_at_most_once: v.flags[1],
                try_verify_in_tasklet: v.flags[2],
                fec,
                sig_key_desc: None,
            };
            ("verity", len, p.to_string())
        }
    }
}

/// A raid line in the kernel's canonical parameter order, with only parameters the kernel
/// prints back as given.
fn render_raid(
    kind: usize,
    extra: usize,
    chunk: u32,
    rows: u64,
    o: &[u8; 8],
    f: &mut Files,
) -> (&'static str, u64, String) {
    let (name, parity, min) = RAID_KINDS[kind];
    let n = min + extra;
    let chunk = 8u64 << chunk;
    let level = &name[..5];
    let (r0, r1, r10, r456) = (
        name == "raid0",
        name == "raid1",
        name == "raid10",
        parity > 0,
    );
    let data = (n - parity) as u64;
    let len = if r1 {
        chunk * rows
    } else {
        data * chunk * rows
    };
    let dev = if r10 {
        len * 2 / n as u64
    } else if r1 {
        len
    } else {
        len / data
    };
    let mut p: Vec<String> = vec![if r1 { "0".into() } else { chunk.to_string() }];
    let sync = if r0 { 0 } else { o[0] % 4 };
    let rebuild = !r0 && sync == 0 && o[1].is_multiple_of(3);
    if sync == 1 {
        p.push("sync".into());
    }
    if sync == 2 && level != "raid6" {
        p.push("nosync".into());
    }
    if rebuild {
        p.push(format!("rebuild {}", o[1] as usize % n));
    }
    if !r0 && o[2].is_multiple_of(2) {
        p.push(format!("daemon_sleep {}", 250 * (1 + o[2] as u32 % 8)));
    }
    if !r0 && o[3].is_multiple_of(2) {
        p.push(format!("min_recovery_rate {}", o[3] as u32 * 10));
        p.push(format!("max_recovery_rate {}", o[3] as u32 * 10 + 1000));
    }
    if r1 && o[4].is_multiple_of(2) {
        p.push(format!("write_mostly {}", o[4] as usize % n));
    }
    if r456 && o[5].is_multiple_of(2) {
        p.push(format!("stripe_cache {}", chunk / 2 + o[5] as u64));
    }
    if !r0 && o[6].is_multiple_of(2) {
        p.push(format!("region_size {}", chunk.max(8) << (o[6] % 2)));
    }
    if r10 && o[7].is_multiple_of(2) {
        p.push("raid10_copies 2".into());
    }
    if r10 && o[7] % 3 != 2 {
        p.push(format!(
            "raid10_format {}",
            ["near", "far", "offset"][o[7] as usize % 3]
        ));
    }
    let words: usize = p.iter().map(|w| w.split(' ').count()).sum();
    let mut line = format!("{name} {words} {}", p.join(" "));
    line.push_str(&format!(" {n}"));
    for _ in 0..n {
        let (m, d) = (f.image(64), f.image(dev));
        line.push_str(&format!(" {} {}", Escaped(&m), Escaped(&d)));
    }
    ("raid", len, line)
}

/// The table text of `status(Table)` output, as `dmsetup table` prints it.
fn printed(reg: &udm_core::Registry, name: &str) -> (Vec<String>, String) {
    let (_, st) = reg.status(&sel(name), false, StatusType::Table).unwrap();
    let params = st.iter().map(|t| t.params.clone()).collect();
    let text = st
        .iter()
        .map(|t| format!("{} {} {} {}\n", t.start, t.len, t.ttype, t.params))
        .collect();
    (params, text)
}

#[test]
fn the_generator_covers_every_registered_target() {
    // Every type, the modules' too (they register on first use otherwise).
    let types = udm_targets::builtin();
    types.load_all();
    let registered: BTreeSet<String> = types.list().into_iter().map(|(n, _)| n).collect();
    let covered: BTreeSet<String> = COVERED.iter().map(|s| s.to_string()).collect();
    assert_eq!(registered, covered);
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn every_target_round_trips_its_table_line(
        specs in proptest::collection::vec(spec(), 1..4).prop_filter(
            "verity makes the table read-only; cache, era, clone and writecache need write access",
            |v| !(v.iter().any(|s| matches!(s, Spec::Verity(_)))
                && v.iter().any(|s| matches!(s, Spec::Cache { .. } | Spec::Era { .. } | Spec::Clone { .. } | Spec::Mirror { .. } | Spec::Writecache { .. } | Spec::Raid { .. })))
        ),
        names in proptest::collection::vec(awkward_name(), 1..6),
        dir_name in awkward_name(),
    ) {
        // thin-pool, multipath and integrity must be alone in their tables (singletons, as in the kernel).
        let specs = match specs.iter().find(|s| matches!(s, Spec::ThinPool(..) | Spec::Multipath { .. } | Spec::Integrity(..))) {
            Some(p) => vec![p.clone()],
            None => specs,
        };
        // A verity line makes the table read-only, where a persistent snapshot cannot write
        // its COW header (refused, as by the kernel): not a round-trip case.
        prop_assume!(!(specs.iter().any(|s| matches!(s, Spec::Verity(_)))
            && specs.iter().any(|s| matches!(s, Spec::Snapshot(k, ..) if *k != "N"))));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(format!("d {dir_name}\\"));
        std::fs::create_dir(&dir).unwrap();
        let mut files = Files { dir: &dir, names: &names, used: 0 };
        let mut text = String::new();
        let mut want = Vec::new();
        let mut start = 0;
        for s in &specs {
            let (ty, len, params) = render(s, &mut files);
            text.push_str(&format!("{start} {len} {ty} {params}\n"));
            want.push(params);
            start += len;
        }
        let read_only = specs.iter().any(|s| matches!(s, Spec::Verity(_)));
        let lines: Vec<TableLine> = parse_table_text(&text).unwrap();
        let reg = registry();
        if specs.iter().any(|s| matches!(s, Spec::Thin(..))) {
            // The pool the thin lines name (253:0), with devices 0..4.
            let meta = dir.join("pool meta");
            let data = dir.join("pool data");
            std::fs::File::create(&meta).unwrap().set_len(4 << 20).unwrap();
            std::fs::File::create(&data).unwrap().set_len(8 << 20).unwrap();
            let pool = format!(
                "0 16384 thin-pool {} {} 128 0",
                udm_core::Escaped(meta.to_str().unwrap()),
                udm_core::Escaped(data.to_str().unwrap())
            );
            reg.create("pool", "").unwrap();
            reg.load(&sel("pool"), &parse_table_text(&pool).unwrap(), false).unwrap();
            reg.resume(&sel("pool")).unwrap();
            for id in 0..4 {
                reg.message(&sel("pool"), 0, &["create_thin".into(), id.to_string()]).unwrap();
            }
        }
        reg.create("a", "").unwrap();
        reg.load(&sel("a"), &lines, read_only).unwrap_or_else(|e| panic!("{text}: {e}"));
        reg.resume(&sel("a")).unwrap();
        let (got, out) = printed(&reg, "a");
        prop_assert_eq!(&got, &want, "table {:?}", text);
        // The printed text parses to the lines it was made from...
        let reparsed = parse_table_text(&out).unwrap();
        prop_assert_eq!(&reparsed, &lines);
        // ...and reloading the device with it builds the same table.
        reg.load(&sel("a"), &reparsed, read_only).unwrap_or_else(|e| panic!("{out}: {e}"));
        reg.suspend(&sel("a"), false, false).unwrap();
        reg.resume(&sel("a")).unwrap();
        let (again, _) = printed(&reg, "a");
        prop_assert_eq!(&again, &want);
        reg.remove(&sel("a"), false).unwrap();
    }
}
