//! Reservations: a migration's bandwidth on the source, the destination and
//! any intermediaries, driven every period by Algorithm 1
//! ([`crate::reserve::algorithm`]).
//!
//! Everything here is pure: the controller measures, calls [`Reservation::tick`]
//! with what it measured, derives each host's [`Leg`]s with [`legs_for_host`],
//! and turns them into switch state with [`super::enforce::plan_host`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::enforce::{Leg, MigrationMatch, MigrationPorts, Role};
use crate::reserve::{Measurement, Params, Reserver, DEFAULT_MAX_RESERVE};

/// What a cloud manager asks for (`POST /v1/reservations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationRequest {
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub intermediaries: Vec<String>,
    pub urgency: f64,
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    #[serde(default)]
    pub max_reserve: Option<f64>,
    /// The exact destination port of the migration, when known; otherwise
    /// libvirt's default range 49152-49215.
    #[serde(default)]
    pub migration_port: Option<u16>,
    /// With intermediaries: the port of their stores (Redis). The source's
    /// writes go to it and the destination's reads come back from it, so
    /// those legs are matched on it.
    #[serde(default)]
    pub store_port: Option<u16>,
    /// The destination port of the migration's disk copy (the destination
    /// QEMU's NBD server), when it copies local disks: its flows, both ways,
    /// are matched on it and share the reservation with the memory's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_port: Option<u16>,
}

/// Redis's port, where scatter-gather's stores listen by default.
pub const DEFAULT_STORE_PORT: u16 = 6379;

fn default_threshold() -> f64 {
    10.0
}

/// What the controller knows of a host, for validation and planning.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    pub address: Option<Ipv4Addr>,
    pub capacity_bps: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReservationError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{field}: unknown host {name:?}")]
    UnknownHost { field: &'static str, name: String },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ReservationError {
    ReservationError::Invalid {
        field,
        message: message.into(),
    }
}

impl ReservationRequest {
    /// Checks the request against the known hosts; returns the parameters.
    pub fn validate(&self, hosts: &BTreeMap<String, HostInfo>) -> Result<Params, ReservationError> {
        let params = Params::new(
            self.urgency,
            self.threshold,
            self.max_reserve.unwrap_or(DEFAULT_MAX_RESERVE),
        )
        .map_err(|e| {
            let field = match &e {
                crate::reserve::algorithm::ParamError::OutOfRange { name, .. } => *name,
            };
            invalid(field, e.to_string())
        })?;
        let known = |field: &'static str, name: &str| -> Result<&HostInfo, ReservationError> {
            let h = hosts
                .get(name)
                .ok_or_else(|| ReservationError::UnknownHost {
                    field,
                    name: name.to_string(),
                })?;
            if h.address.is_none() {
                return Err(invalid(field, format!("host {name:?} has no `address` in the configuration, so its migration flows cannot be identified")));
            }
            Ok(h)
        };
        known("source", &self.source)?;
        known("destination", &self.destination)?;
        if self.source == self.destination {
            return Err(invalid("destination", "the destination is the source"));
        }
        for (i, name) in self.intermediaries.iter().enumerate() {
            known("intermediaries", name)?;
            if *name == self.source || *name == self.destination {
                return Err(invalid(
                    "intermediaries",
                    format!("{name:?} is the source or the destination"),
                ));
            }
            if self.intermediaries[..i].contains(name) {
                return Err(invalid(
                    "intermediaries",
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        if self.migration_port == Some(0) {
            return Err(invalid("migration_port", "port 0 is not a port"));
        }
        if self.store_port == Some(0) {
            return Err(invalid("store_port", "port 0 is not a port"));
        }
        if self.disk_port == Some(0) {
            return Err(invalid("disk_port", "port 0 is not a port"));
        }
        if self.disk_port.is_some() && self.disk_port == self.migration_port {
            return Err(invalid(
                "disk_port",
                "the disk copy's port is the memory's (migration_port)",
            ));
        }
        Ok(params)
    }
}

/// One point of a reservation's history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Milliseconds since the reservation was made.
    pub t_ms: u64,
    pub avail_pct: f64,
    pub mig_pct: f64,
    /// This reservation's part of the link (all of it when alone).
    pub reserve_pct: f64,
    /// The link's reservation, when several migrations share it
    /// ([`super::link`]); `avail_pct` and `mig_pct` are then the link's too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_pct: Option<f64>,
}

/// The history is bounded: a reservation lasting a day at 1 s periods would
/// otherwise keep 86 400 points. Older points are thinned, not dropped, so the
/// whole course stays visible.
pub const MAX_HISTORY: usize = 3600;

/// A migration's reservation and the state of its Algorithm 1 loop.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: u64,
    pub request: ReservationRequest,
    reserver: Reserver,
    /// The migration has been seen moving (or was declared started).
    pub started: bool,
    pub history: Vec<HistoryPoint>,
    /// The last migration rate the hypervisor reported: (controller ms, bit/s).
    pub reported_migration: Option<(u64, f64)>,
    /// The bytes the migration had left at its last report.
    pub reported_remaining: Option<f64>,
    /// Its part of the source's link reservation, percent of the source's C,
    /// when it shares the link with other migrations (set every period by
    /// the controller, [`super::link`]); None when alone.
    pub share_pct: Option<f64>,
    /// What its destination gives it, bit/s, once the destination's incoming
    /// link has been split among the migrations arriving there.
    pub destination_share_bps: Option<f64>,
    /// The rate it needs to finish, bit/s, when its hypervisor said (a
    /// pre-copy: its dirty set within the downtime limit): the floor of its
    /// part of the link ([`super::link`]).
    pub need_bps: Option<f64>,
}

/// What the hypervisor says of a reservation's migration each period.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MigrationReport {
    /// Its rate, bit/s (Algorithm 1's `mig` while fresh).
    pub bps: f64,
    /// Bytes it has left: its part of a shared link ([`super::link`]).
    pub remaining: Option<u64>,
    /// The rate it needs to finish, bit/s.
    pub need_bps: Option<f64>,
}

