//! Unit tests: hand-built MBR/EBR chains and GPTs, the backup-header fallback, corrupted
//! CRCs, the protective MBR, and a seeded fuzz over random and corrupted sectors.

use super::gpt::{self, GptFault};
use super::mbr::Mbr;
use super::*;

const MIB: usize = 1 << 20;

fn put_entry(d: &mut [u8], sector_off: usize, i: usize, ty: u8, start: u32, len: u32) {
    let o = sector_off + 0x1be + 16 * i;
    d[o + 4] = ty;
    d[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
    d[o + 12..o + 16].copy_from_slice(&len.to_le_bytes());
    d[sector_off + 510] = 0x55;
    d[sector_off + 511] = 0xaa;
}

/// sfdisk's layout: p1 2048+8192, p2 10240+20480, extended 30720.. with logicals at 32768
/// (4096) and 38912 (8192), EBRs at 30720 and 36864.
fn dos_disk() -> Vec<u8> {
    let mut d = vec![0u8; 24 * MIB];
    put_entry(&mut d, 0, 0, 0x83, 2048, 8192);
    put_entry(&mut d, 0, 1, 0x83, 10240, 20480);
    put_entry(&mut d, 0, 2, 0x05, 30720, 100352);
    let ebr1 = 30720 * 512;
    put_entry(&mut d, ebr1, 0, 0x83, 2048, 4096);
    put_entry(&mut d, ebr1, 1, 0x05, 6144, 10240);
    let ebr2 = 36864 * 512;
    put_entry(&mut d, ebr2, 0, 0x82, 2048, 8192);
    d
}

fn s(start: u64, size: u64, container: Option<usize>) -> Slice {
    Slice {
        start,
        size,
        container,
    }
}

#[test]
fn dos_primary_extended_logical() {
    let mut d = dos_disk();
    let scan = read_slices(&mut d, ScanOpts::default()).unwrap().unwrap();
    assert_eq!(scan.kind, Kind::Dos);
    assert_eq!(
        scan.slices,
        vec![
            s(2048, 8192, None),
            s(10240, 20480, None),
            s(30720, 2, None),
            s(0, 0, None),
            s(32768, 4096, Some(2)),
            s(38912, 8192, Some(2)),
            // The last EBR's empty second entry still takes a slot, as in kpartx.
            s(36864, 0, Some(2)),
        ]
    );
    assert!(scan.warnings.is_empty());
}

#[test]
fn dos_cyclic_chain_terminates() {
    let mut d = dos_disk();
    // The second EBR links to itself (6144 past the extended start): kpartx keeps adding
    // its logical partition until MAX_SLICES.
    put_entry(&mut d, 36864 * 512, 1, 0x05, 6144, 100);
    let scan = read_slices(&mut d, ScanOpts::default()).unwrap().unwrap();
    assert_eq!(scan.slices.len(), MAX_SLICES);
    assert_eq!(scan.warnings, vec!["dos_extd_partition: too many slices"]);
}

#[test]
fn dos_without_signature_is_not_a_table() {
    let mut d = dos_disk();
    d[510] = 0;
    assert!(read_slices(&mut d, ScanOpts::default()).unwrap().is_none());
    assert!(matches!(
        mbr::dos_slices(&mut d, &mut Vec::new()),
        Err(PartError::NoSignature(0))
    ));
}

/// A GPT disk as sfdisk makes one: protective MBR, primary at 1, entries at 2, backup at the
/// end with its entries just before it.
fn gpt_disk(parts: &[(u64, u64)]) -> Vec<u8> {
    let mut d = vec![0u8; 16 * MIB];
    let last = (d.len() / 512 - 1) as u64;
    put_entry(&mut d, 0, 0, 0xee, 1, u32::try_from(last).unwrap());
    let mut entries = vec![0u8; 128 * 128];
    for (i, &(first, end)) in parts.iter().enumerate() {
        if (first, end) == (0, 0) {
            continue; // an unused slot
        }
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[0..16].copy_from_slice(&[0xaf; 16]);
        e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&end.to_le_bytes());
        e[56..58].copy_from_slice(&(b'p' as u16).to_le_bytes());
    }
    let ecrc = crc32(&entries);
    let header = |my: u64, alt: u64, elba: u64| {
        let mut h = vec![0u8; 512];
        h[0..8].copy_from_slice(&gpt::SIGNATURE.to_le_bytes());
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(last - 33).to_le_bytes());
        h[56..72].copy_from_slice(&[7; 16]);
        h[72..80].copy_from_slice(&elba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&ecrc.to_le_bytes());
        let c = crc32(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        h
    };
    d[512..1024].copy_from_slice(&header(1, last, 2));
    d[1024..1024 + entries.len()].copy_from_slice(&entries);
    let bl = last as usize * 512;
    d[bl..bl + 512].copy_from_slice(&header(last, 1, last - 32));
    let be = (last as usize - 32) * 512;
    d[be..be + entries.len()].copy_from_slice(&entries);
    d
}

