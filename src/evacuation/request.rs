//! `POST /v1/evacuations`: what a cloud manager asks for, and its checks.
//! Pure: the caller supplies what it knows of the hosts and the source's VMs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::converge::{OnStall, DEFAULT_STALL_ITERATIONS, QEMU_DEFAULT_DOWNTIME_MS};
use crate::order::Mode;
use crate::reserve::{Params, DEFAULT_MAX_RESERVE};

/// Empty `source` onto `destination`; or several sources (`sources`) onto
/// several destinations (`destinations`), each VM placed on a destination
/// with room ([`crate::place`]), one evacuation per source running at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvacuationRequest {
    /// The host to empty (or give `sources`).
    #[serde(default)]
    pub source: String,
    /// Where its VMs go (or give `destinations`; with both, `destination`
    /// must be one of them).
    #[serde(default)]
    pub destination: String,
    /// Several hosts to empty at once (a rack, a site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// Several hosts to receive them: each VM goes to one with room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<String>>,
    /// Where each VM goes, when there are several destinations: set by
    /// solive's placement; entries given in the request are kept (each
    /// must name a VM to move and one of the destinations).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placement: BTreeMap<String, String>,
    /// The VMs to move; every VM on the source when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vms: Option<Vec<String>>,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Algorithm 1's urgency, percent.
    #[serde(default = "default_urgency")]
    pub urgency: f64,
    /// Algorithm 1's threshold, percent.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// `"auto"` (solive's order, paper section IV), `"predict"` (the order
    /// the model says ends first, or saves most by `deadline_s`:
    /// [`crate::predict::search`]) or the VMs' names in the order to
    /// migrate them.
    #[serde(default)]
    pub order: OrderSpec,
    /// How many migrations run at once: `"auto"` (the feedback controller,
    /// [`super::concurrency`]) or a number that pins it. Absent: `"auto"`,
    /// unless `max_parallel` gives a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// The older name of a pinned `concurrency`, still accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// The weight of the total migration time against the mean individual
    /// time in the evacuation's score ([`super::metric`]), from 0 to 1.
    #[serde(default = "default_score_weight")]
    pub score_weight: f64,
    /// TCP connections per migration (libvirt's parallel migration, QEMU's
    /// multifd channels); absent: one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_connections: Option<u32>,
    /// B of the ordering rules, percent of C.
    #[serde(default = "default_balance")]
    pub balance_pct: f64,
    /// Reserve bandwidth for each migration (Algorithm 1). Without, the
    /// migrations run capped only at the source's capacity and compete with
    /// the VMs' traffic: the baseline of the paper's comparison.
    #[serde(default = "default_reserve")]
    pub reserve: bool,
    /// Migrate through these hosts' stores (scatter-gather); `[]`: never;
    /// absent: through every host with a store when the destination cannot
    /// take the source's reservation (see `[scatter] shortfall_pct`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediaries: Option<Vec<String>>,
    /// What to do with a pre-copy migration that stops converging (see
    /// [`super::converge`]).
    #[serde(default)]
    pub on_stall: OnStall,
    /// Passes without progress before a pre-copy migration counts as stalled.
    #[serde(default = "default_stall_iterations")]
    pub stall_iterations: u64,
    /// The longest downtime `on_stall: "downtime"` may allow, ms.
    #[serde(default = "default_max_downtime")]
    pub max_downtime_ms: u64,
    /// Plan to move the most priority weight within this many seconds of
    /// the start ([`crate::predict`]); the record says up front which VMs
    /// the model says will not make it, and at the end which did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_s: Option<f64>,
    /// VMs' weights for the deadline, 1 to 1000 (absent VMs: 1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub priorities: BTreeMap<String, u32>,
    /// What happens at the deadline: `continue` (default) or `stop`.
    #[serde(default, skip_serializing_if = "is_continue")]
    pub on_deadline: OnDeadline,
}

