//! OXM (OpenFlow Extensible Match) fields and the `ofp_match` structure.
//!
//! ```text
//! ofp_match:                               one OXM TLV:
//! +----------------+----------------+      +------------+-------+-+--------+
//! | type (1 = OXM) | length (no pad)|      | class (16) |field 7|m| len 8  |
//! +----------------+----------------+      +------------+-------+-+--------+
//! | OXM TLVs ...  | pad to 8 bytes  |      | value (len bytes, mask after)  |
//! +---------------------------------+      +--------------------------------+
//! ```
//!
//! Fields of the OpenFlow basic class that solive uses are decoded; any other
//! field (any class, including experimenter) is kept as raw bytes.

use super::error::DecodeError;
use super::frame::{pad8, Reader};
use super::util::{ser_hex, MacAddr};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use std::net::Ipv4Addr;

/// `OFPXMC_OPENFLOW_BASIC`.
pub const CLASS_OPENFLOW_BASIC: u16 = 0x8000;
/// `OFPXMC_EXPERIMENTER`.
pub const CLASS_EXPERIMENTER: u16 = 0xffff;
/// `OFPMT_OXM`.
pub const MATCH_TYPE_OXM: u16 = 1;
/// `OFPVID_PRESENT`: set in `vlan_vid` when a VLAN tag is present.
pub const VID_PRESENT: u16 = 0x1000;

mod field {
    pub const IN_PORT: u8 = 0;
    pub const METADATA: u8 = 2;
    pub const ETH_DST: u8 = 3;
    pub const ETH_SRC: u8 = 4;
    pub const ETH_TYPE: u8 = 5;
    pub const VLAN_VID: u8 = 6;
    pub const VLAN_PCP: u8 = 7;
    pub const IP_DSCP: u8 = 8;
    pub const IP_PROTO: u8 = 10;
    pub const IPV4_SRC: u8 = 11;
    pub const IPV4_DST: u8 = 12;
    pub const TCP_SRC: u8 = 13;
    pub const TCP_DST: u8 = 14;
    pub const UDP_SRC: u8 = 15;
    pub const UDP_DST: u8 = 16;
}

/// One OXM TLV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OxmField {
    InPort(u32),
    Metadata {
        value: u64,
        mask: Option<u64>,
    },
    EthDst {
        addr: MacAddr,
        mask: Option<MacAddr>,
    },
    EthSrc {
        addr: MacAddr,
        mask: Option<MacAddr>,
    },
    EthType(u16),
    /// VLAN id including the [`VID_PRESENT`] bit, as on the wire.
    VlanVid {
        vid: u16,
        mask: Option<u16>,
    },
    VlanPcp(u8),
    IpDscp(u8),
    IpProto(u8),
    Ipv4Src {
        addr: Ipv4Addr,
        mask: Option<Ipv4Addr>,
    },
    Ipv4Dst {
        addr: Ipv4Addr,
        mask: Option<Ipv4Addr>,
    },
    /// Transport ports. OpenFlow 1.3 lists them as not maskable, but Open
    /// vSwitch accepts a bitwise mask (ovs-fields(7)), which is how one flow
    /// covers a port range such as libvirt's 49152–49215 (0xc000/0xffc0).
    TcpSrc {
        port: u16,
        mask: Option<u16>,
    },
    TcpDst {
        port: u16,
        mask: Option<u16>,
    },
    UdpSrc {
        port: u16,
        mask: Option<u16>,
    },
    UdpDst {
        port: u16,
        mask: Option<u16>,
    },
    /// Any other field: `payload` is everything after the 4-byte OXM header
    /// (value and mask; for the experimenter class, the experimenter id first).
    Unknown {
        class: u16,
        field: u8,
        has_mask: bool,
        #[serde(serialize_with = "ser_hex")]
        payload: Bytes,
    },
}

