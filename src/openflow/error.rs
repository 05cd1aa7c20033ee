//! Errors of the OpenFlow codec: one enum per concern.

use thiserror::Error;

/// Why a byte stream cannot be split into OpenFlow frames.
///
/// A frame that has not fully arrived is *not* an error; see
/// [`crate::openflow::frame::check`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length field is below the 8-byte header size.
    #[error("frame length field {0} is shorter than the 8-byte OpenFlow header")]
    TooShort(usize),
    /// The length field is above [`crate::openflow::frame::MAX_MESSAGE_LEN`].
    #[error("frame length field {len} is over the maximum of {max} bytes")]
    TooLong { len: usize, max: usize },
}

/// Why one whole OpenFlow message could not be decoded. Each variant names the
/// structure (`what`) in which the problem was found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Fewer than 8 bytes were given, so there is no header at all.
    #[error("message of {0} bytes is shorter than the 8-byte OpenFlow header")]
    NoHeader(usize),
    /// The header's length field disagrees with the number of bytes given.
    #[error("header length field says {header} bytes but the message has {actual}")]
    LengthMismatch { header: usize, actual: usize },
    /// A message other than HELLO whose version is not OpenFlow 1.3 (0x04).
    #[error("message type {msg_type} has version {version:#04x}; only OpenFlow 1.3 (0x04) is spoken (HELLO of any version is accepted for negotiation)")]
    UnsupportedVersion { version: u8, msg_type: u8 },
    /// A fixed-size field runs past the end of its enclosing structure.
    #[error("{what}: needs {needed} bytes but only {remaining} remain")]
    Truncated {
        what: &'static str,
        needed: usize,
        remaining: usize,
    },
    /// A length field is smaller than the header it includes.
    #[error("{what}: length {len} is shorter than its {min}-byte header")]
    ShortLength {
        what: &'static str,
        len: usize,
        min: usize,
    },
    /// A length field points past the end of the enclosing structure.
    #[error("{what}: length {len} runs past the {remaining} bytes that remain")]
    Overrun {
        what: &'static str,
        len: usize,
        remaining: usize,
    },
    /// Bytes left over after a fixed-size body.
    #[error("{what}: {extra} unexpected bytes after the body")]
    Trailing { what: &'static str, extra: usize },
    /// A value that is well framed but not valid.
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

/// Why the session layer cannot concatenate two parts of a multipart reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MergeError {
    #[error("cannot merge a {next} multipart reply part into a {current} reply")]
    TypeMismatch { current: &'static str, next: String },
    #[error("{0} multipart replies are a single structure and cannot be split into parts")]
    NotSplittable(&'static str),
}

/// Errors of [`crate::openflow::codec::OfCodec`].
#[derive(Debug, Error)]
pub enum CodecError {
    #[error("I/O error on the OpenFlow connection")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("message of {0} bytes is too long for the 16-bit OpenFlow length field")]
    TooLong(usize),
}
