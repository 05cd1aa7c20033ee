//! An OpenFlow 1.3 codec: framing, messages, OXM matches, actions,
//! instructions, meters and multipart statistics. Pure: no I/O, except the
//! [`codec::OfCodec`] adapter for `tokio_util::codec::Framed`.
//!
//! # Layout
//! - [`frame`]: the 8-byte header and [`frame::check`], which decides whether
//!   a whole frame has arrived *before* anything is parsed (a partial frame is
//!   "need more", not an error; a length below 8 is an error).
//! - [`Message`] / [`Body`] (this module): one enum variant per message type,
//!   [`decode`] and [`Message::encode`].
//! - [`oxm`] (matches), [`action`], [`instruction`], [`port`], [`flow_mod`],
//!   [`meter`], [`multipart`] (statistics requests/replies and
//!   [`multipart::Reassembler`]), [`messages`] (the small ones).
//! - [`print`]: an `ovs-ofctl ofp-print`-like text form and `ofp_print` for
//!   hex input; every message type also implements `serde::Serialize`.
//!
//! # Principles
//! - Unknown values are kept as data: unknown message types, multipart types,
//!   OXM fields, actions, instructions, meter bands and HELLO elements decode
//!   into `Unknown { .. }` variants that encode back to the same bytes; unknown
//!   enum values become `Other(n)`.
//! - Every decode error names the structure in which it was found
//!   ([`DecodeError`]); nothing panics on untrusted input.
//! - Versions: a HELLO of any version decodes (its version and bitmap are kept
//!   in [`Hello`] for negotiation). Any other message whose version is not
//!   [`OFP_VERSION`] is [`DecodeError::UnsupportedVersion`]: after negotiation
//!   only 1.3 is spoken, and parsing another version's layout as 1.3 would give
//!   nonsense rather than an error.
//!
//! # Example
//! ```
//! use solive::openflow::*;
//! let fm = FlowMod::add(0, 100, Match::new().in_port(1).eth_type(0x0800),
//!     vec![Instruction::Meter(1), Instruction::ApplyActions(vec![Action::output(2)])]);
//! let msg = Message { xid: 5, body: Body::FlowMod(fm) };
//! let bytes = msg.to_bytes();
//! assert_eq!(decode(&bytes).unwrap(), msg);
//! ```

pub mod action;
pub mod codec;
pub mod error;
pub mod flow_mod;
pub mod frame;
pub mod instruction;
pub mod messages;
pub mod meter;
pub mod multipart;
pub mod oxm;
pub mod port;
pub mod print;
mod util;

#[cfg(test)]
mod tests;

pub use action::Action;
pub use codec::OfCodec;
pub use error::{CodecError, DecodeError, FrameError, MergeError};
pub use flow_mod::{FlowMod, FlowModCommand, FlowModFlags, FlowRemoved, FlowRemovedReason};
pub use frame::{Header, MAX_MESSAGE_LEN};
pub use instruction::Instruction;
pub use messages::{
    ControllerRole, ErrorCode, ErrorMsg, ErrorType, Hello, HelloElement, PacketIn, PacketInReason,
    Role, SwitchConfig, SwitchFeatures,
};
pub use meter::{MeterBand, MeterCommand, MeterFlags, MeterMod};
pub use multipart::{
    FlowStatsRequest, MultipartReply, MultipartReplyBody, MultipartRequest, MultipartRequestBody,
    Reassembler,
};
pub use oxm::{Match, OxmField};
pub use port::{Port, PortReason, PortStatus};
pub use util::MacAddr;

use bytes::{BufMut, Bytes, BytesMut};
use frame::{Reader, HEADER_LEN};
use serde::Serialize;

/// The OpenFlow version spoken: 1.3.
pub const OFP_VERSION: u8 = 0x04;

/// Message type numbers (`ofp_type`).
pub mod msg_type {
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const ECHO_REQUEST: u8 = 2;
    pub const ECHO_REPLY: u8 = 3;
    pub const EXPERIMENTER: u8 = 4;
    pub const FEATURES_REQUEST: u8 = 5;
    pub const FEATURES_REPLY: u8 = 6;
    pub const GET_CONFIG_REQUEST: u8 = 7;
    pub const GET_CONFIG_REPLY: u8 = 8;
    pub const SET_CONFIG: u8 = 9;
    pub const PACKET_IN: u8 = 10;
    pub const FLOW_REMOVED: u8 = 11;
    pub const PORT_STATUS: u8 = 12;
    pub const PACKET_OUT: u8 = 13;
    pub const FLOW_MOD: u8 = 14;
    pub const GROUP_MOD: u8 = 15;
    pub const PORT_MOD: u8 = 16;
    pub const TABLE_MOD: u8 = 17;
    pub const MULTIPART_REQUEST: u8 = 18;
    pub const MULTIPART_REPLY: u8 = 19;
    pub const BARRIER_REQUEST: u8 = 20;
    pub const BARRIER_REPLY: u8 = 21;
    pub const ROLE_REQUEST: u8 = 24;
    pub const ROLE_REPLY: u8 = 25;
    pub const METER_MOD: u8 = 29;
}

