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

pub mod enforce;
mod host;
pub mod link;
pub mod reconcile;
pub mod reservation;
mod reserving;
mod view;

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

/// Everything the controller can be asked to do. One enum, handled in one place.
#[derive(Debug)]
pub enum Command {
    Hosts(Reply<Vec<HostView>>),
    Host(String, Reply<Option<HostView>>),
    Desired(String, Reply<Result<Desired, ControllerError>>),
    PutMeter(String, MeterSpec, Reply<Result<Applied, ControllerError>>),
    DeleteMeter(String, u32, Reply<Result<Applied, ControllerError>>),
    PutFlow(String, FlowSpec, Reply<Result<Applied, ControllerError>>),
    DeleteFlow(String, u64, Reply<Result<Applied, ControllerError>>),
    /// Gives the current OVSDB client of a host, for typed OVSDB work (QoS,
    /// policing) that does not belong in the owner's loop.
    Ovsdb(String, Reply<Result<Client, ControllerError>>),
    /// Removes every reservation solive made (meters, flows other than the
    /// baseline, owned QoS rows) and stops the controller.
    Shutdown(Reply<()>),
    // Reports from the controller's own tasks.
    Switch(SwitchEvent),
    OvsdbEvent(String, OvsdbEvent),
    Polled {
        host: String,
        session: u64,
        result: Result<Polled, SwitchError>,
    },
    CreateReservation(
        reservation::ReservationRequest,
        Reply<Result<ReservationView, ControllerError>>,
    ),
    Reservations(Reply<Vec<ReservationView>>),
    Metrics(Reply<view::MetricsSnapshot>),
    Reservation(u64, Reply<Option<ReservationView>>),
    DeleteReservation(u64, Reply<Result<(), ControllerError>>),
    /// A reservation, live or ended, with its `state`.
    ReservationRecord(u64, Reply<Option<serde_json::Value>>),
    /// The hypervisor's own measure of a reservation's migration rate.
    ReportMigration(u64, f64, Option<u64>),
    /// The switch's meter support is known: decide the host's enforcement mode.
    MeterSupport {
        host: String,
        session: u64,
        support: Option<enforce::MeterSupport>,
    },
    /// An OVSDB enforcement (queue mode) was written, or failed.
    OvsdbApplied {
        host: String,
        applied: Option<(Vec<enforce::PortQos>, Vec<enforce::Policing>)>,
        error: Option<String>,
    },
    Reconciled {
        host: String,
        session: u64,
        generation: u64,
        result: Result<usize, SwitchError>,
    },
}

