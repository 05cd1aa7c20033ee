//! Message-level byte tests, round-trip property tests and decoder fuzzing.

use super::multipart::*;
use super::*;
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn roundtrip_bytes(bytes: &[u8], want: &Message) {
    let got = decode(bytes).unwrap();
    assert_eq!(&got, want);
    assert_eq!(&want.to_bytes()[..], bytes);
    assert_eq!(want.buffer_len(), bytes.len());
}

#[test]
fn flow_mod_bytes() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x04, 0x0e, 0x00, 0x70,             // OF1.3, FLOW_MOD, length 112
        0x00, 0x00, 0x00, 0x05,             // xid 5
        0, 0, 0, 0, 0, 0, 0x12, 0x34,       // cookie 0x1234
        0, 0, 0, 0, 0, 0, 0, 0,             // cookie_mask 0
        0x00,                               // table 0
        0x00,                               // command ADD
        0x00, 0x0a,                         // idle_timeout 10
        0x00, 0x00,                         // hard_timeout 0
        0x00, 0x64,                         // priority 100
        0xff, 0xff, 0xff, 0xff,             // buffer_id NO_BUFFER
        0xff, 0xff, 0xff, 0xff,             // out_port ANY
        0xff, 0xff, 0xff, 0xff,             // out_group ANY
        0x00, 0x01,                         // flags SEND_FLOW_REM
        0x00, 0x00,                         // pad
        0x00, 0x01, 0x00, 0x17,             // match OXM, length 23
        0x80, 0x00, 0x00, 0x04, 0, 0, 0, 1, //   in_port=1
        0x80, 0x00, 0x0a, 0x02, 0x08, 0x00, //   eth_type=0x0800
        0x80, 0x00, 0x14, 0x01, 0x06,       //   ip_proto=6
        0x00,                               //   pad to 24
        0x00, 0x06, 0x00, 0x08,             // METER, len 8
        0x00, 0x00, 0x00, 0x01,             //   meter 1
        0x00, 0x04, 0x00, 0x20,             // APPLY_ACTIONS, len 32
        0x00, 0x00, 0x00, 0x00,             //   pad
        0x00, 0x15, 0x00, 0x08,             //   SET_QUEUE, len 8
        0x00, 0x00, 0x00, 0x03,             //     queue 3
        0x00, 0x00, 0x00, 0x10,             //   OUTPUT, len 16
        0xff, 0xff, 0xff, 0xfa,             //     NORMAL
        0x00, 0x00, 0, 0, 0, 0, 0, 0,       //     max_len 0, pad
    ];
    let fm = FlowMod::add(
        0,
        100,
        Match::new().in_port(1).eth_type(0x0800).ip_proto(6),
        vec![
            Instruction::Meter(1),
            Instruction::ApplyActions(vec![Action::SetQueue(3), Action::output(port::NORMAL)]),
        ],
    )
    .cookie(0x1234)
    .timeouts(10, 0)
    .flags(FlowModFlags::SEND_FLOW_REM);
    let want = Message::new(5, Body::FlowMod(fm));
    roundtrip_bytes(bytes, &want);
    assert_eq!(
        print::to_text(&want),
        "OFPT_FLOW_MOD (OF1.3) (xid=0x5): ADD cookie:0x1234 priority=100,in_port=1,dl_type=0x0800,nw_proto=6 idle:10 send_flow_rem actions=meter:1,set_queue:3,NORMAL"
    );
}

