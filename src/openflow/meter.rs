//! METER_MOD and meter bands.
//!
//! ```text
//! meter_mod body:
//! +-------------------------------+-------------------------------+
//! | command (16)                  | flags (16)                    |
//! +-------------------------------+-------------------------------+
//! | meter_id (32)                                                 |
//! +---------------------------------------------------------------+
//! | bands ...                                                     |
//! +---------------------------------------------------------------+
//!
//! band (16 bytes for the standard types):
//! +-------------------------------+-------------------------------+
//! | type (16)                     | len (16)                      |
//! +-------------------------------+-------------------------------+
//! | rate (32)                                                     |
//! | burst_size (32)                                               |
//! +---------------------------------------------------------------+
//! drop: pad (32)    dscp_remark: prec_level (8) | pad (24)
//! experimenter: experimenter (32) | ...
//! ```

use super::error::DecodeError;
use super::frame::Reader;
use super::util::{flags, open_enum, ser_hex};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// Meter ids with special meaning (`ofp_meter`).
pub mod ids {
    /// Last usable meter id.
    pub const MAX: u32 = 0xffff_0000;
    /// The meter for the slow path.
    pub const SLOWPATH: u32 = 0xffff_fffd;
    /// The meter for packets sent to the controller.
    pub const CONTROLLER: u32 = 0xffff_fffe;
    /// All meters (stats requests and delete).
    pub const ALL: u32 = 0xffff_ffff;
}
pub use ids::*;

pub const BAND_DROP: u16 = 1;
pub const BAND_DSCP_REMARK: u16 = 2;
pub const BAND_EXPERIMENTER: u16 = 0xffff;

open_enum! {
    pub enum MeterCommand: u16 { Add = 0 => "add", Modify = 1 => "mod", Delete = 2 => "del" }
}

flags! {
    /// `ofp_meter_flags`.
    pub struct MeterFlags: u16 {
        KBPS = 1 => "kbps",
        PKTPS = 2 => "pktps",
        BURST = 4 => "burst",
        STATS = 8 => "stats",
    }
}

/// One band of a meter. `rate` is in kb/s or packets/s per the meter flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MeterBand {
    Drop {
        rate: u32,
        burst_size: u32,
    },
    DscpRemark {
        rate: u32,
        burst_size: u32,
        prec_level: u8,
    },
    /// Other band types (including experimenter): `data` is everything after
    /// `burst_size`.
    Unknown {
        band_type: u16,
        rate: u32,
        burst_size: u32,
        #[serde(serialize_with = "ser_hex")]
        data: Bytes,
    },
}

impl MeterBand {
    pub fn drop(rate: u32, burst_size: u32) -> Self {
        MeterBand::Drop { rate, burst_size }
    }
    pub fn dscp_remark(rate: u32, burst_size: u32, prec_level: u8) -> Self {
        MeterBand::DscpRemark {
            rate,
            burst_size,
            prec_level,
        }
    }
    pub fn rate(&self) -> u32 {
        match self {
            MeterBand::Drop { rate, .. }
            | MeterBand::DscpRemark { rate, .. }
            | MeterBand::Unknown { rate, .. } => *rate,
        }
    }
    pub fn buffer_len(&self) -> usize {
        match self {
            MeterBand::Unknown { data, .. } => 12 + data.len(),
            _ => 16,
        }
    }
    pub fn emit(&self, dst: &mut BytesMut) {
        let len = self.buffer_len() as u16;
        match self {
            MeterBand::Drop { rate, burst_size } => {
                dst.put_u16(BAND_DROP);
                dst.put_u16(len);
                dst.put_u32(*rate);
                dst.put_u32(*burst_size);
                dst.put_bytes(0, 4);
            }
            MeterBand::DscpRemark {
                rate,
                burst_size,
                prec_level,
            } => {
                dst.put_u16(BAND_DSCP_REMARK);
                dst.put_u16(len);
                dst.put_u32(*rate);
                dst.put_u32(*burst_size);
                dst.put_u8(*prec_level);
                dst.put_bytes(0, 3);
            }
            MeterBand::Unknown {
                band_type,
                rate,
                burst_size,
                data,
            } => {
                dst.put_u16(*band_type);
                dst.put_u16(len);
                dst.put_u32(*rate);
                dst.put_u32(*burst_size);
                dst.put_slice(data);
            }
        }
    }
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<MeterBand, DecodeError> {
        let typ = r.peek_u16(0)?;
        let len = usize::from(r.peek_u16(2)?);
        let mut b = r.element(len, 12, "meter band")?;
        b.skip(4)?;
        let rate = b.u32()?;
        let burst_size = b.u32()?;
        Ok(match typ {
            BAND_DROP => {
                b.what = "meter band drop";
                b.skip(4)?;
                b.finish()?;
                MeterBand::Drop { rate, burst_size }
            }
            BAND_DSCP_REMARK => {
                b.what = "meter band dscp_remark";
                let prec_level = b.u8()?;
                b.skip(3)?;
                b.finish()?;
                MeterBand::DscpRemark {
                    rate,
                    burst_size,
                    prec_level,
                }
            }
            _ => MeterBand::Unknown {
                band_type: typ,
                rate,
                burst_size,
                data: Bytes::copy_from_slice(b.rest()),
            },
        })
    }
}

pub(crate) fn parse_bands(r: &mut Reader<'_>) -> Result<Vec<MeterBand>, DecodeError> {
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(MeterBand::parse(r)?);
    }
    Ok(v)
}

pub(crate) fn bands_len(b: &[MeterBand]) -> usize {
    b.iter().map(MeterBand::buffer_len).sum()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeterMod {
    pub command: MeterCommand,
    pub flags: MeterFlags,
    pub meter_id: u32,
    pub bands: Vec<MeterBand>,
}

impl MeterMod {
    pub fn add(meter_id: u32, flags: MeterFlags, bands: Vec<MeterBand>) -> Self {
        MeterMod {
            command: MeterCommand::Add,
            flags,
            meter_id,
            bands,
        }
    }
    pub fn modify(meter_id: u32, flags: MeterFlags, bands: Vec<MeterBand>) -> Self {
        MeterMod {
            command: MeterCommand::Modify,
            flags,
            meter_id,
            bands,
        }
    }
    /// Deletes a meter (or all with [`ALL`]).
    pub fn delete(meter_id: u32) -> Self {
        MeterMod {
            command: MeterCommand::Delete,
            flags: MeterFlags::EMPTY,
            meter_id,
            bands: Vec::new(),
        }
    }
    pub fn buffer_len(&self) -> usize {
        8 + bands_len(&self.bands)
    }
    pub fn emit(&self, dst: &mut BytesMut) {
        dst.put_u16(self.command.into());
        dst.put_u16(self.flags.0);
        dst.put_u32(self.meter_id);
        for b in &self.bands {
            b.emit(dst);
        }
    }
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<MeterMod, DecodeError> {
        r.what = "meter_mod";
        let command = r.u16()?.into();
        let flags = MeterFlags(r.u16()?);
        let meter_id = r.u32()?;
        let bands = parse_bands(r)?;
        Ok(MeterMod {
            command,
            flags,
            meter_id,
            bands,
        })
    }
}