impl OxmField {
    /// (class, field, has_mask, payload length)
    fn head(&self) -> (u16, u8, bool, usize) {
        use field::*;
        use OxmField::*;
        let b = CLASS_OPENFLOW_BASIC;
        match self {
            InPort(_) => (b, IN_PORT, false, 4),
            Metadata { mask, .. } => (
                b,
                METADATA,
                mask.is_some(),
                if mask.is_some() { 16 } else { 8 },
            ),
            EthDst { mask, .. } => (
                b,
                ETH_DST,
                mask.is_some(),
                if mask.is_some() { 12 } else { 6 },
            ),
            EthSrc { mask, .. } => (
                b,
                ETH_SRC,
                mask.is_some(),
                if mask.is_some() { 12 } else { 6 },
            ),
            EthType(_) => (b, ETH_TYPE, false, 2),
            VlanVid { mask, .. } => (
                b,
                VLAN_VID,
                mask.is_some(),
                if mask.is_some() { 4 } else { 2 },
            ),
            VlanPcp(_) => (b, VLAN_PCP, false, 1),
            IpDscp(_) => (b, IP_DSCP, false, 1),
            IpProto(_) => (b, IP_PROTO, false, 1),
            Ipv4Src { mask, .. } => (
                b,
                IPV4_SRC,
                mask.is_some(),
                if mask.is_some() { 8 } else { 4 },
            ),
            Ipv4Dst { mask, .. } => (
                b,
                IPV4_DST,
                mask.is_some(),
                if mask.is_some() { 8 } else { 4 },
            ),
            TcpSrc { mask, .. } => (
                b,
                TCP_SRC,
                mask.is_some(),
                if mask.is_some() { 4 } else { 2 },
            ),
            TcpDst { mask, .. } => (
                b,
                TCP_DST,
                mask.is_some(),
                if mask.is_some() { 4 } else { 2 },
            ),
            UdpSrc { mask, .. } => (
                b,
                UDP_SRC,
                mask.is_some(),
                if mask.is_some() { 4 } else { 2 },
            ),
            UdpDst { mask, .. } => (
                b,
                UDP_DST,
                mask.is_some(),
                if mask.is_some() { 4 } else { 2 },
            ),
            Unknown {
                class,
                field,
                has_mask,
                payload,
            } => (*class, *field, *has_mask, payload.len()),
        }
    }

    /// Bytes on the wire, header included.
    pub fn buffer_len(&self) -> usize {
        4 + self.head().3
    }

    pub fn emit(&self, dst: &mut BytesMut) {
        let (class, field, has_mask, len) = self.head();
        dst.put_u16(class);
        dst.put_u8((field << 1) | u8::from(has_mask));
        dst.put_u8(len as u8);
        use OxmField::*;
        match self {
            InPort(v) => dst.put_u32(*v),
            Metadata { value, mask } => {
                dst.put_u64(*value);
                if let Some(m) = mask {
                    dst.put_u64(*m);
                }
            }
            EthDst { addr, mask } | EthSrc { addr, mask } => {
                dst.put_slice(&addr.0);
                if let Some(m) = mask {
                    dst.put_slice(&m.0);
                }
            }
            EthType(v) => dst.put_u16(*v),
            TcpSrc { port, mask }
            | TcpDst { port, mask }
            | UdpSrc { port, mask }
            | UdpDst { port, mask } => {
                dst.put_u16(*port);
                if let Some(m) = mask {
                    dst.put_u16(*m);
                }
            }
            VlanVid { vid, mask } => {
                dst.put_u16(*vid);
                if let Some(m) = mask {
                    dst.put_u16(*m);
                }
            }
            VlanPcp(v) | IpDscp(v) | IpProto(v) => dst.put_u8(*v),
            Ipv4Src { addr, mask } | Ipv4Dst { addr, mask } => {
                dst.put_slice(&addr.octets());
                if let Some(m) = mask {
                    dst.put_slice(&m.octets());
                }
            }
            Unknown { payload, .. } => dst.put_slice(payload),
        }
    }

