//! `RemoteDevice`: a block device backed by an NBD export, for tables that name
//! `nbd://HOST[:PORT]/EXPORT` or `nbd+unix:///EXPORT?socket=PATH` as a device.
//!
//! Bios become NBD requests on one pipelined connection (answered from the client's
//! completion thread). When the connection drops, requests that did not get an answer are
//! kept and a supervisor thread reconnects with back-off; once it is back they are sent
//! again, so the outage costs time, not data. An outage longer than the limit (URI query
//! `outage=SECS`, else the process default, 30 s) fails the held I/O with EIO, and new I/O
//! fails at once until the server is back. A server that stops answering is cut off when
//! its oldest request is older than the limit, which turns it into an outage.
//!
//! `nbds://` and `nbds+unix://` use TLS: `tls-certificates=DIR` names a directory laid out
//! as libnbd expects (`ca-cert.pem`, optionally `client-cert.pem` + `client-key.pem`), and
//! `tls-hostname=NAME` overrides the name checked in the server's certificate.

use crate::client::{Cmd, NbdAddr, NbdClient, NbdError};
use crate::proto::{STATE_HOLE, STATE_ZERO};
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use udm_io::{Bio, BioFlags, BlockDevice, DevId, Extent, IoBuf, IoError, Limits, Op, Sectors};

static DEFAULT_OUTAGE_MS: AtomicU64 = AtomicU64::new(30_000);

/// Set the outage limit used when a URI does not give one (`udm daemon --nbd-outage-limit`).
pub fn set_default_outage_limit(d: Duration) {
    DEFAULT_OUTAGE_MS.store(d.as_millis() as u64, Ordering::Relaxed);
}

/// The outage limit used when a URI does not give one.
pub fn default_outage_limit() -> Duration {
    Duration::from_millis(DEFAULT_OUTAGE_MS.load(Ordering::Relaxed))
}

/// True when a table's device argument names a remote export.
pub fn is_remote_spec(spec: &str) -> bool {
    ["nbd://", "nbd+unix://", "nbds://", "nbds+unix://"]
        .iter()
        .any(|p| spec.starts_with(p))
}

/// TLS settings of an `nbds://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTls {
    /// `tls-certificates=DIR`.
    pub certificates: std::path::PathBuf,
    /// The name the server's certificate must carry.
    pub hostname: String,
}

impl RemoteTls {
    fn client(&self) -> Result<crate::tls::TlsClient, NbdError> {
        let d = &self.certificates;
        let (cc, ck) = (d.join("client-cert.pem"), d.join("client-key.pem"));
        let mine = (cc.exists() && ck.exists()).then_some((cc.as_path(), ck.as_path()));
        crate::tls::TlsClient::new(&d.join("ca-cert.pem"), &self.hostname, mine)
            .map_err(|e| NbdError::Protocol(e.to_string()))
    }
}

/// Where a remote device lives and how long it may be away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    pub addr: NbdAddr,
    pub export: String,
    pub outage_limit: Duration,
    pub tls: Option<RemoteTls>,
}

impl RemoteSpec {
    /// Parse a URI; `outage=SECS` (decimal allowed) may appear in the query.
    pub fn parse(uri: &str) -> Result<RemoteSpec, NbdError> {
        let bad = || NbdError::BadUri(uri.to_string());
        let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
        let (base, secure) = match base.strip_prefix("nbds") {
            Some(rest) => (format!("nbd{rest}"), true),
            None => (base.to_string(), false),
        };
        let mut keep = Vec::new();
        let mut outage = default_outage_limit();
        let (mut certs, mut hostname) = (None, None);
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some(("tls-certificates", v)) if secure && !v.is_empty() => {
                    certs = Some(std::path::PathBuf::from(v))
                }
                Some(("tls-hostname", v)) if secure && !v.is_empty() => {
                    hostname = Some(v.to_string())
                }
                Some(("outage", v)) => {
                    let s: f64 = v.parse().map_err(|_| bad())?;
                    if !(0.0..=86_400.0).contains(&s) {
                        return Err(bad());
                    }
                    outage = Duration::from_secs_f64(s);
                }
                Some(("socket", _)) => keep.push(kv),
                _ => return Err(bad()),
            }
        }
        let rebuilt = if keep.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", keep.join("&"))
        };
        let (addr, export) = NbdAddr::parse_uri(&rebuilt)?;
        let tls = match (secure, certs) {
            (false, _) => None,
            (true, None) => return Err(bad()),
            (true, Some(certificates)) => {
                let host = match &addr {
                    NbdAddr::Unix(_) => "localhost".to_string(),
                    NbdAddr::Tcp(hp) => {
                        let h = hp.rsplit_once(':').map_or(hp.as_str(), |(h, _)| h);
                        h.trim_start_matches('[').trim_end_matches(']').to_string()
                    }
                };
                Some(RemoteTls {
                    certificates,
                    hostname: hostname.unwrap_or(host),
                })
            }
        };
        Ok(RemoteSpec {
            addr,
            export,
            outage_limit: outage,
            tls,
        })
    }

    /// Connect once (with TLS when the URI asks for it).
    fn dial(&self, tls: Option<&crate::tls::TlsClient>) -> Result<NbdClient, NbdError> {
        match tls {
            Some(t) => NbdClient::connect_tls(&self.addr, &self.export, t),
            None => NbdClient::connect(&self.addr, &self.export),
        }
    }
}

