//! Pre-caching (issue 15, after the WAN storage-migration paper): while a
//! VM runs, solive keeps a copy of its local disks on a backup host, so an
//! evacuation to that host moves only the blocks written since the last
//! sync instead of the whole disk.
//!
//! How, with QEMU's and libvirt's own machinery:
//! - **The disk becomes a base with one overlay.** Each sync takes an
//!   external disk-only snapshot through libvirt: the VM's writes go to a
//!   new, empty overlay and the image below stops changing.
//! - **The first sync** copies that frozen base into a fresh qcow2 on the
//!   backup (`qemu-img convert` into the backup's `qemu-nbd`). **Each later
//!   one** ships only the frozen overlay's clusters (`qemu-img commit` of a
//!   private copy of it, re-pointed at the backup's NBD export), then
//!   libvirt commits the overlay into the base on the source too
//!   (`virDomainBlockCommit`), so source and backup hold the same base and
//!   the chain stays one overlay deep.
//! - **The evacuation** ([`Caches::take`]) checks the copy (the generation
//!   in the backup's marker file, `qemu-img check`, its size, the source's
//!   chain), puts an empty overlay on it at the path of the VM's top image,
//!   and migrates with libvirt's incremental storage copy
//!   (`VIR_MIGRATE_NON_SHARED_INC`): only the top image travels. If any
//!   check fails the migration copies the whole disk, and its record says
//!   why.
//!
//! Why not a background mirror or dirty bitmaps: libvirt's migration can
//! leave out only what is below a disk's top image; a mirror or a bitmap
//! would leave the base current on the backup but give libvirt no way to
//! skip it. The chain is what it understands.
//!
//! The transfers yield to the applications: each is a low-priority
//! reservation of the controller's ([`crate::controller::background`]), a
//! meter on the source's switch at half the room on its uplink, re-set
//! every period, within `[cache] max_rate_mbps` and a floor. Where the switch
//! cannot meter, qemu-img's own limiter holds it at half the room when it
//! starts.
//!
//! Helpers run on the hosts with their `exec` prefix, as scatter-gather's
//! relays do ([`crate::evacuation::scatter`]). One task per cached VM runs
//! its syncs ([`sync`]); this module owns the table of them.

pub mod plan;
mod sync;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::controller::ControllerHandle;
use crate::evacuation::ports::PortPool;
use crate::hypervisor::Hypervisor;
use crate::store::Store;

/// `[cache]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// The most a sync sends, bit/s.
    pub max_rate_bps: f64,
    /// The least (a full link still lets the cache move), bit/s.
    pub floor_rate_bps: f64,
    /// Time between the end of one sync and the start of the next.
    pub every: Duration,
    /// The backups' NBD ports, `(first, count)`: one per running transfer.
    pub ports: (u16, u16),
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_rate_bps: 80e6,
            floor_rate_bps: 8.0 * 1_048_576.0,
            every: Duration::from_secs(15),
            ports: (10809, 64),
        }
    }
}

/// How solive reaches a host for caching.
#[derive(Debug, Clone)]
pub struct CacheHost {
    pub hv: Arc<dyn Hypervisor>,
    /// Command prefix that runs a helper there (see `[[hosts]] exec`).
    pub exec: Vec<String>,
    /// Its address on the fabric (where its NBD server listens).
    pub address: Option<String>,
}

/// `POST /v1/caches`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRequest {
    pub vm: String,
    pub backup_host: String,
}

/// Where a cache is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheState {
    /// The first copy runs.
    Copying,
    /// The backup holds the disk as of the last sync; the next comes.
    Synced,
    /// A later sync runs.
    Syncing,
    /// An evacuation took the cache (its migration runs).
    InUse,
    /// No more syncs: see `reason`.
    Stopped,
}

/// One disk's copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskCache {
    pub target: String,
    /// The file the backup holds a copy of (the same path on both hosts).
    pub base: String,
    /// The overlay the VM writes to now.
    pub top: String,
    pub capacity_bytes: u64,
    /// What the backup's copy holds, bytes (its allocation at the last sync).
    pub cached_bytes: u64,
    /// Written since the last sync and not cached yet (the top image's
    /// allocation on the source, refreshed between syncs).
    pub dirty_bytes: u64,
}

