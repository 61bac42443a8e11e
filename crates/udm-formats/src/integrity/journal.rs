//! dm-integrity's journal: `sections` sections of `section_sectors` sectors. A section starts
//! with 8 sectors of entries, then the data of its entries (one block each). Every journal
//! sector ends with an 8-byte commit id (which is why a data block's last 8 bytes per sector
//! live in its entry); entry sectors keep 8 bytes before it for the section MAC when the
//! journal has one.
//!
//! Entry: `sector (le64)` | `last_bytes[sectors_per_block] (8 each)` | `tag`, rounded up to 8
//! bytes. An unused entry has `0xffffffff` in the sector's high word.

/// Sectors of entries at the start of each section.
pub const JOURNAL_BLOCK_SECTORS: u64 = 8;
/// Usable bytes of a journal sector before its commit id.
pub const JOURNAL_SECTOR_DATA: usize = 504;
pub const JOURNAL_MAC_PER_SECTOR: usize = 8;
pub const JOURNAL_MAC_SIZE: usize = JOURNAL_MAC_PER_SECTOR * JOURNAL_BLOCK_SECTORS as usize;
pub const N_COMMIT_IDS: usize = 4;
/// The kernel's fixed commit id seeds.
pub const COMMIT_IDS: [u64; N_COMMIT_IDS] = [
    0x1111111111111111,
    0x2222222222222222,
    0x3333333333333333,
    0x4444444444444444,
];
const UNUSED_HI: u32 = 0xffff_ffff;
const INPROGRESS_HI: u32 = 0xffff_fffe;

/// Journal sizes derived from the tag size, block size and MAC flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalGeometry {
    pub sections: u32,
    pub entry_size: usize,
    pub entries_per_sector: u32,
    pub section_entries: u32,
    pub section_sectors: u32,
    pub log2_spb: u8,
    pub tag_size: u32,
}

/// The commit id of sector `j` of section `i` under sequence `seq`.
pub fn commit_id(seq: usize, i: u32, j: u32) -> u64 {
    commit_id_in(&COMMIT_IDS, seq, i, j)
}

/// [`commit_id`] with other seeds (an encrypted journal's, see `journal_crypt`).
pub fn commit_id_in(ids: &[u64; N_COMMIT_IDS], seq: usize, i: u32, j: u32) -> u64 {
    ids[seq] ^ (((i as u64) << 32) ^ j as u64)
}

pub fn next_seq(s: usize) -> usize {
    (s + 1) % N_COMMIT_IDS
}
pub fn prev_seq(s: usize) -> usize {
    (s + N_COMMIT_IDS - 1) % N_COMMIT_IDS
}

impl JournalGeometry {
    pub fn new(tag_size: u32, log2_spb: u8, mac: bool, sections: u32) -> JournalGeometry {
        let spb = 1usize << log2_spb;
        let entry_size = (8 + 8 * spb + tag_size as usize).div_ceil(8) * 8;
        let space = JOURNAL_SECTOR_DATA - if mac { JOURNAL_MAC_PER_SECTOR } else { 0 };
        let eps = (space / entry_size) as u32;
        let section_entries = eps * JOURNAL_BLOCK_SECTORS as u32;
        JournalGeometry {
            sections,
            entry_size,
            entries_per_sector: eps,
            section_entries,
            section_sectors: (section_entries << log2_spb) + JOURNAL_BLOCK_SECTORS as u32,
            log2_spb,
            tag_size,
        }
    }

    /// Total journal sectors.
    pub fn sectors(&self) -> u64 {
        self.section_sectors as u64 * self.sections as u64
    }
    pub fn bytes(&self) -> usize {
        (self.sectors() * 512) as usize
    }
    pub fn entries(&self) -> u32 {
        self.section_entries * self.sections
    }
    pub fn spb(&self) -> usize {
        1 << self.log2_spb
    }

    /// Byte offset (in the journal) of sector `j` of section `i`.
    pub fn sector_off(&self, i: u32, j: u32) -> usize {
        (i as usize * self.section_sectors as usize + j as usize) * 512
    }
    /// Byte offset of entry `n` of section `i`.
    pub fn entry_off(&self, i: u32, n: u32) -> usize {
        let rel = n as u64 % JOURNAL_BLOCK_SECTORS;
        let k = n as u64 / JOURNAL_BLOCK_SECTORS;
        self.sector_off(i, rel as u32) + k as usize * self.entry_size
    }
    /// Byte offset of the data block of entry `n` of section `i`.
    pub fn data_off(&self, i: u32, n: u32) -> usize {
        self.sector_off(i, (n << self.log2_spb) + JOURNAL_BLOCK_SECTORS as u32)
    }
    /// Offset of the tag within an entry.
    pub fn tag_in_entry(&self) -> usize {
        8 + 8 * self.spb()
    }
}