/// A remote export as a `BlockDevice`.
pub struct RemoteDevice {
    sh: Arc<Shared>,
}

struct Shared {
    uri: String,
    spec: RemoteSpec,
    tls: Option<crate::tls::TlsClient>,
    size: u64,
    read_only: bool,
    limits: Limits,
    /// Longest data request, bytes (a multiple of the block size).
    max_len: u64,
    base_allocation: bool,
    st: Mutex<State>,
    cv: Condvar,
    seq: AtomicU64,
}

struct State {
    client: Option<Arc<NbdClient>>,
    /// Bumped on every new connection, so a stale failure does not cut a new one.
    gen: u64,
    down_since: Option<Instant>,
    /// The outage outlasted the limit: fail I/O at once until reconnected.
    failing: bool,
    /// Bios waiting for the connection to come back.
    queue: VecDeque<Bio>,
    /// Requests sent on the current connection: id → when.
    inflight: BTreeMap<u64, Instant>,
    /// Dead connections, closed by the supervisor off the I/O paths.
    graves: Vec<Arc<NbdClient>>,
    closed: bool,
    reconnects: u64,
    /// A connection cut off for not answering: its requests already waited the limit, so
    /// they fail instead of going round again.
    cut_gen: Option<u64>,
}

type Cache = Mutex<HashMap<(String, bool), Weak<RemoteDevice>>>;

fn cache() -> &'static Cache {
    static C: OnceLock<Cache> = OnceLock::new();
    C.get_or_init(Default::default)
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(100);
/// Longest discard or write-zeroes request.
const MAX_TRIM: u64 = 1 << 30;

impl RemoteDevice {
    /// Connect to `uri` (shared with other tables naming the same URI, as files are).
    pub fn open(uri: &str, read_only: bool) -> Result<Arc<RemoteDevice>, NbdError> {
        let key = (uri.to_string(), read_only);
        let mut c = cache().lock();
        if let Some(d) = c.get(&key).and_then(Weak::upgrade) {
            return Ok(d);
        }
        let d = Arc::new(RemoteDevice::connect(uri, read_only)?);
        c.insert(key, Arc::downgrade(&d));
        c.retain(|_, w| w.strong_count() > 0);
        Ok(d)
    }

    /// The shared device already open for `uri` (as `open` would return it), without
    /// connecting: for path checkers that must not dial a remote that is down.
    pub fn lookup(uri: &str, read_only: bool) -> Option<Arc<RemoteDevice>> {
        cache()
            .lock()
            .get(&(uri.to_string(), read_only))
            .and_then(Weak::upgrade)
    }