/// A migration is taken as started once its flows carry more than this share
/// of C (TCP handshakes and probes are not a migration).
pub const STARTED_PCT: f64 = 1.0;

impl Reservation {
    pub fn new(id: u64, request: ReservationRequest, params: Params) -> Reservation {
        Reservation {
            id,
            request,
            reserver: Reserver::new(params),
            started: false,
            history: Vec::new(),
            reported_migration: None,
            reported_remaining: None,
            share_pct: None,
            destination_share_bps: None,
            need_bps: None,
        }
    }

    pub fn params(&self) -> &Params {
        &self.reserver.params
    }

    /// Raises the link's reservation as this reservation's loop holds it to
    /// at least `floor_pct` (see [`super::link::floor_pct`]).
    pub fn raise_to(&mut self, floor_pct: f64) {
        self.reserver.raise_to(floor_pct);
        if let Some(p) = self.history.last_mut() {
            p.reserve_pct = p
                .reserve_pct
                .max(self.reserver.reserve_pct().unwrap_or(0.0));
        }
    }

    /// The current reservation in percent of the source's C, once measured:
    /// its part of the link when it shares it.
    pub fn reserve_pct(&self) -> Option<f64> {
        self.share_pct.or_else(|| self.reserver.reserve_pct())
    }

    /// What Algorithm 1, stepped on the whole link, gives: the link's
    /// reservation when this is the link's oldest.
    pub fn link_pct(&self) -> Option<f64> {
        self.reserver.reserve_pct()
    }

    /// Sets its part of a shared link (None: alone), and shows it in the
    /// last history point.
    pub fn set_share(&mut self, share_pct: Option<f64>, link_pct: Option<f64>) {
        self.share_pct = share_pct;
        if let (Some(p), Some(s)) = (self.history.last_mut(), share_pct) {
            p.reserve_pct = s;
            p.link_pct = link_pct;
        }
    }

    /// One period. The first measurement is measurement 0 (the initial
    /// reservation); until the migration starts the reservation keeps its
    /// initial value; after that Algorithm 1 adjusts it every period.
    pub fn tick(&mut self, t_ms: u64, m: &Measurement) {
        if m.capacity <= 0.0 {
            return;
        }
        // The period in which the migration is first seen is only partly a
        // migration (TCP is still ramping up): the loop runs from the next one.
        let was_started = self.started;
        if !self.started && m.migration / m.capacity * 100.0 > STARTED_PCT {
            self.started = true;
        }
        let step = if self.reserver.reserve_pct().is_none() || was_started {
            self.reserver.step(m)
        } else {
            // Waiting for the migration: record what is seen, keep the value.
            crate::reserve::Step {
                avail_pct: (1.0 - m.outgoing / m.capacity) * 100.0,
                mig_pct: m.migration / m.capacity * 100.0,
                reserve_pct: self.reserver.reserve_pct().unwrap_or(0.0),
            }
        };
        self.history.push(HistoryPoint {
            t_ms,
            avail_pct: step.avail_pct,
            mig_pct: step.mig_pct,
            reserve_pct: step.reserve_pct,
            link_pct: None,
        });
        if self.history.len() > MAX_HISTORY {
            // Keep every other point of the older half.
            let half = self.history.len() / 2;
            let mut i = 0;
            self.history.retain(|_| {
                i += 1;
                i > half || i % 2 == 1
            });
        }
    }

