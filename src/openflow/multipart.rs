//! MULTIPART_REQUEST / MULTIPART_REPLY (statistics and descriptions), and
//! reassembly of replies split over several messages.
//!
//! ```text
//! +-------------------------------+-------------------------------+
//! | type (16)                     | flags (16, REQ/REPLY_MORE)    |
//! +-------------------------------+-------------------------------+
//! | pad (32)                                                      |
//! +---------------------------------------------------------------+
//! | body ...                                                      |
//! +---------------------------------------------------------------+
//! ```

use super::error::{DecodeError, MergeError};
use super::frame::Reader;
use super::instruction::{self, Instruction};
use super::meter::{self, MeterBand, MeterFlags};
use super::oxm::Match;
use super::port::{Port, PORT_LEN};
use super::util::{get_fixed_str, put_fixed_str, ser_hex};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use std::collections::HashMap;

/// Flag of a reply: more parts with the same xid follow.
pub const REPLY_MORE: u16 = 1;
/// Flag of a request: more parts with the same xid follow.
pub const REQ_MORE: u16 = 1;

pub const DESC: u16 = 0;
pub const FLOW: u16 = 1;
pub const AGGREGATE: u16 = 2;
pub const TABLE: u16 = 3;
pub const PORT_STATS: u16 = 4;
pub const QUEUE: u16 = 5;
pub const METER: u16 = 9;
pub const METER_CONFIG: u16 = 10;
pub const METER_FEATURES: u16 = 11;
pub const PORT_DESC: u16 = 13;

/// `OFPQ_ALL`.
pub const QUEUE_ALL: u32 = 0xffff_ffff;

/// The `ovs-ofctl` name of a multipart type.
pub fn type_name(t: u16) -> &'static str {
    match t {
        DESC => "DESC",
        FLOW => "FLOW",
        AGGREGATE => "AGGREGATE",
        TABLE => "TABLE",
        PORT_STATS => "PORT",
        QUEUE => "QUEUE",
        METER => "METER",
        METER_CONFIG => "METER_CONFIG",
        METER_FEATURES => "METER_FEATURES",
        PORT_DESC => "PORT_DESC",
        _ => "UNKNOWN",
    }
}

/// Body of a FLOW or AGGREGATE request.
///
/// ```text
/// table_id (8) | pad (24) | out_port (32) | out_group (32) | pad (32)
/// cookie (64) | cookie_mask (64) | ofp_match
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowStatsRequest {
    pub table_id: u8,
    pub out_port: u32,
    pub out_group: u32,
    pub cookie: u64,
    pub cookie_mask: u64,
    #[serde(rename = "match")]
    pub match_: Match,
}

