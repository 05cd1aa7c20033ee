//! Framing: decide, before parsing anything, whether a whole message is there.
//!
//! Every OpenFlow message starts with the same 8-byte header:
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +---------------+---------------+-------------------------------+
//! |    version    |     type      |     length (incl. header)     |
//! +---------------+---------------+-------------------------------+
//! |                              xid                              |
//! +---------------------------------------------------------------+
//! ```

use super::error::{DecodeError, FrameError};

/// Size of the common OpenFlow header.
pub const HEADER_LEN: usize = 8;
/// The largest message the 16-bit length field can describe.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;

/// The common header of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub msg_type: u8,
    pub length: u16,
    pub xid: u32,
}

impl Header {
    /// Reads a header from the first 8 bytes of `buf`, if there are 8.
    pub fn peek(buf: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            version: h[0],
            msg_type: h[1],
            length: u16::from_be_bytes([h[2], h[3]]),
            xid: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        })
    }
}

/// Checks whether `buf` starts with a whole frame.
///
/// Returns `Ok(Some(len))` with the frame length if it has fully arrived,
/// `Ok(None)` if more bytes are needed (including when not even the header
/// has arrived), and an error if the length field can never be valid (below
/// 8 or above [`MAX_MESSAGE_LEN`]).
pub fn check(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(h) = Header::peek(buf) else {
        return Ok(None);
    };
    let len = usize::from(h.length);
    if len < HEADER_LEN {
        return Err(FrameError::TooShort(len));
    }
    if len > MAX_MESSAGE_LEN {
        // Unreachable with a u16 field, kept so that lowering the maximum is safe.
        return Err(FrameError::TooLong {
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    Ok((buf.len() >= len).then_some(len))
}

/// A bounds-checked big-endian reader over one structure. Every read checks
/// the remaining length first and reports `what` on failure; nothing indexes
/// past a checked length.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                what: self.what,
                needed: n,
                remaining: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(|_| ())
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    /// Peeks a big-endian u16 at `offset` without consuming.
    pub fn peek_u16(&self, offset: usize) -> Result<u16, DecodeError> {
        match self.buf.get(offset..offset + 2) {
            Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
            None => Err(DecodeError::Truncated {
                what: self.what,
                needed: offset + 2,
                remaining: self.buf.len(),
            }),
        }
    }
    /// Splits off a TLV-style element whose `len` (including its header of
    /// `min` bytes) was read from the wire.
    pub fn element(
        &mut self,
        len: usize,
        min: usize,
        what: &'static str,
    ) -> Result<Reader<'a>, DecodeError> {
        if len < min {
            return Err(DecodeError::ShortLength { what, len, min });
        }
        if len > self.buf.len() {
            return Err(DecodeError::Overrun {
                what,
                len,
                remaining: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(Reader::new(head, what))
    }
    /// Fails if bytes are left over.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing {
                what: self.what,
                extra: self.buf.len(),
            })
        }
    }
}

/// Rounds `n` up to a multiple of 8.
pub(crate) fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_header_needs_more() {
        assert_eq!(check(&[]), Ok(None));
        assert_eq!(check(&[4, 0, 0]), Ok(None));
    }

    #[test]
    fn partial_body_needs_more() {
        // version 4, type ECHO_REQUEST, length 12, xid 1, 2 of 4 body bytes
        let b = [4, 2, 0, 12, 0, 0, 0, 1, 0xaa, 0xbb];
        assert_eq!(check(&b), Ok(None));
    }

    #[test]
    fn whole_frame_and_more() {
        let b = [4, 0, 0, 8, 0, 0, 0, 1, 4, 0];
        assert_eq!(check(&b), Ok(Some(8)));
    }

    #[test]
    fn length_below_header_is_error() {
        assert_eq!(
            check(&[4, 0, 0, 7, 0, 0, 0, 1]),
            Err(FrameError::TooShort(7))
        );
        assert_eq!(
            check(&[4, 0, 0, 0, 0, 0, 0, 1]),
            Err(FrameError::TooShort(0))
        );
    }

    #[test]
    fn maximum_length_is_accepted_when_complete() {
        let mut b = vec![0u8; MAX_MESSAGE_LEN];
        b[..4].copy_from_slice(&[4, 2, 0xff, 0xff]);
        assert_eq!(check(&b[..100]), Ok(None));
        assert_eq!(check(&b), Ok(Some(MAX_MESSAGE_LEN)));
    }

    #[test]
    fn reader_reports_where() {
        let mut r = Reader::new(&[1, 2, 3], "thing");
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert_eq!(
            r.u32(),
            Err(DecodeError::Truncated {
                what: "thing",
                needed: 4,
                remaining: 1
            })
        );
    }
}