/// What happens when the deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDeadline {
    /// Go on with the rest as planned.
    #[default]
    Continue,
    /// Start nothing more: the VMs not started stay where they are. A
    /// migration running at the deadline is finished, not aborted: its
    /// bytes are sent already, an abort would leave the VM on the site
    /// being evacuated, and an operator who wants it stopped cancels.
    Stop,
}

fn is_continue(o: &OnDeadline) -> bool {
    *o == OnDeadline::Continue
}

fn default_stall_iterations() -> u64 {
    DEFAULT_STALL_ITERATIONS
}

/// Two seconds: long enough for a working set of a few MiB over a slow
/// link, short enough that TCP sessions to the guest survive the pause.
fn default_max_downtime() -> u64 {
    DEFAULT_MAX_DOWNTIME_MS
}

/// `max_downtime_ms` when the request does not give one.
pub const DEFAULT_MAX_DOWNTIME_MS: u64 = 2000;

/// Bounds for the two convergence settings: beyond them the "live" in live
/// migration is gone, or the stall is never noticed.
pub const MAX_DOWNTIME_MS: u64 = 60_000;
pub const MAX_STALL_ITERATIONS: u64 = 1000;

fn default_reserve() -> bool {
    true
}

/// `"auto"` or an explicit list. Untagged so both JSON forms are accepted;
/// [`EvacuationRequest::validate`] checks the string is `auto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OrderSpec {
    Named(String),
    Explicit(Vec<String>),
}

impl OrderSpec {
    /// Whether the model chooses the order.
    pub fn by_prediction(&self) -> bool {
        matches!(self, OrderSpec::Named(s) if s == "predict")
    }
}

impl Default for OrderSpec {
    fn default() -> Self {
        OrderSpec::Named("auto".into())
    }
}

fn default_mode() -> Mode {
    Mode::Precopy
}
fn default_urgency() -> f64 {
    50.0
}
fn default_threshold() -> f64 {
    10.0
}
fn default_score_weight() -> f64 {
    super::metric::DEFAULT_WEIGHT
}
fn default_balance() -> f64 {
    crate::order::DEFAULT_BALANCE_PCT
}

/// More at once would only split the same uplink further.
pub const MAX_PARALLEL: u32 = 16;

/// More connections than this per migration only add CPU work (each multifd
/// channel is a thread on both sides).
pub const MAX_CONNECTIONS: u32 = 16;

/// How many migrations run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Chosen and adapted by the feedback controller.
    #[default]
    Auto,
    /// Pinned.
    Fixed(u32),
}

impl Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Concurrency::Auto => s.serialize_str("auto"),
            Concurrency::Fixed(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Number(u64),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("concurrency must be \"auto\" or a number"))?
        {
            Raw::Name(s) if s == "auto" => Ok(Concurrency::Auto),
            Raw::Name(s) => Err(serde::de::Error::custom(format!(
                "concurrency must be \"auto\" or a number, not {s:?}"
            ))),
            // Range checked by `check`, so the error names the field.
            Raw::Number(n) => Ok(Concurrency::Fixed(n.min(u32::MAX as u64) as u32)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{field}: unknown host {name:?}")]
    UnknownHost { field: &'static str, name: String },
    #[error("vms: {name:?} is not a VM on {host}")]
    UnknownVm { host: String, name: String },
    #[error("source: {0} has no VMs to evacuate")]
    NoVms(String),
}

fn invalid(field: &'static str, message: impl Into<String>) -> RequestError {
    RequestError::Invalid {
        field,
        message: message.into(),
    }
}

/// Walks the request's `vms` in order: not empty, each name once, each
/// accepted by `known` (which says where it is, or why it is not a VM to
/// move).
pub fn each_vm_once(
    list: &[String],
    mut known: impl FnMut(&String) -> Result<(), RequestError>,
) -> Result<(), RequestError> {
    if list.is_empty() {
        return Err(invalid("vms", "the list is empty"));
    }
    for (i, name) in list.iter().enumerate() {
        if list[..i].contains(name) {
            return Err(invalid("vms", format!("{name:?} is listed twice")));
        }
        known(name)?;
    }
    Ok(())
}

/// The hosts of a request ([`EvacuationRequest::sites`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Sites {
    pub sources: Vec<String>,
    pub destinations: Vec<String>,
}

/// What validation settles: the parameters and the VMs to move.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub params: Params,
    pub vms: Vec<String>,
    /// The explicit order, if one was given.
    pub order: Option<Vec<String>>,
}

