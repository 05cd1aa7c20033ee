//! Starting an evacuation's migrations: in the planned order, as many at
//! once as its concurrency allows, pinned by the request or set every
//! period by the feedback controller ([`super::concurrency`]) from what the
//! running migrations report in the record.
//!
//! The dispatcher only starts migrations; each one's task
//! ([`super::migrate::migrate_one`]) carries it to its end and is the writer
//! of its VM's part of the record. What the dispatcher writes is the
//! record's `concurrency` (decisions and timeline).

use std::collections::{BTreeMap, VecDeque};

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::concurrency::{self, Feedback, Sample};
use super::migrate::migrate_one;
use super::record::{ConcurrencyRecord, EvacuationRecord};
use super::request::{Concurrency, OnDeadline, MAX_PARALLEL};
use super::runner::Job;
use crate::hypervisor::mibs_to_bps;

/// What the dispatcher keeps of one running migration.
#[derive(Debug, Default)]
struct Running {
    /// When its first bytes were seen, ms since the evacuation was created.
    sent_ms: Option<u64>,
    /// When it entered its tail and gave up its slot (auto mode).
    released_ms: Option<u64>,
    /// Its stalls recorded so far.
    stalls: usize,
    /// Whether it has run with no other migration beside it (what its
    /// rate says of the host: [`super::forecast::observation`]).
    alone: bool,
    /// The sum and count of the rates QEMU reported while it sent, bit/s.
    rates: (f64, u32),
}

