//! Each worker's pool of read buffers: a connection takes one when bytes arrive and gives it
//! back when its request is done, so an idle keep-alive connection holds no buffer and a busy
//! worker allocates none per request.
//!
//! Owned by the worker's [`crate::server::WorkerCtx`] (its connections all run on its
//! thread): no lock, no atomic. At most [`KEEP`] buffers wait in a pool; buffers that grew past
//! [`MAX_KEPT`] (a large pipelined burst) are freed instead of kept.

use std::cell::RefCell;

/// The size a pooled buffer starts with: one read of a request head or body piece.
pub const SIZE: usize = 16 * 1024;
/// Buffers kept per worker (1 MiB at [`SIZE`]): enough for a worker's busy connections at
/// any moment in a keep-alive load; a burst beyond that allocates, and frees when done.
pub const KEEP: usize = 64;
/// A buffer larger than this is not kept.
pub const MAX_KEPT: usize = 4 * SIZE;

/// One worker's read buffers.
#[derive(Debug, Default)]
pub struct Buffers(RefCell<Vec<Vec<u8>>>);

impl Buffers {
    /// An empty buffer with room for at least [`SIZE`] bytes: a pooled one when there is one.
    pub fn take(&self) -> Vec<u8> {
        self.0
            .try_borrow_mut()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_else(|| Vec::with_capacity(SIZE))
    }

    /// Gives a buffer back (its contents are dropped).
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < SIZE || buf.capacity() > MAX_KEPT {
            return;
        }
        buf.clear();
        if let Ok(mut p) = self.0.try_borrow_mut() {
            if p.len() < KEEP {
                p.push(buf);
            }
        }
    }

    /// Buffers waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.0.try_borrow().map_or(0, |p| p.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_within_bounds() {
        let pool = Buffers::default();
        let a = pool.take();
        assert!(a.capacity() >= SIZE);
        let ptr = a.as_ptr();
        pool.give(a);
        assert_eq!(pool.pooled(), 1);
        let b = pool.take();
        assert_eq!(b.as_ptr(), ptr, "the same buffer again");
        assert_eq!(pool.pooled(), 0);
        // Too small or too large: not kept.
        pool.give(Vec::with_capacity(16));
        pool.give(Vec::with_capacity(MAX_KEPT + 1));
        assert_eq!(pool.pooled(), 0);
        for _ in 0..KEEP + 10 {
            pool.give(Vec::with_capacity(SIZE));
        }
        assert_eq!(pool.pooled(), KEEP);
    }
}
