//! Background transfers: traffic that may use the room a link has left and
//! must yield it as soon as the applications or the migrations want it (the
//! disk caches' syncs, [`crate::cache`]).
//!
//! Such a transfer is a low-priority reservation. Each period, on its source
//! host's uplink, the controller takes what the link carries besides the
//! background transfers themselves (or the migrations' reservation there, if
//! larger), and gives the background transfers half of what is left, within
//! their floor and ceiling ([`rate_bps`]), split evenly among those on that
//! host. The other half stays free so that an application speeding up finds
//! room at once and shows up in the next period's figures, which then shrink
//! the transfers' part: a transfer's share follows the link every period, not
//! once when it starts.
//!
//! On the switch (meter mode): one flow per transfer matching its TCP
//! connection (source address, destination address, the destination's
//! port) into a meter of its own at its share ([`plan`]), refreshed every
//! period with the throttling flows' hard timeout, so it lapses with the
//! controller like the rest. Queue mode has no per-flow meter: there the
//! host's transfers share a queue of the uplink's linux-htb QoS
//! ([`BACKGROUND_QUEUE`]) whose ceiling is their shares together, and each
//! transfer's flow steers its packets into it ([`plan_queue`]); TCP splits
//! the queue among them. Both lapse with the controller like queue mode's
//! other state (the flows' hard timeout; `solive watchdog` for the rows).

use std::net::Ipv4Addr;

use serde::Serialize;

use super::enforce::{cookie, PortQos, KIND_BACKGROUND, MIGRATION_PRIORITY};
use super::reconcile::{FlowSpec, MeterSpec};
use crate::openflow::{port, Action, Instruction, Match};
use crate::ovsdb::vswitch::QueueConfig;

/// Background transfers' meters: `BACKGROUND_METERS + id`, inside the range
/// enforcement owns.
pub const BACKGROUND_METERS: u32 = 0x5011_8000;
/// Ids wrap within this many.
pub const MAX_BACKGROUND: u32 = 0x7fff;
/// Queue mode: the uplink queue the background transfers share (0 is the
/// applications', 1 the migrations').
pub const BACKGROUND_QUEUE: u32 = 2;

/// A transfer that may use the room on its source's uplink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackgroundRequest {
    /// The host it leaves from (whose uplink it shares).
    pub host: String,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The TCP port it connects to on `dst`.
    pub tcp_dst: u16,
    /// Bit/s it keeps even on a full link, and the most it gets.
    pub floor_bps: f64,
    pub max_bps: f64,
}

/// A background transfer as the controller holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Background {
    pub id: u32,
    #[serde(flatten)]
    pub request: BackgroundRequest,
    /// Its share at the last period, bit/s (None before the first).
    pub rate_bps: Option<f64>,
    /// Whether a meter on the switch holds it to that share.
    pub enforced: bool,
}

/// The background transfers' part of a link, bit/s: half of what the link
/// has left (`capacity_bps` less what it carries besides them, or less the
/// migrations' reservation if that is larger), within the floor and the
/// ceiling.
pub fn rate_bps(
    capacity_bps: f64,
    carried_bps: f64,
    own_bps: f64,
    reserved_bps: f64,
    floor_bps: f64,
    max_bps: f64,
) -> f64 {
    let others = (carried_bps - own_bps).max(0.0).max(reserved_bps);
    let room = (capacity_bps - others).max(0.0) / 2.0;
    room.clamp(floor_bps.min(max_bps), max_bps)
}

/// The share to set: the new one, unless it is within 5% of the one in
/// force (the room's figures wobble from period to period; a meter changed
/// for that is switch work and a log line each period for nothing).
pub fn steady(in_force: Option<f64>, new: f64) -> f64 {
    match in_force {
        Some(old) if (new - old).abs() <= 0.05 * old => old,
        _ => new,
    }
}

/// The flow of background transfer `id`.
pub fn flow_cookie(id: u32) -> u64 {
    cookie(KIND_BACKGROUND, u64::from(id))
}

