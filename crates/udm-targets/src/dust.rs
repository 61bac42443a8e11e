//! `dust`: a linear mapping with a list of bad blocks that fail reads (once enabled), the way a
//! disk with unreadable sectors does. A write to a bad block "remaps" it: the block leaves the
//! list (or, with a write-fail count, fails that many writes first), as in the kernel.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use udm_core::{
    DevHandle, Escaped, MapResult, StatusType, Target, TargetCtx, TargetError, TargetType,
};
use udm_io::{Bio, IoError, Op, Sectors};

use crate::kscan::{kstrtou32, scan_u32, scan_u64};

/// Largest block, in sectors (1 GiB).
const DUST_MAX_BLKSZ_SECTORS: u64 = 2_097_152;

/// `dust <dev> <offset> <blksz_bytes>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DustParams {
    pub dev: String,
    pub offset: Sectors,
    pub blksz: u32,
}

impl DustParams {
    /// Parse the table's words and check against the target length (the block may not
    /// exceed it).
    pub fn parse(args: &[String], target_len: Sectors) -> Result<DustParams, TargetError> {
        if args.len() != 3 {
            return Err(TargetError::invalid("Invalid argument count"));
        }
        let blksz = kstrtou32(&args[2])
            .filter(|&b| b != 0)
            .ok_or_else(|| TargetError::invalid("Invalid block size parameter"))?;
        if blksz < 512 {
            return Err(TargetError::invalid("Block size must be at least 512"));
        }
        if !blksz.is_power_of_two() {
            return Err(TargetError::invalid("Block size must be a power of 2"));
        }
        if (blksz as u64 >> 9) > target_len.0.min(DUST_MAX_BLKSZ_SECTORS) {
            return Err(TargetError::invalid("Block size is too large"));
        }
        let offset = scan_u64(&args[1])
            .ok_or_else(|| TargetError::invalid("Invalid device offset sector"))?;
        Ok(DustParams {
            dev: args[0].clone(),
            offset: Sectors(offset),
            blksz,
        })
    }
}

impl FromStr for DustParams {
    type Err = TargetError;
    /// Parse without a target length (the size check is left to `construct`).
    fn from_str(s: &str) -> Result<Self, TargetError> {
        DustParams::parse(&udm_core::split_args(s), Sectors(DUST_MAX_BLKSZ_SECTORS))
    }
}

impl fmt::Display for DustParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", Escaped(&self.dev), self.offset, self.blksz)
    }
}

pub struct DustType;

impl TargetType for DustType {
    fn name(&self) -> &'static str {
        "dust"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        ctx: &mut TargetCtx<'_>,
        args: &[String],
    ) -> Result<Box<dyn Target>, TargetError> {
        let p = DustParams::parse(args, ctx.len)?;
        let dev = ctx.get_device_area(&p.dev, p.offset, ctx.len)?;
        let spb = (p.blksz >> 9) as u64;
        Ok(Box::new(Dust {
            dev,
            shift: spb.trailing_zeros(),
            spb,
            p,
            st: Mutex::new(State::default()),
        }))
    }
}

#[derive(Default)]
struct State {
    /// Bad block -> writes still to fail before a write clears it.
    bad: BTreeMap<u64, u8>,
    fail_read_on_bb: bool,
    quiet: bool,
}

pub struct Dust {
    dev: Arc<DevHandle>,
    p: DustParams,
    spb: u64,
    shift: u32,
    st: Mutex<State>,
}

fn einval(m: impl Into<String>) -> TargetError {
    TargetError::invalid(m)
}

impl Dust {
    fn log(&self, quiet_ok: bool, msg: String) {
        if quiet_ok {
            udm_core::klog::info("dust", &msg);
        }
    }

    /// Blocks on the underlying device (messages may name any of them, and one past).
    fn dev_blocks(&self) -> u64 {
        self.dev.dev.size().0 / self.spb
    }

    fn block_arg(&self, s: &str) -> Result<u64, TargetError> {
        // An unparsable number fails with EINVAL and no log line, as the kernel's kstrtoull.
        let b = scan_u64(s).ok_or_else(|| einval(""))?;
        if b > self.dev_blocks() {
            return Err(einval("selected block value out of range"));
        }
        Ok(b)
    }

    fn add(&self, block: u64, wr_fail: u8) -> Result<Option<String>, TargetError> {
        let mut st = self.st.lock();
        if st.bad.contains_key(&block) {
            return Err(einval(format!(
                "dust_add_block: block {block} already in badblocklist"
            )));
        }
        st.bad.insert(block, wr_fail);
        let q = !st.quiet;
        drop(st);
        self.log(
            q,
            format!(
                "dust_add_block: badblock added at block {block} with write fail count {wr_fail}"
            ),
        );
        Ok(None)
    }
}

