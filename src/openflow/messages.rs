//! The small messages: HELLO, ERROR, FEATURES_REPLY, SWITCH_CONFIG, ROLE,
//! PACKET_IN.

use super::error::DecodeError;
use super::frame::{pad8, Reader};
use super::oxm::Match;
use super::util::{open_enum, ser_hex};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// `OFPHET_VERSIONBITMAP`.
pub const HELLO_ELEM_VERSIONBITMAP: u16 = 1;

/// One HELLO element.
///
/// ```text
/// +-------------------------------+-------------------------------+
/// | type (16)                     | length (16, no padding)       |
/// +-------------------------------+-------------------------------+
/// | versionbitmap: bitmaps (32) ... | pad to 8                    |
/// +---------------------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum HelloElement {
    /// Bit `n` of the concatenated bitmaps set: version `n` is supported.
    VersionBitmap(Vec<u32>),
    Unknown {
        element_type: u16,
        #[serde(serialize_with = "ser_hex")]
        data: Bytes,
    },
}

impl HelloElement {
    fn unpadded_len(&self) -> usize {
        match self {
            HelloElement::VersionBitmap(b) => 4 + 4 * b.len(),
            HelloElement::Unknown { data, .. } => 4 + data.len(),
        }
    }
}

/// HELLO. Unlike other messages, a HELLO of any version is decoded, and its
/// header version is kept here for version negotiation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hello {
    /// The version in the header: the highest version the sender speaks.
    pub version: u8,
    pub elements: Vec<HelloElement>,
}

impl Default for Hello {
    fn default() -> Self {
        Hello::new()
    }
}

impl Hello {
    /// An OpenFlow 1.3 HELLO with a version bitmap of just 1.3.
    pub fn new() -> Self {
        Hello {
            version: super::OFP_VERSION,
            elements: vec![HelloElement::VersionBitmap(vec![1 << super::OFP_VERSION])],
        }
    }

    /// Whether the peer speaks `version`: from the version bitmap if there is
    /// one, otherwise every version up to the header version (OpenFlow 1.3.1
    /// section 6.3.1).
    pub fn supports(&self, version: u8) -> bool {
        for e in &self.elements {
            if let HelloElement::VersionBitmap(b) = e {
                let (word, bit) = (usize::from(version / 32), version % 32);
                return b.get(word).is_some_and(|w| w & (1 << bit) != 0);
            }
        }
        version <= self.version
    }

    pub fn buffer_len(&self) -> usize {
        self.elements.iter().map(|e| pad8(e.unpadded_len())).sum()
    }

    pub fn emit(&self, dst: &mut BytesMut) {
        for e in &self.elements {
            let len = e.unpadded_len();
            match e {
                HelloElement::VersionBitmap(b) => {
                    dst.put_u16(HELLO_ELEM_VERSIONBITMAP);
                    dst.put_u16(len as u16);
                    for w in b {
                        dst.put_u32(*w);
                    }
                }
                HelloElement::Unknown { element_type, data } => {
                    dst.put_u16(*element_type);
                    dst.put_u16(len as u16);
                    dst.put_slice(data);
                }
            }
            dst.put_bytes(0, pad8(len) - len);
        }
    }

    pub(crate) fn parse(version: u8, r: &mut Reader<'_>) -> Result<Hello, DecodeError> {
        r.what = "hello";
        let mut elements = Vec::new();
        while !r.is_empty() {
            let typ = r.peek_u16(0)?;
            let len = usize::from(r.peek_u16(2)?);
            let mut e = r.element(len, 4, "hello element")?;
            e.skip(4)?;
            if typ == HELLO_ELEM_VERSIONBITMAP {
                e.what = "hello versionbitmap";
                if e.remaining() % 4 != 0 {
                    return Err(DecodeError::Invalid {
                        what: "hello versionbitmap",
                        detail: format!("length {len} is not 4 plus a multiple of 4"),
                    });
                }
                let mut b = Vec::new();
                while !e.is_empty() {
                    b.push(e.u32()?);
                }
                elements.push(HelloElement::VersionBitmap(b));
            } else {
                elements.push(HelloElement::Unknown {
                    element_type: typ,
                    data: Bytes::copy_from_slice(e.rest()),
                });
            }
            // Padding; tolerated when missing at the end.
            let pad = (pad8(len) - len).min(r.remaining());
            r.skip(pad)?;
        }
        Ok(Hello { version, elements })
    }
}

