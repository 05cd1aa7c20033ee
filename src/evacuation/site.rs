//! One forecast across the sources of a request (a rack, a site), and the
//! request's view as one: what `GET /v1/evacuation-groups/{group}` answers.
//!
//! Each source's own forecast ([`super::forecast`]) counts its part of the
//! destinations' links as if the split lasted the whole evacuation, so a
//! source that will end early is still charged for the others' share after
//! it has gone. This one runs every source together on the site simulator's
//! clock ([`crate::simulate::engine`]: the same model, Algorithm 1 and
//! feedback controller), from what the sources measured, in their orders and
//! placement, so the links pass from one source to the others as they end.
//! Pure: the registry calls [`forecast`] once the last source has measured,
//! [`current`] each period from then on (the same simulation started from
//! what has happened: moved VMs on their destinations, running migrations
//! from their progress, what the hosts were seen to push), and [`view`] on
//! each read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::forecast;
use super::record::{EvacuationRecord, EvacuationState, VmState};
use crate::predict::learn::Learned;
use crate::predict::schedule::PlannedVm;
use crate::predict::AtRisk;
use crate::simulate::engine;

/// The forecast of every source's migrations together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteForecast {
    /// When it was made, s after the request: the last source had measured
    /// then, and the simulation starts there (a source that measured
    /// earlier has started a little before).
    pub made_at_s: f64,
    /// Every VM, source by source in their orders; times in seconds after
    /// the request.
    pub vms: Vec<SitePlanned>,
    /// First start to last end, s; None when some VM never ends.
    pub total_migration_s: Option<f64>,
    /// When the last migration ends, s after the request.
    pub end_s: Option<f64>,
    /// The VMs the model says do not move.
    pub unfinished: Vec<String>,
    /// With the request's deadline: the VMs the model says miss it, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk: Option<Vec<AtRisk>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitePlanned {
    #[serde(flatten)]
    pub planned: PlannedVm,
    pub source: String,
    pub destination: String,
}

/// The forecast of `members` (the evacuations one request started, one per
/// source) together, from their measurements, orders and up-front inputs
/// (what each source's host was learned to push, the model's parameters);
/// `capacities`: the destinations' links, bit/s (absent: the source's).
/// `made_at_s`: seconds since the request. None when no member has an
/// up-front forecast (none measured, or none could be planned).
pub fn forecast(
    members: &[EvacuationRecord],
    capacities: &BTreeMap<String, f64>,
    made_at_s: f64,
) -> Option<SiteForecast> {
    build(members, capacities, made_at_s, None)
}

/// The same forecast re-made at `now_s` (seconds after the request) from
/// what has happened since:
/// the VMs that moved are on their destinations (and out of the list), the
/// running migrations go on from their progress ([`forecast::resumed`]),
/// the rest follow in each source's current order, and each source's host
/// pushes what has been learned since, its running migrations' rates
/// included ([`forecast::refreshed`], as each source's own forecast does
/// every period). A VM that failed or was cancelled stays where it is.
pub fn current(
    members: &[EvacuationRecord],
    capacities: &BTreeMap<String, f64>,
    learned: &Learned,
    now_s: f64,
) -> Option<SiteForecast> {
    build(members, capacities, now_s, Some(learned))
}