impl FlowStatsRequest {
    /// All flows of `table_id` (or [`super::flow_mod::TABLE_ALL`]) matching `m`.
    pub fn new(table_id: u8, m: Match) -> Self {
        FlowStatsRequest {
            table_id,
            out_port: super::port::ANY,
            out_group: super::flow_mod::GROUP_ANY,
            cookie: 0,
            cookie_mask: 0,
            match_: m,
        }
    }
    fn buffer_len(&self) -> usize {
        32 + self.match_.buffer_len()
    }
    fn emit(&self, dst: &mut BytesMut) {
        dst.put_u8(self.table_id);
        dst.put_bytes(0, 3);
        dst.put_u32(self.out_port);
        dst.put_u32(self.out_group);
        dst.put_bytes(0, 4);
        dst.put_u64(self.cookie);
        dst.put_u64(self.cookie_mask);
        self.match_.emit(dst);
    }
    fn parse(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.what = "flow stats request";
        let table_id = r.u8()?;
        r.skip(3)?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        r.skip(4)?;
        let cookie = r.u64()?;
        let cookie_mask = r.u64()?;
        let match_ = Match::parse(r, "flow stats request match")?;
        r.finish()?;
        Ok(FlowStatsRequest {
            table_id,
            out_port,
            out_group,
            cookie,
            cookie_mask,
            match_,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MultipartRequestBody {
    Desc,
    Flow(FlowStatsRequest),
    Aggregate(FlowStatsRequest),
    /// port_no (32) | pad (32)
    PortStats {
        port_no: u32,
    },
    /// port_no (32) | queue_id (32)
    Queue {
        port_no: u32,
        queue_id: u32,
    },
    /// meter_id (32) | pad (32)
    Meter {
        meter_id: u32,
    },
    /// meter_id (32) | pad (32)
    MeterConfig {
        meter_id: u32,
    },
    MeterFeatures,
    PortDesc,
    Unknown {
        mp_type: u16,
        #[serde(serialize_with = "ser_hex")]
        body: Bytes,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MultipartRequest {
    pub flags: u16,
    pub body: MultipartRequestBody,
}

impl MultipartRequest {
    fn of(body: MultipartRequestBody) -> Self {
        MultipartRequest { flags: 0, body }
    }
    pub fn desc() -> Self {
        Self::of(MultipartRequestBody::Desc)
    }
    pub fn flow(req: FlowStatsRequest) -> Self {
        Self::of(MultipartRequestBody::Flow(req))
    }
    pub fn aggregate(req: FlowStatsRequest) -> Self {
        Self::of(MultipartRequestBody::Aggregate(req))
    }
    /// Stats of one port or of all ([`super::port::ANY`]).
    pub fn port_stats(port_no: u32) -> Self {
        Self::of(MultipartRequestBody::PortStats { port_no })
    }
    pub fn queue_stats(port_no: u32, queue_id: u32) -> Self {
        Self::of(MultipartRequestBody::Queue { port_no, queue_id })
    }
    /// Stats of one meter or of all ([`super::meter::ALL`]).
    pub fn meter_stats(meter_id: u32) -> Self {
        Self::of(MultipartRequestBody::Meter { meter_id })
    }
    pub fn meter_config(meter_id: u32) -> Self {
        Self::of(MultipartRequestBody::MeterConfig { meter_id })
    }
    pub fn meter_features() -> Self {
        Self::of(MultipartRequestBody::MeterFeatures)
    }
    pub fn port_desc() -> Self {
        Self::of(MultipartRequestBody::PortDesc)
    }

    pub fn mp_type(&self) -> u16 {
        use MultipartRequestBody::*;
        match &self.body {
            Desc => DESC,
            Flow(_) => FLOW,
            Aggregate(_) => AGGREGATE,
            PortStats { .. } => PORT_STATS,
            Queue { .. } => QUEUE,
            Meter { .. } => METER,
            MeterConfig { .. } => METER_CONFIG,
            MeterFeatures => METER_FEATURES,
            PortDesc => PORT_DESC,
            Unknown { mp_type, .. } => *mp_type,
        }
    }

    pub fn buffer_len(&self) -> usize {
        use MultipartRequestBody::*;
        8 + match &self.body {
            Desc | MeterFeatures | PortDesc => 0,
            Flow(f) | Aggregate(f) => f.buffer_len(),
            PortStats { .. } | Queue { .. } | Meter { .. } | MeterConfig { .. } => 8,
            Unknown { body, .. } => body.len(),
        }
    }

    pub fn emit(&self, dst: &mut BytesMut) {
        use MultipartRequestBody::*;
        dst.put_u16(self.mp_type());
        dst.put_u16(self.flags);
        dst.put_bytes(0, 4);
        match &self.body {
            Desc | MeterFeatures | PortDesc => {}
            Flow(f) | Aggregate(f) => f.emit(dst),
            PortStats { port_no } => {
                dst.put_u32(*port_no);
                dst.put_bytes(0, 4);
            }
            Queue { port_no, queue_id } => {
                dst.put_u32(*port_no);
                dst.put_u32(*queue_id);
            }
            Meter { meter_id } | MeterConfig { meter_id } => {
                dst.put_u32(*meter_id);
                dst.put_bytes(0, 4);
            }
            Unknown { body, .. } => dst.put_slice(body),
        }
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        use MultipartRequestBody as B;
        r.what = "multipart_request";
        let t = r.u16()?;
        let flags = r.u16()?;
        r.skip(4)?;
        let body = match t {
            DESC | METER_FEATURES | PORT_DESC => {
                r.what = "multipart_request (empty body)";
                r.finish()?;
                match t {
                    DESC => B::Desc,
                    METER_FEATURES => B::MeterFeatures,
                    _ => B::PortDesc,
                }
            }
            FLOW => B::Flow(FlowStatsRequest::parse(r)?),
            AGGREGATE => B::Aggregate(FlowStatsRequest::parse(r)?),
            PORT_STATS | METER | METER_CONFIG => {
                r.what = match t {
                    PORT_STATS => "port stats request",
                    METER => "meter stats request",
                    _ => "meter config request",
                };
                let v = r.u32()?;
                r.skip(4)?;
                r.finish()?;
                match t {
                    PORT_STATS => B::PortStats { port_no: v },
                    METER => B::Meter { meter_id: v },
                    _ => B::MeterConfig { meter_id: v },
                }
            }
            QUEUE => {
                r.what = "queue stats request";
                let port_no = r.u32()?;
                let queue_id = r.u32()?;
                r.finish()?;
                B::Queue { port_no, queue_id }
            }
            _ => B::Unknown {
                mp_type: t,
                body: Bytes::copy_from_slice(r.rest()),
            },
        };
        Ok(MultipartRequest { flags, body })
    }
}

/// DESC reply: five NUL-padded strings (256, 256, 256, 32, 256 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Desc {
    pub mfr_desc: String,
    pub hw_desc: String,
    pub sw_desc: String,
    pub serial_num: String,
    pub dp_desc: String,
}

const DESC_LENS: [usize; 5] = [256, 256, 256, 32, 256];

/// One `ofp_flow_stats`.
///
/// ```text
/// length (16) | table_id (8) | pad (8) | duration_sec (32) | duration_nsec (32)
/// priority (16) | idle_timeout (16) | hard_timeout (16) | flags (16) | pad (32)
/// cookie (64) | packet_count (64) | byte_count (64) | ofp_match | instructions
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowStats {
    pub table_id: u8,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    pub priority: u16,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub flags: u16,
    pub cookie: u64,
    pub packet_count: u64,
    pub byte_count: u64,
    #[serde(rename = "match")]
    pub match_: Match,
    pub instructions: Vec<Instruction>,
}

impl FlowStats {
    fn buffer_len(&self) -> usize {
        48 + self.match_.buffer_len() + instruction::list_len(&self.instructions)
    }
    fn emit(&self, dst: &mut BytesMut) {
        dst.put_u16(self.buffer_len() as u16);
        dst.put_u8(self.table_id);
        dst.put_u8(0);
        dst.put_u32(self.duration_sec);
        dst.put_u32(self.duration_nsec);
        dst.put_u16(self.priority);
        dst.put_u16(self.idle_timeout);
        dst.put_u16(self.hard_timeout);
        dst.put_u16(self.flags);
        dst.put_bytes(0, 4);
        dst.put_u64(self.cookie);
        dst.put_u64(self.packet_count);
        dst.put_u64(self.byte_count);
        self.match_.emit(dst);
        instruction::emit_list(&self.instructions, dst);
    }
    fn parse(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = usize::from(r.peek_u16(0)?);
        let mut e = r.element(len, 48, "flow stats")?;
        e.skip(2)?;
        let table_id = e.u8()?;
        e.skip(1)?;
        let duration_sec = e.u32()?;
        let duration_nsec = e.u32()?;
        let priority = e.u16()?;
        let idle_timeout = e.u16()?;
        let hard_timeout = e.u16()?;
        let flags = e.u16()?;
        e.skip(4)?;
        let cookie = e.u64()?;
        let packet_count = e.u64()?;
        let byte_count = e.u64()?;
        let match_ = Match::parse(&mut e, "flow stats match")?;
        let instructions = instruction::parse_list(&mut e)?;
        Ok(FlowStats {
            table_id,
            duration_sec,
            duration_nsec,
            priority,
            idle_timeout,
            hard_timeout,
            flags,
            cookie,
            packet_count,
            byte_count,
            match_,
            instructions,
        })
    }
}

/// AGGREGATE reply: packet_count (64) | byte_count (64) | flow_count (32) | pad (32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct AggregateStats {
    pub packet_count: u64,
    pub byte_count: u64,
    pub flow_count: u32,
}

/// One `ofp_port_stats` (112 bytes): port_no (32) | pad (32) | twelve
/// 64-bit counters | duration_sec (32) | duration_nsec (32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PortStats {
    pub port_no: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_frame_err: u64,
    pub rx_over_err: u64,
    pub rx_crc_err: u64,
    pub collisions: u64,
    pub duration_sec: u32,
    pub duration_nsec: u32,
}

pub const PORT_STATS_LEN: usize = 112;

impl PortStats {
    fn counters(&self) -> [u64; 12] {
        [
            self.rx_packets,
            self.tx_packets,
            self.rx_bytes,
            self.tx_bytes,
            self.rx_dropped,
            self.tx_dropped,
            self.rx_errors,
            self.tx_errors,
            self.rx_frame_err,
            self.rx_over_err,
            self.rx_crc_err,
            self.collisions,
        ]
    }
    fn emit(&self, dst: &mut BytesMut) {
        dst.put_u32(self.port_no);
        dst.put_bytes(0, 4);
        for c in self.counters() {
            dst.put_u64(c);
        }
        dst.put_u32(self.duration_sec);
        dst.put_u32(self.duration_nsec);
    }
    fn parse(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut e = Reader::new(r.take(PORT_STATS_LEN)?, "port stats");
        let port_no = e.u32()?;
        e.skip(4)?;
        let mut c = [0u64; 12];
        for v in &mut c {
            *v = e.u64()?;
        }
        Ok(PortStats {
            port_no,
            rx_packets: c[0],
            tx_packets: c[1],
            rx_bytes: c[2],
            tx_bytes: c[3],
            rx_dropped: c[4],
            tx_dropped: c[5],
            rx_errors: c[6],
            tx_errors: c[7],
            rx_frame_err: c[8],
            rx_over_err: c[9],
            rx_crc_err: c[10],
            collisions: c[11],
            duration_sec: e.u32()?,
            duration_nsec: e.u32()?,
        })
    }
}

/// One `ofp_queue_stats` (40 bytes): port_no (32) | queue_id (32) |
/// tx_bytes (64) | tx_packets (64) | tx_errors (64) | duration_sec (32) | duration_nsec (32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct QueueStats {
    pub port_no: u32,
    pub queue_id: u32,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub duration_sec: u32,
    pub duration_nsec: u32,
}

/// Per-band counters of a meter: packet_band_count (64) | byte_band_count (64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MeterBandStats {
    pub packet_band_count: u64,
    pub byte_band_count: u64,
}

/// One `ofp_meter_stats`.
///
/// ```text
/// meter_id (32) | len (16) | pad (48) | flow_count (32)
/// packet_in_count (64) | byte_in_count (64) | duration_sec (32) | duration_nsec (32)
/// band_stats (16 bytes each) ...
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct MeterStats {
    pub meter_id: u32,
    pub flow_count: u32,
    pub packet_in_count: u64,
    pub byte_in_count: u64,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    pub bands: Vec<MeterBandStats>,
}

impl MeterStats {
    fn buffer_len(&self) -> usize {
        40 + 16 * self.bands.len()
    }
}

/// One `ofp_meter_config`: length (16) | flags (16) | meter_id (32) | bands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeterConfig {
    pub flags: MeterFlags,
    pub meter_id: u32,
    pub bands: Vec<MeterBand>,
}

