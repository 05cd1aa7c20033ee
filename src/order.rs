//! The migration order (paper section IV): VMs that send more than they
//! receive first, VMs that receive more last, using non-zero pages and the
//! dirty rate. A pure function from measured VMs to an order with reasons.
//!
//! Rules, with N the non-zero pages, `tx` what the VM sends and `rx` what it
//! receives (bit/s), C the source uplink's capacity and B a balance margin in
//! percent of C (default 1):
//! - *outgoing* if `tx − rx > B% of C`, *incoming* if `rx − tx > B% of C`,
//!   otherwise *balanced*;
//! - outgoing VMs first, ascending `N / (tx − rx)`, ties by ascending dirty
//!   rate: they free bandwidth for the rest, and low-dirty VMs need little;
//! - balanced VMs next: pre-copy by descending dirty rate (ties: descending N),
//!   post-copy by descending N;
//! - incoming VMs last, descending `N / (rx − tx)`; pre-copy ties by descending
//!   dirty rate;
//! - remaining ties by name, so the order is deterministic.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Pre-copy or post-copy: the order differs for balanced VMs and ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Precopy,
    Postcopy,
}

/// One VM as measured. Other fields (such as `cpu_pct`) are accepted and
/// ignored, since measurement records carry more than the order needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmLoad {
    pub name: String,
    pub non_zero_pages: u64,
    pub dirty_pages_per_sec: f64,
    /// What the VM sends, bit/s.
    pub tx_bps: f64,
    /// What the VM receives, bit/s.
    pub rx_bps: f64,
    /// The prediction's ceiling of what it can dirty, KiB: its memory, or
    /// its working set where one is known ([`dirty_ceiling_kib`]; absent:
    /// its non-zero pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_kib: Option<u64>,
    /// Its weight in a deadline plan, 1 to 1000 (absent: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Bytes of local disk its migration copies (absent: none; see
    /// [`crate::hypervisor::disks`]): they add to what it sends, its `N`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_bytes: u64,
    /// What the guest writes to those disks, bytes/s (the copy sends it again).
    #[serde(default, skip_serializing_if = "is_zero_f")]
    pub disk_write_bps: f64,
}

/// What a VM's dirty sets can grow to, KiB (what [`VmLoad::memory_kib`]
/// carries into the model): its working set when one was measured or
/// given, never more than its memory.
pub fn dirty_ceiling_kib(memory_kib: u64, working_set_kib: Option<u64>) -> u64 {
    working_set_kib.map_or(memory_kib, |w| w.min(memory_kib))
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_f(v: &f64) -> bool {
    *v == 0.0
}

/// The highest priority a VM may have.
pub const MAX_PRIORITY: u32 = 1000;

impl VmLoad {
    /// The paper's `N`, pages: its non-zero memory pages, and its local
    /// disks' bytes in pages (a copied disk is sent before its memory).
    pub fn pages_to_send(&self) -> u64 {
        self.non_zero_pages + self.disk_bytes.div_ceil(4096)
    }

    /// What the prediction needs of it.
    pub fn model_input(&self) -> crate::predict::model::VmInput {
        crate::predict::model::VmInput {
            name: self.name.clone(),
            memory_kib: self.memory_kib.unwrap_or(self.non_zero_pages * 4),
            non_zero_pages: self.non_zero_pages,
            dirty_pages_per_sec: self.dirty_pages_per_sec,
            tx_bps: self.tx_bps,
            rx_bps: self.rx_bps,
            priority: self.priority.unwrap_or(1),
            disk_bytes: self.disk_bytes,
            disk_write_bps: self.disk_write_bps,
        }
    }
}

/// The input of `solive plan` and `POST /v1/plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    pub capacity_bps: f64,
    pub vms: Vec<VmLoad>,
}

/// `POST /v1/plan`: the same input, with the mode and margin in the body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub capacity_bps: f64,
    pub vms: Vec<VmLoad>,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    #[serde(default = "default_balance")]
    pub balance_pct: f64,
    /// `"rules"` (the paper's, default) or `"predict"` (the order the model
    /// says ends first, or saves most by `deadline_s`).
    #[serde(default)]
    pub order: OrderBy,
    /// The model's other inputs ([`crate::predict`]), as fields of the
    /// body (not flattened: serde's flatten would hide a bad field's name
    /// from the 400).
    #[serde(default)]
    pub destination_capacity_bps: Option<f64>,
    #[serde(default)]
    pub push_bps: Option<f64>,
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub reserve: Option<bool>,
    #[serde(default)]
    pub urgency: Option<f64>,
    #[serde(default)]
    pub on_stall: Option<crate::evacuation::converge::OnStall>,
    #[serde(default)]
    pub max_downtime_ms: Option<u64>,
    #[serde(default)]
    pub startup_s: Option<f64>,
    #[serde(default)]
    pub deadline_s: Option<f64>,
}