/// What `GET /v1/caches` shows of one VM's cache (and what the store keeps
/// of it, [`Shared`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheStatus {
    pub vm: String,
    pub source: String,
    pub backup_host: String,
    pub state: CacheState,
    pub disks: Vec<DiskCache>,
    /// Syncs completed (0: the first copy has not).
    pub generation: u64,
    /// When the state the backup holds was taken, Unix seconds.
    pub synced_at: Option<f64>,
    /// How far behind the VM's disk the backup's copy is, seconds (now
    /// less `synced_at`).
    pub lag_s: Option<f64>,
    /// What the transfers sent in all, bytes.
    pub sent_bytes: u64,
    /// The cap of the last transfer, bit/s.
    pub rate_bps: Option<f64>,
    /// Why it stopped (or the last sync's error).
    pub reason: Option<String>,
    /// The transfer running now, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

impl CacheStatus {
    /// A new cache of `disks`, before its first copy.
    pub fn first_copy(
        vm: String,
        source: String,
        backup_host: String,
        disks: Vec<DiskCache>,
    ) -> Self {
        CacheStatus {
            vm,
            source,
            backup_host,
            state: CacheState::Copying,
            disks,
            generation: 0,
            synced_at: None,
            lag_s: None,
            sent_bytes: 0,
            rate_bps: None,
            reason: None,
            transfer: None,
        }
    }
}

/// A sync's transfer in flight: what it sends, since when, how fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub bytes: u64,
    pub started_at: f64,
    pub rate_bps: f64,
}

/// Errors of the cache API, each naming what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CacheError {
    #[error("backup_host: unknown host {0:?}")]
    UnknownBackup(String),
    #[error("backup_host: {0:?} is the VM's own host")]
    OwnHost(String),
    #[error("backup_host: {0} has no address on the fabric to serve the copy from")]
    NoAddress(String),
    #[error("vm: no host runs a VM named {0:?}")]
    UnknownVm(String),
    #[error("vm: {0:?} has no disk on local storage to cache")]
    NothingToCache(String),
    #[error("vm: {vm:?} is cached on {backup} already (DELETE /v1/caches/{vm} first)")]
    Exists { vm: String, backup: String },
    #[error("no cache for VM {0:?}")]
    NotFound(String),
    #[error("{host}: {message}")]
    Host { host: String, message: String },
}

/// One cache's status, shared by its task, the API and evacuations, and
/// written to the store (`[state] dir`, or etcd) whenever something a
/// restart needs changes: its state, generation, images or reason, not
/// the dirty figures refreshed every 2 s. A restarted controller resumes
/// from it ([`Caches::resume`]).
pub(crate) struct Shared {
    status: Mutex<CacheStatus>,
    store: Option<Store>,
    /// Set at shutdown: the store keeps the state from before it, which a
    /// restart resumes from, not the stop that shutdown makes.
    detached: AtomicBool,
    /// Deleted through the API: every later write says so too (a late
    /// change by an evacuation or the sync must not bring it back).
    removed: AtomicBool,
}

/// What the store keeps of a cache.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    status: CacheStatus,
    /// Deleted through the API: a restart forgets it.
    #[serde(default)]
    removed: bool,
}

