//! One VM's migration within an evacuation ([`migrate_one`]): its own
//! port, its disks, its reservation (through intermediaries when the
//! destination falls short), a cache's copy taken, the relays started, then
//! the migration driven to its end: the speed cap kept in step with the
//! reservation, post-copy switched, a stall met by its remedy, a cancel
//! that always lands. [`super::runner`] runs the evacuation around it.

use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::converge::{self, OnStall, Stall};
use super::record::{StallRecord, VmState};
use super::runner::Job;
use crate::controller::enforce::Role;
use crate::controller::reservation::MigrationReport;
use crate::controller::ReservationView;
use crate::hypervisor::{bps_to_mibs, DiskCopy, MigrateOptions, MigrationStats};
use crate::order::Mode;

/// How long a held cancel is retried before the evacuation gives up on the
/// VM and says so: several of libvirt's call time-outs
/// ([`crate::hypervisor::libvirt::CALL_TIMEOUT`]).
pub(super) const CANCEL_BOUND: std::time::Duration = std::time::Duration::from_secs(120);

/// After a taken cancel, this many periods in a row with no migration job
/// on the source end the migration even if libvirt's migrate call has not
/// returned (it normally returns within one).
const LOST_CALL_PERIODS: u32 = 3;

/// The source's reservation in bit/s, once measured.
fn source_reserve_bps(v: &ReservationView) -> Option<f64> {
    v.reserve_pct?;
    v.hosts
        .iter()
        .find(|h| h.role == Role::Source)
        .map(|h| h.reserve_bps)
}

/// The speed cap a reservation allows, bit/s: its part of the source's link;
/// for a direct migration no more than its destination gives it either (what
/// the destination cannot take would only queue there and squeeze the
/// destination's applications). Through intermediaries the stores absorb the
/// difference: that is their point.
pub(super) fn cap_bps(v: &ReservationView) -> Option<f64> {
    let source = source_reserve_bps(v)?;
    if !v.request.intermediaries.is_empty() {
        return Some(source);
    }
    let dest = v
        .hosts
        .iter()
        .find(|h| h.role == Role::Destination)
        .map_or(source, |h| h.reserve_bps);
    Some(source.min(dest))
}

/// Makes the VM's reservation, through `via` when not empty. A direct
/// migration's flows match its own destination port when it has one.
async fn reserve(
    job: &Job,
    via: &[String],
    port: Option<u16>,
    disk_port: Option<u16>,
) -> Result<ReservationView, String> {
    let mut req = job.reservation.clone();
    req.intermediaries = via.to_vec();
    req.disk_port = disk_port;
    if via.is_empty() {
        req.migration_port = port;
    } else {
        let stores = job.evac.inner.settings.scatter.stores(via);
        req.store_port = job.evac.inner.settings.scatter.store_port(&stores);
    }
    job.evac
        .inner
        .controller
        .create_reservation(req)
        .await
        .map_err(|e| format!("reservation refused: {e}"))
}

/// Whether the destination falls short of the source's reservation by more
/// than `pct` percent of it (pure).
pub(super) fn falls_short(view: &ReservationView, pct: f64) -> bool {
    match source_reserve_bps(view) {
        Some(src) if src > 0.0 => view.destination_shortfall_bps > src * pct / 100.0,
        _ => false,
    }
}

