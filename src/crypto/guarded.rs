//! Key material in pages excluded from core dumps. [`Guarded<T>`] puts a
//! value (an expanded cipher, a keyed MAC state, raw key bytes) alone on its
//! own page-aligned heap allocation and marks those pages `MADV_DONTDUMP`,
//! so `gcore` and kernel core dumps skip them. Locking against swap is done
//! process-wide by `mlockall` in `serve` (see `hardening`).

use std::ops::{Deref, DerefMut};

/// Page size assumed for alignment (x86-64 and aarch64 Linux base pages).
const PAGE: usize = 4096;

/// `T` alone on page-aligned memory (its size rounds up to whole pages).
#[repr(C, align(4096))]
struct Page<T>(T);

/// A value on pages that core dumps leave out.
pub struct Guarded<T> {
    page: Box<Page<T>>,
}

impl<T> Guarded<T> {
    /// Moves `value` onto its own pages and excludes them from dumps. If the
    /// kernel refuses (not Linux, or an old kernel), the value is still
    /// held; only the exclusion is missing.
    pub fn new(value: T) -> Guarded<T> {
        let page = Box::new(Page(value));
        advise(&page, rustix::mm::Advice::LinuxDontDump);
        Guarded { page }
    }
}

impl<T> Drop for Guarded<T> {
    /// Gives the pages back to dumps before the allocator reuses them, so
    /// freed key pages do not leave the heap split into ever more mappings
    /// (a fuzzer hit `vm.max_map_count` before this). `T`'s own drop (which
    /// wipes key material) runs right after, on the same memory.
    fn drop(&mut self) {
        advise(&self.page, rustix::mm::Advice::LinuxDoDump);
    }
}

#[allow(unsafe_code)]
fn advise<T>(page: &Page<T>, advice: rustix::mm::Advice) {
    let len = std::mem::size_of::<Page<T>>();
    debug_assert!(len.is_multiple_of(PAGE));
    let start = std::ptr::from_ref(page)
        .cast::<std::ffi::c_void>()
        .cast_mut();
    // SAFETY: `start` is the page-aligned start of a live heap allocation
    // of exactly `len` bytes (a multiple of the page size, by `Page`'s
    // alignment), owned by the caller's `Box`. MADV_DONTDUMP and
    // MADV_DODUMP only set or clear a flag on the mappings covering that
    // range: they neither free, move nor change the memory or its
    // protection, so no reference into it is invalidated and no other
    // allocation's contents change.
    let result = unsafe { rustix::mm::madvise(start, len, advice) };
    if let Err(e) = result {
        tracing::debug!(error = %e, "madvise on a key page refused; it stays in dumps");
    }
}

impl<T> Deref for Guarded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.page.0
    }
}

impl<T> DerefMut for Guarded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.page.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_page_aligned_and_readable() {
        let g = Guarded::new([7u8; 32]);
        assert_eq!(std::ptr::from_ref(&*g) as usize % PAGE, 0);
        assert_eq!(*g, [7u8; 32]);
    }

    #[test]
    fn the_pages_are_marked_dontdump() {
        let g = Guarded::new([9u8; 32]);
        let addr = std::ptr::from_ref(&*g) as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        // Find the mapping that holds the page and read its VmFlags.
        let mut inside = false;
        let mut flags = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
                continue;
            }
            if inside && let Some(f) = line.strip_prefix("VmFlags:") {
                flags = Some(f.to_owned());
            }
        }
        let flags = flags.expect("mapping of the guarded page");
        assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
    }
}