    /// Parses one OXM TLV from the front of `r`.
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<OxmField, DecodeError> {
        let class = r.u16()?;
        let fb = r.u8()?;
        let len = usize::from(r.u8()?);
        let (field, has_mask) = (fb >> 1, fb & 1 == 1);
        let mut p = r.element(len, 0, "oxm field")?;
        if class != CLASS_OPENFLOW_BASIC {
            return Ok(OxmField::Unknown {
                class,
                field,
                has_mask,
                payload: Bytes::copy_from_slice(p.rest()),
            });
        }
        let expect =
            |name: &'static str, plain: usize, maskable: bool| -> Result<(), DecodeError> {
                let want = if has_mask { plain * 2 } else { plain };
                if has_mask && !maskable {
                    return Err(DecodeError::Invalid {
                        what: "oxm field",
                        detail: format!("{name} has the mask bit set but cannot be masked"),
                    });
                }
                if len != want {
                    return Err(DecodeError::Invalid {
                        what: "oxm field",
                        detail: format!("{name} has length {len}, expected {want}"),
                    });
                }
                Ok(())
            };
        use field::*;
        let f = match field {
            IN_PORT => {
                expect("in_port", 4, false)?;
                OxmField::InPort(p.u32()?)
            }
            METADATA => {
                expect("metadata", 8, true)?;
                let value = p.u64()?;
                let mask = if has_mask { Some(p.u64()?) } else { None };
                OxmField::Metadata { value, mask }
            }
            ETH_DST | ETH_SRC => {
                expect(
                    if field == ETH_DST {
                        "eth_dst"
                    } else {
                        "eth_src"
                    },
                    6,
                    true,
                )?;
                let addr = MacAddr(p.array()?);
                let mask = if has_mask {
                    Some(MacAddr(p.array()?))
                } else {
                    None
                };
                if field == ETH_DST {
                    OxmField::EthDst { addr, mask }
                } else {
                    OxmField::EthSrc { addr, mask }
                }
            }
            ETH_TYPE => {
                expect("eth_type", 2, false)?;
                OxmField::EthType(p.u16()?)
            }
            VLAN_VID => {
                expect("vlan_vid", 2, true)?;
                let vid = p.u16()?;
                let mask = if has_mask { Some(p.u16()?) } else { None };
                OxmField::VlanVid { vid, mask }
            }
            VLAN_PCP => {
                expect("vlan_pcp", 1, false)?;
                OxmField::VlanPcp(p.u8()?)
            }
            IP_DSCP => {
                expect("ip_dscp", 1, false)?;
                OxmField::IpDscp(p.u8()?)
            }
            IP_PROTO => {
                expect("ip_proto", 1, false)?;
                OxmField::IpProto(p.u8()?)
            }
            IPV4_SRC | IPV4_DST => {
                expect(
                    if field == IPV4_SRC {
                        "ipv4_src"
                    } else {
                        "ipv4_dst"
                    },
                    4,
                    true,
                )?;
                let addr = Ipv4Addr::from(p.array::<4>()?);
                let mask = if has_mask {
                    Some(Ipv4Addr::from(p.array::<4>()?))
                } else {
                    None
                };
                if field == IPV4_SRC {
                    OxmField::Ipv4Src { addr, mask }
                } else {
                    OxmField::Ipv4Dst { addr, mask }
                }
            }
            TCP_SRC | TCP_DST | UDP_SRC | UDP_DST => {
                let name =
                    ["tcp_src", "tcp_dst", "udp_src", "udp_dst"][usize::from(field - TCP_SRC)];
                expect(name, 2, true)?;
                let port = p.u16()?;
                let mask = if has_mask { Some(p.u16()?) } else { None };
                match field {
                    TCP_SRC => OxmField::TcpSrc { port, mask },
                    TCP_DST => OxmField::TcpDst { port, mask },
                    UDP_SRC => OxmField::UdpSrc { port, mask },
                    _ => OxmField::UdpDst { port, mask },
                }
            }
            _ => OxmField::Unknown {
                class,
                field,
                has_mask,
                payload: Bytes::copy_from_slice(p.rest()),
            },
        };
        Ok(f)
    }

    /// Whether decoding this field's encoding yields this field again
    /// (false only for an `Unknown` that spells a known basic field).
    pub fn is_canonical(&self) -> bool {
        match self {
            OxmField::Unknown {
                class,
                field,
                payload,
                ..
            } => {
                if payload.len() > 255 {
                    return false;
                }
                !(*class == CLASS_OPENFLOW_BASIC && (*field <= 16 && *field != 1 && *field != 9))
            }
            _ => true,
        }
    }
}