/// How the order is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderBy {
    #[default]
    Rules,
    Predict,
}

/// What the prediction of a plan needs beyond the VMs; all optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelInputs {
    /// The destination's link, bit/s (absent: `capacity_bps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_capacity_bps: Option<f64>,
    /// What the source host can send in all, bit/s (absent: the link's
    /// capacity; the testbed's TCG guests push about 30e6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_bps: Option<f64>,
    /// Migrations at once (absent: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Reserve bandwidth (absent: yes): the migrations then get at least
    /// `urgency` percent of each link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stall: Option<crate::evacuation::converge::OnStall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_downtime_ms: Option<u64>,
    /// Preparation before memory moves, s (absent: 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_s: Option<f64>,
    /// Plan to move the most priority weight by this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_s: Option<f64>,
}

fn default_mode() -> Mode {
    Mode::Precopy
}

/// B when not given: 1% of C.
pub const DEFAULT_BALANCE_PCT: f64 = 1.0;

fn default_balance() -> f64 {
    DEFAULT_BALANCE_PCT
}

impl PlanRequest {
    /// The rules' plan, then the model's forecast of it (or of the order
    /// the model prefers, with `"order": "predict"`).
    pub fn plan(self) -> Result<Plan, PlanError> {
        let input = PlanInput {
            capacity_bps: self.capacity_bps,
            vms: self.vms,
        };
        let mut p = plan(&input, self.mode, self.balance_pct)?;
        let model = ModelInputs {
            destination_capacity_bps: self.destination_capacity_bps,
            push_bps: self.push_bps,
            concurrency: self.concurrency,
            reserve: self.reserve,
            urgency: self.urgency,
            on_stall: self.on_stall,
            max_downtime_ms: self.max_downtime_ms,
            startup_s: self.startup_s,
            deadline_s: self.deadline_s,
        };
        let sc = model.scenario(&input, self.mode)?;
        let (order, forecast) = crate::predict::forecast(
            &sc,
            &p.order,
            self.order == OrderBy::Predict,
            self.deadline_s,
        );
        p.reorder(&order);
        p.prediction = Some(forecast);
        Ok(p)
    }
}

impl ModelInputs {
    /// The scenario to simulate, after checking each field.
    pub fn scenario(
        &self,
        input: &PlanInput,
        mode: Mode,
    ) -> Result<crate::predict::schedule::Scenario, PlanError> {
        use crate::evacuation::converge::QEMU_DEFAULT_DOWNTIME_MS;
        use crate::predict::{model::Params, schedule};
        let c = input.capacity_bps;
        let positive = |field: &'static str, v: Option<f64>| match v {
            Some(x) if !(x.is_finite() && x > 0.0) => Err(PlanError::Field {
                field,
                message: format!("must be a positive number of seconds or bit/s, not {x}"),
            }),
            _ => Ok(()),
        };
        positive("destination_capacity_bps", self.destination_capacity_bps)?;
        positive("push_bps", self.push_bps)?;
        positive("startup_s", self.startup_s)?;
        positive("deadline_s", self.deadline_s)?;
        let field = |field: &'static str, message: String| PlanError::Field { field, message };
        let concurrency = self.concurrency.unwrap_or(1);
        if !(1..=crate::evacuation::request::MAX_PARALLEL).contains(&concurrency) {
            return Err(field(
                "concurrency",
                format!(
                    "must be from 1 to {}, not {concurrency}",
                    crate::evacuation::request::MAX_PARALLEL
                ),
            ));
        }
        let urgency = self.urgency.unwrap_or(50.0);
        if !(0.0..=100.0).contains(&urgency) {
            return Err(field(
                "urgency",
                format!("must be from 0 to 100, not {urgency}"),
            ));
        }
        let max_downtime_ms = self.max_downtime_ms.unwrap_or(2000);
        if !(QEMU_DEFAULT_DOWNTIME_MS..=60_000).contains(&max_downtime_ms) {
            return Err(field(
                "max_downtime_ms",
                format!("must be from {QEMU_DEFAULT_DOWNTIME_MS} to 60000, not {max_downtime_ms}"),
            ));
        }
        for (index, v) in input.vms.iter().enumerate() {
            if let Some(p) = v.priority.filter(|p| !(1..=MAX_PRIORITY).contains(p)) {
                return Err(PlanError::Vm {
                    index,
                    message: format!("priority must be from 1 to {MAX_PRIORITY}, not {p}"),
                });
            }
        }
        let base = Params::default();
        Ok(schedule::Scenario {
            vms: input.vms.iter().map(VmLoad::model_input).collect(),
            mode,
            params: Params {
                startup_s: self.startup_s.unwrap_or(base.startup_s),
                max_downtime_ms,
                // The model moves memory only, straight: `Auto` as for
                // such a migration.
                on_stall: crate::evacuation::converge::remedy(
                    self.on_stall.unwrap_or_default(),
                    self.deadline_s.is_some(),
                    true,
                ),
                ..base
            },
            source_capacity_bps: c,
            destination_capacity_bps: self.destination_capacity_bps.unwrap_or(c),
            push_bps: self.push_bps.unwrap_or(c),
            busy_push: None,
            floor: if self.reserve.unwrap_or(true) {
                urgency / 100.0
            } else {
                schedule::FLOOR_WITHOUT_RESERVATION
            },
            concurrency,
            horizon_s: HORIZON_S,
        })
    }
}