    /// The migration rate Algorithm 1 sees: the hypervisor's report while it
    /// is at most two periods old, else what the switch's flow counters show.
    pub fn migration_bps(&self, on_switch: f64, now_ms: u64, period_ms: u64) -> f64 {
        match self.reported_migration {
            Some((t, bps)) if now_ms.saturating_sub(t) <= 2 * period_ms => bps,
            _ => on_switch,
        }
    }

    /// The source's reservation in bit/s.
    pub fn source_bps(&self, source_capacity: f64) -> f64 {
        self.reserve_pct().unwrap_or(0.0) / 100.0 * source_capacity
    }

    fn ports(&self) -> MigrationPorts {
        match self.request.migration_port {
            Some(p) => MigrationPorts::Exact(p),
            None => MigrationPorts::LibvirtRange,
        }
    }

    /// The migration flows: source to destination (and back, with an exact
    /// port), and with intermediaries source to each intermediary and each
    /// intermediary to the destination.
    pub fn flows(
        &self,
        hosts: &BTreeMap<String, HostInfo>,
    ) -> Vec<(String, String, MigrationMatch)> {
        let addr = |n: &str| hosts.get(n).and_then(|h| h.address);
        let ports = self.ports();
        let r = &self.request;
        let store = r.store_port.unwrap_or(DEFAULT_STORE_PORT);
        let mut pairs = vec![(r.source.clone(), r.destination.clone(), ports)];
        // With its own port the way back is its own too: the destination's
        // acknowledgements and, in post-copy, its page requests (QEMU's
        // return path, on the same connection).
        if let MigrationPorts::Exact(p) = ports {
            pairs.push((
                r.destination.clone(),
                r.source.clone(),
                MigrationPorts::FromPort(p),
            ));
        }
        // A disk copy goes straight to the destination's NBD server (also
        // when the memory goes through intermediaries), and its replies back.
        if let Some(p) = r.disk_port {
            pairs.push((
                r.source.clone(),
                r.destination.clone(),
                MigrationPorts::Exact(p),
            ));
            pairs.push((
                r.destination.clone(),
                r.source.clone(),
                MigrationPorts::FromPort(p),
            ));
        }
        for i in &r.intermediaries {
            pairs.push((r.source.clone(), i.clone(), MigrationPorts::Exact(store)));
            pairs.push((
                i.clone(),
                r.destination.clone(),
                MigrationPorts::FromPort(store),
            ));
        }
        pairs
            .into_iter()
            .filter_map(|(a, b, ports)| {
                let m = MigrationMatch {
                    src: addr(&a)?,
                    dst: addr(&b)?,
                    ports,
                };
                Some((a, b, m))
            })
            .collect()
    }

    /// What the destination can reserve: the source's reservation, limited to
    /// `max_reserve` of its own capacity. Returns (reserved, shortfall) in bit/s.
    pub fn destination_bps(&self, hosts: &BTreeMap<String, HostInfo>) -> (f64, f64) {
        let src = hosts
            .get(&self.request.source)
            .map_or(0.0, |h| h.capacity_bps);
        let dst = hosts
            .get(&self.request.destination)
            .map_or(0.0, |h| h.capacity_bps);
        let want = self.source_bps(src);
        let can = match self.destination_share_bps {
            Some(share) => want.min(share),
            None => want.min(dst * self.params().max_reserve / 100.0),
        };
        (can, (want - can).max(0.0))
    }
}