#[test]
fn gpt_entries_and_numbering() {
    let mut d = gpt_disk(&[(2048, 10239), (0, 0), (10240, 14335)]);
    let scan = read_slices(&mut d, ScanOpts::default()).unwrap().unwrap();
    assert_eq!(scan.kind, Kind::Gpt);
    assert_eq!(scan.slices[0], s(2048, 8192, None));
    assert_eq!(scan.slices[1], s(0, 0, None));
    assert_eq!(scan.slices[2], s(10240, 4096, None));
    assert_eq!(scan.slices.len(), 3);
    assert!(scan.warnings.is_empty(), "{:?}", scan.warnings);
    let t = gpt::choose(&mut d, false, &mut Vec::new()).unwrap().0;
    assert_eq!(t.entries[0].name, "p");
    assert!(Mbr::parse(&d[..512]).unwrap().is_protective());
}

#[test]
fn gpt_backup_used_when_primary_is_corrupt() {
    let mut d = gpt_disk(&[(2048, 10239)]);
    d[512 + 40] ^= 1; // primary header CRC now wrong
    let mut w = Vec::new();
    let (t, backup) = gpt::choose(&mut d, false, &mut w).unwrap();
    assert!(backup);
    assert_eq!(t.header.my_lba, (d.len() / 512 - 1) as u64);
    assert_eq!(w, vec!["Primary GPT is invalid, using alternate GPT."]);
    assert_eq!(
        gpt::read_table(&mut d, 1).unwrap_err(),
        GptFault::HeaderCrc {
            found: gpt::read_table(&mut gpt_disk(&[(2048, 10239)]), 1)
                .unwrap()
                .header
                .header_crc,
            computed: {
                let mut h = d[512..604].to_vec();
                h[16..20].fill(0);
                crc32(&h)
            }
        }
    );
}

#[test]
fn gpt_entry_crc_checked() {
    let mut d = gpt_disk(&[(2048, 10239)]);
    d[1024 + 32] ^= 0x10; // primary entry array changed: its CRC no longer matches
    assert!(matches!(
        gpt::read_table(&mut d, 1),
        Err(GptFault::EntriesCrc { .. })
    ));
    let mut w = Vec::new();
    let (t, backup) = gpt::choose(&mut d, false, &mut w).unwrap();
    assert!(backup);
    assert_eq!(t.entries[0].first_lba, 2048);
}

#[test]
fn gpt_needs_protective_mbr_unless_forced() {
    let mut d = gpt_disk(&[(2048, 10239)]);
    d[0x1be + 4] = 0x83;
    let mut w = Vec::new();
    assert!(matches!(
        gpt::choose(&mut d, false, &mut w),
        Err(PartError::NoProtectiveMbr)
    ));
    assert_eq!(w[1], "  Assuming this disk is *not* a GPT disk anymore.");
    // Not GPT → DOS sees the 0x83 entry.
    let scan = read_slices(&mut d, ScanOpts::default()).unwrap().unwrap();
    assert_eq!(scan.kind, Kind::Dos);
    let forced = ScanOpts {
        force_gpt: true,
        only: None,
    };
    let scan = read_slices(&mut d, forced).unwrap().unwrap();
    assert_eq!(scan.kind, Kind::Gpt);
    assert_eq!(scan.warnings[2], "  gpt option taken, disk treated as GPT.");
}

#[test]
fn gpt_protective_mbr_hides_dos() {
    let mut d = gpt_disk(&[(2048, 10239)]);
    // Both headers broken: no GPT, and DOS refuses a protective MBR.
    d[512] = 0;
    let l = d.len() - 512;
    d[l] = 0;
    assert!(read_slices(&mut d, ScanOpts::default()).unwrap().is_none());
    assert!(matches!(
        mbr::dos_slices(&mut d, &mut Vec::new()),
        Err(PartError::Protective)
    ));
}

#[test]
fn gpt_header_mismatch_warns() {
    let mut d = gpt_disk(&[(2048, 10239)]);
    let l = d.len();
    // Grow the disk: the backup is no longer at the end; both still valid.
    d.resize(l + 4096, 0);
    let mut w = Vec::new();
    let (_, backup) = gpt::choose(&mut d, false, &mut w).unwrap();
    assert!(!backup);
    assert_eq!(
        w,
        vec![
            "GPT:Primary header thinks Alt. header is not at the end of the disk.",
            "GPT:Alternate GPT header not at the end of the disk.",
            "GPT: Use GNU Parted to correct GPT errors.",
        ]
    );
}

