//! Rendering the lines of targets with on-disk metadata or keys — thin-pool, thin, cache,
//! era, clone, writecache, raid, integrity, crypt and verity — to the canonical params
//! `status(Table)` must print.

use super::spec::*;
use super::Files;
use udm_core::Escaped;
use udm_formats::verity::{FecLayout, Geometry, HashAlg, HashType};
use udm_io::Sectors;
use udm_targets::crypt::params::{format_table, Features};
use udm_targets::verity::{FecParams, Mode, VerityParams};

/// The line's type, length and canonical params, or `None` for a type of the other family.
pub(crate) fn render(s: &Spec, f: &mut Files<'_>) -> Option<(&'static str, u64, String)> {
    Some(match s {
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
        _ => return None,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
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
