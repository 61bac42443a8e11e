//! Where md puts things: raid0 striping, raid10 near/far/offset copies (`__raid10_find_phys`,
//! `calc_sectors`), and the raid4/5/6 parity rotations of `raid5_compute_sector` with the
//! syndrome slot order md uses for Q (`set_syndrome_sources`).

use super::params::*;

/// The array's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geo {
    pub level: u32,
    pub layout: u32,
    /// Sectors (0 for raid1).
    pub chunk: u64,
    pub disks: usize,
    /// Used sectors per data device.
    pub dev_sectors: u64,
    pub array_sectors: u64,
    pub r10: Option<R10Geo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct R10Geo {
    pub near: usize,
    pub far: usize,
    pub offset: bool,
    pub far_set_size: usize,
    /// Sectors between far copies.
    pub stride: u64,
}

/// The parity layout of one stripe row (raid4/5/6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Device of each data chunk of the row, in array order.
    pub data: Vec<usize>,
    pub pd: usize,
    /// raid6 only.
    pub qd: Option<usize>,
    /// Syndrome slot of each device (`usize::MAX` for P and Q) and the slot count.
    pub slot: Vec<usize>,
    pub nslots: usize,
}

impl Geo {
    pub fn parity_devs(&self) -> usize {
        match self.level {
            4 | 5 => 1,
            6 => 2,
            _ => 0,
        }
    }
    pub fn data_disks(&self) -> usize {
        self.disks - self.parity_devs()
    }
    pub fn is_parity(&self) -> bool {
        self.parity_devs() > 0
    }

    /// Set up a raid10 geometry (`setup_geo` + `calc_sectors`); None for a bad layout.
    pub fn raid10(layout: u32, chunk: u64, disks: usize, rdev_sectors: u64) -> Option<R10Geo> {
        let near = (layout & 0xff) as usize;
        let far = ((layout >> 8) & 0xff) as usize;
        let offset = layout & RAID10_OFFSET != 0;
        if layout >> 19 != 0 || near == 0 || far == 0 || chunk == 0 {
            return None;
        }
        let far_set_size = match layout >> 17 {
            0 => disks,
            1 => disks / far,
            2 => far * near,
            _ => return None,
        };
        if far_set_size == 0 {
            return None;
        }
        let copies = (near * far) as u64;
        let mut size = rdev_sectors / chunk;
        size /= far as u64;
        size *= disks as u64;
        size /= near as u64;
        size *= copies;
        size = size.div_ceil(disks as u64);
        let stride = if offset {
            chunk
        } else {
            (size / far as u64) * chunk
        };
        Some(R10Geo {
            near,
            far,
            offset,
            far_set_size,
            stride,
        })
    }

    /// raid0: the device and device sector of logical sector `s`.
    pub fn raid0(&self, s: u64) -> (usize, u64) {
        let chunk = s / self.chunk;
        let off = s % self.chunk;
        let n = self.disks as u64;
        ((chunk % n) as usize, (chunk / n) * self.chunk + off)
    }

    /// raid10: every copy (device, device sector) of logical sector `s`.
    pub fn raid10_copies(&self, s: u64) -> Vec<(usize, u64)> {
        let g = self.r10.as_ref().expect("raid10 geometry");
        let disks = self.disks;
        let last_far_set_start = (disks / g.far_set_size - 1) * g.far_set_size;
        let last_far_set_size = g.far_set_size + disks % g.far_set_size;
        let mut chunk = s / self.chunk;
        let mut sector = s % self.chunk;
        chunk *= g.near as u64;
        let mut stripe = chunk / disks as u64;
        let mut dev = (chunk % disks as u64) as usize;
        if g.offset {
            stripe *= g.far as u64;
        }
        sector += stripe * self.chunk;
        let mut out = Vec::with_capacity(g.near * g.far);
        for _ in 0..g.near {
            let mut d = dev;
            let mut sec = sector;
            out.push((d, sec));
            for _ in 1..g.far {
                let set = d / g.far_set_size;
                d += g.near;
                if !disks.is_multiple_of(g.far_set_size) && d > last_far_set_start {
                    d -= last_far_set_start;
                    d %= last_far_set_size;
                    d += last_far_set_start;
                } else {
                    d %= g.far_set_size;
                    d += g.far_set_size * set;
                }
                sec += g.stride;
                out.push((d, sec));
            }
            dev += 1;
            if dev >= disks {
                dev = 0;
                sector += self.chunk;
            }
        }
        out
    }