    /// A new, unshared connection.
    pub fn connect(uri: &str, read_only: bool) -> Result<RemoteDevice, NbdError> {
        let spec = RemoteSpec::parse(uri)?;
        let tls = spec.tls.as_ref().map(RemoteTls::client).transpose()?;
        let client = spec.dial(tls.as_ref())?;
        let info = client.info().clone();
        if info.size % 512 != 0 {
            return Err(NbdError::Protocol(format!(
                "export size {} is not a whole number of sectors",
                info.size
            )));
        }
        let block = info.min_block.clamp(512, 4096);
        let max = u64::from(info.max_block.max(block)).min(32 << 20);
        let sh = Arc::new(Shared {
            uri: uri.to_string(),
            size: info.size,
            read_only: read_only || info.read_only(),
            limits: Limits {
                logical_block_size: block,
                physical_block_size: block,
                io_min: info.preferred_block.clamp(block, 1 << 20),
                ..Limits::default()
            },
            max_len: max / u64::from(block) * u64::from(block),
            base_allocation: info.base_allocation.is_some(),
            spec,
            tls,
            st: Mutex::new(State {
                client: Some(Arc::new(client)),
                gen: 1,
                down_since: None,
                failing: false,
                queue: VecDeque::new(),
                inflight: BTreeMap::new(),
                graves: Vec::new(),
                closed: false,
                reconnects: 0,
                cut_gen: None,
            }),
            cv: Condvar::new(),
            seq: AtomicU64::new(0),
        });
        let s = sh.clone();
        std::thread::Builder::new()
            .name("nbd-remote".into())
            .spawn(move || supervise(s))?;
        Ok(RemoteDevice { sh })
    }

    /// True while connected.
    pub fn connected(&self) -> bool {
        self.sh.st.lock().client.is_some()
    }

    /// How many times the connection has been re-established.
    pub fn reconnects(&self) -> u64 {
        self.sh.st.lock().reconnects
    }
}

impl Drop for RemoteDevice {
    fn drop(&mut self) {
        self.sh.st.lock().closed = true;
        self.sh.cv.notify_all();
    }
}

impl BlockDevice for RemoteDevice {
    fn submit(&self, bio: Bio) {
        if bio.op.is_write() && self.sh.read_only {
            return bio.complete(Err(IoError::ReadOnly));
        }
        if bio.end().bytes().0 > self.sh.size {
            return bio.complete(Err(IoError::Io));
        }
        let step = match bio.op {
            Op::Read | Op::Write => self.sh.max_len,
            Op::Discard | Op::WriteZeroes => MAX_TRIM,
            Op::Flush => u64::MAX,
            _ => return bio.complete(Err(IoError::NotSupported)),
        };
        let total = bio.len().bytes().0;
        if total <= step {
            return self.sh.send(bio);
        }
        let mut lens = Vec::new();
        let mut left = total;
        while left > 0 {
            let n = left.min(step);
            lens.push(Sectors(n / 512));
            left -= n;
        }
        for piece in bio.split(&lens) {
            self.sh.send(piece);
        }
    }
    fn size(&self) -> Sectors {
        Sectors(self.sh.size / 512)
    }
    fn id(&self) -> DevId {
        DevId::Path(self.sh.uri.clone())
    }
    fn limits(&self) -> Limits {
        self.sh.limits
    }
    fn read_only(&self) -> bool {
        self.sh.read_only
    }
    fn extents(&self, sector: Sectors, len: Sectors) -> Vec<(Sectors, Extent)> {
        let all = vec![(len, Extent::Data)];
        let client = self.sh.st.lock().client.clone();
        let Some(c) = client.filter(|_| self.sh.base_allocation) else {
            return all;
        };
        let bytes = len.bytes().0.min(u64::from(u32::MAX) / 512 * 512) as u32;
        let Ok(runs) = c.block_status(sector.bytes().0, bytes) else {
            return all;
        };
        let mut out = Vec::new();
        let mut done = 0u64;
        for (l, flags) in runs {
            let l = (u64::from(l) / 512).min(len.0 - done);
            if l == 0 {
                break;
            }
            let e = match (flags & STATE_HOLE != 0, flags & STATE_ZERO != 0) {
                (true, _) => Extent::Hole,
                (false, true) => Extent::Zero,
                _ => Extent::Data,
            };
            out.push((Sectors(l), e));
            done += l;
        }
        if done < len.0 {
            out.push((Sectors(len.0 - done), Extent::Data));
        }
        out
    }
}

impl Shared {
    /// Send a bio now, hold it for the reconnect, or fail it when past the outage limit.
    fn send(self: &Arc<Self>, mut bio: Bio) {
        if bio.flags.contains(BioFlags::PREFLUSH) && bio.op != Op::Flush {
            // NBD has no pre-flush: flush first, then send the bio.
            bio.flags = bio.flags.without(BioFlags::PREFLUSH);
            let sh = self.clone();
            let flush = Bio::flush(Box::new(move |res, _| match res {
                Ok(()) => sh.send(bio),
                Err(e) => bio.complete(Err(e)),
            }));
            return self.send(flush);
        }
        let mut st = self.st.lock();
        if st.closed {
            drop(st);
            return bio.complete(Err(IoError::Io));
        }
        match st.client.clone() {
            Some(c) => {
                let gen = st.gen;
                let id = self.seq.fetch_add(1, Ordering::Relaxed);
                st.inflight.insert(id, Instant::now());
                drop(st);
                self.issue(&c, gen, id, bio);
            }
            None if st.failing => {
                drop(st);
                bio.complete(Err(IoError::Io))
            }
            None => st.queue.push_back(bio),
        }
    }

