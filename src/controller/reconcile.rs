//! Desired switch state and the pure step that brings a switch to it.
//!
//! The controller keeps, per host, the flows and meters it wants on the
//! bridge ([`Desired`]). Whenever that changes, when a switch (re)connects, and
//! every few periods regardless, it reads what the switch really has
//! ([`Observed`]: solive's flows, found by cookie, and the meters) and sends the
//! difference computed by [`plan`]. This is the kube-rs shape: an idempotent
//! `reconcile(desired, observed) -> actions`, re-run on a timer so that missed
//! events, a restarted ovs-vswitchd or someone's `ovs-ofctl del-flows` heal.
//!
//! Ownership: solive's flows carry a cookie whose top 16 bits are
//! [`COOKIE_TAG`]; flows without it belong to someone else and are never
//! touched. Meters have no cookie; solive owns every meter of the bridges it
//! controls (it is their only controller, `fail_mode=secure`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::openflow::{
    port, Action, Body, FlowMod, Instruction, Match, MeterBand, MeterFlags, MeterMod,
};

/// The top 16 bits of every solive flow cookie.
pub const COOKIE_TAG: u64 = 0x5011_0000_0000_0000;
/// Mask that selects [`COOKIE_TAG`].
pub const COOKIE_TAG_MASK: u64 = 0xffff_0000_0000_0000;
/// The cookie of the lowest-priority NORMAL flow that keeps the bridge
/// forwarding as a learning switch: solive reserves bandwidth, it does not route.
pub const BASELINE_COOKIE: u64 = COOKIE_TAG;

/// One flow solive wants on a bridge. Its identity is its cookie.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowSpec {
    pub cookie: u64,
    pub table_id: u8,
    pub priority: u16,
    #[serde(rename = "match")]
    pub matches: Match,
    pub instructions: Vec<Instruction>,
    /// Seconds; 0 for none. Throttling flows carry a few periods' worth so
    /// that they lapse by themselves if the controller dies.
    pub hard_timeout: u16,
    /// Re-sent (as an ADD, which restarts its hard timeout) at every
    /// reconcile, even when the switch already has it.
    pub refresh: bool,
}

/// One meter solive wants: a single drop band, in kbit/s with a burst in kbit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MeterSpec {
    pub id: u32,
    pub rate_kbps: u32,
    pub burst_kb: u32,
}

/// What solive wants on one bridge.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Desired {
    pub flows: BTreeMap<u64, FlowSpec>,
    pub meters: BTreeMap<u32, MeterSpec>,
}

impl Desired {
    /// The state every controlled bridge starts with: forward as before.
    pub fn baseline() -> Desired {
        let mut d = Desired::default();
        d.flows.insert(BASELINE_COOKIE, baseline_flow());
        d
    }
}

pub fn baseline_flow() -> FlowSpec {
    FlowSpec {
        cookie: BASELINE_COOKIE,
        table_id: 0,
        priority: 0,
        matches: Match::new(),
        instructions: vec![Instruction::ApplyActions(vec![Action::output(
            port::NORMAL,
        )])],
        hard_timeout: 0,
        refresh: false,
    }
}

/// A flow read back from the switch (only those with [`COOKIE_TAG`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedFlow {
    pub cookie: u64,
    pub table_id: u8,
    pub priority: u16,
    pub hard_timeout: u16,
    pub matches: Match,
    pub instructions: Vec<Instruction>,
}

/// A meter read back from the switch.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedMeter {
    pub id: u32,
    pub flags: MeterFlags,
    pub bands: Vec<MeterBand>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub flows: Vec<ObservedFlow>,
    pub meters: Vec<ObservedMeter>,
}

impl Observed {
    /// What a switch that applied `desired` reports back (for simulations and
    /// benchmarks of the reconcile step).
    pub fn from_desired(desired: &Desired) -> Observed {
        Observed {
            flows: desired
                .flows
                .values()
                .map(|f| ObservedFlow {
                    cookie: f.cookie,
                    table_id: f.table_id,
                    priority: f.priority,
                    hard_timeout: f.hard_timeout,
                    matches: f.matches.clone(),
                    instructions: f.instructions.clone(),
                })
                .collect(),
            meters: desired
                .meters
                .values()
                .map(|m| ObservedMeter {
                    id: m.id,
                    flags: meter_flags(),
                    bands: vec![MeterBand::drop(m.rate_kbps, m.burst_kb)],
                })
                .collect(),
        }
    }
}

