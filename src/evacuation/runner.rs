//! One evacuation's task: measure, plan, then migrate each VM with its own
//! reservation, keeping the hypervisor's speed cap in step with it.
//!
//! Whatever happens to one VM (its reservation refused, libvirt failing, the
//! destination dying), the runner records it, releases the VM's reservation
//! and goes on with the next: a failed or aborted pre-copy migration leaves
//! the VM running on the source, which is the safe place for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::converge;
use super::forecast;
use super::record::{EvacuationState, VmLoadRecord, VmState};
use super::request::Validated;
use super::{Evacuations, HostHypervisor};
use crate::controller::reservation::ReservationRequest;
use crate::controller::HostView;
use crate::order::{self, Mode, PlanInput};

/// Everything one VM's migration needs, cloned into its task.
#[derive(Clone)]
pub(super) struct Job {
    pub(super) evac: Evacuations,
    pub(super) id: u64,
    t0: Instant,
    pub(super) source: HostHypervisor,
    /// The destination of the VM at hand ([`Job::for_vm`]): the
    /// evacuation's, or with several its placement's.
    pub(super) dest: HostHypervisor,
    /// Every destination of the evacuation, by name.
    pub(super) dests: Arc<BTreeMap<String, HostHypervisor>>,
    /// Where each VM goes, with several destinations.
    pub(super) placement: Arc<BTreeMap<String, String>>,
    pub(super) reservation: ReservationRequest,
    pub(super) mode: Mode,
    /// Whether to reserve at all.
    pub(super) reserve: bool,
    /// The cap before the reservation is first measured: urgency% of C.
    pub(super) fallback_bps: f64,
    /// The cap without a reservation: C.
    pub(super) capacity_bps: f64,
    /// The request's intermediaries (None: choose by the shortfall).
    pub(super) intermediaries: Option<Vec<String>>,
    /// When the evacuation was created (Unix ms): puts the relays' wall-clock
    /// figures on the record's time line.
    pub(super) created_unix_ms: u64,
    /// What to do when a pre-copy migration stops converging.
    pub(super) convergence: converge::Policy,
    /// TCP connections per migration (None: one).
    pub(super) parallel_connections: Option<u32>,
    /// The model's scenario, for the forecasts re-made each period.
    pub(super) scenario: Option<Arc<crate::predict::schedule::Scenario>>,
    /// Each destination's link, bit/s: its share is re-made each period
    /// ([`forecast::destination_share`]).
    pub(super) dest_capacities: Arc<BTreeMap<String, f64>>,
}

impl Job {
    /// The job of one VM: its own destination (hypervisor and the
    /// reservation's destination) when the evacuation has several.
    pub(super) fn for_vm(&self, vm: &str) -> Job {
        let mut job = self.clone();
        if let Some((name, h)) = self
            .placement
            .get(vm)
            .and_then(|d| self.dests.get(d).map(|h| (d, h)))
        {
            job.dest = h.clone();
            job.reservation.destination = name.clone();
        }
        job
    }

    pub(super) fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    pub(super) fn update_vm(&self, vm: &str, f: impl FnOnce(&mut super::VmRecord)) {
        self.evac.update(self.id, |r| {
            if let Some(v) = r.vm_mut(vm) {
                f(v)
            }
        });
    }
}

/// The instant the evacuation was created: its records' times (ms since
/// creation) count from it, also in a runner that a new cluster leader
/// started long after the creation (`super::takeover`).
pub(super) fn created_at(rec: &super::EvacuationRecord) -> Instant {
    let since = crate::clock::unix_ms().saturating_sub(rec.created_unix_ms);
    Instant::now()
        .checked_sub(std::time::Duration::from_millis(since))
        .unwrap_or_else(Instant::now)
}

/// Every destination of a request (validated when it was accepted).
pub(super) fn destinations(
    evac: &Evacuations,
    req: &super::request::EvacuationRequest,
) -> BTreeMap<String, HostHypervisor> {
    std::iter::once(&req.destination)
        .chain(req.placement.values())
        .filter_map(|d| evac.inner.hosts.get(d).map(|h| (d.clone(), h.clone())))
        .collect()
}