#[test]
fn meter_mod_bytes() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x04, 0x1d, 0x00, 0x30,       // OF1.3, METER_MOD, length 48
        0x00, 0x00, 0x00, 0x09,       // xid 9
        0x00, 0x00,                   // command ADD
        0x00, 0x0d,                   // flags KBPS|BURST|STATS
        0x00, 0x00, 0x00, 0x01,       // meter 1
        0x00, 0x01, 0x00, 0x10,       // band DROP, len 16
        0x00, 0x00, 0x27, 0x10,       //   rate 10000
        0x00, 0x00, 0x03, 0xe8,       //   burst 1000
        0x00, 0x00, 0x00, 0x00,       //   pad
        0x00, 0x02, 0x00, 0x10,       // band DSCP_REMARK, len 16
        0x00, 0x00, 0x13, 0x88,       //   rate 5000
        0x00, 0x00, 0x01, 0xf4,       //   burst 500
        0x01, 0x00, 0x00, 0x00,       //   prec_level 1, pad
    ];
    let mm = MeterMod::add(
        1,
        MeterFlags::KBPS | MeterFlags::BURST | MeterFlags::STATS,
        vec![
            MeterBand::drop(10000, 1000),
            MeterBand::dscp_remark(5000, 500, 1),
        ],
    );
    roundtrip_bytes(bytes, &Message::new(9, Body::MeterMod(mm)));
}

#[test]
fn hello_bytes_any_version() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x06, 0x00, 0x00, 0x20,       // OF1.5 HELLO, length 32
        0x00, 0x00, 0x00, 0x01,       // xid 1
        0x00, 0x01, 0x00, 0x08,       // VERSIONBITMAP, length 8
        0x00, 0x00, 0x00, 0x52,       //   bits 1, 4, 6
        0x00, 0x07, 0x00, 0x09,       // unknown element 7, length 9
        0xaa, 0xbb, 0xcc, 0xdd, 0xee, //   data
        0, 0, 0, 0, 0, 0, 0,          //   pad to 16
    ];
    let want = Message::new(
        1,
        Body::Hello(Hello {
            version: 6,
            elements: vec![
                HelloElement::VersionBitmap(vec![0x52]),
                HelloElement::Unknown {
                    element_type: 7,
                    data: Bytes::from_static(&[0xaa, 0xbb, 0xcc, 0xdd, 0xee]),
                },
            ],
        }),
    );
    roundtrip_bytes(bytes, &want);
    let Body::Hello(h) = want.body else {
        unreachable!()
    };
    assert!(h.supports(4) && h.supports(6) && h.supports(1) && !h.supports(5));
}

#[test]
fn non_hello_of_other_version_is_rejected() {
    let e = decode(&[0x01, 0x02, 0x00, 0x08, 0, 0, 0, 1]).unwrap_err();
    assert_eq!(
        e,
        DecodeError::UnsupportedVersion {
            version: 1,
            msg_type: 2
        }
    );
}

#[test]
fn error_bytes() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x04, 0x01, 0x00, 0x10,       // OF1.3, ERROR, length 16
        0x00, 0x00, 0x00, 0x03,       // xid 3
        0x00, 0x0c,                   // type METER_MOD_FAILED
        0x00, 0x01,                   // code METER_EXISTS
        0x04, 0x1d, 0x00, 0x30,       // data: start of the request
    ];
    let want = Message::new(
        3,
        Body::Error(ErrorMsg {
            code: ErrorCode::MeterModFailed(messages::MeterModFailedCode::MeterExists),
            data: Bytes::from_static(&[4, 0x1d, 0, 0x30]),
        }),
    );
    roundtrip_bytes(bytes, &want);
    assert!(print::to_text(&want).contains("OFPMMFC_METER_EXISTS"));
    // An unknown type keeps its numbers.
    let m = decode(&[4, 1, 0, 12, 0, 0, 0, 1, 0x00, 0x63, 0x00, 0x02]).unwrap();
    let Body::Error(e) = m.body else { panic!() };
    assert_eq!(
        e.code,
        ErrorCode::Other {
            err_type: ErrorType::Other(99),
            code: 2
        }
    );
}

