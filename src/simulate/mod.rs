//! `solive simulate`: an evacuation of a whole site in simulated time, with
//! the same placement, planner, model, Algorithm 1 and concurrency rules as
//! a real one, so an operator can ask what emptying 50 hosts would take, and
//! compare orders, concurrency and deadlines, without a testbed.
//!
//! - [`Site`]: the hosts (role, link, memory and vCPUs) and the VMs (the
//!   model's inputs), from a JSON description or a testbed topology
//!   ([`Site::from_topology`]), or generated ([`generate`]);
//! - [`Options`]: what an evacuation request says (order, concurrency,
//!   reservation, deadline, the stall remedy);
//! - [`simulate`]: places every source's VMs on the destinations
//!   ([`crate::place`]), orders each source's VMs (the paper's rules, or the
//!   model's search), runs the clock ([`engine`]) and returns a
//!   [`SimulationRecord`]: per VM the same [`VmRecord`] as a real evacuation
//!   (so `solive simulate --svg` draws it with the real report), the
//!   metrics, the concurrency course and what made the deadline.
//!
//! What it leaves out, on purpose: the fabric between hosts is
//! non-blocking; the hosts' CPU shows only as their `push_bps`; the
//! controller's reaction times (a cap applied a period late) are not
//! modelled; scatter-gather is not simulated.

