//! An allocator for fuzz tests that must show a hostile length never turns into a huge
//! allocation: it forwards to the system allocator and remembers, per thread, the largest
//! single request since the last [`reset`]. A test binary installs it with
//! `#[global_allocator] static A: udm_testkit::alloc_peak::PeakAlloc = udm_testkit::alloc_peak::PeakAlloc;`
//! and reads [`peak`] after the code under test ran. Per thread, so tests running in
//! parallel in the same binary do not see each other's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the slot may be gone while the thread is being torn down.
    let _ = PEAK.try_with(|p| {
        if size > p.get() {
            p.set(size);
        }
    });
}

/// Forget the largest allocation seen on this thread.
pub fn reset() {
    let _ = PEAK.try_with(|p| p.set(0));
}

/// The largest single allocation (bytes) on this thread since [`reset`].
pub fn peak() -> usize {
    PEAK.try_with(Cell::get).unwrap_or(0)
}

/// The system allocator, recording each thread's largest request.
pub struct PeakAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds as it does for `System`; `note` only touches a const-
// initialised thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator (that is, `System`) returned,
        // with its layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract; the block came
        // from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
