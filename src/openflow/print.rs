//! Human-readable text in the style of `ovs-ofctl ofp-print`, and
//! [`ofp_print`], which decodes hex input for the `solive ofp-print` command.

use super::action::Action;
use super::error::DecodeError;
use super::instruction::Instruction;
use super::meter::MeterBand;
use super::multipart::{self, MultipartReplyBody, MultipartRequestBody};
use super::oxm::{Match, OxmField};
use super::port::{self, Port};
use super::{decode, frame, Body, Message};
use std::fmt::Write;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PrintError {
    #[error("input is not hex")]
    BadHex(#[from] hex::FromHexError),
    #[error("input of {len} bytes is not a whole OpenFlow message (need {need} bytes)")]
    Truncated { len: usize, need: usize },
    #[error("{0} trailing bytes after the {1}-byte message")]
    TrailingBytes(usize, usize),
    #[error("cannot frame the message")]
    Frame(#[from] super::FrameError),
    #[error("cannot decode the message")]
    Decode(#[from] DecodeError),
    #[error("cannot produce JSON")]
    Json(#[from] serde_json::Error),
}

/// Decodes one message given as hex (spaces and newlines allowed, optional
/// `0x` prefix) and prints it as text, or as JSON if `json`.
pub fn ofp_print(hex_in: &str, json: bool) -> Result<String, PrintError> {
    let mut s: String = hex_in.chars().filter(|c| !c.is_whitespace()).collect();
    if s.starts_with("0x") || s.starts_with("0X") {
        s.drain(..2);
    }
    let bytes = hex::decode(&s)?;
    let need = match frame::check(&bytes)? {
        Some(n) => n,
        None => {
            let need =
                frame::Header::peek(&bytes).map_or(frame::HEADER_LEN, |h| usize::from(h.length));
            return Err(PrintError::Truncated {
                len: bytes.len(),
                need,
            });
        }
    };
    if bytes.len() > need {
        return Err(PrintError::TrailingBytes(bytes.len() - need, need));
    }
    let msg = decode(&bytes)?;
    if json {
        Ok(serde_json::to_string_pretty(&msg)?)
    } else {
        Ok(to_text(&msg))
    }
}

fn type_name(t: u8) -> String {
    let n = match t {
        0 => "HELLO",
        1 => "ERROR",
        2 => "ECHO_REQUEST",
        3 => "ECHO_REPLY",
        4 => "EXPERIMENTER",
        5 => "FEATURES_REQUEST",
        6 => "FEATURES_REPLY",
        7 => "GET_CONFIG_REQUEST",
        8 => "GET_CONFIG_REPLY",
        9 => "SET_CONFIG",
        10 => "PACKET_IN",
        11 => "FLOW_REMOVED",
        12 => "PORT_STATUS",
        13 => "PACKET_OUT",
        14 => "FLOW_MOD",
        15 => "GROUP_MOD",
        16 => "PORT_MOD",
        17 => "TABLE_MOD",
        18 => "MULTIPART_REQUEST",
        19 => "MULTIPART_REPLY",
        20 => "BARRIER_REQUEST",
        21 => "BARRIER_REPLY",
        24 => "ROLE_REQUEST",
        25 => "ROLE_REPLY",
        29 => "METER_MOD",
        _ => return format!("UNKNOWN_TYPE_{t}"),
    };
    format!("OFPT_{n}")
}

fn version_name(v: u8) -> String {
    match v {
        1..=6 => format!("OF1.{}", v - 1),
        _ => format!("OF{v:#04x}"),
    }
}

/// Describes a message on one or more lines, like `ovs-ofctl ofp-print`.
pub fn to_text(m: &Message) -> String {
    let mut s = format!(
        "{} ({}) (xid={:#x}):",
        type_name(m.body.msg_type()),
        version_name(m.version()),
        m.xid
    );
    let _ = body_text(&mut s, &m.body);
    s
}

fn hexdump(s: &mut String, b: &[u8]) {
    for chunk in b.chunks(16) {
        s.push_str("\n ");
        for c in chunk {
            let _ = write!(s, " {c:02x}");
        }
    }
}

fn body_text(s: &mut String, b: &Body) -> std::fmt::Result {
    match b {
        Body::Hello(h) => {
            let versions: Vec<String> = (1..=6u8)
                .filter(|v| h.supports(*v))
                .map(version_name)
                .collect();
            write!(s, "\n version bitmap: {}", versions.join(", "))?;
            for e in &h.elements {
                if let super::HelloElement::Unknown { element_type, data } = e {
                    write!(
                        s,
                        "\n unknown element type {element_type} ({} bytes)",
                        data.len()
                    )?;
                }
            }
        }
        Body::Error(e) => {
            let t = e.code.error_type();
            let (_, c) = e.code.to_wire();
            match e.code.code_name() {
                Some(n) => write!(s, " {n}")?,
                None => write!(s, " {t} code {c}")?,
            }
            hexdump(s, &e.data);
        }
        Body::EchoRequest(d) | Body::EchoReply(d) => write!(s, " {} bytes of payload", d.len())?,
        Body::FeaturesRequest
        | Body::GetConfigRequest
        | Body::BarrierRequest
        | Body::BarrierReply => {}
        Body::FeaturesReply(f) => write!(
            s,
            " dpid:{:016x}\nn_tables:{}, n_buffers:{}, auxiliary_id:{}\ncapabilities: {:#x}",
            f.datapath_id, f.n_tables, f.n_buffers, f.auxiliary_id, f.capabilities
        )?,
        Body::GetConfigReply(c) | Body::SetConfig(c) => {
            let frag = match c.flags & 3 {
                0 => "normal",
                1 => "drop",
                2 => "reassemble",
                _ => "nx-match",
            };
            write!(s, " frags={frag} miss_send_len={}", c.miss_send_len)?
        }
        Body::PacketIn(p) => {
            write!(
                s,
                " total_len={} {}table_id={} cookie={:#x} reason={} data_len={}",
                p.total_len,
                match_text(&p.match_).map(|m| m + " ").unwrap_or_default(),
                p.table_id,
                p.cookie,
                p.reason,
                p.data.len()
            )?;
            if p.buffer_id != super::flow_mod::NO_BUFFER {
                write!(s, " buffer={:#010x}", p.buffer_id)?;
            }
        }
        Body::FlowRemoved(f) => {
            let mut parts = vec![format!("priority={}", f.priority)];
            parts.extend(match_text(&f.match_));
            write!(
                s,
                " {} reason={} table_id={} cookie={:#x} duration{}.{:03}s idle{} hard{} pkts{} bytes{}",
                parts.join(","),
                f.reason,
                f.table_id,
                f.cookie,
                f.duration_sec,
                f.duration_nsec / 1_000_000,
                f.idle_timeout,
                f.hard_timeout,
                f.packet_count,
                f.byte_count
            )?
        }
        Body::PortStatus(p) => {
            write!(s, " {}:", p.reason)?;
            port_text(s, &p.desc)?;
        }
        Body::FlowMod(f) => {
            write!(s, " {}", f.command)?;
            if f.table_id != 0 {
                write!(s, " table:{}", f.table_id)?;
            }
            if f.cookie != 0 || f.cookie_mask != 0 {
                write!(s, " cookie:{:#x}", f.cookie)?;
                if f.cookie_mask != 0 {
                    write!(s, "/{:#x}", f.cookie_mask)?;
                }
            }
            let mut parts = vec![format!("priority={}", f.priority)];
            parts.extend(match_text(&f.match_));
            write!(s, " {}", parts.join(","))?;
            if f.idle_timeout != 0 {
                write!(s, " idle:{}", f.idle_timeout)?;
            }
            if f.hard_timeout != 0 {
                write!(s, " hard:{}", f.hard_timeout)?;
            }
            if f.buffer_id != super::flow_mod::NO_BUFFER {
                write!(s, " buffer:{:#x}", f.buffer_id)?;
            }
            if f.out_port != port::ANY {
                write!(s, " out_port:{}", port::name(f.out_port))?;
            }
            if f.out_group != super::flow_mod::GROUP_ANY {
                write!(s, " out_group:{}", f.out_group)?;
            }
            for n in f.flags.names() {
                write!(s, " {n}")?;
            }
            write!(s, " actions={}", instructions_text(&f.instructions))?;
        }
        Body::MeterMod(m) => {
            write!(s, " {} meter={}", m.command, meter_id_name(m.meter_id))?;
            for n in m.flags.names() {
                write!(s, " {n}")?;
            }
            if !m.bands.is_empty() {
                write!(s, " bands={}", bands_text(&m.bands))?;
            }
        }
        Body::MultipartRequest(r) => {
            write!(s, " OFPST_{} request", multipart::type_name(r.mp_type()))?;
            if r.flags != 0 {
                write!(s, " flags={:#x}", r.flags)?;
            }
            match &r.body {
                MultipartRequestBody::Flow(f) | MultipartRequestBody::Aggregate(f) => {
                    let mut parts = Vec::new();
                    if f.table_id != super::flow_mod::TABLE_ALL {
                        parts.push(format!("table_id={}", f.table_id));
                    }
                    if f.out_port != port::ANY {
                        parts.push(format!("out_port={}", port::name(f.out_port)));
                    }
                    if f.cookie_mask != 0 {
                        parts.push(format!("cookie={:#x}/{:#x}", f.cookie, f.cookie_mask));
                    }
                    parts.extend(match_text(&f.match_));
                    if !parts.is_empty() {
                        write!(s, " {}", parts.join(","))?;
                    }
                }
                MultipartRequestBody::PortStats { port_no } => {
                    write!(s, " port={}", port::name(*port_no))?
                }
                MultipartRequestBody::Queue { port_no, queue_id } => {
                    let q = if *queue_id == multipart::QUEUE_ALL {
                        "ALL".into()
                    } else {
                        queue_id.to_string()
                    };
                    write!(s, " port={} queue={q}", port::name(*port_no))?
                }
                MultipartRequestBody::Meter { meter_id }
                | MultipartRequestBody::MeterConfig { meter_id } => {
                    write!(s, " meter={}", meter_id_name(*meter_id))?
                }
                MultipartRequestBody::Unknown { mp_type, body } => {
                    write!(s, " type {mp_type}, {} bytes", body.len())?
                }
                _ => {}
            }
        }
        Body::MultipartReply(r) => {
            write!(s, " OFPST_{} reply", multipart::type_name(r.body.mp_type()))?;
            if r.more() {
                s.push_str(" flags=[more]");
            }
            reply_text(s, &r.body)?;
        }
        Body::RoleRequest(r) | Body::RoleReply(r) => {
            write!(s, " role={}", r.role)?;
            if r.generation_id != u64::MAX {
                write!(s, " generation_id={}", r.generation_id)?;
            }
        }
        Body::Unknown { payload, .. } => {
            write!(s, " {} bytes of payload", payload.len())?;
            hexdump(s, payload);
        }
    }
    Ok(())
}

fn meter_id_name(id: u32) -> String {
    match id {
        super::meter::ALL => "all".into(),
        super::meter::CONTROLLER => "controller".into(),
        super::meter::SLOWPATH => "slowpath".into(),
        n => n.to_string(),
    }
}

fn bands_text(bands: &[MeterBand]) -> String {
    let v: Vec<String> = bands
        .iter()
        .map(|b| match b {
            MeterBand::Drop { rate, burst_size } => {
                format!("type=drop rate={rate} burst_size={burst_size}")
            }
            MeterBand::DscpRemark {
                rate,
                burst_size,
                prec_level,
            } => {
                format!(
                    "type=dscp_remark rate={rate} burst_size={burst_size} prec_level={prec_level}"
                )
            }
            MeterBand::Unknown {
                band_type,
                rate,
                burst_size,
                data,
            } => {
                format!(
                    "type={band_type} rate={rate} burst_size={burst_size} data={}",
                    hex::encode(data)
                )
            }
        })
        .collect();
    v.join(" ")
}

fn port_text(s: &mut String, p: &Port) -> std::fmt::Result {
    write!(
        s,
        "\n {}({}): addr:{}",
        port::name(p.port_no),
        p.name,
        p.hw_addr
    )?;
    write!(
        s,
        "\n     config: {:#x}\n     state: {:#x}",
        p.config, p.state
    )?;
    write!(
        s,
        "\n     speed: {} Mbps now, {} Mbps max",
        p.curr_speed / 1000,
        p.max_speed / 1000
    )
}

fn reply_text(s: &mut String, b: &MultipartReplyBody) -> std::fmt::Result {
    match b {
        MultipartReplyBody::Desc(d) => write!(
            s,
            "\nManufacturer: {}\nHardware: {}\nSoftware: {}\nSerial Num: {}\nDP Description: {}",
            d.mfr_desc, d.hw_desc, d.sw_desc, d.serial_num, d.dp_desc
        )?,
        MultipartReplyBody::Flow(v) => {
            for f in v {
                let mut parts = vec![format!("priority={}", f.priority)];
                parts.extend(match_text(&f.match_));
                write!(
                    s,
                    "\n cookie={:#x}, duration={}.{:03}s, table={}, n_packets={}, n_bytes={}, {} actions={}",
                    f.cookie,
                    f.duration_sec,
                    f.duration_nsec / 1_000_000,
                    f.table_id,
                    f.packet_count,
                    f.byte_count,
                    parts.join(","),
                    instructions_text(&f.instructions)
                )?;
            }
        }
        MultipartReplyBody::Aggregate(a) => write!(
            s,
            " packet_count={} byte_count={} flow_count={}",
            a.packet_count, a.byte_count, a.flow_count
        )?,
        MultipartReplyBody::PortStats(v) => {
            write!(s, " {} ports", v.len())?;
            for p in v {
                write!(
                    s,
                    "\n  port {}: rx pkts={}, bytes={}, drop={}, errs={}\n           tx pkts={}, bytes={}, drop={}, errs={}",
                    port::name(p.port_no),
                    p.rx_packets,
                    p.rx_bytes,
                    p.rx_dropped,
                    p.rx_errors,
                    p.tx_packets,
                    p.tx_bytes,
                    p.tx_dropped,
                    p.tx_errors
                )?;
            }
        }
        MultipartReplyBody::Queue(v) => {
            write!(s, " {} queues", v.len())?;
            for q in v {
                write!(
                    s,
                    "\n  port {} queue {}: bytes={}, pkts={}, errors={}",
                    port::name(q.port_no),
                    q.queue_id,
                    q.tx_bytes,
                    q.tx_packets,
                    q.tx_errors
                )?;
            }
        }
        MultipartReplyBody::Meter(v) => {
            for m in v {
                write!(
                    s,
                    "\nmeter:{} flow_count:{} packet_in_count:{} byte_in_count:{} duration:{}.{:03}s bands:",
                    m.meter_id,
                    m.flow_count,
                    m.packet_in_count,
                    m.byte_in_count,
                    m.duration_sec,
                    m.duration_nsec / 1_000_000
                )?;
                for (i, b) in m.bands.iter().enumerate() {
                    write!(
                        s,
                        "\n{i}: packet_count:{} byte_count:{}",
                        b.packet_band_count, b.byte_band_count
                    )?;
                }
            }
        }
        MultipartReplyBody::MeterConfig(v) => {
            for c in v {
                write!(
                    s,
                    "\nmeter={} {} bands={}",
                    c.meter_id,
                    c.flags.names().join(" "),
                    bands_text(&c.bands)
                )?;
            }
        }
        MultipartReplyBody::MeterFeatures(f) => write!(
            s,
            "\nmax_meter:{} max_bands:{} max_color:{}\nband_types: {:#x}\ncapabilities: {:#x}",
            f.max_meter, f.max_bands, f.max_color, f.band_types, f.capabilities
        )?,
        MultipartReplyBody::PortDesc(v) => {
            for p in v {
                port_text(s, p)?;
            }
        }
        MultipartReplyBody::Unknown { mp_type, body } => {
            write!(s, " type {mp_type}, {} bytes", body.len())?;
            hexdump(s, body);
        }
    }
    Ok(())
}

/// `field=value` items of a match, or nothing for a match-all.
pub fn match_text(m: &Match) -> Option<String> {
    if m.fields.is_empty() {
        return None;
    }
    Some(
        m.fields
            .iter()
            .map(|f| oxm_text(f, "="))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn masked<T: std::fmt::Display>(v: T, m: Option<T>) -> String {
    match m {
        Some(m) => format!("{v}/{m}"),
        None => v.to_string(),
    }
}

fn oxm_text(f: &OxmField, eq: &str) -> String {
    match f {
        OxmField::InPort(p) => format!("in_port{eq}{}", port::name(*p)),
        OxmField::Metadata { value, mask } => {
            format!(
                "metadata{eq}{}",
                masked(format!("{value:#x}"), mask.map(|m| format!("{m:#x}")))
            )
        }
        OxmField::EthDst { addr, mask } => format!("dl_dst{eq}{}", masked(addr, mask.as_ref())),
        OxmField::EthSrc { addr, mask } => format!("dl_src{eq}{}", masked(addr, mask.as_ref())),
        OxmField::EthType(t) => format!("dl_type{eq}{t:#06x}"),
        OxmField::VlanVid { vid, mask } => {
            format!(
                "vlan_vid{eq}{}",
                masked(format!("{vid:#x}"), mask.map(|m| format!("{m:#x}")))
            )
        }
        OxmField::VlanPcp(p) => format!("dl_vlan_pcp{eq}{p}"),
        OxmField::IpDscp(d) => format!("ip_dscp{eq}{d}"),
        OxmField::IpProto(p) => format!("nw_proto{eq}{p}"),
        OxmField::Ipv4Src { addr, mask } => format!("nw_src{eq}{}", masked(addr, mask.as_ref())),
        OxmField::Ipv4Dst { addr, mask } => format!("nw_dst{eq}{}", masked(addr, mask.as_ref())),
        OxmField::TcpSrc { port, mask } => {
            format!(
                "tcp_src{eq}{}",
                masked(port.to_string(), mask.map(|m| format!("{m:#06x}")))
            )
        }
        OxmField::TcpDst { port, mask } => {
            format!(
                "tcp_dst{eq}{}",
                masked(port.to_string(), mask.map(|m| format!("{m:#06x}")))
            )
        }
        OxmField::UdpSrc { port, mask } => {
            format!(
                "udp_src{eq}{}",
                masked(port.to_string(), mask.map(|m| format!("{m:#06x}")))
            )
        }
        OxmField::UdpDst { port, mask } => {
            format!(
                "udp_dst{eq}{}",
                masked(port.to_string(), mask.map(|m| format!("{m:#06x}")))
            )
        }
        OxmField::Unknown {
            class,
            field,
            has_mask,
            payload,
        } => format!(
            "oxm({class:#06x}:{field}{}){eq}{}",
            if *has_mask { "/w" } else { "" },
            hex::encode(payload)
        ),
    }
}

/// The text of an action list, comma separated.
pub fn actions_text(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "drop".into();
    }
    actions
        .iter()
        .map(|a| match a {
            Action::Output { port: p, max_len } => match *p {
                port::CONTROLLER => format!("CONTROLLER:{max_len}"),
                n if n > port::MAX => port::name(n),
                n => format!("output:{n}"),
            },
            Action::SetQueue(q) => format!("set_queue:{q}"),
            Action::Group(g) => format!("group:{g}"),
            Action::PushVlan(t) => format!("push_vlan:{t:#06x}"),
            Action::PopVlan => "pop_vlan".into(),
            Action::SetField(f) => {
                let t = oxm_text(f, "=");
                match t.split_once('=') {
                    Some((k, v)) => format!("set_field:{v}->{k}"),
                    None => format!("set_field:{t}"),
                }
            }
            Action::Experimenter { experimenter, data } => {
                format!("experimenter({experimenter:#x}):{}", hex::encode(data))
            }
            Action::Unknown { action_type, data } => {
                format!("action({action_type}):{}", hex::encode(data))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The text of an instruction list, as `ovs-ofctl` shows it after `actions=`.
pub fn instructions_text(ins: &[Instruction]) -> String {
    if ins.is_empty() {
        return "drop".into();
    }
    ins.iter()
        .map(|i| match i {
            Instruction::GotoTable(t) => format!("goto_table:{t}"),
            Instruction::WriteMetadata { metadata, mask } => {
                format!("write_metadata:{metadata:#x}/{mask:#x}")
            }
            Instruction::WriteActions(a) => format!("write_actions({})", actions_text(a)),
            Instruction::ApplyActions(a) => actions_text(a),
            Instruction::ClearActions => "clear_actions".into(),
            Instruction::Meter(m) => format!("meter:{m}"),
            Instruction::Unknown {
                instruction_type,
                data,
            } => {
                format!("instruction({instruction_type}):{}", hex::encode(data))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