/// The flags of every solive meter: kbit/s, explicit burst, statistics on (the
/// reservation loop reads band statistics to see the applications' dropped load).
pub fn meter_flags() -> MeterFlags {
    MeterFlags::KBPS | MeterFlags::BURST | MeterFlags::STATS
}

/// The messages that turn `observed` into `desired`, in a safe order: meters
/// are created before flows that could use them, flows are removed before the
/// meters they used.
pub fn plan(desired: &Desired, observed: &Observed) -> Vec<Body> {
    let mut meter_adds = Vec::new();
    let mut meter_dels = Vec::new();
    // A flow whose cookie is still wanted but which differs is deleted before
    // its new version is added (the delete goes by cookie and would take the
    // new one too); a flow no longer wanted is deleted after the adds, so a
    // rule that moves to another cookie with the same match (a shared
    // migration flow whose owner left) is never missing in between.
    let mut flow_replaced = Vec::new();
    let mut flow_dels = Vec::new();
    let mut flow_adds = Vec::new();

    let seen_meters: BTreeMap<u32, &ObservedMeter> =
        observed.meters.iter().map(|m| (m.id, m)).collect();
    for (id, want) in &desired.meters {
        let band = vec![MeterBand::drop(want.rate_kbps, want.burst_kb)];
        match seen_meters.get(id) {
            None => meter_adds.push(Body::MeterMod(MeterMod::add(*id, meter_flags(), band))),
            Some(have) if !meter_matches(want, have) => {
                meter_adds.push(Body::MeterMod(MeterMod::modify(*id, meter_flags(), band)))
            }
            Some(_) => {}
        }
    }
    for id in seen_meters.keys() {
        if !desired.meters.contains_key(id) {
            meter_dels.push(Body::MeterMod(MeterMod::delete(*id)));
        }
    }

    let seen_flows = solive_flows(observed);
    for (cookie, have) in &seen_flows {
        // A refreshed flow is replaced by its ADD (same match and priority),
        // so it needs no delete unless it differs or is duplicated.
        let keep = desired.flows.get(cookie).is_some_and(|w| present(w, have));
        if !keep {
            // Delete every flow with this exact cookie, in every table.
            let del = Body::FlowMod(
                FlowMod::delete(crate::openflow::flow_mod::TABLE_ALL, Match::new())
                    .cookie_mask(*cookie, u64::MAX),
            );
            if desired.flows.contains_key(cookie) {
                flow_replaced.push(del);
            } else {
                flow_dels.push(del);
            }
        }
    }
    for (cookie, want) in &desired.flows {
        let there = seen_flows
            .get(cookie)
            .is_some_and(|have| present(want, have));
        if !there || want.refresh {
            flow_adds.push(Body::FlowMod(
                FlowMod::add(
                    want.table_id,
                    want.priority,
                    want.matches.clone(),
                    want.instructions.clone(),
                )
                .cookie(*cookie)
                .timeouts(0, want.hard_timeout),
            ));
        }
    }

    let mut out = meter_adds;
    out.extend(flow_replaced);
    out.extend(flow_adds);
    out.extend(flow_dels);
    out.extend(meter_dels);
    out
}

/// How many of [`plan`]'s actions only re-send a refreshed flow the switch
/// already has as wanted (restarting its hard timeout): upkeep, not a change
/// (the controller logs changes; a throttling flow is refreshed every period).
pub fn refreshes(desired: &Desired, observed: &Observed) -> usize {
    let seen_flows = solive_flows(observed);
    desired
        .flows
        .iter()
        .filter(|(cookie, want)| {
            want.refresh
                && seen_flows
                    .get(cookie)
                    .is_some_and(|have| present(want, have))
        })
        .count()
}