impl Target for Dust {
    fn map(&self, mut bio: Bio) -> MapResult {
        // The kernel offsets every bio, flushes included (their sector is 0).
        bio.sector += self.p.offset;
        let block = bio.sector.0 >> self.shift;
        let mut st = self.st.lock();
        if !st.fail_read_on_bb {
            drop(st);
            return self.remap(bio);
        }
        if bio.op == Op::Read {
            let bad = st.bad.contains_key(&block);
            drop(st);
            if bad {
                return MapResult::Kill(bio, IoError::Io);
            }
            return self.remap(bio);
        }
        match st.bad.get_mut(&block) {
            Some(n) if *n > 0 => {
                *n -= 1;
                drop(st);
                return MapResult::Kill(bio, IoError::Io);
            }
            Some(_) => {
                st.bad.remove(&block);
                let q = !st.quiet;
                drop(st);
                // dm-dust divides the block number by the sectors per block once more before
                // printing it (kernel 6.1); the log reads as the kernel's.
                self.log(
                    q,
                    format!(
                        "block {} removed from badblocklist by write",
                        block >> self.shift
                    ),
                );
            }
            None => {}
        }
        self.remap(bio)
    }

    fn max_io_len(&self) -> Option<Sectors> {
        Some(Sectors(self.spb))
    }

    fn status(&self, ty: StatusType, _flags: udm_core::StatusFlags) -> String {
        match ty {
            StatusType::Info => {
                let st = self.st.lock();
                format!(
                    "{} {} {}",
                    Escaped(&self.dev.id.to_string()),
                    if st.fail_read_on_bb {
                        "fail_read_on_bad_block"
                    } else {
                        "bypass"
                    },
                    if st.quiet { "quiet" } else { "verbose" }
                )
            }
            StatusType::Table => DustParams {
                dev: self.dev.id.to_string(),
                ..self.p.clone()
            }
            .to_string(),
        }
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, TargetError> {
        let cmd = argv
            .first()
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_default();
        match argv.len() {
            1 => match cmd.as_str() {
                "addbadblock" | "removebadblock" | "queryblock" => Err(einval(format!(
                    "{} requires an additional argument",
                    argv[0]
                ))),
                "disable" => {
                    self.st.lock().fail_read_on_bb = false;
                    udm_core::klog::info("dust", "disabling read failures on bad sectors");
                    Ok(None)
                }
                "enable" => {
                    self.st.lock().fail_read_on_bb = true;
                    udm_core::klog::info("dust", "enabling read failures on bad sectors");
                    Ok(None)
                }
                "countbadblocks" => Ok(Some(format!(
                    "countbadblocks: {} badblock(s) found",
                    self.st.lock().bad.len()
                ))),
                "clearbadblocks" => {
                    let old = std::mem::take(&mut self.st.lock().bad);
                    Ok(Some(if old.is_empty() {
                        "dust_clear_badblocks: no badblocks found".to_string()
                    } else {
                        "dust_clear_badblocks: badblocks cleared".to_string()
                    }))
                }
                "quiet" => {
                    let mut st = self.st.lock();
                    st.quiet = !st.quiet;
                    Ok(None)
                }
                "listbadblocks" => {
                    let st = self.st.lock();
                    if st.bad.is_empty() {
                        return Ok(Some("No blocks in badblocklist".into()));
                    }
                    Ok(Some(st.bad.keys().map(|b| format!("{b}\n")).collect()))
                }
                _ => Err(einval(format!(
                    "unrecognized message '{}' received",
                    argv[0]
                ))),
            },
            2 => {
                let block = self.block_arg(&argv[1])?;
                match cmd.as_str() {
                    "addbadblock" => self.add(block, 0),
                    "removebadblock" => {
                        let mut st = self.st.lock();
                        if st.bad.remove(&block).is_none() {
                            return Err(einval(format!(
                                "dust_remove_block: block {block} not found in badblocklist"
                            )));
                        }
                        let q = !st.quiet;
                        drop(st);
                        self.log(
                            q,
                            format!("dust_remove_block: badblock removed at block {block}"),
                        );
                        Ok(None)
                    }
                    "queryblock" => {
                        let found = self.st.lock().bad.contains_key(&block);
                        Ok(Some(format!(
                            "dust_query_block: block {block} {}found in badblocklist",
                            if found { "" } else { "not " }
                        )))
                    }
                    _ => Err(einval(format!(
                        "unrecognized message '{}' received",
                        argv[0]
                    ))),
                }
            }
            3 => {
                let block_s = scan_u64(&argv[1]);
                let cnt = scan_u32(&argv[2]);
                let (Some(_), Some(cnt)) = (block_s, cnt) else {
                    return Err(einval("invalid arguments"));
                };
                if cnt > 255 {
                    return Err(einval("selected write fail count out of range"));
                }
                let block = self.block_arg(&argv[1])?;
                if cmd == "addbadblock" {
                    self.add(block, cnt as u8)
                } else {
                    Err(einval(format!(
                        "unrecognized message '{}' received",
                        argv[0]
                    )))
                }
            }
            n => Err(einval(format!("invalid number of arguments '{n}'"))),
        }
    }
}

impl Dust {
    fn remap(&self, bio: Bio) -> MapResult {
        MapResult::Remap(self.dev.dev.clone(), bio)
    }
}