/// A cloneable handle to the controller task.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl ControllerHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControllerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| ControllerError::Stopped)?;
        rx.await.map_err(|_| ControllerError::Stopped)
    }

    pub async fn create_reservation(
        &self,
        req: reservation::ReservationRequest,
    ) -> Result<ReservationView, ControllerError> {
        self.ask(|r| Command::CreateReservation(req, r)).await?
    }

    pub async fn reservations(&self) -> Result<Vec<ReservationView>, ControllerError> {
        self.ask(Command::Reservations).await
    }

    pub async fn reservation(&self, id: u64) -> Result<Option<ReservationView>, ControllerError> {
        self.ask(|r| Command::Reservation(id, r)).await
    }

    /// A reservation with its `state` (`active`, `released`, or
    /// `interrupted` when the controller stopped while it was active),
    /// including those of earlier runs when a state directory is configured.
    pub async fn reservation_record(
        &self,
        id: u64,
    ) -> Result<Option<serde_json::Value>, ControllerError> {
        self.ask(|r| Command::ReservationRecord(id, r)).await
    }

    /// Releases a reservation: its flows, meters, queues and policing go.
    pub async fn delete_reservation(&self, id: u64) -> Result<(), ControllerError> {
        self.ask(|r| Command::DeleteReservation(id, r)).await?
    }

    /// Reports the migration rate the hypervisor measured (libvirt job stats)
    /// for a reservation: Algorithm 1 uses it as `mig` while it is fresh,
    /// since the switch's flow counters lag behind (OVS updates them in
    /// revalidator batches) and miss migrations on unexpected ports.
    ///
    /// `remaining`: the bytes the migration has left, which decides its part
    /// of a link it shares with other migrations ([`link`]).
    pub fn report_migration(&self, id: u64, bps: f64, remaining: Option<u64>) {
        let _ = self.tx.send(Command::ReportMigration(id, bps, remaining));
    }

    /// The figures `/metrics` exports.
    pub async fn metrics(&self) -> Result<view::MetricsSnapshot, ControllerError> {
        self.ask(Command::Metrics).await
    }

    pub async fn hosts(&self) -> Result<Vec<HostView>, ControllerError> {
        self.ask(Command::Hosts).await
    }

    pub async fn host(&self, name: &str) -> Result<Option<HostView>, ControllerError> {
        self.ask(|r| Command::Host(name.to_string(), r)).await
    }

    pub async fn desired(&self, host: &str) -> Result<Desired, ControllerError> {
        self.ask(|r| Command::Desired(host.to_string(), r)).await?
    }

    /// Creates or changes a meter on a host's bridge; returns once the switch
    /// applied it (or immediately if the switch is not connected).
    pub async fn put_meter(&self, host: &str, m: MeterSpec) -> Result<Applied, ControllerError> {
        self.ask(|r| Command::PutMeter(host.to_string(), m, r))
            .await?
    }

    pub async fn delete_meter(&self, host: &str, id: u32) -> Result<Applied, ControllerError> {
        self.ask(|r| Command::DeleteMeter(host.to_string(), id, r))
            .await?
    }

    /// Creates or changes a flow; its cookie must carry [`reconcile::COOKIE_TAG`].
    pub async fn put_flow(&self, host: &str, f: FlowSpec) -> Result<Applied, ControllerError> {
        self.ask(|r| Command::PutFlow(host.to_string(), f, r))
            .await?
    }

    pub async fn delete_flow(&self, host: &str, cookie: u64) -> Result<Applied, ControllerError> {
        self.ask(|r| Command::DeleteFlow(host.to_string(), cookie, r))
            .await?
    }

    pub async fn ovsdb(&self, host: &str) -> Result<Client, ControllerError> {
        self.ask(|r| Command::Ovsdb(host.to_string(), r)).await?
    }

    /// Installs a linux-htb QoS with the given queues on a port of a host's
    /// bridge (rows tagged as solive's, removed on shutdown).
    pub async fn set_port_qos(
        &self,
        host: &str,
        port: &str,
        max_rate_bps: u64,
        queues: &[(u32, vswitch::QueueConfig)],
    ) -> Result<(), ControllerError> {
        let client = self.ovsdb(host).await?;
        vswitch::set_htb_qos(&client, port, max_rate_bps, queues, OVSDB_OWNER)
            .await
            .map(|_| ())
            .map_err(|source| ControllerError::Ovsdb {
                host: host.to_string(),
                source,
            })
    }

    /// Cleans up and stops the controller. Safe to call more than once.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }

    pub(crate) fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
    }
}

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
    /// Reservations that ended (released, or interrupted by a restart), as
    /// `GET /v1/reservations/{id}` shows them.
    finished: BTreeMap<u64, serde_json::Value>,
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
            finished: BTreeMap::new(),
        };
        (c, handle)
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
        for h in &self.config.hosts {
            let target = self.config.controller_target(h);
            agents.push(host::spawn_agent(h.clone(), target, self.handle.clone()));
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
            Command::ReportMigration(id, bps, remaining) => {
                let now = self.now_ms();
                if let Some(r) = self.reservations.get_mut(&id) {
                    r.reported_migration = Some((now, bps));
                    if let Some(left) = remaining {
                        r.reported_remaining = Some(left as f64);
                    }
                }
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

    fn on_period(&mut self) {
        self.periods += 1;
        self.step_reservations();
        self.enforce_all();
        let resync = self
            .periods
            .is_multiple_of(self.config.controller.resync_periods.max(1));
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        for name in names {
            self.poll(&name);
            if resync {
                self.reconcile(&name);
            }
        }
    }

    /// Starts a port-statistics poll of a host's switch unless one is running.
    fn poll(&mut self, name: &str) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        let Some(sw) = h.switch.clone() else { return };
        if h.polling {
            return;
        }
        h.polling = true;
        // Meter and migration-flow counters only matter while a reservation
        // touches the host.
        let enforcing = !h.plan.flows.is_empty() || !h.plan.meters.is_empty();
        let handle = self.handle.clone();
        let host = name.to_string();
        tokio::spawn(async move {
            let result = poll_switch(&sw, enforcing).await;
            handle.send(Command::Polled {
                host,
                session: sw.session,
                result,
            });
        });
    }

    fn on_polled(&mut self, name: &str, session: u64, result: Result<Polled, SwitchError>) {
        let started = self.started;
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        h.polling = false;
        if h.switch.as_ref().map(|s| s.session) != Some(session) {
            return;
        }
        let Polled {
            ports: stats,
            meters,
            flows,
        } = match result {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(host = name, error = %e, "port statistics poll failed");
                h.last_error = Some(e.to_string());
                return;
            }
        };
        let now = started.elapsed();
        for s in stats {
            let p = h.ports.entry(s.port_no).or_default();
            // The port's own age (duration_sec/nsec) is the better clock: it is
            // taken by the switch when it read the counters, so controller-side
            // scheduling jitter does not distort the rate, and it restarts when
            // the port is re-created.
            let at = if s.duration_sec != u32::MAX && (s.duration_sec, s.duration_nsec) != (0, 0) {
                Duration::new(u64::from(s.duration_sec), s.duration_nsec.min(999_999_999))
            } else {
                now
            };
            p.tx.update(Sample {
                bytes: s.tx_bytes,
                at,
            });
            p.rx.update(Sample {
                bytes: s.rx_bytes,
                at,
            });
            p.tx_bytes = s.tx_bytes;
            p.rx_bytes = s.rx_bytes;
            p.tx_packets = s.tx_packets;
            p.rx_packets = s.rx_packets;
            p.tx_dropped = s.tx_dropped;
            p.rx_dropped = s.rx_dropped;
            let mean = s.rx_bytes.checked_div(s.rx_packets).unwrap_or(0);
            p.rx_drop.update(Sample {
                bytes: s.rx_dropped.saturating_mul(mean),
                at,
            });
        }
        // Meters and flows are replaced on refresh, so their own durations are
        // no clock: the controller's time of the reply is.
        for m in meters {
            let dropped: u64 = m.bands.iter().map(|b| b.byte_band_count).sum();
            let e = h.meter_drops.entry(m.meter_id).or_default();
            e.update(Sample {
                bytes: dropped,
                at: now,
            });
        }
        for f in flows {
            // Open vSwitch pushes datapath counters into its flow table in
            // batches (revalidator passes, ~0.5 s), so one period's delta can
            // hold half or one and a half periods of traffic: smooth it.
            let e = h
                .flow_rates
                .entry(f.cookie)
                .or_insert_with(|| RateEstimator::new(FLOW_RATE_ALPHA));
            e.update(Sample {
                bytes: f.byte_count,
                at: now,
            });
        }
    }

    /// Starts a reconcile of a host's switch, or marks one as wanted if one runs.
    fn reconcile(&mut self, name: &str) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        let Some(sw) = h.switch.clone() else { return };
        if h.reconciling {
            h.again = true;
            return;
        }
        h.reconciling = true;
        h.again = false;
        let desired = h.desired.clone();
        let generation = h.generation;
        let handle = self.handle.clone();
        let host = name.to_string();
        tokio::spawn(async move {
            let result = reconcile_switch(&sw, &desired).await;
            handle.send(Command::Reconciled {
                host,
                session: sw.session,
                generation,
                result,
            });
        });
    }

    fn on_reconciled(
        &mut self,
        name: &str,
        session: u64,
        generation: u64,
        result: Result<usize, SwitchError>,
    ) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        h.reconciling = false;
        let current = h.switch.as_ref().map(|s| s.session) == Some(session);
        match result {
            Ok(n) if current => {
                if n > 0 {
                    tracing::info!(host = name, changes = n, "switch state reconciled");
                }
                h.applied = h.applied.max(generation);
                h.last_error = None;
                let (done, waiting): (Vec<_>, Vec<_>) =
                    h.waiters.drain(..).partition(|(g, _)| *g <= generation);
                h.waiters = waiting;
                for (_, r) in done {
                    let _ = r.send(Ok(Applied::Now));
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(host = name, error = %e, "reconcile failed");
                h.last_error = Some(e.to_string());
                // A switch that rejected the change will reject it again: tell
                // the waiters now rather than let them hang until it reconnects.
                if matches!(e, SwitchError::Rejected { .. }) {
                    for (_, r) in h.waiters.drain(..) {
                        let _ = r.send(Err(ControllerError::Switch {
                            host: name.to_string(),
                            source: e.clone(),
                        }));
                    }
                }
            }
        }
        if h.again || (current && h.applied < h.generation && !h.waiters.is_empty()) {
            self.reconcile(name);
        }
    }

    fn on_switch_event(&mut self, ev: SwitchEvent) {
        match ev {
            SwitchEvent::Connected(sw) => {
                let dpid = sw.dpid;
                match self.host_by_dpid(dpid) {
                    Some(name) => self.attach(&name, sw),
                    None => {
                        tracing::info!(
                            dpid = format!("{dpid:016x}"),
                            "switch not (yet) known from any host's OVSDB; holding it"
                        );
                        self.unclaimed.insert(dpid, sw);
                    }
                }
            }
            SwitchEvent::Disconnected {
                dpid,
                session,
                reason,
            } => {
                self.unclaimed.retain(|_, s| s.session != session);
                for (name, h) in self.hosts.iter_mut() {
                    if h.switch
                        .as_ref()
                        .is_some_and(|s| s.dpid == dpid && s.session == session)
                    {
                        tracing::warn!(host = %name, %reason, "switch of host disconnected");
                        h.switch = None;
                        h.polling = false;
                        h.reconciling = false;
                        h.applied = 0;
                        h.last_error = Some(reason.clone());
                        for p in h.ports.values_mut() {
                            p.tx = RateEstimator::default();
                            p.rx = RateEstimator::default();
                        }
                    }
                }
            }
            SwitchEvent::PortStatus { dpid, status } => {
                if let Some(name) = self.host_by_dpid(dpid) {
                    let h = self.hosts.get_mut(&name).expect("host exists");
                    let no = status.desc.port_no;
                    if status.reason == PortReason::Delete {
                        h.ports.remove(&no);
                    } else {
                        h.ports.entry(no).or_default().name = status.desc.name.clone();
                    }
                }
            }
            SwitchEvent::FlowRemoved { dpid, removed } => {
                // solive's flows have no timeouts; a removal means someone
                // deleted one: the next resync puts it back.
                tracing::debug!(
                    dpid = format!("{dpid:016x}"),
                    cookie = format!("{:#x}", removed.cookie),
                    "flow removed"
                );
            }
            SwitchEvent::Error { dpid, xid, error } => {
                tracing::warn!(dpid = format!("{dpid:016x}"), xid, error = %crate::switch::describe(&error), "switch reported an error");
            }
        }
    }

    fn host_by_dpid(&self, dpid: u64) -> Option<String> {
        self.hosts
            .iter()
            .find(|(_, h)| h.info.as_ref().and_then(|i| i.datapath_id) == Some(dpid))
            .map(|(n, _)| n.clone())
    }

    /// Binds a switch session to a host: learn its ports, reinstall its state.
    fn attach(&mut self, name: &str, sw: SwitchHandle) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        tracing::info!(host = name, dpid = format!("{:016x}", sw.dpid), peer = %sw.peer, "switch attached to host");
        h.switch = Some(sw.clone());
        h.applied = 0;
        h.polling = false;
        h.reconciling = false;
        h.last_error = None;
        h.mode = None;
        h.meter_drops.clear();
        h.flow_rates.clear();
        // Port names: from PORT_DESC, merged into the port table as they come;
        // then the meter support, which decides the enforcement mode.
        let handle = self.handle.clone();
        let host = name.to_string();
        tokio::spawn(async move {
            if let Ok(MultipartReplyBody::PortDesc(ports)) = sw
                .multipart("port descriptions", MultipartRequest::port_desc())
                .await
            {
                for desc in ports {
                    let status = crate::openflow::PortStatus {
                        reason: PortReason::Add,
                        desc,
                    };
                    handle.send(Command::Switch(SwitchEvent::PortStatus {
                        dpid: sw.dpid,
                        status,
                    }));
                }
            }
            let support = match sw
                .multipart("meter features", MultipartRequest::meter_features())
                .await
            {
                Ok(MultipartReplyBody::MeterFeatures(f)) => Some(enforce::MeterSupport {
                    max_meter: f.max_meter,
                    drop_band: f.band_types & (1 << crate::openflow::meter::BAND_DROP) != 0,
                }),
                _ => None,
            };
            handle.send(Command::MeterSupport {
                host,
                session: sw.session,
                support,
            });
        });
        self.reconcile(name);
    }

    fn on_ovsdb_event(&mut self, name: &str, ev: OvsdbEvent) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        match ev {
            OvsdbEvent::Up { client, info } => {
                tracing::info!(host = name, dpid = ?info.datapath_id.map(|d| format!("{d:016x}")), "ovsdb connected and bridge configured");
                h.ovsdb = Some(client);
                h.ovsdb_error = None;
                let dpid = info.datapath_id;
                h.info = Some(info);
                if let Some(sw) = dpid.and_then(|d| self.unclaimed.remove(&d)) {
                    self.attach(name, sw);
                }
            }
            OvsdbEvent::Interfaces(ifaces) => {
                if let Some(info) = h.info.as_mut() {
                    info.interfaces = ifaces;
                }
            }
            OvsdbEvent::Down { error } => {
                if h.ovsdb.is_some() {
                    tracing::warn!(host = name, %error, "ovsdb connection lost");
                }
                h.ovsdb = None;
                h.ovsdb_error = Some(error);
            }
        }
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