#[test]
fn role_and_config_bytes() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x04, 0x18, 0x00, 0x18,       // OF1.3, ROLE_REQUEST, length 24
        0x00, 0x00, 0x00, 0x02,       // xid 2
        0x00, 0x00, 0x00, 0x02,       // role MASTER
        0x00, 0x00, 0x00, 0x00,       // pad
        0, 0, 0, 0, 0, 0, 0, 0x07,    // generation_id 7
    ];
    roundtrip_bytes(
        bytes,
        &Message::new(
            2,
            Body::RoleRequest(Role {
                role: ControllerRole::Master,
                generation_id: 7,
            }),
        ),
    );
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x04, 0x09, 0x00, 0x0c,       // OF1.3, SET_CONFIG, length 12
        0x00, 0x00, 0x00, 0x04,       // xid 4
        0x00, 0x00,                   // flags FRAG_NORMAL
        0xff, 0xff,                   // miss_send_len NO_BUFFER
    ];
    roundtrip_bytes(
        bytes,
        &Message::new(
            4,
            Body::SetConfig(SwitchConfig {
                flags: 0,
                miss_send_len: 0xffff,
            }),
        ),
    );
}

#[test]
fn multipart_bytes() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x04, 0x12, 0x00, 0x18,       // OF1.3, MULTIPART_REQUEST, length 24
        0x00, 0x00, 0x00, 0x0a,       // xid 10
        0x00, 0x09,                   // type METER
        0x00, 0x00,                   // flags
        0x00, 0x00, 0x00, 0x00,       // pad
        0xff, 0xff, 0xff, 0xff,       // meter_id ALL
        0x00, 0x00, 0x00, 0x00,       // pad
    ];
    roundtrip_bytes(
        bytes,
        &Message::new(
            10,
            Body::MultipartRequest(MultipartRequest::meter_stats(meter::ALL)),
        ),
    );

    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x04, 0x13, 0x00, 0x48,       // OF1.3, MULTIPART_REPLY, length 72
        0x00, 0x00, 0x00, 0x0b,       // xid 11
        0x00, 0x09,                   // type METER
        0x00, 0x01,                   // flags REPLY_MORE
        0x00, 0x00, 0x00, 0x00,       // pad
        0x00, 0x00, 0x00, 0x01,       // meter 1
        0x00, 0x38,                   // len 56
        0, 0, 0, 0, 0, 0,             // pad
        0x00, 0x00, 0x00, 0x02,       // flow_count 2
        0, 0, 0, 0, 0, 0, 0, 100,     // packet_in_count
        0, 0, 0, 0, 0, 0, 0x27, 0x10, // byte_in_count 10000
        0x00, 0x00, 0x00, 0x05,       // duration_sec
        0x00, 0x00, 0x00, 0x06,       // duration_nsec
        0, 0, 0, 0, 0, 0, 0, 3,       // band 0 packets
        0, 0, 0, 0, 0, 0, 0x01, 0x2c, // band 0 bytes 300
    ];
    let want = MultipartReply {
        flags: REPLY_MORE,
        body: MultipartReplyBody::Meter(vec![MeterStats {
            meter_id: 1,
            flow_count: 2,
            packet_in_count: 100,
            byte_in_count: 10000,
            duration_sec: 5,
            duration_nsec: 6,
            bands: vec![MeterBandStats {
                packet_band_count: 3,
                byte_band_count: 300,
            }],
        }]),
    };
    roundtrip_bytes(bytes, &Message::new(11, Body::MultipartReply(want)));
}

#[test]
fn unknown_message_type_is_kept() {
    // OF1.3 PACKET_OUT (13) is not decoded: kept as payload.
    let bytes = [4, 13, 0, 10, 0, 0, 0, 1, 0xab, 0xcd];
    roundtrip_bytes(
        &bytes,
        &Message::new(
            1,
            Body::Unknown {
                msg_type: 13,
                payload: Bytes::from_static(&[0xab, 0xcd]),
            },
        ),
    );
}

/// Found by `valid_header_random_body_never_panics`: a PORT_STATUS whose
/// 16-byte name has no terminator, or holds invalid UTF-8, must decode to a
/// name that survives a round trip (OVS also keeps at most 15 bytes).
#[test]
fn unterminated_and_invalid_port_names_round_trip() {
    for name in [[1u8; 16], [0xff; 16]] {
        let mut b = vec![OFP_VERSION, 12, 0, 80, 0, 0, 0, 0];
        b.extend_from_slice(&[0; 8]); // reason + pad
        b.extend_from_slice(&[0; 16]); // port_no, pad, hw_addr, pad
        b.extend_from_slice(&name);
        b.extend_from_slice(&[0; 32]);
        let m = decode(&b).unwrap();
        let Body::PortStatus(ps) = &m.body else {
            panic!("{m:?}")
        };
        assert!(ps.desc.name.len() <= 15, "{:?}", ps.desc.name);
        assert_eq!(decode(&m.to_bytes()), Ok(m));
    }
}

