//! The controller's reservation work, done by the state owner each period:
//! measure, step Algorithm 1, and turn every host's legs into switch state.
//! The decisions are pure functions ([`super::reservation`],
//! [`super::enforce`]); this file gathers their inputs from the owner's state
//! and applies their outputs.

use std::collections::{BTreeMap, BTreeSet};

use super::background;
use super::enforce::{self, HostFacts, Mode, VmPort};
use super::link;
use super::reservation::{self, HostInfo, Reservation, ReservationRequest};
use super::view::{ReservationHostView, ReservationView};
use super::{Command, Controller, ControllerError, HostState, OVSDB_OWNER};
use crate::ovsdb::vswitch;
use crate::reserve::Measurement;

/// Queue-mode OVSDB rows are rewritten only when a rate moves by more than
/// this share of the host's capacity: OVSDB writes reconfigure tc, which is
/// heavier than a meter change.
const OVSDB_HYSTERESIS: f64 = 0.02;

impl Controller {
    fn host_infos(&self) -> BTreeMap<String, HostInfo> {
        self.hosts
            .iter()
            .map(|(n, h)| {
                let info = HostInfo {
                    address: h.config.address,
                    capacity_bps: h.config.capacity_bps() as f64,
                };
                (n.clone(), info)
            })
            .collect()
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn create_reservation(
        &mut self,
        req: ReservationRequest,
    ) -> Result<ReservationView, ControllerError> {
        let infos = self.host_infos();
        // A host named in the body that does not exist is a bad request (the
        // body is wrong), not a missing resource.
        let params = req
            .validate(&infos)
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        let involved = std::iter::once(&req.source)
            .chain(std::iter::once(&req.destination))
            .chain(req.intermediaries.iter());
        for name in involved {
            if let Some(Some(Err(why))) = self.hosts.get(name).map(|h| h.mode.as_ref()) {
                return Err(ControllerError::Invalid(format!(
                    "host {name:?} cannot enforce a reservation: {why}"
                )));
            }
        }
        let id = self.next_reservation;
        self.next_reservation += 1;
        tracing::info!(id, source = %req.source, destination = %req.destination, urgency = req.urgency, "reservation created");
        self.reservations
            .insert(id, Reservation::new(id, req, params));
        self.reservation_created.insert(id, self.now_ms());
        // Measurement 0 now if the source's rate is known, so the caller sees
        // the initial reservation at once; otherwise at the next period.
        self.step_one(id);
        self.enforce_all();
        self.persist_reservation(id, "active");
        Ok(self.reservation_view(id))
    }

    /// Keeps the reservations of an earlier run (from the state store), and
    /// new ids continue after theirs. Those that were active when it stopped:
    /// - after a restart (`adopt` false) are marked interrupted: whatever
    ///   used them died with the process, and their switch state is removed
    ///   as the hosts reconnect;
    /// - after a takeover (`adopt` true: a cluster's new leader) are kept in
    ///   force: their migrations go on (libvirt runs them peer to peer), so
    ///   the new leader re-applies them from the next period on.
    pub fn with_store(
        mut self,
        store: crate::store::Store,
        stored: Vec<serde_json::Value>,
        adopt: bool,
    ) -> Self {
        for mut v in stored {
            let Some(id) = v["id"].as_u64() else { continue };
            self.next_reservation = self.next_reservation.max(id + 1);
            if v["state"] == "active" {
                if adopt {
                    match self.adopt_reservation(id, &v) {
                        Ok(()) => continue,
                        Err(e) => tracing::error!(id, error = %e, "cannot take over a reservation"),
                    }
                }
                v["state"] = "interrupted".into();
                store.put(crate::store::RESERVATION, id, &v);
            }
            self.finished.insert(id, v);
        }
        self.store = Some(store);
        self
    }

    /// Puts a stored active reservation back in force under its own id.
    fn adopt_reservation(&mut self, id: u64, stored: &serde_json::Value) -> Result<(), String> {
        // The record is the request flattened into the view: take the
        // request's own fields back out of it.
        const FIELDS: [&str; 9] = [
            "source",
            "destination",
            "intermediaries",
            "urgency",
            "threshold",
            "max_reserve",
            "migration_port",
            "store_port",
            "disk_port",
        ];
        let fields: serde_json::Map<String, serde_json::Value> = FIELDS
            .iter()
            .filter_map(|k| Some((k.to_string(), stored.get(*k)?.clone())))
            .filter(|(_, v)| !v.is_null())
            .collect();
        let req: ReservationRequest =
            serde_json::from_value(fields.into()).map_err(|e| e.to_string())?;
        let params = req
            .validate(&self.host_infos())
            .map_err(|e| e.to_string())?;
        tracing::info!(id, source = %req.source, destination = %req.destination, "reservation taken over");
        self.reservations
            .insert(id, Reservation::new(id, req, params));
        self.reservation_created.insert(id, self.now_ms());
        Ok(())
    }

    /// The reservation's view with its `state`.
    pub(super) fn reservation_record(&self, id: u64, state: &str) -> serde_json::Value {
        let mut v = serde_json::to_value(self.reservation_view(id)).unwrap_or_default();
        v["state"] = state.into();
        v
    }

    /// Records a reservation's state: in the store when there is one, and an
    /// ended one (not `active`) also in `finished`, where `GET` finds it once
    /// it is gone (without a store, until the controller stops).
    pub(super) fn persist_reservation(&mut self, id: u64, state: &str) {
        let ended = state != "active";
        if (self.store.is_none() && !ended) || !self.reservations.contains_key(&id) {
            return;
        }
        let v = self.reservation_record(id, state);
        if let Some(s) = &self.store {
            s.put(crate::store::RESERVATION, id, &v);
        }
        if ended {
            self.finished.insert(id, v);
        }
    }

    pub(super) fn delete_reservation(&mut self, id: u64) -> Result<(), ControllerError> {
        if !self.reservations.contains_key(&id) {
            return Err(ControllerError::NotFound(format!("no reservation {id}")));
        }
        self.persist_reservation(id, "released");
        let source = self.reservations.remove(&id).map(|r| r.request.source);
        self.reservation_created.remove(&id);
        // The rest of its link and destination go to the others now, not a
        // period later.
        if let Some(source) = source {
            let ids = self.on_link(&source);
            self.share_link(&ids);
            self.share_destinations();
        }
        tracing::info!(id, "reservation released");
        self.enforce_all();
        Ok(())
    }

    /// What a source host measures for its link: C, everything leaving its
    /// uplink plus the application load its enforcement dropped, and the
    /// migrations of `ids` (all of the link's) together.
    fn measure_link(&self, source: &str, ids: &[u64]) -> Option<Measurement> {
        let h = self.hosts.get(source)?;
        let capacity = h.config.capacity_bps() as f64;
        let uplink = h.ports.values().find(|p| p.name == h.config.uplink)?;
        let sent = uplink.tx.rate()?;
        // Bandwidth denied to the applications is not free: count their
        // offered load, or the reservation would climb to max_reserve whenever
        // the migration is slower than its reservation.
        let dropped = match h
            .mode
            .as_ref()
            .and_then(|m| m.as_ref().ok())
            .map(|m| m.mode)
        {
            Some(Mode::Meter) => h
                .meter_drops
                .get(&enforce::APP_OUT_METER)
                .and_then(|e| e.rate())
                .unwrap_or(0.0),
            // Ingress policing drops show as the VM ports' rx_dropped
            // packets; counted at the port's mean packet size.
            Some(Mode::Queue) => h.ports.values().filter_map(|p| p.rx_drop.rate()).sum(),
            None => 0.0,
        };
        let (now, period) = (self.now_ms(), self.config.controller.period_ms);
        let migration = ids
            .iter()
            .filter_map(|id| self.reservations.get(id))
            .map(|r| {
                // The migration's flows leaving this source; a flow shared
                // with other reservations (same packets matched) counts for
                // each an equal part: the switch cannot tell their bytes
                // apart. The hypervisor's report, when fresh, replaces it.
                let on_switch: f64 = h
                    .plan
                    .migration_flows
                    .iter()
                    .filter(|f| {
                        f.reservations.contains(&r.id) && Some(f.flow.src) == h.config.address
                    })
                    .filter_map(|f| {
                        let rate = h.flow_rates.get(&f.cookie)?.rate()?;
                        Some(rate / f.reservations.len() as f64)
                    })
                    .sum();
                r.migration_bps(on_switch, now, period)
            })
            .sum();
        Some(Measurement {
            capacity,
            outgoing: sent + dropped,
            migration,
        })
    }

    /// The reservations leaving `source`, oldest first (ids grow).
    fn on_link(&self, source: &str) -> Vec<u64> {
        self.reservations
            .iter()
            .filter(|(_, r)| r.request.source == source)
            .map(|(i, _)| *i)
            .collect()
    }

    /// Measurement 0 of a new reservation, on its link's figures, and its
    /// part of the link and of its destination at once.
    fn step_one(&mut self, id: u64) {
        let Some(source) = self.reservations.get(&id).map(|r| r.request.source.clone()) else {
            return;
        };
        let ids = self.on_link(&source);
        let Some(m) = self.measure_link(&source, &ids) else {
            return;
        };
        let t = self.now_ms() - self.reservation_created.get(&id).copied().unwrap_or(0);
        if let Some(r) = self.reservations.get_mut(&id) {
            r.tick(t, &m);
        }
        self.share_link(&ids);
        self.share_destinations();
    }

    /// One period of Algorithm 1 per source link, shared by the link's
    /// reservations ([`super::link`]), then the destinations' split.
    pub(super) fn step_reservations(&mut self) {
        // Histories reach the disk every 10 periods: a crash loses at most
        // that much of them.
        let persist = self.periods.is_multiple_of(10);
        let sources: BTreeSet<String> = self
            .reservations
            .values()
            .map(|r| r.request.source.clone())
            .collect();
        let now = self.now_ms();
        for source in &sources {
            let ids = self.on_link(source);
            let Some(m) = self.measure_link(source, &ids) else {
                continue;
            };
            for id in &ids {
                let t = now - self.reservation_created.get(id).copied().unwrap_or(0);
                if let Some(r) = self.reservations.get_mut(id) {
                    r.tick(t, &m);
                }
            }
            self.hold_floor(&ids, &m);
            self.share_link(&ids);
        }
        self.share_destinations();
        if persist {
            let ids: Vec<u64> = self.reservations.keys().copied().collect();
            for id in ids {
                self.persist_reservation(id, "active");
            }
        }
    }

    /// Holds the link's reservation at what its migrations need to finish,
    /// as far as the link has room ([`link::floor_pct`]).
    fn hold_floor(&mut self, ids: &[u64], m: &Measurement) {
        let needs: Vec<f64> = ids
            .iter()
            .filter_map(|id| self.reservations.get(id)?.need_bps)
            .map(|b| b / m.capacity * 100.0)
            .collect();
        let Some(urgency) = ids
            .first()
            .and_then(|id| self.reservations.get(id))
            .map(|r| r.params().urgency)
        else {
            return;
        };
        let apps_pct = ((m.outgoing - m.migration) / m.capacity * 100.0).max(0.0);
        if let Some(floor) = link::floor_pct(&needs, 100.0 - apps_pct, urgency) {
            for id in ids {
                if let Some(r) = self.reservations.get_mut(id) {
                    r.raise_to(floor);
                }
            }
        }
    }

    /// The link's reservation (its oldest reservation's value) split among
    /// its reservations; a reservation alone keeps its own.
    fn share_link(&mut self, ids: &[u64]) {
        let link = ids
            .first()
            .and_then(|id| self.reservations.get(id))
            .and_then(|r| r.link_pct());
        let (Some(link), true) = (link, ids.len() > 1) else {
            for id in ids {
                if let Some(r) = self.reservations.get_mut(id) {
                    r.set_share(None, None);
                }
            }
            return;
        };
        // The source's C, as `measure_link` takes it (not a map of every
        // host built each period for one figure).
        let capacity = ids
            .first()
            .and_then(|id| self.reservations.get(id))
            .and_then(|r| self.hosts.get(&r.request.source))
            .map_or(0.0, |h| h.config.capacity_bps() as f64);
        // Parts are in percent of C: so are the needs.
        let members = self.members(ids, capacity / 100.0);
        for (id, part) in ids.iter().zip(link::split(link, &members)) {
            if let Some(r) = self.reservations.get_mut(id) {
                r.set_share(Some(part), Some(link));
            }
        }
    }

    /// The reservations as members of a link, their needs in units of
    /// `unit_bps` (C/100 for parts in percent; 1 for bit/s).
    fn members(&self, ids: &[u64], unit_bps: f64) -> Vec<link::Member> {
        ids.iter()
            .map(|id| {
                let r = self.reservations.get(id);
                link::Member {
                    reservation: *id,
                    remaining: r.and_then(|r| r.reported_remaining),
                    need: r
                        .and_then(|r| r.need_bps)
                        .filter(|_| unit_bps > 0.0)
                        .map(|b| b / unit_bps),
                }
            })
            .collect()
    }

    /// Each destination's incoming link split among the migrations arriving
    /// there, within what it may reserve.
    fn share_destinations(&mut self) {
        let infos = self.host_infos();
        let mut arriving: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (id, r) in &self.reservations {
            if r.reserve_pct().is_some() {
                arriving
                    .entry(r.request.destination.clone())
                    .or_default()
                    .push(*id);
            }
        }
        for (dest, ids) in arriving {
            let cap = infos.get(&dest).map_or(0.0, |h| h.capacity_bps);
            let rs: Vec<&Reservation> = ids.iter().map(|id| &self.reservations[id]).collect();
            let max_reserve = rs
                .iter()
                .map(|r| r.params().max_reserve)
                .fold(100.0, f64::min);
            let want: Vec<f64> = rs
                .iter()
                .map(|r| {
                    let src = infos.get(&r.request.source).map_or(0.0, |h| h.capacity_bps);
                    r.source_bps(src)
                })
                .collect();
            let got = link::fit(cap * max_reserve / 100.0, &want, &self.members(&ids, 1.0));
            for (id, g) in ids.iter().zip(got) {
                if let Some(r) = self.reservations.get_mut(id) {
                    r.destination_share_bps = Some(g);
                }
            }
        }
    }

    /// Recomputes every host's enforcement from the reservations and applies
    /// what changed: flows and meters through the desired state (with the
    /// throttling flows refreshed), queue-mode rows through OVSDB.
    /// Takes a background transfer in ([`background`]); its share is set
    /// at once (and each period after).
    pub(super) fn start_background(
        &mut self,
        req: background::BackgroundRequest,
    ) -> Result<background::Background, ControllerError> {
        if !self.hosts.contains_key(&req.host) {
            return Err(ControllerError::UnknownHost(req.host));
        }
        if !(req.floor_bps >= 0.0 && req.max_bps > 0.0) {
            return Err(ControllerError::Invalid(format!(
                "a background transfer needs a floor from 0 and a positive ceiling, not {} and {}",
                req.floor_bps, req.max_bps
            )));
        }
        // Ids are meter ids too: the next one not in use.
        let id = (0..background::MAX_BACKGROUND)
            .map(|i| (self.next_background + i) % background::MAX_BACKGROUND)
            .find(|id| !self.backgrounds.contains_key(id))
            .ok_or_else(|| ControllerError::Invalid("too many background transfers".into()))?;
        self.next_background = (id + 1) % background::MAX_BACKGROUND;
        tracing::info!(id, host = req.host, dst = %req.dst, port = req.tcp_dst, "background transfer started");
        self.backgrounds.insert(
            id,
            background::Background {
                id,
                request: req,
                rate_bps: None,
                enforced: false,
            },
        );
        self.enforce_all();
        Ok(self.backgrounds[&id].clone())
    }

    pub(super) fn enforce_all(&mut self) {
        let infos = self.host_infos();
        let period = self.config.period();
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        for name in names {
            let legs = reservation::legs_for_host(&name, self.reservations.values(), &infos);
            let h = self.hosts.get_mut(&name).expect("host exists");
            let mode = match h.mode.as_ref() {
                Some(Ok(c)) => c.mode,
                // No mode yet (switch not connected) or none possible: nothing
                // can be enforced; the reservation view shows it.
                _ => {
                    h.plan = enforce::HostPlan::default();
                    continue;
                }
            };
            let min_app = legs
                .iter()
                .filter_map(|l| self.reservations.get(&l.reservation))
                .map(|r| 100.0 - r.params().max_reserve)
                .fold(f64::NAN, f64::min);
            let facts = host_facts(h, period, if min_app.is_nan() { 5.0 } else { min_app });
            let mut plan = enforce::plan_host(mode, &facts, &legs);
            let reserved_out: f64 = legs
                .iter()
                .filter(|l| l.role == enforce::Role::Source)
                .map(|l| l.reserve_bps.max(0.0))
                .sum();
            background_shares(
                &mut self.backgrounds,
                h,
                mode,
                &facts,
                reserved_out,
                &mut plan,
            );
            let before = h.desired.clone();
            plan.apply_to(&mut h.desired);
            let changed = h.desired != before;
            if changed {
                h.generation += 1;
            }
            let refresh = plan.flows.iter().any(|f| f.refresh);
            let ovsdb_needed =
                h.ovsdb_rewrite || ovsdb_differs(&h.ovsdb_applied, &plan, facts.capacity_bps);
            h.plan = plan;
            if changed || refresh {
                self.reconcile(&name);
            }
            if ovsdb_needed {
                self.apply_ovsdb(&name);
            }
        }
    }

    /// Writes a host's queue-mode QoS rows and policing (and removes what is
    /// no longer wanted) in a task of its own.
    fn apply_ovsdb(&mut self, name: &str) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        let Some(db) = h.ovsdb.clone() else { return };
        if h.ovsdb_applying {
            return; // the next period tries again with the newest plan
        }
        h.ovsdb_applying = true;
        let (old_qos, old_pol) = h.ovsdb_applied.clone();
        let (qos, pol) = (h.plan.qos.clone(), h.plan.policing.clone());
        let handle = self.handle.clone();
        let host = name.to_string();
        tokio::spawn(async move {
            let result: Result<(), crate::ovsdb::OvsdbError> = async {
                for q in &qos {
                    vswitch::set_htb_qos(&db, &q.port, q.max_rate, &q.queues, OVSDB_OWNER).await?;
                }
                for q in old_qos
                    .iter()
                    .filter(|o| !qos.iter().any(|n| n.port == o.port))
                {
                    vswitch::clear_qos(&db, &q.port, OVSDB_OWNER).await?;
                }
                for p in &pol {
                    let rate = u32::try_from(p.rate_kbps).unwrap_or(u32::MAX);
                    let burst = u32::try_from(p.burst_kb).unwrap_or(u32::MAX);
                    vswitch::set_owned_policing(&db, &p.iface, rate, burst, OVSDB_OWNER).await?;
                }
                for p in old_pol
                    .iter()
                    .filter(|o| !pol.iter().any(|n| n.iface == o.iface))
                {
                    vswitch::set_owned_policing(&db, &p.iface, 0, 0, OVSDB_OWNER).await?;
                }
                Ok(())
            }
            .await;
            let (applied, error) = match result {
                Ok(()) => (Some((qos, pol)), None),
                Err(e) => (None, Some(e.to_string())),
            };
            handle.send(Command::OvsdbApplied {
                host,
                applied,
                error,
            });
        });
    }

