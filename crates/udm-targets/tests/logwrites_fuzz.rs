//! Fuzzing the dm-log-writes log reader (what `udm replay-log` and `dump` read from a log a
//! user hands them): a valid log of writes, a flush, a discard, FUA and marks, mutated (bit
//! flips, header fields set to 0 / all ones / random, truncation), must read, replay and
//! list without a panic — every failure a `LogError` with a message.

use proptest::prelude::*;
use std::sync::Arc;
use udm_io::{mem::MemDevice, sync, BlockDevice, Sectors};
use udm_targets::log_writes::checked::dump;
use udm_targets::log_writes::format::*;
use udm_targets::log_writes::reader::{replay, LogReader, Next, ReplayOptions};
use udm_testkit::mutate::{mutated, mutations};

/// Blocks of the device the log replays onto.
const DEV_BLOCKS: u64 = 32;

struct Log {
    image: Vec<u8>,
    /// Byte offsets of every header field (super block and entries).
    fields: Vec<usize>,
    /// The device after replaying every entry.
    replayed: Vec<u8>,
}

/// A valid log with `ss`-byte blocks: write, flush, discard, mark, FUA write, end mark.
fn valid_log(ss: usize) -> Log {
    let mut image = vec![0u8; ss];
    let mut fields = vec![8, 16, 24];
    let mut dev = vec![0u8; DEV_BLOCKS as usize * ss];
    let mut n = 0u64;
    let mut entry = |image: &mut Vec<u8>, h: EntryHeader, mark: &[u8], data: &[u8]| {
        let at = image.len();
        fields.extend([at, at + 8, at + 16, at + 24]);
        image.extend(h.encode(mark, ss));
        image.extend_from_slice(data);
        n += 1;
    };
    let data: Vec<u8> = (0..3 * ss).map(|i| (i % 251) as u8 + 1).collect();
    entry(
        &mut image,
        EntryHeader {
            sector: 2,
            nr_sectors: 3,
            flags: 0,
            data_len: 0,
        },
        b"",
        &data,
    );
    dev[2 * ss..5 * ss].copy_from_slice(&data);
    entry(
        &mut image,
        EntryHeader {
            sector: 0,
            nr_sectors: 0,
            flags: LOG_FLUSH_FLAG,
            data_len: 0,
        },
        b"",
        b"",
    );
    entry(
        &mut image,
        EntryHeader {
            sector: 3,
            nr_sectors: 1,
            flags: LOG_DISCARD_FLAG,
            data_len: 0,
        },
        b"",
        b"",
    );
    dev[3 * ss..4 * ss].fill(0);
    entry(
        &mut image,
        EntryHeader {
            sector: 0,
            nr_sectors: 0,
            flags: LOG_MARK_FLAG,
            data_len: 2,
        },
        b"m1",
        b"",
    );
    let fua = vec![0x5au8; ss];
    entry(
        &mut image,
        EntryHeader {
            sector: 10,
            nr_sectors: 1,
            flags: LOG_FUA_FLAG,
            data_len: 0,
        },
        b"",
        &fua,
    );
    dev[10 * ss..11 * ss].copy_from_slice(&fua);
    let end = END_MARK.as_bytes();
    let h = EntryHeader {
        sector: 0,
        nr_sectors: 0,
        flags: LOG_MARK_FLAG,
        data_len: end.len() as u64,
    };
    entry(&mut image, h, end, b"");
    let sup = LogSuper {
        nr_entries: n,
        sectorsize: ss as u32,
    }
    .encode();
    image[..ss].copy_from_slice(&sup);
    Log {
        image,
        fields,
        replayed: dev,
    }
}

fn mem(name: &str, bytes: &[u8]) -> Arc<MemDevice> {
    let d = Arc::new(MemDevice::new(name, Sectors(bytes.len() as u64 / 512)));
    if bytes.len() >= 512 {
        sync::write_at(&*d, Sectors(0), &bytes[..bytes.len() / 512 * 512]).unwrap();
    }
    d
}

/// Read, list and replay `image`: (entries read, entries replayed, the device), or the
/// first error's text.
fn read_all(image: &[u8], opts: &ReplayOptions) -> Result<(u64, u64, Vec<u8>), String> {
    let log = mem("log", image);
    let mut r = LogReader::open(log.clone()).map_err(|e| e.to_string())?;
    let ss = r.sectorsize();
    let entries = r.entries().map_err(|e| e.to_string())?;
    assert!(entries.len() as u64 <= r.sup.nr_entries);
    for e in &entries {
        let _ = r.read_data(e);
        let _ = udm_targets::log_writes::checked::entry_line(e, ss);
    }
    let dev = MemDevice::new("dev", Sectors(DEV_BLOCKS * ss / 512));
    let sum = replay(&mut r, &dev, opts, |_, _| Ok(Next::Continue)).map_err(|e| e.to_string())?;
    Ok((entries.len() as u64, sum.replayed, dev.snapshot()))
}

#[test]
fn a_valid_log_replays_exactly() {
    for ss in [512, 4096] {
        let log = valid_log(ss);
        let (n, replayed, dev) = read_all(&log.image, &ReplayOptions::default()).unwrap();
        assert_eq!((n, replayed), (6, 6));
        assert!(dev == log.replayed, "ss {ss}: replayed bytes differ");
        let opts = ReplayOptions {
            start_mark: Some("m1".into()),
            ..Default::default()
        };
        assert_eq!(read_all(&log.image, &opts).unwrap().1, 2);
    }
}

proptest! {
    #![proptest_config(udm_testkit::prop::config(400))]

    #[test]
    fn mutated_logs_read_or_fail_cleanly(
        big in any::<bool>(),
        muts in mutations(valid_log(512).fields, 1, 6),
        start in 0u64..8,
    ) {
        let ss = if big { 4096 } else { 512 };
        let log = valid_log(ss);
        // Field offsets were drawn for 512-byte blocks: scale the entry fields to `ss`.
        let muts: Vec<_> = muts
            .into_iter()
            .map(|m| match m {
                udm_testkit::mutate::Mutation::Field { at, width, v } if at >= 512 => {
                    udm_testkit::mutate::Mutation::Field { at: at / 512 * ss + at % 512, width, v }
                }
                m => m,
            })
            .collect();
        let image = mutated(&log.image, &muts);
        for opts in [
            ReplayOptions::default(),
            ReplayOptions { start_entry: start, limit: Some(3), ..Default::default() },
            ReplayOptions { start_mark: Some("m1".into()), no_discard: true, ..Default::default() },
        ] {
            match read_all(&image, &opts) {
                Ok((n, replayed, dev)) => {
                    prop_assert!(replayed <= n, "{} replayed of {} entries", replayed, n);
                    prop_assert_eq!(dev.len() as u64, DEV_BLOCKS * ss as u64);
                }
                Err(msg) => prop_assert!(!msg.is_empty()),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, &image).unwrap();
        let mut out = Vec::new();
        if let Err(e) = dump(p.to_str().unwrap(), &mut out) {
            prop_assert!(e.errno() > 0, "{e}");
        }
    }
}

#[test]
fn a_block_device_size_not_a_whole_block_is_read_safely() {
    // A log whose last header block is cut in half: the reader reports the cut entry.
    let log = valid_log(4096);
    let cut = &log.image[..log.image.len() - 2048];
    let dev: Arc<dyn BlockDevice> = mem("log", cut);
    let mut r = LogReader::open(dev).unwrap();
    let e = r.entries().unwrap_err();
    assert_eq!(e, LogError::Truncated { entry: 5 });
}
