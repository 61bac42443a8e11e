//! A verity device as veritysetup describes it (its `crypt_params_verity`): the [`Header`]
//! read from a superblock or made from command-line parameters, the FEC area it implies, the
//! `verity` table line that activates it, and the header block `format`/`dump` print.

use super::fec::{FecLayout, DEFAULT_ROOTS};
use super::superblock::{self, block_size_ok, Superblock};
use super::{from_hex, to_hex, BlockHasher, Digest, Geometry, HashAlg, HashType, VerityError};

/// Everything veritysetup knows about a verity device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub hash_type: HashType,
    pub alg: HashAlg,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
    /// UUID from the superblock (none with `--no-superblock`).
    pub uuid: Option<[u8; 16]>,
    /// Byte offset of the superblock (or, without one, of the tree) on the hash device.
    pub hash_offset: u64,
    /// Whether a superblock sits at `hash_offset`.
    pub superblock: bool,
}

/// The parameters `format` (or `--no-superblock`) takes from the command line.
#[derive(Debug, Clone, Default)]
pub struct HeaderParams<'a> {
    /// Hex salt, `-` for none; a random 32-byte salt when absent.
    pub salt: Option<&'a str>,
    /// `--format` (hash type), 1 when absent.
    pub format: Option<u32>,
    pub data_block_size: Option<u32>,
    pub hash_block_size: Option<u32>,
    pub hash_offset: u64,
    pub fec_offset: u64,
    /// `--data-blocks`; when absent (or 0) the data device's whole size.
    pub data_blocks: Option<u64>,
    /// The data device's size in bytes, when there is one.
    pub data_size: Option<u64>,
    /// Hash algorithm name, sha256 when absent.
    pub hash: Option<&'a str>,
    /// `--uuid`; a random version-4 UUID when absent (none with `no_superblock`).
    pub uuid: Option<&'a str>,
    pub no_superblock: bool,
}

fn random(buf: &mut [u8]) -> Result<(), VerityError> {
    getrandom::getrandom(buf).map_err(|e| VerityError::Random(e.to_string()))
}

/// What the kernel does on a corrupted block (`--ignore-corruption` and friends).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnCorruption {
    /// Fail the I/O (the default: no table word).
    #[default]
    Eio,
    Ignore,
    Restart,
    Panic,
}

/// The optional words of a `verity` table line.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    pub on_corruption: OnCorruption,
    pub ignore_zero_blocks: bool,
    pub check_at_most_once: bool,
    pub try_verify_in_tasklet: bool,
    /// `use_fec_from_device`.
    pub fec: Option<FecTable>,
    /// `root_hash_sig_key_desc`.
    pub sig_key_desc: Option<String>,
}

/// The FEC words of a `verity` table line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FecTable {
    /// The FEC device word (escaped as the caller wants it in the table).
    pub dev: String,
    pub roots: u32,
    /// Blocks covered ([`Header::fec_blocks`]).
    pub blocks: u64,
    /// Byte offset of the FEC area on its device.
    pub offset: u64,
}

impl Header {
    /// The header a superblock at `hash_offset` describes.
    pub fn from_superblock(sb: &Superblock, hash_offset: u64) -> Result<Header, VerityError> {
        Ok(Header {
            hash_type: HashType::from_u32(sb.hash_type).unwrap_or(HashType::Normal),
            alg: HashAlg::from_name(&sb.algorithm)?,
            data_block_size: sb.data_block_size,
            hash_block_size: sb.hash_block_size,
            data_blocks: sb.data_blocks,
            salt: sb.salt.clone(),
            uuid: Some(sb.uuid),
            hash_offset,
            superblock: true,
        })
    }