    /// raid4/5/6: the layout of stripe row `row` (`raid5_compute_sector` for each data
    /// chunk of the row).
    pub fn row(&self, row: u64) -> Row {
        let n = self.disks;
        let dd = self.data_disks();
        let mut data = Vec::with_capacity(dd);
        let (mut pd, mut qd, mut ddf) = (0usize, None, false);
        for j in 0..dd {
            let (d, p, q, f) = self.compute(row, j);
            data.push(d);
            pd = p;
            qd = q;
            ddf = f;
        }
        let mut slot = vec![usize::MAX; n];
        let nslots;
        if let Some(q) = qd {
            let d0 = if ddf || q == n - 1 { 0 } else { q + 1 };
            let mut count = 0;
            let mut i = d0;
            loop {
                let s = count;
                if ddf {
                    count += 1;
                }
                if i != pd && i != q {
                    if !ddf {
                        count += 1;
                    }
                    slot[i] = s;
                }
                i = (i + 1) % n;
                if i == d0 {
                    break;
                }
            }
            nslots = if ddf { n } else { n - 2 };
        } else {
            for (k, &d) in data.iter().enumerate() {
                slot[d] = k;
            }
            nslots = dd;
        }
        Row {
            data,
            pd,
            qd,
            slot,
            nslots,
        }
    }