/// Read the commit id at the end of the sector starting at `off`.
pub fn sector_commit_id(j: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(j[off + 504..off + 512].try_into().unwrap())
}
pub fn set_sector_commit_id(j: &mut [u8], off: usize, id: u64) {
    j[off + 504..off + 512].copy_from_slice(&id.to_le_bytes());
}

pub fn entry_sector(j: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(j[off..off + 8].try_into().unwrap())
}
fn entry_hi(j: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(j[off + 4..off + 8].try_into().unwrap())
}
pub fn entry_is_unused(j: &[u8], off: usize) -> bool {
    entry_hi(j, off) == UNUSED_HI
}
pub fn entry_is_inprogress(j: &[u8], off: usize) -> bool {
    entry_hi(j, off) == INPROGRESS_HI
}
pub fn set_entry_unused(j: &mut [u8], off: usize) {
    j[off + 4..off + 8].copy_from_slice(&UNUSED_HI.to_le_bytes());
}
pub fn set_entry_sector(j: &mut [u8], off: usize, s: u64) {
    j[off..off + 8].copy_from_slice(&s.to_le_bytes());
}

impl JournalGeometry {
    /// Wipe section `i` as the kernel's `init_journal`: zeroed sectors with `seq`'s commit
    /// ids, every entry unused.
    pub fn init_section(&self, j: &mut [u8], i: u32, seq: usize) {
        self.init_section_in(j, i, seq, &COMMIT_IDS)
    }

    /// [`JournalGeometry::init_section`] with other commit id seeds.
    pub fn init_section_in(&self, j: &mut [u8], i: u32, seq: usize, ids: &[u64; N_COMMIT_IDS]) {
        for s in 0..self.section_sectors {
            let off = self.sector_off(i, s);
            j[off..off + 504].fill(0);
            set_sector_commit_id(j, off, commit_id_in(ids, seq, i, s));
        }
        for n in 0..self.section_entries {
            set_entry_unused(j, self.entry_off(i, n));
        }
    }

    /// Copy one block into entry `n` of section `i` (moving each sector's last 8 bytes into
    /// the entry, where the commit id will go), with its tag and sector.
    pub fn put_block(&self, j: &mut [u8], i: u32, n: u32, sector: u64, block: &[u8], tag: &[u8]) {
        let e = self.entry_off(i, n);
        let d = self.data_off(i, n);
        for s in 0..self.spb() {
            let src = &block[s * 512..(s + 1) * 512];
            j[d + s * 512..d + s * 512 + 504].copy_from_slice(&src[..504]);
            j[e + 8 + s * 8..e + 16 + s * 8].copy_from_slice(&src[504..]);
        }
        let t = e + self.tag_in_entry();
        j[t..t + tag.len()].copy_from_slice(tag);
        set_entry_sector(j, e, sector);
    }

    /// Copy `count` consecutive blocks (logical sectors from `sector` on, `tags` of
    /// `tag_size` each) into entries `n..n+count` of section `i`, which must all be in that
    /// section: as the kernel does, the data goes in whole with one copy (its data sectors
    /// are contiguous) and each sector's last 8 bytes are then copied into its entry; the
    /// commit id slot they overwrite is stamped when the section is committed.
    #[allow(clippy::too_many_arguments)]
    pub fn put_blocks(
        &self,
        j: &mut [u8],
        i: u32,
        n: u32,
        sector: u64,
        data: &[u8],
        tags: &[u8],
        count: u32,
    ) {
        let spb = self.spb();
        let d = self.data_off(i, n);
        j[d..d + data.len()].copy_from_slice(data);
        let ts = self.tag_size as usize;
        for b in 0..count {
            let e = self.entry_off(i, n + b);
            let blk = b as usize * spb * 512;
            for s in 0..spb {
                let o = blk + s * 512 + 504;
                j[e + 8 + s * 8..e + 16 + s * 8].copy_from_slice(&data[o..o + 8]);
            }
            let t = e + self.tag_in_entry();
            j[t..t + ts].copy_from_slice(&tags[b as usize * ts..(b as usize + 1) * ts]);
            set_entry_sector(j, e, sector + (b as u64) * spb as u64);
        }
    }

