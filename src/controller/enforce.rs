//! How a reservation becomes switch state on one host: a pure function from the
//! host's facts and the reservations that touch it to the flows, meters, QoS
//! rows and policing it needs. The controller feeds the result into the
//! reconcile machinery ([`super::reconcile`]) and into OVSDB.
//!
//! Two modes:
//! - **meter** (any datapath; the one that works on the userspace datapath):
//!   the applications' traffic passes through an OpenFlow 1.3 meter per
//!   direction at `C − reserve`; on the source every VM port's traffic
//!   (`in_port=VM` → meter [`APP_OUT_METER`]), on the destination and on
//!   intermediaries everything arriving on the uplink (`in_port=uplink` → meter
//!   [`APP_IN_METER`]). Migration flows match first (higher priority) and
//!   bypass the meters; their counters give the migration rate.
//! - **queue** (kernel datapath): a linux-htb QoS on the source uplink with an
//!   application queue 0 and a migration queue 1 (`min-rate = reserve`),
//!   migration flows steered into queue 1 with `set_queue`, and the VMs'
//!   interfaces policed (`ingress_policing_rate`) so that together they send no
//!   more than `C − reserve`, outgoing-intensive VMs getting a larger share. On
//!   the destination and intermediaries the VMs' ports are shaped (egress
//!   linux-htb towards the VM) to share `C − reserve` by their incoming rates.
//!   Background transfers (disk caches' syncs) get a queue 2 on the uplink
//!   at their share ([`super::background::plan_queue`]).
//!
//! Fail-safe: every throttling flow carries a hard timeout of
//! [`TIMEOUT_PERIODS`] periods and is refreshed at every period, so the
//! applications get their bandwidth back within seconds if the controller
//! dies. OVSDB state (QoS rows, policing) cannot expire by itself; a clean stop
//! and the next start remove it (see the README).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use super::reconcile::{FlowSpec, MeterSpec, COOKIE_TAG};
use crate::config::EnforcementMode;
use crate::openflow::{port, Action, Instruction, Match};
use crate::ovsdb::vswitch::QueueConfig;

/// The meter all application traffic leaving a source host's VMs passes through.
/// Enforcement meters live in their own id range (0x5011_xxxx, like the
/// cookie tag) so they never collide with meters put through the API; Open
/// vSwitch maps OpenFlow meter ids itself, so high ids cost nothing.
pub const APP_OUT_METER: u32 = 0x5011_0001;
/// The meter all application traffic arriving at a destination or
/// intermediary passes through.
pub const APP_IN_METER: u32 = 0x5011_0002;
/// Meter ids in `ENFORCEMENT_METERS..=ENFORCEMENT_METERS_END` are enforcement's.
pub const ENFORCEMENT_METERS: u32 = 0x5011_0000;
pub const ENFORCEMENT_METERS_END: u32 = 0x5011_ffff;
/// Throttling flows lapse after this many periods without a refresh.
pub const TIMEOUT_PERIODS: u32 = 3;
/// libvirt's default migration port range, 49152–49215, is exactly the
/// 64 ports under this value/mask.
pub const LIBVIRT_PORTS: (u16, u16) = (0xc000, 0xffc0);
/// Priorities: migration flows above application flows above the baseline.
pub const MIGRATION_PRIORITY: u16 = 200;
pub const APP_PRIORITY: u16 = 100;

const KIND_APP_OUT: u64 = 1;
const KIND_APP_IN: u64 = 2;
const KIND_MIGRATION: u64 = 3;
/// A background transfer's flow ([`super::background`]).
pub(super) const KIND_BACKGROUND: u64 = 4;

/// The cookie of an enforcement flow: the solive tag, a kind, an id.
pub fn cookie(kind: u64, id: u64) -> u64 {
    COOKIE_TAG | (kind << 40) | (id & 0xff_ffff_ffff)
}

/// The cookie of migration flow `index` of reservation `reservation`.
pub fn migration_cookie(reservation: u64, index: u8) -> u64 {
    cookie(KIND_MIGRATION, (reservation << 8) | u64::from(index))
}

/// Selects the migration kind of solive cookies.
pub const MIGRATION_COOKIE_MASK: u64 = 0xffff_ff00_0000_0000;