pub mod engine;
pub mod generate;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::controller::reservation::HistoryPoint;
use crate::evacuation::concurrency::Decision;
use crate::evacuation::converge::OnStall;
use crate::evacuation::metric::{self, Metrics};
use crate::evacuation::record::{ConcurrencyRecord, VmRecord, VmState};
use crate::evacuation::request::Concurrency;
use crate::order::{self, Mode, PlanInput, VmLoad, MAX_PRIORITY};
use crate::place::{self, Assignment, PlaceError};
use crate::predict::model::{Outcome, Params};
use crate::predict::schedule::Scenario;
use crate::topology::{Role, Topology, Workload};

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A field of the site or the options, named.
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error(transparent)]
    Place(#[from] PlaceError),
    #[error(transparent)]
    Plan(#[from] crate::order::PlanError),
}

fn field(field: impl Into<String>, message: impl Into<String>) -> SimulateError {
    SimulateError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// A site to evacuate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
    pub hosts: Vec<SiteHost>,
    pub vms: Vec<SiteVm>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteHost {
    pub name: String,
    /// `source` (emptied), `destination` (receives), or `other`.
    #[serde(default)]
    pub role: Role,
    /// Its link, bit/s each way.
    pub capacity_bps: f64,
    /// What it can send in all, bit/s (absent: its link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_bps: Option<f64>,
    /// Its memory and vCPUs for guests (absent: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
}

/// A VM: where it runs and the model's inputs (as `POST /v1/plan` takes
/// them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteVm {
    pub name: String,
    pub host: String,
    pub memory_kib: u64,
    #[serde(default = "one")]
    pub vcpus: u32,
    pub non_zero_pages: u64,
    pub dirty_pages_per_sec: f64,
    /// The ceiling of its dirty set, KiB (its working set; absent: its
    /// memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_kib: Option<u64>,
    #[serde(default)]
    pub tx_bps: f64,
    #[serde(default)]
    pub rx_bps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Its local disks' allocated bytes, copied before its memory when it
    /// moves (0: no local disk, or shared storage).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_bytes: u64,
    /// What it writes to them, bytes/s (the copy chases these).
    #[serde(default, skip_serializing_if = "is_zero_f")]
    pub disk_write_bps: f64,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

fn is_zero_f(x: &f64) -> bool {
    *x == 0.0
}

fn one() -> u32 {
    1
}

/// How a testbed guest's non-zero memory is estimated from its topology:
/// the guest kernel and its boot leave this much beside the fill (a
/// 128 MiB guest filling 64 MiB measures 28,500 non-zero pages: 111 MiB)...
pub const TESTBED_BASE_MIB: u64 = 47;

/// ...and at least this much whatever the fill (96 MiB guests filling
/// 8 MiB send about 80 MB: `topologies/paper-8vm-link.toml`).
pub const TESTBED_BOOT_MIB: u64 = 75;

/// What the testbed's memory workload dirties, pages/s per MiB of its
/// working set (M rewriting 2 MiB measures 256 pages/s by QEMU's
/// dirty-rate sampling).
pub const TESTBED_DIRTY_PAGES_PER_MIB: f64 = 128.0;

impl Site {
    /// A testbed topology as a site: hosts by role, each guest's model
    /// inputs estimated from its workload (non-zero memory: its fill plus
    /// [`TESTBED_BASE_MIB`], at least [`TESTBED_BOOT_MIB`]; a memory workload dirties its working set at
    /// [`TESTBED_DIRTY_PAGES_PER_MIB`]; a network one sends or receives its
    /// `rate_mbps`). `push_bps`: what each host can send (the testbed's TCG
    /// guests: about 30e6), absent: its link.
    pub fn from_topology(t: &Topology, push_bps: Option<f64>) -> Site {
        let hosts = t
            .hosts
            .iter()
            .map(|h| SiteHost {
                name: h.name.clone(),
                role: h.role,
                capacity_bps: h.capacity_mbps as f64 * 1e6,
                push_bps,
                memory_mib: None,
                vcpus: None,
            })
            .collect();
        let vms = t
            .hosts
            .iter()
            .flat_map(|h| h.vms.iter().map(move |v| (h, v)))
            .map(|(h, v)| {
                let fill = v.fill_mib.unwrap_or(0);
                let non_zero_mib = (fill + TESTBED_BASE_MIB)
                    .max(TESTBED_BOOT_MIB)
                    .min(v.memory_mib);
                let rate = v.rate_mbps.unwrap_or(0.0) * 1e6;
                let ws = v.working_set_mib.filter(|_| v.workload == Workload::Memory);
                // A local disk: what the testbed writes before boot (its
                // allocation), and the disk workloads' average write rate.
                let local = v.disk_mib.filter(|_| !v.disk_shared);
                let disk_bytes = local.map_or(0, |size| v.disk_fill_mib.unwrap_or(size / 2) << 20);
                let disk_write_bps = match v.workload {
                    Workload::DiskSteady | Workload::DiskBurst if local.is_some() => {
                        v.write_mibps.unwrap_or(0.0) * 1_048_576.0
                    }
                    _ => 0.0,
                };
                SiteVm {
                    name: v.name.clone(),
                    host: h.name.clone(),
                    memory_kib: v.memory_mib * 1024,
                    vcpus: v.vcpus.unwrap_or(1),
                    non_zero_pages: non_zero_mib * 256,
                    dirty_pages_per_sec: ws.map_or(0.0, |w| w as f64 * TESTBED_DIRTY_PAGES_PER_MIB),
                    working_set_kib: ws.map(|w| w * 1024),
                    tx_bps: if v.workload == Workload::NetOut {
                        rate
                    } else {
                        0.0
                    },
                    rx_bps: if v.workload == Workload::NetIn {
                        rate
                    } else {
                        0.0
                    },
                    priority: None,
                    disk_bytes,
                    disk_write_bps,
                }
            })
            .collect();
        Site {
            name: t.name.clone(),
            hosts,
            vms,
        }
    }

    /// Checks names, references and values; each error names its field.
    pub fn validate(&self) -> Result<(), SimulateError> {
        let mut hosts = BTreeSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let at = |f: &str| format!("hosts[{i}].{f}");
            if !hosts.insert(h.name.as_str()) {
                return Err(field(
                    at("name"),
                    format!("host {:?} is listed twice", h.name),
                ));
            }
            for (f, v) in [
                ("capacity_bps", Some(h.capacity_bps)),
                ("push_bps", h.push_bps),
            ] {
                if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                    return Err(field(at(f), format!("must be a positive number, not {v}")));
                }
            }
        }
        if !self.hosts.iter().any(|h| h.role == Role::Source) {
            return Err(field("hosts", "no host has role \"source\""));
        }
        if !self.hosts.iter().any(|h| h.role == Role::Destination) {
            return Err(field("hosts", "no host has role \"destination\""));
        }
        let mut vms = BTreeSet::new();
        for (i, v) in self.vms.iter().enumerate() {
            let at = |f: &str| format!("vms[{i}].{f}");
            if !vms.insert(v.name.as_str()) {
                return Err(field(
                    at("name"),
                    format!("VM {:?} is listed twice", v.name),
                ));
            }
            if !hosts.contains(v.host.as_str()) {
                return Err(field(
                    at("host"),
                    format!("{:?} is not a host of the site", v.host),
                ));
            }
            for (f, x) in [
                ("dirty_pages_per_sec", v.dirty_pages_per_sec),
                ("tx_bps", v.tx_bps),
                ("rx_bps", v.rx_bps),
                ("disk_write_bps", v.disk_write_bps),
            ] {
                if !(x.is_finite() && x >= 0.0) {
                    return Err(field(at(f), format!("must be a number from 0, not {x}")));
                }
            }
            if v.memory_kib == 0 || v.non_zero_pages * 4 > v.memory_kib {
                return Err(field(
                    at("non_zero_pages"),
                    format!(
                        "{} pages do not fit in {} KiB of memory",
                        v.non_zero_pages, v.memory_kib
                    ),
                ));
            }
            if let Some(p) = v.priority.filter(|p| !(1..=MAX_PRIORITY).contains(p)) {
                return Err(field(
                    at("priority"),
                    format!("must be from 1 to {MAX_PRIORITY}, not {p}"),
                ));
            }
        }
        Ok(())
    }
}

