//! The hypervisor side: what solive asks of the hosts' VMM, as one trait,
//! [`Hypervisor`], that the evacuation work drives. Implementations: libvirt
//! ([`libvirt::Libvirt`], through the `virt` crate), bare QEMU over QMP
//! ([`qmp::Qmp`], for testbeds without libvirt) and an in-memory
//! [`fake::FakeCloud`] for unit tests of the orchestration logic. The QMP
//! reply parsers in [`qmp`] serve both real drivers.
//!
//! libvirt's API is blocking, so every call runs on tokio's blocking pool
//! (`spawn_blocking`): a slow or hung libvirtd never stalls the controller's
//! event loop, and every call but the migration itself has a time limit
//! ([`HypervisorError::Timeout`]), so no caller waits on a hung libvirtd
//! without a bound.

use std::time::Duration;

use futures::future::BoxFuture;

pub mod disks;
pub mod fake;
pub mod libvirt;
mod libvirt_ffi;
pub mod qmp;

/// What an evacuation needs from a host's hypervisor. Futures are `'static`
/// (implementations are cheap handles that clone themselves into the future),
/// so callers can spawn them.
pub trait Hypervisor: Send + Sync + std::fmt::Debug {
    /// The VMs that run here now.
    fn list(&self) -> BoxFuture<'static, Result<Vec<VmInfo>, HypervisorError>>;
    /// Measures one VM over `window` (dirty-page rate, CPU share, non-zero
    /// page estimate).
    fn measure(
        &self,
        vm: &str,
        window: Duration,
    ) -> BoxFuture<'static, Result<VmMeasurement, HypervisorError>>;
    /// Live-migrates `vm` and resolves when it has finished (or failed: then
    /// the VM still runs here).
    fn migrate(
        &self,
        vm: &str,
        opts: MigrateOptions,
    ) -> BoxFuture<'static, Result<MigrationStats, HypervisorError>>;
    /// Changes a running migration's speed cap, MiB/s.
    fn set_max_speed(&self, vm: &str, mibs: u64)
        -> BoxFuture<'static, Result<(), HypervisorError>>;
    /// Changes a running migration's downtime limit, ms (how long the VM
    /// may be paused to send the last of its memory).
    fn set_max_downtime(
        &self,
        vm: &str,
        ms: u64,
    ) -> BoxFuture<'static, Result<(), HypervisorError>>;
    /// The running migration's progress, or None when no job runs.
    fn progress(
        &self,
        vm: &str,
    ) -> BoxFuture<'static, Result<Option<MigrationProgress>, HypervisorError>>;
    /// Switches a migration started with `postcopy: true` to post-copy.
    fn start_postcopy(&self, vm: &str) -> BoxFuture<'static, Result<(), HypervisorError>>;
    /// Cancels a running (pre-copy) migration; the VM keeps running here.
    fn abort(&self, vm: &str) -> BoxFuture<'static, Result<(), HypervisorError>>;
    /// The VM's disks and which of them a migration copies (see [`disks`]).
    /// A hypervisor that knows of no disks has none to copy.
    fn disks(&self, _vm: &str) -> BoxFuture<'static, Result<Vec<disks::Disk>, HypervisorError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Puts a new, empty overlay on each `(target, file)` disk (an external
    /// disk-only snapshot, atomic over the disks): the files under them
    /// stop changing, so they can be copied while the VM runs.
    fn snapshot_disks(
        &self,
        vm: &str,
        _overlays: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        Box::pin(unsupported(vm, "disk snapshots"))
    }
    /// Finishes the block jobs a killed controller left on the VM's disks
    /// (see [`disks::settle`]) and names each one it finished; an error
    /// names a job that is not solive's, or one that did not end within
    /// `limit`. A hypervisor that knows of no disks has none.
    fn settle_disk_jobs(
        &self,
        _vm: &str,
        _limit: Duration,
    ) -> BoxFuture<'static, Result<Vec<String>, HypervisorError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Merges the image `top` of disk `target` into `base` below it (a
    /// block commit; when `top` is the layer the guest writes to, an active
    /// commit that pivots the guest onto `base`) and resolves when the
    /// chain no longer holds `top`; aborted after `limit`.
    fn commit_disk(
        &self,
        vm: &str,
        _target: &str,
        _base: &str,
        _top: &str,
        _limit: Duration,
    ) -> BoxFuture<'static, Result<(), HypervisorError>> {
        Box::pin(unsupported(vm, "block commit"))
    }
}

/// How long a block commit may take: one solive starts, or one a killed
/// controller left (it runs inside QEMU, at the disk's speed).
pub const COMMIT_LIMIT: Duration = Duration::from_secs(300);

