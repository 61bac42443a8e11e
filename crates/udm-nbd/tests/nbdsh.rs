//! The server driven by `nbdsh` (libnbd's Python shell): trim/zero/FUA/flush/DF, block
//! status, option-mode negotiation, simple replies, and the error paths with libnbd's own
//! client-side checks switched off so the server's answers are what is tested.

mod common;

use common::*;
use std::sync::Arc;
use udm_io::MemDevice;
use udm_testkit::{require_tool, run};

const PRELUDE: &str = r#"
import nbd, errno
def expect(err, f, *a):
    try:
        f(*a)
    except nbd.Error as e:
        assert e.errnum == err, "wanted %d got %r" % (err, (e.errnum, e.string))
        return
    raise AssertionError("no error from %s%r" % (f.__name__, a))
"#;

/// Run a Python snippet (after the prelude, with `uri` defined) in nbdsh; it must print OK.
fn nbdsh(uri: &str, body: &str) {
    let script = format!("{PRELUDE}\nuri = {uri:?}\n{body}\nprint('OK')\n");
    let out = run(common::nbdsh().arg("-c").arg(&script));
    assert!(out.trim_end().ends_with("OK"), "{out}");
}

/// The standard exports (`common::serve_standard`) and its memory device, when nbdsh is
/// installed.
fn standard() -> Option<(Served, Arc<MemDevice>)> {
    if !require_tool("nbdsh") {
        return None;
    }
    let (s, mem, _) = serve_standard();
    Some((s, mem))
}

#[test]
fn nbdsh_data_commands() {
    let Some((s, mem)) = standard() else {
        return;
    };
    nbdsh(
        &s.uri("mem"),
        r#"
h.connect_uri(uri)
assert h.get_size() == 4 << 20
assert h.get_structured_replies_negotiated()
assert h.can_flush() and h.can_fua() and h.can_trim() and h.can_zero()
assert h.can_df() and h.can_multi_conn() and not h.is_read_only()
buf = b"\xab" * 65536
h.pwrite(buf, 0, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == buf
chunks = []
h.pread_structured(65536, 0, lambda sub, off, st, err: chunks.append((off, bytes(sub))) or 0, nbd.CMD_FLAG_DF)
assert chunks == [(0, buf)], [(o, len(b)) for o, b in chunks]
h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE)
h.zero(4096, 4096, nbd.CMD_FLAG_FUA)
assert h.pread(8192, 0) == bytes(8192)
assert h.pread(4096, 8192) == buf[:4096]
h.trim(4096, 16384, nbd.CMD_FLAG_FUA)
h.flush()
h.shutdown()
"#,
    );
    let snap = mem.snapshot();
    assert!(snap[..8192].iter().all(|&b| b == 0));
    assert!(snap[8192..16384].iter().all(|&b| b == 0xab));
    assert!(snap[16384..20480].iter().all(|&b| b == 0));
    assert!(snap[20480..65536].iter().all(|&b| b == 0xab));
}

#[test]
fn nbdsh_error_paths() {
    let Some((s, _)) = standard() else {
        return;
    };
    nbdsh(
        &s.uri("mem"),
        r#"
h.connect_uri(uri)
h.set_strict_mode(0)
size = h.get_size()
expect(errno.EINVAL, h.pread, 512, size)
expect(errno.EINVAL, h.pread, 4096, size - 512)
expect(errno.EINVAL, h.pread, 512, 1)
expect(errno.EINVAL, h.pread, 100, 0)
expect(errno.ENOSPC, h.pwrite, b"x" * 512, size)
expect(errno.EINVAL, h.pwrite, b"x" * 100, 0)
expect(errno.EINVAL, h.trim, 1024, size - 512)
expect(errno.ENOSPC, h.zero, 512, size)
expect(errno.EINVAL, h.zero, 512, 0, nbd.CMD_FLAG_FAST_ZERO)
expect(errno.EINVAL, h.pread, 512, 0, nbd.CMD_FLAG_REQ_ONE)
# no metadata context was negotiated
expect(errno.EINVAL, h.block_status, 512, 0, lambda *a: 0)
# still fine afterwards
h.pwrite(b"y" * 512, 0)
assert h.pread(512, 0) == b"y" * 512
h.shutdown()
"#,
    );
    nbdsh(
        &s.uri("pattern"),
        r#"
h.connect_uri(uri)
h.set_strict_mode(0)
assert h.is_read_only() and not h.can_trim() and not h.can_zero()
expect(errno.EPERM, h.pwrite, b"x" * 512, 0)
expect(errno.EPERM, h.trim, 512, 0)
expect(errno.EPERM, h.zero, 512, 0)
assert h.pread(512, 0)[16:24] == (16).to_bytes(8, "little")
expect(errno.EINVAL, h.pread, 8, 16)
h.flush()
h.shutdown()
"#,
    );
}

#[test]
fn nbdsh_block_status() {
    let Some((s, _)) = standard() else {
        return;
    };
    nbdsh(
        &s.uri("file"),
        r#"
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
def status(count, off, flags=0):
    got = []
    def cb(ctx, o, ents, err):
        assert ctx == nbd.CONTEXT_BASE_ALLOCATION
        got.extend(zip(ents[0::2], ents[1::2]))
        return 0
    h.block_status(count, off, cb, flags)
    return got
assert status(8 << 20, 0) == [(8 << 20, nbd.STATE_HOLE | nbd.STATE_ZERO)]
h.pwrite(b"d" * 65536, 1 << 20)
h.flush()
got = status(8 << 20, 0)
assert got[0] == (1 << 20, 3), got
assert got[1] == (65536, 0), got
assert sum(l for l, _ in got) == 8 << 20, got
one = status(8 << 20, 0, nbd.CMD_FLAG_REQ_ONE)
assert one == [(1 << 20, 3)], one
h.trim(65536, 1 << 20)
assert status(65536, 1 << 20)[0][1] & nbd.STATE_ZERO
h.zero(65536, 2 << 20)
assert h.pread(65536, 2 << 20) == bytes(65536)
h.set_strict_mode(0)
expect(errno.EINVAL, h.block_status, 512, 8 << 20, lambda *a: 0)
h.shutdown()
"#,
    );
}

#[test]
fn nbdsh_option_mode_and_simple_replies() {
    let Some((s, _)) = standard() else {
        return;
    };
    nbdsh(
        &s.uri("mem"),
        r#"
h.set_opt_mode(True)
h.connect_uri(uri)
names = []
h.opt_list(lambda name, desc: names.append(name))
assert names == ["file", "mem", "pattern"], names
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name))
assert ctxs == ["base:allocation"], ctxs
h.set_export_name("pattern")
h.opt_info()
assert h.get_size() == 4 << 20 and h.is_read_only()
h.set_export_name("nope")
try:
    h.opt_info()
    raise AssertionError("info on a missing export succeeded")
except nbd.Error:
    pass
h.set_export_name("mem")
h.opt_go()
assert h.pread(512, 0) == bytes(512)
h.shutdown()

# Without structured replies: simple replies for data and errors.
h2 = nbd.NBD()
h2.set_request_structured_replies(False)
h2.connect_uri(uri)
assert not h2.get_structured_replies_negotiated()
assert not h2.can_df()
h2.pwrite(b"s" * 4096, 4096)
assert h2.pread(4096, 4096) == b"s" * 4096
h2.set_strict_mode(0)
expect(errno.EINVAL, h2.pread, 512, 4 << 20)
assert h2.pread(512, 4096) == b"s" * 512
h2.shutdown()
"#,
    );
}