/// How the orders are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderChoice {
    /// The paper's rules, per source.
    #[default]
    Rules,
    /// The model's search, per source ([`crate::predict::search`]).
    Predict,
}

/// What an evacuation request would say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub mode: Mode,
    pub order: OrderChoice,
    /// Per source: `auto` (the feedback controller) or pinned.
    pub concurrency: Concurrency,
    /// Algorithm 1's parameters; None: no reservation.
    pub reserve: Option<crate::reserve::Params>,
    pub on_stall: OnStall,
    pub max_downtime_ms: u64,
    /// Preparation before memory moves, s.
    pub startup_s: f64,
    pub deadline_s: Option<f64>,
    pub score_weight: f64,
    /// The controller's period, s.
    pub period_s: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Precopy,
            order: OrderChoice::Rules,
            concurrency: Concurrency::Auto,
            reserve: Some(crate::reserve::Params {
                urgency: 50.0,
                threshold: 10.0,
                max_reserve: crate::reserve::DEFAULT_MAX_RESERVE,
            }),
            on_stall: OnStall::Auto,
            max_downtime_ms: crate::evacuation::request::DEFAULT_MAX_DOWNTIME_MS,
            startup_s: Params::default().startup_s,
            deadline_s: None,
            score_weight: metric::DEFAULT_WEIGHT,
            period_s: 1.0,
        }
    }
}

/// The feedback controller's ceiling per source in a simulation.
pub const MAX_CONCURRENCY: u32 = crate::evacuation::request::MAX_PARALLEL;

/// A simulated evacuation, shaped like a real record where it can be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulationRecord {
    pub site: String,
    pub options: Options,
    /// Every VM's destination.
    pub placement: Vec<Assignment>,
    /// Per source: its order, concurrency course and uplink reservation.
    pub sources: Vec<SourceRecord>,
    /// Every VM moved, source by source in order.
    pub vms: Vec<SimVm>,
    pub total_migration_ms: Option<u64>,
    /// Until every source is empty.
    pub eviction_ms: Option<u64>,
    pub metrics: Option<Metrics>,
    /// All sources together: the limits and migrations running summed.
    pub concurrency: ConcurrencyRecord,
    /// VMs that never finish (a pre-copy that never converges) or stay
    /// (aborted).
    pub unfinished: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DeadlineOutcome>,
    /// Simulated seconds, clock steps.
    pub simulated_s: f64,
    pub steps: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub name: String,
    pub order: Vec<String>,
    pub concurrency: ConcurrencyRecord,
    /// Algorithm 1 on its uplink (with reservation), ms since the start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uplink: Vec<HistoryPoint>,
    /// With `"order": "predict"`: how much longer the rules' order takes
    /// by the model, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_gap_pct: Option<f64>,
}

/// One VM's simulated migration: the real record's fields, and its route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimVm {
    #[serde(flatten)]
    pub record: VmRecord,
    pub source: String,
    pub destination: String,
    pub outcome: Option<Outcome>,
    pub passes: u64,
}

/// What made the deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadlineOutcome {
    pub deadline_s: f64,
    pub saved_priority: u64,
    pub total_priority: u64,
    pub made: Vec<String>,
    pub late: Vec<String>,
    pub not_moved: Vec<String>,
}

