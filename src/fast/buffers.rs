//! Buffers lent per request from per-thread free lists: upstream read buffers and the buffers
//! heads are written into. An idle client connection holds none, and a busy thread allocates
//! none per request.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of a lent upstream buffer: a response head and a small body, what most responses
/// are; a body that fills it is read on in `BODY` pieces (the grown buffer is then not kept).
pub const SIZE: usize = 4 << 10;
/// Reads of a body that fills `SIZE`.
pub const BODY: usize = 16 << 10;
/// Buffers kept per thread for reuse.
const KEEP: usize = 64;

/// The room a lent head buffer starts with.
const HEAD: usize = 1024;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static FREE_HEADS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer to write a head into.
pub fn take_vec() -> Vec<u8> {
    FREE_HEADS
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(HEAD))
}

/// Returns a head buffer for reuse; a large one is dropped instead.
pub fn give_vec(mut buf: Vec<u8>) {
    buf.clear();
    if buf.capacity() < HEAD || buf.capacity() > 16 * HEAD {
        return;
    }
    FREE_HEADS.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < KEEP {
            f.push(buf);
        }
    });
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