/// The legs of every reservation that touch `host`.
pub fn legs_for_host<'a>(
    host: &str,
    reservations: impl IntoIterator<Item = &'a Reservation>,
    hosts: &BTreeMap<String, HostInfo>,
) -> Vec<Leg> {
    let mut legs = Vec::new();
    for r in reservations {
        if r.reserve_pct().is_none() {
            continue; // not measured yet: nothing to enforce
        }
        let req = &r.request;
        let cap = |n: &str| hosts.get(n).map_or(0.0, |h| h.capacity_bps);
        let source_bps = r.source_bps(cap(&req.source));
        let (role, reserve_bps) = if req.source == host {
            (Role::Source, source_bps)
        } else if req.destination == host {
            (Role::Destination, r.destination_bps(hosts).0)
        } else if req.intermediaries.iter().any(|i| i == host) {
            let k = req.intermediaries.len() as f64;
            (
                Role::Intermediary,
                (source_bps / k).min(cap(host) * r.params().max_reserve / 100.0),
            )
        } else {
            continue;
        };
        let flows = r
            .flows(hosts)
            .into_iter()
            .filter(|(a, b, _)| a == host || b == host)
            .map(|(_, _, m)| m)
            .collect();
        legs.push(Leg {
            reservation: r.id,
            role,
            reserve_bps,
            flows,
        });
    }
    legs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> BTreeMap<String, HostInfo> {
        let mut h = BTreeMap::new();
        for (i, (name, cap)) in [("s", 100e6), ("d", 50e6), ("i1", 100e6), ("i2", 100e6)]
            .iter()
            .enumerate()
        {
            h.insert(
                name.to_string(),
                HostInfo {
                    address: Some(Ipv4Addr::new(10, 0, 0, i as u8 + 1)),
                    capacity_bps: *cap,
                },
            );
        }
        h.insert(
            "noaddr".into(),
            HostInfo {
                address: None,
                capacity_bps: 1e6,
            },
        );
        h
    }

    fn req() -> ReservationRequest {
        ReservationRequest {
            source: "s".into(),
            destination: "d".into(),
            intermediaries: vec![],
            urgency: 75.0,
            threshold: 10.0,
            max_reserve: None,
            migration_port: None,
            store_port: None,
            disk_port: None,
        }
    }

    #[test]
    fn a_fresh_hypervisor_report_wins_over_the_switch() {
        let mut r = Reservation::new(1, req(), Params::new(75.0, 10.0, 95.0).unwrap());
        assert_eq!(r.migration_bps(5e6, 1000, 1000), 5e6);
        r.reported_migration = Some((1000, 70e6));
        assert_eq!(r.migration_bps(5e6, 2500, 1000), 70e6);
        assert_eq!(r.migration_bps(5e6, 3001, 1000), 5e6, "stale report");
    }

    fn m(out: f64, mig: f64) -> Measurement {
        Measurement {
            capacity: 100e6,
            outgoing: out * 1e6,
            migration: mig * 1e6,
        }
    }

    #[test]
    fn validation_names_the_field() {
        let h = hosts();
        assert_eq!(req().validate(&h).unwrap().max_reserve, DEFAULT_MAX_RESERVE);
        let cases: Vec<(ReservationRequest, &str)> = vec![
            (
                ReservationRequest {
                    urgency: 120.0,
                    ..req()
                },
                "urgency",
            ),
            (
                ReservationRequest {
                    threshold: -1.0,
                    ..req()
                },
                "threshold",
            ),
            (
                ReservationRequest {
                    max_reserve: Some(101.0),
                    ..req()
                },
                "max_reserve",
            ),
            (
                ReservationRequest {
                    source: "x".into(),
                    ..req()
                },
                "source: unknown host",
            ),
            (
                ReservationRequest {
                    destination: "s".into(),
                    ..req()
                },
                "destination: the destination is the source",
            ),
            (
                ReservationRequest {
                    destination: "noaddr".into(),
                    ..req()
                },
                "destination: host \"noaddr\" has no `address`",
            ),
            (
                ReservationRequest {
                    intermediaries: vec!["i1".into(), "i1".into()],
                    ..req()
                },
                "listed twice",
            ),
            (
                ReservationRequest {
                    intermediaries: vec!["d".into()],
                    ..req()
                },
                "intermediaries",
            ),
            (
                ReservationRequest {
                    migration_port: Some(0),
                    ..req()
                },
                "migration_port",
            ),
        ];
        for (r, needle) in cases {
            let e = r.validate(&h).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should contain {needle}");
        }
    }

    #[test]
    fn keeps_initial_value_until_the_migration_starts() {
        let mut r = Reservation::new(1, req(), req().validate(&hosts()).unwrap());
        r.tick(0, &m(70.0, 0.0));
        assert_eq!(r.reserve_pct(), Some(75.0));
        // The link empties but nothing migrates yet: stays 75 (Algorithm 1
        // would otherwise add the room).
        r.tick(1000, &m(10.0, 0.0));
        assert_eq!(r.reserve_pct(), Some(75.0));
        assert!(!r.started);
        // The migration appears: that period still keeps the value.
        r.tick(2000, &m(90.0, 20.0));
        assert!(r.started);
        assert_eq!(r.reserve_pct(), Some(75.0));
        // From the next period the loop runs: out 90 -> avail 10, not > 10;
        // 75 - 60 = 15 > 10 -> released to 60.
        r.tick(3000, &m(90.0, 60.0));
        assert!((r.reserve_pct().unwrap() - 60.0).abs() < 1e-9);
        assert_eq!(r.history.len(), 4);
    }

    #[test]
    fn history_is_bounded_and_keeps_its_ends() {
        let mut r = Reservation::new(1, req(), req().validate(&hosts()).unwrap());
        for t in 0..(MAX_HISTORY as u64 * 3) {
            r.tick(t, &m(50.0, 0.0));
        }
        assert!(r.history.len() <= MAX_HISTORY + 1);
        assert_eq!(r.history[0].t_ms, 0, "the first point is kept");
        assert_eq!(r.history.last().unwrap().t_ms, MAX_HISTORY as u64 * 3 - 1);
    }

    #[test]
    fn legs_per_role() {
        let h = hosts();
        let mut r = Reservation::new(
            7,
            ReservationRequest {
                intermediaries: vec!["i1".into(), "i2".into()],
                ..req()
            },
            req().validate(&h).unwrap(),
        );
        assert!(
            legs_for_host("s", [&r], &h).is_empty(),
            "nothing before measurement 0"
        );
        r.tick(0, &m(70.0, 0.0)); // 75% of 100 Mbit/s
        let s = legs_for_host("s", [&r], &h);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].role, s[0].reserve_bps), (Role::Source, 75e6));
        assert_eq!(s[0].flows.len(), 3, "to d, i1 and i2");
        // The destination has 50 Mbit/s: at most 95% of it, the rest is a shortfall.
        let d = legs_for_host("d", [&r], &h);
        assert_eq!(d[0].role, Role::Destination);
        assert!((d[0].reserve_bps - 47.5e6).abs() < 1.0);
        let (_, short) = r.destination_bps(&h);
        assert!((short - 27.5e6).abs() < 1.0);
        assert_eq!(d[0].flows.len(), 3, "from s, i1 and i2");
        let i = legs_for_host("i1", [&r], &h);
        assert_eq!((i[0].role, i[0].reserve_bps), (Role::Intermediary, 37.5e6));
        assert_eq!(i[0].flows.len(), 2);
        assert!(legs_for_host("noaddr", [&r], &h).is_empty());
    }

    #[test]
    fn exact_port_when_known() {
        let h = hosts();
        let r = Reservation::new(
            1,
            ReservationRequest {
                migration_port: Some(49200),
                ..req()
            },
            req().validate(&h).unwrap(),
        );
        let f = r.flows(&h);
        assert_eq!(f.len(), 2, "there and back");
        assert_eq!((f[0].0.as_str(), f[0].1.as_str()), ("s", "d"));
        assert_eq!(f[0].2.ports, MigrationPorts::Exact(49200));
        assert_eq!((f[1].0.as_str(), f[1].1.as_str()), ("d", "s"));
        assert_eq!(f[1].2.ports, MigrationPorts::FromPort(49200));
    }

    #[test]
    fn store_legs_match_the_store_port_both_ways() {
        let h = hosts();
        let r = Reservation::new(
            1,
            ReservationRequest {
                intermediaries: vec!["i1".into()],
                store_port: Some(6380),
                disk_port: None,
                ..req()
            },
            req().validate(&h).unwrap(),
        );
        let f = r.flows(&h);
        let ports: Vec<_> = f
            .iter()
            .map(|(a, b, m)| (a.as_str(), b.as_str(), m.ports))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("s", "d", MigrationPorts::LibvirtRange),
                ("s", "i1", MigrationPorts::Exact(6380)),
                ("i1", "d", MigrationPorts::FromPort(6380)),
            ]
        );
        let m = f[2].2.to_match();
        assert!(format!("{m:?}").contains("TcpSrc"), "{m:?}");
    }
}