/// One OpenFlow message: the header's xid and the typed body (the version,
/// type and length of the header follow from the body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub xid: u32,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Body {
    Hello(Hello),
    Error(ErrorMsg),
    EchoRequest(#[serde(serialize_with = "util::ser_hex")] Bytes),
    EchoReply(#[serde(serialize_with = "util::ser_hex")] Bytes),
    FeaturesRequest,
    FeaturesReply(SwitchFeatures),
    GetConfigRequest,
    GetConfigReply(SwitchConfig),
    SetConfig(SwitchConfig),
    PacketIn(PacketIn),
    FlowRemoved(FlowRemoved),
    PortStatus(PortStatus),
    FlowMod(FlowMod),
    MultipartRequest(MultipartRequest),
    MultipartReply(MultipartReply),
    BarrierRequest,
    BarrierReply,
    RoleRequest(Role),
    RoleReply(Role),
    MeterMod(MeterMod),
    /// Any other message type (PACKET_OUT, GROUP_MOD, experimenter, ...):
    /// the bytes after the header.
    Unknown {
        msg_type: u8,
        #[serde(serialize_with = "util::ser_hex")]
        payload: Bytes,
    },
}

impl Body {
    /// The `ofp_type` number.
    pub fn msg_type(&self) -> u8 {
        use msg_type as t;
        match self {
            Body::Hello(_) => t::HELLO,
            Body::Error(_) => t::ERROR,
            Body::EchoRequest(_) => t::ECHO_REQUEST,
            Body::EchoReply(_) => t::ECHO_REPLY,
            Body::FeaturesRequest => t::FEATURES_REQUEST,
            Body::FeaturesReply(_) => t::FEATURES_REPLY,
            Body::GetConfigRequest => t::GET_CONFIG_REQUEST,
            Body::GetConfigReply(_) => t::GET_CONFIG_REPLY,
            Body::SetConfig(_) => t::SET_CONFIG,
            Body::PacketIn(_) => t::PACKET_IN,
            Body::FlowRemoved(_) => t::FLOW_REMOVED,
            Body::PortStatus(_) => t::PORT_STATUS,
            Body::FlowMod(_) => t::FLOW_MOD,
            Body::MultipartRequest(_) => t::MULTIPART_REQUEST,
            Body::MultipartReply(_) => t::MULTIPART_REPLY,
            Body::BarrierRequest => t::BARRIER_REQUEST,
            Body::BarrierReply => t::BARRIER_REPLY,
            Body::RoleRequest(_) => t::ROLE_REQUEST,
            Body::RoleReply(_) => t::ROLE_REPLY,
            Body::MeterMod(_) => t::METER_MOD,
            Body::Unknown { msg_type, .. } => *msg_type,
        }
    }

    /// Whether this is a reply that completes a request with the same xid
    /// (an ERROR also ends a request; a multipart reply part with
    /// [`multipart::REPLY_MORE`] does not).
    pub fn is_reply_to_request(&self) -> bool {
        match self {
            Body::Error(_)
            | Body::EchoReply(_)
            | Body::FeaturesReply(_)
            | Body::GetConfigReply(_)
            | Body::BarrierReply
            | Body::RoleReply(_) => true,
            Body::MultipartReply(r) => !r.more(),
            _ => false,
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            Body::Hello(h) => h.buffer_len(),
            Body::Error(e) => e.buffer_len(),
            Body::EchoRequest(b) | Body::EchoReply(b) => b.len(),
            Body::FeaturesRequest
            | Body::GetConfigRequest
            | Body::BarrierRequest
            | Body::BarrierReply => 0,
            Body::FeaturesReply(f) => f.buffer_len(),
            Body::GetConfigReply(c) | Body::SetConfig(c) => c.buffer_len(),
            Body::PacketIn(p) => p.buffer_len(),
            Body::FlowRemoved(f) => f.buffer_len(),
            Body::PortStatus(p) => p.buffer_len(),
            Body::FlowMod(f) => f.buffer_len(),
            Body::MultipartRequest(m) => m.buffer_len(),
            Body::MultipartReply(m) => m.buffer_len(),
            Body::RoleRequest(r) | Body::RoleReply(r) => r.buffer_len(),
            Body::MeterMod(m) => m.buffer_len(),
            Body::Unknown { payload, .. } => payload.len(),
        }
    }

    fn emit(&self, dst: &mut BytesMut) {
        match self {
            Body::Hello(h) => h.emit(dst),
            Body::Error(e) => e.emit(dst),
            Body::EchoRequest(b) | Body::EchoReply(b) => dst.put_slice(b),
            Body::FeaturesRequest
            | Body::GetConfigRequest
            | Body::BarrierRequest
            | Body::BarrierReply => {}
            Body::FeaturesReply(f) => f.emit(dst),
            Body::GetConfigReply(c) | Body::SetConfig(c) => c.emit(dst),
            Body::PacketIn(p) => p.emit(dst),
            Body::FlowRemoved(f) => f.emit(dst),
            Body::PortStatus(p) => p.emit(dst),
            Body::FlowMod(f) => f.emit(dst),
            Body::MultipartRequest(m) => m.emit(dst),
            Body::MultipartReply(m) => m.emit(dst),
            Body::RoleRequest(r) | Body::RoleReply(r) => r.emit(dst),
            Body::MeterMod(m) => m.emit(dst),
            Body::Unknown { payload, .. } => dst.put_slice(payload),
        }
    }
}

impl Message {
    pub fn new(xid: u32, body: Body) -> Self {
        Message { xid, body }
    }

    /// The version written in the header: the HELLO's own version, otherwise 1.3.
    pub fn version(&self) -> u8 {
        match &self.body {
            Body::Hello(h) => h.version,
            _ => OFP_VERSION,
        }
    }

    /// Length on the wire, header included.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body.buffer_len()
    }

    /// Appends the encoded message to `dst`. A message longer than
    /// [`MAX_MESSAGE_LEN`] cannot be represented; [`OfCodec`] rejects it, and
    /// here the length field is then meaningless (check [`Self::buffer_len`]).
    pub fn encode(&self, dst: &mut BytesMut) {
        let len = self.buffer_len();
        dst.reserve(len);
        dst.put_u8(self.version());
        dst.put_u8(self.body.msg_type());
        dst.put_u16(len as u16);
        dst.put_u32(self.xid);
        self.body.emit(dst);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.buffer_len());
        self.encode(&mut b);
        b.freeze()
    }
}