    fn issue(self: &Arc<Self>, c: &NbdClient, gen: u64, id: u64, mut bio: Bio) {
        let offset = bio.sector.bytes().0;
        let len = bio.len().bytes().0 as u32;
        let fua = bio.flags.contains(BioFlags::FUA);
        let sh = self.clone();
        match bio.op {
            Op::Read => c.submit(Cmd::Read { offset, len }, move |res| {
                let res = res.and_then(|data| {
                    if data.len() != bio.buf().len() {
                        return Err(NbdError::Protocol("short read reply".into()));
                    }
                    bio.buf_mut().copy_from_slice(&data);
                    Ok(())
                });
                sh.finish(gen, id, bio, res)
            }),
            Op::Write => {
                // The payload is sent before `submit` returns; the callback gets the
                // buffer back (copying only if it races ahead of this function).
                let buf = Arc::new(bio.take_buf());
                let keep = buf.clone();
                c.submit(
                    Cmd::Write {
                        offset,
                        data: &buf,
                        fua,
                    },
                    move |res| {
                        let b = Arc::try_unwrap(keep).unwrap_or_else(|a| IoBuf::from_slice(&a));
                        bio.set_buf(b);
                        sh.finish(gen, id, bio, res.map(|_| ()))
                    },
                );
            }
            Op::Flush => c.submit(Cmd::Flush, move |res| {
                sh.finish(gen, id, bio, res.map(|_| ()))
            }),
            Op::Discard => c.submit(Cmd::Trim { offset, len, fua }, move |res| {
                sh.finish(gen, id, bio, res.map(|_| ()))
            }),
            Op::WriteZeroes => {
                let no_hole = bio.flags.contains(BioFlags::NOUNMAP);
                let cmd = Cmd::WriteZeroes {
                    offset,
                    len,
                    no_hole,
                    fua,
                };
                c.submit(cmd, move |res| sh.finish(gen, id, bio, res.map(|_| ())))
            }
            // `submit` refuses ops NBD cannot carry before they get here.
            _ => sh.finish(gen, id, bio, Err(NbdError::Invalid("unsupported op"))),
        }
    }

    /// A request ended: complete it, or — when the connection failed under it — hold it
    /// for the reconnect.
    fn finish(self: &Arc<Self>, gen: u64, id: u64, bio: Bio, res: Result<(), NbdError>) {
        let timed_out = {
            let mut st = self.st.lock();
            st.inflight.remove(&id);
            st.cut_gen == Some(gen)
        };
        match res {
            Ok(()) => bio.complete(Ok(())),
            Err(NbdError::Remote { errno, .. }) => bio.complete(Err(IoError::from_errno(errno))),
            Err(NbdError::Invalid(_)) => bio.complete(Err(IoError::Invalid)),
            Err(_) if timed_out => bio.complete(Err(IoError::Io)),
            Err(e) => {
                self.lost(gen, &e);
                self.send(bio)
            }
        }
    }

    /// The connection of generation `gen` failed.
    fn lost(&self, gen: u64, e: &NbdError) {
        let mut st = self.st.lock();
        if st.gen != gen || st.client.is_none() {
            return;
        }
        tracing::warn!(
            "nbd remote {}: connection lost ({e}); reconnecting",
            self.uri
        );
        if let Some(c) = st.client.take() {
            st.graves.push(c);
        }
        st.inflight.clear();
        st.down_since = Some(Instant::now());
        self.cv.notify_all();
    }
}

