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
//! controller like the rest. Queue mode has no per-flow meter; there the
//! transfer is held back by its own cap only (the grant says so).

use std::net::Ipv4Addr;

use serde::Serialize;

use super::enforce::{cookie, KIND_BACKGROUND, MIGRATION_PRIORITY};
use super::reconcile::{FlowSpec, MeterSpec};
use crate::openflow::{port, Action, Instruction, Match};

/// Background transfers' meters: `BACKGROUND_METERS + id`, inside the range
/// enforcement owns.
pub const BACKGROUND_METERS: u32 = 0x5011_8000;
/// Ids wrap within this many.
pub const MAX_BACKGROUND: u32 = 0x7fff;

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
        let r = &b.request;
        flows.push(FlowSpec {
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
            instructions: vec![
                Instruction::Meter(meter),
                Instruction::ApplyActions(vec![Action::output(port::NORMAL)]),
            ],
            hard_timeout,
            refresh: true,
        });
    }
    (flows, meters)
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
}
