//! What `GET /v1/evacuations/{id}` shows: the plan with its reasons, every
//! VM's course, and the evacuation's totals. The runner is the only writer
//! of a record; the derived figures are pure functions of it.

use serde::{Deserialize, Serialize};

use super::concurrency::Decision;
use super::converge::{OnStall, Stall};
use super::metric::{self, Metrics};
use super::request::{Concurrency, EvacuationRequest};
use crate::controller::reservation::HistoryPoint;
use crate::hypervisor::{MigrationProgress, VmMeasurement};
use crate::order::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvacuationState {
    /// Measuring the VMs and planning the order.
    Planning,
    Migrating,
    /// Asked to stop: running pre-copy migrations are being aborted.
    Cancelling,
    /// Every VM migrated.
    Done,
    /// Finished, but some VMs did not migrate (see their errors).
    Failed,
    Cancelled,
    /// The controller stopped while it ran.
    Interrupted,
}

impl EvacuationState {
    pub fn finished(self) -> bool {
        matches!(
            self,
            EvacuationState::Done
                | EvacuationState::Failed
                | EvacuationState::Cancelled
                | EvacuationState::Interrupted
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Pending,
    Migrating,
    /// Switched to post-copy: it runs on the destination already and can no
    /// longer be aborted.
    Postcopy,
    Done,
    Failed,
    /// Not migrated: the evacuation was cancelled before or during it. The VM
    /// runs on the source.
    Cancelled,
    /// The controller stopped while it migrated; `error` says where the
    /// hypervisors showed it after the restart.
    Interrupted,
}

/// One VM's measurements, as the plan used them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmLoadRecord {
    #[serde(flatten)]
    pub hypervisor: VmMeasurement,
    /// What the VM sends and receives on its port, bit/s (None: no port of it
    /// was found on the source's bridge, counted as 0).
    pub tx_bps: Option<f64>,
    pub rx_bps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: String,
    pub state: VmState,
    /// Milliseconds since the evacuation was created.
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub bytes: Option<u64>,
    /// bytes * 8 / duration.
    pub avg_bps: Option<f64>,
    pub reservation_id: Option<u64>,
    /// The speed cap given to the hypervisor now (or last), MiB/s.
    pub cap_mibs: Option<u64>,
    /// The latest job statistics while it runs.
    pub progress: Option<MigrationProgress>,
    /// When it was switched to post-copy, ms since the evacuation was created.
    pub postcopy_ms: Option<u64>,
    pub reservation_history: Vec<HistoryPoint>,
    pub error: Option<String>,
    /// The intermediaries it went through (scatter-gather), if any.
    #[serde(default)]
    pub intermediaries: Vec<String>,
    /// When all of it was off the source, ms since the evacuation was
    /// created: through intermediaries, the last chunk acknowledged by a
    /// store; directly, the end of the migration.
    #[serde(default)]
    pub evicted_ms: Option<u64>,
    /// The relays' reports (scatter-gather).
    #[serde(default)]
    pub scatter: Option<serde_json::Value>,
    /// Each time its pre-copy stopped converging, and what solive did.
    #[serde(default)]
    pub stalls: Vec<StallRecord>,
    /// Its migration time by the up-front forecast, and by the forecast
    /// in force when it started, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_at_start_ms: Option<u64>,
    /// Where it goes, when the evacuation has several destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Its disks as the migration found them: which it copied (local
    /// storage) and why it left the others (shared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<crate::hypervisor::disks::Disk>,
    /// The disk copy's length as QEMU counts it (its mirror jobs' progress):
    /// the disks' whole length plus what the guest rewrote during the copy.
    /// Unallocated ranges count in it but cross the network as write-zeroes
    /// requests of a few bytes, so the wire carries about the allocation
    /// (`disks[].allocation_bytes`) plus the rewrites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Whether the destination's pre-cached copy of its disks was used
    /// (`crate::cache`), and why not when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_cache: Option<String>,
    /// What the cache spared the copy: the bytes the destination held of the
    /// disks already (their base images' allocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_saved_bytes: Option<u64>,
}

/// One stall of a pre-copy migration (see [`super::converge`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallRecord {
    /// Milliseconds since the evacuation was created.
    pub at_ms: u64,
    #[serde(flatten)]
    pub stall: Stall,
    /// What was done: `downtime`, `postcopy`, `abort` or `none` (the
    /// request's `on_stall`), or `none` when the remedy was spent (the
    /// downtime limit at its maximum already).
    pub action: OnStall,
    /// The downtime limit set, ms (`downtime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_limit_ms: Option<u64>,
    /// Why the action could not be taken, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl VmRecord {
    pub fn pending(name: &str) -> VmRecord {
        VmRecord {
            name: name.to_string(),
            state: VmState::Pending,
            started_ms: None,
            ended_ms: None,
            duration_ms: None,
            downtime_ms: None,
            bytes: None,
            avg_bps: None,
            reservation_id: None,
            cap_mibs: None,
            progress: None,
            postcopy_ms: None,
            reservation_history: Vec::new(),
            error: None,
            intermediaries: Vec::new(),
            evicted_ms: None,
            scatter: None,
            stalls: Vec::new(),
            predicted_ms: None,
            predicted_at_start_ms: None,
            destination: None,
            disks: Vec::new(),
            disk_bytes: None,
            disk_cache: None,
            disk_saved_bytes: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvacuationRecord {
    pub id: u64,
    pub request: EvacuationRequest,
    pub state: EvacuationState,
    /// Unix time of creation, ms.
    pub created_unix_ms: u64,
    pub measurements: Vec<VmLoadRecord>,
    /// solive's plan (absent when the request gave the order).
    pub plan: Option<Plan>,
    pub order: Vec<String>,
    /// In migration order.
    pub vms: Vec<VmRecord>,
    /// First start to last end, ms.
    pub total_migration_ms: Option<u64>,
    /// First start until the source held none of the VMs, ms (absent while a
    /// VM remains there).
    pub eviction_ms: Option<u64>,
    /// The VMs the source's hypervisor still listed when it finished.
    pub left_on_source: Vec<String>,
    pub ended_ms: Option<u64>,
    pub error: Option<String>,
    /// Total, mean and maximum individual migration time and the combined
    /// score ([`super::metric`]), once finished.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// How many migrations ran at once, and why.
    #[serde(default)]
    pub concurrency: Option<ConcurrencyRecord>,
    /// The model's forecasts, and how they compare ([`super::forecast`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<super::forecast::PredictionRecord>,
    /// With several sources in one request: the id of the first of the
    /// evacuations it started (one per source), the same on each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u64>,
    /// On the group's first evacuation (`id == group`): the forecast of
    /// every source together ([`super::site`]), made once the last source
    /// has measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<super::site::SiteForecast>,
    /// Beside it: the same forecast re-made from what has happened, each
    /// period while the request runs ([`super::site::current`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_current: Option<super::site::SiteForecast>,
    /// Each time a cluster's new leader took it over (`super::takeover`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub takeovers: Vec<super::takeover::Takeover>,
    /// Unix time of the last stored copy of this record, ms: a new leader
    /// tells from it how long nobody watched the evacuation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_unix_ms: Option<u64>,
}

/// The course of an evacuation's concurrency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConcurrencyRecord {
    /// `"auto"` or the pinned number.
    pub mode: Concurrency,
    /// The feedback controller's decisions (auto), in order.
    pub decisions: Vec<Decision>,
    /// Every change of the limit or of the migrations running.
    pub timeline: Vec<ConcurrencyPoint>,
    /// The start-up time measured (auto overlaps it with the previous
    /// migration's tail), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_ms: Option<u64>,
}

/// One point of the concurrency timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConcurrencyPoint {
    /// Milliseconds since the evacuation was created.
    pub t_ms: u64,
    pub limit: u32,
    /// Migrations running (started and not ended, a tail included).
    pub running: u32,
}

impl ConcurrencyRecord {
    pub fn new(mode: Concurrency) -> ConcurrencyRecord {
        ConcurrencyRecord {
            mode,
            decisions: Vec::new(),
            timeline: Vec::new(),
            lead_ms: None,
        }
    }

