//! Codec throughput: decode and encode of a realistic FLOW_MOD, a two-band
//! METER_MOD and a 16-port PORT_STATS reply. Plain `Instant`, ~1 s per case.

use bytes::BytesMut;
use solive::openflow::multipart::{MultipartReplyBody, PortStats};
use solive::openflow::*;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn run(name: &str, what: &str, len: usize, mut f: impl FnMut()) {
    // Warm up, then time batches for about a second.
    for _ in 0..1000 {
        f();
    }
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < Duration::from_millis(1000) {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    println!(
        "{name:<22} {what:<6} {len:>5} B  {:>12.0} msg/s  {:>9.1} MB/s  {:>7.0} ns/msg",
        rate,
        rate * len as f64 / 1e6,
        1e9 / rate
    );
}

fn main() {
    let fm = FlowMod::add(
        0,
        100,
        Match::new()
            .in_port(1)
            .eth_type(0x0800)
            .ip_proto(6)
            .ipv4_src(
                Ipv4Addr::new(10, 0, 0, 0),
                Some(Ipv4Addr::new(255, 255, 255, 0)),
            )
            .ipv4_dst(Ipv4Addr::new(10, 0, 1, 2), None)
            .tcp_dst(8080, None),
        vec![
            Instruction::Meter(1),
            Instruction::ApplyActions(vec![Action::SetQueue(3), Action::output(2)]),
        ],
    )
    .cookie(0x1234);
    let meter = MeterMod::add(
        1,
        MeterFlags::KBPS | MeterFlags::BURST | MeterFlags::STATS,
        vec![
            MeterBand::drop(10_000, 1_000),
            MeterBand::dscp_remark(5_000, 500, 1),
        ],
    );
    let ports = (1..=16)
        .map(|p| PortStats {
            port_no: p,
            rx_packets: 1 << 20,
            tx_bytes: 1 << 30,
            duration_sec: 100,
            ..Default::default()
        })
        .collect();
    let stats = MultipartReply::new(MultipartReplyBody::PortStats(ports));

    println!("single core, release build; each case runs ~1 s");
    for (name, msg) in [
        ("FLOW_MOD", Message::new(1, Body::FlowMod(fm))),
        (
            "METER_MOD (2 bands)",
            Message::new(2, Body::MeterMod(meter)),
        ),
        (
            "PORT_STATS reply (16)",
            Message::new(3, Body::MultipartReply(stats)),
        ),
    ] {
        let bytes = msg.to_bytes();
        assert_eq!(decode(&bytes).unwrap(), msg);
        run(name, "decode", bytes.len(), || {
            black_box(decode(black_box(&bytes)).unwrap());
        });
        let mut buf = BytesMut::with_capacity(bytes.len() * 2);
        run(name, "encode", bytes.len(), || {
            buf.clear();
            black_box(&msg).encode(&mut buf);
            black_box(&buf);
        });
    }
}