/// Whether a cookie belongs to a migration flow (for measuring its bytes).
pub fn is_migration_cookie(c: u64) -> bool {
    c & MIGRATION_COOKIE_MASK == cookie(KIND_MIGRATION, 0)
}

/// Whether a cookie is one of the enforcement flows (as opposed to the
/// baseline flow or a flow put by an API caller).
pub fn is_enforcement_cookie(c: u64) -> bool {
    matches!(
        (c >> 40) & 0xff,
        KIND_APP_OUT | KIND_APP_IN | KIND_MIGRATION | KIND_BACKGROUND
    ) && c & super::reconcile::COOKIE_TAG_MASK == COOKIE_TAG
}

/// The meters enforcement uses.
pub fn is_enforcement_meter(id: u32) -> bool {
    (ENFORCEMENT_METERS..=ENFORCEMENT_METERS_END).contains(&id)
}

/// The mode a host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Meter,
    Queue,
}

/// The mode a host uses, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeChoice {
    pub mode: Mode,
    pub reason: String,
}

/// What the switch said about meters (from METER_FEATURES).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterSupport {
    pub max_meter: u32,
    pub drop_band: bool,
}

/// Picks the mode of a host from its configuration, its datapath type and
/// its meter support. An impossible choice is an error that says why.
pub fn choose_mode(
    configured: EnforcementMode,
    datapath_type: &str,
    meters: Option<MeterSupport>,
) -> Result<ModeChoice, String> {
    let meters_ok = meters.is_some_and(|m| m.max_meter >= 2 && m.drop_band);
    let userspace = datapath_type == "netdev";
    match configured {
        EnforcementMode::Meter if meters_ok => {
            Ok(ModeChoice { mode: Mode::Meter, reason: "configured".into() })
        }
        EnforcementMode::Meter => Err("meter mode is configured but the switch reports no usable meters (need 2 meters with drop bands)".into()),
        EnforcementMode::Queue if userspace => Ok(ModeChoice {
            mode: Mode::Queue,
            reason: "configured; note that on the userspace datapath set_queue and ingress policing do not take effect".into(),
        }),
        EnforcementMode::Queue => Ok(ModeChoice { mode: Mode::Queue, reason: "configured".into() }),
        EnforcementMode::Auto if userspace && meters_ok => Ok(ModeChoice {
            mode: Mode::Meter,
            reason: "userspace datapath (netdev): set_queue and ingress policing do not reach the kernel there; the switch supports meters".into(),
        }),
        EnforcementMode::Auto if userspace => {
            Err("userspace datapath without usable meters: no way to enforce a reservation".into())
        }
        EnforcementMode::Auto => Ok(ModeChoice {
            mode: Mode::Queue,
            reason: format!("kernel datapath ({}): linux-htb queues with set_queue and ingress policing", if datapath_type.is_empty() { "system" } else { datapath_type }),
        }),
    }
}

/// Which ports a migration's TCP connections go to on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MigrationPorts {
    /// The exact port, when the migration driver knows it.
    Exact(u16),
    /// libvirt's default range 49152–49215.
    LibvirtRange,
    /// Data that flows back from a server's port: an intermediary's store
    /// answering the destination's reads (scatter-gather).
    FromPort(u16),
}

/// One TCP flow of a migration, from one host address to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MigrationMatch {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ports: MigrationPorts,
}

impl MigrationMatch {
    pub fn to_match(&self) -> Match {
        let m = Match::new()
            .eth_type(0x0800)
            .ip_proto(6)
            .ipv4_src(self.src, None)
            .ipv4_dst(self.dst, None);
        match self.ports {
            MigrationPorts::Exact(p) => m.tcp_dst(p, None),
            MigrationPorts::LibvirtRange => m.tcp_dst(LIBVIRT_PORTS.0, Some(LIBVIRT_PORTS.1)),
            MigrationPorts::FromPort(p) => m.tcp_src(p, None),
        }
    }
}

/// A host's part in a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Source,
    Destination,
    Intermediary,
}

/// One reservation as seen by one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leg {
    pub reservation: u64,
    pub role: Role,
    /// What this host reserves for the migration, bit/s.
    pub reserve_bps: f64,
    /// The migration flows crossing this host.
    pub flows: Vec<MigrationMatch>,
}