pub(super) async fn run(evac: Evacuations, id: u64, valid: Validated, cancel: CancellationToken) {
    let Some(rec) = evac.get(id) else { return };
    let t0 = created_at(&rec);
    let req = rec.request.clone();
    let inner = &evac.inner;
    let (source, dest) = (
        inner.hosts[&req.source].clone(),
        inner.hosts[&req.destination].clone(),
    );
    let dests = destinations(&evac, &req);
    let source_view = inner.controller.host(&req.source).await.ok().flatten();
    let capacity_bps = source_view
        .as_ref()
        .map_or(0.0, |h| h.capacity_mbps as f64 * 1e6);

    // The destinations' links, less what other evacuations sending there
    // take; with several destinations the forecast takes the slowest.
    let known = evac.link_capacities(dests.keys().cloned()).await;
    let dest_capacities: BTreeMap<String, f64> = dests
        .keys()
        .map(|d| (d.clone(), known.get(d).copied().unwrap_or(capacity_bps)))
        .collect();
    let (own, others) = evac.spreads(id);
    let dest_capacity_bps = forecast::destination_share(&dest_capacities, &own, &others);

    // Measure and plan (unless the request gave the order), then forecast.
    let mut measured = measure(&evac, &source, source_view.as_ref(), &valid.vms).await;
    // A disk cached on the (only) destination sends only what was written
    // since its last sync: that, not the whole disk, is its part of `N`.
    if let (Ok(loads), Some(only)) = (
        &mut measured,
        dests.keys().next().filter(|_| dests.len() == 1),
    ) {
        for l in loads.iter_mut() {
            if let Some(dirty) = inner.caches.uncached_bytes(&l.hypervisor.name, only) {
                l.hypervisor.disk_bytes = dirty;
            }
        }
    }
    let loads = match measured {
        Ok(loads) => loads,
        Err(e) => {
            evac.update(id, |r| {
                r.error = Some(e);
                r.finish(t0.elapsed().as_millis() as u64, valid.vms.clone(), false);
                for v in &mut r.vms {
                    v.state = VmState::Cancelled;
                }
                r.state = EvacuationState::Failed;
            });
            release(&evac, id);
            // The others' site forecast may have waited for this one.
            evac.forecast_site(id).await;
            return;
        }
    };
    let mut plan = None;
    let mut order = match valid.order.clone() {
        Some(order) => order,
        None => {
            let input = PlanInput {
                capacity_bps,
                vms: loads.iter().map(|l| forecast::vm_load(l, None)).collect(),
            };
            match order::plan(&input, req.mode, req.balance_pct) {
                Ok(p) => {
                    let order = p.order.clone();
                    plan = Some(p);
                    order
                }
                Err(e) => {
                    // Only a host without a capacity gets here; keep the
                    // request's order rather than refuse to evacuate.
                    tracing::warn!(id, error = %e, "cannot plan; migrating in the given order");
                    evac.update(id, |r| {
                        r.error = Some(format!("no plan: {e}; migrated in the listed order"));
                    });
                    valid.vms.clone()
                }
            }
        }
    };
    let learned = evac.inner.learned.lock().expect("learned").clone();
    let scenario = forecast::scenario(&req, &loads, (capacity_bps, dest_capacity_bps), &learned);
    let mut upfront = None;
    match &scenario {
        Ok(sc) => {
            // The deadline counts from the request; measuring took some.
            let deadline = req
                .deadline_s
                .map(|d| (d - t0.elapsed().as_secs_f64()).max(0.0));
            let (chosen, f) =
                crate::predict::forecast(sc, &order, req.order.by_prediction(), deadline);
            if let Some(p) = plan.as_mut() {
                p.reorder(&chosen);
            }
            order = chosen;
            upfront = Some(f);
        }
        Err(e) => tracing::warn!(id, error = %e, "no forecast"),
    }
    evac.update(id, |r| {
        r.measurements = loads;
        r.plan = plan;
        if let Some(f) = upfront {
            for v in &mut r.vms {
                v.predicted_ms = f
                    .schedule
                    .vms
                    .iter()
                    .find(|p| p.name == v.name)
                    .and_then(|p| p.duration_s)
                    .map(|d| (d * 1000.0) as u64);
            }
            r.prediction = Some(forecast::PredictionRecord {
                upfront: f,
                current: None,
                accuracy: None,
                deadline: None,
                replans: Vec::new(),
            });
        }
        // VMs already moved (by a cluster's previous leader) stay first.
        let moved: Vec<String> = r
            .vms
            .iter()
            .filter(|v| !order.contains(&v.name))
            .map(|v| v.name.clone())
            .collect();
        r.order = moved.iter().chain(&order).cloned().collect();
        let order = r.order.clone();
        r.vms
            .sort_by_key(|v| order.iter().position(|o| *o == v.name));
        if r.state == EvacuationState::Planning {
            r.state = EvacuationState::Migrating;
        }
    });
    evac.forecast_site(id).await;

    let job = Job {
        evac: evac.clone(),
        id,
        t0,
        source: source.clone(),
        dest,
        dests: Arc::new(dests),
        placement: Arc::new(req.placement.clone()),
        reservation: ReservationRequest {
            source: req.source.clone(),
            destination: req.destination.clone(),
            intermediaries: vec![],
            urgency: req.urgency,
            threshold: req.threshold,
            max_reserve: None,
            migration_port: None,
            store_port: None,
            disk_port: None,
        },
        mode: req.mode,
        reserve: req.reserve,
        fallback_bps: capacity_bps * valid.params.urgency / 100.0,
        capacity_bps,
        intermediaries: req.intermediaries.clone(),
        created_unix_ms: rec.created_unix_ms,
        convergence: converge::Policy {
            on_stall: req.on_stall,
            deadline: req.deadline_s.is_some(),
            iterations: req.stall_iterations,
            max_downtime_ms: req.max_downtime_ms,
        },
        parallel_connections: req.parallel_connections,
        scenario: scenario.ok().map(Arc::new),
        dest_capacities: Arc::new(dest_capacities),
    };
    // Validated when the evacuation was accepted.
    let concurrency = req.concurrency().unwrap_or_default();
    super::dispatch::run_all(&job, order, concurrency, &cancel).await;

    conclude(&evac, id, t0, cancel.is_cancelled()).await;
}