pub(super) async fn migrate_one(job: &Job, vm: &str, cancel: &CancellationToken) {
    if cancel.is_cancelled() {
        return;
    }
    let job = &job.for_vm(vm);
    let controller = &job.evac.inner.controller;
    let scatter = &job.evac.inner.settings.scatter;
    // Through intermediaries when asked, or (when the request leaves it to
    // solive) when the destination cannot take the source's reservation.
    let mut via = job.intermediaries.clone().unwrap_or_default();
    // Its own destination port (when the destination's address is known):
    // the flows that carry it and its rate are then its own, whatever else
    // runs between the same hosts. Held until this function returns.
    let mut port_lease = None;
    if job.dest.migrate_uri.is_some() && via.is_empty() {
        let pool = &job.evac.inner.migration_ports;
        match lease_port(job, vm, pool, "migration", cancel).await {
            Some(l) => port_lease = Some(l),
            None => return cancelled_before_start(job, vm, None).await,
        }
    }
    let started = job.ms();
    job.update_vm(vm, |v| {
        v.state = VmState::Migrating;
        v.started_ms = Some(started);
    });
    let fail = |error: String| {
        let ended = job.ms();
        job.update_vm(vm, |v| {
            v.state = VmState::Failed;
            v.ended_ms = Some(ended);
            v.error = Some(error);
        });
    };
    let port = port_lease.as_ref().map(|l| l.port);
    // Its disks on local storage travel with it, over NBD to a port of its
    // own on the destination (its flows then share the reservation).
    let disks = match job.source.hv.disks(vm).await {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot list its disks: {e}")),
    };
    let copied: Vec<String> = disks
        .iter()
        .filter(|d| d.copy)
        .map(|d| d.target.clone())
        .collect();
    job.update_vm(vm, |v| v.disks = disks.clone());
    let mut disk_lease = None;
    if !copied.is_empty() && job.dest.migrate_uri.is_some() {
        let pool = &job.evac.inner.migration_ports;
        match lease_port(job, vm, pool, "disk copy", cancel).await {
            Some(l) => disk_lease = Some(l),
            None => return cancelled_before_start(job, vm, None).await,
        }
    }
    let disk_port = disk_lease.as_ref().map(|l| l.port);
    let mut reservation = None;
    if job.reserve {
        match reserve(job, &via, port, disk_port).await {
            Ok(r) => reservation = Some(r),
            Err(e) => return fail(e),
        }
    }
    let candidates = scatter.candidates(&job.reservation.source, &job.reservation.destination);
    if let Some(r) = reservation.as_ref().filter(|r| {
        job.intermediaries.is_none()
            && !candidates.is_empty()
            && falls_short(r, scatter.shortfall_pct)
    }) {
        tracing::info!(evacuation = job.id, vm, shortfall_bps = r.destination_shortfall_bps, via = ?candidates,
            "the destination falls short: migrating through intermediaries");
        let _ = controller.delete_reservation(r.id).await;
        via = candidates;
        match reserve(job, &via, port, disk_port).await {
            Ok(r) => reservation = Some(r),
            Err(e) => return fail(e),
        }
    }
    let rid = reservation.as_ref().map(|r| r.id);
    // A cancel that came while the reservation was made: nothing has moved.
    if cancel.is_cancelled() {
        return cancelled_before_start(job, vm, rid).await;
    }
    let mut cap = bps_to_mibs(match &reservation {
        Some(r) => cap_bps(r).unwrap_or(job.fallback_bps),
        None => job.capacity_bps,
    });
    job.update_vm(vm, |v| {
        v.reservation_id = rid;
        v.cap_mibs = Some(cap);
        v.intermediaries = via.clone();
    });
    // A pre-cached copy on the destination: only the top images travel.
    let caches = &job.evac.inner.caches;
    let cache = if copied.is_empty() {
        crate::cache::Taken::None
    } else {
        caches
            .take(
                vm,
                &job.reservation.destination,
                crate::hypervisor::mibs_to_bps(cap),
            )
            .await
    };
    let incremental = matches!(cache, crate::cache::Taken::Incremental { .. });
    // A commit a controller killed mid-way left on its disks would make
    // libvirt refuse the migration: finished as that one would have.
    if !copied.is_empty() {
        if let Err(e) = crate::hypervisor::settle_left_jobs(job.source.hv.as_ref(), vm).await {
            release_unused(job, rid).await;
            if incremental {
                caches.migration_ended(vm, false);
            }
            return fail(e.to_string());
        }
    }
    job.update_vm(vm, |v| match &cache {
        crate::cache::Taken::None => {}
        crate::cache::Taken::Incremental { saved_bytes, note } => {
            v.disk_cache = Some(format!("used: {note}"));
            v.disk_saved_bytes = Some(*saved_bytes);
        }
        crate::cache::Taken::Fallback(why) => {
            v.disk_cache = Some(format!("not used, the whole disk was copied: {why}"))
        }
    });
    // What a stall gets: `auto` decided for this migration.
    let remedy = converge::remedy(
        job.convergence.on_stall,
        job.convergence.deadline,
        via.is_empty() && copied.is_empty() && job.parallel_connections.unwrap_or(1) <= 1,
    );
    let mut opts = MigrateOptions {
        dest_uri: job.dest.uri.clone(),
        migrate_uri: match (&job.dest.migrate_uri, port) {
            (Some(u), Some(p)) => Some(with_port(u, p)),
            (u, _) => u.clone(),
        },
        bandwidth_mibs: cap,
        // The stores carry a one-way stream: pre-copy only (see
        // crate::scatter). A pre-copy that may fall back to post-copy when
        // it stalls must be started with post-copy allowed.
        postcopy: (job.mode == Mode::Postcopy || remedy == OnStall::Postcopy) && via.is_empty(),
        listen_address: None,
        // Through intermediaries each relay carries one stream.
        parallel_connections: job.parallel_connections.filter(|_| via.is_empty()),
        auto_converge: (remedy == OnStall::Throttle).then_some(converge::THROTTLE),
        disk_copy: (!copied.is_empty()).then(|| DiskCopy {
            targets: copied.clone(),
            uri: match (&job.dest.migrate_uri, disk_port) {
                (Some(u), Some(p)) => Some(with_port(u, p)),
                _ => None,
            },
            incremental,
        }),
    };
    let mut relays = None;
    // Held until this function returns: no other migration listens on it.
    let mut _relay_port = None;
    if !via.is_empty() {
        let stores = scatter.stores(&via);
        let Some(lease) = lease_port(job, vm, &job.evac.inner.relay_ports, "relay", cancel).await
        else {
            if incremental {
                caches.migration_ended(vm, false);
            }
            return cancelled_before_start(job, vm, rid).await;
        };
        let port = lease.port;
        _relay_port = Some(lease);
        let plan = super::scatter::relay_plan(
            scatter,
            vm,
            &job.reservation.source,
            &job.reservation.destination,
            &stores,
            port,
        );
        match super::scatter::Relays::start(&plan) {
            Ok(r) => relays = Some(r),
            Err(e) => {
                release_unused(job, rid).await;
                if incremental {
                    caches.migration_ended(vm, false);
                }
                return fail(e);
            }
        }
        opts.migrate_uri = Some(format!("tcp://127.0.0.1:{port}"));
        opts.listen_address = Some("127.0.0.1".into());
    }
    tracing::info!(evacuation = job.id, vm, reservation = ?rid, cap_mibs = cap, via = ?via, "migration starting");
    let hv = job.source.hv.clone();
    // A cluster leader whose lease lapsed (paused past it, say) must not
    // start a migration its successor does not know of; it is about to
    // exit, touching nothing (the successor migrates the VM).
    if job.evac.inner.store.as_ref().is_some_and(|s| !s.may_act()) {
        tracing::error!(
            evacuation = job.id,
            vm,
            "not started: this controller no longer leads"
        );
        return;
    }
    let mut migration = hv.migrate(vm, opts);
    let mut tick = tokio::time::interval(job.evac.inner.settings.period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut postcopy = false;
    let mut aborting = false;
    // A cancel that the source's hypervisor has not taken yet (no job to
    // abort yet, or libvirtd not answering): tried again every period, for
    // at most CANCEL_BOUND, so a cancel is never dropped and never waits
    // without end.
    let mut cancel_pending: Option<Instant> = None;
    // A cancel the hypervisor took (the abort was accepted), and for how
    // many periods since libvirt has reported no migration job. libvirt's
    // job ending is what a taken abort does; its migrate call returning is
    // what the loop normally waits for, and once, on the testbed after
    // libvirtd had hung, it did not return at all.
    let mut cancel_taken: Option<Instant> = None;
    let mut no_job_periods = 0u32;
    let mut watch = converge::Watch::new(job.convergence.iterations);
    let mut downtime_limit = converge::QEMU_DEFAULT_DOWNTIME_MS;
    // Set when solive itself aborted a stalled pre-copy: the VM failed to
    // move, it was not cancelled.
    let mut gave_up: Option<String> = None;
    let result: Result<MigrationStats, String> = loop {
        tokio::select! {
            r = &mut migration => break r.map_err(|e| e.to_string()),
            _ = cancel.cancelled(), if !aborting => {
                aborting = true;
                if postcopy {
                    // The VM runs on the destination already; finishing is
                    // the only safe way.
                    tracing::info!(evacuation = job.id, vm, "cancel: in post-copy, letting it finish");
                } else if let Err(e) = hv.abort(vm).await {
                    tracing::info!(evacuation = job.id, vm, error = %e, "cancel held: the abort is tried again every period");
                    cancel_pending = Some(Instant::now());
                } else {
                    cancel_taken = Some(Instant::now());
                }
            }
            _ = tick.tick() => {
                if let Some(since) = cancel_pending {
                    if postcopy {
                        cancel_pending = None;
                    } else if hv.abort(vm).await.is_ok() {
                        cancel_pending = None;
                        cancel_taken = Some(Instant::now());
                    } else if since.elapsed() > CANCEL_BOUND {
                        gave_up = Some("the cancel could not be carried out".into());
                        break Err(format!(
                            "cancelled, but the source's hypervisor took no abort for {} s; the migration may still run",
                            CANCEL_BOUND.as_secs()
                        ));
                    }
                }
                let progress = hv.progress(vm).await;
                if let Some(taken) = cancel_taken {
                    no_job_periods = match progress {
                        Ok(None) => no_job_periods + 1,
                        _ => 0,
                    };
                    if no_job_periods >= LOST_CALL_PERIODS {
                        break Err("cancelled: the source's migration job is over, but libvirt's migrate call has not returned".into());
                    }
                    if taken.elapsed() > CANCEL_BOUND {
                        gave_up = Some("the cancel could not be carried out".into());
                        break Err(format!(
                            "cancelled, and the source's hypervisor took the abort, but the migration did not stop within {} s; it may still run",
                            CANCEL_BOUND.as_secs()
                        ));
                    }
                }
                let progress = progress.ok().flatten();
                if let Some(p) = progress {
                    if let Some(rid) = rid.filter(|_| p.mem_bps > 0) {
                        // A pre-copy needs its dirty set to fit the downtime
                        // limit: its part of the link is held there.
                        let need_bps = watch
                            .dirty_set()
                            .filter(|_| !postcopy && !aborting)
                            .map(|d| converge::needed_rate_bps(d, downtime_limit));
                        controller.report_migration(
                            rid,
                            MigrationReport {
                                bps: p.mem_bps as f64 * 8.0,
                                remaining: Some(p.data_remaining),
                                need_bps,
                            },
                        );
                    }
                    // QEMU's sync count reaches 2 when the first pass is over.
                    if job.mode == Mode::Postcopy && !postcopy && !aborting && p.mem_iteration >= 2 {
                        match switch_to_postcopy(job, vm).await {
                            Ok(()) => postcopy = true,
                            Err(e) => tracing::warn!(evacuation = job.id, vm, error = %e, "cannot switch to post-copy"),
                        }
                    }
                    if job.mode == Mode::Precopy && !postcopy && !aborting {
                        if let Some(stall) = watch.observe(&p) {
                            let r = on_stall(job, vm, remedy, stall, downtime_limit).await;
                            match (r.action, r.error.is_none()) {
                                (OnStall::Downtime, true) => {
                                    downtime_limit = r.downtime_limit_ms.unwrap_or(downtime_limit)
                                }
                                (OnStall::Postcopy, true) => postcopy = true,
                                (OnStall::Abort, true) => {
                                    aborting = true;
                                    gave_up = Some(stall_message(&stall, job.convergence.iterations));
                                }
                                _ => {}
                            }
                            // Doing nothing (asked to, or the downtime at
                            // its maximum) is recorded once, not every few
                            // passes for as long as the migration runs.
                            job.update_vm(vm, |v| {
                                let idle = |a: OnStall| a == OnStall::None;
                                if !(idle(r.action) && v.stalls.last().is_some_and(|l| idle(l.action))) {
                                    v.stalls.push(r)
                                }
                            });
                        }
                    }
                }
                let view = match rid {
                    Some(rid) => controller.reservation(rid).await.ok().flatten(),
                    None => None,
                };
                if let Some(bps) = view.as_ref().and_then(cap_bps) {
                    let want = bps_to_mibs(bps);
                    if want != cap && hv.set_max_speed(vm, want).await.is_ok() {
                        cap = want;
                    }
                }
                job.update_vm(vm, |v| {
                    // The last tick may come when QEMU has finished but
                    // libvirt's job has not: keep the last real figures.
                    if progress.is_some_and(|p| p.data_processed > 0 || p.disk_processed > 0)
                        || v.progress.is_none()
                    {
                        v.progress = progress;
                    }
                    v.cap_mibs = Some(cap);
                    if let Some(view) = view {
                        v.reservation_history = view.history;
                    }
                });
            }
        }
    };
    // The relays end with the migration (or are killed): their reports say
    // when the source was empty.
    let mut result = result;
    let mut scatter_report = None;
    let mut evicted = None;
    if let Some(r) = relays {
        let grace = if result.is_ok() { 60 } else { 5 };
        let (push, gather) = r.finish(std::time::Duration::from_secs(grace)).await;
        if let Ok(p) = &push {
            let at = p["first_byte_unix_ms"].as_f64().unwrap_or(0.0)
                + p["eviction_ms"].as_f64().unwrap_or(0.0);
            evicted = Some((at as u64).saturating_sub(job.created_unix_ms));
        }
        let errors: Vec<String> = [&push, &gather]
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        if let Err(e) = &mut result {
            if !errors.is_empty() {
                *e = format!("{e} ({})", errors.join("; "));
            }
        } else if !errors.is_empty() {
            tracing::warn!(evacuation = job.id, vm, errors = ?errors, "the migration finished but a relay reported a problem");
        }
        scatter_report = Some(serde_json::json!({
            "push": push.unwrap_or_else(|e| serde_json::json!({"error": e})),
            "gather": gather.unwrap_or_else(|e| serde_json::json!({"error": e})),
        }));
    }
    // The reservation goes whatever happened; keep its history first.
    let mut history = None;
    if let Some(rid) = rid {
        history = controller
            .reservation(rid)
            .await
            .ok()
            .flatten()
            .map(|v| v.history);
        if let Err(e) = controller.delete_reservation(rid).await {
            tracing::warn!(evacuation = job.id, vm, reservation = rid, error = %e, "cannot release the reservation");
        }
    }
    // A failed migration says where it left the VM: after the switch to
    // post-copy the VM's state is split between the hosts, and libvirt
    // leaves the source paused when the destination's copy is gone.
    if let Err(e) = &mut result {
        let list = |hv: Arc<dyn crate::hypervisor::Hypervisor>| async move {
            hv.list().await.map_err(|e| e.to_string())
        };
        let (on_source, on_dest) =
            futures::join!(list(job.source.hv.clone()), list(job.dest.hv.clone()));
        let at = super::whereabouts(
            vm,
            (&job.reservation.source, &on_source),
            (&job.reservation.destination, &on_dest),
        );
        let phase = if postcopy {
            "failed after the switch to post-copy"
        } else {
            "failed"
        };
        *e = format!("{e} ({phase}; the VM is now {at})");
    }
    if incremental {
        caches.migration_ended(vm, result.is_ok());
    }
    let ended = job.ms();
    let duration = ended - started;
    match &result {
        Ok(_) => tracing::info!(
            evacuation = job.id,
            vm,
            duration_ms = duration,
            "migration done"
        ),
        Err(e) => tracing::warn!(evacuation = job.id, vm, error = %e, "migration failed"),
    }
    job.update_vm(vm, |v| {
        v.ended_ms = Some(ended);
        v.duration_ms = Some(duration);
        v.scatter = scatter_report;
        if result.is_ok() {
            v.evicted_ms = evicted.filter(|e| *e <= ended).or(Some(ended));
        }
        if let Some(h) = history {
            v.reservation_history = h;
        }
        match result {
            Ok(stats) => {
                v.state = VmState::Done;
                v.downtime_ms = stats.downtime_ms;
                v.disk_bytes = stats.disk_bytes;
                // libvirt's completed statistics count the memory; a disk
                // copy's come on top, as QEMU counts them (see
                // `VmRecord::disk_bytes`: zero ranges included).
                v.bytes = stats
                    .bytes
                    .or(v.progress.map(|p| p.data_processed).filter(|b| *b > 0))
                    .map(|b| b + stats.disk_bytes.unwrap_or(0));
                v.avg_bps = v
                    .bytes
                    .filter(|_| duration > 0)
                    .map(|b| b as f64 * 8.0 / (duration as f64 / 1000.0));
            }
            Err(e) => {
                v.state = if aborting && gave_up.is_none() {
                    VmState::Cancelled
                } else {
                    VmState::Failed
                };
                v.error = Some(match gave_up {
                    Some(why) => format!("{why}: {e}"),
                    None => e,
                });
            }
        }
    });
}

/// A cancel that came before the migration started: nothing has moved.
async fn cancelled_before_start(job: &Job, vm: &str, rid: Option<u64>) {
    release_unused(job, rid).await;
    let ended = job.ms();
    job.update_vm(vm, |v| {
        v.state = VmState::Cancelled;
        v.ended_ms = Some(ended);
    });
}

/// A port from `pool`. When every one is held by other migrations this one
/// waits, a period at a time, for one to come back rather than fail: a port
/// is a turn, not a resource that ran out. None if cancelled meanwhile.
async fn lease_port(
    job: &Job,
    vm: &str,
    pool: &Arc<super::ports::PortPool>,
    what: &str,
    cancel: &CancellationToken,
) -> Option<super::ports::PortLease> {
    let mut said = false;
    loop {
        if let Some(l) = pool.take() {
            return Some(l);
        }
        if !said {
            tracing::info!(
                evacuation = job.id,
                vm,
                ports = pool.size(),
                "every {what} port is held by another migration: waiting for one"
            );
            said = true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(job.evac.inner.settings.period) => {}
        }
    }
}

/// `tcp://ADDR` (or `tcp://ADDR:PORT`) with the port `port` (pure).
pub(super) fn with_port(uri: &str, port: u16) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("tcp", uri));
    let host = match rest.rsplit_once(':') {
        // An IPv6 address in brackets keeps its colons.
        Some((h, p)) if !p.contains(']') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => rest,
    };
    format!("{scheme}://{host}:{port}")
}

