//! A cluster's new leader takes over the evacuations its predecessor was
//! running (`crate::cluster`): nothing is started twice, nothing is left
//! unwatched.
//!
//! - A VM that was **migrating** when the old leader died is not migrated
//!   again: libvirt runs migrations peer to peer, so it went on without any
//!   controller. The new leader watches the job on the source until it ends
//!   (bounded), keeping its speed cap in step with the reservation it
//!   adopted, then reads where the VM runs: on the destination it is done;
//!   on the source it stays (interrupted, and the record says why).
//! - The **pending** VMs are measured, planned and migrated by a runner, as
//!   if the evacuation had just started with them; times still count from
//!   the evacuation's creation.
//! - The record keeps each takeover: when, how long nobody watched (since
//!   the last record the old leader wrote), and which VMs were in flight.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::record::{EvacuationRecord, EvacuationState, VmState};
use super::request::Validated;
use super::{runner, Evacuations};
use crate::hypervisor::bps_to_mibs;

/// How long a new leader watches a migration it inherited before it gives
/// up on it (the VM stays wherever libvirt leaves it; the record says so).
pub const WATCH_LIMIT: Duration = Duration::from_secs(30 * 60);

/// One takeover of a running evacuation by a new cluster leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Takeover {
    /// When the new leader took it over, ms since the evacuation was created.
    pub at_ms: u64,
    /// How long nobody watched it: since the last record the previous
    /// leader wrote, ms.
    pub gap_ms: u64,
    /// The VMs that were migrating then: watched to their end, not
    /// started again.
    pub in_flight: Vec<String>,
}

/// What became of an inherited migration.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The destination runs it.
    Moved,
    /// The source still runs it: the migration ended without moving it.
    Stayed(String),
    /// Still migrating when the watch gave up, or nowhere to be found.
    Unknown(String),
}

/// Where an inherited migration ended, from what the two hosts list after
/// the source's job is gone (pure: `whereabouts`' inputs).
pub fn outcome(
    vm: &str,
    source: (&str, &Result<Vec<crate::hypervisor::VmInfo>, String>),
    dest: (&str, &Result<Vec<crate::hypervisor::VmInfo>, String>),
) -> Outcome {
    let runs_on = |list: &Result<Vec<crate::hypervisor::VmInfo>, String>| {
        list.as_ref()
            .is_ok_and(|l| l.iter().any(|v| v.name == vm && v.state == "running"))
    };
    let at = super::whereabouts(vm, source, dest);
    if runs_on(dest.1) && !runs_on(source.1) {
        Outcome::Moved
    } else if runs_on(source.1) && !runs_on(dest.1) {
        Outcome::Stayed(format!(
            "its migration ended without moving it while no controller watched; the VM is {at}"
        ))
    } else {
        Outcome::Unknown(format!("after the takeover the VM is {at}"))
    }
}

impl Evacuations {
    /// Takes back the records a cluster's previous leader wrote; those it was
    /// running go on under this one.
    pub async fn take_over(&self, stored: Vec<serde_json::Value>) {
        for mut rec in super::readable(stored) {
            if rec.state.finished() {
                self.records().insert(rec.id, rec);
                continue;
            }
            let now = crate::clock::unix_ms();
            let in_flight: Vec<String> = rec
                .vms
                .iter()
                .filter(|v| matches!(v.state, VmState::Migrating | VmState::Postcopy))
                .map(|v| v.name.clone())
                .collect();
            let t = Takeover {
                at_ms: now.saturating_sub(rec.created_unix_ms),
                gap_ms: rec.updated_unix_ms.map_or(0, |u| now.saturating_sub(u)),
                in_flight,
            };
            tracing::info!(id = rec.id, gap_ms = t.gap_ms, in_flight = ?t.in_flight, "taking over a running evacuation");
            rec.takeovers.push(t);
            let id = rec.id;
            // A cancel accepted before the old leader died still holds.
            let cancelling = rec.state == EvacuationState::Cancelling;
            self.records().insert(id, rec.clone());
            self.persist(&rec);
            let cancel = self.inner.stopping.child_token();
            if cancelling {
                cancel.cancel();
            }
            let task = tokio::spawn(resume(self.clone(), id, cancel.clone()));
            self.running().insert(id, (cancel, task));
        }
    }
}