/// Places, orders and runs the evacuation of every source of `site`.
pub fn simulate(site: &Site, opts: &Options) -> Result<SimulationRecord, SimulateError> {
    site.validate()?;
    check(opts)?;
    let host_ix: BTreeMap<&str, usize> = site
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect();
    let placement = place_site(site)?;
    let dest_of: BTreeMap<&str, usize> = placement
        .iter()
        .map(|a| (a.vm.as_str(), host_ix[a.destination.as_str()]))
        .collect();
    let params = Params {
        startup_s: opts.startup_s,
        max_downtime_ms: opts.max_downtime_ms,
        on_stall: crate::evacuation::converge::remedy(
            opts.on_stall,
            opts.deadline_s.is_some(),
            true,
        ),
        ..Params::default()
    };
    let inputs: Vec<_> = site.vms.iter().map(|v| load(v).model_input()).collect();
    let mut sources = Vec::new();
    let mut source_records = Vec::new();
    for (h, host) in site.hosts.iter().enumerate() {
        if host.role != Role::Source {
            continue;
        }
        let mine: Vec<usize> = (0..site.vms.len())
            .filter(|&i| site.vms[i].host == host.name)
            .collect();
        let (order, gap) = order_source(site, h, &mine, &dest_of, &params, opts)?;
        source_records.push(SourceRecord {
            name: host.name.clone(),
            order: order.iter().map(|&i| site.vms[i].name.clone()).collect(),
            concurrency: ConcurrencyRecord::new(opts.concurrency),
            uplink: Vec::new(),
            rules_gap_pct: gap,
        });
        sources.push(engine::Source {
            host: h,
            order: order
                .iter()
                .map(|&i| (i, dest_of[site.vms[i].name.as_str()]))
                .collect(),
        });
    }
    let input = engine::Input {
        hosts: site
            .hosts
            .iter()
            .map(|h| engine::Host {
                name: h.name.clone(),
                capacity_bps: h.capacity_bps,
                push_bps: h.push_bps.unwrap_or(h.capacity_bps),
            })
            .collect(),
        vms: inputs,
        at: site.vms.iter().map(|v| host_ix[v.host.as_str()]).collect(),
        sources,
        mode: opts.mode,
        params,
        bandwidth: engine::Bandwidth::of(opts.reserve),
        concurrency: opts.concurrency,
        max_concurrency: MAX_CONCURRENCY,
        period_s: opts.period_s,
        horizon_s: crate::order::HORIZON_S,
        running: Vec::new(),
    };
    let out = engine::run(&input);
    Ok(assemble(site, opts, placement, source_records, &input, out))
}

fn check(o: &Options) -> Result<(), SimulateError> {
    if let Some(d) = o.deadline_s.filter(|d| !(d.is_finite() && *d > 0.0)) {
        return Err(field(
            "deadline_s",
            format!("must be a positive number of seconds, not {d}"),
        ));
    }
    if !(o.startup_s.is_finite() && o.startup_s >= 0.0) {
        return Err(field(
            "startup_s",
            format!("must be a number of seconds from 0, not {}", o.startup_s),
        ));
    }
    if !(o.period_s.is_finite() && o.period_s >= 0.01) {
        return Err(field(
            "period_s",
            format!("must be at least 0.01 s, not {}", o.period_s),
        ));
    }
    if !(0.0..=1.0).contains(&o.score_weight) {
        return Err(field(
            "score_weight",
            format!("must be from 0 to 1, not {}", o.score_weight),
        ));
    }
    if let Concurrency::Fixed(n) = o.concurrency {
        if !(1..=MAX_CONCURRENCY).contains(&n) {
            return Err(field(
                "concurrency",
                format!("must be \"auto\" or from 1 to {MAX_CONCURRENCY}, not {n}"),
            ));
        }
    }
    Ok(())
}

/// A site VM as the plan and the model take it (what `POST /v1/plan`
/// takes): its dirty sets' ceiling is its working set when one is given.
fn load(v: &SiteVm) -> VmLoad {
    VmLoad {
        name: v.name.clone(),
        non_zero_pages: v.non_zero_pages,
        dirty_pages_per_sec: v.dirty_pages_per_sec,
        tx_bps: v.tx_bps,
        rx_bps: v.rx_bps,
        memory_kib: Some(order::dirty_ceiling_kib(v.memory_kib, v.working_set_kib)),
        priority: v.priority,
        disk_bytes: v.disk_bytes,
        disk_write_bps: v.disk_write_bps,
    }
}