/// What one poll of a switch brings back.
#[derive(Debug, Default)]
pub struct Polled {
    pub ports: Vec<PortStats>,
    pub meters: Vec<crate::openflow::multipart::MeterStats>,
    /// solive's migration flows (their byte counters give the migration rate).
    pub flows: Vec<crate::openflow::multipart::FlowStats>,
}

/// One period's counters from a switch: port statistics, and while it enforces a
/// reservation its meter statistics and migration-flow statistics.
pub async fn poll_switch(sw: &SwitchHandle, enforcing: bool) -> Result<Polled, SwitchError> {
    let mut out = Polled::default();
    match sw
        .multipart(
            "port statistics",
            MultipartRequest::port_stats(crate::openflow::port::ANY),
        )
        .await?
    {
        MultipartReplyBody::PortStats(s) => out.ports = s,
        other => return Err(unexpected(sw, "port statistics", &other)),
    }
    if enforcing {
        match sw
            .multipart(
                "meter statistics",
                MultipartRequest::meter_stats(meter::ALL),
            )
            .await?
        {
            MultipartReplyBody::Meter(s) => out.meters = s,
            other => return Err(unexpected(sw, "meter statistics", &other)),
        }
        let req = FlowStatsRequest {
            cookie: enforce::migration_cookie(0, 0),
            cookie_mask: enforce::MIGRATION_COOKIE_MASK,
            ..FlowStatsRequest::new(TABLE_ALL, Match::new())
        };
        match sw
            .multipart("migration flow statistics", MultipartRequest::flow(req))
            .await?
        {
            MultipartReplyBody::Flow(s) => out.flows = s,
            other => return Err(unexpected(sw, "migration flow statistics", &other)),
        }
    }
    Ok(out)
}