open_enum! {
    pub enum ErrorType: u16 {
        HelloFailed = 0 => "OFPET_HELLO_FAILED",
        BadRequest = 1 => "OFPET_BAD_REQUEST",
        BadAction = 2 => "OFPET_BAD_ACTION",
        BadInstruction = 3 => "OFPET_BAD_INSTRUCTION",
        BadMatch = 4 => "OFPET_BAD_MATCH",
        FlowModFailed = 5 => "OFPET_FLOW_MOD_FAILED",
        GroupModFailed = 6 => "OFPET_GROUP_MOD_FAILED",
        PortModFailed = 7 => "OFPET_PORT_MOD_FAILED",
        TableModFailed = 8 => "OFPET_TABLE_MOD_FAILED",
        QueueOpFailed = 9 => "OFPET_QUEUE_OP_FAILED",
        SwitchConfigFailed = 10 => "OFPET_SWITCH_CONFIG_FAILED",
        RoleRequestFailed = 11 => "OFPET_ROLE_REQUEST_FAILED",
        MeterModFailed = 12 => "OFPET_METER_MOD_FAILED",
        TableFeaturesFailed = 13 => "OFPET_TABLE_FEATURES_FAILED",
        Experimenter = 0xffff => "OFPET_EXPERIMENTER",
    }
}