/// Every source's VMs onto the destinations ([`crate::place`]), with what
/// the destinations hold already counted against their room.
pub fn place_site(site: &Site) -> Result<Vec<Assignment>, PlaceError> {
    let destinations: Vec<place::Destination> = site
        .hosts
        .iter()
        .filter(|h| h.role == Role::Destination)
        .map(|h| {
            let resident = site.vms.iter().filter(|v| v.host == h.name);
            let (mut mem, mut cpus, mut tx, mut rx) = (0u64, 0u32, 0.0, 0.0);
            for v in resident {
                mem += v.memory_kib.div_ceil(1024);
                cpus += v.vcpus;
                tx += v.tx_bps;
                rx += v.rx_bps;
            }
            place::Destination {
                name: h.name.clone(),
                free_memory_mib: h.memory_mib.map(|m| m.saturating_sub(mem)),
                free_vcpus: h.vcpus.map(|c| c.saturating_sub(cpus)),
                capacity_bps: h.capacity_bps,
                tx_bps: tx,
                rx_bps: rx,
            }
        })
        .collect();
    let sources: BTreeSet<&str> = site
        .hosts
        .iter()
        .filter(|h| h.role == Role::Source)
        .map(|h| h.name.as_str())
        .collect();
    let guests: Vec<place::Guest> = site
        .vms
        .iter()
        .filter(|v| sources.contains(v.host.as_str()))
        .map(|v| place::Guest {
            name: v.name.clone(),
            memory_mib: v.memory_kib.div_ceil(1024),
            vcpus: v.vcpus,
            tx_bps: v.tx_bps,
            rx_bps: v.rx_bps,
            bytes: v.non_zero_pages as f64 * 4096.0,
        })
        .collect();
    place::place(&guests, &destinations)
}

/// One source's order: the paper's rules on its uplink, or the model's
/// search on a one-pair scenario (its slowest destination's link); with
/// the search, how far the rules' order is from it.
fn order_source(
    site: &Site,
    h: usize,
    mine: &[usize],
    dest_of: &BTreeMap<&str, usize>,
    params: &Params,
    opts: &Options,
) -> Result<(Vec<usize>, Option<f64>), SimulateError> {
    let host = &site.hosts[h];
    let loads: Vec<VmLoad> = mine.iter().map(|&i| load(&site.vms[i])).collect();
    let input = PlanInput {
        capacity_bps: host.capacity_bps,
        vms: loads.clone(),
    };
    let plan = crate::order::plan(&input, opts.mode, crate::order::DEFAULT_BALANCE_PCT)?;
    let index = |name: &String| mine.iter().copied().find(|&i| &site.vms[i].name == name);
    if opts.order == OrderChoice::Rules || mine.is_empty() {
        return Ok((plan.order.iter().filter_map(index).collect(), None));
    }
    // Each destination's link split among the sources sending there, as a
    // real evacuation's forecast does.
    let spread_of = |host: &str| {
        crate::evacuation::forecast::spread(
            site.vms
                .iter()
                .filter(|v| v.host == host)
                .filter_map(|v| dest_of.get(v.name.as_str()))
                .map(|&d| site.hosts[d].name.as_str()),
        )
    };
    let own = spread_of(&host.name);
    let capacities: BTreeMap<String, f64> = own
        .keys()
        .filter_map(|d| site.hosts.iter().find(|x| &x.name == d))
        .map(|x| (x.name.clone(), x.capacity_bps))
        .collect();
    let others: Vec<_> = site
        .hosts
        .iter()
        .filter(|x| x.role == Role::Source && x.name != host.name)
        .map(|x| spread_of(&x.name))
        .collect();
    let dest_cap = crate::evacuation::forecast::destination_share(&capacities, &own, &others);
    let sc = Scenario {
        vms: loads.iter().map(VmLoad::model_input).collect(),
        mode: opts.mode,
        params: *params,
        source_capacity_bps: host.capacity_bps,
        destination_capacity_bps: dest_cap,
        push_bps: host.push_bps.unwrap_or(host.capacity_bps),
        busy_push: None,
        floor: opts
            .reserve
            .map_or(crate::predict::schedule::FLOOR_WITHOUT_RESERVATION, |p| {
                p.urgency / 100.0
            }),
        concurrency: match opts.concurrency {
            Concurrency::Fixed(n) => n,
            Concurrency::Auto => 1,
        },
        horizon_s: crate::order::HORIZON_S,
    };
    let (order, f) = crate::predict::forecast(&sc, &plan.order, true, opts.deadline_s);
    Ok((
        order.iter().filter_map(index).collect(),
        f.search.and_then(|s| s.rules_gap_pct),
    ))
}