/// Watches the inherited migrations to their end, then migrates the pending
/// VMs (unless cancelled), then concludes the record.
async fn resume(evac: Evacuations, id: u64, cancel: CancellationToken) {
    let Some(rec) = evac.get(id) else { return };
    let t0 = runner::created_at(&rec);
    let in_flight = rec
        .takeovers
        .last()
        .map(|t| t.in_flight.clone())
        .unwrap_or_default();
    let watches = in_flight
        .iter()
        .map(|vm| watch_inherited(&evac, &rec, vm, t0));
    futures::future::join_all(watches).await;
    let pending: Vec<String> = evac
        .get(id)
        .map(|r| {
            r.vms
                .iter()
                .filter(|v| v.state == VmState::Pending)
                .map(|v| v.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let params = rec.request.check(&evac.hosts());
    match params {
        Ok(params) if !pending.is_empty() && !cancel.is_cancelled() => {
            let valid = Validated {
                params,
                vms: pending,
                order: None,
            };
            runner::run(evac, id, valid, cancel).await;
        }
        other => {
            if let Err(e) = other {
                evac.update(id, |r| {
                    r.error = Some(format!("cannot go on after the takeover: {e}"));
                });
            }
            runner::conclude(&evac, id, t0, cancel.is_cancelled()).await;
        }
    }
}

/// One inherited migration: its job on the source watched until it ends
/// (at most [`WATCH_LIMIT`]), its VM found, its reservation released.
async fn watch_inherited(
    evac: &Evacuations,
    rec: &EvacuationRecord,
    vm: &str,
    t0: tokio::time::Instant,
) {
    let id = rec.id;
    let source_name = rec.request.source.clone();
    let dest_name = rec.request.destination_of(vm).to_string();
    let (Some(source), Some(dest)) = (
        evac.inner.hosts.get(&source_name).cloned(),
        evac.inner.hosts.get(&dest_name).cloned(),
    ) else {
        return;
    };
    let period = evac.inner.settings.period;
    let deadline = tokio::time::Instant::now() + WATCH_LIMIT;
    let mut still_running = false;
    let rid = rec
        .vms
        .iter()
        .find(|v| v.name == vm)
        .and_then(|v| v.reservation_id);
    let mut cap = rec
        .vms
        .iter()
        .find(|v| v.name == vm)
        .and_then(|v| v.cap_mibs);
    loop {
        match source.hv.progress(vm).await {
            Ok(Some(p)) if tokio::time::Instant::now() < deadline => {
                // The speed cap stays in step with the adopted reservation,
                // as the runner that started the migration kept it.
                let view = match rid {
                    Some(rid) => evac.inner.controller.reservation(rid).await.ok().flatten(),
                    None => None,
                };
                if let Some(want) = view
                    .as_ref()
                    .and_then(super::migrate::cap_bps)
                    .map(bps_to_mibs)
                {
                    if cap != Some(want) && source.hv.set_max_speed(vm, want).await.is_ok() {
                        cap = Some(want);
                    }
                }
                evac.update(id, |r| {
                    if let Some(v) = r.vms.iter_mut().find(|v| v.name == vm) {
                        v.progress = Some(p);
                        v.cap_mibs = cap;
                        if let Some(view) = view {
                            v.reservation_history = view.history;
                        }
                    }
                });
                tokio::time::sleep(period).await;
            }
            Ok(Some(_)) => {
                still_running = true;
                break;
            }
            // No job, or no such VM on the source any more.
            Ok(None) | Err(_) => break,
        }
    }
    let list = |h: &super::HostHypervisor| {
        let hv = h.hv.clone();
        async move { hv.list().await.map_err(|e| e.to_string()) }
    };
    let (on_source, on_dest) = (list(&source).await, list(&dest).await);
    let now = t0.elapsed().as_millis() as u64;
    let result = if still_running {
        Outcome::Unknown(format!(
            "still migrating {} min after the takeover; solive stopped watching it",
            WATCH_LIMIT.as_secs() / 60
        ))
    } else {
        outcome(vm, (&source_name, &on_source), (&dest_name, &on_dest))
    };
    tracing::info!(id, vm, ?result, "inherited migration ended");
    let mut reservation = None;
    evac.update(id, |r| {
        if let Some(v) = r.vms.iter_mut().find(|v| v.name == vm) {
            reservation = v.reservation_id;
            match result {
                Outcome::Moved => {
                    v.state = VmState::Done;
                    v.ended_ms = Some(now);
                    v.duration_ms = v.started_ms.map(|s| now.saturating_sub(s));
                }
                Outcome::Stayed(why) => {
                    v.state = VmState::Interrupted;
                    v.error = Some(why);
                }
                Outcome::Unknown(why) => {
                    v.state = VmState::Interrupted;
                    v.error = Some(why);
                }
            }
        }
    });
    if let Some(rid) = reservation {
        // Adopted with the controller's state; its migration is over.
        let _ = evac.inner.controller.delete_reservation(rid).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::VmInfo;

    fn on(names: &[(&str, &str)]) -> Result<Vec<VmInfo>, String> {
        Ok(names
            .iter()
            .map(|(n, s)| VmInfo {
                name: n.to_string(),
                state: s.to_string(),
                memory_kib: 0,
                vcpus: 1,
                cpu_time_ns: 0,
            })
            .collect())
    }

    #[test]
    fn an_inherited_migration_ends_where_the_hosts_say() {
        let none = on(&[]);
        let running = on(&[("vm", "running")]);
        let paused = on(&[("vm", "paused")]);
        assert_eq!(
            outcome("vm", ("h1", &none), ("h2", &running)),
            Outcome::Moved
        );
        assert!(matches!(
            outcome("vm", ("h1", &running), ("h2", &none)),
            Outcome::Stayed(w) if w.contains("on h1 (running)")
        ));
        // Post-copy that failed midway: paused on both; nowhere; unlisted.
        assert!(matches!(
            outcome("vm", ("h1", &paused), ("h2", &paused)),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            outcome("vm", ("h1", &none), ("h2", &none)),
            Outcome::Unknown(w) if w.contains("on neither host")
        ));
        let broken = Err("libvirtd gone".to_string());
        assert!(matches!(
            outcome("vm", ("h1", &none), ("h2", &broken)),
            Outcome::Unknown(w) if w.contains("libvirtd gone")
        ));
    }
}
