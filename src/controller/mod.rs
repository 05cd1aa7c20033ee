//! The controller: the single owner of solive's state.
//!
//! One task ([`Controller::run`]) owns every host's state. Everything else (the
//! REST API, the per-host OVSDB agents, the switch sessions, the tasks that poll
//! and reconcile switches) talks to it by sending a [`Command`] and, when it
//! needs an answer, waiting on a `oneshot`. The owner never awaits network I/O
//! itself: slow work runs in spawned tasks that report back with a command, so
//! a dead switch never stalls the API or the other hosts.
//!
//! Per period the owner
//! - asks every connected switch for its port counters and turns them into
//!   per-port rates ([`crate::rate`]),
//! - every `resync_periods` periods, and whenever the desired state changes or a
//!   switch (re)connects, reconciles the switch's flows and meters with the
//!   desired ones ([`reconcile`]).

pub mod background;
pub mod enforce;
mod handle;
mod host;
pub mod link;
mod polling;
pub mod reconcile;
pub mod reservation;
mod reserving;
mod switch_events;
mod view;

pub use handle::{BackgroundLease, Command, ControllerHandle};
pub use polling::{poll_switch, reconcile_switch, Polled};
pub use reconcile::{Desired, FlowSpec, MeterSpec};
pub use view::{
    EnforcementView, HostMetrics, HostView, MetricsSnapshot, PortView, ReservationView, VmInterface,
};

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{Config, HostConfig};
use crate::openflow::flow_mod::TABLE_ALL;
use crate::openflow::meter::ids as meter;
use crate::openflow::multipart::PortStats;
use crate::openflow::{FlowStatsRequest, Match, MultipartReplyBody, MultipartRequest, PortReason};
use crate::ovsdb::{self, vswitch, Client};
use crate::rate::{RateEstimator, Sample};
use crate::switch::{SwitchError, SwitchEvent, SwitchHandle};
use host::{HostInfo, OvsdbEvent};
use reconcile::{Observed, ObservedFlow, ObservedMeter, COOKIE_TAG, COOKIE_TAG_MASK};

/// Weight of the newest period in the migration-flow rate (see on_polled).
const FLOW_RATE_ALPHA: f64 = 0.5;

/// The `external_ids:solive-owner` tag on the QoS and Queue rows solive creates.
pub const OVSDB_OWNER: &str = "solive";

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("unknown host {0:?}")]
    UnknownHost(String),
    #[error("the controller has stopped")]
    Stopped,
    #[error("host {host}: {source}")]
    Switch {
        host: String,
        #[source]
        source: SwitchError,
    },
    #[error("host {host}: {source}")]
    Ovsdb {
        host: String,
        #[source]
        source: ovsdb::OvsdbError,
    },
    #[error("host {0}: its ovsdb-server is not connected")]
    OvsdbDown(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
}

/// Whether a change of desired state has reached the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Applied {
    /// The switch confirmed it (a barrier was answered after the change).
    Now,
    /// The switch is not connected; it gets the change when it connects.
    WhenConnected,
}

type Reply<T> = oneshot::Sender<T>;

/// Per-port state: its description and its counters' rates.
#[derive(Debug, Default)]
struct PortState {
    name: String,
    tx: RateEstimator,
    rx: RateEstimator,
    tx_bytes: u64,
    rx_bytes: u64,
    tx_packets: u64,
    rx_packets: u64,
    tx_dropped: u64,
    rx_dropped: u64,
    /// Packets dropped on receive (ingress policing), as bit/s at the port's
    /// mean packet size.
    rx_drop: RateEstimator,
}