/// How far ahead a prediction looks: what has not ended in a day is
/// reported as never ending.
pub const HORIZON_S: f64 = 86_400.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Outgoing,
    Balanced,
    Incoming,
}

/// Where one VM was placed and by which key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub name: String,
    pub group: Group,
    /// The key that placed it within its group, and what that key is.
    pub key: f64,
    pub key_name: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub mode: Mode,
    pub order: Vec<String>,
    /// Each VM's group and reason by the paper's rules, in `order`.
    pub vms: Vec<Placement>,
    /// The model's forecast of `order` ([`crate::predict`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<crate::predict::Forecast>,
}

impl Plan {
    /// Takes `order` (the same VMs), the placements following it.
    pub fn reorder(&mut self, order: &[String]) {
        self.vms
            .sort_by_key(|p| order.iter().position(|o| *o == p.name));
        self.order = order.to_vec();
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("capacity_bps must be a positive number, not {0}")]
    Capacity(f64),
    #[error("balance_pct must be from 0 to 100, not {0}")]
    Balance(f64),
    #[error("vms is empty: there is nothing to order")]
    NoVms,
    #[error("vms[{index}]: {message}")]
    Vm { index: usize, message: String },
    #[error("vms: {0:?} appears twice")]
    Duplicate(String),
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
}

/// Orders the VMs. `balance_pct` is B, in percent of the capacity.
pub fn plan(input: &PlanInput, mode: Mode, balance_pct: f64) -> Result<Plan, PlanError> {
    let c = input.capacity_bps;
    if !(c.is_finite() && c > 0.0) {
        return Err(PlanError::Capacity(c));
    }
    if !(0.0..=100.0).contains(&balance_pct) {
        return Err(PlanError::Balance(balance_pct));
    }
    if input.vms.is_empty() {
        return Err(PlanError::NoVms);
    }
    let mut seen = BTreeSet::new();
    for (index, vm) in input.vms.iter().enumerate() {
        let bad = |message: String| PlanError::Vm { index, message };
        if vm.name.is_empty() {
            return Err(bad("name is empty".into()));
        }
        for (field, v) in [
            ("dirty_pages_per_sec", vm.dirty_pages_per_sec),
            ("tx_bps", vm.tx_bps),
            ("rx_bps", vm.rx_bps),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(format!(
                    "{field} must be a non-negative number, not {v}"
                )));
            }
        }
        if !seen.insert(vm.name.as_str()) {
            return Err(PlanError::Duplicate(vm.name.clone()));
        }
    }

    let margin = balance_pct / 100.0 * c;
    let mut placed: Vec<(Placement, &VmLoad)> = input
        .vms
        .iter()
        .map(|vm| {
            let net = vm.tx_bps - vm.rx_bps;
            let n = vm.pages_to_send() as f64;
            let p = if net > margin {
                let key = n / net;
                Placement {
                    name: vm.name.clone(),
                    group: Group::Outgoing,
                    key,
                    key_name: "non_zero_pages / (tx - rx)".into(),
                    reason: format!("sends {:.1}% of C more than it receives: migrating it early frees bandwidth", net / c * 100.0),
                }
            } else if -net > margin {
                let key = n / -net;
                Placement {
                    name: vm.name.clone(),
                    group: Group::Incoming,
                    key,
                    key_name: "non_zero_pages / (rx - tx)".into(),
                    reason: format!("receives {:.1}% of C more than it sends: its new placement takes bandwidth, so it goes last", -net / c * 100.0),
                }
            } else {
                let (key, key_name) = match mode {
                    Mode::Precopy => (vm.dirty_pages_per_sec, "dirty_pages_per_sec"),
                    Mode::Postcopy => (n, "non_zero_pages"),
                };
                Placement {
                    name: vm.name.clone(),
                    group: Group::Balanced,
                    key,
                    key_name: key_name.into(),
                    reason: format!("sends and receives about the same (within {balance_pct}% of C)"),
                }
            };
            (p, vm)
        })
        .collect();

    placed.sort_by(|(a, va), (b, vb)| compare(mode, a, va, b, vb));
    Ok(Plan {
        mode,
        order: placed.iter().map(|(p, _)| p.name.clone()).collect(),
        vms: placed.into_iter().map(|(p, _)| p).collect(),
        prediction: None,
    })
}