    /// The blocks of entries `n..n+count` of section `i` (all in that section) into `out`
    /// (exactly that long), as written: their data sectors in one copy, then each sector's
    /// last 8 bytes restored from its entry.
    pub fn get_blocks(&self, j: &[u8], i: u32, n: u32, count: u32, out: &mut [u8]) {
        let spb = self.spb();
        let d = self.data_off(i, n);
        out.copy_from_slice(&j[d..d + count as usize * spb * 512]);
        for b in 0..count {
            let e = self.entry_off(i, n + b);
            let blk = b as usize * spb * 512;
            for s in 0..spb {
                let o = blk + s * 512 + 504;
                out[o..o + 8].copy_from_slice(&j[e + 8 + s * 8..e + 16 + s * 8]);
            }
        }
    }

    /// The block held by entry `n` of section `i`, as written (last bytes restored).
    pub fn get_block(&self, j: &[u8], i: u32, n: u32, out: &mut [u8]) {
        let e = self.entry_off(i, n);
        let d = self.data_off(i, n);
        for s in 0..self.spb() {
            out[s * 512..s * 512 + 504].copy_from_slice(&j[d + s * 512..d + s * 512 + 504]);
            out[s * 512 + 504..(s + 1) * 512].copy_from_slice(&j[e + 8 + s * 8..e + 16 + s * 8]);
        }
    }

    /// The tag stored in entry `n` of section `i`.
    pub fn entry_tag<'a>(&self, j: &'a [u8], i: u32, n: u32) -> &'a [u8] {
        let t = self.entry_off(i, n) + self.tag_in_entry();
        &j[t..t + self.tag_size as usize]
    }
}

/// Which sections of a journal read from disk to replay, the kernel's `replay_journal` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayPlan {
    /// First section to replay and how many (in ring order).
    pub write_start: u32,
    pub write_sections: u32,
    /// Nothing to replay (no used entry, or the commit ids say so).
    pub empty: bool,
    /// Commit seq the replayed range ends in (the next one to use when continuing).
    pub want_seq: usize,
    pub last_used: usize,
}

/// Why a journal cannot be replayed (the device fails with EIO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// A sector's commit id is none of the four sequences (section, sector).
    BadCommitId(u32, u32),
    /// Every commit sequence is in use.
    AllSeqsUsed,
}

impl JournalGeometry {
    /// Decide what to replay from a whole journal image `j`.
    pub fn plan_replay(&self, j: &[u8]) -> Result<ReplayPlan, ReplayError> {
        self.plan_replay_in(j, &COMMIT_IDS)
    }

