//! Reading a mapped file without dying when it shrinks: a page of a shared file mapping that
//! lies past the file's end (another process truncated it) raises SIGBUS on access, which
//! would kill the daemon and every device it serves. [`guarded`] runs a reader over a mapped
//! range with a SIGBUS handler armed for that range on this thread: a fault inside it gets a
//! zero page mapped over the faulting page (so the access completes) and the call reports
//! [`Truncated`]; the caller throws the reader's output away and reads with bios, which see
//! the short file. A SIGBUS anywhere else goes to the handler that was there before (the
//! Rust runtime's, then the default: the process dies as it would have).
//!
//! The zero page stays in the mapping: a mapping that faulted once must not be read again
//! (the caller drops it).

use std::cell::Cell;
use std::sync::OnceLock;

/// A guarded read touched a page the file no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

thread_local! {
    /// The guarded range of this thread (`start`, `end`), and whether it faulted. Const
    /// initialised: reading it from the signal handler allocates nothing.
    static RANGE: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    static FAULTED: Cell<bool> = const { Cell::new(false) };
}

/// The action SIGBUS had before ours (set once, before our handler is installed).
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let (start, end) = RANGE.with(|r| r.get());
    if start <= addr && addr < end {
        let page = addr & !4095;
        // SAFETY: replaces exactly one page of the mapping the caller of `guarded` passed
        // (inside its range) with an anonymous zero page, so the faulting access can
        // complete; mmap is async-signal-safe.
        let p = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            FAULTED.with(|f| f.set(true));
            return;
        }
    }
    // Not ours: put the previous action back; returning re-runs the faulting access, which
    // now goes to it.
    // SAFETY: `old` is a valid sigaction (set before this handler was installed, never
    // changed); sigaction and signal are async-signal-safe.
    unsafe {
        match PREVIOUS.get() {
            Some(old) => libc::sigaction(sig, old, std::ptr::null_mut()),
            None => libc::signal(sig, libc::SIG_DFL) as libc::c_int,
        };
    }
}

fn install() {
    PREVIOUS.get_or_init(|| {
        // SAFETY: plain sigaction calls with valid, zero-initialised structs; the previous
        // action is stored (by get_or_init) before any SIGBUS of a guarded read can come,
        // since no read is guarded before `install` returns.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, &mut old);
            old
        }
    });
}

/// Run `read` over `data`, a slice of a shared file mapping, with SIGBUS inside `data`
/// turned into [`Truncated`] (see the module documentation). Not reentrant per thread:
/// `read` must not call `guarded` again.
pub fn guarded<T>(data: &[u8], read: impl FnOnce(&[u8]) -> T) -> Result<T, Truncated> {
    install();
    let start = data.as_ptr() as usize;
    RANGE.with(|r| r.set((start, start + data.len())));
    FAULTED.with(|f| f.set(false));
    let out = read(data);
    RANGE.with(|r| r.set((0, 0)));
    if FAULTED.with(|f| f.replace(false)) {
        Err(Truncated)
    } else {
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filemap::{page_file, FileMap};

    #[test]
    fn a_mapping_truncated_under_a_guarded_read_reports_it_and_does_not_kill_us() {
        let (_dir, f) = page_file(7, 4);
        let m = FileMap::new(&f, 4 * 4096).unwrap();
        let data = m
            .resident(0, 4 * 4096)
            .expect("just written: in the page cache");
        let sum = |d: &[u8]| d.iter().map(|&b| b as u64).sum::<u64>();
        assert_eq!(guarded(data, sum), Ok(7 * 4 * 4096));
        f.set_len(4096).unwrap();
        assert_eq!(guarded(data, sum), Err(Truncated));
        // The next guarded read is clean again (the zero pages stay: 1 page of sevens).
        assert_eq!(guarded(&data[..4096], sum), Ok(7 * 4096));
        assert_eq!(guarded(data, sum), Ok(7 * 4096));
    }
}