open_enum! {
    pub enum HelloFailedCode: u16 { Incompatible = 0 => "OFPHFC_INCOMPATIBLE", EPerm = 1 => "OFPHFC_EPERM" }
}
open_enum! {
    pub enum BadRequestCode: u16 {
        BadVersion = 0 => "OFPBRC_BAD_VERSION", BadType = 1 => "OFPBRC_BAD_TYPE",
        BadMultipart = 2 => "OFPBRC_BAD_MULTIPART", BadExperimenter = 3 => "OFPBRC_BAD_EXPERIMENTER",
        BadExpType = 4 => "OFPBRC_BAD_EXP_TYPE", EPerm = 5 => "OFPBRC_EPERM", BadLen = 6 => "OFPBRC_BAD_LEN",
        BufferEmpty = 7 => "OFPBRC_BUFFER_EMPTY", BufferUnknown = 8 => "OFPBRC_BUFFER_UNKNOWN",
        BadTableId = 9 => "OFPBRC_BAD_TABLE_ID", IsSlave = 10 => "OFPBRC_IS_SLAVE", BadPort = 11 => "OFPBRC_BAD_PORT",
        BadPacket = 12 => "OFPBRC_BAD_PACKET", MultipartBufferOverflow = 13 => "OFPBRC_MULTIPART_BUFFER_OVERFLOW",
    }
}
open_enum! {
    pub enum BadActionCode: u16 {
        BadType = 0 => "OFPBAC_BAD_TYPE", BadLen = 1 => "OFPBAC_BAD_LEN", BadExperimenter = 2 => "OFPBAC_BAD_EXPERIMENTER",
        BadExpType = 3 => "OFPBAC_BAD_EXP_TYPE", BadOutPort = 4 => "OFPBAC_BAD_OUT_PORT", BadArgument = 5 => "OFPBAC_BAD_ARGUMENT",
        EPerm = 6 => "OFPBAC_EPERM", TooMany = 7 => "OFPBAC_TOO_MANY", BadQueue = 8 => "OFPBAC_BAD_QUEUE",
        BadOutGroup = 9 => "OFPBAC_BAD_OUT_GROUP", MatchInconsistent = 10 => "OFPBAC_MATCH_INCONSISTENT",
        UnsupportedOrder = 11 => "OFPBAC_UNSUPPORTED_ORDER", BadTag = 12 => "OFPBAC_BAD_TAG",
        BadSetType = 13 => "OFPBAC_BAD_SET_TYPE", BadSetLen = 14 => "OFPBAC_BAD_SET_LEN", BadSetArgument = 15 => "OFPBAC_BAD_SET_ARGUMENT",
    }
}
open_enum! {
    pub enum BadInstructionCode: u16 {
        UnknownInst = 0 => "OFPBIC_UNKNOWN_INST", UnsupInst = 1 => "OFPBIC_UNSUP_INST", BadTableId = 2 => "OFPBIC_BAD_TABLE_ID",
        UnsupMetadata = 3 => "OFPBIC_UNSUP_METADATA", UnsupMetadataMask = 4 => "OFPBIC_UNSUP_METADATA_MASK",
        BadExperimenter = 5 => "OFPBIC_BAD_EXPERIMENTER", BadExpType = 6 => "OFPBIC_BAD_EXP_TYPE", BadLen = 7 => "OFPBIC_BAD_LEN",
        EPerm = 8 => "OFPBIC_EPERM",
    }
}
open_enum! {
    pub enum BadMatchCode: u16 {
        BadType = 0 => "OFPBMC_BAD_TYPE", BadLen = 1 => "OFPBMC_BAD_LEN", BadTag = 2 => "OFPBMC_BAD_TAG",
        BadDlAddrMask = 3 => "OFPBMC_BAD_DL_ADDR_MASK", BadNwAddrMask = 4 => "OFPBMC_BAD_NW_ADDR_MASK",
        BadWildcards = 5 => "OFPBMC_BAD_WILDCARDS", BadField = 6 => "OFPBMC_BAD_FIELD", BadValue = 7 => "OFPBMC_BAD_VALUE",
        BadMask = 8 => "OFPBMC_BAD_MASK", BadPrereq = 9 => "OFPBMC_BAD_PREREQ", DupField = 10 => "OFPBMC_DUP_FIELD",
        EPerm = 11 => "OFPBMC_EPERM",
    }
}
open_enum! {
    pub enum FlowModFailedCode: u16 {
        Unknown = 0 => "OFPFMFC_UNKNOWN", TableFull = 1 => "OFPFMFC_TABLE_FULL", BadTableId = 2 => "OFPFMFC_BAD_TABLE_ID",
        Overlap = 3 => "OFPFMFC_OVERLAP", EPerm = 4 => "OFPFMFC_EPERM", BadTimeout = 5 => "OFPFMFC_BAD_TIMEOUT",
        BadCommand = 6 => "OFPFMFC_BAD_COMMAND", BadFlags = 7 => "OFPFMFC_BAD_FLAGS",
    }
}
open_enum! {
    pub enum SwitchConfigFailedCode: u16 { BadFlags = 0 => "OFPSCFC_BAD_FLAGS", BadLen = 1 => "OFPSCFC_BAD_LEN", EPerm = 2 => "OFPSCFC_EPERM" }
}
open_enum! {
    pub enum RoleRequestFailedCode: u16 { Stale = 0 => "OFPRRFC_STALE", Unsup = 1 => "OFPRRFC_UNSUP", BadRole = 2 => "OFPRRFC_BAD_ROLE" }
}
open_enum! {
    pub enum MeterModFailedCode: u16 {
        Unknown = 0 => "OFPMMFC_UNKNOWN", MeterExists = 1 => "OFPMMFC_METER_EXISTS", InvalidMeter = 2 => "OFPMMFC_INVALID_METER",
        UnknownMeter = 3 => "OFPMMFC_UNKNOWN_METER", BadCommand = 4 => "OFPMMFC_BAD_COMMAND", BadFlags = 5 => "OFPMMFC_BAD_FLAGS",
        BadRate = 6 => "OFPMMFC_BAD_RATE", BadBurst = 7 => "OFPMMFC_BAD_BURST", BadBand = 8 => "OFPMMFC_BAD_BAND",
        BadBandValue = 9 => "OFPMMFC_BAD_BAND_VALUE", OutOfMeters = 10 => "OFPMMFC_OUT_OF_METERS", OutOfBands = 11 => "OFPMMFC_OUT_OF_BANDS",
    }
}

/// The (type, code) pair of an ERROR, with the code decoded per type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    HelloFailed(HelloFailedCode),
    BadRequest(BadRequestCode),
    BadAction(BadActionCode),
    BadInstruction(BadInstructionCode),
    BadMatch(BadMatchCode),
    FlowModFailed(FlowModFailedCode),
    SwitchConfigFailed(SwitchConfigFailedCode),
    RoleRequestFailed(RoleRequestFailedCode),
    MeterModFailed(MeterModFailedCode),
    /// A type whose codes are not named here (including experimenter, where
    /// `code` is the experimenter's exp_type).
    Other {
        err_type: ErrorType,
        code: u16,
    },
}

