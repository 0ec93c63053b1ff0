//! The binary's allocator: the system's, except that an allocation of at
//! least [`HUGE_BYTES_MIN`] is an anonymous mapping made with
//! `MAP_NORESERVE`, whose pages the kernel provides only when first
//! touched.
//!
//! Why: kafka-protocol 0.18 (the Kafka request codec) reserves a vector
//! for the element count an array announces before it reads any element,
//! so a 43-byte request announcing a huge array asks for tens of
//! gigabytes. From the system allocator that fails and Rust aborts the
//! process; as a lazy mapping it succeeds, the decoder touches only the
//! pages of the elements the frame really holds, fails at the frame's end,
//! and the mapping is returned. Nothing in seglog allocates a gigabyte on
//! purpose (records are at most 1 MiB, requests 16 MiB, fetch replies 64
//! MiB), so no other allocation changes. Under strict overcommit
//! (`vm.overcommit_memory=2`) the kernel accounts such mappings anyway and
//! the huge request fails as before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Allocations this large or larger are lazy mappings.
pub const HUGE_BYTES_MIN: usize = 1 << 30;

/// Alignment a fresh mapping always has (the smallest page size).
const MAPPING_ALIGN: usize = 4096;

/// The allocator; `main.rs` installs it with `#[global_allocator]`.
pub struct LazyHuge;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_BYTES_MIN && layout.align() <= MAPPING_ALIGN
}

// SAFETY: every block comes either from `System` (when the layout is not
// huge) or from `mmap` (when it is), and `dealloc`/`realloc` decide which
// by the same `is_huge` test on the layout the caller passes back, which
// `GlobalAlloc`'s contract requires to be the layout of the allocation.
// A mapping is at least `size` bytes, page-aligned (so aligned for any
// alignment up to `MAPPING_ALIGN`), zero-filled, and unmapped exactly once
// with the size it was made with.
unsafe impl GlobalAlloc for LazyHuge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_huge(&layout) {
            // SAFETY: the caller's layout goes to the system allocator as is.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping with no address hint touches
        // no existing memory.
        let mapped = unsafe {
            libc::mmap(
                ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            ptr::null_mut()
        } else {
            mapped.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // SAFETY: as `alloc`; a fresh anonymous mapping reads as zeros.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: the caller's layout goes to the system allocator as is.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            // SAFETY: `block` is a mapping `alloc` made with this size.
            unsafe {
                libc::munmap(block.cast(), layout.size());
            }
        } else {
            // SAFETY: `block` came from `System` with this layout.
            unsafe { System.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc::realloc` requires `new_size`, rounded up
        // to the alignment, not to overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_huge(&layout) && !is_huge(&new_layout) {
            // SAFETY: both sizes are the system allocator's.
            return unsafe { System.realloc(block, layout, new_size) };
        }
        // SAFETY: a new block of the new layout, the overlap copied, the
        // old block freed with its own layout; the two blocks are distinct.
        unsafe {
            let moved = self.alloc(new_layout);
            if !moved.is_null() {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_block_is_lazy_zeroed_and_moves_both_ways() {
        let allocator = LazyHuge;
        let huge = Layout::from_size_align(64 << 30, 8).expect("layout");
        // SAFETY: each block is used within its size and freed once with
        // the layout it has.
        unsafe {
            // 64 GiB: more than this machine's memory, fine as a mapping.
            let block = allocator.alloc(huge);
            assert!(!block.is_null());
            assert_eq!(*block.add(12345), 0);
            *block.add(7) = 9;
            let smaller = allocator.realloc(block, huge, 16);
            assert_eq!(*smaller.add(7), 9);
            let small = Layout::from_size_align(16, 8).expect("layout");
            let bigger = allocator.realloc(smaller, small, HUGE_BYTES_MIN);
            assert_eq!(*bigger.add(7), 9);
            let layout = Layout::from_size_align(HUGE_BYTES_MIN, 8).expect("layout");
            allocator.dealloc(bigger, layout);
        }
    }
}