impl EvacuationRequest {
    /// The checks that need no hypervisor: parameters, hosts (`hosts` are
    /// the hosts an evacuation can use), limits.
    pub fn check(&self, hosts: &BTreeSet<String>) -> Result<Params, RequestError> {
        let params =
            Params::new(self.urgency, self.threshold, DEFAULT_MAX_RESERVE).map_err(|e| {
                let crate::reserve::algorithm::ParamError::OutOfRange { name, .. } = &e;
                invalid(name, e.to_string())
            })?;
        self.sites(hosts)?;
        self.concurrency()?;
        if let Some(n) = self.parallel_connections {
            if !(1..=MAX_CONNECTIONS).contains(&n) {
                return Err(invalid(
                    "parallel_connections",
                    format!("must be from 1 to {MAX_CONNECTIONS}, not {n}"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.score_weight) {
            return Err(invalid(
                "score_weight",
                format!("must be from 0 to 1, not {}", self.score_weight),
            ));
        }
        if !(QEMU_DEFAULT_DOWNTIME_MS..=MAX_DOWNTIME_MS).contains(&self.max_downtime_ms) {
            return Err(invalid(
                "max_downtime_ms",
                format!(
                    "must be from {QEMU_DEFAULT_DOWNTIME_MS} to {MAX_DOWNTIME_MS}, not {}",
                    self.max_downtime_ms
                ),
            ));
        }
        if !(1..=MAX_STALL_ITERATIONS).contains(&self.stall_iterations) {
            return Err(invalid(
                "stall_iterations",
                format!(
                    "must be from 1 to {MAX_STALL_ITERATIONS}, not {}",
                    self.stall_iterations
                ),
            ));
        }
        if !(0.0..=100.0).contains(&self.balance_pct) {
            return Err(invalid(
                "balance_pct",
                format!("must be from 0 to 100, not {}", self.balance_pct),
            ));
        }
        if let Some(d) = self.deadline_s {
            if !(d.is_finite() && d > 0.0) {
                return Err(invalid(
                    "deadline_s",
                    format!("must be a positive number of seconds from the start, not {d}"),
                ));
            }
        }
        for (vm, p) in &self.priorities {
            if !(1..=crate::order::MAX_PRIORITY).contains(p) {
                return Err(invalid(
                    "priorities",
                    format!(
                        "{vm:?}: must be from 1 to {}, not {p}",
                        crate::order::MAX_PRIORITY
                    ),
                ));
            }
        }
        Ok(params)
    }

    /// The sources and the destinations, from `source`/`sources` and
    /// `destination`/`destinations`, each a known host, none twice, none
    /// both; every `placement` entry pointing at one of the destinations.
    pub fn sites(&self, hosts: &BTreeSet<String>) -> Result<Sites, RequestError> {
        let list = |field: &'static str,
                    one: &String,
                    many: &Option<Vec<String>>|
         -> Result<Vec<String>, RequestError> {
            let names = match (one.is_empty(), many) {
                (true, None) => return Err(invalid(field, "is missing")),
                (false, None) => vec![one.clone()],
                (_, Some(v)) if v.is_empty() => return Err(invalid(field, "the list is empty")),
                (_, Some(v)) => v.clone(),
            };
            for (i, name) in names.iter().enumerate() {
                if names[..i].contains(name) {
                    return Err(invalid(field, format!("{name:?} is listed twice")));
                }
                if !hosts.contains(name) {
                    return Err(RequestError::UnknownHost {
                        field,
                        name: name.clone(),
                    });
                }
            }
            Ok(names)
        };
        let sources = list("source", &self.source, &self.sources)?;
        let destinations = list("destination", &self.destination, &self.destinations)?;
        if self.sources.is_some() && !self.source.is_empty() && !sources.contains(&self.source) {
            return Err(invalid(
                "source",
                format!("{:?} is not one of the sources", self.source),
            ));
        }
        if self.destinations.is_some()
            && !self.destination.is_empty()
            && !destinations.contains(&self.destination)
        {
            return Err(invalid(
                "destination",
                format!("{:?} is not one of the destinations", self.destination),
            ));
        }
        if let Some(both) = destinations.iter().find(|d| sources.contains(d)) {
            if self.sources.is_none() && self.destinations.is_none() {
                return Err(invalid("destination", "the destination is the source"));
            }
            return Err(invalid(
                "destination",
                format!("{both:?} is a source: a host cannot be emptied and filled at once"),
            ));
        }
        for (vm, d) in &self.placement {
            if !destinations.contains(d) {
                return Err(invalid(
                    "placement",
                    format!("{vm:?}: {d:?} is not one of the destinations"),
                ));
            }
        }
        Ok(Sites {
            sources,
            destinations,
        })
    }

    /// One request per source, for the VMs placed (`placement`: VM to
    /// destination, every VM of `vms_by_source`): each names its source,
    /// its VMs, the destinations they go to (the first as `destination`)
    /// and its part of the placement, priorities and explicit order.
    pub fn per_source(
        &self,
        vms_by_source: &BTreeMap<String, Vec<String>>,
        placement: &BTreeMap<String, String>,
    ) -> Vec<EvacuationRequest> {
        vms_by_source
            .iter()
            .filter(|(_, vms)| !vms.is_empty())
            .map(|(source, vms)| {
                let mut dests: Vec<String> = Vec::new();
                for vm in vms {
                    if let Some(d) = placement.get(vm).filter(|d| !dests.contains(d)) {
                        dests.push(d.clone());
                    }
                }
                let mut r = self.clone();
                r.source = source.clone();
                r.sources = None;
                r.destination = dests.first().cloned().unwrap_or_default();
                r.destinations = (dests.len() > 1).then_some(dests.clone());
                r.placement = if dests.len() > 1 {
                    vms.iter()
                        .filter_map(|v| placement.get(v).map(|d| (v.clone(), d.clone())))
                        .collect()
                } else {
                    BTreeMap::new()
                };
                r.vms = Some(vms.clone());
                r.priorities.retain(|vm, _| vms.contains(vm));
                if let OrderSpec::Explicit(list) = &self.order {
                    r.order = OrderSpec::Explicit(
                        list.iter().filter(|v| vms.contains(v)).cloned().collect(),
                    );
                }
                r
            })
            .collect()
    }

    /// Where `vm` goes: its placement, else `destination`.
    pub fn destination_of(&self, vm: &str) -> &str {
        self.placement.get(vm).map_or(&self.destination, |d| d)
    }

    /// Whether this request needs the placement (several sources or
    /// several destinations).
    pub fn is_site(&self) -> bool {
        self.sources.as_ref().is_some_and(|s| s.len() > 1)
            || self.destinations.as_ref().is_some_and(|d| d.len() > 1)
    }

    /// The concurrency asked for: `concurrency`, else `max_parallel`, else
    /// auto; a number must be from 1 to [`MAX_PARALLEL`].
    pub fn concurrency(&self) -> Result<Concurrency, RequestError> {
        let c = match (self.concurrency, self.max_parallel) {
            (Some(c), None) => c,
            (None, Some(n)) => Concurrency::Fixed(n),
            (None, None) => Concurrency::Auto,
            (Some(c), Some(n)) if c == Concurrency::Fixed(n) => c,
            (Some(_), Some(_)) => return Err(invalid(
                "max_parallel",
                "is the older name of concurrency; give one of them, or the same number in both",
            )),
        };
        let field = if self.concurrency.is_some() {
            "concurrency"
        } else {
            "max_parallel"
        };
        match c {
            Concurrency::Fixed(n) if !(1..=MAX_PARALLEL).contains(&n) => Err(invalid(
                field,
                format!("must be \"auto\" or from 1 to {MAX_PARALLEL}, not {n}"),
            )),
            c => Ok(c),
        }
    }

    /// Every check: [`Self::check`], then the VMs against `on_source`, the
    /// VMs running on the source now.
    pub fn validate(
        &self,
        hosts: &BTreeSet<String>,
        on_source: &[String],
    ) -> Result<Validated, RequestError> {
        let params = self.check(hosts)?;
        self.select(params, on_source)
    }

    /// Every VM given a priority is one of `vms`, the VMs to move.
    pub fn check_priorities(&self, vms: &[String]) -> Result<(), RequestError> {
        match self.priorities.keys().find(|v| !vms.contains(v)) {
            Some(vm) => Err(invalid(
                "priorities",
                format!("{vm:?} is not one of the VMs to move"),
            )),
            None => Ok(()),
        }
    }

    /// After [`Self::check`]: the VMs to move (from `on_source`, the VMs
    /// running on the source now) and the explicit order, if any.
    pub fn select(&self, params: Params, on_source: &[String]) -> Result<Validated, RequestError> {
        let vms = match &self.vms {
            None => on_source.to_vec(),
            Some(list) => {
                each_vm_once(list, |name| {
                    if on_source.contains(name) {
                        Ok(())
                    } else {
                        Err(RequestError::UnknownVm {
                            host: self.source.clone(),
                            name: name.clone(),
                        })
                    }
                })?;
                list.clone()
            }
        };
        if vms.is_empty() {
            return Err(RequestError::NoVms(self.source.clone()));
        }
        self.check_priorities(&vms)?;
        let order = match &self.order {
            OrderSpec::Named(s) if s == "auto" || s == "predict" => None,
            OrderSpec::Named(s) => {
                return Err(invalid(
                    "order",
                    format!("must be \"auto\", \"predict\" or a list of VM names, not {s:?}"),
                ))
            }
            OrderSpec::Explicit(list) => {
                let a: BTreeSet<&String> = list.iter().collect();
                let b: BTreeSet<&String> = vms.iter().collect();
                if a != b || list.len() != vms.len() {
                    return Err(invalid(
                        "order",
                        format!("must name each VM to move exactly once: {vms:?}"),
                    ));
                }
                Some(list.clone())
            }
        };
        Ok(Validated { params, vms, order })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> BTreeSet<String> {
        ["h1", "h2"].iter().map(|s| s.to_string()).collect()
    }

    fn on_source() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn req(json: &str) -> Result<EvacuationRequest, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn check(json: &str) -> Result<Validated, RequestError> {
        req(json).unwrap().validate(&hosts(), &on_source())
    }

    #[test]
    fn defaults_take_every_vm_in_auto_order() {
        let v = check(r#"{"source":"h1","destination":"h2"}"#).unwrap();
        assert_eq!(v.vms, on_source());
        assert_eq!(v.order, None);
        assert_eq!(v.params.urgency, 50.0);
        let r = req(r#"{"source":"h1","destination":"h2"}"#).unwrap();
        assert_eq!(r.concurrency(), Ok(Concurrency::Auto));
        let r = req(r#"{"source":"h1","destination":"h2","max_parallel":3}"#).unwrap();
        assert_eq!(r.concurrency(), Ok(Concurrency::Fixed(3)));
        let r = req(r#"{"source":"h1","destination":"h2","concurrency":"auto"}"#).unwrap();
        assert_eq!(r.concurrency(), Ok(Concurrency::Auto));
        assert_eq!(serde_json::to_value(Concurrency::Fixed(2)).unwrap(), 2);
        let v =
            check(r#"{"source":"h1","destination":"h2","vms":["b"],"order":["b"],"urgency":95}"#)
                .unwrap();
        assert_eq!(v.order, Some(vec!["b".to_string()]));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"source":"h9","destination":"h2"}"#,
                "source: unknown host \"h9\"",
            ),
            (
                r#"{"source":"h1","destination":"h1"}"#,
                "destination: the destination is the source",
            ),
            (
                r#"{"source":"h1","destination":"h2","vms":["zz"]}"#,
                "vms: \"zz\" is not a VM on h1",
            ),
            (
                r#"{"source":"h1","destination":"h2","vms":["a","a"]}"#,
                "vms: \"a\" is listed twice",
            ),
            (
                r#"{"source":"h1","destination":"h2","vms":[]}"#,
                "vms: the list is empty",
            ),
            (
                r#"{"source":"h1","destination":"h2","urgency":101}"#,
                "urgency",
            ),
            (
                r#"{"source":"h1","destination":"h2","max_parallel":0}"#,
                "max_parallel: must be \"auto\" or from 1 to 16, not 0",
            ),
            (
                r#"{"source":"h1","destination":"h2","concurrency":17}"#,
                "concurrency: must be \"auto\" or from 1 to 16, not 17",
            ),
            (
                r#"{"source":"h1","destination":"h2","concurrency":2,"max_parallel":3}"#,
                "max_parallel: is the older name",
            ),
            (
                r#"{"source":"h1","destination":"h2","parallel_connections":0}"#,
                "parallel_connections: must be from 1 to 16, not 0",
            ),
            (
                r#"{"source":"h1","destination":"h2","score_weight":1.5}"#,
                "score_weight: must be from 0 to 1",
            ),
            (
                r#"{"source":"h1","destination":"h2","order":"fast"}"#,
                "order: must be \"auto\"",
            ),
            (
                r#"{"source":"h1","destination":"h2","order":["a"]}"#,
                "order: must name each VM",
            ),
            (
                r#"{"source":"h1","destination":"h2","balance_pct":-1}"#,
                "balance_pct",
            ),
            (
                r#"{"source":"h1","destination":"h2","max_downtime_ms":100}"#,
                "max_downtime_ms: must be from 300 to 60000, not 100",
            ),
            (
                r#"{"source":"h1","destination":"h2","stall_iterations":0}"#,
                "stall_iterations: must be from 1",
            ),
        ];
        for (json, want) in cases {
            let e = check(json).unwrap_err().to_string();
            assert!(e.starts_with(want), "{json}: {e}");
        }
        let none = req(r#"{"source":"h1","destination":"h2"}"#)
            .unwrap()
            .validate(&hosts(), &[])
            .unwrap_err();
        assert_eq!(none, RequestError::NoVms("h1".into()));
        assert!(req(r#"{"source":"h1","destination":"h2","extra":1}"#).is_err());
        assert!(req(r#"{"source":"h1","destination":"h2","mode":"fast"}"#).is_err());
        assert!(req(r#"{"source":"h1","destination":"h2","on_stall":"wait"}"#).is_err());
        assert!(req(r#"{"source":"h1","destination":"h2","concurrency":"many"}"#).is_err());
        assert!(req(r#"{"source":"h1","destination":"h2","concurrency":-1}"#).is_err());
        let r = req(r#"{"source":"h1","destination":"h2","on_stall":"postcopy"}"#).unwrap();
        assert_eq!((r.on_stall, r.max_downtime_ms), (OnStall::Postcopy, 2000));
    }
}