    /// (data device, P device, Q device, ddf ordering) of data index `j` in row `stripe`.
    fn compute(&self, stripe: u64, j: usize) -> (usize, usize, Option<usize>, bool) {
        let n = self.disks;
        let dd = self.data_disks();
        let mut d = j;
        let s = stripe;
        let m = |k: usize| (s % k as u64) as usize;
        let level = self.level;
        let algo = self.layout;
        if level == 4 {
            return (d, dd, None, false);
        }
        if level == 5 {
            let pd = match algo {
                ALGO_LEFT_ASYMMETRIC => {
                    let pd = dd - m(n);
                    if d >= pd {
                        d += 1;
                    }
                    pd
                }
                ALGO_RIGHT_ASYMMETRIC => {
                    let pd = m(n);
                    if d >= pd {
                        d += 1;
                    }
                    pd
                }
                ALGO_LEFT_SYMMETRIC => {
                    let pd = dd - m(n);
                    d = (pd + 1 + d) % n;
                    pd
                }
                ALGO_RIGHT_SYMMETRIC => {
                    let pd = m(n);
                    d = (pd + 1 + d) % n;
                    pd
                }
                ALGO_PARITY_0 => {
                    d += 1;
                    0
                }
                _ => dd, // ALGO_PARITY_N
            };
            return (d, pd, None, false);
        }
        // raid6
        let asym = |pd: usize, d: &mut usize| -> usize {
            if pd == n - 1 {
                *d += 1;
                0
            } else {
                if *d >= pd {
                    *d += 2;
                }
                pd + 1
            }
        };
        let (pd, qd, ddf) = match algo {
            ALGO_LEFT_ASYMMETRIC => {
                let pd = n - 1 - m(n);
                (pd, asym(pd, &mut d), false)
            }
            ALGO_RIGHT_ASYMMETRIC | ALGO_ROTATING_ZERO_RESTART => {
                let pd = m(n);
                (pd, asym(pd, &mut d), algo == ALGO_ROTATING_ZERO_RESTART)
            }
            ALGO_LEFT_SYMMETRIC => {
                let pd = n - 1 - m(n);
                d = (pd + 2 + d) % n;
                (pd, (pd + 1) % n, false)
            }
            ALGO_RIGHT_SYMMETRIC => {
                let pd = m(n);
                d = (pd + 2 + d) % n;
                (pd, (pd + 1) % n, false)
            }
            ALGO_PARITY_0 => {
                d += 2;
                (0, 1, false)
            }
            ALGO_ROTATING_N_RESTART => {
                let pd = n - 1 - ((s + 1) % n as u64) as usize;
                (pd, asym(pd, &mut d), true)
            }
            ALGO_ROTATING_N_CONTINUE => {
                let pd = n - 1 - m(n);
                d = (pd + 1 + d) % n;
                (pd, (pd + n - 1) % n, true)
            }
            ALGO_LEFT_ASYMMETRIC_6 => {
                let pd = dd - m(n - 1);
                if d >= pd {
                    d += 1;
                }
                (pd, n - 1, false)
            }
            ALGO_RIGHT_ASYMMETRIC_6 => {
                let pd = m(n - 1);
                if d >= pd {
                    d += 1;
                }
                (pd, n - 1, false)
            }
            ALGO_LEFT_SYMMETRIC_6 => {
                let pd = dd - m(n - 1);
                d = (pd + 1 + d) % (n - 1);
                (pd, n - 1, false)
            }
            ALGO_RIGHT_SYMMETRIC_6 => {
                let pd = m(n - 1);
                d = (pd + 1 + d) % (n - 1);
                (pd, n - 1, false)
            }
            _ => (dd, dd + 1, false), // ALGO_PARITY_N
        };
        (d, pd, Some(qd), ddf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(level: u32, layout: u32, disks: usize) -> Geo {
        Geo {
            level,
            layout,
            chunk: 8,
            disks,
            dev_sectors: 64,
            array_sectors: 0,
            r10: None,
        }
    }

    #[test]
    fn raid5_left_symmetric_rotates_parity_from_the_last_disk() {
        let g = geo(5, ALGO_LEFT_SYMMETRIC, 4);
        let r0 = g.row(0);
        assert_eq!((r0.pd, r0.data.clone()), (3, vec![0, 1, 2]));
        let r1 = g.row(1);
        assert_eq!((r1.pd, r1.data.clone()), (2, vec![3, 0, 1]));
    }

    #[test]
    fn every_row_uses_each_device_once() {
        let algos5 = [0, 1, 2, 3, 4, 5];
        let algos6 = [0, 1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 18, 19];
        for (level, algos) in [(5u32, &algos5[..]), (6, &algos6[..])] {
            for &a in algos {
                for disks in 4..8 {
                    let g = geo(level, a, disks);
                    for row in 0..20 {
                        let r = g.row(row);
                        let mut seen = r.data.clone();
                        seen.push(r.pd);
                        seen.extend(r.qd);
                        seen.sort_unstable();
                        assert_eq!(seen, (0..disks).collect::<Vec<_>>(), "{level}/{a}/{row}");
                        let mut slots: Vec<usize> = r.data.iter().map(|&d| r.slot[d]).collect();
                        slots.sort_unstable();
                        slots.dedup();
                        assert_eq!(slots.len(), r.data.len());
                        assert!(slots.iter().all(|&s| s < r.nslots));
                    }
                }
            }
        }
    }

    #[test]
    fn raid10_near_and_far_copies() {
        let mut g = geo(10, 0x102, 4);
        g.r10 = Geo::raid10(0x102, 8, 4, 64);
        assert_eq!(g.raid10_copies(0), vec![(0, 0), (1, 0)]);
        assert_eq!(g.raid10_copies(8), vec![(2, 0), (3, 0)]);
        assert_eq!(g.raid10_copies(16), vec![(0, 8), (1, 8)]);
        let far = RAID10_USE_FAR_SETS | (2 << 8) | 1;
        g.layout = far;
        g.r10 = Geo::raid10(far, 8, 4, 64);
        // Far: second copy half a device further, on the next device of the set.
        assert_eq!(g.raid10_copies(0), vec![(0, 0), (1, 32)]);
        let off = RAID10_OFFSET | RAID10_USE_FAR_SETS | (2 << 8) | 1;
        g.layout = off;
        g.r10 = Geo::raid10(off, 8, 4, 64);
        assert_eq!(g.raid10_copies(0), vec![(0, 0), (1, 8)]);
        assert_eq!(g.raid10_copies(32), vec![(0, 16), (1, 24)]);
    }
}
