//! `tokio_util::codec` adapter: frames a byte stream into [`Message`]s.

use super::error::CodecError;
use super::frame::{self, MAX_MESSAGE_LEN};
use super::{decode, Message};
use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

/// OpenFlow 1.3 codec for `Framed<TcpStream, OfCodec>`.
///
/// A frame error (a length field below 8) leaves the stream unsynchronised,
/// so the connection should be closed. A decode error consumes its frame,
/// so the caller may log it and keep reading.
#[derive(Debug, Default, Clone, Copy)]
pub struct OfCodec;

impl Decoder for OfCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        match frame::check(src)? {
            None => {
                // Reserve for the rest of the frame once its length is known.
                if let Some(h) = frame::Header::peek(src) {
                    src.reserve(usize::from(h.length).saturating_sub(src.len()));
                }
                Ok(None)
            }
            Some(len) => {
                let f = src.split_to(len);
                Ok(Some(decode(&f)?))
            }
        }
    }
}

impl Encoder<Message> for OfCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        let len = item.buffer_len();
        if len > MAX_MESSAGE_LEN {
            return Err(CodecError::TooLong(len));
        }
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openflow::Body;

    #[test]
    fn decodes_stream_in_pieces() {
        let a = Message::new(1, Body::EchoRequest(bytes::Bytes::from_static(b"hi")));
        let b = Message::new(2, Body::BarrierRequest);
        let mut wire = BytesMut::new();
        let mut c = OfCodec;
        c.encode(a.clone(), &mut wire).unwrap();
        c.encode(b.clone(), &mut wire).unwrap();
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire.iter() {
            src.extend_from_slice(&[*byte]);
            while let Some(m) = c.decode(&mut src).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, vec![a, b]);
        assert!(src.is_empty());
    }

    #[test]
    fn bad_length_is_an_error() {
        let mut src = BytesMut::from(&[4u8, 2, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(
            OfCodec.decode(&mut src),
            Err(CodecError::Frame(_))
        ));
    }

    #[test]
    fn too_long_is_rejected() {
        let m = Message::new(1, Body::EchoRequest(vec![0u8; MAX_MESSAGE_LEN].into()));
        assert!(matches!(
            OfCodec.encode(m, &mut BytesMut::new()),
            Err(CodecError::TooLong(_))
        ));
    }
}