/// The flows and meters that hold each transfer to its rate (bit/s).
pub fn plan(
    transfers: &[(&Background, f64)],
    hard_timeout: u16,
) -> (Vec<FlowSpec>, Vec<MeterSpec>) {
    let mut flows = Vec::new();
    let mut meters = Vec::new();
    for (b, rate) in transfers {
        let meter = BACKGROUND_METERS + b.id;
        let rate_kbps = (rate / 1000.0).round().max(1.0) as u32;
        meters.push(MeterSpec {
            id: meter,
            rate_kbps,
            burst_kb: super::enforce::burst_kb(u64::from(rate_kbps)) as u32,
        });
        flows.push(flow(
            b,
            vec![
                Instruction::Meter(meter),
                Instruction::ApplyActions(vec![Action::output(port::NORMAL)]),
            ],
            hard_timeout,
        ));
    }
    (flows, meters)
}

/// Queue mode: the transfers' flows into [`BACKGROUND_QUEUE`], and that
/// queue on the uplink (`uplink`, `capacity_bps`) at the transfers'
/// shares together (`rates`), their floors kept as its minimum. The queue
/// joins the uplink's QoS in `qos` if the reservations made one; else the
/// QoS is made with queue 0 for everything else, up to the link.
pub fn plan_queue(
    transfers: &[(&Background, f64)],
    hard_timeout: u16,
    uplink: &str,
    capacity_bps: f64,
    qos: &mut Vec<PortQos>,
) -> Vec<FlowSpec> {
    let total: f64 = transfers.iter().map(|(_, r)| r).sum();
    let floor: f64 = transfers.iter().map(|(b, _)| b.request.floor_bps).sum();
    let max_rate = total.round().max(1000.0) as u64;
    let queue = QueueConfig {
        min_rate: Some(floor.min(total).round() as u64),
        max_rate: Some(max_rate),
        priority: None,
        burst: Some(super::enforce::queue_burst(max_rate)),
    };
    let cap = capacity_bps.round() as u64;
    match qos.iter_mut().find(|q| q.port == uplink) {
        Some(q) => q.queues.push((BACKGROUND_QUEUE, queue)),
        None => qos.push(PortQos {
            port: uplink.to_string(),
            max_rate: cap,
            queues: vec![
                (
                    0,
                    QueueConfig {
                        min_rate: None,
                        max_rate: Some(cap),
                        priority: None,
                        burst: None,
                    },
                ),
                (BACKGROUND_QUEUE, queue),
            ],
        }),
    }
    transfers
        .iter()
        .map(|(b, _)| {
            flow(
                b,
                vec![Instruction::ApplyActions(vec![
                    Action::SetQueue(BACKGROUND_QUEUE),
                    Action::output(port::NORMAL),
                ])],
                hard_timeout,
            )
        })
        .collect()
}

