//! Giving the memory of a large answer back to the system.
//!
//! A status answer or a metrics scrape for thousands of VHIDs takes
//! several MiB of heap for a moment (a snapshot per VHID, then its JSON or
//! text). glibc keeps freed heap pages below the top of the heap resident,
//! so each would leave the process that much larger for good;
//! `malloc_trim` returns the free pages wherever they are.

/// An answer larger than this, in bytes, is worth a trim once it is gone.
pub(crate) const LARGE: usize = 64 * 1024;

/// Return the heap's free pages to the system (glibc; nothing elsewhere),
/// on the blocking pool: a trim walks the whole heap, which the runtime
/// thread must not wait for.
pub(crate) fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    drop(tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim takes no pointers and only touches the
        // allocator's own state, under its locks.
        unsafe {
            libc::malloc_trim(0);
        }
    }));
}