struct HostState {
    config: HostConfig,
    ovsdb: Option<Client>,
    info: Option<HostInfo>,
    ovsdb_error: Option<String>,
    switch: Option<SwitchHandle>,
    ports: BTreeMap<u32, PortState>,
    desired: Desired,
    /// Bumped on every change of `desired`.
    generation: u64,
    /// The generation the switch last confirmed.
    applied: u64,
    reconciling: bool,
    /// A reconcile was asked for while one ran.
    again: bool,
    polling: bool,
    /// How this host enforces reservations (None until its switch told us
    /// about meters), or why it cannot.
    mode: Option<Result<enforce::ModeChoice, String>>,
    /// Rates of meter band drops and of migration flows, bit/s.
    meter_drops: HashMap<u32, RateEstimator>,
    flow_rates: HashMap<u64, RateEstimator>,
    /// The enforcement computed last period.
    plan: enforce::HostPlan,
    /// The queue-mode OVSDB state last written, and whether a write runs.
    ovsdb_applied: (Vec<enforce::PortQos>, Vec<enforce::Policing>),
    ovsdb_applying: bool,
    /// Write the queue-mode state again even if unchanged: the OVSDB
    /// session is new, and while none held the host its watchdog may have
    /// lifted everything (crate::watchdog).
    ovsdb_rewrite: bool,
    /// Waiters for a generation to be applied.
    waiters: Vec<(u64, Reply<Result<Applied, ControllerError>>)>,
    last_error: Option<String>,
}

/// The controller task and its state.
pub struct Controller {
    config: Config,
    hosts: BTreeMap<String, HostState>,
    /// Switches that connected before their host's OVSDB told us their dpid.
    unclaimed: HashMap<u64, SwitchHandle>,
    handle: ControllerHandle,
    rx: mpsc::UnboundedReceiver<Command>,
    started: Instant,
    periods: u64,
    reservations: BTreeMap<u64, reservation::Reservation>,
    /// How long the owner's own work of the last period took (seconds).
    last_period_secs: f64,
    /// When each reservation was made, ms since the controller started.
    reservation_created: HashMap<u64, u64>,
    next_reservation: u64,
    /// Where reservations are kept across restarts, if anywhere.
    store: Option<crate::store::Store>,
    /// `[tls]`: the OVSDB clients' TLS (for `ssl:` targets).
    ovsdb_tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Reservations that ended (released, or interrupted by a restart), as
    /// `GET /v1/reservations/{id}` shows them.
    finished: BTreeMap<u64, serde_json::Value>,
    /// Background transfers (the disk caches' syncs) by id.
    backgrounds: BTreeMap<u32, background::Background>,
    next_background: u32,
}

impl Controller {
    /// Creates the controller and the handle to talk to it. Call
    /// [`Controller::run`] to start it.
    pub fn new(config: Config) -> (Controller, ControllerHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = ControllerHandle { tx };
        let hosts = config
            .hosts
            .iter()
            .map(|h| {
                let state = HostState {
                    config: h.clone(),
                    ovsdb: None,
                    info: None,
                    ovsdb_error: None,
                    switch: None,
                    ports: BTreeMap::new(),
                    desired: Desired::baseline(),
                    generation: 1,
                    applied: 0,
                    reconciling: false,
                    again: false,
                    polling: false,
                    mode: None,
                    meter_drops: HashMap::new(),
                    flow_rates: HashMap::new(),
                    plan: enforce::HostPlan::default(),
                    ovsdb_applied: (Vec::new(), Vec::new()),
                    ovsdb_rewrite: false,
                    ovsdb_applying: false,
                    waiters: Vec::new(),
                    last_error: None,
                };
                (h.name.clone(), state)
            })
            .collect();
        let c = Controller {
            config,
            hosts,
            unclaimed: HashMap::new(),
            handle: handle.clone(),
            rx,
            started: Instant::now(),
            periods: 0,
            reservations: BTreeMap::new(),
            last_period_secs: 0.0,
            reservation_created: HashMap::new(),
            next_reservation: 1,
            store: None,
            ovsdb_tls: None,
            finished: BTreeMap::new(),
            backgrounds: BTreeMap::new(),
            next_background: 0,
        };
        (c, handle)
    }

    /// The OVSDB clients' TLS (`[tls]`, loaded by the caller).
    pub fn with_ovsdb_tls(
        mut self,
        tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
    ) -> Self {
        self.ovsdb_tls = tls;
        self
    }