/// METER_FEATURES reply: max_meter (32) | band_types (32) | capabilities (32)
/// | max_bands (8) | max_color (8) | pad (16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MeterFeatures {
    pub max_meter: u32,
    /// Bitmap of `1 << band type`.
    pub band_types: u32,
    /// Bitmap of [`MeterFlags`] bits.
    pub capabilities: u32,
    pub max_bands: u8,
    pub max_color: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MultipartReplyBody {
    Desc(Desc),
    Flow(Vec<FlowStats>),
    Aggregate(AggregateStats),
    PortStats(Vec<PortStats>),
    Queue(Vec<QueueStats>),
    Meter(Vec<MeterStats>),
    MeterConfig(Vec<MeterConfig>),
    MeterFeatures(MeterFeatures),
    PortDesc(Vec<Port>),
    Unknown {
        mp_type: u16,
        #[serde(serialize_with = "ser_hex")]
        body: Bytes,
    },
}

impl MultipartReplyBody {
    pub fn mp_type(&self) -> u16 {
        use MultipartReplyBody::*;
        match self {
            Desc(_) => DESC,
            Flow(_) => FLOW,
            Aggregate(_) => AGGREGATE,
            PortStats(_) => PORT_STATS,
            Queue(_) => QUEUE,
            Meter(_) => METER,
            MeterConfig(_) => METER_CONFIG,
            MeterFeatures(_) => METER_FEATURES,
            PortDesc(_) => PORT_DESC,
            Unknown { mp_type, .. } => *mp_type,
        }
    }