/// Reconnect with back-off, enforce the outage limit, cut off a server that stopped
/// answering; ends (failing whatever is held) when the device is dropped.
fn supervise(sh: Arc<Shared>) {
    let limit = sh.spec.outage_limit;
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut st = sh.st.lock();
        let graves = std::mem::take(&mut st.graves);
        if st.closed {
            let q: Vec<Bio> = st.queue.drain(..).collect();
            let c = st.client.take();
            drop(st);
            drop(graves);
            q.into_iter().for_each(|b| b.complete(Err(IoError::Io)));
            drop(c);
            return;
        }
        if let Some(c) = st.client.clone() {
            let stuck = st
                .inflight
                .values()
                .next()
                .is_some_and(|t| t.elapsed() > limit.max(TICK));
            if stuck {
                st.cut_gen = Some(st.gen);
                drop(st);
                tracing::warn!(
                    "nbd remote {}: no reply within {limit:?}; cutting off",
                    sh.uri
                );
                c.abort();
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if graves.is_empty() {
                sh.cv.wait_for(&mut st, TICK);
            }
            drop(st);
            drop(graves);
            continue;
        }
        let since = *st.down_since.get_or_insert_with(Instant::now);
        if !st.failing && since.elapsed() >= limit {
            st.failing = true;
            let q: Vec<Bio> = st.queue.drain(..).collect();
            drop(st);
            tracing::error!(
                "nbd remote {}: down for {limit:?}: failing {} held bios with EIO",
                sh.uri,
                q.len()
            );
            q.into_iter().for_each(|b| b.complete(Err(IoError::Io)));
        } else {
            drop(st);
        }
        drop(graves);
        match sh.spec.dial(sh.tls.as_ref()) {
            Ok(c) if c.size() == sh.size => {
                let mut st = sh.st.lock();
                if st.closed {
                    continue;
                }
                st.client = Some(Arc::new(c));
                st.gen += 1;
                st.down_since = None;
                st.failing = false;
                st.reconnects += 1;
                let q: Vec<Bio> = st.queue.drain(..).collect();
                drop(st);
                tracing::info!(
                    "nbd remote {}: reconnected after {:?}; resending {} bios",
                    sh.uri,
                    since.elapsed(),
                    q.len()
                );
                backoff = BACKOFF_MIN;
                q.into_iter().for_each(|b| sh.send(b));
                continue;
            }
            Ok(c) => tracing::error!(
                "nbd remote {}: export size changed ({} → {} bytes); not using it",
                sh.uri,
                sh.size,
                c.size()
            ),
            Err(e) => tracing::debug!("nbd remote {}: reconnect failed: {e}", sh.uri),
        }
        // Sleep, but wake for the outage deadline and for close.
        let mut st = sh.st.lock();
        let to_deadline = (since + limit).saturating_duration_since(Instant::now());
        let nap = if st.failing || to_deadline.is_zero() {
            backoff
        } else {
            backoff.min(to_deadline)
        };
        if !st.closed {
            sh.cv.wait_for(&mut st, nap);
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_an_outage_limit() {
        let s = RemoteSpec::parse("nbd://10.0.0.2:7000/disk?outage=2.5").unwrap();
        assert_eq!(s.addr, NbdAddr::Tcp("10.0.0.2:7000".into()));
        assert_eq!(s.export, "disk");
        assert_eq!(s.outage_limit, Duration::from_millis(2500));
        let s = RemoteSpec::parse("nbd+unix:///a?socket=/run/x.sock&outage=1").unwrap();
        assert_eq!(s.addr, NbdAddr::Unix("/run/x.sock".into()));
        assert_eq!(s.export, "a");
        assert_eq!(s.outage_limit, Duration::from_secs(1));
        let s = RemoteSpec::parse("nbd://h/e").unwrap();
        assert_eq!(s.outage_limit, default_outage_limit());
        assert!(RemoteSpec::parse("nbd://h/e?outage=x").is_err());
        assert!(RemoteSpec::parse("nbd://h/e?bogus=1").is_err());
        assert!(is_remote_spec("nbd+unix:///e?socket=/s") && !is_remote_spec("/dev/sda"));
        let s = RemoteSpec::parse("nbds://h.example:7000/e?tls-certificates=/pki").unwrap();
        assert_eq!(s.addr, NbdAddr::Tcp("h.example:7000".into()));
        let t = s.tls.unwrap();
        assert_eq!(
            (t.certificates.to_str(), t.hostname.as_str()),
            (Some("/pki"), "h.example")
        );
        let s = RemoteSpec::parse("nbds+unix:///e?socket=/s&tls-certificates=/p&tls-hostname=x")
            .unwrap();
        assert_eq!(s.tls.unwrap().hostname, "x");
        assert!(
            RemoteSpec::parse("nbds://h/e").is_err(),
            "certificates are required"
        );
        assert!(RemoteSpec::parse("nbd://h/e?tls-certificates=/p").is_err());
    }
}