    /// Forwards switch session events into the command stream.
    pub fn forward_switch_events(&self, mut events: mpsc::UnboundedReceiver<SwitchEvent>) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                handle.send(Command::Switch(ev));
            }
        });
    }

    /// Runs until [`ControllerHandle::shutdown`] (or until every handle is gone).
    pub async fn run(mut self) {
        let mut agents = Vec::new();
        let tls = self.ovsdb_tls.clone();
        for h in &self.config.hosts {
            let targets = self.config.controller_targets(h);
            agents.push(host::spawn_agent(
                h.clone(),
                targets,
                tls.clone(),
                self.handle.clone(),
            ));
        }
        let mut timer = tokio::time::interval(self.config.period());
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        for a in &agents {
                            a.abort();
                        }
                        for id in self.reservations.keys().copied().collect::<Vec<_>>() {
                            self.persist_reservation(id, "released");
                        }
                        if let Some(s) = &self.store {
                            s.flush().await;
                        }
                        self.cleanup().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) => self.handle_command(cmd),
                    None => break,
                },
                _ = timer.tick() => {
                    let t = std::time::Instant::now();
                    self.on_period();
                    self.last_period_secs = t.elapsed().as_secs_f64();
                }
            }
        }
        for a in agents {
            a.abort();
        }
        tracing::info!("controller stopped");
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Hosts(r) => {
                let _ = r.send(self.hosts.values().map(|h| self.view(h)).collect());
            }
            Command::Host(name, r) => {
                let _ = r.send(self.hosts.get(&name).map(|h| self.view(h)));
            }
            Command::Desired(name, r) => {
                let d = self.hosts.get(&name).map(|h| h.desired.clone());
                let _ = r.send(d.ok_or(ControllerError::UnknownHost(name)));
            }
            Command::PutMeter(name, m, r) => self.change(name, r, |d| {
                if m.id == 0 || m.id > meter::MAX {
                    return Err(ControllerError::Invalid(format!(
                        "meter id {} is out of range",
                        m.id
                    )));
                }
                if enforce::is_enforcement_meter(m.id) {
                    return Err(ControllerError::Invalid(format!(
                        "meter id {:#x} is in the range reservations use",
                        m.id
                    )));
                }
                d.meters.insert(m.id, m);
                Ok(())
            }),
            Command::DeleteMeter(name, id, r) => self.change(name, r, |d| {
                d.meters.remove(&id);
                Ok(())
            }),
            Command::PutFlow(name, f, r) => self.change(name, r, |d| {
                if f.cookie & COOKIE_TAG_MASK != COOKIE_TAG
                    || f.cookie == reconcile::BASELINE_COOKIE
                {
                    return Err(ControllerError::Invalid(format!(
                        "flow cookie {:#x} is not a solive cookie",
                        f.cookie
                    )));
                }
                d.flows.insert(f.cookie, f);
                Ok(())
            }),
            Command::DeleteFlow(name, cookie, r) => self.change(name, r, |d| {
                if cookie != reconcile::BASELINE_COOKIE {
                    d.flows.remove(&cookie);
                }
                Ok(())
            }),
            Command::Ovsdb(name, r) => {
                let res = match self.hosts.get(&name) {
                    None => Err(ControllerError::UnknownHost(name)),
                    Some(h) => h.ovsdb.clone().ok_or(ControllerError::OvsdbDown(name)),
                };
                let _ = r.send(res);
            }
            Command::Shutdown(_) => unreachable!("handled in run"),
            Command::Switch(ev) => self.on_switch_event(ev),
            Command::OvsdbEvent(name, ev) => self.on_ovsdb_event(&name, ev),
            Command::CreateReservation(req, r) => {
                let _ = r.send(self.create_reservation(req));
            }
            Command::Metrics(r) => {
                let _ = r.send(self.metrics());
            }
            Command::Reservations(r) => {
                let _ = r.send(
                    self.reservations
                        .keys()
                        .map(|id| self.reservation_view(*id))
                        .collect(),
                );
            }
            Command::Reservation(id, r) => {
                let _ = r.send(
                    self.reservations
                        .contains_key(&id)
                        .then(|| self.reservation_view(id)),
                );
            }
            Command::DeleteReservation(id, r) => {
                let _ = r.send(self.delete_reservation(id));
            }
            Command::ReservationRecord(id, r) => {
                let rec = if self.reservations.contains_key(&id) {
                    Some(self.reservation_record(id, "active"))
                } else {
                    self.finished.get(&id).cloned()
                };
                let _ = r.send(rec);
            }
            Command::ReportMigration(id, report) => {
                let now = self.now_ms();
                if let Some(r) = self.reservations.get_mut(&id) {
                    r.reported_migration = Some((now, report.bps));
                    if let Some(left) = report.remaining {
                        r.reported_remaining = Some(left as f64);
                    }
                    r.need_bps = report.need_bps;
                }
            }
            Command::StartBackground(req, r) => {
                let _ = r.send(self.start_background(req));
            }
            Command::StopBackground(id) => {
                if let Some(b) = self.backgrounds.remove(&id) {
                    tracing::info!(id, host = b.request.host, "background transfer ended");
                    self.enforce_all();
                }
            }
            Command::Background(id, r) => {
                let _ = r.send(self.backgrounds.get(&id).cloned());
            }
            Command::MeterSupport {
                host,
                session,
                support,
            } => self.on_meter_support(&host, session, support),
            Command::OvsdbApplied {
                host,
                applied,
                error,
            } => self.on_ovsdb_applied(&host, applied, error),
            Command::Polled {
                host,
                session,
                result,
            } => self.on_polled(&host, session, result),
            Command::Reconciled {
                host,
                session,
                generation,
                result,
            } => self.on_reconciled(&host, session, generation, result),
        }
    }

    /// Applies a change to a host's desired state and schedules a reconcile;
    /// the reply waits for the switch to confirm.
    fn change(
        &mut self,
        name: String,
        reply: Reply<Result<Applied, ControllerError>>,
        f: impl FnOnce(&mut Desired) -> Result<(), ControllerError>,
    ) {
        let Some(h) = self.hosts.get_mut(&name) else {
            let _ = reply.send(Err(ControllerError::UnknownHost(name)));
            return;
        };
        let before = h.desired.clone();
        if let Err(e) = f(&mut h.desired) {
            let _ = reply.send(Err(e));
            return;
        }
        if h.desired == before && h.applied >= h.generation {
            let _ = reply.send(Ok(if h.switch.is_some() {
                Applied::Now
            } else {
                Applied::WhenConnected
            }));
            return;
        }
        if h.desired != before {
            h.generation += 1;
        }
        if h.switch.is_none() {
            let _ = reply.send(Ok(Applied::WhenConnected));
            return;
        }
        h.waiters.push((h.generation, reply));
        self.reconcile(&name);
    }

    fn view(&self, h: &HostState) -> HostView {
        let mut v = view::host_view(
            &h.config,
            h.ovsdb.is_some(),
            h.info.as_ref(),
            h.switch.as_ref(),
            &h.ports,
            h.ovsdb_error.as_deref().or(h.last_error.as_deref()),
        );
        v.enforcement = view::enforcement_view(h.mode.as_ref(), &h.plan);
        v
    }

    /// Removes solive's reservations from every reachable host: meters, flows
    /// other than the baseline NORMAL flow, and owned QoS/Queue rows. The
    /// baseline flow stays so the bridge keeps forwarding (it is
    /// `fail_mode=secure` and would otherwise drop everything without us).
    async fn cleanup(&mut self) {
        let mut jobs = Vec::new();
        for (name, h) in &self.hosts {
            let sw = h.switch.clone();
            let db = h.ovsdb.clone();
            let name = name.clone();
            let policed: Vec<String> = h.ovsdb_applied.1.iter().map(|p| p.iface.clone()).collect();
            jobs.push(tokio::spawn(async move {
                if let Some(sw) = sw {
                    let r = reconcile_switch(&sw, &Desired::baseline()).await;
                    if let Err(e) = r {
                        tracing::warn!(host = %name, error = %e, "could not remove meters and flows");
                    }
                }
                if let Some(db) = db {
                    for iface in policed {
                        let r = vswitch::set_owned_policing(&db, &iface, 0, 0, OVSDB_OWNER).await;
                        if let Err(e) = r {
                            tracing::warn!(host = %name, %iface, error = %e, "could not remove policing");
                        }
                    }
                    if let Err(e) = vswitch::cleanup_owned(&db, OVSDB_OWNER).await {
                        tracing::warn!(host = %name, error = %e, "could not remove QoS rows");
                    }
                }
            }));
        }
        let all = futures::future::join_all(jobs);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("cleanup did not finish within 10 s");
        }
    }
}
