//! Ports: the special port numbers, `ofp_port`, and PORT_STATUS.
//!
//! ```text
//! ofp_port (64 bytes)
//! +-------------------------------+-------------------------------+
//! | port_no (32)                  | pad (32)                      |
//! +-------------------------------+---------------+---------------+
//! | hw_addr (48)                                  | pad (16)      |
//! +-----------------------------------------------+---------------+
//! | name (16 bytes, NUL padded)                                   |
//! +-------------------------------+-------------------------------+
//! | config (32)                   | state (32)                    |
//! | curr (32)                     | advertised (32)               |
//! | supported (32)                | peer (32)                     |
//! | curr_speed (32, kbps)         | max_speed (32, kbps)          |
//! +-------------------------------+-------------------------------+
//!
//! port_status body: reason (8) | pad (56) | ofp_port
//! ```

use super::error::DecodeError;
use super::frame::Reader;
use super::util::{get_fixed_str, open_enum, put_fixed_str, MacAddr};
use bytes::{BufMut, BytesMut};
use serde::Serialize;

/// Largest number of a physical port (`OFPP_MAX`).
pub const MAX: u32 = 0xffff_ff00;
/// Send the packet out of the input port.
pub const IN_PORT: u32 = 0xffff_fff8;
/// Submit the packet to the first flow table.
pub const TABLE: u32 = 0xffff_fff9;
/// Forward using the non-OpenFlow pipeline.
pub const NORMAL: u32 = 0xffff_fffa;
/// Flood along the spanning tree, not out of the input port.
pub const FLOOD: u32 = 0xffff_fffb;
/// All ports except the input port.
pub const ALL: u32 = 0xffff_fffc;
/// Send to the controller.
pub const CONTROLLER: u32 = 0xffff_fffd;
/// The local networking stack.
pub const LOCAL: u32 = 0xffff_fffe;
/// Wildcard: any port (also "no port").
pub const ANY: u32 = 0xffff_ffff;

/// The `ovs-ofctl` name of a port number.
pub fn name(p: u32) -> String {
    match p {
        IN_PORT => "IN_PORT".into(),
        TABLE => "TABLE".into(),
        NORMAL => "NORMAL".into(),
        FLOOD => "FLOOD".into(),
        ALL => "ALL".into(),
        CONTROLLER => "CONTROLLER".into(),
        LOCAL => "LOCAL".into(),
        ANY => "ANY".into(),
        n => n.to_string(),
    }
}

/// Size of `ofp_port`.
pub const PORT_LEN: usize = 64;

/// An `ofp_port`: a port's description.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Port {
    pub port_no: u32,
    pub hw_addr: MacAddr,
    pub name: String,
    pub config: u32,
    pub state: u32,
    pub curr: u32,
    pub advertised: u32,
    pub supported: u32,
    pub peer: u32,
    pub curr_speed: u32,
    pub max_speed: u32,
}

/// `OFPPC_PORT_DOWN`.
pub const CONFIG_PORT_DOWN: u32 = 1;
/// `OFPPS_LINK_DOWN`.
pub const STATE_LINK_DOWN: u32 = 1;

impl Port {
    pub fn emit(&self, dst: &mut BytesMut) {
        dst.put_u32(self.port_no);
        dst.put_bytes(0, 4);
        dst.put_slice(&self.hw_addr.0);
        dst.put_bytes(0, 2);
        put_fixed_str(dst, &self.name, 16);
        for v in [
            self.config,
            self.state,
            self.curr,
            self.advertised,
            self.supported,
            self.peer,
            self.curr_speed,
            self.max_speed,
        ] {
            dst.put_u32(v);
        }
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Port, DecodeError> {
        let mut p = Reader::new(r.take(PORT_LEN)?, "ofp_port");
        let port_no = p.u32()?;
        p.skip(4)?;
        let hw_addr = MacAddr(p.array()?);
        p.skip(2)?;
        let name = get_fixed_str(p.take(16)?);
        Ok(Port {
            port_no,
            hw_addr,
            name,
            config: p.u32()?,
            state: p.u32()?,
            curr: p.u32()?,
            advertised: p.u32()?,
            supported: p.u32()?,
            peer: p.u32()?,
            curr_speed: p.u32()?,
            max_speed: p.u32()?,
        })
    }
}

open_enum! {
    /// Why a PORT_STATUS was sent.
    pub enum PortReason: u8 { Add = 0 => "ADD", Delete = 1 => "DELETE", Modify = 2 => "MODIFY" }
}

/// PORT_STATUS body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortStatus {
    pub reason: PortReason,
    pub desc: Port,
}

impl PortStatus {
    pub fn buffer_len(&self) -> usize {
        8 + PORT_LEN
    }
    pub fn emit(&self, dst: &mut BytesMut) {
        dst.put_u8(self.reason.into());
        dst.put_bytes(0, 7);
        self.desc.emit(dst);
    }
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<PortStatus, DecodeError> {
        let reason = r.u8()?.into();
        r.skip(7)?;
        let desc = Port::parse(r)?;
        r.finish()?;
        Ok(PortStatus { reason, desc })
    }
}