/// Releases the reservation of a migration that never started (nothing of
/// its history is worth keeping).
async fn release_unused(job: &Job, rid: Option<u64>) {
    if let Some(rid) = rid {
        let _ = job.evac.inner.controller.delete_reservation(rid).await;
    }
}

/// Switches `vm`'s migration to post-copy and records when.
async fn switch_to_postcopy(job: &Job, vm: &str) -> Result<(), String> {
    job.source
        .hv
        .start_postcopy(vm)
        .await
        .map_err(|e| e.to_string())?;
    let t = job.ms();
    job.update_vm(vm, |v| {
        v.state = VmState::Postcopy;
        v.postcopy_ms = Some(t);
    });
    tracing::info!(evacuation = job.id, vm, "switched to post-copy");
    Ok(())
}

/// What the record says of a pre-copy solive gave up on.
fn stall_message(stall: &Stall, iterations: u64) -> String {
    format!(
        "pre-copy did not converge ({iterations} passes without progress, {:.1} MiB dirtied per pass at {:.1} Mbit/s, pass {}); aborted",
        stall.dirty_set as f64 / 1_048_576.0,
        stall.rate_bps as f64 * 8.0 / 1e6,
        stall.iteration
    )
}

/// Carries out `remedy` (the request's `on_stall` for this migration,
/// [`converge::remedy`]) for a stalled pre-copy of `vm` whose downtime
/// limit is `limit_ms` now; says what was done.
async fn on_stall(
    job: &Job,
    vm: &str,
    remedy: OnStall,
    stall: Stall,
    limit_ms: u64,
) -> StallRecord {
    let policy = job.convergence;
    let hv = &job.source.hv;
    // Throttling is in QEMU's hands from the start; a stall despite it gets
    // the downtime remedy.
    let mut action = match remedy {
        OnStall::Throttle => OnStall::Downtime,
        a => a,
    };
    let mut downtime_limit_ms = None;
    let result = match action {
        // `auto` is decided by now ([`converge::remedy`]).
        OnStall::Downtime | OnStall::Throttle | OnStall::Auto => {
            match converge::raised_downtime_ms(&stall, limit_ms, policy.max_downtime_ms) {
                Some(ms) => {
                    downtime_limit_ms = Some(ms);
                    hv.set_max_downtime(vm, ms).await.map_err(|e| e.to_string())
                }
                // The limit is at the operator's maximum already.
                None => {
                    action = OnStall::None;
                    Ok(())
                }
            }
        }
        OnStall::Postcopy => switch_to_postcopy(job, vm).await,
        OnStall::Abort => hv.abort(vm).await.map_err(|e| e.to_string()),
        OnStall::None => Ok(()),
    };
    tracing::warn!(evacuation = job.id, vm, iteration = stall.iteration,
        dirty_set = stall.dirty_set, rate_bps = stall.rate_bps,
        action = ?action, downtime_limit_ms, error = ?result.as_ref().err(),
        "pre-copy is not converging");
    StallRecord {
        at_ms: job.ms(),
        stall,
        action,
        downtime_limit_ms,
        error: result.err(),
    }
}
