//! Upstream read buffers, lent per request from a per-thread free list: an idle client
//! connection holds none, and a busy thread allocates none per request.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of a lent buffer.
pub const SIZE: usize = 16 << 10;
/// Buffers kept per thread for reuse.
const KEEP: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for `SIZE` bytes.
pub fn take() -> BytesMut {
    FREE.with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(SIZE))
}

/// Returns a buffer for reuse; one that grew or shrank is dropped instead.
pub fn give(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() != SIZE {
        return;
    }
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < KEEP {
            f.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_empty() {
        let mut a = take();
        a.extend_from_slice(b"left over");
        let ptr = a.as_ptr();
        give(a);
        let b = take();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the same allocation comes back");
        assert!(b.capacity() >= SIZE);
    }
}
