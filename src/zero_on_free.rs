//! A global allocator that wipes every block before giving it back. Card
//! data passes through buffers the vault does not own (hyper's read and
//! write buffers, rustls records, serde scratch space); zeroing on free
//! means a freed buffer never keeps a PAN in the heap for a later core,
//! swap or memory disclosure to find. Only the `cardvault` binary installs
//! it (`src/main.rs`); its cost is measured in docs/BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, zeroing each block before it is freed.
pub struct ZeroOnFree;

#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the same arguments, which
// upholds GlobalAlloc's contract; the only addition is in `dealloc`, which
// writes zeros over exactly the `layout.size()` bytes of a block that the
// caller guarantees was allocated by this allocator with `layout` and is no
// longer used, before handing it to `System`. `realloc` is left to the
// trait's default (allocate, copy, `dealloc` the old block), so a moved
// block is wiped as well, which `System.realloc` would not do.
unsafe impl GlobalAlloc for ZeroOnFree {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` points to a live block of `layout.size()` bytes that
        // the caller is giving up, so writing that many bytes stays inside
        // it. LLVM may delete stores to memory that is about to be passed to
        // `free`; `black_box` makes the pointer (and so the zeroed bytes)
        // observed before the free, which keeps the fill.
        unsafe {
            std::ptr::write_bytes(ptr, 0, layout.size());
            std::hint::black_box(ptr);
            System.dealloc(ptr, layout);
        }
    }
}