fn rank(g: Group) -> u8 {
    match g {
        Group::Outgoing => 0,
        Group::Balanced => 1,
        Group::Incoming => 2,
    }
}

fn compare(mode: Mode, a: &Placement, va: &VmLoad, b: &Placement, vb: &VmLoad) -> Ordering {
    let asc = |x: f64, y: f64| x.total_cmp(&y);
    let desc = |x: f64, y: f64| y.total_cmp(&x);
    let by_group = rank(a.group).cmp(&rank(b.group));
    let within = match a.group {
        Group::Outgoing => {
            asc(a.key, b.key).then(asc(va.dirty_pages_per_sec, vb.dirty_pages_per_sec))
        }
        Group::Balanced => match mode {
            Mode::Precopy => {
                desc(a.key, b.key).then(desc(va.pages_to_send() as f64, vb.pages_to_send() as f64))
            }
            Mode::Postcopy => desc(a.key, b.key),
        },
        Group::Incoming => match mode {
            Mode::Precopy => {
                desc(a.key, b.key).then(desc(va.dirty_pages_per_sec, vb.dirty_pages_per_sec))
            }
            Mode::Postcopy => desc(a.key, b.key),
        },
    };
    by_group.then(within).then_with(|| a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's Table I (non-zero pages, unique page dirty rate) with its
    /// network shares (section IV-C: outgoing NO 67.4%, NO1 26.3%, NI 0.18%,
    /// NI1 1.8%; incoming NO 0.28%, NO1 0.64%, NI 14.52%, NI1 78%; M, M1, C,
    /// C1 about 0), on a 1 Gbit/s link.
    fn table_one() -> PlanInput {
        let c = 1e9;
        let vm = |name: &str, n: u64, d: f64, out: f64, inc: f64| VmLoad {
            name: name.into(),
            non_zero_pages: n,
            dirty_pages_per_sec: d,
            tx_bps: out / 100.0 * c,
            rx_bps: inc / 100.0 * c,
            memory_kib: None,
            priority: None,
            disk_bytes: 0,
            disk_write_bps: 0.0,
        };
        PlanInput {
            capacity_bps: c,
            vms: vec![
                vm("NI1", 322825, 1502.0, 1.8, 78.0),
                vm("M", 518280, 21062.0, 0.0, 0.0),
                vm("C1", 392307, 1825.0, 0.0, 0.0),
                vm("NO", 268694, 103.0, 67.4, 0.28),
                vm("NI", 276913, 1118.0, 0.18, 14.52),
                vm("C", 334725, 3146.0, 0.0, 0.0),
                vm("NO1", 317696, 926.0, 26.3, 0.64),
                vm("M1", 430071, 4165.0, 0.0, 0.0),
            ],
        }
    }

    #[test]
    fn paper_eight_vms_precopy_is_order_19() {
        let p = plan(&table_one(), Mode::Precopy, 1.0).unwrap();
        assert_eq!(p.order, ["NO", "NO1", "M", "M1", "C", "C1", "NI", "NI1"]);
        assert_eq!(p.vms[0].group, Group::Outgoing);
        assert_eq!(p.vms[2].key_name, "dirty_pages_per_sec");
        assert_eq!(p.vms[7].group, Group::Incoming);
    }

    #[test]
    fn paper_four_vms() {
        let mut input = table_one();
        input
            .vms
            .retain(|v| ["NO", "M", "C", "NI"].contains(&v.name.as_str()));
        assert_eq!(
            plan(&input, Mode::Precopy, 1.0).unwrap().order,
            ["NO", "M", "C", "NI"]
        );
        assert_eq!(
            plan(&input, Mode::Postcopy, 1.0).unwrap().order,
            ["NO", "M", "C", "NI"]
        );
    }

    #[test]
    fn postcopy_orders_balanced_vms_by_non_zero_pages() {
        let p = plan(&table_one(), Mode::Postcopy, 1.0).unwrap();
        // M 518280 > M1 430071 > C1 392307 > C 334725.
        assert_eq!(p.order, ["NO", "NO1", "M", "M1", "C1", "C", "NI", "NI1"]);
    }

    #[test]
    fn a_local_disk_adds_to_n() {
        // Post-copy orders balanced VMs by N, largest first: b's disk
        // (4 MB, 1000 pages) outweighs a's larger memory.
        let vm = |name: &str, n: u64, disk: u64| VmLoad {
            name: name.into(),
            non_zero_pages: n,
            dirty_pages_per_sec: 0.0,
            tx_bps: 0.0,
            rx_bps: 0.0,
            memory_kib: None,
            priority: None,
            disk_bytes: disk,
            disk_write_bps: 0.0,
        };
        let input = PlanInput {
            capacity_bps: 1e9,
            vms: vec![vm("a", 500, 0), vm("b", 100, 4096 * 1000)],
        };
        assert_eq!(input.vms[1].pages_to_send(), 1100);
        assert_eq!(plan(&input, Mode::Postcopy, 1.0).unwrap().order, ["b", "a"]);
        // A body without the disk fields reads as no disk.
        let v: VmLoad = serde_json::from_str(
            r#"{"name":"c","non_zero_pages":1,"dirty_pages_per_sec":0,"tx_bps":0,"rx_bps":0}"#,
        )
        .unwrap();
        assert_eq!((v.disk_bytes, v.pages_to_send()), (0, 1));
    }

    #[test]
    fn balance_margin_decides_the_group() {
        let input = PlanInput {
            capacity_bps: 100.0,
            vms: vec![VmLoad {
                name: "a".into(),
                non_zero_pages: 1,
                dirty_pages_per_sec: 0.0,
                tx_bps: 5.0,
                rx_bps: 0.0,
                memory_kib: None,
                priority: None,
                disk_bytes: 0,
                disk_write_bps: 0.0,
            }],
        };
        assert_eq!(
            plan(&input, Mode::Precopy, 1.0).unwrap().vms[0].group,
            Group::Outgoing
        );
        assert_eq!(
            plan(&input, Mode::Precopy, 5.0).unwrap().vms[0].group,
            Group::Balanced
        );
    }

    #[test]
    fn ties_fall_back_to_dirty_rate_then_name() {
        let vm = |name: &str, d: f64| VmLoad {
            name: name.into(),
            non_zero_pages: 100,
            dirty_pages_per_sec: d,
            tx_bps: 50.0,
            rx_bps: 0.0,
            memory_kib: None,
            priority: None,
            disk_bytes: 0,
            disk_write_bps: 0.0,
        };
        let input = PlanInput {
            capacity_bps: 100.0,
            vms: vec![vm("b", 5.0), vm("c", 1.0), vm("a", 5.0)],
        };
        assert_eq!(
            plan(&input, Mode::Precopy, 1.0).unwrap().order,
            ["c", "a", "b"]
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut i = table_one();
        i.capacity_bps = 0.0;
        assert!(plan(&i, Mode::Precopy, 1.0)
            .unwrap_err()
            .to_string()
            .contains("capacity_bps"));
        let mut i = table_one();
        i.vms[1].name = "NO".into();
        assert_eq!(
            plan(&i, Mode::Precopy, 1.0).unwrap_err(),
            PlanError::Duplicate("NO".into())
        );
        let mut i = table_one();
        i.vms[2].tx_bps = -1.0;
        assert!(plan(&i, Mode::Precopy, 1.0)
            .unwrap_err()
            .to_string()
            .starts_with("vms[2]: tx_bps"));
        assert_eq!(
            plan(
                &PlanInput {
                    capacity_bps: 1.0,
                    vms: vec![]
                },
                Mode::Precopy,
                1.0
            ),
            Err(PlanError::NoVms)
        );
        assert!(plan(&table_one(), Mode::Precopy, 120.0).is_err());
    }
}

#[cfg(test)]
mod request_tests {
    use super::*;

    fn req(extra: &str) -> Result<Plan, String> {
        let body = format!(
            r#"{{"capacity_bps":100e6,"vms":[
            {{"name":"no","non_zero_pages":24414,"dirty_pages_per_sec":0,"tx_bps":60e6,"rx_bps":0}},
            {{"name":"a","non_zero_pages":2441,"dirty_pages_per_sec":0,"tx_bps":0,"rx_bps":0,"priority":5}},
            {{"name":"b","non_zero_pages":2441,"dirty_pages_per_sec":0,"tx_bps":0,"rx_bps":0,"priority":5}}]{extra}}}"#
        );
        let r: PlanRequest = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        r.plan().map_err(|e| e.to_string())
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(req(r#","capacity_mbps":1"#)
            .unwrap_err()
            .contains("capacity_mbps"));
    }

    /// Every plan carries its forecast; the rules' order here is "no"
    /// first (it sends 60% of C).
    #[test]
    fn a_plan_predicts_its_order() {
        let p = req("").unwrap();
        assert_eq!(p.order[0], "no");
        let f = p.prediction.unwrap();
        assert_eq!(f.schedule.vms.len(), 3);
        assert_eq!(f.schedule.vms[0].name, "no");
        // "no" leaves 40 Mbit/s, but the reservation (urgency 50%) holds
        // 50 for the migration: 100 MB in 16 s, plus 2 s to start and the
        // 150 ms pause.
        let no = &f.schedule.vms[0];
        assert!((no.duration_s.unwrap() - 18.15).abs() < 0.01, "{no:?}");
        assert!(f.search.is_none() && f.deadline.is_none());
    }

    /// With a deadline the prediction names who will not make it; by
    /// prediction the small VMs go first and both make it.
    #[test]
    fn a_deadline_plan() {
        let p = req(r#","deadline_s":12"#).unwrap();
        let d = p.prediction.unwrap().deadline.unwrap();
        assert_eq!((d.saved_priority, d.total_priority), (0, 11));
        assert_eq!(d.at_risk.len(), 3);
        let p = req(r#","deadline_s":12,"order":"predict""#).unwrap();
        assert_eq!(p.order[2], "no");
        assert_eq!(p.vms[2].name, "no");
        let f = p.prediction.unwrap();
        let d = f.deadline.unwrap();
        assert_eq!((d.saved_priority, d.rules_saved_priority), (10, 0));
        assert_eq!(d.at_risk.len(), 1);
        assert_eq!(d.at_risk[0].name, "no");
        assert!(d.at_risk[0].reason.contains("after the deadline"), "{d:?}");
        let s = f.search.unwrap();
        assert_eq!(s.rules_order[0], "no");
        assert!(s.simulations <= 12, "{s:?}");
    }

    #[test]
    fn bad_model_inputs_name_their_field() {
        for (extra, field) in [
            (r#","deadline_s":-1"#, "deadline_s"),
            (r#","deadline_s":0"#, "deadline_s"),
            (r#","concurrency":0"#, "concurrency"),
            (r#","push_bps":0"#, "push_bps"),
            (r#","max_downtime_ms":10"#, "max_downtime_ms"),
            (r#","order":"fastest""#, "fastest"),
        ] {
            let e = req(extra).unwrap_err();
            assert!(e.contains(field), "{extra}: {e}");
        }
        let e = req(r#","deadline_s":"soon""#).unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
        let body = r#"{"capacity_bps":1e6,"vms":[{"name":"a","non_zero_pages":1,"dirty_pages_per_sec":0,"tx_bps":0,"rx_bps":0,"priority":0}]}"#;
        let e = serde_json::from_str::<PlanRequest>(body)
            .unwrap()
            .plan()
            .unwrap_err();
        assert!(e.to_string().starts_with("vms[0]: priority"), "{e}");
    }
}