/// Transfer `b`'s flow: its TCP connection, with `instructions`.
fn flow(b: &Background, instructions: Vec<Instruction>, hard_timeout: u16) -> FlowSpec {
    let r = &b.request;
    FlowSpec {
        cookie: flow_cookie(b.id),
        table_id: 0,
        // Its own match (the cache's port is outside the migration
        // range), so no overlap with a migration flow.
        priority: MIGRATION_PRIORITY,
        matches: Match::new()
            .eth_type(0x0800)
            .ip_proto(6)
            .ipv4_src(r.src, None)
            .ipv4_dst(r.dst, None)
            .tcp_dst(r.tcp_dst, None),
        instructions,
        hard_timeout,
        refresh: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: f64 = 100e6;

    #[test]
    fn the_transfers_get_half_the_room_the_link_has_left() {
        // 40 carried, 10 of it the transfers' own: 70 left, half to them.
        assert_eq!(rate_bps(C, 40e6, 10e6, 0.0, 1e6, 80e6), 35e6);
        // A migration reserved 60 but sends 20: the reservation counts.
        assert_eq!(rate_bps(C, 20e6, 0.0, 60e6, 1e6, 80e6), 20e6);
        // A full link leaves them their floor; an idle one their ceiling.
        assert_eq!(rate_bps(C, 100e6, 0.0, 0.0, 8e6, 80e6), 8e6);
        assert_eq!(rate_bps(1e9, 0.0, 0.0, 0.0, 8e6, 80e6), 80e6);
        // A floor above the ceiling is the ceiling.
        assert_eq!(rate_bps(C, 100e6, 0.0, 0.0, 90e6, 80e6), 80e6);
    }

    #[test]
    fn a_share_moves_only_when_the_room_really_changes() {
        assert_eq!(steady(None, 20e6), 20e6);
        assert_eq!(steady(Some(20e6), 20.9e6), 20e6);
        assert_eq!(steady(Some(20e6), 19.1e6), 20e6);
        assert_eq!(steady(Some(20e6), 22e6), 22e6);
        assert_eq!(steady(Some(20e6), 8e6), 8e6);
    }

    #[test]
    fn each_transfer_is_metered_on_its_own_connection() {
        let b = Background {
            id: 3,
            request: BackgroundRequest {
                host: "h1".into(),
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                tcp_dst: 10809,
                floor_bps: 8e6,
                max_bps: 80e6,
            },
            rate_bps: None,
            enforced: false,
        };
        let (flows, meters) = plan(&[(&b, 12.5e6)], 3);
        assert_eq!(meters.len(), 1);
        assert_eq!(meters[0].id, BACKGROUND_METERS + 3);
        assert_eq!(meters[0].rate_kbps, 12_500);
        assert_eq!(flows.len(), 1);
        let f = &flows[0];
        assert!(super::super::enforce::is_enforcement_cookie(f.cookie));
        assert!(super::super::enforce::is_enforcement_meter(meters[0].id));
        assert!(!super::super::enforce::is_migration_cookie(f.cookie));
        assert!(f
            .instructions
            .contains(&Instruction::Meter(BACKGROUND_METERS + 3)));
        assert_eq!(f.hard_timeout, 3);
        assert!(f.refresh);
    }

    #[test]
    fn in_queue_mode_the_transfers_share_a_queue_of_the_uplink_at_their_shares() {
        let b = |id: u32| Background {
            id,
            request: BackgroundRequest {
                host: "h1".into(),
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                tcp_dst: 10809 + id as u16,
                floor_bps: 8e6,
                max_bps: 80e6,
            },
            rate_bps: None,
            enforced: false,
        };
        let (one, two) = (b(1), b(2));
        // No reservation: the QoS is made, queue 0 free up to the link.
        let mut qos = Vec::new();
        let flows = plan_queue(&[(&one, 10e6), (&two, 15e6)], 3, "up", C, &mut qos);
        assert_eq!(qos.len(), 1);
        assert_eq!(qos[0].port, "up");
        assert_eq!(qos[0].queues[0].0, 0);
        assert_eq!(qos[0].queues[0].1.max_rate, Some(100_000_000));
        let (id, q) = qos[0].queues[1];
        assert_eq!(id, BACKGROUND_QUEUE);
        assert_eq!(
            (q.min_rate, q.max_rate),
            (Some(16_000_000), Some(25_000_000))
        );
        assert_eq!(flows.len(), 2);
        for f in &flows {
            assert!(f.refresh && f.hard_timeout == 3);
            assert_eq!(
                f.instructions,
                [Instruction::ApplyActions(vec![
                    Action::SetQueue(BACKGROUND_QUEUE),
                    Action::output(port::NORMAL)
                ])]
            );
        }
        // A reservation's QoS on the uplink gets the queue added, its own
        // queues untouched.
        let mut qos = vec![PortQos {
            port: "up".into(),
            max_rate: 100_000_000,
            queues: vec![(0, QueueConfig::default()), (1, QueueConfig::default())],
        }];
        plan_queue(&[(&one, 10e6)], 3, "up", C, &mut qos);
        assert_eq!(qos.len(), 1);
        let ids: Vec<u32> = qos[0].queues.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [0, 1, BACKGROUND_QUEUE]);
    }
}
