//! The model checked against evacuations that ran: `solive predict-check`.
//!
//! Replays finished records (one migration at a time, as the testbed's
//! experiments ran them) through the same code a live evacuation uses: the
//! scenario from the record's request and measurements ([`super::forecast::scenario`]),
//! the learner carried from record to record as one long-running controller
//! would carry it, and for each VM two predictions of its migration time:
//! - *up front*: the record's whole order simulated before the first
//!   migration, with what earlier records taught;
//! - *at start*: the VM's own course when it starts, the VMs before it
//!   moved, with what every migration before it taught.
//!
//! What the replay cannot have that a live run has: QEMU's per-period
//! rates (records keep the last progress only), so a finished migration
//! teaches its mean rate over its time less the start-up learned so far.

use serde::Serialize;

use super::forecast;
use super::record::{EvacuationRecord, VmState};
use crate::hypervisor::mibs_to_bps;
use crate::predict::learn::{Learned, Observation};
use crate::predict::schedule::{alone, simulate};

/// One migration: what was predicted and what happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub record: String,
    pub vm: String,
    pub position: usize,
    pub actual_s: f64,
    pub upfront_s: Option<f64>,
    pub at_start_s: Option<f64>,
    /// Signed errors, percent of the actual.
    pub upfront_err_pct: Option<f64>,
    pub at_start_err_pct: Option<f64>,
}

/// Why a record is skipped.
pub fn skip_reason(r: &EvacuationRecord) -> Option<&'static str> {
    let sequential = match r.request.concurrency() {
        Ok(super::request::Concurrency::Fixed(1)) => true,
        // Records from before `concurrency` ran one at a time unless told.
        _ => r.request.concurrency.is_none() && r.request.max_parallel.unwrap_or(1) == 1,
    };
    if !sequential {
        return Some("not one migration at a time");
    }
    if r.request
        .intermediaries
        .as_ref()
        .is_some_and(|i| !i.is_empty())
    {
        return Some("through intermediaries");
    }
    if r.measurements.is_empty() {
        return Some("no measurements");
    }
    None
}

/// Replays `r` (named `name`), updating `learned`; its rows.
pub fn replay(
    name: &str,
    r: &EvacuationRecord,
    capacities: (f64, f64),
    learned: &mut Learned,
) -> Vec<Row> {
    let Ok(sc) = forecast::scenario(&r.request, &r.measurements, capacities, learned) else {
        return Vec::new();
    };
    let index = |n: &str| sc.vms.iter().position(|v| v.name == n);
    let order: Vec<usize> = r.order.iter().filter_map(|n| index(n)).collect();
    let upfront = simulate(&sc, &order);
    let mut rows = Vec::new();
    let mut moved = Vec::new();
    for (position, v) in r.vms.iter().enumerate() {
        let Some(i) = index(&v.name) else { continue };
        if v.state != VmState::Done {
            continue;
        }
        let Some(actual) = v.duration_ms.map(|d| d as f64 / 1000.0) else {
            continue;
        };
        let mut now = sc.clone();
        learned.apply(&r.request.source, &mut now);
        let at_start = alone(&now, i, &moved).duration_s;
        let up = upfront
            .vms
            .iter()
            .find(|p| p.name == v.name)
            .and_then(|p| p.duration_s);
        let err = |p: Option<f64>| p.map(|p| (p - actual) / actual * 100.0);
        rows.push(Row {
            record: name.to_string(),
            vm: v.name.clone(),
            position,
            actual_s: actual,
            upfront_s: up,
            at_start_s: at_start,
            upfront_err_pct: err(up),
            at_start_err_pct: err(at_start),
        });
        // What it teaches: its mean rate over its time less the start-up.
        let startup = now.params.startup_s;
        if let Some(bytes) = v.bytes {
            let secs = actual - startup;
            learned.observe(&Observation {
                source: &r.request.source,
                rate_bps: if secs > 0.0 {
                    bytes as f64 * 8.0 / secs
                } else {
                    0.0
                },
                link_bps: v.cap_mibs.map_or(capacities.0, mibs_to_bps),
                // It and the VMs after it were on the source meanwhile.
                guests_tx_bps: (0..sc.vms.len())
                    .filter(|j| !moved.contains(j))
                    .map(|j| sc.vms[j].tx_bps)
                    .sum(),
                capacity_bps: capacities.0,
                startup_s: None,
                downtime_ms: None,
                last_transfer_ms: None,
            });
        }
        moved.push(i);
    }
    rows
}

pub use forecast::summary;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_median_and_worst_of_absolute_errors() {
        assert_eq!(
            summary([10.0, -30.0, 5.0].into_iter()),
            Some((3, 10.0, 30.0))
        );
        assert_eq!(summary([10.0, -30.0].into_iter()), Some((2, 20.0, 30.0)));
        assert_eq!(summary(std::iter::empty()), None);
    }
}