/// Migrates `order`'s VMs, at most `mode`'s number at once; returns when
/// every started migration has ended (a cancel stops further starts).
pub(super) async fn run_all(
    job: &Job,
    order: Vec<String>,
    mode: Concurrency,
    cancel: &CancellationToken,
) {
    let mut pending: VecDeque<String> = order.into();
    let mut tasks = JoinSet::new();
    let mut names: BTreeMap<tokio::task::Id, String> = BTreeMap::new();
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    // One source per evacuation: the feedback controller starts at one.
    let mut feedback = match mode {
        Concurrency::Auto => Some(Feedback::new(1, MAX_PARALLEL)),
        Concurrency::Fixed(_) => None,
    };
    let mut rec = ConcurrencyRecord::new(mode);
    // The latest forecast from now, for each start's prediction.
    let mut current: Option<crate::predict::schedule::Schedule> = None;
    if let Some(f) = &feedback {
        rec.decisions.push(f.start(job.ms()));
    }
    let mut leads: Vec<u64> = Vec::new();
    let mut tick = tokio::time::interval(job.evac.inner.settings.period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut written = None;
    let (request, upfront): (_, BTreeMap<String, Option<u64>>) = match job.evac.get(job.id) {
        Some(r) => (
            Some(r.request),
            r.vms
                .iter()
                .map(|v| (v.name.clone(), v.predicted_ms))
                .collect(),
        ),
        None => (None, BTreeMap::new()),
    };
    // `"order": "predict"`: the order of the VMs not started is re-made
    // from what has been measured each time a slot is free.
    let by_prediction = request.as_ref().is_some_and(|r| r.order.by_prediction());
    // With `on_deadline: "stop"`, nothing starts after this (ms since the
    // evacuation was created).
    let stop_at = request
        .as_ref()
        .filter(|r| r.on_deadline == OnDeadline::Stop)
        .and_then(|r| r.deadline_s)
        .map(|d| (d * 1000.0) as u64);
    loop {
        let now = job.ms();
        if stop_at.is_some_and(|t| now >= t) && !pending.is_empty() {
            let left: Vec<String> = pending.drain(..).collect();
            tracing::info!(evacuation = job.id, vms = ?left, "deadline passed: not starting the rest");
            job.evac.update(job.id, |r| {
                for v in r.vms.iter_mut().filter(|v| left.contains(&v.name)) {
                    v.error = Some("not started: the deadline passed (on_deadline: stop)".into());
                }
            });
        }
        let lead = lead_ms(&leads);
        let limit = match (&feedback, mode) {
            (Some(f), _) => f.limit(),
            (None, Concurrency::Fixed(n)) => n,
            (None, Concurrency::Auto) => 1,
        };
        let mut holding = holding(&running, feedback.is_some(), now, lead);
        if holding < limit as usize && by_prediction && pending.len() > 1 {
            replan(job, &mut pending, now).await;
        }
        while holding < limit as usize && !cancel.is_cancelled() {
            let Some(vm) = pending.pop_front() else { break };
            let at_start = predicted_now(&current, &vm).or(upfront.get(&vm).copied().flatten());
            if let (Some(t), Some(d)) = (stop_at, at_start) {
                if now + d > t {
                    // It would still run at the deadline: under "stop"
                    // its bandwidth goes to those that can make it.
                    let why = format!(
                        "not started: predicted to end at {:.0} s, after the deadline ({:.0} s; on_deadline: stop)",
                        (now + d) as f64 / 1000.0,
                        t as f64 / 1000.0
                    );
                    tracing::info!(evacuation = job.id, vm, "{why}");
                    job.evac.update(job.id, |r| {
                        if let Some(v) = r.vm_mut(&vm) {
                            v.error = Some(why);
                        }
                    });
                    continue;
                }
            }
            job.evac.update(job.id, |r| {
                if let Some(v) = r.vm_mut(&vm) {
                    v.predicted_at_start_ms = at_start;
                }
            });
            let (job, cancel, name) = (job.clone(), cancel.clone(), vm.clone());
            let handle = tasks.spawn(async move { migrate_one(&job, &name, &cancel).await });
            names.insert(handle.id(), vm.clone());
            running.insert(
                vm,
                Running {
                    alone: true,
                    ..Running::default()
                },
            );
            holding += 1;
        }
        if running.len() > 1 {
            running.values_mut().for_each(|r| r.alone = false);
        }
        rec.point(now, limit, running.len() as u32);
        if feedback.is_some() && !leads.is_empty() {
            rec.lead_ms = Some(lead);
        }
        let shape = (rec.decisions.len(), rec.timeline.len(), rec.lead_ms);
        if written != Some(shape) {
            written = Some(shape);
            let copy = rec.clone();
            job.evac.update(job.id, |r| r.concurrency = Some(copy));
        }
        if tasks.is_empty() && (pending.is_empty() || cancel.is_cancelled()) {
            break;
        }
        tokio::select! {
            Some(done) = tasks.join_next_with_id() => {
                let id = match &done {
                    Ok((id, ())) => *id,
                    Err(e) => {
                        tracing::error!(evacuation = job.id, error = %e, "a migration's task ended abnormally");
                        e.id()
                    }
                };
                if let Some(vm) = names.remove(&id) {
                    if let Some(run) = running.remove(&vm) {
                        learn(job, &vm, &run);
                    }
                }
            }
            _ = tick.tick() => {
                let Some(r) = job.evac.get(job.id) else { continue };
                let now = job.ms();
                let link = link_bps(job);
                let urgency = job.reservation.urgency;
                let mut s = sample(&r, &mut running, &mut leads, pending.len(), now, urgency, link);
                s.unreserved_apps_bps = unreserved_apps_bps(job, s.aggregate_bps).await;
                if let Some(sc) = scenario_now(job, &r, now) {
                    let list: Vec<String> = pending.iter().cloned().collect();
                    let schedule = super::forecast::now(&sc, &r, &list, now);
                    current = Some(schedule.clone());
                    job.evac.update(job.id, |r| {
                        if let Some(p) = r.prediction.as_mut() {
                            p.current = Some(super::forecast::Current { at_ms: now, schedule });
                        }
                    });
                }
                // The request's forecast across its sources, beside this
                // one: on a task of its own, so that a site's simulation
                // never holds this loop (it runs once a period for the
                // group, whichever source asks first).
                if r.group.is_some() {
                    let (evac, id) = (job.evac.clone(), job.id);
                    tokio::spawn(async move { evac.reforecast_site(id, now).await });
                }
                let Some(f) = feedback.as_mut() else { continue };
                if let Some(d) = f.observe(&s) {
                    tracing::info!(evacuation = job.id, from = d.from, to = d.to, reason = ?d.reason, "concurrency");
                    rec.decisions.push(d);
                }
            }
            // Nothing more starts; the runner records those never started
            // as cancelled.
            _ = cancel.cancelled(), if !pending.is_empty() => pending.clear(),
        }
    }
}

/// Re-orders `pending` by the model's search from now
/// ([`super::forecast::replan`]), off the runtime's threads (a search may
/// run thousands of simulations), and records the change.
async fn replan(job: &Job, pending: &mut VecDeque<String>, now: u64) {
    let Some(r) = job.evac.get(job.id) else {
        return;
    };
    let Some(sc) = scenario_now(job, &r, now) else {
        return;
    };
    let list: Vec<String> = pending.iter().cloned().collect();
    let found =
        tokio::task::spawn_blocking(move || super::forecast::replan(&sc, &r, &list, now)).await;
    let Ok(Some(change)) = found else { return };
    tracing::info!(evacuation = job.id, from = ?change.from, to = ?change.to, "re-planned the order");
    *pending = change.to.iter().cloned().collect();
    job.evac.update(job.id, |r| {
        // The record's order is the one migrated in: what has started,
        // then the new order.
        r.order.retain(|n| !change.from.contains(n));
        r.order.extend(change.to.iter().cloned());
        let order = r.order.clone();
        r.vms
            .sort_by_key(|v| order.iter().position(|o| *o == v.name));
        if let Some(p) = r.prediction.as_mut() {
            p.replans.push(change);
        }
    });
}

/// The evacuation's scenario with what has been learned and what the
/// running migrations show now ([`super::forecast::refreshed`]).
fn scenario_now(
    job: &Job,
    r: &EvacuationRecord,
    now: u64,
) -> Option<crate::predict::schedule::Scenario> {
    let sc = job.scenario.as_ref()?;
    let learned = job.evac.inner.learned.lock().expect("learned").clone();
    let mut sc = super::forecast::refreshed(sc, r, &learned, now);
    if !job.dest_capacities.is_empty() {
        sc.destination_capacity_bps = destination_bps(job);
    }
    Some(sc)
}

/// The evacuation's part of its destinations' links now
/// ([`super::forecast::destination_share`]).
fn destination_bps(job: &Job) -> f64 {
    let (own, others) = job.evac.spreads(job.id);
    super::forecast::destination_share(&job.dest_capacities, &own, &others)
}

/// The capacity of the link that bounds the evacuation's migrations: the
/// source's uplink, or its part of a destination's if smaller
/// ([`super::forecast::destination_share`]); 0 when unknown.
fn link_bps(job: &Job) -> f64 {
    let c = job.capacity_bps.min(destination_bps(job));
    if c.is_finite() {
        c
    } else {
        0.0
    }
}

/// What the source's applications send over its uplink beside the
/// migrations, bit/s, when nothing reserves their share: the switch's
/// counter less QEMU's rates. 0 under a reservation (Algorithm 1 holds the
/// applications' part) or when the counter is not known yet.
async fn unreserved_apps_bps(job: &Job, migrations_bps: f64) -> f64 {
    if job.reserve {
        return 0.0;
    }
    let controller = &job.evac.inner.controller;
    match controller.host(&job.reservation.source).await {
        Ok(Some(view)) => view
            .uplink_out_bps()
            .map_or(0.0, |out| (out - migrations_bps).max(0.0)),
        _ => 0.0,
    }
}

/// `vm`'s migration time by the latest forecast, ms.
fn predicted_now(current: &Option<crate::predict::schedule::Schedule>, vm: &str) -> Option<u64> {
    let p = current.as_ref()?.vms.iter().find(|p| p.name == vm)?;
    // From its predicted start: it starts now.
    p.end_s
        .zip(p.start_s)
        .map(|(e, s)| ((e - s) * 1000.0).max(0.0) as u64)
}

/// Teaches the model what a finished migration measured.
fn learn(job: &Job, vm: &str, run: &Running) {
    let Some(r) = job.evac.get(job.id) else {
        return;
    };
    let Some(v) = r.vms.iter().find(|v| v.name == vm) else {
        return;
    };
    let rate = (run.rates.1 > 0).then(|| run.rates.0 / run.rates.1 as f64);
    let capacity = job
        .scenario
        .as_ref()
        .map_or(0.0, |sc| sc.source_capacity_bps);
    if let Some(o) = super::forecast::observation(&r, v, run.sent_ms, rate, run.alone, capacity) {
        job.evac.learn(&o);
    }
}

/// The migrations holding a slot: all of them when pinned; in auto mode,
/// not those in their tail ([`concurrency::occupies`]).
fn holding(running: &BTreeMap<String, Running>, auto: bool, now: u64, lead: u64) -> usize {
    running
        .values()
        .filter(|r| !auto || concurrency::occupies(r.released_ms, now, lead))
        .count()
}

/// What a migrating guest dirties that its migration must send again,
/// bit/s: QEMU's dirty rate once a pass has ended (it measures it at each
/// pass's end), the plan's measurement before; nothing once in post-copy
/// (pages then move once) or while the disks are copied.
fn dirty_bps(r: &EvacuationRecord, v: &super::record::VmRecord) -> f64 {
    let copying_disks = v
        .progress
        .is_some_and(|p| p.disk_total > 0 && p.disk_processed < p.disk_total);
    if v.postcopy_ms.is_some() || copying_disks {
        return 0.0;
    }
    let pages = match v.progress.map(|p| p.mem_dirty_rate) {
        Some(pps) if pps > 0 => pps as f64,
        _ => r
            .measurements
            .iter()
            .find(|m| m.hypervisor.name == v.name)
            .map_or(0.0, |m| m.hypervisor.dirty_pages_per_sec),
    };
    pages * crate::predict::model::PAGE * 8.0
}

/// The start-up time: the mean of those measured, or the default.
fn lead_ms(leads: &[u64]) -> u64 {
    if leads.is_empty() {
        return concurrency::DEFAULT_LEAD_MS;
    }
    leads.iter().sum::<u64>() / leads.len() as u64
}

/// One period's [`Sample`] from the record; notes in `running` when each
/// migration first sent, entered its tail and stalled.
fn sample(
    r: &EvacuationRecord,
    running: &mut BTreeMap<String, Running>,
    leads: &mut Vec<u64>,
    pending: usize,
    now: u64,
    urgency: f64,
    link_bps: f64,
) -> Sample {
    let lead = lead_ms(leads);
    // Each new migration's buffer drains at its part of the link.
    let warmup = concurrency::warmup_ms(link_bps / running.len().max(1) as f64);
    let mut s = Sample {
        at_ms: now,
        pending,
        link_bps,
        ..Sample::default()
    };
    for (name, run) in running.iter_mut() {
        let Some(v) = r.vms.iter().find(|v| &v.name == name) else {
            continue;
        };
        let p = v.progress.filter(|p| p.data_processed > 0);
        if let (Some(p), None) = (p, run.sent_ms) {
            // Its first bytes went out before this period saw them: back
            // by what it sent at the rate QEMU reports.
            let back = if p.mem_bps > 0 {
                (p.data_processed as f64 / p.mem_bps as f64 * 1000.0) as u64
            } else {
                0
            };
            let first = now.saturating_sub(back).max(v.started_ms.unwrap_or(0));
            run.sent_ms = Some(first);
            if let Some(start) = v.started_ms {
                leads.push(first.saturating_sub(start));
            }
        }
        if let Some(p) = p.filter(|p| p.mem_bps > 0) {
            run.rates.0 += p.mem_bps as f64 * 8.0;
            run.rates.1 += 1;
        }
        let warmed = concurrency::warmed(run.sent_ms, now, warmup);
        if let Some(p) = p {
            s.aggregate_bps += p.mem_bps as f64 * 8.0;
            if warmed {
                s.progress_bps += concurrency::net_bps(p.mem_bps as f64 * 8.0, dirty_bps(r, v));
            }
            s.caps_bps += v.cap_mibs.map_or(0.0, mibs_to_bps);
            if run.released_ms.is_none() && concurrency::in_tail(p.data_remaining, p.mem_bps, lead)
            {
                run.released_ms = Some(now);
            }
        }
        if v.stalls.len() > run.stalls {
            run.stalls = v.stalls.len();
            s.stalled = Some(name.clone());
        }
        if concurrency::occupies(run.released_ms, now, lead) {
            s.running += 1;
            if warmed && p.is_some_and(|p| p.mem_bps > 0) {
                s.sending += 1;
            }
        }
        if s.squeezed.is_none() {
            s.squeezed = v
                .reservation_history
                .last()
                .and_then(|p| concurrency::squeezed(p, urgency));
        }
    }
    s
}