    pub(super) fn on_ovsdb_applied(
        &mut self,
        name: &str,
        applied: Option<(Vec<enforce::PortQos>, Vec<enforce::Policing>)>,
        error: Option<String>,
    ) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        h.ovsdb_applying = false;
        if let Some(a) = applied {
            h.ovsdb_applied = a;
            h.ovsdb_rewrite = false;
        }
        if let Some(e) = error {
            tracing::warn!(host = name, error = %e, "writing queue-mode QoS/policing failed");
            h.last_error = Some(e);
        }
    }

    pub(super) fn on_meter_support(
        &mut self,
        name: &str,
        session: u64,
        support: Option<enforce::MeterSupport>,
    ) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        if h.switch.as_ref().map(|s| s.session) != Some(session) {
            return;
        }
        let dp_type = h
            .info
            .as_ref()
            .map(|i| i.datapath_type.clone())
            .unwrap_or_default();
        let choice = enforce::choose_mode(h.config.enforcement, &dp_type, support);
        match &choice {
            Ok(c) => {
                tracing::info!(host = name, mode = ?c.mode, reason = %c.reason, "enforcement mode")
            }
            Err(e) => tracing::warn!(host = name, error = %e, "no enforcement possible"),
        }
        h.mode = Some(choice);
        self.enforce_all();
    }

    pub(super) fn metrics(&self) -> super::view::MetricsSnapshot {
        let hosts = self
            .hosts
            .iter()
            .map(|(name, h)| {
                let c = h.config.capacity_bps() as f64;
                let sent = h
                    .ports
                    .values()
                    .find(|p| p.name == h.config.uplink)
                    .and_then(|p| p.tx.rate())
                    .unwrap_or(0.0);
                let migration: f64 = h
                    .flow_rates
                    .iter()
                    .filter(|(c, _)| enforce::is_migration_cookie(**c))
                    .filter_map(|(_, e)| e.rate())
                    .sum();
                let reserved = h
                    .plan
                    .app_out_limit_bps
                    .or(h.plan.app_in_limit_bps)
                    .map_or(0.0, |l| c - l);
                super::view::HostMetrics {
                    host: name.clone(),
                    connected: h.ovsdb.is_some() && h.switch.is_some(),
                    reserved_pct: reserved / c * 100.0,
                    used_pct: sent / c * 100.0,
                    migration_bps: migration,
                    application_bps: (sent - migration).max(0.0),
                }
            })
            .collect();
        super::view::MetricsSnapshot {
            hosts,
            switches_connected: self.hosts.values().filter(|h| h.switch.is_some()).count(),
            reservations: self.reservations.len(),
            period_seconds: self.last_period_secs,
        }
    }

    pub(super) fn reservation_view(&self, id: u64) -> ReservationView {
        let r = &self.reservations[&id];
        let infos = self.host_infos();
        let mut hosts = Vec::new();
        let involved = std::iter::once(&r.request.source)
            .chain(std::iter::once(&r.request.destination))
            .chain(r.request.intermediaries.iter());
        for name in involved {
            let legs = reservation::legs_for_host(name, [r], &infos);
            let h = self.hosts.get(name);
            let mode = h
                .and_then(|h| h.mode.as_ref())
                .and_then(|m| m.as_ref().ok())
                .map(|m| m.mode);
            for leg in legs {
                let app_limit_bps = h.and_then(|h| {
                    if leg.role == enforce::Role::Source {
                        h.plan.app_out_limit_bps
                    } else {
                        h.plan.app_in_limit_bps
                    }
                });
                hosts.push(ReservationHostView {
                    host: name.clone(),
                    role: leg.role,
                    mode,
                    reserve_bps: leg.reserve_bps,
                    app_limit_bps,
                });
            }
        }
        ReservationView {
            id,
            request: r.request.clone(),
            params: *r.params(),
            started: r.started,
            reserve_pct: r.reserve_pct(),
            destination_shortfall_bps: r.destination_bps(&infos).1,
            hosts,
            history: r.history.clone(),
        }
    }
}

