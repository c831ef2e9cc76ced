//! Per-thread scratch buffers for im2col tiles, reused from call to call.
//!
//! A training step converts thousands of tiles; allocating each one would hand the allocator
//! (and for large tiles the kernel's page-fault path) the same work every step.

use std::cell::RefCell;

/// Buffers kept per thread: a backward tile needs two at once.
const KEPT: usize = 2;

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a zeroed buffer of `len` floats taken from this thread's free list.
pub(crate) fn with_buffer<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buffer = FREE
        .with(|free| free.borrow_mut().pop())
        .unwrap_or_default();
    buffer.clear();
    buffer.resize(len, 0.0);
    let result = f(&mut buffer);
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEPT {
            free.push(buffer);
        }
    });
    result
}