    /// The header `format` makes from its parameters, checked in veritysetup's order.
    pub fn from_params(p: &HeaderParams<'_>) -> Result<Header, VerityError> {
        let salt = match p.salt {
            Some("-") => Vec::new(),
            Some(s) => from_hex(s)
                .filter(|v| v.len() <= superblock::MAX_SALT)
                .ok_or(VerityError::BadSalt)?,
            None => {
                let mut v = vec![0u8; 32];
                random(&mut v)?;
                v
            }
        };
        let ty = p.format.unwrap_or(1);
        let hash_type = HashType::from_u32(ty).ok_or(VerityError::UnsupportedHashType(ty))?;
        let dbs = p.data_block_size.unwrap_or(4096);
        let hbs = p.hash_block_size.unwrap_or(4096);
        if !block_size_ok(dbs) || !block_size_ok(hbs) {
            return Err(VerityError::BadBlockSize);
        }
        if !p.hash_offset.is_multiple_of(512) {
            return Err(VerityError::BadHashOffset);
        }
        if !p.fec_offset.is_multiple_of(512) {
            return Err(VerityError::BadFecOffset);
        }
        let data_blocks = match (p.data_blocks, p.data_size) {
            (Some(n), _) if n > 0 => n,
            (_, Some(size)) => size / dbs as u64,
            (_, None) => 0,
        };
        let alg = HashAlg::from_name(p.hash.unwrap_or("sha256"))?;
        let uuid = match (p.uuid, p.no_superblock) {
            (_, true) => None,
            (Some(u), false) => Some(superblock::parse_uuid(u)?),
            (None, false) => {
                let mut u = [0u8; 16];
                random(&mut u)?;
                u[6] = (u[6] & 0x0f) | 0x40;
                u[8] = (u[8] & 0x3f) | 0x80;
                Some(u)
            }
        };
        Ok(Header {
            hash_type,
            alg,
            data_block_size: dbs,
            hash_block_size: hbs,
            data_blocks,
            salt,
            uuid,
            hash_offset: p.hash_offset,
            superblock: !p.no_superblock,
        })
    }

    /// The superblock `format` writes.
    pub fn to_superblock(&self) -> Superblock {
        Superblock {
            hash_type: self.hash_type.as_u32(),
            uuid: self.uuid.unwrap_or_default(),
            algorithm: self.alg.name().to_string(),
            data_block_size: self.data_block_size,
            hash_block_size: self.hash_block_size,
            data_blocks: self.data_blocks,
            salt: self.salt.clone(),
        }
    }

    /// The first hash block of the tree (after the superblock when there is one).
    pub fn hash_start(&self) -> u64 {
        superblock::hash_start_block(self.hash_offset, self.hash_block_size, self.superblock)
    }

    pub fn geometry(&self) -> Result<Geometry, VerityError> {
        Geometry::new(
            self.hash_type,
            self.alg,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start(),
        )
    }

    pub fn hasher(&self) -> BlockHasher {
        BlockHasher::new(self.alg, self.hash_type, &self.salt)
    }

    /// The data area's size in bytes.
    pub fn data_bytes(&self) -> u64 {
        self.data_blocks * self.data_block_size as u64
    }

    /// veritysetup's "Device offset overflow." check: the data area and the tree must have
    /// byte sizes that fit in 64 bits.
    pub fn offsets_fit(&self, geo: &Geometry) -> bool {
        self.data_blocks
            .checked_mul(self.data_block_size as u64)
            .is_some()
            && geo
                .hash_end()
                .checked_mul(self.hash_block_size as u64)
                .is_some()
    }

    /// veritysetup's `VERITY_FEC_blocks`: the data blocks plus the hash device from the
    /// tree on, up to `end` (bytes: the FEC area when FEC shares the hash device, else the
    /// hash device's end).
    pub fn fec_blocks(&self, end: u64) -> u64 {
        let bs = self.data_block_size as u64;
        self.data_blocks + (end / bs).saturating_sub(self.hash_start())
    }

    /// The FEC layout with `roots` parity bytes (default 2) and the covered area ending at
    /// `end` (see [`Header::fec_blocks`]), with veritysetup's checks.
    pub fn fec_layout(
        &self,
        roots: Option<u32>,
        fec_offset: u64,
        end: u64,
    ) -> Result<FecLayout, VerityError> {
        if self.data_block_size != self.hash_block_size {
            return Err(VerityError::FecBlockSizes);
        }
        let roots = roots.unwrap_or(DEFAULT_ROOTS);
        if !(2..=24).contains(&roots) {
            return Err(VerityError::BadRoots);
        }
        if !fec_offset.is_multiple_of(512) {
            return Err(VerityError::BadFecOffset);
        }
        FecLayout::new(
            roots,
            self.data_block_size,
            self.fec_blocks(end),
            self.data_blocks,
            self.hash_start(),
        )
    }

    /// A root hash given as hex (a `--root-hash-file`'s text is trimmed and cut to the
    /// digest's length first).
    pub fn root_hash(&self, hex: &str) -> Result<Digest, VerityError> {
        match from_hex(hex) {
            Some(v) if v.len() == self.alg.digest_size() => Ok(Digest::from_slice(&v)),
            _ => Err(VerityError::BadRootHash),
        }
    }

    /// The root hash in a `--root-hash-file`.
    pub fn root_hash_file(&self, text: &str) -> Result<Digest, VerityError> {
        let hex: String = text
            .trim()
            .chars()
            .take(self.alg.digest_size() * 2)
            .collect();
        self.root_hash(&hex)
    }