#[test]
fn decode_errors_name_the_place() {
    // FLOW_MOD whose match length is 3.
    let mut fm = Message::new(1, Body::FlowMod(FlowMod::add(0, 1, Match::new(), vec![])))
        .to_bytes()
        .to_vec();
    fm[51] = 3;
    assert_eq!(
        decode(&fm).unwrap_err().to_string(),
        "flow_mod match: length 3 is shorter than its 4-byte header"
    );
    // Truncated fixed part of a ROLE_REQUEST.
    let e = decode(&[4, 24, 0, 12, 0, 0, 0, 1, 0, 0, 0, 2]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "role_request: needs 4 bytes but only 0 remain"
    );
    // Trailing bytes after BARRIER_REQUEST.
    let e = decode(&[4, 20, 0, 9, 0, 0, 0, 1, 0]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "barrier_request: 1 unexpected bytes after the body"
    );
    // Length mismatch.
    assert!(matches!(
        decode(&[4, 20, 0, 12, 0, 0, 0, 1]),
        Err(DecodeError::LengthMismatch { .. })
    ));
}

#[test]
fn ofp_print_cases() {
    let ok = print::ofp_print("0x04 14 00 08\n 00 00 00 07", false).unwrap();
    assert_eq!(ok, "OFPT_BARRIER_REQUEST (OF1.3) (xid=0x7):");
    assert!(print::ofp_print("0414000800000", false)
        .unwrap_err()
        .to_string()
        .contains("not hex"));
    assert!(print::ofp_print("0414000800zz0007", false)
        .unwrap_err()
        .to_string()
        .contains("not hex"));
    let e = print::ofp_print("04140008000000070000", false).unwrap_err();
    assert_eq!(e.to_string(), "2 trailing bytes after the 8-byte message");
    let e = print::ofp_print("0418001800000002", false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "input of 8 bytes is not a whole OpenFlow message (need 24 bytes)"
    );
    let e = print::ofp_print("0418000c0000000200000002", false).unwrap_err();
    assert!(matches!(e, print::PrintError::Decode(_)));
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "role_request: needs 4 bytes but only 0 remain"
    );
    let t = print::ofp_print("04 63 00 0a 00 00 00 01 ab cd", false).unwrap();
    assert!(
        t.starts_with("UNKNOWN_TYPE_99 (OF1.3) (xid=0x1): 2 bytes of payload"),
        "{t}"
    );
    let j = print::ofp_print("04 63 00 0a 00 00 00 01 ab cd", true).unwrap();
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["body"]["Unknown"]["payload"], "abcd");
    assert_eq!(v["xid"], 1);
}

// ---------------------------------------------------------------- proptest

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}
fn ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}
fn bytes_of(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}
/// Bytes whose length is congruent to `r` modulo 8.
fn bytes_mod8(r: usize, max_units: usize) -> impl Strategy<Value = Bytes> {
    (0..max_units)
        .prop_flat_map(move |n| vec(any::<u8>(), n * 8 + r))
        .prop_map(Bytes::from)
}