/// Finishes the block jobs a killed controller left on `vm`'s disks
/// ([`Hypervisor::settle_disk_jobs`], within [`COMMIT_LIMIT`]) and logs
/// each one it finished: before a disk cache's sync or hand-over, and
/// before a migration that copies disks.
pub async fn settle_left_jobs(hv: &dyn Hypervisor, vm: &str) -> Result<(), HypervisorError> {
    for what in hv.settle_disk_jobs(vm, COMMIT_LIMIT).await? {
        tracing::warn!(vm, "{what}");
    }
    Ok(())
}

fn unsupported(
    vm: &str,
    what: &str,
) -> impl std::future::Future<Output = Result<(), HypervisorError>> {
    let e = HypervisorError::Vm {
        uri: "-".into(),
        vm: vm.to_string(),
        message: format!("this hypervisor driver does no {what}"),
    };
    async move { Err(e) }
}

/// The two dirty-rate windows a measurement takes, in whole seconds (what
/// QEMU measures over): the requested one, and [`SECOND_WINDOW`] times as
/// long to see whether the dirty set saturates. Both drivers measure this
/// way; [`working_set_kib`] reads the pair.
///
/// [`SECOND_WINDOW`]: crate::predict::working_set::SECOND_WINDOW
pub fn dirty_windows(window: Duration) -> (u64, u64) {
    let first = qmp::calc_secs(window);
    (
        first,
        first * u64::from(crate::predict::working_set::SECOND_WINDOW),
    )
}

/// How long a measurement's dirty-rate windows take at most, both of them
/// ([`dirty_windows`]): what a caller bounding a measurement must allow on
/// top of its calls' own time.
pub fn measuring_time(window: Duration) -> Duration {
    let (first, second) = dirty_windows(window);
    Duration::from_secs(first + second)
}

/// The working set, KiB, from the rates (pages/s) measured over the two
/// windows of [`dirty_windows`] (the second absent when the first saw
/// nothing dirtied: it was not taken), capped at the memory.
pub fn working_set_kib(
    windows: (u64, u64),
    first: f64,
    second: Option<f64>,
    memory_kib: u64,
) -> Option<u64> {
    let (t1, t2) = (windows.0 as f64, windows.1 as f64);
    let pages = crate::predict::working_set::working_set(first * t1, second? * t2, t2 / t1)?;
    Some(((pages * 4.0) as u64).min(memory_kib))
}

/// One VM measured before its migration is planned (see `order`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VmMeasurement {
    pub name: String,
    pub memory_kib: u64,
    /// Estimated non-zero 4 KiB pages (how is the implementation's to say,
    /// in `non_zero_source`).
    pub non_zero_pages: u64,
    pub non_zero_source: String,
    /// Pages dirtied per second.
    pub dirty_pages_per_sec: f64,
    /// The most it dirties however long it runs (its writable working set),
    /// KiB, when a second, longer window showed the dirty set saturating
    /// ([`dirty_windows`]); absent when it dirties nothing or showed no
    /// bound below its memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_kib: Option<u64>,
    /// CPU use over the window, percent of one CPU.
    pub cpu_pct: f64,
    /// What a migration must copy of its disks (those on local storage),
    /// bytes; 0 when every disk is shared or it has none.
    #[serde(default)]
    pub disk_bytes: u64,
    /// What the guest wrote to those disks over the window, bytes/s: what
    /// the copy must also send again while it runs.
    #[serde(default)]
    pub disk_write_bps: f64,
}

/// What a finished migration reports.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct MigrationStats {
    /// Time the VM was paused, ms.
    pub downtime_ms: Option<u64>,
    /// Bytes of memory (and device state) sent; a disk copy's are
    /// `disk_bytes`.
    pub bytes: Option<u64>,
    /// The hypervisor's own measure of the migration's duration, ms.
    pub time_ms: Option<u64>,
    /// Bytes of disk copied (a migration that copied local disks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}

/// Errors of hypervisor calls, with the host and the VM they were about.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HypervisorError {
    #[error("cannot reach the hypervisor at {uri}: {message}")]
    Connect { uri: String, message: String },
    #[error("VM {vm:?} on {uri}: {message}")]
    Vm {
        uri: String,
        vm: String,
        message: String,
    },
    #[error("the hypervisor call did not finish: {0}")]
    Join(String),
    #[error("{0} is not supported by this hypervisor")]
    Unsupported(&'static str),
    #[error("the hypervisor did not answer {what} within {secs} s")]
    Timeout { what: &'static str, secs: u64 },
}

/// A VM as the hypervisor reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VmInfo {
    pub name: String,
    /// `running`, `paused`, `shutoff`, ...
    pub state: String,
    /// Current memory, KiB.
    pub memory_kib: u64,
    pub vcpus: u32,
    /// CPU time used so far, nanoseconds.
    pub cpu_time_ns: u64,
}