fn build(
    members: &[EvacuationRecord],
    capacities: &BTreeMap<String, f64>,
    made_at_s: f64,
    now: Option<&Learned>,
) -> Option<SiteForecast> {
    let planned: Vec<&EvacuationRecord> = members
        .iter()
        .filter(|r| r.prediction.is_some() && !r.measurements.is_empty())
        .collect();
    let first = planned.first()?;
    let req = &first.request;
    let mut params = first.prediction.as_ref()?.upfront.inputs.params;
    let created = created_unix_ms(members);
    let mut hosts: Vec<engine::Host> = Vec::new();
    let (mut vms, mut at, mut sources, mut routes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut running, mut started) = (Vec::new(), Vec::new());
    // The first start of all, on the request's clock: a re-made forecast
    // counts the total from there.
    let mut earliest: Option<f64> = None;
    for r in &planned {
        let i = r.prediction.as_ref()?.upfront.inputs;
        let (mut push, mut model) = (i.push_bps, i.params);
        // This record's clock counts from its own creation, a few ms after
        // the first's.
        let offset_ms = r.created_unix_ms.saturating_sub(created);
        if let Some(learned) = now {
            let caps = (i.source_capacity_bps, i.destination_capacity_bps);
            let sc = forecast::scenario(&r.request, &r.measurements, caps, learned).ok()?;
            let now_ms = ((made_at_s * 1000.0) as u64).saturating_sub(offset_ms);
            let sc = forecast::refreshed(&sc, r, learned, now_ms);
            (push, model) = (sc.push_bps, sc.params);
            if r.id == first.id {
                params = model;
            }
        }
        let src = host_ix(&mut hosts, &r.request.source, i.source_capacity_bps, push);
        let on_clock = |ms: Option<u64>| ms.map(|ms| request_s(r, created, ms));
        let mut order = Vec::new();
        for name in &r.order {
            let Some(l) = r.measurements.iter().find(|l| &l.hypervisor.name == name) else {
                continue;
            };
            let dest_name = r.request.destination_of(name).to_string();
            let cap = capacities
                .get(&dest_name)
                .copied()
                .unwrap_or(i.source_capacity_bps);
            let dest = host_ix(&mut hosts, &dest_name, cap, cap);
            let priority = r.request.priorities.get(name).copied();
            let mut vm = forecast::vm_load(l, priority).model_input();
            let record = r.vms.iter().find(|v| &v.name == name);
            if let Some(v) = record {
                if let Some(s) = on_clock(v.started_ms) {
                    earliest = Some(earliest.map_or(s, |e: f64| e.min(s)));
                }
            }
            let state = now.and(record.map(|v| v.state));
            let ix = vms.len();
            let (host, start) = match state {
                None | Some(VmState::Pending) => {
                    order.push((ix, dest));
                    (src, None)
                }
                Some(VmState::Migrating) => {
                    let v = record.expect("a state is a record's");
                    let m = forecast::resumed(&mut vm, req.mode, &model, v.progress);
                    running.push(engine::Resumed {
                        vm: ix,
                        source: sources.len(),
                        dest,
                        m,
                    });
                    (src, on_clock(v.started_ms))
                }
                // Its guest runs on the destination (post-copy fetches
                // the rest from there).
                Some(VmState::Done | VmState::Postcopy) => (dest, None),
                // Failed, cancelled, never started: it stays.
                Some(_) => (src, None),
            };
            vms.push(vm);
            at.push(host);
            started.push(start);
            routes.push((r.request.source.clone(), dest_name));
        }
        sources.push(engine::Source { host: src, order });
    }
    let input = engine::Input {
        hosts,
        vms,
        at,
        sources,
        mode: req.mode,
        params,
        bandwidth: engine::Bandwidth::of(req.reserve.then_some(crate::reserve::Params {
            urgency: req.urgency,
            threshold: req.threshold,
            max_reserve: crate::reserve::DEFAULT_MAX_RESERVE,
        })),
        concurrency: req.concurrency().ok()?,
        max_concurrency: super::request::MAX_PARALLEL,
        period_s: 1.0,
        horizon_s: crate::order::HORIZON_S,
        running,
    };
    let out = engine::run(&input);
    let started = Started {
        vms: started,
        earliest: now.and(earliest),
    };
    Some(assemble(
        &input,
        &out,
        routes,
        started,
        made_at_s,
        req.deadline_s,
    ))
}

/// The real starts a re-made forecast keeps: per VM of the input, and the
/// first of all (the VMs that have moved included).
struct Started {
    vms: Vec<Option<f64>>,
    earliest: Option<f64>,
}

