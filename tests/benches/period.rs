//! The cost of one controller period.
//!
//! A. Against a real switch (userspace ovs-vswitchd in a sandbox, loopback
//!    TCP): what the controller does each period for a source host with an
//!    active reservation, end to end: `poll_switch` (port, meter and
//!    migration-flow statistics), `plan_host` in meter mode with the
//!    reservation alternating between two values (so the meter really
//!    changes), the desired state, and `reconcile_switch` (reads flows and
//!    meters, sends the meter modify and the refreshed throttling flows, waits
//!    for the barrier). Prints p50/p99/max.
//! B. Pure CPU cost of one period for 100 simultaneous reservations on 20
//!    hosts: `Reservation::tick` for every reservation, then for every host
//!    `legs_for_host` + `plan_host` + `reconcile::plan` against what the
//!    previous period wanted. Prints mean/p99 and the share of a core at a 1 s
//!    period.
//!
//! Needs root and Open vSwitch (`ovs/install.sh`) for part A.
//!
//!     cargo bench --bench period

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use solive::controller::enforce::{
    self, HostFacts, Leg, MigrationMatch, MigrationPorts, Mode, Role, VmPort, APP_OUT_METER,
};
use solive::controller::reconcile::{self, Observed};
use solive::controller::reservation::{legs_for_host, HostInfo, Reservation, ReservationRequest};
use solive::controller::{poll_switch, reconcile_switch, Desired};
use solive::openflow::Body;
use solive::reserve::Measurement;

const SWITCH_PERIODS: usize = 500;
const SWITCH_WARMUP: usize = 20;
const PURE_PERIODS: usize = 2000;
const PURE_WARMUP: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} us")
    }
}

/// The desired state of a host: the baseline plus a plan's flows and meters,
/// put in as the controller does.
fn desired_from(plan: &enforce::HostPlan) -> Desired {
    let mut d = Desired::baseline();
    plan.apply_to(&mut d);
    d
}

// ---------------------------------------------------------------- part A