fn oxm() -> impl Strategy<Value = OxmField> {
    prop_oneof![
        any::<u32>().prop_map(OxmField::InPort),
        (any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(value, mask)| OxmField::Metadata { value, mask }),
        (mac(), proptest::option::of(mac()))
            .prop_map(|(addr, mask)| OxmField::EthDst { addr, mask }),
        (mac(), proptest::option::of(mac()))
            .prop_map(|(addr, mask)| OxmField::EthSrc { addr, mask }),
        any::<u16>().prop_map(OxmField::EthType),
        (any::<u16>(), proptest::option::of(any::<u16>()))
            .prop_map(|(vid, mask)| OxmField::VlanVid { vid, mask }),
        any::<u8>().prop_map(OxmField::VlanPcp),
        any::<u8>().prop_map(OxmField::IpDscp),
        any::<u8>().prop_map(OxmField::IpProto),
        (ip(), proptest::option::of(ip()))
            .prop_map(|(addr, mask)| OxmField::Ipv4Src { addr, mask }),
        (ip(), proptest::option::of(ip()))
            .prop_map(|(addr, mask)| OxmField::Ipv4Dst { addr, mask }),
        (any::<u16>(), any::<Option<u16>>())
            .prop_map(|(port, mask)| OxmField::TcpSrc { port, mask }),
        (any::<u16>(), any::<Option<u16>>())
            .prop_map(|(port, mask)| OxmField::TcpDst { port, mask }),
        (any::<u16>(), any::<Option<u16>>())
            .prop_map(|(port, mask)| OxmField::UdpSrc { port, mask }),
        (any::<u16>(), any::<Option<u16>>())
            .prop_map(|(port, mask)| OxmField::UdpDst { port, mask }),
        (any::<u16>(), 0u8..128, any::<bool>(), bytes_of(40))
            .prop_map(|(class, field, has_mask, payload)| OxmField::Unknown {
                class,
                field,
                has_mask,
                payload
            })
            .prop_filter("spells a known field", OxmField::is_canonical),
    ]
}

fn match_() -> impl Strategy<Value = Match> {
    vec(oxm(), 0..6).prop_map(|fields| Match { fields })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (any::<u32>(), any::<u16>()).prop_map(|(port, max_len)| Action::Output { port, max_len }),
        any::<u32>().prop_map(Action::SetQueue),
        any::<u32>().prop_map(Action::Group),
        any::<u16>().prop_map(Action::PushVlan),
        Just(Action::PopVlan),
        oxm().prop_map(Action::SetField),
        (any::<u32>(), bytes_mod8(0, 3))
            .prop_map(|(experimenter, data)| Action::Experimenter { experimenter, data }),
        (any::<u16>(), bytes_mod8(4, 3))
            .prop_filter("known type", |(t, _)| ![0, 17, 18, 21, 22, 25, 0xffff]
                .contains(t))
            .prop_map(|(action_type, data)| Action::Unknown { action_type, data }),
    ]
}

fn instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        any::<u8>().prop_map(Instruction::GotoTable),
        (any::<u64>(), any::<u64>())
            .prop_map(|(metadata, mask)| Instruction::WriteMetadata { metadata, mask }),
        vec(action(), 0..4).prop_map(Instruction::WriteActions),
        vec(action(), 0..4).prop_map(Instruction::ApplyActions),
        Just(Instruction::ClearActions),
        any::<u32>().prop_map(Instruction::Meter),
        (7u16..=0xffff, bytes_mod8(4, 3)).prop_map(|(instruction_type, data)| {
            Instruction::Unknown {
                instruction_type,
                data,
            }
        }),
    ]
}

fn flow_mod() -> impl Strategy<Value = FlowMod> {
    (
        (
            any::<u64>(),
            any::<u64>(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
        ),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u16>()),
        match_(),
        vec(instruction(), 0..4),
    )
        .prop_map(
            |(
                (cookie, cookie_mask, table_id, cmd, idle, hard, priority),
                (buffer_id, out_port, out_group, flags),
                m,
                ins,
            )| {
                FlowMod {
                    cookie,
                    cookie_mask,
                    table_id,
                    command: cmd.into(),
                    idle_timeout: idle,
                    hard_timeout: hard,
                    priority,
                    buffer_id,
                    out_port,
                    out_group,
                    flags: FlowModFlags(flags),
                    match_: m,
                    instructions: ins,
                }
            },
        )
}

