//! Evacuations: empty a host onto another, VM after VM, in the order of the
//! paper's section IV, each migration with its own Algorithm 1 reservation
//! and its hypervisor speed cap kept in step with it.
//!
//! Layering (mini-redis style): [`Evacuations`] is the service the API calls;
//! it validates a request ([`request`]), creates its [`record`] and spawns one
//! runner task ([`runner`]) per evacuation. The runner is the only writer of
//! its record; readers get copies. Controller state (reservations, switches)
//! stays with the controller task and is reached through its handle.

pub mod concurrency;
pub mod converge;
mod dispatch;
pub mod forecast;
pub mod metric;
mod migrate;
pub mod ports;
pub mod record;
pub mod replay;
pub mod request;
mod runner;
pub mod scatter;
pub mod site;
pub mod takeover;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::controller::ControllerHandle;
use crate::hypervisor::{Hypervisor, HypervisorError};
use crate::store::Store;
pub use record::{EvacuationRecord, EvacuationState, VmRecord, VmState};
pub use request::{Concurrency, EvacuationRequest, OrderSpec, RequestError};

/// A host's hypervisor and how other hosts reach it.
#[derive(Debug, Clone)]
pub struct HostHypervisor {
    pub hv: Arc<dyn Hypervisor>,
    /// What a source passes as the destination (libvirt: the URI).
    pub uri: String,
    /// Where migration data goes, e.g. `tcp://10.0.0.2` (the fabric).
    pub migrate_uri: Option<String>,
    /// What it offers guests, for the placement (`[[hosts]]
    /// guest_memory_mib`, `guest_vcpus`).
    pub room: Room,
}

/// A host's room for guests in all (what its VMs use is taken off when a
/// placement is made); None: not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    pub memory_mib: Option<u64>,
    pub vcpus: Option<u32>,
}