/// When the request was made: the creation of the first of its
/// evacuations (Unix ms), 0 without any.
pub fn created_unix_ms<'a>(members: impl IntoIterator<Item = &'a EvacuationRecord>) -> u64 {
    members
        .into_iter()
        .map(|r| r.created_unix_ms)
        .min()
        .unwrap_or(0)
}

/// `ms` on record `r`'s clock (which counts from its own creation, a few ms
/// after the request's, `created`), in seconds after the request.
pub fn request_s(r: &EvacuationRecord, created: u64, ms: u64) -> f64 {
    (r.created_unix_ms.saturating_sub(created) + ms) as f64 / 1000.0
}

/// `name`'s index in `hosts`, added with this link and push rate if new.
fn host_ix(hosts: &mut Vec<engine::Host>, name: &str, cap: f64, push: f64) -> usize {
    if let Some(i) = hosts.iter().position(|h| h.name == name) {
        return i;
    }
    hosts.push(engine::Host {
        name: name.to_string(),
        capacity_bps: cap,
        push_bps: push,
    });
    hosts.len() - 1
}

/// The engine's courses as the record shows them, shifted to the request's
/// clock: the VMs it moved (not those that had moved, failed or stayed
/// before it started), a running migration from its real start.
fn assemble(
    input: &engine::Input,
    out: &engine::Output,
    routes: Vec<(String, String)>,
    started: Started,
    made_at_s: f64,
    deadline_s: Option<f64>,
) -> SiteForecast {
    let shift = |t: Option<f64>| t.map(|t| t + made_at_s);
    let vms: Vec<SitePlanned> = input
        .vms
        .iter()
        .zip(&out.courses)
        .zip(routes)
        .zip(started.vms)
        .filter_map(|(((v, c), (source, destination)), real_start)| {
            let c = c.as_ref()?;
            let start_s = real_start.or(shift(c.start_s));
            let end_s = shift(c.end_s);
            Some(SitePlanned {
                planned: PlannedVm {
                    name: v.name.clone(),
                    start_s,
                    end_s,
                    duration_s: start_s.zip(end_s).map(|(s, e)| e - s),
                    bytes: c.bytes,
                    downtime_ms: c.downtime_ms,
                    passes: c.passes,
                    outcome: c.outcome,
                },
                source,
                destination,
            })
        })
        .collect();
    let unfinished: Vec<String> = vms
        .iter()
        .filter(|v| v.planned.end_s.is_none())
        .map(|v| v.planned.name.clone())
        .collect();
    let first = vms
        .iter()
        .filter_map(|v| v.planned.start_s)
        .chain(started.earliest)
        .fold(f64::INFINITY, f64::min);
    let end_s = unfinished.is_empty().then(|| {
        vms.iter()
            .filter_map(|v| v.planned.end_s)
            .fold(made_at_s, f64::max)
    });
    let at_risk = deadline_s.map(|d| crate::predict::at_risk(vms.iter().map(|v| &v.planned), d));
    SiteForecast {
        made_at_s,
        total_migration_s: end_s.filter(|_| first.is_finite()).map(|e| e - first),
        end_s,
        vms,
        unfinished,
        at_risk,
    }
}

/// A request with several sources, as one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub group: u64,
    /// `running` while any of its evacuations runs; then `done` if every
    /// VM moved, else `failed` (see the evacuations' records).
    pub state: String,
    /// Its evacuations: id, source, state.
    pub evacuations: Vec<Member>,
    pub vms_total: usize,
    pub vms_done: usize,
    /// First start to last end over every source, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_migration_ms: Option<u64>,
    /// Per VM: where it goes, what it did, what the site forecast said.
    pub vms: Vec<GroupVm>,
    /// The forecast of every source together ([`forecast`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<SiteForecast>,
    /// The same re-made from what has happened ([`current`]): each period
    /// while the request runs, the last one made once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<SiteForecast>,
    /// Once finished: the median and worst absolute error of the site
    /// forecast's migration times, percent, over the VMs that moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<SiteAccuracy>,
}