    /// Appends the entries of the next part of the same reply. Only the
    /// array-shaped replies (and unknown types, by concatenating bytes) can
    /// be split; merging different types is an error.
    pub fn merge(&mut self, next: MultipartReplyBody) -> Result<(), MergeError> {
        use MultipartReplyBody as B;
        let current = type_name(self.mp_type());
        match (self, next) {
            (B::Flow(a), B::Flow(b)) => a.extend(b),
            (B::PortStats(a), B::PortStats(b)) => a.extend(b),
            (B::Queue(a), B::Queue(b)) => a.extend(b),
            (B::Meter(a), B::Meter(b)) => a.extend(b),
            (B::MeterConfig(a), B::MeterConfig(b)) => a.extend(b),
            (B::PortDesc(a), B::PortDesc(b)) => a.extend(b),
            (
                B::Unknown {
                    mp_type: ta,
                    body: a,
                },
                B::Unknown {
                    mp_type: tb,
                    body: b,
                },
            ) if *ta == tb => {
                let mut v = BytesMut::from(&a[..]);
                v.extend_from_slice(&b);
                *a = v.freeze();
            }
            (B::Desc(_), B::Desc(_))
            | (B::Aggregate(_), B::Aggregate(_))
            | (B::MeterFeatures(_), B::MeterFeatures(_)) => {
                return Err(MergeError::NotSplittable(current))
            }
            (_, next) => {
                return Err(MergeError::TypeMismatch {
                    current,
                    next: format!("{} ({})", type_name(next.mp_type()), next.mp_type()),
                })
            }
        }
        Ok(())
    }

