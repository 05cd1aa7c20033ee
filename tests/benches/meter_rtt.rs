//! Round trip of a meter change against a real switch: METER_MOD (modify)
//! followed by BARRIER_REQUEST, timed until the BARRIER_REPLY arrives (so the
//! switch has applied the change), through solive's switch session. Prints
//! p50/p99/max. Needs root and Open vSwitch (`ovs/install.sh`).
//!
//!     cargo bench --bench meter_rtt [-- ROUNDS]

#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use solive::openflow::{Body, MeterBand, MeterFlags, MeterMod};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000);
    let _lock = support::lock();
    let sb = support::Sandbox::start();
    sb.add_bridge("br0");
    let sw = sb.connect_switch("br0").await;
    let flags = MeterFlags::KBPS | MeterFlags::BURST | MeterFlags::STATS;
    let meter = |rate| MeterMod::add(1, flags, vec![MeterBand::drop(rate, 10_000)]);
    sw.send_all("add", vec![Body::MeterMod(meter(50_000))])
        .await
        .unwrap();
    // Warm-up.
    for i in 0..200 {
        let m = MeterMod {
            command: solive::openflow::MeterCommand::Modify,
            ..meter(40_000 + i)
        };
        sw.send_all("warm-up", vec![Body::MeterMod(m)])
            .await
            .unwrap();
    }
    let mut times = Vec::with_capacity(rounds);
    let all = Instant::now();
    for i in 0..rounds {
        let m = MeterMod {
            command: solive::openflow::MeterCommand::Modify,
            ..meter(10_000 + (i as u32 % 50_000))
        };
        let t = Instant::now();
        sw.send_all("bench", vec![Body::MeterMod(m)]).await.unwrap();
        times.push(t.elapsed());
    }
    let total = all.elapsed();
    times.sort();
    println!(
        "meter change round trip (METER_MOD modify + BARRIER, userspace ovs-vswitchd, loopback TCP), {rounds} rounds:"
    );
    println!(
        "  p50 {:.1} us   p99 {:.1} us   max {:.1} us   ({:.0} changes/s sequential)",
        percentile(&times, 0.50).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
        times.last().unwrap().as_secs_f64() * 1e6,
        rounds as f64 / total.as_secs_f64()
    );
    let dump = sb.ofctl(&["dump-meters", "br0"]);
    assert!(dump.contains("meter=1"), "{dump}");
}
