//! Server side of the fixed newstyle handshake: option haggling up to NBD_OPT_GO or
//! NBD_OPT_EXPORT_NAME, producing what the transmission phase needs.

use crate::proto::*;
use crate::{ExportHandle, Exports};
use std::io::{self, Read, Write};

/// The outcome of a successful handshake.
pub(crate) struct Negotiated {
    pub name: String,
    pub handle: ExportHandle,
    pub structured: bool,
    /// NBD_OPT_EXTENDED_HEADERS was negotiated: 32-byte requests and replies only.
    pub extended: bool,
    /// Context id of `base:allocation` if the client selected it for this export.
    pub base_allocation: Option<u32>,
    pub read_only: bool,
    pub size: u64,
    pub min_block: u32,
}

/// How a handshake ended.
pub(crate) enum Outcome {
    /// Transmission starts (`Some`) or the connection closes (`None`).
    Done(Option<Negotiated>),
    /// The client asked for TLS and got the ACK: run the TLS handshake, then call
    /// `negotiate` again with `Tls::active` set.
    StartTls { no_zeroes: bool },
}

/// The TLS side of a handshake.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tls {
    /// The server has a certificate (NBD_OPT_STARTTLS is accepted).
    pub offered: bool,
    /// Plaintext option haggling is refused (NBD_REP_ERR_TLS_REQD).
    pub required: bool,
    /// TLS is running: no greeting, option haggling goes on.
    pub active: bool,
    /// The client's NO_ZEROES flag from the greeting (when `active`).
    pub no_zeroes: bool,
}

/// Context id we hand out for `base:allocation`.
const BASE_ALLOCATION_ID: u32 = 1;
/// Options a client may send before we give up on it.
const MAX_OPTIONS: usize = 4096;

/// Block sizes advertised for a device: (minimum, preferred, maximum).
pub(crate) fn block_sizes(handle: &ExportHandle) -> (u32, u32, u32) {
    let lbs = handle.dev.limits().logical_block_size.clamp(512, 64 << 10);
    let min = lbs.next_power_of_two();
    let pref = min.max(4096);
    (min, pref, MAX_BLOCK)
}

/// Transmission flags for an export.
pub(crate) fn transmission_flags(read_only: bool, structured: bool) -> u16 {
    let mut f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_CAN_MULTI_CONN;
    if read_only {
        f |= TF_READ_ONLY;
    } else {
        f |= TF_SEND_FUA | TF_SEND_TRIM | TF_SEND_WRITE_ZEROES;
    }
    if structured {
        f |= TF_SEND_DF;
    }
    f
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Write one option reply.
fn reply(w: &mut impl Write, opt: u32, typ: u32, data: &[u8]) -> io::Result<()> {
    let mut v = Vec::with_capacity(20 + data.len());
    v.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&typ.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    w.write_all(&v)
}

/// An error reply with a human-readable message.
fn reply_err(w: &mut impl Write, opt: u32, typ: u32, msg: &str) -> io::Result<()> {
    reply(w, opt, typ, msg.as_bytes())?;
    w.flush()
}

struct State<'a> {
    exports: &'a dyn Exports,
    tls: Tls,
    structured: bool,
    extended: bool,
    no_zeroes: bool,
    /// Export name the last SET_META_CONTEXT referred to, and whether it selected
    /// `base:allocation`.
    meta: Option<(String, bool)>,
}