    fn buffer_len(&self) -> usize {
        use MultipartReplyBody::*;
        match self {
            Desc(_) => DESC_LENS.iter().sum(),
            Flow(v) => v.iter().map(FlowStats::buffer_len).sum(),
            Aggregate(_) => 24,
            PortStats(v) => PORT_STATS_LEN * v.len(),
            Queue(v) => 40 * v.len(),
            Meter(v) => v.iter().map(MeterStats::buffer_len).sum(),
            MeterConfig(v) => v.iter().map(|c| 8 + meter::bands_len(&c.bands)).sum(),
            MeterFeatures(_) => 16,
            PortDesc(v) => PORT_LEN * v.len(),
            Unknown { body, .. } => body.len(),
        }
    }

    fn emit(&self, dst: &mut BytesMut) {
        use MultipartReplyBody::*;
        match self {
            Desc(d) => {
                for (s, n) in [
                    &d.mfr_desc,
                    &d.hw_desc,
                    &d.sw_desc,
                    &d.serial_num,
                    &d.dp_desc,
                ]
                .into_iter()
                .zip(DESC_LENS)
                {
                    put_fixed_str(dst, s, n);
                }
            }
            Flow(v) => v.iter().for_each(|f| f.emit(dst)),
            Aggregate(a) => {
                dst.put_u64(a.packet_count);
                dst.put_u64(a.byte_count);
                dst.put_u32(a.flow_count);
                dst.put_bytes(0, 4);
            }
            PortStats(v) => v.iter().for_each(|p| p.emit(dst)),
            Queue(v) => {
                for q in v {
                    dst.put_u32(q.port_no);
                    dst.put_u32(q.queue_id);
                    dst.put_u64(q.tx_bytes);
                    dst.put_u64(q.tx_packets);
                    dst.put_u64(q.tx_errors);
                    dst.put_u32(q.duration_sec);
                    dst.put_u32(q.duration_nsec);
                }
            }
            Meter(v) => {
                for m in v {
                    dst.put_u32(m.meter_id);
                    dst.put_u16(m.buffer_len() as u16);
                    dst.put_bytes(0, 6);
                    dst.put_u32(m.flow_count);
                    dst.put_u64(m.packet_in_count);
                    dst.put_u64(m.byte_in_count);
                    dst.put_u32(m.duration_sec);
                    dst.put_u32(m.duration_nsec);
                    for b in &m.bands {
                        dst.put_u64(b.packet_band_count);
                        dst.put_u64(b.byte_band_count);
                    }
                }
            }
            MeterConfig(v) => {
                for c in v {
                    dst.put_u16((8 + meter::bands_len(&c.bands)) as u16);
                    dst.put_u16(c.flags.0);
                    dst.put_u32(c.meter_id);
                    c.bands.iter().for_each(|b| b.emit(dst));
                }
            }
            MeterFeatures(f) => {
                dst.put_u32(f.max_meter);
                dst.put_u32(f.band_types);
                dst.put_u32(f.capabilities);
                dst.put_u8(f.max_bands);
                dst.put_u8(f.max_color);
                dst.put_bytes(0, 2);
            }
            PortDesc(v) => v.iter().for_each(|p| p.emit(dst)),
            Unknown { body, .. } => dst.put_slice(body),
        }
    }