fn band() -> impl Strategy<Value = MeterBand> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(r, b)| MeterBand::drop(r, b)),
        (any::<u32>(), any::<u32>(), any::<u8>())
            .prop_map(|(r, b, p)| MeterBand::dscp_remark(r, b, p)),
        (3u16..=0xffff, any::<u32>(), any::<u32>(), bytes_mod8(4, 3)).prop_map(
            |(band_type, rate, burst_size, data)| {
                MeterBand::Unknown {
                    band_type,
                    rate,
                    burst_size,
                    data,
                }
            }
        ),
    ]
}

fn meter_mod() -> impl Strategy<Value = MeterMod> {
    (any::<u16>(), any::<u16>(), any::<u32>(), vec(band(), 0..4)).prop_map(
        |(c, f, meter_id, bands)| MeterMod {
            command: c.into(),
            flags: MeterFlags(f),
            meter_id,
            bands,
        },
    )
}

fn port_desc() -> impl Strategy<Value = Port> {
    ("[a-z0-9-]{0,15}", mac(), any::<[u32; 9]>()).prop_map(|(name, hw_addr, v)| Port {
        port_no: v[0],
        hw_addr,
        name,
        config: v[1],
        state: v[2],
        curr: v[3],
        advertised: v[4],
        supported: v[5],
        peer: v[6],
        curr_speed: v[7],
        max_speed: v[8],
    })
}

fn flow_stats_request() -> impl Strategy<Value = FlowStatsRequest> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        match_(),
    )
        .prop_map(
            |(table_id, out_port, out_group, cookie, cookie_mask, match_)| FlowStatsRequest {
                table_id,
                out_port,
                out_group,
                cookie,
                cookie_mask,
                match_,
            },
        )
}

fn mp_request() -> impl Strategy<Value = MultipartRequest> {
    use MultipartRequestBody as B;
    let body = prop_oneof![
        Just(B::Desc),
        flow_stats_request().prop_map(B::Flow),
        flow_stats_request().prop_map(B::Aggregate),
        any::<u32>().prop_map(|port_no| B::PortStats { port_no }),
        (any::<u32>(), any::<u32>()).prop_map(|(port_no, queue_id)| B::Queue { port_no, queue_id }),
        any::<u32>().prop_map(|meter_id| B::Meter { meter_id }),
        any::<u32>().prop_map(|meter_id| B::MeterConfig { meter_id }),
        Just(B::MeterFeatures),
        Just(B::PortDesc),
        (14u16..=0xffff, bytes_of(40)).prop_map(|(mp_type, body)| B::Unknown { mp_type, body }),
        (3u16..=3, bytes_of(40)).prop_map(|(mp_type, body)| B::Unknown { mp_type, body }),
    ];
    (any::<u16>(), body).prop_map(|(flags, body)| MultipartRequest { flags, body })
}