/// Decodes exactly one whole message (as delimited by [`frame::check`]).
pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
    let h = Header::peek(frame).ok_or(DecodeError::NoHeader(frame.len()))?;
    let len = usize::from(h.length);
    if len < HEADER_LEN {
        return Err(FrameError::TooShort(len).into());
    }
    if len != frame.len() {
        return Err(DecodeError::LengthMismatch {
            header: len,
            actual: frame.len(),
        });
    }
    let mut r = Reader::new(&frame[HEADER_LEN..], "message body");
    use msg_type as t;
    if h.msg_type == t::HELLO {
        return Ok(Message {
            xid: h.xid,
            body: Body::Hello(Hello::parse(h.version, &mut r)?),
        });
    }
    if h.version != OFP_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            version: h.version,
            msg_type: h.msg_type,
        });
    }
    let empty = |r: &mut Reader<'_>, what: &'static str| {
        r.what = what;
        r.finish()
    };
    let body = match h.msg_type {
        t::ERROR => Body::Error(ErrorMsg::parse(&mut r)?),
        t::ECHO_REQUEST => Body::EchoRequest(Bytes::copy_from_slice(r.rest())),
        t::ECHO_REPLY => Body::EchoReply(Bytes::copy_from_slice(r.rest())),
        t::FEATURES_REQUEST => {
            empty(&mut r, "features_request")?;
            Body::FeaturesRequest
        }
        t::FEATURES_REPLY => Body::FeaturesReply(SwitchFeatures::parse(&mut r)?),
        t::GET_CONFIG_REQUEST => {
            empty(&mut r, "get_config_request")?;
            Body::GetConfigRequest
        }
        t::GET_CONFIG_REPLY => {
            Body::GetConfigReply(SwitchConfig::parse(&mut r, "get_config_reply")?)
        }
        t::SET_CONFIG => Body::SetConfig(SwitchConfig::parse(&mut r, "set_config")?),
        t::PACKET_IN => Body::PacketIn(PacketIn::parse(&mut r)?),
        t::FLOW_REMOVED => Body::FlowRemoved(FlowRemoved::parse(&mut r)?),
        t::PORT_STATUS => {
            r.what = "port_status";
            Body::PortStatus(PortStatus::parse(&mut r)?)
        }
        t::FLOW_MOD => Body::FlowMod(FlowMod::parse(&mut r)?),
        t::MULTIPART_REQUEST => Body::MultipartRequest(MultipartRequest::parse(&mut r)?),
        t::MULTIPART_REPLY => Body::MultipartReply(MultipartReply::parse(&mut r)?),
        t::BARRIER_REQUEST => {
            empty(&mut r, "barrier_request")?;
            Body::BarrierRequest
        }
        t::BARRIER_REPLY => {
            empty(&mut r, "barrier_reply")?;
            Body::BarrierReply
        }
        t::ROLE_REQUEST => Body::RoleRequest(Role::parse(&mut r, "role_request")?),
        t::ROLE_REPLY => Body::RoleReply(Role::parse(&mut r, "role_reply")?),
        t::METER_MOD => Body::MeterMod(MeterMod::parse(&mut r)?),
        other => Body::Unknown {
            msg_type: other,
            payload: Bytes::copy_from_slice(r.rest()),
        },
    };
    Ok(Message { xid: h.xid, body })
}
