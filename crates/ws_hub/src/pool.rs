//! Drained copy buffers kept per thread for the next burst, so a busy hub allocates nothing per burst while a waiting outbox holds no buffer.
//!
//! Written here rather than taken from a pool crate: it is a bounded
//! free list of `Vec<u8>` in a `thread_local!`, a few lines with no
//! locking, and the sizes are this crate's own.

use std::cell::RefCell;

/// Bytes of drained buffers one thread keeps at most.
pub(crate) const KEEP_BYTES: usize = 4 << 20;
/// A buffer larger than this is freed, not kept.
pub(crate) const KEEP_MAX: usize = 64 << 10;
/// Capacity of a buffer made new (one allocation for the first burst of
/// small frames instead of one per doubling from 66 bytes).
pub(crate) const FIRST: usize = 1024;

#[derive(Default)]
struct Free {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

thread_local! {
    static FREE: RefCell<Free> = RefCell::new(Free::default());
}

/// An empty buffer with room for at least `len` bytes: a kept one when
/// this thread has one, else a new one.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let kept = FREE
        .try_with(|free| {
            let mut free = free.borrow_mut();
            let buffer = free.buffers.pop()?;
            free.bytes -= buffer.capacity();
            Some(buffer)
        })
        .ok()
        .flatten();
    match kept {
        Some(mut buffer) => {
            buffer.reserve(len);
            buffer
        }
        None => Vec::with_capacity(len.max(FIRST)),
    }
}

/// Keeps `buffer` for a later [`take`] on this thread, or frees it when it
/// is too large or the thread keeps [`KEEP_BYTES`] already.
pub(crate) fn give(mut buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    if capacity == 0 || capacity > KEEP_MAX {
        return;
    }
    buffer.clear();
    // A thread being torn down frees instead.
    let _ = FREE.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.bytes + capacity <= KEEP_BYTES {
            free.bytes += capacity;
            free.buffers.push(buffer);
        }
    });
}

/// Bytes this thread keeps (for tests).
#[cfg(test)]
pub(crate) fn kept() -> usize {
    FREE.with(|free| free.borrow().bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_and_the_total_is_bounded() {
        let mut first = take(10);
        assert!(first.capacity() >= FIRST);
        first.extend_from_slice(b"abc");
        let ptr = first.as_ptr();
        give(first);
        assert_eq!(kept(), FIRST);
        let again = take(10);
        assert_eq!(again.as_ptr(), ptr, "the kept buffer is reused");
        assert!(again.is_empty());
        assert_eq!(kept(), 0);

        give(Vec::with_capacity(KEEP_MAX + 1));
        assert_eq!(kept(), 0, "too large: freed");
        for _ in 0..(KEEP_BYTES / KEEP_MAX + 4) {
            give(Vec::with_capacity(KEEP_MAX));
        }
        assert!(kept() <= KEEP_BYTES);
        assert_eq!(kept(), KEEP_BYTES / KEEP_MAX * KEEP_MAX);
    }
}