impl ErrorCode {
    pub fn from_wire(t: u16, c: u16) -> ErrorCode {
        match ErrorType::from(t) {
            ErrorType::HelloFailed => ErrorCode::HelloFailed(c.into()),
            ErrorType::BadRequest => ErrorCode::BadRequest(c.into()),
            ErrorType::BadAction => ErrorCode::BadAction(c.into()),
            ErrorType::BadInstruction => ErrorCode::BadInstruction(c.into()),
            ErrorType::BadMatch => ErrorCode::BadMatch(c.into()),
            ErrorType::FlowModFailed => ErrorCode::FlowModFailed(c.into()),
            ErrorType::SwitchConfigFailed => ErrorCode::SwitchConfigFailed(c.into()),
            ErrorType::RoleRequestFailed => ErrorCode::RoleRequestFailed(c.into()),
            ErrorType::MeterModFailed => ErrorCode::MeterModFailed(c.into()),
            other => ErrorCode::Other {
                err_type: other,
                code: c,
            },
        }
    }
    /// The (type, code) numbers on the wire.
    pub fn to_wire(self) -> (u16, u16) {
        match self {
            ErrorCode::HelloFailed(c) => (0, c.into()),
            ErrorCode::BadRequest(c) => (1, c.into()),
            ErrorCode::BadAction(c) => (2, c.into()),
            ErrorCode::BadInstruction(c) => (3, c.into()),
            ErrorCode::BadMatch(c) => (4, c.into()),
            ErrorCode::FlowModFailed(c) => (5, c.into()),
            ErrorCode::SwitchConfigFailed(c) => (10, c.into()),
            ErrorCode::RoleRequestFailed(c) => (11, c.into()),
            ErrorCode::MeterModFailed(c) => (12, c.into()),
            ErrorCode::Other { err_type, code } => (err_type.into(), code),
        }
    }
    pub fn error_type(self) -> ErrorType {
        self.to_wire().0.into()
    }
    /// The code's name, if it has one.
    pub fn code_name(self) -> Option<&'static str> {
        match self {
            ErrorCode::HelloFailed(c) => c.name(),
            ErrorCode::BadRequest(c) => c.name(),
            ErrorCode::BadAction(c) => c.name(),
            ErrorCode::BadInstruction(c) => c.name(),
            ErrorCode::BadMatch(c) => c.name(),
            ErrorCode::FlowModFailed(c) => c.name(),
            ErrorCode::SwitchConfigFailed(c) => c.name(),
            ErrorCode::RoleRequestFailed(c) => c.name(),
            ErrorCode::MeterModFailed(c) => c.name(),
            ErrorCode::Other { .. } => None,
        }
    }
}

/// ERROR: type (16) | code (16) | data (usually the start of the failed request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    #[serde(serialize_with = "ser_hex")]
    pub data: Bytes,
}

impl ErrorMsg {
    pub fn buffer_len(&self) -> usize {
        4 + self.data.len()
    }
    pub fn emit(&self, dst: &mut BytesMut) {
        let (t, c) = self.code.to_wire();
        dst.put_u16(t);
        dst.put_u16(c);
        dst.put_slice(&self.data);
    }
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<ErrorMsg, DecodeError> {
        r.what = "error";
        let t = r.u16()?;
        let c = r.u16()?;
        Ok(ErrorMsg {
            code: ErrorCode::from_wire(t, c),
            data: Bytes::copy_from_slice(r.rest()),
        })
    }
}

/// FEATURES_REPLY.
///
/// ```text
/// datapath_id (64) | n_buffers (32) | n_tables (8) | auxiliary_id (8) | pad (16)
/// capabilities (32) | reserved (32)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchFeatures {
    pub datapath_id: u64,
    pub n_buffers: u32,
    pub n_tables: u8,
    pub auxiliary_id: u8,
    pub capabilities: u32,
    pub reserved: u32,
}