    /// The device-mapper UUID veritysetup gives the device `name`.
    pub fn dm_uuid(&self, name: &str) -> String {
        match self.uuid {
            Some(u) => format!("CRYPT-VERITY-{}-{name}", to_hex(&u)),
            None => format!("CRYPT-VERITY-{name}"),
        }
    }

    /// The key description a root hash signature is stored under for the device `name`.
    pub fn sig_key_desc(&self, name: &str) -> String {
        match self.uuid {
            Some(u) => format!("cryptsetup:{}-{name}", superblock::format_uuid(&u)),
            None => format!("cryptsetup:{name}"),
        }
    }

    /// The length of the table line in sectors.
    pub fn table_sectors(&self) -> u64 {
        self.data_bytes() / 512
    }

    /// The params of the `verity` table line veritysetup loads (`data`, `hash`: the device
    /// words as they go in the table).
    pub fn table_params(&self, data: &str, hash: &str, root: &Digest, o: &TableOptions) -> String {
        let mut words: Vec<String> = Vec::new();
        match o.on_corruption {
            OnCorruption::Eio => {}
            OnCorruption::Ignore => words.push("ignore_corruption".into()),
            OnCorruption::Restart => words.push("restart_on_corruption".into()),
            OnCorruption::Panic => words.push("panic_on_corruption".into()),
        }
        if o.ignore_zero_blocks {
            words.push("ignore_zero_blocks".into());
        }
        if o.check_at_most_once {
            words.push("check_at_most_once".into());
        }
        if o.try_verify_in_tasklet {
            words.push("try_verify_in_tasklet".into());
        }
        if let Some(f) = &o.fec {
            words.extend([
                "use_fec_from_device".to_string(),
                f.dev.clone(),
                "fec_roots".into(),
                f.roots.to_string(),
                "fec_blocks".into(),
                f.blocks.to_string(),
                "fec_start".into(),
                (f.offset / self.data_block_size as u64).to_string(),
            ]);
        }
        if let Some(d) = &o.sig_key_desc {
            words.extend(["root_hash_sig_key_desc".to_string(), d.clone()]);
        }
        let mut params = format!(
            "{} {data} {hash} {} {} {} {} {} {} {}",
            self.hash_type.as_u32(),
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start(),
            self.alg.name(),
            root.hex(),
            salt_text(&self.salt),
        );
        if !words.is_empty() {
            params.push_str(&format!(" {} {}", words.len(), words.join(" ")));
        }
        params
    }

    /// The header block `format` and `dump` print for `hash_path`.
    pub fn describe(
        &self,
        hash_path: &str,
        geo: &Geometry,
        fec: Option<(&FecLayout, u64)>,
        root: Option<&Digest>,
    ) -> String {
        let mut o = String::new();
        let uuid = self
            .uuid
            .map(|u| superblock::format_uuid(&u))
            .unwrap_or_default();
        o.push_str(&format!("VERITY header information for {hash_path}\n"));
        o.push_str(&format!("UUID:            \t{uuid}\n"));
        o.push_str(&format!("Hash type:       \t{}\n", self.hash_type.as_u32()));
        o.push_str(&format!("Data blocks:     \t{}\n", self.data_blocks));
        o.push_str(&format!("Data block size: \t{}\n", self.data_block_size));
        o.push_str(&format!("Hash blocks:     \t{}\n", geo.tree_blocks()));
        o.push_str(&format!("Hash block size: \t{}\n", self.hash_block_size));
        o.push_str(&format!("Hash algorithm:  \t{}\n", self.alg.name()));
        if let Some((f, _)) = fec {
            o.push_str(&format!("FEC RS roots:   \t{}\n", f.roots));
            o.push_str(&format!("FEC blocks:     \t{}\n", f.parity_blocks()));
        }
        o.push_str(&format!("Salt:            \t{}\n", salt_text(&self.salt)));
        if let Some(r) = root {
            o.push_str(&format!("Root hash:      \t{}\n", r.hex()));
        }
        if self.hash_offset == 0 {
            // Computed as C computes it.
            let size = geo.hash_end().wrapping_mul(self.hash_block_size as u64);
            o.push_str(&format!("Hash device size: \t{size} [bytes]\n"));
        }
        if let Some((f, 0)) = fec {
            o.push_str(&format!(
                "FEC device size: \t{} [bytes]\n",
                f.parity_bytes()
            ));
        }
        o
    }
}

