//! The allocator setting of the `dml` process: freed memory stays in the process.
//!
//! A training step frees and allocates the same activations every step (the small convnet's
//! first layer: 25 MB each). With glibc's defaults those blocks are served by `mmap` and
//! returned by `munmap` or trimmed, so every step maps them afresh and the kernel zeroes them
//! page by page: 513,000 page faults and 1.4 s of system time in 30 steps of `dml bench train
//! --single small-conv-net dml`, a fifth of the step. With the settings below the blocks are
//! reused from the heap: 23,000 faults, 0.09 s (docs/benchmarks.md, "Allocation").
//! jemalloc (tikv-jemallocator 0.6, also with `oversize_threshold:0`) was measured too and
//! kept the faults (690,000), so dml keeps glibc's allocator and tunes it.

/// Largest block glibc serves from its heaps instead of `mmap` (its ceiling on 64-bit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Keeps freed memory for reuse: blocks up to 32 MiB come from the heap, and free memory at
/// the top of a heap is returned to the system only beyond 2 GiB. Call once, first in `main`.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes glibc's allocation parameters; it is called before any
    // other thread exists, and a rejected value leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