/// Ends an evacuation's record: VMs never started stay where they are (and
/// say so), a migration counts as done only if its destination runs the VM,
/// and the totals are computed.
pub(super) async fn conclude(evac: &Evacuations, id: u64, t0: Instant, cancelled: bool) {
    let Some(rec) = evac.get(id) else { return };
    let stopping = evac.inner.stopping.is_cancelled();
    evac.update(id, |r| {
        for v in &mut r.vms {
            if v.state == VmState::Pending {
                v.state = VmState::Cancelled;
            }
        }
    });
    let names: Vec<String> = rec.vms.iter().map(|v| v.name.clone()).collect();
    let source = evac.inner.hosts[&rec.request.source].clone();
    let on_source = source.hv.list().await;
    let mut on_dests = BTreeMap::new();
    for (name, h) in destinations(evac, &rec.request) {
        on_dests.insert(name, h.hv.list().await);
    }
    let left = match on_source {
        Ok(list) => list
            .into_iter()
            .map(|v| v.name)
            .filter(|n| names.contains(n))
            .collect(),
        Err(e) => {
            tracing::warn!(id, error = %e, "cannot list the source's VMs at the end");
            names
        }
    };
    // A migration that completed is only worth its name if the destination
    // runs the VM: on the testbed guests have died right after a post-copy
    // migration, and libvirt's migrate call had already returned success.
    for (d, l) in &on_dests {
        if let Err(e) = l {
            tracing::warn!(id, destination = %d, error = %e, "cannot list the destination's VMs at the end");
        }
    }
    let now = t0.elapsed().as_millis() as u64;
    evac.update(id, |r| {
        let req = r.request.clone();
        for v in r.vms.iter_mut().filter(|v| v.state == VmState::Done) {
            let dest = req.destination_of(&v.name);
            if let Some(Ok(list)) = on_dests.get(dest) {
                let state = list.iter().find(|x| x.name == v.name).map(|x| x.state.as_str());
                if state == Some("running") {
                    continue;
                }
                let seen = match state {
                    Some(s) => format!("{dest} lists it as {s}"),
                    None => format!("{dest} does not list it"),
                };
                tracing::warn!(id, vm = %v.name, "{seen} after its migration");
                v.state = VmState::Failed;
                v.error = Some(format!(
                    "the migration completed, but at the end of the evacuation {seen} (the guest stopped on the destination)"
                ));
            }
        }
        r.finish(now, left, cancelled);
        if stopping {
            r.state = EvacuationState::Interrupted;
        }
    });
    if let Some(r) = evac.get(id) {
        tracing::info!(id, state = ?r.state, done = r.done(), total_ms = ?r.total_migration_ms, eviction_ms = ?r.eviction_ms, "evacuation finished");
    }
    release(evac, id);
}

fn release(evac: &Evacuations, id: u64) {
    // The task handle is no longer needed once the record is final (and
    // `wait` may have taken it already).
    evac.running().remove(&id);
}

/// The VM's port on the source's bridge: the interface whose external_ids
/// name it (libvirt's `vm-id`, or `iface-id`).
fn port_rates(view: Option<&HostView>, vm: &str) -> (Option<f64>, Option<f64>) {
    let Some(p) = view.and_then(|h| {
        h.ports.iter().find(|p| {
            p.vm.as_ref().is_some_and(|i| {
                i.vm_id.as_deref() == Some(vm) || i.iface_id.as_deref() == Some(vm)
            })
        })
    }) else {
        return (None, None);
    };
    // The switch receives what the VM sends.
    (p.rx_bps, p.tx_bps)
}

async fn measure(
    evac: &Evacuations,
    source: &HostHypervisor,
    view: Option<&HostView>,
    vms: &[String],
) -> Result<Vec<VmLoadRecord>, String> {
    let window = evac.inner.settings.measure_window;
    let results = join_all(vms.iter().map(|vm| source.hv.measure(vm, window))).await;
    let mut out = Vec::new();
    for (vm, r) in vms.iter().zip(results) {
        let m = r.map_err(|e| format!("measuring {vm}: {e}"))?;
        let (tx_bps, rx_bps) = port_rates(view, vm);
        out.push(VmLoadRecord {
            hypervisor: m,
            tx_bps,
            rx_bps,
        });
    }
    Ok(out)
}
