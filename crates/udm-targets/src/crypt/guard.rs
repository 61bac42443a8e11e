//! A guard for reads through a file mapping. A mapping of a file that shrinks under it
//! (another process truncates the image between the size check and the access) raises
//! `SIGBUS` on the first access past the new end, which would kill the whole daemon. While a
//! thread runs [`guarded`], a `SIGBUS` at an address inside the guarded range instead marks
//! the mapping poisoned, puts a zero page where the lost page was (so the faulting access
//! completes) and lets the call return `Err`; every reader of a poisoned mapping discards
//! what it read and the caller reads with a bio. A `SIGBUS` anywhere else goes to the handler
//! that was there before (Rust's own, or the default action).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

/// The range guarded on this thread (start, end; empty when none) and its poison flag.
#[derive(Clone, Copy)]
struct Guard {
    lo: usize,
    hi: usize,
    poison: *const AtomicBool,
}

thread_local! {
    static CURRENT: Cell<Guard> = const {
        Cell::new(Guard { lo: 0, hi: 0, poison: std::ptr::null() })
    };
}

/// The handler `SIGBUS` had before ours.
struct Old(libc::sigaction);
// SAFETY: a plain C struct of integers and function pointers, written once before the
// handler is installed and only read afterwards.
unsafe impl Sync for Old {}
// SAFETY: as above.
unsafe impl Send for Old {}

static OLD: OnceLock<Old> = OnceLock::new();
static INSTALL: Once = Once::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let g = CURRENT.with(|c| c.get());
    if addr >= g.lo && addr < g.hi && !g.poison.is_null() {
        // SAFETY: `poison` points into the mapping's owner, which `guarded`'s caller keeps
        // alive for the whole guarded call (this fault happens inside it).
        unsafe { (*g.poison).store(true, Ordering::SeqCst) };
        let page = addr & !(PAGE.load(Ordering::Relaxed) - 1);
        // SAFETY: replaces exactly one page inside the guarded mapping (which the caller
        // owns and will unmap as a whole) with a private zero page; mmap is a plain syscall.
        let p = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                PAGE.load(Ordering::Relaxed),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return;
        }
    }
    match OLD.get() {
        Some(Old(old)) if old.sa_sigaction > libc::SIG_IGN => {
            if old.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this
                // signature; we pass on what the kernel gave us.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(old.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: a handler installed without SA_SIGINFO takes the signal number.
                let f: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(old.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // No handler before ours: restore the default action; returning re-runs the
            // access, which then ends the process as it would have without us.
            // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf takes a plain integer.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            PAGE.store(p as usize, Ordering::Relaxed);
        }
        // SAFETY: sigaction with valid pointers; the previous action is saved before ours
        // can run (it is read only for signals outside a guarded range).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old);
            let _ = OLD.set(Old(old));
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

/// Run `f`, which reads only `[lo, lo+len)` of a mapping whose owner holds `poison`. Returns
/// `None` when the mapping is (or became, during the call) poisoned: what `f` read is then
/// not the file's data and must be discarded.
pub(crate) fn guarded<R>(
    lo: *const u8,
    len: usize,
    poison: &AtomicBool,
    f: impl FnOnce() -> R,
) -> Option<R> {
    install();
    if poison.load(Ordering::SeqCst) {
        return None;
    }
    let g = Guard {
        lo: lo as usize,
        hi: lo as usize + len,
        poison,
    };
    let prev = CURRENT.with(|c| c.replace(g));
    let r = f();
    CURRENT.with(|c| c.set(prev));
    std::sync::atomic::fence(Ordering::SeqCst);
    if poison.load(Ordering::SeqCst) {
        return None;
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_mapping_truncated_under_a_guarded_read_reports_instead_of_crashing() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 4 * 4096]).unwrap();
        let len = 4 * 4096;
        // SAFETY: a fresh read-only shared mapping of an open file; unmapped below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        } as *const u8;
        assert_ne!(ptr as *mut libc::c_void, libc::MAP_FAILED);
        let poison = AtomicBool::new(false);
        let sum = |p: *const u8| {
            // SAFETY: the range lies inside the mapping.
            let s = unsafe { std::slice::from_raw_parts(p, len) };
            s.iter().map(|&b| b as u64).sum::<u64>()
        };
        assert_eq!(
            guarded(ptr, len, &poison, || sum(ptr)),
            Some(7 * len as u64)
        );
        f.set_len(4096).unwrap();
        // The last three pages are gone: the read faults, is caught, and says so.
        assert_eq!(guarded(ptr, len, &poison, || sum(ptr)), None);
        assert!(poison.load(Ordering::SeqCst));
        // A poisoned mapping stays refused.
        assert_eq!(guarded(ptr, 4096, &poison, || 1), None);
        // SAFETY: exactly what mmap returned.
        unsafe { libc::munmap(ptr as *mut libc::c_void, len) };
    }
}