fn mp_reply() -> impl Strategy<Value = MultipartReply> {
    use MultipartReplyBody as B;
    let s = "[ -~]{0,30}";
    let body = prop_oneof![
        (s, s, s, s, s).prop_map(|(a, b, c, d, e)| B::Desc(Desc {
            mfr_desc: a,
            hw_desc: b,
            sw_desc: c,
            serial_num: d,
            dp_desc: e
        })),
        vec(
            (
                any::<(u8, u32, u32, u16, u16, u16, u16)>(),
                any::<(u64, u64, u64)>(),
                match_(),
                vec(instruction(), 0..3)
            ),
            0..3
        )
        .prop_map(|v| B::Flow(
            v.into_iter()
                .map(
                    |(
                        (table_id, ds, dn, priority, idle, hard, flags),
                        (cookie, pc, bc),
                        m,
                        ins,
                    )| FlowStats {
                        table_id,
                        duration_sec: ds,
                        duration_nsec: dn,
                        priority,
                        idle_timeout: idle,
                        hard_timeout: hard,
                        flags,
                        cookie,
                        packet_count: pc,
                        byte_count: bc,
                        match_: m,
                        instructions: ins,
                    }
                )
                .collect()
        )),
        any::<(u64, u64, u32)>().prop_map(|(packet_count, byte_count, flow_count)| B::Aggregate(
            AggregateStats {
                packet_count,
                byte_count,
                flow_count
            }
        )),
        vec(
            (any::<u32>(), any::<[u64; 12]>(), any::<(u32, u32)>()),
            0..4
        )
        .prop_map(|v| B::PortStats(
            v.into_iter()
                .map(|(port_no, c, (ds, dn))| PortStats {
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
                    duration_sec: ds,
                    duration_nsec: dn,
                })
                .collect()
        )),
        vec(any::<(u32, u32, u64, u64, u64, u32, u32)>(), 0..4).prop_map(|v| B::Queue(
            v.into_iter()
                .map(
                    |(
                        port_no,
                        queue_id,
                        tx_bytes,
                        tx_packets,
                        tx_errors,
                        duration_sec,
                        duration_nsec,
                    )| QueueStats {
                        port_no,
                        queue_id,
                        tx_bytes,
                        tx_packets,
                        tx_errors,
                        duration_sec,
                        duration_nsec
                    }
                )
                .collect()
        )),
        vec(
            (
                any::<(u32, u32, u64, u64, u32, u32)>(),
                vec(any::<(u64, u64)>(), 0..3)
            ),
            0..3
        )
        .prop_map(|v| B::Meter(
            v.into_iter()
                .map(|((meter_id, flow_count, pi, bi, ds, dn), b)| MeterStats {
                    meter_id,
                    flow_count,
                    packet_in_count: pi,
                    byte_in_count: bi,
                    duration_sec: ds,
                    duration_nsec: dn,
                    bands: b
                        .into_iter()
                        .map(|(p, b)| MeterBandStats {
                            packet_band_count: p,
                            byte_band_count: b
                        })
                        .collect(),
                })
                .collect()
        )),
        vec((any::<u16>(), any::<u32>(), vec(band(), 0..3)), 0..3).prop_map(|v| B::MeterConfig(
            v.into_iter()
                .map(|(f, meter_id, bands)| MeterConfig {
                    flags: MeterFlags(f),
                    meter_id,
                    bands
                })
                .collect()
        )),
        any::<(u32, u32, u32, u8, u8)>().prop_map(
            |(max_meter, band_types, capabilities, max_bands, max_color)| {
                B::MeterFeatures(MeterFeatures {
                    max_meter,
                    band_types,
                    capabilities,
                    max_bands,
                    max_color,
                })
            }
        ),
        vec(port_desc(), 0..3).prop_map(B::PortDesc),
        (14u16..=0xffff, bytes_of(40)).prop_map(|(mp_type, body)| B::Unknown { mp_type, body }),
    ];
    (any::<u16>(), body).prop_map(|(flags, body)| MultipartReply { flags, body })
}