/// A VM's interface on the host, with its current rates (from the VM's side:
/// `tx_bps` is what the VM sends).
#[derive(Debug, Clone, PartialEq)]
pub struct VmPort {
    pub port_no: u32,
    pub iface: String,
    pub tx_bps: f64,
    pub rx_bps: f64,
}

/// What the planner needs to know about a host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub capacity_bps: f64,
    /// The uplink's port number and name, once known.
    pub uplink: Option<(u32, String)>,
    pub vms: Vec<VmPort>,
    pub period: Duration,
    /// Applications always keep at least this share of C (100 − max_reserve).
    pub min_app_bps: f64,
}

/// A linux-htb QoS on one port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortQos {
    pub port: String,
    /// The QoS's own `max-rate`: its root class.
    pub max_rate: u64,
    /// Its queues by number.
    pub queues: Vec<(u32, QueueConfig)>,
}

/// Ingress policing of one interface (what the VM may send).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policing {
    pub iface: String,
    pub rate_kbps: u64,
    pub burst_kb: u64,
}

/// One migration flow a host installs, and the reservations whose traffic it
/// carries: usually one; several when their legs match the very same packets
/// (the stores' answers to two gathers into one destination, or two pushes
/// from one source into the same stores).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharedFlow {
    pub cookie: u64,
    pub flow: MigrationMatch,
    pub reservations: Vec<u64>,
}

/// Everything a host needs for its reservations.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct HostPlan {
    pub flows: Vec<FlowSpec>,
    /// The migration flows among `flows`, with who shares each.
    pub migration_flows: Vec<SharedFlow>,
    pub meters: Vec<MeterSpec>,
    pub qos: Vec<PortQos>,
    pub policing: Vec<Policing>,
    /// Enforced rates, bit/s, for display: what the applications may use in
    /// each direction (None: not throttled).
    pub app_out_limit_bps: Option<f64>,
    pub app_in_limit_bps: Option<f64>,
}

impl HostPlan {
    /// Puts this plan's flows and meters into `desired` in place of the
    /// enforcement flows and meters it held; the baseline flow and flows or
    /// meters put through the API stay.
    pub fn apply_to(&self, desired: &mut super::reconcile::Desired) {
        desired.flows.retain(|c, _| !is_enforcement_cookie(*c));
        desired.meters.retain(|id, _| !is_enforcement_meter(*id));
        for f in &self.flows {
            desired.flows.insert(f.cookie, f.clone());
        }
        for m in &self.meters {
            desired.meters.insert(m.id, *m);
        }
    }
}

/// A policer or meter burst large enough for TCP: a tenth of a second of the
/// rate, at least 1 Mbit (TESTBED.md: TCP under a policer needs a large burst).
pub fn burst_kb(rate_kbps: u64) -> u64 {
    (rate_kbps / 10).max(1000)
}

/// An HTB queue's burst, bits, for a ceiling of `max_rate` bit/s: a tenth of
/// a second of it, as the policers. OVS's default is one MTU, and the
/// uplink's background queue shaped with it on a TCG host sent 77% of its
/// ceiling (`tests/queue_datapath.rs`, step 5).
pub fn queue_burst(max_rate: u64) -> u64 {
    max_rate / 10
}

pub(super) fn hard_timeout(period: Duration) -> u16 {
    let secs = (period.as_secs_f64() * f64::from(TIMEOUT_PERIODS)).ceil();
    secs.clamp(2.0, f64::from(u16::MAX)) as u16
}

/// Splits `total` by weight, each getting at least a quarter of an equal
/// share: an idle VM is not cut off when it becomes active, a nearly finished
/// migration keeps enough for its last pass ([`super::link`]).
pub(super) fn shares(total: f64, weights: &[f64]) -> Vec<f64> {
    let n = weights.len();
    if n == 0 {
        return vec![];
    }
    let floor = total / (4.0 * n as f64);
    let rest = total - floor * n as f64;
    let sum: f64 = weights.iter().map(|w| w.max(0.0)).sum();
    weights
        .iter()
        .map(|w| {
            floor
                + if sum > 0.0 {
                    rest * w.max(0.0) / sum
                } else {
                    rest / n as f64
                }
        })
        .collect()
}