/// A salt as veritysetup shows it: hex, or `-` for none.
pub fn salt_text(salt: &[u8]) -> String {
    if salt.is_empty() {
        "-".to_string()
    } else {
        to_hex(salt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> HeaderParams<'static> {
        HeaderParams {
            salt: Some("00ff"),
            uuid: Some("12345678-1234-4234-8234-123456789abc"),
            data_size: Some(1 << 20),
            ..HeaderParams::default()
        }
    }

    #[test]
    fn header_from_params_checks_in_order() {
        let h = Header::from_params(&params()).unwrap();
        assert_eq!(
            (h.data_blocks, h.hash_start(), h.superblock),
            (256, 1, true)
        );
        assert_eq!(h.alg, HashAlg::from_name("sha256").unwrap());
        let sb = Superblock::parse(&h.to_superblock().to_bytes().unwrap()).unwrap();
        assert_eq!(Header::from_superblock(&sb, 0).unwrap(), h);
        let bad = |f: &dyn Fn(&mut HeaderParams<'static>)| {
            let mut p = params();
            f(&mut p);
            Header::from_params(&p).unwrap_err()
        };
        assert_eq!(bad(&|p| p.salt = Some("0")), VerityError::BadSalt);
        assert_eq!(
            bad(&|p| p.format = Some(7)),
            VerityError::UnsupportedHashType(7)
        );
        assert_eq!(
            bad(&|p| p.data_block_size = Some(1000)),
            VerityError::BadBlockSize
        );
        assert_eq!(bad(&|p| p.hash_offset = 100), VerityError::BadHashOffset);
        assert_eq!(bad(&|p| p.fec_offset = 100), VerityError::BadFecOffset);
        assert_eq!(bad(&|p| p.uuid = Some("x")), VerityError::BadUuid);
        assert!(matches!(
            bad(&|p| p.hash = Some("md4x")),
            VerityError::UnsupportedHash(_)
        ));
        let mut p = params();
        p.salt = None;
        p.uuid = None;
        p.data_blocks = Some(3);
        let h = Header::from_params(&p).unwrap();
        assert_eq!((h.salt.len(), h.data_blocks), (32, 3));
        assert_eq!(h.uuid.unwrap()[6] >> 4, 4);
        p.no_superblock = true;
        assert_eq!(Header::from_params(&p).unwrap().uuid, None);
    }

    #[test]
    fn table_line_and_names() {
        let h = Header::from_params(&params()).unwrap();
        let root = h.root_hash(&"ab".repeat(32)).unwrap();
        assert_eq!(
            h.table_params("/d", "/h", &root, &TableOptions::default()),
            format!("1 /d /h 4096 4096 256 1 sha256 {} 00ff", "ab".repeat(32))
        );
        let fec = h.fec_layout(None, 0, 1 << 20).unwrap();
        assert_eq!(fec.blocks, 256 + 255);
        let o = TableOptions {
            on_corruption: OnCorruption::Restart,
            check_at_most_once: true,
            fec: Some(FecTable {
                dev: "/f".into(),
                roots: 2,
                blocks: h.fec_blocks(1 << 20),
                offset: 8192,
            }),
            sig_key_desc: Some(h.sig_key_desc("v")),
            ..TableOptions::default()
        };
        let p = h.table_params("/d", "/h", &root, &o);
        assert!(p.ends_with(
            " 00ff 12 restart_on_corruption check_at_most_once use_fec_from_device /f \
             fec_roots 2 fec_blocks 511 fec_start 2 root_hash_sig_key_desc \
             cryptsetup:12345678-1234-4234-8234-123456789abc-v"
        ));
        assert_eq!(h.table_sectors(), 2048);
        assert_eq!(
            h.dm_uuid("v"),
            "CRYPT-VERITY-12345678123442348234123456789abc-v"
        );
        assert_eq!(h.root_hash("abcd"), Err(VerityError::BadRootHash));
        assert_eq!(
            h.root_hash_file(&format!(" {}zz\n", "ab".repeat(32))),
            Ok(root)
        );
        assert_eq!(
            h.fec_layout(Some(30), 0, 0).unwrap_err(),
            VerityError::BadRoots
        );
        let geo = h.geometry().unwrap();
        assert!(h.offsets_fit(&geo));
        let text = h.describe("/h", &geo, Some((&fec, 0)), Some(&root));
        assert!(text.starts_with("VERITY header information for /h\nUUID:            \t1234"));
        assert!(text.contains("FEC RS roots:   \t2\n"));
        assert!(text.contains("Hash device size: \t"));
        assert!(text.ends_with(" [bytes]\n"));
    }
}