#[test]
fn fuzz_random_and_corrupted_sectors_never_panic() {
    // A fixed, printed seed makes every run the same.
    let seed = udm_testkit::rng::seed("UDM_FUZZ_SEED", 0x6b70_6172_7478);
    let mut rng = udm_testkit::rng::XorShift::new(seed);
    let bases = [dos_disk(), gpt_disk(&[(2048, 10239), (10240, 20479)])];
    let mut found = [0usize; 3];
    for round in 0..200 {
        let mut d = bases[round % 2].clone();
        // Corrupt the interesting sectors: MBR, GPT header and entries, EBRs, the backup.
        let len = d.len();
        let hot: Vec<usize> = [
            0,
            512,
            1024,
            30720 * 512,
            36864 * 512,
            len - 512,
            len - 33 * 512,
        ]
        .into_iter()
        .filter(|&o| o + 512 <= len)
        .collect();
        for _ in 0..1 + rng.next_u64() % 24 {
            let base = hot[(rng.next_u64() % hot.len() as u64) as usize];
            let off = base + (rng.next_u64() % 512) as usize;
            let v = rng.next_u64();
            match v % 3 {
                0 => d[off] = v as u8,
                1 => d[off] ^= 1 << (v % 8),
                _ => {
                    let n = ((v >> 8) % 8) as usize;
                    let end = (off + n).min(len);
                    d[off..end].fill(0xff);
                }
            }
        }
        if round % 5 == 0 {
            // Fully random first sectors, with a valid signature now and then.
            for b in &mut d[..4096] {
                *b = rng.next_u64() as u8;
            }
            if rng.next_u64().is_multiple_of(2) {
                d[510] = 0x55;
                d[511] = 0xaa;
            }
        }
        if round % 7 == 0 {
            d.truncate((rng.next_u64() % (len as u64)) as usize);
        }
        for force in [false, true] {
            let opts = ScanOpts {
                force_gpt: force,
                only: None,
            };
            match read_slices(&mut d, opts) {
                Ok(Some(scan)) => {
                    assert!(scan.slices.len() <= MAX_SLICES);
                    for sl in &scan.slices {
                        if let Some(c) = sl.container {
                            assert!(c < 4, "containers are primary slots");
                        }
                    }
                    found[if scan.kind == Kind::Gpt { 0 } else { 1 }] += 1;
                }
                Ok(None) => found[2] += 1,
                Err(e) => assert!(e.errno() > 0),
            }
        }
    }
    eprintln!("gpt {} dos {} none {}", found[0], found[1], found[2]);
    // The corruption must not be so heavy that nothing parses, nor so light that all does.
    assert!(found.iter().all(|&n| n > 0), "{found:?}");
}

/// Set a primary-header field and fix the header CRC so the field's own check is reached.
fn patch_primary(d: &mut [u8], off: usize, bytes: &[u8]) {
    d[512 + off..512 + off + bytes.len()].copy_from_slice(bytes);
    let size = u32::from_le_bytes(d[512 + 12..512 + 16].try_into().unwrap()) as usize;
    d[512 + 16..512 + 20].fill(0);
    let c = crc32(&d[512..512 + size.min(512)]);
    d[512 + 16..512 + 20].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn gpt_hostile_header_fields_rejected() {
    let base = gpt_disk(&[(2048, 10239)]);
    let cases: [(usize, Vec<u8>, GptFault); 4] = [
        (
            12,
            0xffff_ffffu32.to_le_bytes().to_vec(),
            GptFault::HeaderSize(0xffff_ffff),
        ),
        (
            80,
            0x1000_0000u32.to_le_bytes().to_vec(),
            GptFault::TooManyEntries(0x1000_0000),
        ),
        (84, 64u32.to_le_bytes().to_vec(), GptFault::EntrySize(64)),
        (24, 5u64.to_le_bytes().to_vec(), GptFault::MyLba(5)),
    ];
    for (off, bytes, want) in cases {
        let mut d = base.clone();
        patch_primary(&mut d, off, &bytes);
        assert_eq!(gpt::read_table(&mut d, 1).unwrap_err(), want);
        // The backup still serves.
        let (t, backup) = gpt::choose(&mut d, false, &mut Vec::new()).unwrap();
        assert!(backup);
        assert_eq!(t.entries[0].last_lba, 10239);
    }
    // Entries beyond the end of the disk.
    let mut d = base.clone();
    patch_primary(&mut d, 72, &u64::MAX.to_le_bytes());
    assert_eq!(
        gpt::read_table(&mut d, 1).unwrap_err(),
        GptFault::EntriesUnreadable
    );
}