/// The store's key for `vm`'s cache: FNV-1a of its name (the store keys
/// records by number; a VM has at most one cache).
fn record_id(vm: &str) -> u64 {
    vm.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Shared {
    fn new(status: CacheStatus, store: Option<Store>) -> Arc<Shared> {
        Arc::new(Shared {
            status: Mutex::new(status),
            store,
            detached: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheStatus> {
        // Writers assign fields only: a panic elsewhere leaves nothing
        // half-set that matters more than losing the update.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self) -> CacheStatus {
        self.lock().clone()
    }

    /// Changes the status; stores it if what a restart needs changed
    /// (under the lock, so the store gets the changes in their order).
    pub(crate) fn set(&self, f: impl FnOnce(&mut CacheStatus)) {
        let mut s = self.lock();
        let before = durable(&s);
        f(&mut s);
        if durable(&s) != before {
            self.persist(&s);
        }
    }

    /// Deleted through the API: its last change `f` and the deletion are
    /// stored as one write.
    fn remove(&self, f: impl FnOnce(&mut CacheStatus)) {
        let mut s = self.lock();
        f(&mut s);
        self.removed.store(true, Ordering::Relaxed);
        self.persist(&s);
    }

    fn persist(&self, status: &CacheStatus) {
        if let (Some(store), false) = (&self.store, self.detached.load(Ordering::Relaxed)) {
            let stored = Stored {
                status: status.clone(),
                removed: self.removed.load(Ordering::Relaxed),
            };
            store.put(crate::store::CACHE, record_id(&status.vm), &stored);
        }
    }
}

/// The part of a status a restart depends on.
fn durable(s: &CacheStatus) -> impl PartialEq {
    let images: Vec<_> = s
        .disks
        .iter()
        .map(|d| (d.base.clone(), d.top.clone(), d.cached_bytes))
        .collect();
    (
        s.state,
        s.generation,
        s.synced_at.map(f64::to_bits),
        s.reason.clone(),
        images,
    )
}

/// One cached VM: its status, its task, and the lock a sync holds (an
/// evacuation takes it to wait for a sync to finish).
struct Entry {
    status: Arc<Shared>,
    round: Arc<tokio::sync::Mutex<()>>,
    stop: CancellationToken,
    /// Set with `stop` when an evacuation cuts a sync to migrate over the
    /// copy: the sync then leaves the source's chain as it is
    /// ([`sync::Cut`]).
    hand_over: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Inner {
    hosts: BTreeMap<String, CacheHost>,
    settings: CacheSettings,
    controller: Option<ControllerHandle>,
    store: Option<Store>,
    ports: Arc<PortPool>,
    entries: Mutex<BTreeMap<String, Entry>>,
}

/// The caches (cheap to clone).
#[derive(Clone)]
pub struct Caches {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

/// What an evacuation learns when it asks for a VM's cache ([`Caches::take`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// No cache on that destination: the usual full copy.
    None,
    /// Copy incrementally; the backup holds `saved_bytes` of the disks.
    Incremental { saved_bytes: u64, note: String },
    /// A cache was there but cannot be used: a full copy, and why.
    Fallback(String),
}

pub(crate) fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How long a sync that was cut (an evacuation will not wait for it) may
/// take to stop (its helpers killed; a commit on the source it had begun
/// ends first) before the migration copies the whole disk instead.
const CUT_WAIT: Duration = Duration::from_secs(60);

impl Caches {
    pub fn new(
        hosts: BTreeMap<String, CacheHost>,
        settings: CacheSettings,
        controller: Option<ControllerHandle>,
        store: Option<Store>,
    ) -> Caches {
        let ports = PortPool::new(settings.ports.0, settings.ports.1);
        Caches {
            inner: Arc::new(Inner {
                hosts,
                settings,
                controller,
                store,
                ports,
                entries: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn view(status: &Shared) -> CacheStatus {
        let mut s = status.get();
        s.lag_s = s.synced_at.map(|t| (now_s() - t).max(0.0));
        s
    }

    /// Before an action on a host (a snapshot, a commit, a copy): whether
    /// this controller still may act ([`Store::may_act`]; a cluster leader
    /// whose lease has lapsed must leave the disks to its successor).
    pub(crate) fn acting(&self) -> Result<(), String> {
        match &self.inner.store {
            Some(s) if !s.may_act() => Err(
                "this controller no longer leads (its lease lapsed): the disks left as they are"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    pub fn list(&self) -> Vec<CacheStatus> {
        self.entries()
            .values()
            .map(|e| Self::view(&e.status))
            .collect()
    }

    pub fn get(&self, vm: &str) -> Option<CacheStatus> {
        self.entries().get(vm).map(|e| Self::view(&e.status))
    }

    /// The caches of the VMs on `host`, for its view in `GET /v1/hosts`.
    pub fn of_host(&self, host: &str) -> Vec<CacheStatus> {
        self.list()
            .into_iter()
            .filter(|c| c.source == host)
            .collect()
    }

    /// What a migration of `vm` to `dest` would still copy of its disks if
    /// it used the cache there (the bytes written since the last sync), or
    /// None when it has no cache there to use.
    pub fn uncached_bytes(&self, vm: &str, dest: &str) -> Option<u64> {
        let s = self.get(vm)?;
        let live = matches!(s.state, CacheState::Synced | CacheState::Syncing);
        (live && s.generation > 0 && s.backup_host == dest)
            .then(|| s.disks.iter().map(|d| d.dirty_bytes).sum())
    }

    /// Starts caching `req.vm` on `req.backup_host`: checks the request,
    /// finds the VM and its local disks, and starts its task.
    pub async fn start(&self, req: CacheRequest) -> Result<CacheStatus, CacheError> {
        let backup = self
            .inner
            .hosts
            .get(&req.backup_host)
            .ok_or_else(|| CacheError::UnknownBackup(req.backup_host.clone()))?;
        if backup.address.is_none() {
            return Err(CacheError::NoAddress(req.backup_host.clone()));
        }
        if let Some(e) = self.entries().get(&req.vm) {
            let s = Self::view(&e.status);
            if s.state != CacheState::Stopped {
                return Err(CacheError::Exists {
                    vm: req.vm,
                    backup: s.backup_host,
                });
            }
        }
        let source = self.find(&req.vm).await?;
        if source == req.backup_host {
            return Err(CacheError::OwnHost(source));
        }
        let hv = &self.inner.hosts[&source].hv;
        let disks = hv.disks(&req.vm).await.map_err(|e| CacheError::Host {
            host: source.clone(),
            message: e.to_string(),
        })?;
        let local: Vec<DiskCache> = disks
            .iter()
            .filter(|d| d.copy && d.kind == "file" && d.source.is_some())
            .map(|d| {
                let top = d.source.clone().unwrap_or_default();
                DiskCache {
                    target: d.target.clone(),
                    base: d.backing.last().cloned().unwrap_or_else(|| top.clone()),
                    top,
                    capacity_bytes: d.capacity_bytes,
                    cached_bytes: 0,
                    dirty_bytes: d.allocation_bytes,
                }
            })
            .collect();
        if local.is_empty() {
            return Err(CacheError::NothingToCache(req.vm));
        }
        let status = self.stored(CacheStatus::first_copy(
            req.vm.clone(),
            source,
            req.backup_host,
            local,
        ));
        let view = Self::view(&status);
        let entry = self.spawn(status);
        if let Some(old) = self.entries().insert(req.vm, entry) {
            old.stop.cancel();
        }
        Ok(view)
    }

    /// A cache's shared status, in the store from the start.
    fn stored(&self, status: CacheStatus) -> Arc<Shared> {
        let shared = Shared::new(status, self.inner.store.clone());
        shared.persist(&shared.lock());
        shared
    }

    fn spawn(&self, status: Arc<Shared>) -> Entry {
        let round = Arc::new(tokio::sync::Mutex::new(()));
        let cut = sync::Cut::default();
        let task = tokio::spawn(sync::run(
            self.clone(),
            status.clone(),
            round.clone(),
            cut.clone(),
        ));
        Entry {
            status,
            round,
            stop: cut.stop,
            hand_over: cut.hand_over,
            task: Some(task),
        }
    }

    /// The host that runs `vm`.
    async fn find(&self, vm: &str) -> Result<String, CacheError> {
        for (name, h) in &self.inner.hosts {
            if let Ok(vms) = h.hv.list().await {
                if vms.iter().any(|v| v.name == vm) {
                    return Ok(name.clone());
                }
            }
        }
        Err(CacheError::UnknownVm(vm.to_string()))
    }

    /// Stops caching `vm` (its copy stays on the backup; the VM's disk stays
    /// a base with one overlay, which libvirt handles like any chain).
    pub async fn stop(&self, vm: &str) -> Result<CacheStatus, CacheError> {
        let (status, round, stop, task) = {
            let mut entries = self.entries();
            let e = entries
                .get_mut(vm)
                .ok_or_else(|| CacheError::NotFound(vm.to_string()))?;
            (
                e.status.clone(),
                e.round.clone(),
                e.stop.clone(),
                e.task.take(),
            )
        };
        stop.cancel();
        if let Some(t) = task {
            // A transfer in flight is cut (its helpers are killed); the
            // cache is then stale, which the next evacuation would see.
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let _g = round.lock().await;
        status.remove(|s| {
            if s.state != CacheState::Stopped {
                s.state = CacheState::Stopped;
                s.reason = Some("stopped on request".into());
            }
        });
        let view = Self::view(&status);
        self.entries().remove(vm);
        Ok(view)
    }

    /// Stops every cache's task (shutdown). The store keeps each cache as
    /// it was before, so that the next controller resumes it: a sync cut
    /// here left the backup's copy part-written, which the stored state
    /// (`copying`/`syncing`) tells the next one ([`plan::resume`]).
    pub async fn shutdown(&self) {
        let vms: Vec<String> = {
            let entries = self.entries();
            for e in entries.values() {
                e.status.detached.store(true, Ordering::Relaxed);
            }
            entries.keys().cloned().collect()
        };
        for vm in vms {
            let _ = self.stop(&vm).await;
        }
    }

    /// Takes back the caches an earlier controller kept (the store's
    /// records): each goes on from where [`plan::resume`] says it can, and
    /// one that had stopped is shown as it was.
    pub fn resume(&self, stored: Vec<serde_json::Value>) {
        for v in stored {
            let Ok(Stored { status, removed }) = serde_json::from_value::<Stored>(v) else {
                tracing::warn!("skipping a stored cache that is not one");
                continue;
            };
            let vm = status.vm.clone();
            let (status, run) = match plan::resume(status, removed) {
                plan::Resume::Forget => continue,
                plan::Resume::Show(s) => (s, false),
                plan::Resume::Run(s) => (s, true),
            };
            tracing::info!(vm, state = ?status.state, generation = status.generation,
                reason = status.reason.as_deref().unwrap_or(""), "disk cache taken back from the store");
            let status = self.stored(status);
            let entry = if run {
                self.spawn(status)
            } else {
                Entry {
                    status,
                    round: Default::default(),
                    stop: CancellationToken::new(),
                    hand_over: CancellationToken::new(),
                    task: None,
                }
            };
            if let Some(old) = self.entries().insert(vm, entry) {
                old.stop.cancel();
            }
        }
    }

    /// Called by an evacuation before it migrates `vm` from `source` to
    /// `dest`. With a cache on `dest`: waits for a running sync or cuts it
    /// ([`plan::sync_wait`]), stops the syncs, checks the copy and prepares
    /// the destination's top image.
    /// A cache elsewhere is stopped (the VM leaves the host it caches).
    pub async fn take(&self, vm: &str, dest: &str, copy_bps: f64) -> Taken {
        let Some((status, round, stop, hand_over)) = self.entries().get(vm).map(|e| {
            (
                e.status.clone(),
                e.round.clone(),
                e.stop.clone(),
                e.hand_over.clone(),
            )
        }) else {
            return Taken::None;
        };
        let view = Self::view(&status);
        if view.state == CacheState::Stopped {
            return if view.backup_host == dest {
                Taken::Fallback(format!(
                    "stale: the caching stopped ({})",
                    view.reason.unwrap_or_default()
                ))
            } else {
                Taken::None
            };
        }
        if view.backup_host != dest {
            stop.cancel();
            status.set(|s| {
                s.state = CacheState::Stopped;
                s.reason = Some(format!("the VM migrates to {dest}, not to its backup"));
            });
            return Taken::None;
        }
        let mut cut = None;
        let guard = match round.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                // A sync runs. Cut, it leaves its overlay for the migration
                // to carry (a first copy cut leaves nothing usable: the
                // whole disk then); waited for, the migration carries only
                // what is written meanwhile. Wait only while it should end
                // well before the migration could carry what it sends.
                let carried: u64 = if view.generation == 0 {
                    view.disks
                        .iter()
                        .map(|d| d.cached_bytes + d.dirty_bytes)
                        .sum()
                } else {
                    view.transfer.as_ref().map_or(0, |t| t.bytes)
                };
                let transfer = view
                    .transfer
                    .as_ref()
                    .map(|t| (t.bytes, t.rate_bps, now_s() - t.started_at));
                let wait = plan::sync_wait(transfer, carried, copy_bps);
                let got = match wait {
                    Some(limit) => tokio::time::timeout(limit, round.clone().lock_owned())
                        .await
                        .ok(),
                    None => None,
                };
                match got {
                    Some(g) => g,
                    None => {
                        // Cut the sync: its helpers go, and it leaves the
                        // source's chain as it is.
                        hand_over.cancel();
                        stop.cancel();
                        let why = match wait {
                            Some(limit) => format!(
                                "the sync in flight did not end within {} s",
                                limit.as_secs()
                            ),
                            None => format!(
                                "a sync was sending {} MiB, longer to wait for than to migrate",
                                transfer.map_or(0, |t| t.0 >> 20)
                            ),
                        };
                        match tokio::time::timeout(CUT_WAIT, round.lock_owned()).await {
                            Ok(g) => {
                                cut = Some(why);
                                g
                            }
                            Err(_) => {
                                let why = format!("stale: {why}, and could not be cut");
                                status.set(|s| {
                                    s.state = CacheState::Stopped;
                                    s.transfer = None;
                                    s.reason = Some(format!("not used by the migration: {why}"));
                                });
                                return Taken::Fallback(why);
                            }
                        }
                    }
                }
            }
        };
        stop.cancel();
        let r = sync::prepare(self, &status, cut.as_deref()).await;
        // Set before the sync lock goes, so a stop waiting for it comes after.
        let taken = match r {
            Ok(t) => {
                status.set(|s| s.state = CacheState::InUse);
                t
            }
            Err(why) => {
                status.set(|s| {
                    s.state = CacheState::Stopped;
                    s.transfer = None;
                    s.reason = Some(format!("not used by the migration: {why}"));
                });
                Taken::Fallback(why)
            }
        };
        drop(guard);
        taken
    }

    /// Called when the migration that took the cache has ended: moved, the
    /// VM now runs on its backup and the cache has done its work; failed,
    /// the VM still runs on its source and the syncs go on.
    pub fn migration_ended(&self, vm: &str, moved: bool) {
        let mut entries = self.entries();
        let Some(e) = entries.get_mut(vm) else {
            return;
        };
        let state = e.status.get().state;
        if state != CacheState::InUse {
            return;
        }
        if moved {
            e.status.set(|s| {
                s.state = CacheState::Stopped;
                s.reason = Some(format!(
                    "used: the VM moved to {} with its cached disk",
                    s.backup_host
                ));
            });
        } else {
            e.status.set(|s| s.state = CacheState::Synced);
            let status = e.status.clone();
            *e = self.spawn(status);
        }
    }

    fn host(&self, name: &str) -> Result<&CacheHost, String> {
        self.inner
            .hosts
            .get(name)
            .ok_or_else(|| format!("unknown host {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that keeps what is written, for the test to read.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<(String, u64, serde_json::Value)>>>);

    impl crate::store::Backing for Kept {
        fn put(&mut self, kind: &str, id: u64, body: &str) -> Result<(), String> {
            let v = serde_json::from_str(body).map_err(|e| e.to_string())?;
            self.0.lock().unwrap().push((kind.into(), id, v));
            Ok(())
        }
        fn put_idempotent(&mut self, _: &crate::store::Idempotent) -> Result<(), String> {
            Ok(())
        }
    }

    fn status() -> CacheStatus {
        let disk = DiskCache {
            target: "vda".into(),
            base: "/i/disk.qcow2".into(),
            top: "/i/disk.qcow2".into(),
            capacity_bytes: 1 << 30,
            cached_bytes: 0,
            dirty_bytes: 512 << 20,
        };
        CacheStatus::first_copy("disk".into(), "h1".into(), "h2".into(), vec![disk])
    }

    #[tokio::test]
    async fn the_store_gets_what_a_restart_needs_and_not_the_shutdown() {
        let kept = Kept::default();
        let store = Store::with_backing(kept.clone(), "test".into()).unwrap();
        let s = Shared::new(status(), Some(store.clone()));
        // The dirty figures and the transfer change often; not stored.
        s.set(|s| s.disks[0].dirty_bytes = 9);
        s.set(|s| s.sent_bytes = 100);
        store.flush().await;
        assert!(kept.0.lock().unwrap().is_empty());
        // A sync completes: stored, under the VM's key.
        s.set(|s| {
            s.generation = 1;
            s.state = CacheState::Synced;
            s.synced_at = Some(5.0);
        });
        store.flush().await;
        {
            let w = kept.0.lock().unwrap();
            assert_eq!(w.len(), 1);
            assert_eq!((w[0].0.as_str(), w[0].1), ("cache", record_id("disk")));
            assert_eq!(w[0].2["status"]["generation"], 1);
            assert_eq!(w[0].2["removed"], false);
        }
        // Shutdown: the stop it makes is not stored.
        s.detached.store(true, Ordering::Relaxed);
        s.set(|s| s.state = CacheState::Stopped);
        store.flush().await;
        assert_eq!(kept.0.lock().unwrap().len(), 1);
        // The stored record reads back as what a restart resumes.
        let back: Stored = serde_json::from_value(kept.0.lock().unwrap()[0].2.clone()).unwrap();
        assert!(!back.removed);
        assert!(matches!(
            plan::resume(back.status, back.removed),
            plan::Resume::Run(s) if s.generation == 1 && s.state == CacheState::Synced
        ));
    }

    #[tokio::test]
    async fn a_deleted_cache_is_forgotten_by_the_next_controller() {
        let kept = Kept::default();
        let store = Store::with_backing(kept.clone(), "test".into()).unwrap();
        let caches = Caches::new(
            BTreeMap::new(),
            CacheSettings::default(),
            None,
            Some(store.clone()),
        );
        // A stored stopped cache and a deleted one: the first is shown.
        let stopped = CacheStatus {
            state: CacheState::Stopped,
            reason: Some("the backup host h2 does not answer".into()),
            ..status()
        };
        let deleted = CacheStatus {
            vm: "gone".into(),
            ..status()
        };
        caches.resume(vec![
            serde_json::to_value(Stored {
                status: stopped,
                removed: false,
            })
            .unwrap(),
            serde_json::to_value(Stored {
                status: deleted,
                removed: true,
            })
            .unwrap(),
            serde_json::json!({"not": "a cache"}),
        ]);
        let list = caches.list();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].vm, "disk");
        assert_eq!(list[0].state, CacheState::Stopped);
        // DELETE: stored as removed, so the next controller forgets it,
        // also after a late change to the same status.
        let shared = caches.entries().get("disk").unwrap().status.clone();
        store.flush().await;
        let before = kept.0.lock().unwrap().len();
        caches.stop("disk").await.unwrap();
        store.flush().await;
        {
            // One write: the stop and the deletion together.
            let w = kept.0.lock().unwrap();
            assert_eq!(w.len(), before + 1, "{w:?}");
            assert_eq!(w[before].2["removed"], true);
            assert_eq!(w[before].2["status"]["state"], "stopped");
        }
        shared.set(|s| s.state = CacheState::InUse);
        store.flush().await;
        let w = kept.0.lock().unwrap();
        let last = &w.last().unwrap().2;
        assert_eq!(last["removed"], true, "{last}");
        assert!(matches!(
            plan::resume(
                serde_json::from_value::<Stored>(last.clone())
                    .unwrap()
                    .status,
                true
            ),
            plan::Resume::Forget
        ));
    }

    #[test]
    fn record_ids_are_stable_across_builds() {
        // FNV-1a: the store's keys must not change with the Rust release
        // (std's hasher may).
        assert_eq!(record_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(record_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(record_id("disk"), record_id("disk2"));
    }
}
