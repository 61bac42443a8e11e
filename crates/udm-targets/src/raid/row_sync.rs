//! The common cases of a parity set's background sync over a run of rows, without copying
//! rows out of the run's buffers: a resync computes each row's P (and Q) in place in the
//! parity device's read buffer and writes only the parity blocks back; a recovery of one
//! leg computes each of its blocks straight from slices of the other devices' reads into
//! one buffer written with one I/O. Everything else (two lost devices, check, repair) is
//! the row-by-row path in `sync`.

use super::engine::{Array, Op};
use super::gf;
use super::layout::Row;
use super::sync::Action;
use udm_io::{BioFlags, BufPool, IoBuf};

/// The syndrome slots of row `r`, the blocks taken from `k`'s slice of each device's run.
fn slots<'a>(r: &Row, whole: &'a [Option<IoBuf>], at: usize, len: usize) -> Vec<Option<&'a [u8]>> {
    let mut s: Vec<Option<&[u8]>> = vec![None; r.nslots];
    for &d in &r.data {
        s[r.slot[d]] = whole[d].as_deref().map(|b| &b[at..at + len]);
    }
    s
}

/// Sync `rows` rows from `row0` whose devices' runs were read into `whole` (`None`: not
/// read). Returns false, touching nothing, when the case is not one this path covers.
pub fn sync_run(
    a: &Array,
    pool: &BufPool,
    act: Action,
    row0: u64,
    rows: u64,
    whole: &mut [Option<IoBuf>],
) -> bool {
    let n = a.geo.disks;
    let chunk = a.geo.chunk;
    let len = (chunk * 512) as usize;
    let base = row0 * chunk;
    let lost: Vec<usize> = (0..n).filter(|&d| whole[d].is_none()).collect();
    let mut ops: Vec<Op> = Vec::new();
    match (act, lost.as_slice()) {
        (Action::Recover, &[l]) if a.legs[l].usable() => {
            let mut out = pool.get(len * rows as usize);
            for k in 0..rows {
                let r = a.geo.row(row0 + k);
                let at = k as usize * len;
                let dst = &mut out[at..at + len];
                if Some(l) == r.qd {
                    gf::gen_q(&slots(&r, whole, at, len), dst);
                } else {
                    // A lost data block or P: the XOR of the rest of the P group.
                    let group: Vec<Option<&[u8]>> = (0..n)
                        .filter(|&d| d != l && Some(d) != r.qd)
                        .map(|d| whole[d].as_deref().map(|b| &b[at..at + len]))
                        .collect();
                    gf::gen_p(&group, dst);
                }
            }
            ops.push(Op {
                leg: l,
                write: true,
                sector: base,
                buf: out,
            });
        }
        (Action::Resync, &[]) => {
            // Fresh parity in place, then one write per run of rows a device holds parity
            // for (raid4: the whole run; rotating layouts: single blocks).
            for k in 0..rows {
                let r = a.geo.row(row0 + k);
                let at = k as usize * len;
                // Take the parity buffers out so the data slices can be borrowed beside them.
                let mut pb = whole[r.pd].take();
                let mut qb = r.qd.and_then(|q| whole[q].take());
                if let Some(p) = pb.as_mut() {
                    gf::gen_p(&slots(&r, whole, at, len), &mut p[at..at + len]);
                }
                if let Some(q) = qb.as_mut() {
                    gf::gen_q(&slots(&r, whole, at, len), &mut q[at..at + len]);
                }
                whole[r.pd] = pb;
                if let Some(q) = r.qd {
                    whole[q] = qb;
                }
            }
            for d in (0..n).filter(|&d| a.legs[d].usable()) {
                let Some(w) = whole[d].as_deref() else {
                    continue;
                };
                let mut k = 0;
                while k < rows {
                    let r = a.geo.row(row0 + k);
                    if r.pd != d && r.qd != Some(d) {
                        k += 1;
                        continue;
                    }
                    let k0 = k;
                    while k < rows && {
                        let r = a.geo.row(row0 + k);
                        r.pd == d || r.qd == Some(d)
                    } {
                        k += 1;
                    }
                    let (lo, hi) = (k0 as usize * len, k as usize * len);
                    let mut b = pool.get(hi - lo);
                    b.copy_from_slice(&w[lo..hi]);
                    ops.push(Op {
                        leg: d,
                        write: true,
                        sector: base + k0 * chunk,
                        buf: b,
                    });
                }
            }
        }
        _ => return false,
    }
    let legs: Vec<usize> = ops.iter().map(|o| o.leg).collect();
    for ((res, b), d) in a.par(ops, BioFlags::NONE).into_iter().zip(legs) {
        if res.is_err() {
            a.fail_leg(d);
        }
        pool.put(b);
    }
    true
}