fn ms(s: f64) -> u64 {
    (s * 1000.0).round() as u64
}

/// The engine's output as a record.
fn assemble(
    site: &Site,
    opts: &Options,
    placement: Vec<Assignment>,
    mut sources: Vec<SourceRecord>,
    input: &engine::Input,
    out: engine::Output,
) -> SimulationRecord {
    let one_source = sources.len() == 1;
    let mut vms = Vec::new();
    for (s, src) in input.sources.iter().enumerate() {
        let uplink = &out.uplinks[s];
        for &(i, _) in &src.order {
            let c = out.courses[i].as_ref().expect("a course per VM moved");
            let mut r = VmRecord::pending(&site.vms[i].name);
            r.started_ms = c.start_s.map(ms);
            r.ended_ms = c.end_s.map(ms);
            r.duration_ms = c.start_s.zip(c.end_s).map(|(a, b)| ms(b - a));
            r.downtime_ms = c.downtime_ms;
            r.bytes = Some(c.bytes);
            r.avg_bps = r
                .duration_ms
                .filter(|d| *d > 0)
                .map(|d| c.bytes as f64 * 8.0 / (d as f64 / 1000.0));
            r.state = match (c.start_s, c.end_s, c.outcome) {
                (_, Some(_), _) => VmState::Done,
                (_, None, Some(Outcome::Aborted)) => VmState::Failed,
                (Some(_), None, _) => VmState::Migrating,
                (None, ..) => VmState::Pending,
            };
            if matches!(c.outcome, Some(Outcome::Postcopy)) || opts.mode == Mode::Postcopy {
                r.postcopy_ms = r.started_ms;
            }
            // The uplink's course drawn under the bars: with one source,
            // each VM carries the points of its own time (relative to its
            // start, as a real record's reservation history).
            if one_source {
                if let (Some(a), Some(b)) = (r.started_ms, r.ended_ms.or(r.started_ms)) {
                    r.reservation_history = uplink
                        .iter()
                        .filter(|p| p.t_ms >= a && p.t_ms <= b)
                        .map(|p| HistoryPoint {
                            t_ms: p.t_ms - a,
                            ..*p
                        })
                        .collect();
                }
            }
            vms.push(SimVm {
                record: r,
                source: site.hosts[src.host].name.clone(),
                destination: site.hosts[c.destination].name.clone(),
                outcome: c.outcome,
                passes: c.passes,
            });
        }
    }
    for (s, rec) in sources.iter_mut().enumerate() {
        rec.concurrency = out.concurrency[s].clone();
        rec.uplink = out.uplinks[s].clone();
    }
    let unfinished: Vec<String> = vms
        .iter()
        .filter(|v| v.record.state != VmState::Done)
        .map(|v| v.record.name.clone())
        .collect();
    let first = vms.iter().filter_map(|v| v.record.started_ms).min();
    let last = vms.iter().filter_map(|v| v.record.ended_ms).max();
    let total = (unfinished.is_empty())
        .then(|| first.zip(last).map(|(a, b)| b - a))
        .flatten();
    let individual: Vec<u64> = vms.iter().filter_map(|v| v.record.duration_ms).collect();
    let deadline = opts.deadline_s.map(|d| deadline_outcome(site, &vms, d));
    SimulationRecord {
        site: site.name.clone(),
        options: opts.clone(),
        placement,
        concurrency: merged(opts.concurrency, &sources),
        sources,
        metrics: metric::metrics(total, &individual, opts.score_weight),
        total_migration_ms: total,
        eviction_ms: total,
        vms,
        unfinished,
        deadline,
        simulated_s: out.end_s,
        steps: out.steps,
    }
}

