//! Large scratch buffers recycled through a small process-wide pool.

use std::any::Any;
use std::sync::{Mutex, MutexGuard, PoisonError};

use dml_core::Real;
use rayon::prelude::*;

/// A large scratch buffer (an `n x n` score or gradient matrix) that goes back to a small
/// process-wide pool when dropped, so the next loss evaluation of the same size reuses it.
///
/// A fresh 256 MiB buffer costs 65,536 page faults on first touch (the kernel zeroing every
/// page) and an unmapping when freed: about a tenth of a loss step at n = 8192. The pool keeps
/// at most 3 buffers of at least 1 MiB (smaller ones are cheap to allocate), hands out a buffer only to a request of between half its capacity and its
/// capacity, and is shared by all threads behind a mutex. Results never depend on what a
/// recycled buffer held: [`Scratch::recycled`] is only for buffers written in full.
pub struct Scratch<T: Real> {
    data: Vec<T>,
}

/// Buffers smaller than this are not pooled.
const POOLED_BYTES: usize = 1 << 20;

/// The most buffers the pool keeps (a score matrix and a gradient, and one spare).
const POOL_SLOTS: usize = 3;

/// An idle buffer: a `Vec<T>` of some `Real` type, and its capacity in bytes.
struct Idle {
    buffer: Box<dyn Any + Send>,
    bytes: usize,
}

/// Idle buffers, oldest first.
static POOL: Mutex<Vec<Idle>> = Mutex::new(Vec::new());

fn pool() -> MutexGuard<'static, Vec<Idle>> {
    // A panic while holding the lock leaves the pool's list intact: keep using it.
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Real> Scratch<T> {
    /// `len` values, all zero.
    pub fn zeroed(len: usize) -> Self {
        let mut s = Self::recycled(len);
        s.data.par_iter_mut().for_each(|v| *v = T::zero());
        s
    }

    /// `len` values whose contents are unspecified (zeros or a recycled buffer's values): for
    /// buffers the caller overwrites in full.
    pub fn recycled(len: usize) -> Self {
        if len * std::mem::size_of::<T>() >= POOLED_BYTES {
            let found = {
                let mut idle = pool();
                let fits = |b: &Idle| {
                    b.buffer
                        .downcast_ref::<Vec<T>>()
                        .is_some_and(|v| v.capacity() >= len && v.capacity() / 2 <= len)
                };
                idle.iter().position(fits).map(|k| idle.remove(k))
            };
            if let Some(Ok(mut data)) = found.map(|b| b.buffer.downcast::<Vec<T>>()) {
                data.truncate(len);
                data.resize(len, T::zero());
                return Self { data: *data };
            }
        }
        Self {
            data: vec![T::zero(); len],
        }
    }
}

impl<T: Real> Drop for Scratch<T> {
    fn drop(&mut self) {
        let bytes = self.data.capacity() * std::mem::size_of::<T>();
        if bytes < POOLED_BYTES {
            return;
        }
        let data = std::mem::take(&mut self.data);
        let evicted = {
            let mut idle = pool();
            idle.push(Idle {
                buffer: Box::new(data),
                bytes,
            });
            (idle.len() > POOL_SLOTS).then(|| idle.remove(0))
        };
        // The evicted buffer is freed here, outside the lock.
        drop(evicted);
    }
}

impl<T: Real> Clone for Scratch<T> {
    fn clone(&self) -> Self {
        let mut s = Self::recycled(self.data.len());
        s.data.copy_from_slice(&self.data);
        s
    }
}

impl<T: Real> std::fmt::Debug for Scratch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scratch({} values)", self.data.len())
    }
}

impl<T: Real> std::ops::Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.data
    }
}

impl<T: Real> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.data
    }
}

/// Frees every buffer the [`Scratch`] pool holds and returns how many bytes that was.
///
/// A loss evaluation at a large batch leaves its big buffers pooled for the next one (up to
/// 768 MiB at n = 8192); a process that goes on to something else memory-hungry can give
/// that memory back. The next large evaluation allocates afresh.
///
/// ```
/// use dml_losses::{Batch, ContrastiveLoss, Distance, MatrixRef, MetricLoss, Reducer};
///
/// let (n, d) = (1024, 4);
/// let x: Vec<f32> = (0..n * d).map(|i| (i % 7) as f32).collect();
/// let labels: Vec<i64> = (0..n as i64).map(|i| i / 4).collect();
/// let kernel = ContrastiveLoss::new(Distance::PML_LP_DEFAULT, 0.0, 1.0)?;
/// let loss = MetricLoss::new(kernel, Reducer::AvgNonZero)?;
/// loss.compute(Batch::new(MatrixRef::new(&x, n, d)?, &labels))?;
/// // The 1024 x 1024 score matrix (4 MiB) was pooled; now it is freed.
/// assert!(dml_losses::release_scratch_memory() >= n * n * 4);
/// assert_eq!(dml_losses::release_scratch_memory(), 0);
/// # Ok::<(), dml_losses::Error>(())
/// ```
pub fn release_scratch_memory() -> usize {
    let idle = std::mem::take(&mut *pool());
    idle.iter().map(|b| b.bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pooled buffers come back with the requested length, zeroed when asked, whatever they
    /// held before.
    #[test]
    fn scratch_buffers_are_recycled_clean() {
        let len = (POOLED_BYTES / 4) * 3;
        for round in 0..4 {
            let mut a = Scratch::<f32>::zeroed(len + round);
            assert_eq!(a.len(), len + round);
            assert!(a.iter().all(|&v| v == 0.0));
            a.iter_mut().for_each(|v| *v = 7.0);
            let b = Scratch::<f64>::recycled(len / 2);
            assert_eq!(b.len(), len / 2);
            let c = a.clone();
            assert!(c.iter().all(|&v| v == 7.0));
        }
        assert!(pool().len() <= POOL_SLOTS);
    }
}