impl SwitchFeatures {
    pub fn buffer_len(&self) -> usize {
        24
    }
    pub fn emit(&self, dst: &mut BytesMut) {
        dst.put_u64(self.datapath_id);
        dst.put_u32(self.n_buffers);
        dst.put_u8(self.n_tables);
        dst.put_u8(self.auxiliary_id);
        dst.put_bytes(0, 2);
        dst.put_u32(self.capabilities);
        dst.put_u32(self.reserved);
    }
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<SwitchFeatures, DecodeError> {
        r.what = "features_reply";
        let datapath_id = r.u64()?;
        let n_buffers = r.u32()?;
        let n_tables = r.u8()?;
        let auxiliary_id = r.u8()?;
        r.skip(2)?;
        let v = SwitchFeatures {
            datapath_id,
            n_buffers,
            n_tables,
            auxiliary_id,
            capabilities: r.u32()?,
            reserved: r.u32()?,
        };
        r.finish()?;
        Ok(v)
    }
}

/// GET_CONFIG_REPLY / SET_CONFIG: flags (16) | miss_send_len (16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SwitchConfig {
    /// `OFPC_FRAG_*`.
    pub flags: u16,
    pub miss_send_len: u16,
}

impl SwitchConfig {
    pub fn buffer_len(&self) -> usize {
        4
    }
    pub fn emit(&self, dst: &mut BytesMut) {
        dst.put_u16(self.flags);
        dst.put_u16(self.miss_send_len);
    }
    pub(crate) fn parse(
        r: &mut Reader<'_>,
        what: &'static str,
    ) -> Result<SwitchConfig, DecodeError> {
        r.what = what;
        let v = SwitchConfig {
            flags: r.u16()?,
            miss_send_len: r.u16()?,
        };
        r.finish()?;
        Ok(v)
    }
}

open_enum! {
    pub enum ControllerRole: u32 {
        NoChange = 0 => "nochange", Equal = 1 => "equal", Master = 2 => "master", Slave = 3 => "slave",
    }
}

/// ROLE_REQUEST / ROLE_REPLY: role (32) | pad (32) | generation_id (64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Role {
    pub role: ControllerRole,
    pub generation_id: u64,
}

impl Role {
    pub fn buffer_len(&self) -> usize {
        16
    }
    pub fn emit(&self, dst: &mut BytesMut) {
        dst.put_u32(self.role.into());
        dst.put_bytes(0, 4);
        dst.put_u64(self.generation_id);
    }
    pub(crate) fn parse(r: &mut Reader<'_>, what: &'static str) -> Result<Role, DecodeError> {
        r.what = what;
        let role = r.u32()?.into();
        r.skip(4)?;
        let v = Role {
            role,
            generation_id: r.u64()?,
        };
        r.finish()?;
        Ok(v)
    }
}

open_enum! {
    pub enum PacketInReason: u8 { NoMatch = 0 => "no_match", Action = 1 => "action", InvalidTtl = 2 => "invalid_ttl" }
}

/// PACKET_IN.
///
/// ```text
/// buffer_id (32) | total_len (16) | reason (8) | table_id (8)
/// cookie (64) | ofp_match (padded) | pad (16) | data
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PacketIn {
    pub buffer_id: u32,
    pub total_len: u16,
    pub reason: PacketInReason,
    pub table_id: u8,
    pub cookie: u64,
    #[serde(rename = "match")]
    pub match_: Match,
    #[serde(serialize_with = "ser_hex")]
    pub data: Bytes,
}

impl PacketIn {
    pub fn buffer_len(&self) -> usize {
        16 + self.match_.buffer_len() + 2 + self.data.len()
    }
    pub fn emit(&self, dst: &mut BytesMut) {
        dst.put_u32(self.buffer_id);
        dst.put_u16(self.total_len);
        dst.put_u8(self.reason.into());
        dst.put_u8(self.table_id);
        dst.put_u64(self.cookie);
        self.match_.emit(dst);
        dst.put_bytes(0, 2);
        dst.put_slice(&self.data);
    }
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<PacketIn, DecodeError> {
        r.what = "packet_in";
        let buffer_id = r.u32()?;
        let total_len = r.u16()?;
        let reason = r.u8()?.into();
        let table_id = r.u8()?;
        let cookie = r.u64()?;
        let match_ = Match::parse(r, "packet_in match")?;
        r.what = "packet_in";
        r.skip(2)?;
        Ok(PacketIn {
            buffer_id,
            total_len,
            reason,
            table_id,
            cookie,
            match_,
            data: Bytes::copy_from_slice(r.rest()),
        })
    }
}