/// How far the site forecast's migration times were from the actual ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SiteAccuracy {
    pub migrations: usize,
    /// Median and worst absolute error, percent.
    pub median_pct: f64,
    pub worst_pct: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub source: String,
    pub state: EvacuationState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupVm {
    pub name: String,
    pub source: String,
    pub destination: String,
    pub state: VmState,
    /// Seconds after the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_start_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_end_s: Option<f64>,
    /// Its end by the latest re-made forecast, while it has not ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_end_s: Option<f64>,
}

/// `members`' view as one (they are one request's evacuations; the site
/// forecast is on the one whose id is the group's).
pub fn view(group: u64, members: &[EvacuationRecord]) -> GroupView {
    let created = created_unix_ms(members);
    let at = |r: &EvacuationRecord, ms: Option<u64>| ms.map(|ms| request_s(r, created, ms));
    let first = members.iter().find(|r| r.id == group);
    let site = first.and_then(|r| r.site.clone());
    let current = first.and_then(|r| r.site_current.clone());
    let in_forecast = |f: Option<&'_ SiteForecast>, name: &str| {
        f.and_then(|s| s.vms.iter().find(|v| v.planned.name == name))
            .map(|v| (v.planned.start_s, v.planned.end_s))
    };
    let mut vms = Vec::new();
    for r in members {
        for v in &r.vms {
            let p = in_forecast(site.as_ref(), &v.name);
            let ended = v.ended_ms.is_some();
            let now = in_forecast(current.as_ref(), &v.name).filter(|_| !ended);
            vms.push(GroupVm {
                name: v.name.clone(),
                source: r.request.source.clone(),
                destination: r.request.destination_of(&v.name).to_string(),
                state: v.state,
                started_s: at(r, v.started_ms),
                ended_s: at(r, v.ended_ms),
                predicted_start_s: p.and_then(|(start, _)| start),
                predicted_end_s: p.and_then(|(_, end)| end),
                current_end_s: now.and_then(|(_, end)| end),
            });
        }
    }
    let running = members.iter().any(|r| !r.state.finished());
    let done = vms.iter().filter(|v| v.state == VmState::Done).count();
    let first = vms.iter().filter_map(|v| v.started_s).reduce(f64::min);
    let last = vms.iter().filter_map(|v| v.ended_s).reduce(f64::max);
    let total_migration_ms = (!running)
        .then_some(first.zip(last))
        .flatten()
        .map(|(f, l)| ((l - f) * 1000.0).round() as u64);
    let accuracy = (!running).then(|| accuracy(&vms, site.as_ref())).flatten();
    GroupView {
        group,
        state: match (running, done == vms.len()) {
            (true, _) => "running",
            (false, true) => "done",
            (false, false) => "failed",
        }
        .to_string(),
        evacuations: members
            .iter()
            .map(|r| Member {
                id: r.id,
                source: r.request.source.clone(),
                state: r.state,
            })
            .collect(),
        vms_total: vms.len(),
        vms_done: done,
        total_migration_ms,
        vms,
        forecast: site,
        current,
        accuracy,
    }
}

/// The site forecast's migration times against the actual ones.
fn accuracy(vms: &[GroupVm], site: Option<&SiteForecast>) -> Option<SiteAccuracy> {
    let site = site?;
    let errs = vms
        .iter()
        .filter(|v| v.state == VmState::Done)
        .filter_map(|v| {
            let actual = v.ended_s? - v.started_s?;
            let p = site.vms.iter().find(|p| p.planned.name == v.name)?;
            let predicted = p.planned.duration_s.unwrap_or(f64::INFINITY);
            (actual > 0.0).then(|| (predicted - actual).abs() / actual * 100.0)
        });
    let (n, median, worst) = forecast::summary(errs)?;
    Some(SiteAccuracy {
        migrations: n,
        median_pct: median,
        worst_pct: worst,
    })
}