    fn parse(t: u16, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        use MultipartReplyBody as B;
        Ok(match t {
            DESC => {
                r.what = "desc reply";
                let mut s = DESC_LENS.map(|_| String::new());
                for (i, n) in DESC_LENS.into_iter().enumerate() {
                    s[i] = get_fixed_str(r.take(n)?);
                }
                r.finish()?;
                let [mfr_desc, hw_desc, sw_desc, serial_num, dp_desc] = s;
                B::Desc(Desc {
                    mfr_desc,
                    hw_desc,
                    sw_desc,
                    serial_num,
                    dp_desc,
                })
            }
            FLOW => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    v.push(FlowStats::parse(r)?);
                }
                B::Flow(v)
            }
            AGGREGATE => {
                r.what = "aggregate reply";
                let a = AggregateStats {
                    packet_count: r.u64()?,
                    byte_count: r.u64()?,
                    flow_count: r.u32()?,
                };
                r.skip(4)?;
                r.finish()?;
                B::Aggregate(a)
            }
            PORT_STATS => {
                r.what = "port stats";
                let mut v = Vec::new();
                while !r.is_empty() {
                    v.push(PortStats::parse(r)?);
                }
                B::PortStats(v)
            }
            QUEUE => {
                r.what = "queue stats";
                let mut v = Vec::new();
                while !r.is_empty() {
                    let mut e = Reader::new(r.take(40)?, "queue stats");
                    v.push(QueueStats {
                        port_no: e.u32()?,
                        queue_id: e.u32()?,
                        tx_bytes: e.u64()?,
                        tx_packets: e.u64()?,
                        tx_errors: e.u64()?,
                        duration_sec: e.u32()?,
                        duration_nsec: e.u32()?,
                    });
                }
                B::Queue(v)
            }
            METER => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    let len = usize::from(r.peek_u16(4)?);
                    let mut e = r.element(len, 40, "meter stats")?;
                    let meter_id = e.u32()?;
                    e.skip(8)?;
                    let flow_count = e.u32()?;
                    let packet_in_count = e.u64()?;
                    let byte_in_count = e.u64()?;
                    let duration_sec = e.u32()?;
                    let duration_nsec = e.u32()?;
                    e.what = "meter band stats";
                    let mut bands = Vec::new();
                    while !e.is_empty() {
                        bands.push(MeterBandStats {
                            packet_band_count: e.u64()?,
                            byte_band_count: e.u64()?,
                        });
                    }
                    v.push(MeterStats {
                        meter_id,
                        flow_count,
                        packet_in_count,
                        byte_in_count,
                        duration_sec,
                        duration_nsec,
                        bands,
                    });
                }
                B::Meter(v)
            }
            METER_CONFIG => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    let len = usize::from(r.peek_u16(0)?);
                    let mut e = r.element(len, 8, "meter config")?;
                    e.skip(2)?;
                    let flags = MeterFlags(e.u16()?);
                    let meter_id = e.u32()?;
                    let bands = meter::parse_bands(&mut e)?;
                    v.push(MeterConfig {
                        flags,
                        meter_id,
                        bands,
                    });
                }
                B::MeterConfig(v)
            }
            METER_FEATURES => {
                r.what = "meter features reply";
                let f = MeterFeatures {
                    max_meter: r.u32()?,
                    band_types: r.u32()?,
                    capabilities: r.u32()?,
                    max_bands: r.u8()?,
                    max_color: r.u8()?,
                };
                r.skip(2)?;
                r.finish()?;
                B::MeterFeatures(f)
            }
            PORT_DESC => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    v.push(Port::parse(r)?);
                }
                B::PortDesc(v)
            }
            _ => B::Unknown {
                mp_type: t,
                body: Bytes::copy_from_slice(r.rest()),
            },
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MultipartReply {
    /// [`REPLY_MORE`] when more parts follow.
    pub flags: u16,
    pub body: MultipartReplyBody,
}

