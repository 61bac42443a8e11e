//! `luksDump`: the header as cryptsetup 2.6 prints it (LUKS1 and LUKS2); with
//! `--dump-volume-key` the volume key too, after the passphrase opened a keyslot.

use super::hdr::{self, Header};
use super::{pass, Failed, Io, Opts};
use std::fmt::Write as _;
use udm_formats::luks::kdf::Kdf;

/// Hex bytes separated by spaces, `per` to a line, continuation lines indented by `indent`.
fn hexdump(b: &[u8], per: usize, indent: &str) -> String {
    let mut s = String::new();
    for (i, c) in b.chunks(per).enumerate() {
        if i > 0 {
            s.push('\n');
            s.push_str(indent);
        }
        for x in c {
            let _ = write!(s, "{x:02x} ");
        }
    }
    s
}

fn dump1(out: &mut String, path: &str, h: &udm_formats::luks::luks1::Header) {
    let _ = writeln!(out, "LUKS header information for {path}\n");
    let _ = writeln!(out, "Version:       \t1");
    let _ = writeln!(out, "Cipher name:   \t{}", h.cipher_name);
    let _ = writeln!(out, "Cipher mode:   \t{}", h.cipher_mode);
    let _ = writeln!(out, "Hash spec:     \t{}", h.hash);
    let _ = writeln!(out, "Payload offset:\t{}", h.payload_offset);
    let _ = writeln!(out, "MK bits:       \t{}", h.key_bytes * 8);
    let _ = writeln!(out, "MK digest:     \t{}", hexdump(&h.mk_digest, 20, ""));
    let _ = writeln!(
        out,
        "MK salt:       \t{}",
        hexdump(&h.mk_salt, 16, "               \t")
    );
    let _ = writeln!(out, "MK iterations: \t{}", h.mk_iterations);
    let _ = writeln!(out, "UUID:          \t{}\n", h.uuid);
    for (i, s) in h.slots.iter().enumerate() {
        if !s.active {
            let _ = writeln!(out, "Key Slot {i}: DISABLED");
            continue;
        }
        let _ = writeln!(out, "Key Slot {i}: ENABLED");
        let _ = writeln!(out, "\tIterations:         \t{}", s.iterations);
        let _ = writeln!(
            out,
            "\tSalt:               \t{}",
            hexdump(&s.salt, 16, "\t                      \t")
        );
        let _ = writeln!(out, "\tKey material offset:\t{}", s.offset);
        let _ = writeln!(out, "\tAF stripes:            \t{}", s.stripes);
    }
}