/// The enforcement a host needs for the legs that touch it.
pub fn plan_host(mode: Mode, facts: &HostFacts, legs: &[Leg]) -> HostPlan {
    let mut plan = HostPlan::default();
    if legs.is_empty() {
        return plan;
    }
    let timeout = hard_timeout(facts.period);
    let reserved = |pred: &dyn Fn(Role) -> bool| -> f64 {
        legs.iter()
            .filter(|l| pred(l.role))
            .map(|l| l.reserve_bps.max(0.0))
            .sum()
    };
    let out_reserved = reserved(&|r| r == Role::Source);
    let in_reserved = reserved(&|r| r != Role::Source);
    // The applications keep at least min_app_bps whatever the sum of legs.
    let app_limit = |r: f64| (facts.capacity_bps - r).max(facts.min_app_bps).max(0.0);
    let has_out = legs.iter().any(|l| l.role == Role::Source);
    let has_in = legs.iter().any(|l| l.role != Role::Source);

    // Migration flows: a bypass (meter mode) or a steer into queue 1 (queue
    // mode on the source). To OpenFlow two flows with one match and one
    // priority are one flow, whatever their cookies: each would replace the
    // other, and releasing one reservation (delete by cookie) would take the
    // rule from under the other. So legs matching the same packets share one
    // flow, under the cookie of the oldest reservation among them; it stays
    // while any of them does. A flow's cookie changes only when that oldest
    // reservation goes, and the reconcile then adds the new one before it
    // deletes the old.
    for leg in legs {
        let steer = mode == Mode::Queue && leg.role == Role::Source;
        for (i, f) in leg.flows.iter().enumerate() {
            if let Some(shared) = plan.migration_flows.iter_mut().find(|s| s.flow == *f) {
                if !shared.reservations.contains(&leg.reservation) {
                    shared.reservations.push(leg.reservation);
                }
                continue;
            }
            let cookie = migration_cookie(leg.reservation, i as u8);
            let actions = if steer {
                vec![Action::SetQueue(1), Action::output(port::NORMAL)]
            } else {
                vec![Action::output(port::NORMAL)]
            };
            plan.flows.push(FlowSpec {
                cookie,
                table_id: 0,
                priority: MIGRATION_PRIORITY,
                matches: f.to_match(),
                instructions: vec![Instruction::ApplyActions(actions)],
                hard_timeout: if steer { timeout } else { 0 },
                refresh: steer,
            });
            plan.migration_flows.push(SharedFlow {
                cookie,
                flow: *f,
                reservations: vec![leg.reservation],
            });
        }
    }

    match mode {
        Mode::Meter => {
            if has_out {
                let limit = app_limit(out_reserved);
                plan.app_out_limit_bps = Some(limit);
                let rate_kbps = (limit / 1000.0).round() as u32;
                plan.meters.push(MeterSpec {
                    id: APP_OUT_METER,
                    rate_kbps,
                    burst_kb: burst_kb(u64::from(rate_kbps)) as u32,
                });
                for vm in &facts.vms {
                    plan.flows
                        .push(app_flow(KIND_APP_OUT, vm.port_no, APP_OUT_METER, timeout));
                }
            }
            if has_in {
                if let Some((uplink, _)) = &facts.uplink {
                    let limit = app_limit(in_reserved);
                    plan.app_in_limit_bps = Some(limit);
                    let rate_kbps = (limit / 1000.0).round() as u32;
                    plan.meters.push(MeterSpec {
                        id: APP_IN_METER,
                        rate_kbps,
                        burst_kb: burst_kb(u64::from(rate_kbps)) as u32,
                    });
                    plan.flows
                        .push(app_flow(KIND_APP_IN, *uplink, APP_IN_METER, timeout));
                }
            }
        }
        Mode::Queue => {
            let cap = facts.capacity_bps.round() as u64;
            if has_out {
                let limit = app_limit(out_reserved);
                plan.app_out_limit_bps = Some(limit);
                if let Some((_, uplink)) = &facts.uplink {
                    let mig = (facts.capacity_bps - limit).max(0.0).round() as u64;
                    let app = QueueConfig {
                        min_rate: Some(limit.round() as u64),
                        max_rate: Some(cap),
                        priority: None,
                        burst: None,
                    };
                    let migq = QueueConfig {
                        min_rate: Some(mig),
                        max_rate: Some(cap),
                        priority: None,
                        burst: None,
                    };
                    plan.qos.push(PortQos {
                        port: uplink.clone(),
                        max_rate: cap,
                        queues: vec![(0, app), (1, migq)],
                    });
                }
                let weights: Vec<f64> = facts.vms.iter().map(|v| v.tx_bps).collect();
                for (vm, share) in facts.vms.iter().zip(shares(limit, &weights)) {
                    let rate_kbps = (share / 1000.0).round().max(1.0) as u64;
                    plan.policing.push(Policing {
                        iface: vm.iface.clone(),
                        rate_kbps,
                        burst_kb: burst_kb(rate_kbps),
                    });
                }
            }
            if has_in {
                let limit = app_limit(in_reserved);
                plan.app_in_limit_bps = Some(limit);
                let weights: Vec<f64> = facts.vms.iter().map(|v| v.rx_bps).collect();
                for (vm, share) in facts.vms.iter().zip(shares(limit, &weights)) {
                    let rate = share.round().max(1000.0) as u64;
                    // OVS's defaults (a one-MTU burst) held this queue to
                    // its rate (tests/queue_datapath.rs step 6: 5.6 Mbit/s
                    // under 5.5), where the uplink's background queue fell
                    // short without a burst; a tenth of a second under a
                    // root at the link's rate measured 4.5 under 5.0.
                    let q = QueueConfig {
                        min_rate: None,
                        max_rate: Some(rate),
                        priority: None,
                        burst: None,
                    };
                    plan.qos.push(PortQos {
                        port: vm.iface.clone(),
                        max_rate: rate,
                        queues: vec![(0, q)],
                    });
                }
            }
        }
    }
    plan
}