    /// Appends a point when the limit or the count changed.
    pub fn point(&mut self, t_ms: u64, limit: u32, running: u32) {
        let last = self.timeline.last().map(|p| (p.limit, p.running));
        if last != Some((limit, running)) {
            self.timeline.push(ConcurrencyPoint {
                t_ms,
                limit,
                running,
            });
        }
    }
}

impl EvacuationRecord {
    pub fn new(id: u64, request: EvacuationRequest, created_unix_ms: u64) -> EvacuationRecord {
        EvacuationRecord {
            id,
            request,
            state: EvacuationState::Planning,
            created_unix_ms,
            measurements: Vec::new(),
            plan: None,
            order: Vec::new(),
            vms: Vec::new(),
            total_migration_ms: None,
            eviction_ms: None,
            left_on_source: Vec::new(),
            ended_ms: None,
            error: None,
            metrics: None,
            concurrency: None,
            prediction: None,
            group: None,
            site: None,
            site_current: None,
            takeovers: Vec::new(),
            updated_unix_ms: None,
        }
    }

    pub fn vm_mut(&mut self, name: &str) -> Option<&mut VmRecord> {
        self.vms.iter_mut().find(|v| v.name == name)
    }

    /// How many VMs have finished migrating.
    pub fn done(&self) -> usize {
        self.vms.iter().filter(|v| v.state == VmState::Done).count()
    }