impl MultipartReply {
    pub fn new(body: MultipartReplyBody) -> Self {
        MultipartReply { flags: 0, body }
    }
    /// Whether more parts with the same xid follow.
    pub fn more(&self) -> bool {
        self.flags & REPLY_MORE != 0
    }
    pub fn buffer_len(&self) -> usize {
        8 + self.body.buffer_len()
    }
    pub fn emit(&self, dst: &mut BytesMut) {
        dst.put_u16(self.body.mp_type());
        dst.put_u16(self.flags);
        dst.put_bytes(0, 4);
        self.body.emit(dst);
    }
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.what = "multipart_reply";
        let t = r.u16()?;
        let flags = r.u16()?;
        r.skip(4)?;
        let body = MultipartReplyBody::parse(t, r)?;
        Ok(MultipartReply { flags, body })
    }
}

/// Collects the parts of multipart replies by xid until the last part (no
/// [`REPLY_MORE`]) arrives.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: HashMap<u32, MultipartReplyBody>,
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds one part. Returns the whole reply when `part` is the last one.
    /// On a merge error the partial reply for `xid` is dropped.
    pub fn push(
        &mut self,
        xid: u32,
        part: MultipartReply,
    ) -> Result<Option<MultipartReplyBody>, MergeError> {
        let more = part.more();
        let body = match self.pending.remove(&xid) {
            Some(mut acc) => {
                acc.merge(part.body)?;
                acc
            }
            None => part.body,
        };
        if more {
            self.pending.insert(xid, body);
            Ok(None)
        } else {
            Ok(Some(body))
        }
    }
    /// Number of replies still waiting for parts.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
    /// Forgets a partial reply (e.g. when its request timed out).
    pub fn abandon(&mut self, xid: u32) -> bool {
        self.pending.remove(&xid).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ps(port_no: u32) -> PortStats {
        PortStats {
            port_no,
            rx_packets: u64::from(port_no) * 10,
            ..Default::default()
        }
    }

    #[test]
    fn merge_concatenates_arrays() {
        let mut a = MultipartReplyBody::PortStats(vec![ps(1), ps(2)]);
        a.merge(MultipartReplyBody::PortStats(vec![ps(3)])).unwrap();
        assert_eq!(a, MultipartReplyBody::PortStats(vec![ps(1), ps(2), ps(3)]));
    }

    #[test]
    fn merge_rejects_mismatch_and_single_structures() {
        let mut a = MultipartReplyBody::PortStats(vec![ps(1)]);
        let e = a.merge(MultipartReplyBody::PortDesc(vec![])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot merge a PORT_DESC (13) multipart reply part into a PORT reply"
        );
        let mut d = MultipartReplyBody::Aggregate(AggregateStats::default());
        assert_eq!(
            d.merge(MultipartReplyBody::Aggregate(AggregateStats::default())),
            Err(MergeError::NotSplittable("AGGREGATE"))
        );
        let mut u = MultipartReplyBody::Unknown {
            mp_type: 99,
            body: Bytes::from_static(b"ab"),
        };
        u.merge(MultipartReplyBody::Unknown {
            mp_type: 99,
            body: Bytes::from_static(b"cd"),
        })
        .unwrap();
        assert_eq!(
            u,
            MultipartReplyBody::Unknown {
                mp_type: 99,
                body: Bytes::from_static(b"abcd")
            }
        );
        assert!(u
            .merge(MultipartReplyBody::Unknown {
                mp_type: 98,
                body: Bytes::new()
            })
            .is_err());
    }

    #[test]
    fn reassembler_by_xid() {
        let mut r = Reassembler::new();
        let part = |flags, ports: Vec<u32>| MultipartReply {
            flags,
            body: MultipartReplyBody::PortStats(ports.into_iter().map(ps).collect()),
        };
        assert_eq!(r.push(7, part(REPLY_MORE, vec![1])).unwrap(), None);
        assert_eq!(r.push(8, part(REPLY_MORE, vec![10])).unwrap(), None);
        assert_eq!(r.push(7, part(REPLY_MORE, vec![2])).unwrap(), None);
        assert_eq!(r.pending(), 2);
        assert_eq!(
            r.push(7, part(0, vec![3])).unwrap(),
            Some(MultipartReplyBody::PortStats(vec![ps(1), ps(2), ps(3)]))
        );
        assert_eq!(
            r.push(8, part(0, vec![])).unwrap(),
            Some(MultipartReplyBody::PortStats(vec![ps(10)]))
        );
        assert_eq!(r.pending(), 0);
        // A single-part reply comes straight out.
        assert_eq!(
            r.push(9, part(0, vec![4])).unwrap(),
            Some(MultipartReplyBody::PortStats(vec![ps(4)]))
        );
        // A mismatched part is an error and drops the partial reply.
        r.push(10, part(REPLY_MORE, vec![1])).unwrap();
        assert!(r
            .push(
                10,
                MultipartReply::new(MultipartReplyBody::PortDesc(vec![]))
            )
            .is_err());
        assert_eq!(r.pending(), 0);
    }
}