fn app_flow(kind: u64, in_port: u32, meter: u32, timeout: u16) -> FlowSpec {
    FlowSpec {
        cookie: cookie(kind, u64::from(in_port)),
        table_id: 0,
        priority: APP_PRIORITY,
        matches: Match::new().in_port(in_port),
        instructions: vec![
            Instruction::Meter(meter),
            Instruction::ApplyActions(vec![Action::output(port::NORMAL)]),
        ],
        hard_timeout: timeout,
        refresh: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: f64 = 100e6;

    fn facts() -> HostFacts {
        HostFacts {
            capacity_bps: C,
            uplink: Some((10, "up0".into())),
            vms: vec![
                VmPort {
                    port_no: 1,
                    iface: "vm1".into(),
                    tx_bps: 60e6,
                    rx_bps: 0.0,
                },
                VmPort {
                    port_no: 2,
                    iface: "vm2".into(),
                    tx_bps: 0.0,
                    rx_bps: 30e6,
                },
            ],
            period: Duration::from_secs(1),
            min_app_bps: 5e6,
        }
    }

    fn flow(role: Role, reserve: f64) -> Leg {
        Leg {
            reservation: 7,
            role,
            reserve_bps: reserve,
            flows: vec![MigrationMatch {
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                ports: MigrationPorts::LibvirtRange,
            }],
        }
    }

    fn migration_specs(p: &HostPlan) -> Vec<&FlowSpec> {
        p.flows
            .iter()
            .filter(|f| is_migration_cookie(f.cookie))
            .collect()
    }

    fn leg_on(reservation: u64, ports: MigrationPorts) -> Leg {
        let mut l = flow(Role::Destination, 10e6);
        l.reservation = reservation;
        l.flows[0].ports = ports;
        l
    }

    #[test]
    fn migrations_on_their_own_ports_get_their_own_flows() {
        let legs = [
            leg_on(1, MigrationPorts::Exact(49152)),
            leg_on(2, MigrationPorts::Exact(49153)),
        ];
        let plan = plan_host(Mode::Meter, &facts(), &legs);
        let cookies: Vec<u64> = plan.migration_flows.iter().map(|f| f.cookie).collect();
        assert_eq!(cookies, [migration_cookie(1, 0), migration_cookie(2, 0)]);
        assert!(plan
            .migration_flows
            .iter()
            .all(|f| f.reservations.len() == 1));
        // Releasing 1 leaves 2's flow as it was.
        let after = plan_host(Mode::Meter, &facts(), &legs[1..]);
        let two = |p: &HostPlan| {
            p.flows
                .iter()
                .find(|f| f.cookie == migration_cookie(2, 0))
                .cloned()
        };
        assert_eq!(two(&after), two(&plan));
        assert_eq!(after.migration_flows.len(), 1);
    }

    #[test]
    fn legs_matching_the_same_packets_share_one_flow_that_outlives_its_owner() {
        // Two gathers into one destination read from the same store port.
        let legs = [
            leg_on(3, MigrationPorts::FromPort(6379)),
            leg_on(5, MigrationPorts::FromPort(6379)),
        ];
        let plan = plan_host(Mode::Meter, &facts(), &legs);
        let mig = migration_specs(&plan);
        assert_eq!(mig.len(), 1, "one match, one flow");
        assert_eq!(mig[0].cookie, migration_cookie(3, 0), "the oldest's cookie");
        assert_eq!(plan.migration_flows[0].reservations, [3, 5]);
        // 3 goes: the rule stays, under 5's cookie.
        let after = plan_host(Mode::Meter, &facts(), &legs[1..]);
        let mig = migration_specs(&after);
        assert_eq!(mig.len(), 1);
        assert_eq!(mig[0].cookie, migration_cookie(5, 0));
        assert_eq!(mig[0].matches, plan.flows[0].matches);
    }

    #[test]
    fn mode_choice_follows_datapath_and_meter_support() {
        let meters = Some(MeterSupport {
            max_meter: 200_000,
            drop_band: true,
        });
        let c = choose_mode(EnforcementMode::Auto, "netdev", meters).unwrap();
        assert_eq!(c.mode, Mode::Meter);
        assert!(c.reason.contains("userspace"));
        assert_eq!(
            choose_mode(EnforcementMode::Auto, "system", meters)
                .unwrap()
                .mode,
            Mode::Queue
        );
        assert_eq!(
            choose_mode(EnforcementMode::Auto, "", None).unwrap().mode,
            Mode::Queue
        );
        assert!(choose_mode(EnforcementMode::Auto, "netdev", None).is_err());
        assert!(choose_mode(EnforcementMode::Meter, "system", None).is_err());
        let q = choose_mode(EnforcementMode::Queue, "netdev", meters).unwrap();
        assert_eq!(q.mode, Mode::Queue);
        assert!(q.reason.contains("do not take effect"));
    }

    #[test]
    fn no_legs_no_state() {
        assert_eq!(plan_host(Mode::Meter, &facts(), &[]), HostPlan::default());
    }

    #[test]
    fn meter_mode_source_meters_every_vm_port_and_lets_migration_bypass() {
        let p = plan_host(Mode::Meter, &facts(), &[flow(Role::Source, 75e6)]);
        assert_eq!(
            p.meters,
            vec![MeterSpec {
                id: APP_OUT_METER,
                rate_kbps: 25_000,
                burst_kb: 2_500
            }]
        );
        assert!(is_enforcement_meter(APP_OUT_METER) && !is_enforcement_meter(1));
        assert_eq!(p.app_out_limit_bps, Some(25e6));
        let app: Vec<_> = p
            .flows
            .iter()
            .filter(|f| f.priority == APP_PRIORITY)
            .collect();
        assert_eq!(app.len(), 2);
        assert!(app.iter().all(|f| f.refresh && f.hard_timeout == 3));
        assert!(app
            .iter()
            .all(|f| f.instructions.contains(&Instruction::Meter(APP_OUT_METER))));
        let mig: Vec<_> = p
            .flows
            .iter()
            .filter(|f| f.priority == MIGRATION_PRIORITY)
            .collect();
        assert_eq!(mig.len(), 1);
        assert!(is_migration_cookie(mig[0].cookie));
        assert!(!mig[0].refresh, "a bypass flow throttles nothing");
        assert!(!mig[0]
            .instructions
            .iter()
            .any(|i| matches!(i, Instruction::Meter(_))));
        assert!(p.qos.is_empty() && p.policing.is_empty());
    }

    #[test]
    fn meter_mode_destination_meters_the_uplink() {
        let p = plan_host(Mode::Meter, &facts(), &[flow(Role::Destination, 40e6)]);
        assert_eq!(p.meters[0].id, APP_IN_METER);
        assert_eq!(p.meters[0].rate_kbps, 60_000);
        let app: Vec<_> = p
            .flows
            .iter()
            .filter(|f| f.priority == APP_PRIORITY)
            .collect();
        assert_eq!(app.len(), 1);
        assert_eq!(app[0].matches, Match::new().in_port(10));
    }

    #[test]
    fn applications_keep_their_minimum() {
        let p = plan_host(
            Mode::Meter,
            &facts(),
            &[flow(Role::Source, 90e6), flow(Role::Source, 90e6)],
        );
        assert_eq!(p.app_out_limit_bps, Some(5e6));
    }

    #[test]
    fn queue_mode_source_shapes_uplink_steers_migration_polices_vms_by_share() {
        let p = plan_host(Mode::Queue, &facts(), &[flow(Role::Source, 75e6)]);
        assert_eq!(p.qos.len(), 1);
        let q = &p.qos[0];
        assert_eq!((q.port.as_str(), q.max_rate), ("up0", 100_000_000));
        assert_eq!(q.queues[1].1.min_rate, Some(75_000_000));
        assert_eq!(q.queues[0].1.min_rate, Some(25_000_000));
        let mig = p
            .flows
            .iter()
            .find(|f| f.priority == MIGRATION_PRIORITY)
            .unwrap();
        assert!(mig.refresh && mig.hard_timeout == 3);
        assert!(
            matches!(&mig.instructions[0], Instruction::ApplyActions(a) if a[0] == Action::SetQueue(1))
        );
        // 25 Mbit/s split: a floor of 25/8 each, the rest by outgoing rate
        // (vm1 sends 60, vm2 nothing).
        let total: u64 = p.policing.iter().map(|x| x.rate_kbps).sum();
        assert!((24_999..=25_001).contains(&total), "{total}");
        assert!(p.policing[0].rate_kbps > p.policing[1].rate_kbps * 5);
        assert!(p.meters.is_empty());
    }

    #[test]
    fn queue_mode_destination_shapes_vm_ports_by_incoming_share() {
        let p = plan_host(Mode::Queue, &facts(), &[flow(Role::Destination, 50e6)]);
        assert_eq!(p.qos.len(), 2);
        let limit = |q: &PortQos| q.queues[0].1.max_rate.unwrap();
        assert!(limit(&p.qos[1]) > limit(&p.qos[0]), "vm2 receives more");
        let sum: u64 = p.qos.iter().map(limit).sum();
        assert!((49_999_000..=50_001_000).contains(&sum), "{sum}");
        assert!(p.policing.is_empty());
        for q in &p.qos {
            assert_eq!(q.max_rate, limit(q), "{q:?}");
        }
    }

    #[test]
    fn cookies_are_solive_cookies_and_distinct() {
        let a = migration_cookie(7, 0);
        assert!(is_migration_cookie(a));
        assert!(!is_migration_cookie(cookie(KIND_APP_OUT, 7 << 8)));
        assert_ne!(a, migration_cookie(7, 1));
        assert_ne!(a, migration_cookie(8, 0));
        assert!(is_enforcement_cookie(cookie(KIND_APP_OUT, 5)));
        assert!(!is_enforcement_cookie(
            super::super::reconcile::BASELINE_COOKIE
        ));
        assert!(!is_enforcement_cookie(COOKIE_TAG | 1));
        assert_eq!(a & super::super::reconcile::COOKIE_TAG_MASK, COOKIE_TAG);
    }

    #[test]
    fn shares_split_with_a_floor() {
        let s = shares(100.0, &[0.0, 0.0]);
        assert_eq!(s, vec![50.0, 50.0]);
        let s = shares(100.0, &[3.0, 1.0]);
        assert_eq!(s, vec![12.5 + 56.25, 12.5 + 18.75]);
        assert!(shares(1.0, &[]).is_empty());
    }
}