/// A host's facts for the planner, from the owner's state.
fn host_facts(h: &HostState, period: std::time::Duration, min_app_pct: f64) -> HostFacts {
    let capacity_bps = h.config.capacity_bps() as f64;
    let uplink = h
        .ports
        .iter()
        .find(|(_, p)| p.name == h.config.uplink)
        .map(|(no, p)| (*no, p.name.clone()));
    let ifaces = h
        .info
        .as_ref()
        .map(|i| i.interfaces.as_slice())
        .unwrap_or_default();
    let vms = h
        .ports
        .iter()
        .filter_map(|(no, p)| {
            let iface = ifaces.iter().find(|i| i.name == p.name)?;
            let is_vm = iface.external_ids.contains_key("vm-id")
                || iface.external_ids.contains_key("iface-id");
            // The switch's rx on a VM's port is what the VM sends.
            is_vm.then(|| VmPort {
                port_no: *no,
                iface: iface.name.clone(),
                tx_bps: p.rx.rate().unwrap_or(0.0),
                rx_bps: p.tx.rate().unwrap_or(0.0),
            })
        })
        .collect();
    HostFacts {
        capacity_bps,
        uplink,
        vms,
        period,
        min_app_bps: capacity_bps * min_app_pct / 100.0,
    }
}

/// Gives the background transfers leaving host `h` their share of its
/// uplink for this period ([`background::rate_bps`], split evenly), and in
/// meter mode puts their flows and meters into `plan`.
fn background_shares(
    backgrounds: &mut BTreeMap<u32, background::Background>,
    h: &HostState,
    mode: enforce::Mode,
    facts: &HostFacts,
    reserved_out_bps: f64,
    plan: &mut enforce::HostPlan,
) {
    let mine: Vec<&mut background::Background> = backgrounds
        .values_mut()
        .filter(|b| b.request.host == h.config.name)
        .collect();
    if mine.is_empty() {
        return;
    }
    let carried = facts
        .uplink
        .as_ref()
        .and_then(|(no, _)| h.ports.get(no))
        .and_then(|p| p.tx.rate())
        .unwrap_or(0.0);
    let own: f64 = mine
        .iter()
        .filter_map(|b| h.flow_rates.get(&background::flow_cookie(b.id))?.rate())
        .sum();
    let n = mine.len() as f64;
    // The floor and ceiling are per transfer; the link's part is theirs
    // together.
    let floor: f64 = mine.iter().map(|b| b.request.floor_bps).sum();
    let max: f64 = mine.iter().map(|b| b.request.max_bps).sum();
    let total = background::rate_bps(
        facts.capacity_bps,
        carried,
        own,
        reserved_out_bps,
        floor,
        max,
    );
    // Queue mode holds them in a queue of the uplink: once it is known.
    let uplink = facts.uplink.as_ref().map(|(_, name)| name.as_str());
    let enforced = mode == enforce::Mode::Meter || uplink.is_some();
    let mut held = Vec::new();
    for b in mine {
        let share = background::steady(b.rate_bps, (total / n).min(b.request.max_bps));
        b.rate_bps = Some(share);
        b.enforced = enforced;
        held.push((b.clone(), share));
    }
    let refs: Vec<(&background::Background, f64)> = held.iter().map(|(b, r)| (b, *r)).collect();
    let timeout = enforce::hard_timeout(facts.period);
    match (mode, uplink) {
        (enforce::Mode::Meter, _) => {
            let (flows, meters) = background::plan(&refs, timeout);
            plan.flows.extend(flows);
            plan.meters.extend(meters);
        }
        (enforce::Mode::Queue, Some(uplink)) => {
            let flows =
                background::plan_queue(&refs, timeout, uplink, facts.capacity_bps, &mut plan.qos);
            plan.flows.extend(flows);
        }
        (enforce::Mode::Queue, None) => {}
    }
}

/// Whether the queue-mode rows in `plan` differ enough from what was written.
fn ovsdb_differs(
    applied: &(Vec<enforce::PortQos>, Vec<enforce::Policing>),
    plan: &enforce::HostPlan,
    capacity: f64,
) -> bool {
    let tol = capacity * OVSDB_HYSTERESIS;
    let (qos, pol) = applied;
    if qos.len() != plan.qos.len() || pol.len() != plan.policing.len() {
        return true;
    }
    let qos_moved = qos.iter().zip(&plan.qos).any(|(a, b)| {
        a.port != b.port
            || a.queues.len() != b.queues.len()
            || a.queues.iter().zip(&b.queues).any(|((ia, qa), (ib, qb))| {
                let far = |x: Option<u64>, y: Option<u64>| {
                    (x.unwrap_or(0) as f64 - y.unwrap_or(0) as f64).abs() > tol
                };
                ia != ib || far(qa.min_rate, qb.min_rate) || far(qa.max_rate, qb.max_rate)
            })
    });
    let pol_moved = pol.iter().zip(&plan.policing).any(|(a, b)| {
        a.iface != b.iface || (a.rate_kbps as f64 - b.rate_kbps as f64).abs() * 1000.0 > tol
    });
    qos_moved || pol_moved
}
