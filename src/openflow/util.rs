//! Small shared pieces: open enums (named values plus `Other`), hex
//! serialisation of raw bytes, MAC addresses.

use serde::{Serialize, Serializer};
use std::fmt;

/// Declares an enum of named wire values with an `Other(raw)` fallback, so
/// that values unknown to us are kept as data rather than rejected.
macro_rules! open_enum {
    ($(#[$m:meta])* pub enum $name:ident : $ty:ty { $($(#[$vm:meta])* $var:ident = $val:expr => $text:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A value with no name here, kept as is.
            Other($ty),
        }
        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                match v {
                    $($val => $name::$var,)*
                    other => $name::Other(other),
                }
            }
        }
        impl From<$name> for $ty {
            fn from(v: $name) -> $ty {
                match v {
                    $($name::$var => $val,)*
                    $name::Other(other) => other,
                }
            }
        }
        impl $name {
            /// The name used by `ovs-ofctl`-style output, if this value has one.
            pub fn name(&self) -> Option<&'static str> {
                match self {
                    $($name::$var => Some($text),)*
                    $name::Other(_) => None,
                }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}", <$ty>::from(*self)),
                }
            }
        }
    };
}
pub(crate) use open_enum;

/// Serialises raw bytes as a lowercase hex string.
pub(crate) fn ser_hex<S: Serializer>(b: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

/// Writes `s` into a NUL-padded fixed-size field of `n` bytes, truncating at
/// a character boundary so that at least one NUL remains (the spec's fields
/// are NUL-terminated C strings).
pub(crate) fn put_fixed_str(dst: &mut bytes::BytesMut, s: &str, n: usize) {
    use bytes::BufMut;
    let b = fit(s, n.saturating_sub(1)).as_bytes();
    dst.put_slice(b);
    dst.put_bytes(0, n - b.len());
}

/// Reads a NUL-padded fixed-size string field of `b.len()` bytes.
///
/// Like Open vSwitch, it keeps at most `len - 1` bytes even when a peer
/// fills the whole field without a terminator, and the lossy UTF-8 result is
/// cut to the same limit. What decodes therefore re-encodes to the same
/// string, which the codec's round-trip property relies on.
pub(crate) fn get_fixed_str(b: &[u8]) -> String {
    let max = b.len().saturating_sub(1);
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len()).min(max);
    let s = String::from_utf8_lossy(&b[..end]);
    fit(&s, max).to_owned()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
fn fit(s: &str, max: usize) -> &str {
    let mut k = s.len().min(max);
    while !s.is_char_boundary(k) {
        k -= 1;
    }
    &s[..k]
}

/// Declares a bit-flags newtype: named constants, `|`, `contains`, and the
/// names of the set bits (unnamed bits are kept in the value).
macro_rules! flags {
    ($(#[$m:meta])* pub struct $name:ident : $ty:ty { $($(#[$vm:meta])* $var:ident = $val:expr => $text:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(pub $ty);
        impl $name {
            $($(#[$vm])* pub const $var: $name = $name($val);)*
            pub const EMPTY: $name = $name(0);
            pub fn bits(self) -> $ty { self.0 }
            pub fn contains(self, other: $name) -> bool { self.0 & other.0 == other.0 }
            /// Names of the set bits, then any unnamed bits in hex.
            pub fn names(self) -> Vec<String> {
                let mut v = Vec::new();
                let mut rest = self.0;
                $(if self.0 & $val != 0 { v.push($text.to_string()); rest &= !$val; })*
                if rest != 0 { v.push(format!("{:#x}", rest)); }
                v
            }
        }
        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, o: $name) -> $name { $name(self.0 | o.0) }
        }
        impl std::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, o: $name) { self.0 |= o.0 }
        }
    };
}
pub(crate) use flags;

/// A wire element that is encoded back to back in a list (actions,
/// instructions): the list helpers below serve every such kind.
pub(crate) trait ListElement: Sized {
    fn parse_one(r: &mut super::frame::Reader<'_>) -> Result<Self, super::DecodeError>;
    fn emit_one(&self, dst: &mut bytes::BytesMut);
    fn len_one(&self) -> usize;
}

/// Parses elements until `r` is exhausted.
pub(crate) fn parse_list<T: ListElement>(
    r: &mut super::frame::Reader<'_>,
) -> Result<Vec<T>, super::DecodeError> {
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(T::parse_one(r)?);
    }
    Ok(v)
}

pub(crate) fn list_len<T: ListElement>(items: &[T]) -> usize {
    items.iter().map(T::len_one).sum()
}

pub(crate) fn emit_list<T: ListElement>(items: &[T], dst: &mut bytes::BytesMut) {
    for i in items {
        i.emit_one(dst);
    }
}
