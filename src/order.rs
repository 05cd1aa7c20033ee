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
    pub fn plan(self) -> Result<Plan, PlanError> {
        let input = PlanInput {
            capacity_bps: self.capacity_bps,
            vms: self.vms,
        };
        plan(&input, self.mode, self.balance_pct)
    }
}

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
    pub vms: Vec<Placement>,
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
            let n = vm.non_zero_pages as f64;
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
                desc(a.key, b.key).then(desc(va.non_zero_pages as f64, vb.non_zero_pages as f64))
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
    fn balance_margin_decides_the_group() {
        let input = PlanInput {
            capacity_bps: 100.0,
            vms: vec![VmLoad {
                name: "a".into(),
                non_zero_pages: 1,
                dirty_pages_per_sec: 0.0,
                tx_bps: 5.0,
                rx_bps: 0.0,
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