/// The switch's solive flows (by [`COOKIE_TAG`]), by cookie.
fn solive_flows(observed: &Observed) -> BTreeMap<u64, Vec<&ObservedFlow>> {
    let mut seen: BTreeMap<u64, Vec<&ObservedFlow>> = BTreeMap::new();
    for f in observed
        .flows
        .iter()
        .filter(|f| f.cookie & COOKIE_TAG_MASK == COOKIE_TAG)
    {
        seen.entry(f.cookie).or_default().push(f);
    }
    seen
}

/// The switch has `want` as wanted: one flow with its cookie, the same.
fn present(want: &FlowSpec, have: &[&ObservedFlow]) -> bool {
    have.len() == 1 && flow_matches(want, have[0])
}

fn meter_matches(want: &MeterSpec, have: &ObservedMeter) -> bool {
    let flags_ok = have.flags.contains(MeterFlags::KBPS) && have.flags.contains(MeterFlags::BURST);
    match have.bands.as_slice() {
        [band @ MeterBand::Drop { .. }] => {
            flags_ok && band.rate() == want.rate_kbps && band_burst(band) == want.burst_kb
        }
        _ => false,
    }
}

fn band_burst(band: &MeterBand) -> u32 {
    match band {
        MeterBand::Drop { burst_size, .. } => *burst_size,
        _ => 0,
    }
}

/// Switches may return match fields and instructions in their own order; the
/// comparison must not depend on it. Actions inside an instruction keep their
/// order, which is meaningful.
fn flow_matches(want: &FlowSpec, have: &ObservedFlow) -> bool {
    want.table_id == have.table_id
        && want.priority == have.priority
        && want.hard_timeout == have.hard_timeout
        && same_elements(&want.matches.fields, &have.matches.fields)
        && same_elements(&want.instructions, &have.instructions)
}