/// How the runners work.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a running migration's cap, progress and record are updated.
    pub period: Duration,
    /// How long each VM's dirty rate and CPU are measured before planning.
    pub measure_window: Duration,
    /// Migrations through intermediaries.
    pub scatter: scatter::ScatterSettings,
    /// The destination ports handed to direct migrations, `(first, count)`:
    /// each running migration listens on its own, so its flows are its own
    /// (see [`crate::controller::enforce`]). libvirt's default range.
    pub migration_ports: (u16, u16),
    /// Pre-caching of local disks on backup hosts.
    pub cache: crate::cache::CacheSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            period: Duration::from_secs(1),
            measure_window: Duration::from_secs(1),
            scatter: scatter::ScatterSettings::default(),
            migration_ports: MIGRATION_PORTS,
            cache: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvacuationError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("source: {host} is being evacuated already (evacuation {id})")]
    Busy { host: String, id: u64 },
    #[error("no evacuation {0}")]
    NotFound(u64),
    #[error("evacuation {0} has finished already")]
    Finished(u64),
    #[error("source: cannot list its VMs: {0}")]
    Hypervisor(#[from] HypervisorError),
    #[error("{host}: cannot list its VMs: {source}")]
    List {
        host: String,
        #[source]
        source: HypervisorError,
    },
    /// No destination has room for a VM (a 409: the hosts are full, the
    /// request is fine).
    #[error("destinations: {0}")]
    NoRoom(#[from] crate::place::PlaceError),
}

struct Inner {
    controller: ControllerHandle,
    hosts: BTreeMap<String, HostHypervisor>,
    settings: Settings,
    records: Mutex<BTreeMap<u64, EvacuationRecord>>,
    running: Mutex<BTreeMap<u64, (CancellationToken, tokio::task::JoinHandle<()>)>>,
    /// Cancelled by `shutdown`: runners record "interrupted", not "cancelled".
    stopping: CancellationToken,
    store: Option<Store>,
    /// The relays' listening ports, shared by every evacuation so two that
    /// run at once through intermediaries never collide.
    relay_ports: Arc<ports::PortPool>,
    /// The direct migrations' destination ports, shared the same way.
    migration_ports: Arc<ports::PortPool>,
    /// What finished migrations taught the model (push rate per host,
    /// start-up): the next forecast starts from it.
    learned: Mutex<crate::predict::learn::Learned>,
    /// The groups whose forecast is being re-made ([`Evacuations::reforecast_site`]).
    reforecasting: Mutex<BTreeSet<u64>>,
    /// The disk caches kept on backup hosts: a migration to a VM's backup
    /// uses its copy.
    caches: crate::cache::Caches,
}

/// The host part of a migration URI (`tcp://10.0.0.2` or
/// `tcp://10.0.0.2:49152`): where the host is reached on the fabric.
fn uri_host(uri: &str) -> Option<String> {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let host = rest.split(['/', ':']).next()?;
    (!host.is_empty()).then(|| host.to_string())
}

/// libvirt's own migration port range, 49152-49215: the ports a destination's
/// firewall already lets migrations through.
pub const MIGRATION_PORTS: (u16, u16) = (49152, 64);

/// How many relay ports from `[scatter] relay_port` on: as many migrations
/// through intermediaries can run at once.
pub const RELAY_PORTS: u16 = 64;

/// The evacuation service (cheap to clone).
#[derive(Clone)]
pub struct Evacuations {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Evacuations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evacuations")
            .field("hosts", &self.inner.hosts.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Finished evacuations whose records stay in memory (and in `list`); older
/// finished ones are forgotten here, so a long-running controller does not
/// grow without bound (they stay in the state store, `[state]` or etcd).
pub const MAX_FINISHED_KEPT: usize = 1000;

/// Forgets the oldest (lowest id) entries for which `finished` holds, beyond
/// `keep` of them; unfinished ones are never forgotten.
fn forget_oldest<V>(map: &mut BTreeMap<u64, V>, keep: usize, finished: impl Fn(&V) -> bool) {
    let done: Vec<u64> = map
        .iter()
        .filter(|(_, v)| finished(v))
        .map(|(&k, _)| k)
        .collect();
    for k in done.iter().take(done.len().saturating_sub(keep)) {
        map.remove(k);
    }
}

impl Evacuations {
    pub fn new(
        controller: ControllerHandle,
        hosts: BTreeMap<String, HostHypervisor>,
        settings: Settings,
        store: Option<Store>,
    ) -> Evacuations {
        let relay_ports = ports::PortPool::new(settings.scatter.relay_port, RELAY_PORTS);
        let (first, count) = settings.migration_ports;
        let migration_ports = ports::PortPool::new(first, count);
        let cache_hosts = hosts
            .iter()
            .map(|(name, h)| {
                let host = crate::cache::CacheHost {
                    hv: h.hv.clone(),
                    exec: settings
                        .scatter
                        .hosts
                        .get(name)
                        .map(|s| s.exec.clone())
                        .unwrap_or_default(),
                    address: h.migrate_uri.as_deref().and_then(uri_host),
                };
                (name.clone(), host)
            })
            .collect();
        let caches = crate::cache::Caches::new(
            cache_hosts,
            settings.cache.clone(),
            Some(controller.clone()),
            store.clone(),
        );
        Evacuations {
            inner: Arc::new(Inner {
                controller,
                hosts,
                relay_ports,
                migration_ports,
                settings,
                store,
                records: Mutex::new(BTreeMap::new()),
                running: Mutex::new(BTreeMap::new()),
                stopping: CancellationToken::new(),
                learned: Mutex::new(Default::default()),
                reforecasting: Mutex::new(BTreeSet::new()),
                caches,
            }),
        }
    }

    /// The disk caches on backup hosts.
    pub fn caches(&self) -> &crate::cache::Caches {
        &self.inner.caches
    }

    /// The hosts with a hypervisor (the ones an evacuation can use).
    pub fn hosts(&self) -> BTreeSet<String> {
        self.inner.hosts.keys().cloned().collect()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, EvacuationRecord>> {
        // Writers only assign fields; a panic mid-update cannot leave a
        // record half-built in a way that matters more than losing it.
        self.inner.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<u64, (CancellationToken, tokio::task::JoinHandle<()>)>>
    {
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates `req`, records it and starts it; returns the new record
    /// (the first, when it names several sources: [`Self::start_all`]).
    pub async fn start(&self, req: EvacuationRequest) -> Result<EvacuationRecord, EvacuationError> {
        let mut all = self.start_all(req).await?;
        Ok(all.remove(0))
    }

    /// Validates `req`; when it names several hosts, places each VM on a
    /// destination with room ([`crate::place`]); records one evacuation
    /// per source and starts them all at once, or none if any cannot
    /// start. Returns the new records, one per source with VMs to move.
    pub async fn start_all(
        &self,
        req: EvacuationRequest,
    ) -> Result<Vec<EvacuationRecord>, EvacuationError> {
        let hosts = self.hosts();
        // Hosts first, so an unknown source is named as such and not as a
        // hypervisor failure.
        let params = req.check(&hosts)?;
        let sites = req.sites(&hosts)?;
        let mut on_sources: BTreeMap<String, Vec<crate::hypervisor::VmInfo>> = BTreeMap::new();
        for s in &sites.sources {
            let list = self.inner.hosts[s].hv.list().await;
            let list = match (list, sites.sources.len()) {
                (Ok(l), _) => l,
                (Err(e), 1) => return Err(EvacuationError::Hypervisor(e)),
                (Err(e), _) => {
                    return Err(EvacuationError::List {
                        host: s.clone(),
                        source: e,
                    })
                }
            };
            on_sources.insert(s.clone(), list);
        }
        let simple =
            sites.sources.len() == 1 && sites.destinations.len() == 1 && req.placement.is_empty();
        let children = if simple {
            let mut r = req.clone();
            r.source = sites.sources[0].clone();
            r.destination = sites.destinations[0].clone();
            r.sources = None;
            r.destinations = None;
            vec![r]
        } else {
            let by_source = site_vms(&req, &on_sources)?;
            let wanted: Vec<String> = by_source.values().flatten().cloned().collect();
            let placement = self.place(&req, &sites, &wanted, &on_sources).await?;
            req.per_source(&by_source, &placement)
        };
        let mut items = Vec::new();
        for c in children {
            let on_source: Vec<String> = on_sources[&c.source]
                .iter()
                .map(|v| v.name.clone())
                .collect();
            let valid = c.select(params, &on_source)?;
            self.check_intermediaries(&c)?;
            items.push((c, valid));
        }
        self.launch(items)
    }

    /// Places `wanted` on the destinations: the request's own `placement`
    /// first, then [`crate::place::place`] for the rest, against each
    /// destination's room (its configured room less what its VMs use now).
    async fn place(
        &self,
        req: &EvacuationRequest,
        sites: &request::Sites,
        wanted: &[String],
        on_sources: &BTreeMap<String, Vec<crate::hypervisor::VmInfo>>,
    ) -> Result<BTreeMap<String, String>, EvacuationError> {
        use crate::place;
        let mut dests = Vec::new();
        for d in &sites.destinations {
            let h = &self.inner.hosts[d];
            let resident = h.hv.list().await.map_err(|e| EvacuationError::List {
                host: d.clone(),
                source: e,
            })?;
            let mem: u64 = resident.iter().map(|v| v.memory_kib.div_ceil(1024)).sum();
            let cpus: u32 = resident.iter().map(|v| v.vcpus).sum();
            let capacity_bps = self
                .inner
                .controller
                .host(d)
                .await
                .ok()
                .flatten()
                .map_or(1e9, |v| v.capacity_mbps as f64 * 1e6);
            dests.push(place::Destination {
                name: d.clone(),
                free_memory_mib: h.room.memory_mib.map(|m| m.saturating_sub(mem)),
                free_vcpus: h.room.vcpus.map(|c| c.saturating_sub(cpus)),
                capacity_bps,
                tx_bps: 0.0,
                rx_bps: 0.0,
            });
        }
        if let Some(vm) = req.placement.keys().find(|v| !wanted.contains(v)) {
            return Err(RequestError::Invalid {
                field: "placement",
                message: format!("{vm:?} is not one of the VMs to move"),
            }
            .into());
        }
        // What a VM would send is not measured yet: its memory stands for
        // it (the non-zero pages come with the measurement).
        let guests: Vec<place::Guest> = on_sources
            .values()
            .flatten()
            .filter(|v| wanted.contains(&v.name))
            .map(|v| place::Guest {
                name: v.name.clone(),
                memory_mib: v.memory_kib.div_ceil(1024),
                vcpus: v.vcpus,
                tx_bps: 0.0,
                rx_bps: 0.0,
                bytes: v.memory_kib as f64 * 1024.0,
            })
            .collect();
        // The request's own placement first, where it fits.
        let placement: BTreeMap<String, String> =
            place::place_pinned(&guests, &dests, &req.placement)?
                .into_iter()
                .map(|a| (a.vm, a.destination))
                .collect();
        tracing::info!(?placement, "placed");
        Ok(placement)
    }

    /// Records the evacuations and starts them, all or none (a source
    /// being evacuated already refuses the lot).
    fn launch(
        &self,
        items: Vec<(EvacuationRequest, request::Validated)>,
    ) -> Result<Vec<EvacuationRecord>, EvacuationError> {
        let mut records = self.records();
        for (req, _) in &items {
            if let Some(busy) = records
                .values()
                .find(|r| r.request.source == req.source && !r.state.finished())
            {
                return Err(EvacuationError::Busy {
                    host: req.source.clone(),
                    id: busy.id,
                });
            }
        }
        let first = records.keys().next_back().map_or(1, |k| k + 1);
        let group = (items.len() > 1).then_some(first);
        let mut started = Vec::new();
        for (i, (req, valid)) in items.into_iter().enumerate() {
            let id = first + i as u64;
            let mut rec = EvacuationRecord::new(id, req, crate::clock::unix_ms());
            rec.updated_unix_ms = Some(rec.created_unix_ms);
            rec.group = group;
            rec.vms = valid
                .vms
                .iter()
                .map(|n| {
                    let mut v = VmRecord::pending(n);
                    v.destination = rec.request.placement.get(n).cloned();
                    v
                })
                .collect();
            records.insert(id, rec.clone());
            started.push((rec, valid));
        }
        drop(records);
        let mut out = Vec::new();
        for (rec, valid) in started {
            self.persist(&rec);
            tracing::info!(id = rec.id, source = %rec.request.source, destination = %rec.request.destination, placement = ?rec.request.placement, vms = ?valid.vms, "evacuation started");
            let cancel = self.inner.stopping.child_token();
            let task = tokio::spawn(runner::run(self.clone(), rec.id, valid, cancel.clone()));
            self.running().insert(rec.id, (cancel, task));
            out.push(rec);
        }
        Ok(out)
    }

    /// Each named intermediary must be another host with a store.
    fn check_intermediaries(&self, req: &EvacuationRequest) -> Result<(), RequestError> {
        let Some(list) = &req.intermediaries else {
            return Ok(());
        };
        if !list.is_empty() && req.destinations.is_some() {
            return Err(RequestError::Invalid {
                field: "intermediaries",
                message: "migrating through intermediaries needs one destination, not several"
                    .into(),
            });
        }
        let can = self
            .inner
            .settings
            .scatter
            .candidates(&req.source, &req.destination);
        for (i, name) in list.iter().enumerate() {
            if list[..i].contains(name) {
                return Err(RequestError::Invalid {
                    field: "intermediaries",
                    message: format!("{name:?} is listed twice"),
                });
            }
            if !can.contains(name) {
                return Err(RequestError::Invalid {
                    field: "intermediaries",
                    message: format!(
                        "{name:?} cannot be an intermediary (it must be another host with a `store`; these can: {can:?})"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Where the VMs still to move of evacuation `id` go, and the same for
    /// every other unfinished one: what shares its destinations' links
    /// ([`forecast::destination_share`]).
    pub(crate) fn spreads(&self, id: u64) -> (forecast::Spread, Vec<forecast::Spread>) {
        let to_move = |r: &EvacuationRecord| {
            forecast::spread(
                r.vms
                    .iter()
                    .filter(|v| matches!(v.state, VmState::Pending | VmState::Migrating))
                    .map(|v| r.request.destination_of(&v.name)),
            )
        };
        let records = self.records();
        let own = records.get(&id).map(to_move).unwrap_or_default();
        let others = records
            .values()
            .filter(|r| r.id != id && !r.state.finished())
            .map(to_move)
            .filter(|s| !s.is_empty())
            .collect();
        (own, others)
    }

    /// Once no evacuation of `id`'s group is still measuring, the forecast
    /// of all its sources together ([`site::forecast`]) on the group's
    /// first record, made once (the last source to measure makes it).
    pub(crate) async fn forecast_site(&self, id: u64) {
        let Some(group) = self.get(id).and_then(|r| r.group) else {
            return;
        };
        let members = self.members(group);
        let measuring = members.iter().any(|r| r.state == EvacuationState::Planning);
        if measuring || members.iter().any(|r| r.site.is_some()) {
            return;
        }
        let capacities = self.link_capacities(destinations(&members)).await;
        let created = site::created_unix_ms(&members);
        let made_at_s = crate::clock::unix_ms().saturating_sub(created) as f64 / 1000.0;
        // A site's simulation may take seconds (1,000 VMs); not on the
        // runtime's threads.
        let made =
            tokio::task::spawn_blocking(move || site::forecast(&members, &capacities, made_at_s))
                .await;
        match made {
            Ok(Some(f)) => self.update(group, |r| {
                if r.site.is_none() {
                    r.site = Some(f);
                }
            }),
            Ok(None) => tracing::warn!(group, "no site forecast: no source could be planned"),
            Err(e) => tracing::warn!(group, error = %e, "no site forecast"),
        }
    }

    /// Re-makes the forecast of `id`'s group from what has happened
    /// ([`site::current`]) onto the group's first record (`site_current`).
    /// Each source's period calls it; it runs once a period for the whole
    /// group, one at a time (a site's simulation may take longer than a
    /// period), from once every source has measured until all have ended.
    ///
    /// `now_ms`: evacuation `id`'s clock (ms since it was created), which
    /// its VMs' times count on; the group's counts from its first record.
    pub(crate) async fn reforecast_site(&self, id: u64, now_ms: u64) {
        // Whether it is due, read under the lock: every source asks every
        // period, and the group's records are copied only when it is.
        let (group, now_s, last) = {
            let records = self.records();
            let Some(r) = records.get(&id) else { return };
            let Some(group) = r.group else { return };
            let created =
                site::created_unix_ms(records.values().filter(|m| m.group == Some(group)));
            let last = records
                .get(&group)
                .and_then(|f| f.site_current.as_ref())
                .map(|c| c.made_at_s);
            (group, site::request_s(r, created, now_ms), last)
        };
        let period_s = self.inner.settings.period.as_secs_f64();
        if last.is_some_and(|t| now_s < t + 0.9 * period_s) {
            return;
        }
        let Some(_busy) = InFlight::claim(&self.inner.reforecasting, group) else {
            return;
        };
        let members = self.members(group);
        let measuring = members.iter().any(|r| r.state == EvacuationState::Planning);
        if measuring || members.iter().all(|r| r.state.finished()) {
            return;
        }
        let capacities = self.link_capacities(destinations(&members)).await;
        let learned = self.inner.learned.lock().expect("learned").clone();
        let made = tokio::task::spawn_blocking(move || {
            site::current(&members, &capacities, &learned, now_s)
        })
        .await;
        match made {
            Ok(Some(f)) => self.update(group, |r| r.site_current = Some(f)),
            Ok(None) => {}
            Err(e) => tracing::warn!(group, error = %e, "no current site forecast"),
        }
    }

    /// The links of `hosts` the controller knows, bit/s.
    pub(crate) async fn link_capacities(
        &self,
        hosts: impl IntoIterator<Item = String>,
    ) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for h in hosts {
            if let Ok(Some(v)) = self.inner.controller.host(&h).await {
                out.insert(h, v.capacity_mbps as f64 * 1e6);
            }
        }
        out
    }

    /// The evacuations one request started (group `group`), by id.
    fn members(&self, group: u64) -> Vec<EvacuationRecord> {
        self.records()
            .values()
            .filter(|r| r.group == Some(group))
            .cloned()
            .collect()
    }

    /// The evacuations request `group` started, as one; None if none is
    /// known.
    pub fn group(&self, group: u64) -> Option<site::GroupView> {
        let members = self.members(group);
        (!members.is_empty()).then(|| site::view(group, &members))
    }

    /// Evacuation `id`'s record; `None` if unknown or finished long ago (see
    /// [`MAX_FINISHED_KEPT`]).
    pub fn get(&self, id: u64) -> Option<EvacuationRecord> {
        self.records().get(&id).cloned()
    }

    /// Every record, oldest first.
    pub fn list(&self) -> Vec<EvacuationRecord> {
        self.records().values().cloned().collect()
    }

    /// Asks a running evacuation to stop: pending VMs stay, running pre-copy
    /// migrations are aborted (their VMs keep running on the source), a VM
    /// already in post-copy finishes.
    pub fn cancel(&self, id: u64) -> Result<EvacuationRecord, EvacuationError> {
        let rec = self.get(id).ok_or(EvacuationError::NotFound(id))?;
        if rec.state.finished() {
            return Err(EvacuationError::Finished(id));
        }
        if let Some((token, _)) = self.running().get(&id) {
            token.cancel();
        }
        self.update(id, |r| {
            if !r.state.finished() {
                r.state = EvacuationState::Cancelling;
            }
        });
        Ok(self.get(id).unwrap_or(rec))
    }

    /// Stops every runner (their migrations aborted, reservations released)
    /// and waits for them, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.cancel();
        self.inner.caches.shutdown().await;
        let tasks: Vec<_> = std::mem::take(&mut *self.running())
            .into_values()
            .map(|(_, t)| t)
            .collect();
        let _ = tokio::time::timeout(grace, futures::future::join_all(tasks)).await;
    }

    /// Waits until evacuation `id` has finished; returns its record.
    pub async fn wait(&self, id: u64) -> Option<EvacuationRecord> {
        let task = self.running().remove(&id).map(|(_, t)| t);
        if let Some(t) = task {
            let _ = t.await;
        }
        self.get(id)
    }

    pub(crate) fn update(&self, id: u64, f: impl FnOnce(&mut EvacuationRecord)) {
        let mut records = self.records();
        if let Some(r) = records.get_mut(&id) {
            f(r);
            r.updated_unix_ms = Some(crate::clock::unix_ms());
            let copy = self.inner.store.is_some().then(|| r.clone());
            if r.state.finished() {
                forget_oldest(&mut records, MAX_FINISHED_KEPT, |r| r.state.finished());
            }
            drop(records);
            if let Some(r) = copy {
                self.persist(&r);
            }
        }
    }

    /// Teaches the model a finished migration, and stores what it knows
    /// then, so that a restarted controller's first forecast starts from
    /// it, not from nothing.
    pub(crate) fn learn(&self, o: &crate::predict::learn::Observation) {
        // Stored under the lock, so two migrations ending together store
        // in the order they taught.
        let mut l = self.inner.learned.lock().expect("learned");
        l.observe(o);
        if let Some(s) = &self.inner.store {
            s.put(crate::store::LEARNED, 0, &*l);
        }
    }

    /// Takes back what an earlier controller had learned (the store's
    /// record), unless it does not read as that.
    pub fn relearn(&self, stored: Option<serde_json::Value>) {
        let Some(v) = stored else { return };
        match serde_json::from_value::<crate::predict::learn::Learned>(v) {
            Ok(l) => {
                tracing::info!(
                    samples = l.samples,
                    sources = l.push_bps.len(),
                    "what the model learned taken back from the store"
                );
                *self.inner.learned.lock().expect("learned") = l;
            }
            Err(e) => {
                tracing::warn!(error = %e, "skipping a stored model correction that is not one")
            }
        }
    }

    fn persist(&self, r: &EvacuationRecord) {
        if let Some(s) = &self.inner.store {
            s.put(crate::store::EVACUATION, r.id, r);
        }
    }

    /// Takes back the records of an earlier run. Those that were running when
    /// it stopped are marked interrupted, and where each of their unfinished
    /// VMs runs now is read back from the hypervisors.
    pub async fn restore(&self, stored: Vec<serde_json::Value>) {
        for mut rec in readable(stored) {
            if !rec.state.finished() {
                self.interrupted(&mut rec).await;
                self.persist(&rec);
            }
            self.records().insert(rec.id, rec);
        }
        forget_oldest(&mut self.records(), MAX_FINISHED_KEPT, |r| {
            r.state.finished()
        });
    }

    async fn interrupted(&self, rec: &mut EvacuationRecord) {
        let list = |host: &str| {
            let hv = self.inner.hosts.get(host).map(|h| h.hv.clone());
            let host = host.to_string();
            async move {
                match hv {
                    Some(hv) => hv.list().await.map_err(|e| e.to_string()),
                    None => Err(format!("{host} has no hypervisor configured now")),
                }
            }
        };
        let on_source = list(&rec.request.source).await;
        let mut on_dests = BTreeMap::new();
        for v in &rec.vms {
            let d = rec.request.destination_of(&v.name).to_string();
            if let std::collections::btree_map::Entry::Vacant(e) = on_dests.entry(d) {
                let l = list(e.key()).await;
                e.insert(l);
            }
        }
        for v in &mut rec.vms {
            let dest = rec.request.destination_of(&v.name);
            match v.state {
                VmState::Pending => v.state = VmState::Cancelled,
                VmState::Migrating | VmState::Postcopy => {
                    v.state = VmState::Interrupted;
                    let at = whereabouts(
                        &v.name,
                        (&rec.request.source, &on_source),
                        (dest, &on_dests[dest]),
                    );
                    v.error = Some(format!(
                        "the controller stopped during the migration; the VM is {at}"
                    ));
                }
                _ => {}
            }
        }
        let left = match &on_source {
            Ok(l) => rec
                .vms
                .iter()
                .filter(|v| l.iter().any(|x| x.name == v.name))
                .map(|v| v.name.clone())
                .collect(),
            Err(_) => rec.vms.iter().map(|v| v.name.clone()).collect(),
        };
        let ended = rec.ended_ms;
        rec.finish(ended.unwrap_or(0), left, false);
        rec.state = EvacuationState::Interrupted;
        rec.error
            .get_or_insert_with(|| "the controller stopped while it ran".into());
    }
}

/// The stored records that can be read (the others are skipped, and logged).
fn readable(stored: Vec<serde_json::Value>) -> impl Iterator<Item = EvacuationRecord> {
    stored
        .into_iter()
        .filter_map(|v| match serde_json::from_value(v) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "skipping a stored evacuation that cannot be read");
                None
            }
        })
}

/// Where `members`' VMs go.
fn destinations(members: &[EvacuationRecord]) -> BTreeSet<String> {
    members
        .iter()
        .flat_map(|r| {
            r.vms
                .iter()
                .map(|v| r.request.destination_of(&v.name).to_string())
        })
        .collect()
}

/// A group's claim on re-making its forecast, given back when dropped
/// (also if the task making it is cancelled).
struct InFlight<'a> {
    set: &'a Mutex<BTreeSet<u64>>,
    group: u64,
}

impl<'a> InFlight<'a> {
    fn claim(set: &'a Mutex<BTreeSet<u64>>, group: u64) -> Option<InFlight<'a>> {
        let claimed = set.lock().expect("reforecasting").insert(group);
        // Built only when claimed: a claim dropped unclaimed would give
        // back the claim of the task that holds it.
        claimed.then(|| InFlight { set, group })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.group);
        }
    }
}

/// The VMs to move of a request naming several hosts, by source: the
/// request's `vms` (each on one of the sources, none twice), or every VM
/// on the sources; its priorities must name VMs among them.
fn site_vms(
    req: &EvacuationRequest,
    on_sources: &BTreeMap<String, Vec<crate::hypervisor::VmInfo>>,
) -> Result<BTreeMap<String, Vec<String>>, RequestError> {
    let source_of = |vm: &str| {
        on_sources
            .iter()
            .find(|(_, l)| l.iter().any(|v| v.name == vm))
            .map(|(s, _)| s.clone())
    };
    let mut by_source: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match &req.vms {
        Some(list) => request::each_vm_once(list, |vm| {
            let Some(s) = source_of(vm) else {
                return Err(RequestError::UnknownVm {
                    host: on_sources.keys().cloned().collect::<Vec<_>>().join(", "),
                    name: vm.clone(),
                });
            };
            by_source.entry(s).or_default().push(vm.clone());
            Ok(())
        })?,
        None => {
            for (s, l) in on_sources {
                by_source.insert(s.clone(), l.iter().map(|v| v.name.clone()).collect());
            }
        }
    }
    if by_source.values().all(Vec::is_empty) {
        return Err(RequestError::NoVms(
            on_sources.keys().cloned().collect::<Vec<_>>().join(", "),
        ));
    }
    let all: Vec<String> = by_source.values().flatten().cloned().collect();
    req.check_priorities(&all)?;
    Ok(by_source)
}

/// Where a VM is, as the two hosts' hypervisors list it (their `list()`
/// answers): "on h2 (running)", "on h1 (paused)", "on neither host", or why
/// it cannot be told. A VM listed on both (a post-copy migration that
/// failed midway) is reported on both.
pub(crate) fn whereabouts(
    vm: &str,
    source: (&str, &Result<Vec<crate::hypervisor::VmInfo>, String>),
    dest: (&str, &Result<Vec<crate::hypervisor::VmInfo>, String>),
) -> String {
    let mut on = Vec::new();
    let mut unknown = Vec::new();
    for (host, list) in [dest, source] {
        match list {
            Ok(l) => {
                if let Some(v) = l.iter().find(|v| v.name == vm) {
                    on.push(format!("on {host} ({})", v.state));
                }
            }
            Err(e) => unknown.push(format!("cannot list {host}'s VMs: {e}")),
        }
    }
    match (on.is_empty(), unknown.is_empty()) {
        (true, true) => "on neither host".into(),
        (true, false) => format!("not found: {}", unknown.join("; ")),
        (false, true) => on.join(" and "),
        (false, false) => format!("{} ({})", on.join(" and "), unknown.join("; ")),
    }
}

#[cfg(test)]
mod tests;
