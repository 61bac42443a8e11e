//! Client side of the handshake: greeting, option requests, and NBD_OPT_GO (falling back to
//! NBD_OPT_EXPORT_NAME for servers without it).

use super::{proto_err, ExportInfo, NbdError};
use crate::proto::*;
use std::io::{self, Read, Write};

/// Longest option reply the client reads.
const MAX_OPTION_REPLY: u32 = 1 << 20;

pub(super) fn refused(option: u32, reply: u32, data: &[u8]) -> NbdError {
    NbdError::Refused {
        option,
        reply,
        message: String::from_utf8_lossy(data).into_owned(),
    }
}

/// Read the server greeting and send client flags; returns whether NO_ZEROES is in effect.
pub(super) fn hello(r: &mut impl Read, w: &mut impl Write) -> Result<bool, NbdError> {
    if read_u64(r)? != NBDMAGIC {
        return proto_err("not an NBD server");
    }
    if read_u64(r)? != IHAVEOPT {
        return proto_err("server does not speak newstyle NBD");
    }
    let flags = read_u16(r)?;
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return proto_err("server does not speak fixed newstyle NBD");
    }
    let no_zeroes = flags & FLAG_NO_ZEROES != 0;
    let cflags = FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 };
    w.write_all(&cflags.to_be_bytes())?;
    Ok(no_zeroes)
}

pub(super) fn send_option(w: &mut impl Write, opt: u32, data: &[u8]) -> io::Result<()> {
    let mut v = Vec::with_capacity(16 + data.len());
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    w.write_all(&v)
}

/// One option reply: (type, data).
pub(super) fn option_reply(r: &mut impl Read, opt: u32) -> Result<(u32, Vec<u8>), NbdError> {
    if read_u64(r)? != REPLY_MAGIC {
        return proto_err("bad option reply magic");
    }
    if read_u32(r)? != opt {
        return proto_err("option reply for another option");
    }
    let typ = read_u32(r)?;
    let len = read_u32(r)?;
    if len > MAX_OPTION_REPLY {
        return proto_err("option reply too long");
    }
    let mut data = vec![0; len as usize];
    r.read_exact(&mut data)?;
    Ok((typ, data))
}

fn name_and_queries(export: &str, items: &[&[u8]], count16: bool) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(export.len() as u32).to_be_bytes());
    v.extend_from_slice(export.as_bytes());
    if count16 {
        v.extend_from_slice(&(items.len() as u16).to_be_bytes());
        for i in items {
            v.extend_from_slice(i);
        }
    } else {
        v.extend_from_slice(&(items.len() as u32).to_be_bytes());
        for i in items {
            v.extend_from_slice(&(i.len() as u32).to_be_bytes());
            v.extend_from_slice(i);
        }
    }
    v
}

/// Negotiate structured replies and `base:allocation`, then NBD_OPT_GO.
pub(super) fn go(
    r: &mut impl Read,
    w: &mut impl Write,
    export: &str,
    no_zeroes: bool,
    want_extended: bool,
) -> Result<ExportInfo, NbdError> {
    let mut extended = false;
    if want_extended {
        send_option(w, OPT_EXTENDED_HEADERS, &[])?;
        extended = match option_reply(r, OPT_EXTENDED_HEADERS)? {
            (REP_ACK, _) => true,
            // Servers without them: compact headers and structured replies instead.
            (t, _) if t & 0x8000_0000 != 0 => false,
            (t, _) => {
                return proto_err(format!(
                    "unexpected reply {t:#x} to NBD_OPT_EXTENDED_HEADERS"
                ))
            }
        };
    }
    // Extended headers imply structured replies (asking again is an error).
    let structured = extended || {
        send_option(w, OPT_STRUCTURED_REPLY, &[])?;
        match option_reply(r, OPT_STRUCTURED_REPLY)? {
            (REP_ACK, _) => true,
            (t, _) if t & 0x8000_0000 != 0 => false,
            (t, _) => {
                return proto_err(format!(
                    "unexpected reply {t:#x} to NBD_OPT_STRUCTURED_REPLY"
                ))
            }
        }
    };
    let mut base_allocation = None;
    if structured {
        send_option(
            w,
            OPT_SET_META_CONTEXT,
            &name_and_queries(export, &[BASE_ALLOCATION.as_bytes()], false),
        )?;
        loop {
            match option_reply(r, OPT_SET_META_CONTEXT)? {
                (REP_META_CONTEXT, d) if d.len() >= 4 => {
                    if &d[4..] == BASE_ALLOCATION.as_bytes() {
                        base_allocation = Some(be32(&d[0..4]));
                    }
                }
                (REP_ACK, _) => break,
                (t, _) if t & 0x8000_0000 != 0 => {
                    base_allocation = None;
                    break;
                }
                (t, _) => {
                    return proto_err(format!(
                        "unexpected reply {t:#x} to NBD_OPT_SET_META_CONTEXT"
                    ))
                }
            }
        }
    }
    let reqs = [INFO_BLOCK_SIZE.to_be_bytes(), INFO_NAME.to_be_bytes()];
    let items: Vec<&[u8]> = reqs.iter().map(|b| &b[..]).collect();
    send_option(w, OPT_GO, &name_and_queries(export, &items, true))?;
    let mut info = ExportInfo {
        name: export.to_string(),
        size: 0,
        flags: 0,
        min_block: 1,
        preferred_block: 4096,
        max_block: MAX_BLOCK,
        structured,
        extended,
        base_allocation,
    };
    let mut have_export = false;
    loop {
        let (typ, d) = option_reply(r, OPT_GO)?;
        match typ {
            REP_INFO if d.len() >= 2 => match be16(&d[0..2]) {
                INFO_EXPORT if d.len() == 12 => {
                    info.size = be64(&d[2..10]);
                    info.flags = be16(&d[10..12]);
                    have_export = true;
                }
                INFO_BLOCK_SIZE if d.len() == 14 => {
                    info.min_block = be32(&d[2..6]).max(1);
                    info.preferred_block = be32(&d[6..10]);
                    info.max_block = be32(&d[10..14]).min(MAX_BLOCK).max(info.min_block);
                }
                INFO_NAME => info.name = String::from_utf8_lossy(&d[2..]).into_owned(),
                _ => {}
            },
            REP_ACK if have_export => return Ok(info),
            REP_ACK => return proto_err("NBD_OPT_GO succeeded without NBD_INFO_EXPORT"),
            REP_ERR_UNSUP => return export_name(r, w, export, no_zeroes, info),
            t if t & 0x8000_0000 != 0 => return Err(refused(OPT_GO, t, &d)),
            t => return proto_err(format!("unexpected reply {t:#x} to NBD_OPT_GO")),
        }
    }
}

/// Fallback for servers without NBD_OPT_GO.
fn export_name(
    r: &mut impl Read,
    w: &mut impl Write,
    export: &str,
    no_zeroes: bool,
    mut info: ExportInfo,
) -> Result<ExportInfo, NbdError> {
    send_option(w, OPT_EXPORT_NAME, export.as_bytes())?;
    info.size = read_u64(r)?;
    info.flags = read_u16(r)?;
    if !no_zeroes {
        drain(r, 124)?;
    }
    info.min_block = 512;
    Ok(info)
}