fn body() -> impl Strategy<Value = Body> {
    let known = [
        0u8, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 14, 18, 19, 20, 21, 24, 25, 29,
    ];
    prop_oneof![
        (
            1u8..=6,
            vec(
                prop_oneof![
                    vec(any::<u32>(), 0..3).prop_map(HelloElement::VersionBitmap),
                    (2u16..=0xffff, bytes_of(20)).prop_map(|(element_type, data)| {
                        HelloElement::Unknown { element_type, data }
                    }),
                ],
                0..3
            )
        )
            .prop_map(|(version, elements)| Body::Hello(Hello { version, elements })),
        (any::<u16>(), any::<u16>(), bytes_of(64)).prop_map(|(t, c, data)| Body::Error(ErrorMsg {
            code: ErrorCode::from_wire(t, c),
            data
        })),
        bytes_of(64).prop_map(Body::EchoRequest),
        bytes_of(64).prop_map(Body::EchoReply),
        Just(Body::FeaturesRequest),
        any::<(u64, u32, u8, u8, u32, u32)>().prop_map(|(a, b, c, d, e, f)| Body::FeaturesReply(
            SwitchFeatures {
                datapath_id: a,
                n_buffers: b,
                n_tables: c,
                auxiliary_id: d,
                capabilities: e,
                reserved: f
            }
        )),
        Just(Body::GetConfigRequest),
        any::<(u16, u16)>().prop_map(|(flags, m)| Body::GetConfigReply(SwitchConfig {
            flags,
            miss_send_len: m
        })),
        any::<(u16, u16)>().prop_map(|(flags, m)| Body::SetConfig(SwitchConfig {
            flags,
            miss_send_len: m
        })),
        (any::<(u32, u16, u8, u8, u64)>(), match_(), bytes_of(64)).prop_map(
            |((b, t, r, tb, c), m, data)| {
                Body::PacketIn(PacketIn {
                    buffer_id: b,
                    total_len: t,
                    reason: r.into(),
                    table_id: tb,
                    cookie: c,
                    match_: m,
                    data,
                })
            }
        ),
        (
            any::<(u64, u16, u8, u8, u32, u32)>(),
            any::<(u16, u16, u64, u64)>(),
            match_()
        )
            .prop_map(
                |((cookie, priority, r, table_id, ds, dn), (it, ht, pc, bc), m)| Body::FlowRemoved(
                    FlowRemoved {
                        cookie,
                        priority,
                        reason: r.into(),
                        table_id,
                        duration_sec: ds,
                        duration_nsec: dn,
                        idle_timeout: it,
                        hard_timeout: ht,
                        packet_count: pc,
                        byte_count: bc,
                        match_: m,
                    }
                )
            ),
        (any::<u8>(), port_desc()).prop_map(|(r, desc)| Body::PortStatus(PortStatus {
            reason: r.into(),
            desc
        })),
        flow_mod().prop_map(Body::FlowMod),
        mp_request().prop_map(Body::MultipartRequest),
        mp_reply().prop_map(Body::MultipartReply),
        Just(Body::BarrierRequest),
        Just(Body::BarrierReply),
        any::<(u32, u64)>().prop_map(|(r, g)| Body::RoleRequest(Role {
            role: r.into(),
            generation_id: g
        })),
        any::<(u32, u64)>().prop_map(|(r, g)| Body::RoleReply(Role {
            role: r.into(),
            generation_id: g
        })),
        meter_mod().prop_map(Body::MeterMod),
        (any::<u8>(), bytes_of(64))
            .prop_filter("known type", move |(t, _)| !known.contains(t))
            .prop_map(|(msg_type, payload)| Body::Unknown { msg_type, payload }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip(xid in any::<u32>(), body in body()) {
        let m = Message { xid, body };
        let b = m.to_bytes();
        prop_assert_eq!(b.len(), m.buffer_len());
        prop_assert_eq!(frame::check(&b), Ok(Some(b.len())));
        let back = decode(&b);
        prop_assert_eq!(back.as_ref(), Ok(&m));
        // The printer and JSON never fail on anything decodable.
        let _ = print::to_text(&m);
        prop_assert!(serde_json::to_string(&m).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in vec(any::<u8>(), 0..300)) {
        let _ = frame::check(&b);
        if let Ok(m) = decode(&b) {
            // Whatever decodes re-encodes to a decodable message.
            prop_assert_eq!(decode(&m.to_bytes()), Ok(m));
        }
    }

    #[test]
    fn valid_header_random_body_never_panics(t in 0u8..=35, xid in any::<u32>(), body in vec(any::<u8>(), 0..300)) {
        let mut b = vec![OFP_VERSION, t];
        b.extend_from_slice(&((body.len() + 8) as u16).to_be_bytes());
        b.extend_from_slice(&xid.to_be_bytes());
        b.extend_from_slice(&body);
        if let Ok(m) = decode(&b) {
            let _ = print::to_text(&m);
            prop_assert_eq!(decode(&m.to_bytes()), Ok(m));
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(body in body(), idx in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut b = Message::new(1, body).to_bytes().to_vec();
        if b.len() > 8 {
            let i = 8 + idx.index(b.len() - 8);
            b[i] = byte;
            let n = 8 + cut.index(b.len() - 7);
            b.truncate(n);
            let len = (b.len() as u16).to_be_bytes();
            b[2] = len[0];
            b[3] = len[1];
        }
        let _ = decode(&b);
    }
}
