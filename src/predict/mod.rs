//! Predicting an evacuation before and while it runs: how long each
//! migration takes, what it sends, when its pause comes, and which order
//! finishes first or saves most before a deadline. Pure.
//!
//! - [`model`]: one migration as QEMU runs it (start-up, pre-copy passes,
//!   the stall remedies, post-copy), stepped at a given rate;
//! - [`schedule`]: a whole evacuation in simulated time on a fluid model of
//!   the links, the VMs' own traffic included, so that order matters;
//! - [`search`]: the order the model says is best, and the deadline plan;
//! - [`learn`]: the corrections measured migrations make to the inputs;
//! - [`working_set`]: how far a guest's dirty sets grow, from two
//!   dirty-rate windows.

pub mod learn;
pub mod model;
pub mod schedule;
pub mod search;
pub mod working_set;

use serde::{Deserialize, Serialize};

use schedule::{simulate, Scenario, Schedule};
use search::{best_order, miss_reason, Method, Objective};

/// What the model says of a plan, and what it used to say it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub inputs: Inputs,
    /// The chosen order's predicted course.
    pub schedule: Schedule,
    /// With `"order": "predict"`: the search and how the paper's order
    /// compares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchReport>,
    /// With a deadline: what the chosen order saves by then, and which VMs
    /// the model says will not make it, with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DeadlineReport>,
}

/// The model's inputs beyond the VMs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub source_capacity_bps: f64,
    pub destination_capacity_bps: f64,
    pub push_bps: f64,
    pub floor: f64,
    pub concurrency: u32,
    pub params: model::Params,
}

impl Inputs {
    pub fn of(sc: &Scenario) -> Inputs {
        Inputs {
            source_capacity_bps: sc.source_capacity_bps,
            destination_capacity_bps: sc.destination_capacity_bps,
            push_bps: sc.push_bps,
            floor: sc.floor,
            concurrency: sc.concurrency,
            params: sc.params,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    pub method: Method,
    pub simulations: u64,
    /// The paper's rule-based order and its predicted total.
    pub rules_order: Vec<String>,
    pub rules_total_s: Option<f64>,
    /// How much longer the rules' order takes than the chosen one by the
    /// model, percent (None when either never ends).
    pub rules_gap_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadlineReport {
    pub deadline_s: f64,
    /// Priority weight moved by the deadline, by the model, of the total.
    pub saved_priority: u64,
    pub total_priority: u64,
    /// The same for the paper's order.
    pub rules_saved_priority: u64,
    pub at_risk: Vec<AtRisk>,
}

/// A VM the model says will not be moved by the deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtRisk {
    pub name: String,
    pub reason: String,
}

/// The VMs of a predicted course that miss `deadline_s`, with why.
pub fn at_risk<'a>(
    vms: impl IntoIterator<Item = &'a schedule::PlannedVm>,
    deadline_s: f64,
) -> Vec<AtRisk> {
    vms.into_iter()
        .filter_map(|p| {
            miss_reason(p, deadline_s).map(|reason| AtRisk {
                name: p.name.clone(),
                reason,
            })
        })
        .collect()
}

/// The order to migrate in and its forecast. `rules_order` is the paper's
/// order (or the operator's); with `by_prediction` the search's best order
/// replaces it.
pub fn forecast(
    sc: &Scenario,
    rules_order: &[String],
    by_prediction: bool,
    deadline_s: Option<f64>,
) -> (Vec<String>, Forecast) {
    let index = |n: &String| sc.vms.iter().position(|v| &v.name == n);
    let rules: Vec<usize> = rules_order.iter().filter_map(index).collect();
    let rules_schedule = simulate(sc, &rules);
    let (order, schedule, search) = if by_prediction {
        let found = best_order(sc, &rules, Objective { deadline_s });
        let gap = rules_schedule
            .total_migration_s
            .zip(found.schedule.total_migration_s)
            .map(|(r, b)| (r - b) / b.max(1e-9) * 100.0);
        let report = SearchReport {
            method: found.method,
            simulations: found.simulations,
            rules_order: rules_order.to_vec(),
            rules_total_s: rules_schedule.total_migration_s,
            rules_gap_pct: gap,
        };
        (found.order, found.schedule, Some(report))
    } else {
        (rules, rules_schedule.clone(), None)
    };
    let deadline = deadline_s.map(|d| DeadlineReport {
        deadline_s: d,
        saved_priority: schedule.saved(&sc.vms, d),
        total_priority: sc.vms.iter().map(|v| v.priority as u64).sum(),
        rules_saved_priority: rules_schedule.saved(&sc.vms, d),
        at_risk: at_risk(&schedule.vms, d),
    });
    let names = order.iter().map(|&i| sc.vms[i].name.clone()).collect();
    (
        names,
        Forecast {
            inputs: Inputs::of(sc),
            schedule,
            search,
            deadline,
        },
    )
}