/// How a migration is going (libvirt job statistics).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct MigrationProgress {
    /// Bytes of memory (and device state) sent so far.
    pub data_processed: u64,
    pub data_remaining: u64,
    pub data_total: u64,
    /// The transfer rate QEMU measured, bytes/s.
    pub mem_bps: u64,
    /// Pages dirtied per second during the migration.
    pub mem_dirty_rate: u64,
    /// Pre-copy iterations so far (QEMU's `dirty-sync-count`: 1 during the
    /// first pass over memory, 2 once it is over: the moment to switch a
    /// post-copy migration).
    pub mem_iteration: u64,
    /// Disks being copied (before the memory moves): bytes copied so far,
    /// and the copy's current length (it grows with what the guest writes).
    #[serde(default)]
    pub disk_processed: u64,
    #[serde(default)]
    pub disk_total: u64,
}

/// How to migrate.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrateOptions {
    /// The destination's libvirt URI (peer to peer: the source's libvirtd
    /// connects to it).
    pub dest_uri: String,
    /// Where the migration data goes, e.g. `tcp://10.0.0.2` (the fabric).
    pub migrate_uri: Option<String>,
    /// Speed cap in MiB/s (libvirt's unit); kept in step with the reservation
    /// while the migration runs.
    pub bandwidth_mibs: u64,
    /// Start in pre-copy and allow switching to post-copy.
    pub postcopy: bool,
    /// Where the destination's QEMU listens for the data (libvirt's
    /// `listen_address`); `127.0.0.1` when a relay feeds it (scatter-gather).
    pub listen_address: Option<String>,
    /// TCP connections to carry it (libvirt's parallel migration: QEMU's
    /// multifd channels, all to the same destination port); None: one.
    pub parallel_connections: Option<u32>,
    /// Let QEMU throttle the guest's vCPUs when it dirties memory faster
    /// than the migration sends it (auto-converge).
    pub auto_converge: Option<AutoConverge>,
    /// Copy these disks with the VM (non-shared storage, over NBD).
    pub disk_copy: Option<DiskCopy>,
}

/// A storage migration's part of a migration: which disks, and where the
/// destination's NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCopy {
    /// The disks' target names (`vda`).
    pub targets: Vec<String>,
    /// `tcp://ADDR:PORT` for the destination's NBD server (solive's port, so
    /// the copy's flows are this migration's own); None: libvirt's choice.
    pub uri: Option<String>,
    /// Copy only each disk's top image: the destination holds the rest of
    /// its chain already (a pre-cached base, see `crate::cache`) and an empty
    /// overlay on it at the top image's path (libvirt's incremental copy).
    pub incremental: bool,
}

/// QEMU's auto-converge steps, percent of the vCPUs' time taken away: the
/// first throttle, and what each further pass that still falls behind adds
/// (QEMU stops at 99).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoConverge {
    pub initial_pct: u8,
    pub increment_pct: u8,
}

impl MigrateOptions {
    pub fn new(dest_uri: &str, bandwidth_mibs: u64) -> MigrateOptions {
        MigrateOptions {
            dest_uri: dest_uri.to_string(),
            migrate_uri: None,
            bandwidth_mibs,
            postcopy: false,
            listen_address: None,
            parallel_connections: None,
            auto_converge: None,
            disk_copy: None,
        }
    }
}

/// Converts a reservation in bit/s to libvirt's MiB/s, rounding up so the
/// cap never undercuts the reservation (and never 0, which means unlimited).
pub fn bps_to_mibs(bps: f64) -> u64 {
    ((bps / 8.0 / 1_048_576.0).ceil() as u64).max(1)
}

/// A libvirt speed cap (MiB/s) in bit/s: what a migration's part of the
/// link is, as the forecasts and the concurrency controller compare rates.
pub fn mibs_to_bps(mibs: u64) -> f64 {
    mibs as f64 * 1_048_576.0 * 8.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn reservation_to_libvirt_bandwidth() {
        assert_eq!(super::bps_to_mibs(100e6), 12); // 11.92 MiB/s, rounded up
        assert_eq!(super::bps_to_mibs(1.0), 1);
        assert_eq!(super::bps_to_mibs(8.0 * 1_048_576.0 * 3.0), 3);
    }
}