/// An `ofp_match` of type OXM: an ordered list of OXM fields.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Match {
    pub fields: Vec<OxmField>,
}

impl Match {
    /// A match on everything (no fields).
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with(mut self, f: OxmField) -> Self {
        self.fields.push(f);
        self
    }
    pub fn in_port(self, port: u32) -> Self {
        self.with(OxmField::InPort(port))
    }
    pub fn eth_type(self, t: u16) -> Self {
        self.with(OxmField::EthType(t))
    }
    pub fn eth_src(self, addr: [u8; 6], mask: Option<[u8; 6]>) -> Self {
        self.with(OxmField::EthSrc {
            addr: MacAddr(addr),
            mask: mask.map(MacAddr),
        })
    }
    pub fn eth_dst(self, addr: [u8; 6], mask: Option<[u8; 6]>) -> Self {
        self.with(OxmField::EthDst {
            addr: MacAddr(addr),
            mask: mask.map(MacAddr),
        })
    }
    /// `vid` is the 12-bit VLAN id; the [`VID_PRESENT`] bit is added.
    pub fn vlan_vid(self, vid: u16) -> Self {
        self.with(OxmField::VlanVid {
            vid: vid | VID_PRESENT,
            mask: None,
        })
    }
    pub fn ip_proto(self, p: u8) -> Self {
        self.with(OxmField::IpProto(p))
    }
    pub fn ip_dscp(self, d: u8) -> Self {
        self.with(OxmField::IpDscp(d))
    }
    pub fn ipv4_src(self, addr: Ipv4Addr, mask: Option<Ipv4Addr>) -> Self {
        self.with(OxmField::Ipv4Src { addr, mask })
    }
    pub fn ipv4_dst(self, addr: Ipv4Addr, mask: Option<Ipv4Addr>) -> Self {
        self.with(OxmField::Ipv4Dst { addr, mask })
    }
    pub fn tcp_src(self, port: u16, mask: Option<u16>) -> Self {
        self.with(OxmField::TcpSrc { port, mask })
    }
    pub fn tcp_dst(self, port: u16, mask: Option<u16>) -> Self {
        self.with(OxmField::TcpDst { port, mask })
    }
    pub fn udp_src(self, port: u16, mask: Option<u16>) -> Self {
        self.with(OxmField::UdpSrc { port, mask })
    }
    pub fn udp_dst(self, port: u16, mask: Option<u16>) -> Self {
        self.with(OxmField::UdpDst { port, mask })
    }

    /// Length without the trailing padding (the value of the length field).
    pub fn unpadded_len(&self) -> usize {
        4 + self.fields.iter().map(OxmField::buffer_len).sum::<usize>()
    }

    /// Bytes on the wire, padding included.
    pub fn buffer_len(&self) -> usize {
        pad8(self.unpadded_len())
    }

    pub fn emit(&self, dst: &mut BytesMut) {
        let len = self.unpadded_len();
        dst.put_u16(MATCH_TYPE_OXM);
        dst.put_u16(len as u16);
        for f in &self.fields {
            f.emit(dst);
        }
        dst.put_bytes(0, pad8(len) - len);
    }