    /// Fills in the totals once every VM has finished; `left_on_source` is
    /// what the source's hypervisor still lists of the evacuated VMs.
    pub fn finish(&mut self, now_ms: u64, left_on_source: Vec<String>, cancelled: bool) {
        let first = self.vms.iter().filter_map(|v| v.started_ms).min();
        let last = self
            .vms
            .iter()
            .filter(|v| v.state == VmState::Done)
            .filter_map(|v| v.ended_ms)
            .max();
        self.total_migration_ms = first.zip(last).map(|(a, b)| b.saturating_sub(a));
        let all_done = self.vms.iter().all(|v| v.state == VmState::Done);
        // Through intermediaries the source is empty before the migrations
        // end (the destination still gathers).
        let evicted = self
            .vms
            .iter()
            .filter_map(|v| v.evicted_ms.or(v.ended_ms))
            .max();
        self.eviction_ms = (all_done && left_on_source.is_empty())
            .then(|| first.zip(evicted).map(|(a, b)| b.saturating_sub(a)))
            .flatten();
        self.left_on_source = left_on_source;
        self.ended_ms = Some(now_ms);
        let individual: Vec<u64> = self
            .vms
            .iter()
            .filter(|v| v.state == VmState::Done)
            .filter_map(|v| v.duration_ms)
            .collect();
        self.metrics = metric::metrics(
            self.total_migration_ms,
            &individual,
            self.request.score_weight,
        );
        super::forecast::settle(self);
        self.state = if cancelled {
            EvacuationState::Cancelled
        } else if all_done {
            EvacuationState::Done
        } else {
            EvacuationState::Failed
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> EvacuationRecord {
        let req = serde_json::from_str(r#"{"source":"h1","destination":"h2"}"#).unwrap();
        let mut r = EvacuationRecord::new(1, req, 0);
        for (name, start, end, state) in [
            ("a", 100, 900, VmState::Done),
            ("b", 900, 2500, VmState::Done),
        ] {
            let mut v = VmRecord::pending(name);
            v.started_ms = Some(start);
            v.ended_ms = Some(end);
            v.duration_ms = Some(end - start);
            v.state = state;
            r.vms.push(v);
        }
        r
    }

    #[test]
    fn totals_run_from_first_start_to_last_end() {
        let mut r = rec();
        r.finish(3000, vec![], false);
        assert_eq!(r.total_migration_ms, Some(2400));
        assert_eq!(r.eviction_ms, Some(2400));
        assert_eq!(r.state, EvacuationState::Done);
        assert!(r.state.finished());
        let m = r.metrics.unwrap();
        assert_eq!((m.total_s, m.max_individual_s), (2.4, 1.6));
        assert!((m.mean_individual_s - 1.2).abs() < 1e-9, "{m:?}");
        assert!((m.score_s - 1.8).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn eviction_ends_when_the_last_chunk_is_safe() {
        let mut r = rec();
        r.vms[1].evicted_ms = Some(1700);
        r.finish(3000, vec![], false);
        assert_eq!(r.total_migration_ms, Some(2400));
        assert_eq!(r.eviction_ms, Some(1600));
    }

    #[test]
    fn a_failed_vm_means_no_eviction() {
        let mut r = rec();
        r.vms[1].state = VmState::Failed;
        r.finish(3000, vec!["b".into()], false);
        assert_eq!(r.total_migration_ms, Some(800));
        assert_eq!(r.eviction_ms, None);
        assert_eq!(r.state, EvacuationState::Failed);
        let mut r = rec();
        r.finish(3000, vec![], true);
        assert_eq!(r.state, EvacuationState::Cancelled);
    }
}
