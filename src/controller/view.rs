//! What the controller shows of a host (the REST API serialises these).

use std::collections::BTreeMap;

use serde::Serialize;

use super::enforce::{HostPlan, Mode, ModeChoice, Policing, PortQos, Role};
use super::host::HostInfo;
use super::reconcile::MeterSpec;
use super::reservation::{HistoryPoint, ReservationRequest};
use super::PortState;
use crate::config::HostConfig;
use crate::switch::SwitchHandle;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostView {
    pub name: String,
    /// True when both the host's ovsdb-server and its switch are connected.
    pub connected: bool,
    pub ovsdb_connected: bool,
    pub switch_connected: bool,
    /// The bridge's datapath id, 16 hex digits.
    pub dpid: Option<String>,
    pub datapath_type: Option<String>,
    pub bridge: String,
    pub uplink: String,
    pub capacity_mbps: u64,
    pub ports: Vec<PortView>,
    pub error: Option<String>,
    /// How reservations are enforced here, why, and what is enforced now.
    pub enforcement: Option<EnforcementView>,
}

impl HostView {
    /// What leaves the host through its uplink now, bit/s (the switch's
    /// counter: migrations and applications together); None before two
    /// polls of the port's statistics.
    pub fn uplink_out_bps(&self) -> Option<f64> {
        self.ports.iter().find(|p| p.uplink).and_then(|p| p.tx_bps)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnforcementView {
    /// `meter` or `queue`; None when no mode is possible here.
    pub mode: Option<Mode>,
    /// Why this mode was picked, or why none can be.
    pub reason: String,
    /// What the applications may use now, bit/s (None: not throttled).
    pub app_out_limit_bps: Option<f64>,
    pub app_in_limit_bps: Option<f64>,
    pub meters: Vec<MeterSpec>,
    pub qos: Vec<PortQos>,
    pub policing: Vec<Policing>,
}

pub(super) fn enforcement_view(
    mode: Option<&Result<ModeChoice, String>>,
    plan: &HostPlan,
) -> Option<EnforcementView> {
    let (mode, reason) = match mode? {
        Ok(c) => (Some(c.mode), c.reason.clone()),
        Err(e) => (None, e.clone()),
    };
    Some(EnforcementView {
        mode,
        reason,
        app_out_limit_bps: plan.app_out_limit_bps,
        app_in_limit_bps: plan.app_in_limit_bps,
        meters: plan.meters.clone(),
        qos: plan.qos.clone(),
        policing: plan.policing.clone(),
    })
}

/// A reservation as `GET /v1/reservations/{id}` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReservationView {
    pub id: u64,
    #[serde(flatten)]
    pub request: ReservationRequest,
    /// The effective parameters (max_reserve filled in).
    pub params: crate::reserve::Params,
    /// Whether the migration has been seen moving; until then the reservation
    /// keeps its initial value.
    pub started: bool,
    /// Percent of the source uplink's capacity; None before measurement 0.
    pub reserve_pct: Option<f64>,
    /// What the destination could not reserve of the source's reservation,
    /// bit/s (a reason to go through intermediaries).
    pub destination_shortfall_bps: f64,
    pub hosts: Vec<ReservationHostView>,
    pub history: Vec<HistoryPoint>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReservationHostView {
    pub host: String,
    pub role: Role,
    pub mode: Option<Mode>,
    /// What this host reserves for the migration, bit/s.
    pub reserve_bps: f64,
    /// What the applications may use in the reserved direction, bit/s.
    pub app_limit_bps: Option<f64>,
}

/// A bridge port. `tx` and `rx` are from the switch's side: `tx_bps` is what
/// the switch sends out of the port (towards a VM: what the VM receives),
/// `rx_bps` what it receives on it (from a VM: what the VM sends).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PortView {
    pub port_no: u32,
    pub name: String,
    pub uplink: bool,
    pub tx_bps: Option<f64>,
    pub rx_bps: Option<f64>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub tx_dropped: u64,
    pub rx_dropped: u64,
    /// The VM behind the port, from the interface's external_ids (as libvirt
    /// writes them).
    pub vm: Option<VmInterface>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VmInterface {
    pub vm_id: Option<String>,
    pub iface_id: Option<String>,
    pub attached_mac: Option<String>,
}

pub(super) fn host_view(
    config: &HostConfig,
    ovsdb_connected: bool,
    info: Option<&HostInfo>,
    switch: Option<&SwitchHandle>,
    ports: &BTreeMap<u32, PortState>,
    error: Option<&str>,
) -> HostView {
    let ifaces = info.map(|i| i.interfaces.as_slice()).unwrap_or_default();
    let ports = ports
        .iter()
        .map(|(no, p)| {
            let iface = ifaces.iter().find(|i| {
                i.ofport == Some(i64::from(*no)) || (!p.name.is_empty() && i.name == p.name)
            });
            let name = if p.name.is_empty() {
                iface.map(|i| i.name.clone()).unwrap_or_default()
            } else {
                p.name.clone()
            };
            let vm = iface.and_then(|i| {
                let get = |k: &str| i.external_ids.get(k).cloned();
                let vm = VmInterface {
                    vm_id: get("vm-id"),
                    iface_id: get("iface-id"),
                    attached_mac: get("attached-mac"),
                };
                (vm.vm_id.is_some() || vm.iface_id.is_some()).then_some(vm)
            });
            PortView {
                port_no: *no,
                uplink: name == config.uplink,
                name,
                tx_bps: p.tx.rate(),
                rx_bps: p.rx.rate(),
                tx_bytes: p.tx_bytes,
                rx_bytes: p.rx_bytes,
                tx_packets: p.tx_packets,
                rx_packets: p.rx_packets,
                tx_dropped: p.tx_dropped,
                rx_dropped: p.rx_dropped,
                vm,
            }
        })
        .collect();
    HostView {
        name: config.name.clone(),
        connected: ovsdb_connected && switch.is_some(),
        ovsdb_connected,
        switch_connected: switch.is_some(),
        dpid: info
            .and_then(|i| i.datapath_id)
            .map(|d| format!("{d:016x}")),
        datapath_type: info.map(|i| i.datapath_type.clone()),
        bridge: config.bridge.clone(),
        uplink: config.uplink.clone(),
        capacity_mbps: config.capacity_mbps,
        ports,
        error: error.map(str::to_string),
        enforcement: None,
    }
}

/// What `/metrics` exports, taken by the owner in one go.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricsSnapshot {
    pub hosts: Vec<HostMetrics>,
    pub switches_connected: usize,
    pub reservations: usize,
    /// The owner's own work in the last period (stepping, planning), seconds.
    pub period_seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostMetrics {
    pub host: String,
    pub connected: bool,
    /// Reserved for migrations, percent of the host's capacity.
    pub reserved_pct: f64,
    /// What leaves the uplink, percent of capacity.
    pub used_pct: f64,
    pub migration_bps: f64,
    pub application_bps: f64,
}