fn ofport(sb: &support::Sandbox, iface: &str) -> u32 {
    for _ in 0..50 {
        let out = sb.vsctl(&["get", "interface", iface, "ofport"]);
        if let Ok(n) = out.trim().parse::<i64>() {
            if n > 0 {
                return n as u32;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("interface {iface} got no ofport");
}

fn add_internal(sb: &support::Sandbox, name: &str, vm: Option<&str>) {
    let mut args = vec![
        "add-port".to_string(),
        "br0".into(),
        name.into(),
        "--".into(),
        "set".into(),
        "interface".into(),
        name.into(),
        "type=internal".into(),
    ];
    if let Some(vm) = vm {
        args.push(format!("external_ids:vm-id={vm}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sb.vsctl(&args);
}

async fn switch_periods() -> (Vec<Duration>, usize) {
    let _lock = support::lock();
    let sb = support::Sandbox::start();
    sb.add_bridge("br0");
    add_internal(&sb, "up0", None);
    add_internal(&sb, "vm1", Some("vm1"));
    add_internal(&sb, "vm2", Some("vm2"));
    let (up, vm1, vm2) = (ofport(&sb, "up0"), ofport(&sb, "vm1"), ofport(&sb, "vm2"));

    let sw = sb.connect_switch("br0").await;

    let capacity = 100e6;
    let facts = HostFacts {
        capacity_bps: capacity,
        uplink: Some((up, "up0".into())),
        vms: vec![
            VmPort {
                port_no: vm1,
                iface: "vm1".into(),
                tx_bps: 20e6,
                rx_bps: 1e6,
            },
            VmPort {
                port_no: vm2,
                iface: "vm2".into(),
                tx_bps: 5e6,
                rx_bps: 1e6,
            },
        ],
        period: Duration::from_secs(1),
        min_app_bps: 5e6,
    };
    let leg = |reserve_bps: f64| Leg {
        reservation: 1,
        role: Role::Source,
        reserve_bps,
        flows: vec![MigrationMatch {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            ports: MigrationPorts::LibvirtRange,
        }],
    };
    let reserves = [60e6, 75e6];

    let mut times = Vec::with_capacity(SWITCH_PERIODS);
    let mut sent = 0;
    for i in 0..SWITCH_WARMUP + SWITCH_PERIODS {
        let t = Instant::now();
        let polled = poll_switch(&sw, true).await.unwrap();
        black_box(&polled);
        let plan = enforce::plan_host(Mode::Meter, &facts, &[leg(reserves[i % 2])]);
        let desired = desired_from(&plan);
        let n = reconcile_switch(&sw, &desired).await.unwrap();
        let dt = t.elapsed();
        if i >= SWITCH_WARMUP {
            times.push(dt);
            sent += n;
            // The meter changes every period (the two throttling flows are
            // refreshed too, not counted as changes): at least one change,
            // or we measure nothing.
            assert!(n >= 1, "period {i} changed nothing");
        }
    }

    let last_rate_kbps =
        ((capacity - reserves[(SWITCH_WARMUP + SWITCH_PERIODS - 1) % 2]) / 1000.0).round() as u64;
    let meters = sb.ofctl(&["dump-meters", "br0"]);
    assert!(
        meters.contains(&format!("meter={APP_OUT_METER} "))
            && meters.contains(&format!("rate={last_rate_kbps}")),
        "meter {APP_OUT_METER} at {last_rate_kbps} kbit/s missing:\n{meters}"
    );
    let flows = sb.ofctl(&["dump-flows", "br0"]);
    for (port, name) in [(vm1, "vm1"), (vm2, "vm2")] {
        // ovs-ofctl prints port numbers, or names when it knows them.
        let here = |l: &str| {
            l.split([',', ' '])
                .any(|t| t == format!("in_port={port}") || t == format!("in_port={name}"))
        };
        assert!(
            flows
                .lines()
                .any(|l| here(l) && l.contains(&format!("meter:{APP_OUT_METER},"))),
            "no meter:{APP_OUT_METER} flow for in_port={port}:\n{flows}"
        );
    }
    assert!(
        flows.contains("priority=200"),
        "no migration flow:\n{flows}"
    );
    drop(sw);
    (times, sent)
}

// ---------------------------------------------------------------- part B

const HOSTS: usize = 20;
const RESERVATIONS: usize = 100;
const VMS_PER_HOST: u32 = 5;
const HOST_CAPACITY: f64 = 10e9;

fn host_name(i: usize) -> String {
    format!("h{i}")
}

/// A small deterministic generator, so runs are comparable.
struct Lcg(u64);
impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A plausible measurement of a reservation's source: the migration uses
/// 40-100% of what it has, everything else on the uplink (the applications and
/// the host's other migrations) 60-105% of C, so Algorithm 1 grows, keeps and
/// releases, and the hosts' meters change from period to period.
fn measure(r: &Reservation, rng: &mut Lcg) -> Measurement {
    let c = HOST_CAPACITY;
    let reserved = r.reserve_pct().unwrap_or(10.0) / 100.0 * c;
    let migration = reserved * (0.4 + 0.6 * rng.unit());
    let other = c * (0.6 + 0.45 * rng.unit());
    Measurement {
        capacity: c,
        outgoing: (migration + other).min(c * 1.01),
        migration,
    }
}

fn pure_periods() -> (Vec<Duration>, usize, usize) {
    let hosts: BTreeMap<String, HostInfo> = (0..HOSTS)
        .map(|i| {
            (
                host_name(i),
                HostInfo {
                    address: Some(Ipv4Addr::new(10, 0, 0, i as u8 + 1)),
                    capacity_bps: HOST_CAPACITY,
                },
            )
        })
        .collect();
    let names: Vec<String> = (0..HOSTS).map(host_name).collect();
    // Source s, destination s+7; a third with one intermediary (s+3), a third
    // with two (s+3, s+11): all distinct modulo 20.
    let mut reservations: Vec<Reservation> = (0..RESERVATIONS)
        .map(|i| {
            let s = i % HOSTS;
            let intermediaries = match i % 3 {
                0 => vec![],
                1 => vec![host_name((s + 3) % HOSTS)],
                _ => vec![host_name((s + 3) % HOSTS), host_name((s + 11) % HOSTS)],
            };
            let req = ReservationRequest {
                source: host_name(s),
                destination: host_name((s + 7) % HOSTS),
                intermediaries,
                // Five reservations leave each host: at most 18% of C each,
                // so together they stay under what the applications keep.
                urgency: 5.0 + (i % 5) as f64 * 2.0,
                threshold: 5.0,
                max_reserve: Some(18.0),
                migration_port: (i % 2 == 0).then_some(49152 + (i % 64) as u16),
                store_port: None,
                disk_port: None,
            };
            let params = req.validate(&hosts).unwrap();
            Reservation::new(i as u64 + 1, req, params)
        })
        .collect();
    let mut rng = Lcg(0x5011_7e57);
    // Measurement 0, then a period in which the migration is seen starting:
    // from here on every tick runs Algorithm 1.
    for r in &mut reservations {
        r.tick(0, &measure(r, &mut rng));
        r.tick(1000, &measure(r, &mut rng));
        assert!(r.started && r.reserve_pct().is_some());
    }
    let vms: Vec<Vec<VmPort>> = (0..HOSTS)
        .map(|_| {
            (1..=VMS_PER_HOST)
                .map(|p| VmPort {
                    port_no: p,
                    iface: format!("vnet{p}"),
                    tx_bps: 1e8 * f64::from(p),
                    rx_bps: 5e7 * f64::from(p),
                })
                .collect()
        })
        .collect();

    let mut observed: Vec<Observed> = vec![Observed::default(); HOSTS];
    let mut times = Vec::with_capacity(PURE_PERIODS);
    let mut messages = 0;
    let mut meter_mods = 0;
    for period in 0..PURE_WARMUP + PURE_PERIODS {
        // Measurements come from the switches; drawing them is not timed.
        let ms: Vec<Measurement> = reservations.iter().map(|r| measure(r, &mut rng)).collect();
        let t_ms = 2000 + period as u64 * 1000;

        let t = Instant::now();
        for (r, m) in reservations.iter_mut().zip(&ms) {
            r.tick(t_ms, black_box(m));
        }
        let mut desired = Vec::with_capacity(HOSTS);
        let mut n = 0;
        for (h, name) in names.iter().enumerate() {
            let legs = legs_for_host(name, &reservations, &hosts);
            let facts = HostFacts {
                capacity_bps: HOST_CAPACITY,
                uplink: Some((100, "uplink".into())),
                vms: vms[h].clone(),
                period: Duration::from_secs(1),
                min_app_bps: HOST_CAPACITY * 0.05,
            };
            let plan = enforce::plan_host(Mode::Meter, black_box(&facts), &legs);
            let d = desired_from(&plan);
            let actions = reconcile::plan(&d, black_box(&observed[h]));
            n += actions.len();
            meter_mods += actions
                .iter()
                .filter(|a| matches!(a, Body::MeterMod(_)))
                .count();
            black_box(actions);
            desired.push(d);
        }
        let dt = t.elapsed();

        // The switch applied it: next period it reports this (not timed, it
        // stands for the switch's replies).
        observed = desired.iter().map(Observed::from_desired).collect();
        if period >= PURE_WARMUP {
            times.push(dt);
            messages += n;
        } else {
            meter_mods = 0;
        }
    }
    // The meters must really change, or the reconcile step plans only refreshes.
    assert!(
        meter_mods >= PURE_PERIODS * HOSTS / 2,
        "only {meter_mods} meter changes in {PURE_PERIODS} periods"
    );
    (times, messages, meter_mods)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut a, a_sent) = rt.block_on(switch_periods());
    drop(rt);
    a.sort();
    println!(
        "period (poll + plan + reconcile + barrier) against sandbox switch, {} periods: p50 {}  p99 {}  max {}  ({:.1} changes per period, refreshes aside)",
        a.len(),
        fmt(percentile(&a, 0.50)),
        fmt(percentile(&a, 0.99)),
        fmt(*a.last().unwrap()),
        a_sent as f64 / a.len() as f64,
    );

    let (mut b, b_sent, b_meters) = pure_periods();
    let mean = b.iter().sum::<Duration>() / b.len() as u32;
    b.sort();
    println!(
        "pure period for {RESERVATIONS} reservations on {HOSTS} hosts, {} periods: mean {}  p99 {}  max {}  ({:.3}% of a core at a 1 s period; {:.0} switch messages planned per period, {:.1} of them meter changes)",
        b.len(),
        fmt(mean),
        fmt(percentile(&b, 0.99)),
        fmt(*b.last().unwrap()),
        mean.as_secs_f64() * 100.0,
        b_sent as f64 / b.len() as f64,
        b_meters as f64 / b.len() as f64,
    );
}