    /// Parses an `ofp_match` and its padding from the front of `r`; `what`
    /// names the enclosing message for errors.
    pub(crate) fn parse(r: &mut Reader<'_>, what: &'static str) -> Result<Match, DecodeError> {
        let typ = r.peek_u16(0)?;
        let len = usize::from(r.peek_u16(2)?);
        if typ != MATCH_TYPE_OXM {
            return Err(DecodeError::Invalid {
                what,
                detail: format!("match type {typ} is not OXM (1)"),
            });
        }
        let mut m = r.element(len, 4, what)?;
        m.skip(4)?;
        m.what = "oxm field";
        let mut fields = Vec::new();
        while !m.is_empty() {
            fields.push(OxmField::parse(&mut m)?);
        }
        // The padding may be missing only at the very end of a message.
        let pad = (pad8(len) - len).min(r.remaining());
        r.skip(pad)?;
        Ok(Match { fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_bytes() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x00, 0x01,             // type OXM
            0x00, 0x1e,             // length 30 (without padding)
            0x80, 0x00, 0x00, 0x04, // in_port, len 4
            0x00, 0x00, 0x00, 0x01, //   1
            0x80, 0x00, 0x0a, 0x02, // eth_type, len 2
            0x08, 0x00,             //   IPv4
            0x80, 0x00, 0x19, 0x08, // ipv4_dst with mask, len 8
            10, 0, 0, 0,            //   10.0.0.0
            255, 0, 0, 0,           //   /8
            0, 0,                   // padding to 32
        ];
        let want = Match::new().in_port(1).eth_type(0x0800).ipv4_dst(
            Ipv4Addr::new(10, 0, 0, 0),
            Some(Ipv4Addr::new(255, 0, 0, 0)),
        );
        let mut r = Reader::new(bytes, "test");
        assert_eq!(Match::parse(&mut r, "test").unwrap(), want);
        assert!(r.is_empty());
        let mut out = BytesMut::new();
        want.emit(&mut out);
        assert_eq!(&out[..], bytes);
        assert_eq!(want.buffer_len(), bytes.len());
    }

    #[test]
    fn empty_match_is_padded_to_8() {
        let mut out = BytesMut::new();
        Match::new().emit(&mut out);
        assert_eq!(&out[..], &[0, 1, 0, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn unknown_and_experimenter_fields_are_kept() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x00, 0x01, 0x00, 0x16, // OXM match, length 22
            0x80, 0x00, 0x26, 0x01, // basic field 19 (icmpv4_type), len 1
            0x08,
            0xff, 0xff, 0x02, 0x05, // experimenter class, field 1, len 5
            0x00, 0x00, 0x23, 0x20, //   experimenter id
            0x07,                   //   value
            0x00, 0x01, 0x00, 0x00, // NXM0 class, field 0, len 0
            0, 0,                   // padding to 24
        ];
        let mut r = Reader::new(bytes, "t");
        let m = Match::parse(&mut r, "t").unwrap();
        assert_eq!(m.fields.len(), 3);
        assert_eq!(
            m.fields[1],
            OxmField::Unknown {
                class: 0xffff,
                field: 1,
                has_mask: false,
                payload: Bytes::from_static(&[0, 0, 0x23, 0x20, 7])
            }
        );
        let mut out = BytesMut::new();
        m.emit(&mut out);
        assert_eq!(&out[..], bytes);
    }

    #[test]
    fn short_match_length_is_named() {
        let bytes = [0, 1, 0, 3, 0, 0, 0, 0];
        let e =
            Match::parse(&mut Reader::new(&bytes, "flow_mod match"), "flow_mod match").unwrap_err();
        assert_eq!(
            e.to_string(),
            "flow_mod match: length 3 is shorter than its 4-byte header"
        );
    }

    #[test]
    fn wrong_field_length_is_an_error() {
        let bytes = [0, 1, 0, 11, 0x80, 0, 0, 3, 0, 0, 1, 0, 0, 0, 0, 0];
        let e = Match::parse(&mut Reader::new(&bytes, "t"), "t").unwrap_err();
        assert_eq!(e.to_string(), "oxm field: in_port has length 3, expected 4");
    }
}