fn deadline_outcome(site: &Site, vms: &[SimVm], d: f64) -> DeadlineOutcome {
    let priority = |name: &str| {
        site.vms
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.priority)
            .unwrap_or(1) as u64
    };
    let (mut made, mut late, mut not_moved) = (Vec::new(), Vec::new(), Vec::new());
    for v in vms {
        let name = v.record.name.clone();
        match v.record.ended_ms {
            Some(e) if e <= ms(d) => made.push(name),
            Some(_) => late.push(name),
            None => not_moved.push(name),
        }
    }
    DeadlineOutcome {
        deadline_s: d,
        saved_priority: made.iter().map(|n| priority(n)).sum(),
        total_priority: vms.iter().map(|v| priority(&v.record.name)).sum(),
        made,
        late,
        not_moved,
    }
}

/// The sources' concurrency courses summed into one timeline (what the
/// report's concurrency panel draws); every source's decisions, in time.
fn merged(mode: Concurrency, sources: &[SourceRecord]) -> ConcurrencyRecord {
    let mut times: Vec<u64> = sources
        .iter()
        .flat_map(|s| s.concurrency.timeline.iter().map(|p| p.t_ms))
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut rec = ConcurrencyRecord::new(mode);
    for t in times {
        let (mut limit, mut running) = (0, 0);
        for s in sources {
            if let Some(p) = s.concurrency.timeline.iter().rev().find(|p| p.t_ms <= t) {
                limit += p.limit;
                running += p.running;
            }
        }
        rec.point(t, limit, running);
    }
    let mut decisions: Vec<Decision> = sources
        .iter()
        .flat_map(|s| s.concurrency.decisions.iter().cloned())
        .collect();
    decisions.sort_by_key(|d| d.at_ms);
    rec.decisions = decisions;
    rec
}

/// A few lines for the operator.
pub fn summary(r: &SimulationRecord, wall_s: f64) -> String {
    let secs = |ms: Option<u64>| {
        ms.map_or("never".to_string(), |m| {
            format!("{:.1} s", m as f64 / 1000.0)
        })
    };
    let mut s = format!(
        "{}: {} VMs from {} sources to {} destinations ({:?}, order {:?}, concurrency {}, {})\n",
        r.site,
        r.vms.len(),
        r.sources.len(),
        r.placement
            .iter()
            .map(|a| a.destination.as_str())
            .collect::<BTreeSet<_>>()
            .len(),
        r.options.mode,
        r.options.order,
        match r.options.concurrency {
            Concurrency::Auto => "auto".to_string(),
            Concurrency::Fixed(n) => n.to_string(),
        },
        if r.options.reserve.is_some() {
            "with reservation"
        } else {
            "no reservation"
        },
    );
    s += &format!(
        "total migration time {}, eviction {}\n",
        secs(r.total_migration_ms),
        secs(r.eviction_ms)
    );
    if let Some(m) = &r.metrics {
        s += &format!(
            "individual migration time mean {:.1} s, max {:.1} s; score {:.1} s (weight {})\n",
            m.mean_individual_s, m.max_individual_s, m.score_s, m.weight
        );
    }
    let downtimes: Vec<u64> = r.vms.iter().filter_map(|v| v.record.downtime_ms).collect();
    if !downtimes.is_empty() {
        s += &format!(
            "downtime max {} ms; {} of {} migrations stalled\n",
            downtimes.iter().max().unwrap_or(&0),
            r.vms
                .iter()
                .filter(|v| v.outcome == Some(Outcome::Remedied))
                .count(),
            r.vms.len()
        );
    }
    if !r.unfinished.is_empty() {
        s += &format!("not moved: {}\n", r.unfinished.join(", "));
    }
    if let Some(d) = &r.deadline {
        s += &format!(
            "deadline {:.0} s: {} VMs made it (priority {} of {}), {} late, {} not moved\n",
            d.deadline_s,
            d.made.len(),
            d.saved_priority,
            d.total_priority,
            d.late.len(),
            d.not_moved.len()
        );
    }
    s += &format!(
        "simulated {:.0} s in {} steps, {:.2} s of wall time\n",
        r.simulated_s, r.steps, wall_s
    );
    s
}

#[cfg(test)]
mod tests;
