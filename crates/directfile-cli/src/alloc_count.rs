//! A counting global allocator: wraps `System` and counts every allocation with relaxed atomics,
//! so the bench can report allocations per operation during its measured phase.
#![allow(unsafe_code)]
// Clippy (1.96) reports `THREAD_ALLOCATIONS`'s initialiser as not `const` when it checks the
// windows-gnu target, whose `thread_local!` expands differently; it is `const` (on Linux the
// lint passes), and the lint cannot be allowed on the macro invocation itself.
#![cfg_attr(windows, allow(clippy::missing_const_for_thread_local))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised and without a destructor: accessing it never allocates, so it is usable
    // from inside the allocator.
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    let _ = THREAD_ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

/// Forwards to [`System`], counting `alloc`, `alloc_zeroed` and `realloc` calls.
pub struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; the counter has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (non-zero size layout),
        // which is the same contract `System.alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as `alloc`, forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` was returned by `System` with `layout`; the caller guarantees
        // `new_size` is non-zero and does not overflow when rounded to `layout.align()`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (including reallocations) made by the whole process so far.
pub fn allocation_count() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Allocations made by the calling thread so far (tests use it to ignore other threads).
#[cfg(test)]
pub fn thread_allocation_count() -> u64 {
    THREAD_ALLOCATIONS.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_an_allocation() {
        let before = allocation_count();
        let thread_before = thread_allocation_count();
        let boxed = std::hint::black_box(Box::new([7u8; 64]));
        assert!(allocation_count() > before);
        assert_eq!(thread_allocation_count(), thread_before + 1);
        assert_eq!(boxed[63], 7);
    }
}