/// Equal as multisets. Lists here hold a handful of elements, so counting
/// is cheaper than building sortable copies (the earlier Debug-string sort
/// took two thirds of a 100-reservation period in the benchmark).
fn same_elements<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    let count = |list: &[T], x: &T| list.iter().filter(|y| *y == x).count();
    a.len() == b.len() && a.iter().all(|x| count(a, x) == count(b, x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openflow::FlowModCommand;

    /// A converged switch that lists match fields and instructions in its
    /// own order (the reverse of ours).
    fn observed_of(desired: &Desired) -> Observed {
        let mut o = Observed::from_desired(desired);
        for f in &mut o.flows {
            f.matches.fields.reverse();
            f.instructions.reverse();
        }
        o
    }

    fn metered_flow(cookie: u64, meter: u32) -> FlowSpec {
        FlowSpec {
            cookie,
            table_id: 0,
            priority: 100,
            matches: Match::new().in_port(3).eth_type(0x0800),
            instructions: vec![
                Instruction::Meter(meter),
                Instruction::ApplyActions(vec![Action::output(port::NORMAL)]),
            ],
            hard_timeout: 0,
            refresh: false,
        }
    }

    fn desired_with_meter() -> Desired {
        let mut d = Desired::baseline();
        d.meters.insert(
            7,
            MeterSpec {
                id: 7,
                rate_kbps: 50_000,
                burst_kb: 10_000,
            },
        );
        d.flows
            .insert(COOKIE_TAG | 1, metered_flow(COOKIE_TAG | 1, 7));
        d
    }

    fn kinds(plan: &[Body]) -> Vec<String> {
        plan.iter()
            .map(|b| match b {
                Body::FlowMod(f) => format!("flow {:?} {:x}", f.command, f.cookie),
                Body::MeterMod(m) => format!("meter {:?} {}", m.command, m.meter_id),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn empty_switch_gets_meters_before_flows() {
        let p = plan(&desired_with_meter(), &Observed::default());
        let k = kinds(&p);
        assert_eq!(k.len(), 3, "{k:?}");
        assert!(k[0].starts_with("meter Add 7"), "{k:?}");
        assert!(k[1..].iter().all(|s| s.starts_with("flow Add")), "{k:?}");
    }

    #[test]
    fn converged_switch_needs_nothing_whatever_the_order() {
        let d = desired_with_meter();
        assert!(plan(&d, &observed_of(&d)).is_empty());
    }

    #[test]
    fn changed_meter_rate_is_modified() {
        let d = desired_with_meter();
        let mut o = observed_of(&d);
        o.meters[0].bands = vec![MeterBand::drop(10, 10_000)];
        assert_eq!(kinds(&plan(&d, &o)), vec!["meter Modify 7"]);
    }

    #[test]
    fn stale_flows_and_meters_are_removed_flows_first_foreign_flows_kept() {
        let d = Desired::baseline();
        let mut o = observed_of(&desired_with_meter());
        o.flows.push(ObservedFlow {
            cookie: 0x1234, // not ours
            table_id: 0,
            priority: 5,
            hard_timeout: 0,
            matches: Match::new(),
            instructions: vec![],
        });
        let k = kinds(&plan(&d, &o));
        assert_eq!(
            k,
            vec![
                format!("flow Delete {:x}", COOKIE_TAG | 1),
                "meter Delete 7".into()
            ]
        );
        let del = &plan(&d, &o)[0];
        let Body::FlowMod(f) = del else { panic!() };
        assert_eq!(f.command, FlowModCommand::Delete);
        assert_eq!(f.cookie_mask, u64::MAX);
    }

    #[test]
    fn changed_or_duplicated_flow_is_replaced() {
        let d = desired_with_meter();
        let mut o = observed_of(&d);
        let f = o
            .flows
            .iter_mut()
            .find(|f| f.cookie == COOKIE_TAG | 1)
            .unwrap();
        f.priority = 99;
        let k = kinds(&plan(&d, &o));
        assert_eq!(
            k,
            vec![
                format!("flow Delete {:x}", COOKIE_TAG | 1),
                format!("flow Add {:x}", COOKIE_TAG | 1)
            ]
        );

        let mut o = observed_of(&d);
        let dup = o.flows[0].clone();
        o.flows.push(dup);
        assert_eq!(plan(&d, &o).len(), 2);
    }

    #[test]
    fn a_rule_moving_to_another_cookie_is_added_before_the_old_cookie_goes() {
        let d = desired_with_meter();
        let o = observed_of(&d);
        // The same flow, now wanted under another cookie (a shared migration
        // flow whose oldest reservation was released).
        let mut d2 = d.clone();
        let mut moved = d2.flows.remove(&(COOKIE_TAG | 1)).unwrap();
        moved.cookie = COOKIE_TAG | 2;
        d2.flows.insert(COOKIE_TAG | 2, moved);
        assert_eq!(
            kinds(&plan(&d2, &o)),
            vec![
                format!("flow Add {:x}", COOKIE_TAG | 2),
                format!("flow Delete {:x}", COOKIE_TAG | 1)
            ]
        );
    }

    #[test]
    fn refreshed_flows_are_re_added_every_time_with_their_timeout() {
        let mut d = desired_with_meter();
        let f = d.flows.get_mut(&(COOKIE_TAG | 1)).unwrap();
        f.refresh = true;
        f.hard_timeout = 3;
        let p = plan(&d, &observed_of(&d));
        assert_eq!(kinds(&p), vec![format!("flow Add {:x}", COOKIE_TAG | 1)]);
        let Body::FlowMod(fm) = &p[0] else { panic!() };
        assert_eq!(fm.hard_timeout, 3);
        // That is upkeep, not a change; missing, it is both.
        assert_eq!(refreshes(&d, &observed_of(&d)), 1);
        let mut gone = observed_of(&d);
        gone.flows.clear();
        assert_eq!(refreshes(&d, &gone), 0);
        assert_eq!(refreshes(&desired_with_meter(), &observed_of(&d)), 0);
    }

    #[test]
    fn plan_is_idempotent_once_applied() {
        // Applying the plan to an empty switch yields the desired state, after
        // which the plan is empty: checked through observed_of.
        let d = desired_with_meter();
        assert!(!plan(&d, &Observed::default()).is_empty());
        assert!(plan(&d, &observed_of(&d)).is_empty());
    }
}