/// Run the handshake. `Ok(None)`: the client aborted or must be disconnected cleanly.
/// `Err`: I/O error or protocol violation; the caller drops the connection.
pub(crate) fn negotiate<R: Read, W: Write>(
    r: &mut R,
    w: &mut W,
    exports: &dyn Exports,
    tls: Tls,
) -> io::Result<Outcome> {
    let no_zeroes = if tls.active {
        tls.no_zeroes
    } else {
        let mut hello = [0u8; 18];
        hello[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
        hello[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
        hello[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        w.write_all(&hello)?;
        w.flush()?;
        let cflags = read_u32(r)?;
        if cflags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
            return Err(bad("unknown client flags"));
        }
        cflags & FLAG_C_NO_ZEROES != 0
    };
    // Nothing negotiated before STARTTLS survives it.
    let mut st = State {
        exports,
        tls,
        structured: false,
        extended: false,
        no_zeroes,
        meta: None,
    };

    for _ in 0..MAX_OPTIONS {
        if read_u64(r)? != IHAVEOPT {
            return Err(bad("bad option magic"));
        }
        let opt = read_u32(r)?;
        let len = read_u32(r)?;
        if len > MAX_OPTION_DRAIN {
            return Err(bad("option payload absurdly long"));
        }
        if len > MAX_OPTION {
            drain(r, len as u64)?;
            if opt == OPT_EXPORT_NAME {
                return Ok(Outcome::Done(None));
            }
            reply_err(w, opt, REP_ERR_TOO_BIG, "option payload too long")?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data)?;
        if let Some(done) = option(&mut st, w, opt, &data)? {
            return Ok(done);
        }
    }
    Err(bad("too many options"))
}

/// Handle one option. `Some(outcome)` ends the handshake.
fn option<W: Write>(
    st: &mut State,
    w: &mut W,
    opt: u32,
    data: &[u8],
) -> io::Result<Option<Outcome>> {
    if st.tls.required && !st.tls.active && opt != OPT_STARTTLS && opt != OPT_ABORT {
        if opt == OPT_EXPORT_NAME {
            // No way to answer with an error: disconnect.
            return Ok(Some(Outcome::Done(None)));
        }
        reply_err(
            w,
            opt,
            REP_ERR_TLS_REQD,
            "TLS is required: send NBD_OPT_STARTTLS",
        )?;
        return Ok(None);
    }
    match opt {
        OPT_EXPORT_NAME => {
            let name = String::from_utf8_lossy(data).into_owned();
            let Some((name, handle)) = open(st.exports, &name) else {
                tracing::debug!("nbd: EXPORT_NAME {name:?}: no such export");
                return Ok(Some(Outcome::Done(None)));
            };
            let n = finish(st, name, handle);
            let mut v = Vec::with_capacity(134);
            v.extend_from_slice(&n.size.to_be_bytes());
            v.extend_from_slice(&transmission_flags(n.read_only, n.structured).to_be_bytes());
            if !st.no_zeroes {
                v.extend_from_slice(&[0u8; 124]);
            }
            w.write_all(&v)?;
            w.flush()?;
            Ok(Some(Outcome::Done(Some(n))))
        }
        OPT_ABORT => {
            // The client may already have gone; a failed ACK is fine.
            let _ = reply(w, opt, REP_ACK, &[]).and_then(|_| w.flush());
            Ok(Some(Outcome::Done(None)))
        }
        OPT_LIST => {
            if !data.is_empty() {
                reply_err(w, opt, REP_ERR_INVALID, "NBD_OPT_LIST takes no data")?;
                return Ok(None);
            }
            let mut names = st.exports.list();
            names.sort();
            for name in names {
                let mut v = Vec::with_capacity(4 + name.len());
                v.extend_from_slice(&(name.len() as u32).to_be_bytes());
                v.extend_from_slice(name.as_bytes());
                reply(w, opt, REP_SERVER, &v)?;
            }
            reply(w, opt, REP_ACK, &[])?;
            w.flush()?;
            Ok(None)
        }
        OPT_STRUCTURED_REPLY => {
            if !data.is_empty() {
                reply_err(
                    w,
                    opt,
                    REP_ERR_INVALID,
                    "NBD_OPT_STRUCTURED_REPLY takes no data",
                )?;
                return Ok(None);
            }
            if st.extended {
                reply_err(
                    w,
                    opt,
                    REP_ERR_EXT_HEADER_REQD,
                    "extended headers already negotiated",
                )?;
                return Ok(None);
            }
            st.structured = true;
            reply(w, opt, REP_ACK, &[])?;
            w.flush()?;
            Ok(None)
        }
        OPT_EXTENDED_HEADERS => {
            if !data.is_empty() {
                reply_err(
                    w,
                    opt,
                    REP_ERR_INVALID,
                    "NBD_OPT_EXTENDED_HEADERS takes no data",
                )?;
                return Ok(None);
            }
            if st.extended {
                reply_err(
                    w,
                    opt,
                    REP_ERR_INVALID,
                    "extended headers already negotiated",
                )?;
                return Ok(None);
            }
            // Extended headers imply structured replies.
            st.extended = true;
            st.structured = true;
            reply(w, opt, REP_ACK, &[])?;
            w.flush()?;
            Ok(None)
        }
        OPT_INFO | OPT_GO => info_or_go(st, w, opt, data),
        OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
            meta_context(st, w, opt, data)?;
            Ok(None)
        }
        OPT_STARTTLS if !st.tls.offered => {
            reply_err(
                w,
                opt,
                REP_ERR_UNSUP,
                "TLS is not configured on this server",
            )?;
            Ok(None)
        }
        OPT_STARTTLS if st.tls.active => {
            reply_err(w, opt, REP_ERR_INVALID, "TLS is already running")?;
            Ok(None)
        }
        OPT_STARTTLS if !data.is_empty() => {
            reply_err(w, opt, REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data")?;
            Ok(None)
        }
        OPT_STARTTLS => {
            reply(w, opt, REP_ACK, &[])?;
            w.flush()?;
            Ok(Some(Outcome::StartTls {
                no_zeroes: st.no_zeroes,
            }))
        }
        _ => {
            reply_err(w, opt, REP_ERR_UNSUP, "unsupported option")?;
            Ok(None)
        }
    }
}

/// Open `name`, returning its canonical name; the empty name is the default export when
/// exactly one exists.
fn open(exports: &dyn Exports, name: &str) -> Option<(String, ExportHandle)> {
    let name = resolve(exports, name)?;
    let handle = exports.open(&name)?;
    Some((name, handle))
}

fn resolve(exports: &dyn Exports, name: &str) -> Option<String> {
    if !name.is_empty() {
        return Some(name.to_string());
    }
    let mut list = exports.list();
    if list.len() == 1 {
        list.pop()
    } else {
        None
    }
}

fn finish(st: &State, name: String, handle: ExportHandle) -> Negotiated {
    let read_only = handle.read_only || handle.dev.read_only();
    let size = handle.dev.size().bytes().0;
    let (min_block, _, _) = block_sizes(&handle);
    let base_allocation = match &st.meta {
        Some((n, true)) if *n == name && st.structured => Some(BASE_ALLOCATION_ID),
        _ => None,
    };
    Negotiated {
        name,
        handle,
        structured: st.structured,
        extended: st.extended,
        base_allocation,
        read_only,
        size,
        min_block,
    }
}

fn info_or_go<W: Write>(
    st: &mut State,
    w: &mut W,
    opt: u32,
    data: &[u8],
) -> io::Result<Option<Outcome>> {
    let mut c = Cursor::new(data);
    let parsed = (|| {
        let name = c.string()?;
        let n = c.u16()? as usize;
        let mut reqs = Vec::with_capacity(n);
        for _ in 0..n {
            reqs.push(c.u16()?);
        }
        (c.remaining() == 0).then_some((name, reqs))
    })();
    let Some((name, reqs)) = parsed else {
        reply_err(w, opt, REP_ERR_INVALID, "malformed NBD_OPT_INFO/GO")?;
        return Ok(None);
    };
    let Some((name, handle)) = open(st.exports, &name) else {
        reply_err(
            w,
            opt,
            REP_ERR_UNKNOWN,
            &format!("export {name:?} not available"),
        )?;
        return Ok(None);
    };
    let (min, pref, max) = block_sizes(&handle);
    let n = finish(st, name, handle);

    let mut export = Vec::with_capacity(12);
    export.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    export.extend_from_slice(&n.size.to_be_bytes());
    export.extend_from_slice(&transmission_flags(n.read_only, n.structured).to_be_bytes());
    reply(w, opt, REP_INFO, &export)?;

    let mut bs = Vec::with_capacity(14);
    bs.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    for v in [min, pref, max] {
        bs.extend_from_slice(&v.to_be_bytes());
    }
    reply(w, opt, REP_INFO, &bs)?;

    if reqs.contains(&INFO_NAME) {
        let mut v = Vec::with_capacity(2 + n.name.len());
        v.extend_from_slice(&INFO_NAME.to_be_bytes());
        v.extend_from_slice(n.name.as_bytes());
        reply(w, opt, REP_INFO, &v)?;
    }
    if reqs.contains(&INFO_DESCRIPTION) {
        let desc = format!("udm device {}", n.handle.dev.id());
        let mut v = Vec::with_capacity(2 + desc.len());
        v.extend_from_slice(&INFO_DESCRIPTION.to_be_bytes());
        v.extend_from_slice(desc.as_bytes());
        reply(w, opt, REP_INFO, &v)?;
    }
    reply(w, opt, REP_ACK, &[])?;
    w.flush()?;
    if opt == OPT_GO {
        Ok(Some(Outcome::Done(Some(n))))
    } else {
        // NBD_OPT_INFO: the handle (and its open count) goes away here.
        Ok(None)
    }
}

fn meta_context<W: Write>(st: &mut State, w: &mut W, opt: u32, data: &[u8]) -> io::Result<()> {
    let set = opt == OPT_SET_META_CONTEXT;
    if set {
        // A SET replaces earlier selections even when it fails.
        st.meta = None;
    }
    if !st.structured {
        return reply_err(
            w,
            opt,
            REP_ERR_INVALID,
            "negotiate structured replies first",
        );
    }
    let mut c = Cursor::new(data);
    let parsed = (|| {
        let name = c.string()?;
        let n = c.u32()? as usize;
        let mut queries = Vec::new();
        for _ in 0..n {
            queries.push(c.string()?);
        }
        (c.remaining() == 0).then_some((name, queries))
    })();
    let Some((name, queries)) = parsed else {
        return reply_err(w, opt, REP_ERR_INVALID, "malformed meta context request");
    };
    let Some(name) = resolve(st.exports, &name) else {
        return reply_err(w, opt, REP_ERR_UNKNOWN, "no default export");
    };
    let matched = if set {
        queries.iter().any(|q| q == BASE_ALLOCATION)
    } else {
        queries.is_empty() || queries.iter().any(|q| q == BASE_ALLOCATION || q == "base:")
    };
    if matched {
        let id = if set { BASE_ALLOCATION_ID } else { 0 };
        let mut v = Vec::with_capacity(4 + BASE_ALLOCATION.len());
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(BASE_ALLOCATION.as_bytes());
        reply(w, opt, REP_META_CONTEXT, &v)?;
    }
    if set {
        st.meta = Some((name, matched));
    }
    reply(w, opt, REP_ACK, &[])?;
    w.flush()
}