fn dump2(out: &mut String, m: &udm_formats::luks::luks2::Metadata) {
    let b = &m.bin;
    let _ = writeln!(out, "LUKS header information");
    let _ = writeln!(out, "Version:       \t2");
    let _ = writeln!(out, "Epoch:         \t{}", b.seqid);
    let _ = writeln!(out, "Metadata area: \t{} [bytes]", b.hdr_size);
    let _ = writeln!(out, "Keyslots area: \t{} [bytes]", m.keyslots_size);
    let _ = writeln!(out, "UUID:          \t{}", b.uuid);
    let or = |s: &str, d: &str| {
        if s.is_empty() {
            d.to_string()
        } else {
            s.to_string()
        }
    };
    let _ = writeln!(out, "Label:         \t{}", or(&b.label, "(no label)"));
    let _ = writeln!(
        out,
        "Subsystem:     \t{}",
        or(&b.subsystem, "(no subsystem)")
    );
    let _ = writeln!(out, "Flags:       \t(no flags)\n");
    let _ = writeln!(out, "Data segments:");
    for s in &m.segments {
        let _ = writeln!(out, "  {}: crypt", s.id);
        let _ = writeln!(out, "\toffset: {} [bytes]", s.offset);
        match s.size {
            Some(n) => {
                let _ = writeln!(out, "\tlength: {n} [bytes]");
            }
            None => {
                let _ = writeln!(out, "\tlength: (whole device)");
            }
        }
        let _ = writeln!(out, "\tcipher: {}", s.encryption);
        let _ = writeln!(out, "\tsector: {} [bytes]", s.sector_size);
        if let Some(t) = &s.integrity {
            let _ = writeln!(out, "\tintegrity: {t}");
        }
    }
    let _ = writeln!(out, "\nKeyslots:");
    for k in &m.keyslots {
        let _ = writeln!(out, "  {}: luks2", k.id);
        let _ = writeln!(out, "\tKey:        {} bits", k.key_size * 8);
        let pr = match k.priority {
            Some(0) => "ignored",
            Some(2) => "high",
            _ => "normal",
        };
        let _ = writeln!(out, "\tPriority:   {pr}");
        let _ = writeln!(out, "\tCipher:     {}", k.area_encryption);
        let _ = writeln!(out, "\tCipher key: {} bits", k.area_key_size * 8);
        let _ = writeln!(out, "\tPBKDF:      {}", k.kdf.name());
        match &k.kdf {
            Kdf::Pbkdf2 { hash, iterations } => {
                let _ = writeln!(out, "\tHash:       {hash}");
                let _ = writeln!(out, "\tIterations: {iterations}");
            }
            Kdf::Argon2 {
                time, memory, cpus, ..
            } => {
                let _ = writeln!(out, "\tTime cost:  {time}");
                let _ = writeln!(out, "\tMemory:     {memory}");
                let _ = writeln!(out, "\tThreads:    {cpus}");
            }
        }
        let _ = writeln!(
            out,
            "\tSalt:       {}",
            hexdump(&k.salt, 16, "\t            ")
        );
        let _ = writeln!(out, "\tAF stripes: {}", k.af_stripes);
        let _ = writeln!(out, "\tAF hash:    {}", k.af_hash);
        let _ = writeln!(out, "\tArea offset:{} [bytes]", k.area_offset);
        let _ = writeln!(out, "\tArea length:{} [bytes]", k.area_size);
        if let Some(d) = m.digest_for_keyslot(k.id) {
            let _ = writeln!(out, "\tDigest ID:  {}", d.id);
        }
    }
    let _ = writeln!(out, "Tokens:");
    let _ = writeln!(out, "Digests:");
    for d in &m.digests {
        let _ = writeln!(out, "  {}: pbkdf2", d.id);
        let _ = writeln!(out, "\tHash:       {}", d.hash);
        let _ = writeln!(out, "\tIterations: {}", d.iterations);
        let _ = writeln!(
            out,
            "\tSalt:       {}",
            hexdump(&d.salt, 16, "\t            ")
        );
        let _ = writeln!(
            out,
            "\tDigest:     {}",
            hexdump(&d.digest, 16, "\t            ")
        );
    }
}

/// `luksDump <device>`.
pub fn dump(io: &mut Io<'_>, o: &Opts, pos: &[String]) -> Result<(), Failed> {
    let dev = hdr::open_dev(io, &pos[0], false)?;
    let h = hdr::load(io, &dev, hdr::wanted(o))?;
    let mut out = String::new();
    if o.dump_volume_key {
        let prompt = format!("Enter passphrase for {}: ", pos[0]);
        let p = pass::get(
            io,
            o.key_file.as_deref(),
            o.keyfile_offset,
            o.keyfile_size,
            &prompt,
            false,
        )?;
        let (_, vk) = hdr::unlock(io, &dev, &h, &p, o.key_slot)?;
        let (cipher, mode) = match &h {
            Header::L1(h) => (h.cipher_name.clone(), h.cipher_mode.clone()),
            Header::L2(m) => {
                let e = m
                    .segment()
                    .map(|s| s.encryption.clone())
                    .unwrap_or_default();
                match e.split_once('-') {
                    Some((a, b)) => (a.to_string(), b.to_string()),
                    None => (e, String::new()),
                }
            }
        };
        let _ = writeln!(out, "LUKS header information for {}", pos[0]);
        let _ = writeln!(out, "Cipher name:   \t{cipher}");
        let _ = writeln!(out, "Cipher mode:   \t{mode}");
        let _ = writeln!(out, "Payload offset:\t{}", h.header_area() / 512);
        let _ = writeln!(out, "UUID:          \t{}", h.uuid());
        let _ = writeln!(out, "MK bits:       \t{}", vk.len() * 8);
        let _ = writeln!(out, "MK dump:\t{}", hexdump(&vk, 16, "\t\t"));
        let _ = std::io::Write::write_all(io.out, out.as_bytes());
        out.clear();
        return Ok(());
    }
    match &h {
        Header::L1(h) => dump1(&mut out, &pos[0], h),
        Header::L2(m) => dump2(&mut out, m),
    }
    let _ = std::io::Write::write_all(io.out, out.as_bytes());
    Ok(())
}