/// Reads a switch's solive flows and meters and sends what differs from
/// `desired`, then a barrier. Returns how many messages were sent.
pub async fn reconcile_switch(sw: &SwitchHandle, desired: &Desired) -> Result<usize, SwitchError> {
    let observed = observe(sw).await?;
    let actions = reconcile::plan(desired, &observed);
    let n = actions.len();
    if n > 0 {
        sw.send_all("reconcile", actions).await?;
    }
    Ok(n)
}

async fn observe(sw: &SwitchHandle) -> Result<Observed, SwitchError> {
    let flows = match sw
        .multipart(
            "flow statistics",
            MultipartRequest::flow(FlowStatsRequest {
                cookie: COOKIE_TAG,
                cookie_mask: COOKIE_TAG_MASK,
                ..FlowStatsRequest::new(TABLE_ALL, Match::new())
            }),
        )
        .await?
    {
        MultipartReplyBody::Flow(stats) => stats
            .into_iter()
            .map(|f| ObservedFlow {
                cookie: f.cookie,
                table_id: f.table_id,
                priority: f.priority,
                hard_timeout: f.hard_timeout,
                matches: f.match_,
                instructions: f.instructions,
            })
            .collect(),
        other => return Err(unexpected(sw, "flow statistics", &other)),
    };
    let meters = match sw
        .multipart(
            "meter configuration",
            MultipartRequest::meter_config(meter::ALL),
        )
        .await?
    {
        MultipartReplyBody::MeterConfig(cfgs) => cfgs
            .into_iter()
            .map(|m| ObservedMeter {
                id: m.meter_id,
                flags: m.flags,
                bands: m.bands,
            })
            .collect(),
        other => return Err(unexpected(sw, "meter configuration", &other)),
    };
    Ok(Observed { flows, meters })
}

fn unexpected(sw: &SwitchHandle, what: &'static str, got: &MultipartReplyBody) -> SwitchError {
    SwitchError::UnexpectedReply {
        dpid: sw.dpid,
        what,
        got: format!("{got:?}").chars().take(40).collect(),
    }
}