    /// [`JournalGeometry::plan_replay`] with other commit id seeds.
    pub fn plan_replay_in(
        &self,
        j: &[u8],
        ids: &[u64; N_COMMIT_IDS],
    ) -> Result<ReplayPlan, ReplayError> {
        let commit_id = |k: usize, i: u32, s: u32| commit_id_in(ids, k, i, s);
        let mut used = [false; N_COMMIT_IDS];
        let mut max_sec = [0u32; N_COMMIT_IDS];
        let mut empty = true;
        for i in 0..self.sections {
            for s in 0..self.section_sectors {
                let id = sector_commit_id(j, self.sector_off(i, s));
                let k = (0..N_COMMIT_IDS)
                    .find(|&k| commit_id(k, i, s) == id)
                    .ok_or(ReplayError::BadCommitId(i, s))?;
                used[k] = true;
                max_sec[k] = i;
            }
            if empty && (0..self.section_entries).any(|n| !entry_is_unused(j, self.entry_off(i, n)))
            {
                empty = false;
            }
        }
        let unused = if !used[N_COMMIT_IDS - 1] {
            let mut u = N_COMMIT_IDS - 1;
            while u > 0 && !used[u - 1] {
                u -= 1;
            }
            u
        } else {
            (0..N_COMMIT_IDS)
                .find(|&u| !used[u])
                .ok_or(ReplayError::AllSeqsUsed)?
        };
        let last_used = prev_seq(unused);
        let mut want = prev_seq(last_used);
        if !used[want] && used[prev_seq(want)] {
            empty = true;
        }
        let mut write_start = max_sec[last_used] + 1;
        if write_start >= self.sections {
            want = next_seq(want);
            write_start -= self.sections;
        }
        let mut i = write_start;
        let mut n = 0;
        'outer: while n < self.sections {
            for s in 0..self.section_sectors {
                if sector_commit_id(j, self.sector_off(i, s)) != commit_id(want, i, s) {
                    break 'outer;
                }
            }
            i += 1;
            if i >= self.sections {
                want = next_seq(want);
                i = 0;
            }
            n += 1;
        }
        Ok(ReplayPlan {
            write_start,
            write_sections: n,
            empty,
            want_seq: want,
            last_used,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_put_and_get_match_the_per_block_ones() {
        for (log2_spb, tag) in [(0u8, 4u32), (3, 8)] {
            let g = JournalGeometry::new(tag, log2_spb, false, 2);
            let (bb, spb) = (512usize << log2_spb, 1u64 << log2_spb);
            let count = 5u32;
            let data: Vec<u8> = (0..bb * count as usize)
                .map(|k| (k * 7 + k / 509) as u8)
                .collect();
            let tags: Vec<u8> = (0..(tag * count) as usize)
                .map(|k| k as u8 ^ 0x5a)
                .collect();
            let (mut a, mut b) = (vec![0u8; g.bytes()], vec![0u8; g.bytes()]);
            for i in 0..2 {
                g.init_section(&mut a, i, 0);
                g.init_section(&mut b, i, 0);
            }
            g.put_blocks(&mut a, 1, 3, 100, &data, &tags, count);
            let mut got = vec![0u8; data.len()];
            g.get_blocks(&a, 1, 3, count, &mut got);
            assert_eq!(got, data);
            for k in 0..count {
                let t = &tags[(k * tag) as usize..((k + 1) * tag) as usize];
                let blk = &data[k as usize * bb..(k as usize + 1) * bb];
                g.put_block(&mut b, 1, 3 + k, 100 + k as u64 * spb, blk, t);
                let e = g.entry_off(1, 3 + k);
                let n = g.tag_in_entry() + tag as usize;
                assert_eq!(a[e..e + n], b[e..e + n]);
                let mut out = vec![0u8; bb];
                g.get_block(&a, 1, 3 + k, &mut out);
                assert_eq!(out, blk);
            }
        }
    }

    #[test]
    fn fresh_journal_replays_nothing_and_continues_at_seq_1() {
        let g = JournalGeometry::new(4, 0, false, 3);
        let mut j = vec![0u8; g.bytes()];
        for i in 0..3 {
            g.init_section(&mut j, i, 0);
        }
        let p = g.plan_replay(&j).unwrap();
        assert!(p.empty);
        assert_eq!((p.write_start, p.write_sections, p.want_seq), (0, 3, 1));
    }

    #[test]
    fn other_commit_id_seeds_are_a_journal_of_their_own() {
        let g = JournalGeometry::new(4, 0, false, 3);
        let ids = [7, 8, 9, 10];
        let mut j = vec![0u8; g.bytes()];
        for i in 0..3 {
            g.init_section_in(&mut j, i, 0, &ids);
        }
        assert_eq!(sector_commit_id(&j, g.sector_off(2, 5)), 7 ^ (2 << 32) ^ 5);
        assert_eq!(g.plan_replay(&j), Err(ReplayError::BadCommitId(0, 0)));
        let p = g.plan_replay_in(&j, &ids).unwrap();
        assert!(p.empty);
        assert_eq!((p.write_start, p.write_sections, p.want_seq), (0, 3, 1));
    }

    #[test]
    fn block_round_trips_through_an_entry() {
        let g = JournalGeometry::new(32, 3, true, 2);
        let mut j = vec![0u8; g.bytes()];
        g.init_section(&mut j, 1, 2);
        let block: Vec<u8> = (0..4096u32).map(|x| (x * 7 % 251) as u8).collect();
        g.put_block(&mut j, 1, 5, 800, &block, &[9; 32]);
        let mut out = vec![0u8; 4096];
        g.get_block(&j, 1, 5, &mut out);
        assert_eq!(out, block);
        assert_eq!(entry_sector(&j, g.entry_off(1, 5)), 800);
        assert_eq!(g.entry_tag(&j, 1, 5), &[9; 32]);
        // Commit ids of the data sectors are untouched by the copy.
        let off = g.data_off(1, 5);
        assert_eq!(sector_commit_id(&j, off), commit_id(2, 1, 8 + 5 * 8));
    }
}
